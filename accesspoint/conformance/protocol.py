"""The EC conformance test bed's backend protocol, sans-I/O: Submit, Deliver and Notify as ebMS user messages.

The test driver (C1/C4) and the system under test talk ebMS 3 too, on their own channel: user messages with
Service ``http://www.esens.eu/as4/conformancetest`` and Action ``Submit`` (driver -> SUT: send this AS4
message), ``Deliver`` (SUT -> driver: this AS4 message arrived, payloads decrypted and decompressed) or
``Notify`` (SUT -> driver: the message sent got a receipt or an error). Roles are ``.../testdriver`` and
``.../sut``; there is no WS-Security, no AgreementRef, no reliability. What the AS4 message is (or was) is
written as MessageProperties: the instructions below, then every other property, copied as it is
(originalSender, finalRecipient, trackingIdentifier). Payloads are MIME parts with their PartProperties.

Both sides are here, so a driver (the tests) and the adapter (``accesspoint conformance serve``) share one
reading of the format: ``submit``/``deliver``/``notify`` build a message, ``read_backend_message`` reads one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from accesspoint.core.envelope import build_envelope, parse_envelope, serialize
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import Attachment, PackedMessage, pack_bare, pack_message, payload_part_info
from accesspoint.core.mime import MultipartParser, PartData, PartEnd, PartStart, content_id_of, parse_content_type
from accesspoint.core.model import (
    CollaborationInfo,
    MessageInfo,
    Party,
    PartyId,
    PartyInfo,
    Property,
    Service,
    SignalMessage,
    UserMessage,
)
from accesspoint.core.namespaces import CONFORMANCE_TEST_SERVICE, PartProperty, SoapVersion
from accesspoint.core.signals import build_error_signal, build_receipt

SERVICE = CONFORMANCE_TEST_SERVICE
TEST_DRIVER_ROLE = f"{SERVICE}/testdriver"
SUT_ROLE = f"{SERVICE}/sut"


class Action(StrEnum):
    """What a backend message asks or tells."""

    SUBMIT = "Submit"  # driver -> SUT: send an AS4 message
    DELIVER = "Deliver"  # SUT -> driver: an AS4 message arrived
    NOTIFY = "Notify"  # SUT -> driver: a sent AS4 message got a receipt or an error


class SignalType(StrEnum):
    """Notify's ``SignalType``."""

    RECEIPT = "Receipt"
    ERROR = "Error"


class Instruction(StrEnum):
    """MessageProperties of Submit and Deliver that describe the AS4 message's header (never copied onto it)."""

    MESSAGE_ID = "MessageId"
    CONVERSATION_ID = "ConversationId"
    REF_TO_MESSAGE_ID = "RefToMessageId"
    FROM_PARTY_ID = "FromPartyId"
    FROM_PARTY_ID_TYPE = "FromPartyIdType"
    FROM_PARTY_ROLE = "FromPartyRole"
    TO_PARTY_ID = "ToPartyId"
    TO_PARTY_ID_TYPE = "ToPartyIdType"
    TO_PARTY_ROLE = "ToPartyRole"
    SERVICE = "Service"
    SERVICE_TYPE = "ServiceType"
    ACTION = "Action"


class NotifyProperty(StrEnum):
    """Notify's MessageProperties."""

    SIGNAL_TYPE = "SignalType"
    REF_TO_MESSAGE_ID = "RefToMessageId"
    ERROR_CODE = "ErrorCode"
    SHORT_DESCRIPTION = "ShortDescription"
    DESCRIPTION = "Description"


_INSTRUCTIONS = frozenset(i.value for i in Instruction)
# Submit must say where the message goes and what it is; the rest the SUT may choose (a Submit without
# ConversationId is AS4_CP_TA18: the SUT fills one in).
_REQUIRED_BY_SUBMIT = (Instruction.SERVICE, Instruction.ACTION, Instruction.TO_PARTY_ID)


@dataclass(frozen=True, slots=True)
class BackendPayload:
    """A payload in clear: Content-ID, MIME type, bytes, and its other PartProperties (e.g. CharacterSet)."""

    content_id: str
    mime_type: str
    data: bytes
    properties: tuple[Property, ...] = ()

    def property(self, name: str) -> str | None:
        """The value of one of its PartProperties (MimeType included), or None."""
        if name == PartProperty.MIME_TYPE:
            return self.mime_type
        return next((p.value for p in self.properties if p.name == name), None)


@dataclass(frozen=True, slots=True)
class BusinessMessage:
    """The AS4 message a Submit asks for or a Deliver reports: header facts, properties, payloads in clear."""

    service: Service
    action: str
    to_party: PartyId
    to_role: str | None = None
    from_party: PartyId | None = None
    from_role: str | None = None
    message_id: str | None = None
    conversation_id: str | None = None
    ref_to_message_id: str | None = None
    properties: tuple[Property, ...] = ()  # the AS4 message's MessageProperties (originalSender, ...)
    payloads: tuple[BackendPayload, ...] = ()

    def property(self, name: str) -> Property | None:
        """One of its MessageProperties, or None."""
        return next((p for p in self.properties if p.name == name), None)


@dataclass(frozen=True, slots=True)
class Notification:
    """What Notify tells: a receipt or an error for the AS4 message ``ref_to_message_id``."""

    signal_type: SignalType
    ref_to_message_id: str | None
    error_code: str | None = None
    short_description: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class BackendMessage:
    """A backend message as read: its ebMS header and its payloads in clear."""

    user_message: UserMessage
    payloads: tuple[BackendPayload, ...]

    @property
    def action(self) -> str:
        """Submit, Deliver or Notify (or whatever the sender wrote)."""
        return self.user_message.collaboration_info.action

    def check(self, action: Action) -> None:
        """EBMS:0001 unless this is the conformance test service's ``action``."""
        collaboration = self.user_message.collaboration_info
        if collaboration.service.value != SERVICE or collaboration.action != action:
            raise EbmsError(
                ErrorCode.VALUE_NOT_RECOGNIZED,
                f"expected service {SERVICE} and action {action.value}, "
                f"found {collaboration.service.value[:100]!r} and {collaboration.action[:100]!r}",
                ref_to_message_id=self.user_message.message_id,
            )

    def business(self) -> BusinessMessage:
        """The AS4 message a Submit or Deliver describes (EBMS:0003 when Service, Action or ToPartyId is missing)."""
        values = {p.name: p.value for p in self.user_message.message_properties if p.name in _INSTRUCTIONS}
        missing = [i.value for i in _REQUIRED_BY_SUBMIT if not values.get(i)]
        if missing:
            raise EbmsError(
                ErrorCode.VALUE_INCONSISTENT,
                f"MessageProperties lack {', '.join(missing)}",
                ref_to_message_id=self.user_message.message_id,
            )

        def value(instruction: Instruction) -> str | None:
            return values.get(instruction.value) or None

        from_id = value(Instruction.FROM_PARTY_ID)
        return BusinessMessage(
            service=Service(values[Instruction.SERVICE], value(Instruction.SERVICE_TYPE)),
            action=values[Instruction.ACTION],
            to_party=PartyId(values[Instruction.TO_PARTY_ID], value(Instruction.TO_PARTY_ID_TYPE)),
            to_role=value(Instruction.TO_PARTY_ROLE),
            from_party=None if from_id is None else PartyId(from_id, value(Instruction.FROM_PARTY_ID_TYPE)),
            from_role=value(Instruction.FROM_PARTY_ROLE),
            message_id=value(Instruction.MESSAGE_ID),
            conversation_id=value(Instruction.CONVERSATION_ID),
            ref_to_message_id=value(Instruction.REF_TO_MESSAGE_ID),
            properties=tuple(p for p in self.user_message.message_properties if p.name not in _INSTRUCTIONS),
            payloads=self.payloads,
        )

    def notification(self) -> Notification:
        """What a Notify tells (EBMS:0003 without a SignalType of Receipt or Error)."""
        values = {p.name: p.value for p in self.user_message.message_properties}
        try:
            signal_type = SignalType(values.get(NotifyProperty.SIGNAL_TYPE, ""))
        except ValueError:
            raise EbmsError(
                ErrorCode.VALUE_INCONSISTENT,
                "SignalType must be Receipt or Error",
                ref_to_message_id=self.user_message.message_id,
            ) from None
        return Notification(
            signal_type=signal_type,
            ref_to_message_id=values.get(NotifyProperty.REF_TO_MESSAGE_ID),
            error_code=values.get(NotifyProperty.ERROR_CODE),
            short_description=values.get(NotifyProperty.SHORT_DESCRIPTION),
            description=values.get(NotifyProperty.DESCRIPTION),
        )


def party(party_id: str, role: str, party_id_type: str | None = None) -> Party:
    """eb:From or eb:To with one PartyId."""
    return Party((PartyId(party_id, party_id_type),), role)


# ---------------------------------------------------------------------------------------------- building


def _instructions(message: BusinessMessage) -> list[Property]:
    pairs: list[tuple[Instruction, str | None]] = [
        (Instruction.MESSAGE_ID, message.message_id),
        (Instruction.CONVERSATION_ID, message.conversation_id),
        (Instruction.REF_TO_MESSAGE_ID, message.ref_to_message_id),
        (Instruction.FROM_PARTY_ID, None if message.from_party is None else message.from_party.value),
        (Instruction.FROM_PARTY_ID_TYPE, None if message.from_party is None else message.from_party.type),
        (Instruction.FROM_PARTY_ROLE, message.from_role),
        (Instruction.TO_PARTY_ID, message.to_party.value),
        (Instruction.TO_PARTY_ID_TYPE, message.to_party.type),
        (Instruction.TO_PARTY_ROLE, message.to_role),
        (Instruction.SERVICE, message.service.value),
        (Instruction.SERVICE_TYPE, message.service.type),
        (Instruction.ACTION, message.action),
    ]
    return [Property(name.value, value) for name, value in pairs if value is not None]


def backend_message(
    action: Action,
    properties: Iterable[Property],
    payloads: Sequence[BackendPayload],
    *,
    sender: Party,
    receiver: Party,
    message_id: str,
    conversation_id: str,
    now: datetime,
) -> PackedMessage:
    """An unsigned ebMS user message of the conformance test service, SwA when it has payloads."""
    header = UserMessage(
        message_info=MessageInfo(message_id=message_id, timestamp=now),
        party_info=PartyInfo(sender=sender, receiver=receiver),
        collaboration_info=CollaborationInfo(Service(SERVICE), action.value, conversation_id),
        message_properties=tuple(properties),
        payload_info=tuple(
            payload_part_info(
                p.content_id,
                p.mime_type,
                compressed=False,
                character_set=p.property(PartProperty.CHARACTER_SET),
                extra=[q for q in p.properties if q.name != PartProperty.CHARACTER_SET],
            )
            for p in payloads
        ),
    )
    envelope = serialize(build_envelope(header))
    if not payloads:
        return pack_bare(envelope)
    attachments = [Attachment(p.content_id, p.mime_type, (p.data,)) for p in payloads]
    return pack_message(envelope, attachments, root_content_id=f"soap-part@{message_id.rpartition('@')[2]}")


def submit(
    message: BusinessMessage, *, driver: Party, sut: Party, message_id: str, conversation_id: str, now: datetime
) -> PackedMessage:
    """The driver's Submit asking the SUT to send ``message``."""
    return backend_message(
        Action.SUBMIT,
        [*_instructions(message), *message.properties],
        message.payloads,
        sender=driver,
        receiver=sut,
        message_id=message_id,
        conversation_id=conversation_id,
        now=now,
    )


def deliver(message: BusinessMessage, *, sut: Party, driver: Party, message_id: str, now: datetime) -> PackedMessage:
    """The SUT's Deliver of an AS4 message it received (payloads decrypted and decompressed)."""
    return backend_message(
        Action.DELIVER,
        [*_instructions(message), *message.properties],
        message.payloads,
        sender=sut,
        receiver=driver,
        message_id=message_id,
        conversation_id=message.conversation_id or message_id,
        now=now,
    )


def notify(notification: Notification, *, sut: Party, driver: Party, message_id: str, now: datetime) -> PackedMessage:
    """The SUT's Notify of a receipt or an error for an AS4 message it sent (or, TA31, refused)."""
    pairs = [
        (NotifyProperty.SIGNAL_TYPE, notification.signal_type.value),
        (NotifyProperty.REF_TO_MESSAGE_ID, notification.ref_to_message_id),
        (NotifyProperty.ERROR_CODE, notification.error_code),
        (NotifyProperty.SHORT_DESCRIPTION, notification.short_description),
        (NotifyProperty.DESCRIPTION, notification.description),
    ]
    return backend_message(
        Action.NOTIFY,
        [Property(name.value, value) for name, value in pairs if value],
        (),
        sender=sut,
        receiver=driver,
        message_id=message_id,
        conversation_id=notification.ref_to_message_id or message_id,
        now=now,
    )


def receipt(message: UserMessage, *, message_id: str, now: datetime) -> bytes:
    """The unsigned receipt a backend message is answered with (a copy of its UserMessage, AS4 5.1.8)."""
    signal = build_receipt(message, (), message_id=message_id, now=now)
    return serialize(build_envelope(signal))


def error(error: EbmsError, *, message_id: str, now: datetime) -> bytes:
    """The unsigned ebMS error signal a refused backend message is answered with."""
    signal = build_error_signal([error], message_id=message_id, now=now, ref_to_message_id=error.ref_to_message_id)
    return serialize(build_envelope(signal))


# ----------------------------------------------------------------------------------------------- reading

SOAP_MEDIA_TYPES = ("application/soap+xml", "text/xml")


def read_backend_message(content_type: str, body: bytes) -> BackendMessage:
    """A Submit, Deliver or Notify from its HTTP body (EbmsError when it is none).

    Test beds have written PartInfo hrefs without the ``cid:`` scheme (``href="xmlpayload@minder"``); such an
    href names the Content-ID too. Every PartInfo needs its part and every part its PartInfo (EBMS:0011).
    """
    media = parse_content_type(content_type)
    parts: dict[str, tuple[str, bytes]] = {}
    if media.media_type in SOAP_MEDIA_TYPES:
        envelope = body
    elif media.media_type == "multipart/related" and media.param("boundary"):
        envelope = _read_parts(body, str(media.param("boundary")), media.param("start"), parts)
    else:
        raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"Content-Type {media.media_type!r} is not SOAP or SwA")
    header = parse_envelope(envelope).messaging.message
    if isinstance(header, SignalMessage):
        raise EbmsError(ErrorCode.VALUE_NOT_RECOGNIZED, "expected a user message of the conformance test service")
    payloads: list[BackendPayload] = []
    for info in header.payload_info:
        href = info.href or ""
        content_id = info.content_id or (href if href and ":" not in href else None)
        if content_id is None or content_id not in parts:
            raise EbmsError(ErrorCode.EXTERNAL_PAYLOAD_ERROR, f"no MIME part for PartInfo href {href[:100]!r}")
        content_type_of_part, data = parts.pop(content_id)
        payloads.append(
            BackendPayload(
                content_id,
                info.mime_type or content_type_of_part,
                data,
                tuple(p for p in info.properties if p.name != PartProperty.MIME_TYPE),
            )
        )
    if parts:
        unreferenced = next(iter(parts))
        raise EbmsError(ErrorCode.EXTERNAL_PAYLOAD_ERROR, f"MIME part {unreferenced!r} is described by no PartInfo")
    return BackendMessage(header, tuple(payloads))


def _read_parts(body: bytes, boundary: str, start: str | None, parts: dict[str, tuple[str, bytes]]) -> bytes:
    """Split a multipart/related body: the root part's bytes are returned, the others go into ``parts``."""
    parser = MultipartParser(boundary)
    read: list[tuple[str | None, str, bytearray]] = []
    for event in parser.feed(body):
        if isinstance(event, PartStart):
            cid = event.header("content-id")
            read.append((None if cid is None else content_id_of(cid), event.header("content-type") or "", bytearray()))
        elif isinstance(event, PartData):
            read[-1][2].extend(event.data)
        elif isinstance(event, PartEnd):
            continue
    parser.close()
    wanted = None if start is None else content_id_of(start)
    root = next((i for i, (cid, _, _) in enumerate(read) if wanted is None or cid == wanted), None)
    if root is None:
        raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"no part has the start Content-ID {wanted!r}")
    for index, (cid, kind, data) in enumerate(read):
        if index == root:
            continue
        if cid is None or cid in parts:
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "an attachment without a Content-ID, or one used twice")
        parts[cid] = (kind.partition(";")[0].strip() or "application/octet-stream", bytes(data))
    return bytes(read[root][2])


def soap_content_type() -> str:
    """The Content-Type of an answer (receipt or error): bare SOAP 1.2."""
    return f"{SoapVersion.V12.content_type}; charset=UTF-8"
