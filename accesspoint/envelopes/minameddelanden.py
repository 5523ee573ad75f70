"""Mina meddelanden's delivery format (Message v3, Service v3) and its signed delivery Receipt.

Three layers, each an enveloped XML-DSig over the whole layer (``signature``):

- ``SecureDelivery``: Header (Sender{Id, Name, Attention?}, one Recipient, Reference?, CorrelationId?,
  Attention?) and one or more SecureMessages (Header, Body, Attachments).
- ``SignedDelivery`` = ``Delivery`` (the SecureDelivery) + the **sender's** signature.
- ``SealedDelivery`` = the SignedDelivery + ``Seal`` {ReceivedTime, SignaturesOK} + the **intermediary's**
  signature (the Förmedlare; here the access point), made after it has verified the sender's.

Element names: the contracts declare the layers as types only. Like Mina meddelanden's reference code
(``DigitalMailMapper.createSealedDelivery``), each layer is signed as a document of its own whose root is
``{…/Message/v3}SignedDelivery`` or ``{…/Message/v3}SealedDelivery``; on the wire a SealedDelivery is the
``{…/Service/v3}deliverSecure`` child of ``deliverSecure`` (``to_deliver_secure`` / ``from_deliver_secure``
rename it, keeping its namespace declarations, so the signatures survive). The Receipt type gets the element
``{…/schema/Receipt}Receipt``.

``Seal/ReceivedTime`` is ``xs:date`` in this copy of the contract, so the seal records the day only.
Attachment checksums are the MD5 hex digest the reference code writes (the contract names no algorithm); they
are recomputed on parsing.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from cryptography import x509
from lxml import etree

from accesspoint.core.namespaces import NS
from accesspoint.envelopes._common import (
    EnvelopeError,
    Finding,
    b64decode,
    b64encode,
    expect_root,
    need,
    need_text,
    optional_text,
    parse_date,
    parse_document,
    require_valid,
    serialize,
    sub,
    text,
)
from accesspoint.envelopes.signature import ALLOWED, VerifiedSignature, sign_enveloped, standalone, verify_enveloped
from accesspoint.security.keys import KeyPair

_BASE = "http://minameddelanden.gov.se/schema"
M1_NS = f"{_BASE}/Message"
M2_NS = f"{_BASE}/Message/v2"
M3_NS = f"{_BASE}/Message/v3"
SENDER_NS = f"{_BASE}/Sender"
RECEIPT_NS = f"{_BASE}/Receipt"
SERVICE_NS = f"{_BASE}/Service"
SERVICE3_NS = f"{_BASE}/Service/v3"
REPLY_NS = f"{_BASE}/Reply"
OFFICIAL_MATTER_NS = f"{_BASE}/OfficialMatter/v3"
_M1, _M2, _M3 = f"{{{M1_NS}}}", f"{{{M2_NS}}}", f"{{{M3_NS}}}"
_S, _R, _SV, _SV3 = f"{{{SENDER_NS}}}", f"{{{RECEIPT_NS}}}", f"{{{SERVICE_NS}}}", f"{{{SERVICE3_NS}}}"
_OFM = f"{{{OFFICIAL_MATTER_NS}}}"
_NSMAP = {"m1": M1_NS, "m2": M2_NS, "m3": M3_NS, "snd": SENDER_NS, "rcp": RECEIPT_NS}

SIGNED_DELIVERY = f"{_M3}SignedDelivery"
SEALED_DELIVERY = f"{_M3}SealedDelivery"
RECEIPT = f"{_R}Receipt"


class ReceiptRequest(StrEnum):
    """What receipt the sender asks for (Receipt.xsd ReceiptOptions)."""

    NOT = "NOT"
    SIMPLE = "SIMPLE"
    SIGNED = "SIGNED"


class ReplyOption(StrEnum):
    """Whether the recipient may answer (Reply.xsd ReplyOptions)."""

    REQUESTED = "REQUESTED"
    ACCEPTED = "ACCEPTED"
    NOT_ALLOWED = "NOT_ALLOWED"


class MatterStatus(StrEnum):
    """Where an official matter stands after an event (OfficialMatter v3 MatterStatus)."""

    SENDER_INITIATIVE = "senderinitiative"
    RECIPIENT_INITIATIVE = "recipientinitiative"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class OfficialMatter:
    """``Header/OfficialMatter/OfficialMatterExtension`` (v3, *kundärende*): an event in an official matter.
    ``extensions`` are the elements of other namespaces the contract allows after ``Timestamp`` (Clark tag,
    string value), where a sender adds what the contract has no element for."""

    timestamp: date
    official_matter_id: str | None = None
    event_id: str | None = None
    preceding_event_id: str | None = None
    matter_subject: str | None = None
    event_type: str | None = None
    matter_status: MatterStatus | None = None
    extensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Sender:
    """The sending organisation: ``Id`` is ``16`` + its organisation number (12 digits)."""

    id: str
    name: str
    attention: str | None = None


@dataclass(frozen=True, slots=True)
class SupportInfo:
    """Where the recipient gets help (Text is required, at most 1024 characters)."""

    text: str
    url: str | None = None
    phone: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file of a message; ``checksum`` is the MD5 hex the reference code writes (computed when left out)."""

    content_type: str
    body: bytes
    filename: str
    checksum: str = ""

    def __post_init__(self) -> None:
        if not self.checksum:
            object.__setattr__(self, "checksum", attachment_checksum(self.body))


def attachment_checksum(body: bytes) -> str:
    """MD5 of the attachment, upper-case hex, as Mina meddelanden's reference sender writes it."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest().upper()


def append_attachments(parent: etree._Element, tag: str, attachments: Iterable[Attachment]) -> None:
    """One ``tag`` element per attachment under ``parent``, with the Message v1 ContentType, Body (base64),
    Checksum and Filename that a SecureMessage's and a ReplyMessage's attachments both are."""
    for attachment in attachments:
        item = sub(parent, tag)
        sub(item, f"{_M1}ContentType", attachment.content_type)
        sub(item, f"{_M1}Body", b64encode(attachment.body))
        sub(item, f"{_M1}Checksum", attachment.checksum)
        sub(item, f"{_M1}Filename", attachment.filename)


def parse_attachments(parent: etree._Element, tag: str) -> tuple[Attachment, ...]:
    """The attachments in ``parent``'s ``tag`` elements; EnvelopeError when a checksum is not the recomputed one."""
    attachments: list[Attachment] = []
    for item in parent.iterfind(tag):
        body = b64decode(text(need(item, f"{_M1}Body", "Attachment/Body")), "Attachment/Body")
        checksum = need_text(item, f"{_M1}Checksum", "Attachment/Checksum")
        if checksum.upper() != attachment_checksum(body):
            raise EnvelopeError(f"the checksum of attachment {optional_text(item, f'{_M1}Filename')!r} is wrong")
        attachments.append(
            Attachment(
                need_text(item, f"{_M1}ContentType", "ContentType"),
                body,
                need_text(item, f"{_M1}Filename", "Filename"),
                checksum,
            )
        )
    return tuple(attachments)


@dataclass(frozen=True, slots=True)
class SecureMessage:
    """One message: its header (id, subject, support info, language, receipt request), body and attachments."""

    id: str
    subject: str
    support: SupportInfo
    content_type: str
    body: bytes
    attachments: tuple[Attachment, ...] = ()
    language: str = "sv"
    metadata: tuple[tuple[str, str], ...] = ()
    receipt_request: ReceiptRequest | None = None
    reply: ReplyOption | None = None
    official_matter: OfficialMatter | None = None


@dataclass(frozen=True, slots=True)
class SecureDelivery:
    """A delivery from ``sender`` to one ``recipient`` (12 digits: personnummer, samordningsnummer or ``16`` +
    organisation number) of one or more messages."""

    sender: Sender
    recipient: str
    messages: tuple[SecureMessage, ...]
    reference: str | None = None
    correlation_id: str | None = None
    attention: str | None = None


@dataclass(frozen=True, slots=True)
class Seal:
    """The intermediary's seal: the day it received the delivery and that the sender's signature verified."""

    received: date
    signatures_ok: bool = True


# --- building ---


def _secure_delivery(parent: etree._Element, tag: str, delivery: SecureDelivery) -> etree._Element:
    element = sub(parent, tag)
    header = sub(element, f"{_M3}Header")
    sender = sub(header, f"{_M2}Sender")
    sub(sender, f"{_S}Id", delivery.sender.id)
    sub(sender, f"{_S}Name", delivery.sender.name)
    if delivery.sender.attention is not None:
        sub(sender, f"{_S}Attention", delivery.sender.attention)
    sub(header, f"{_M2}Recipient", delivery.recipient)
    for name, value in (
        ("Reference", delivery.reference),
        ("CorrelationId", delivery.correlation_id),
        ("Attention", delivery.attention),
    ):
        if value is not None:
            sub(header, f"{_M2}{name}", value)
    for message in delivery.messages:
        _secure_message(sub(element, f"{_M3}Message"), message)
    return element


def _secure_message(element: etree._Element, message: SecureMessage) -> None:
    header = sub(element, f"{_M3}Header")
    sub(header, f"{_M3}Id", message.id)
    sub(header, f"{_M3}Subject", message.subject)
    support = sub(header, f"{_M3}Supportinfo")
    sub(support, f"{_M3}Text", message.support.text)
    for name, value in (
        ("URL", message.support.url),
        ("PhoneNumber", message.support.phone),
        ("EmailAdress", message.support.email),
    ):
        if value is not None:
            sub(support, f"{_M3}{name}", value)
    if message.official_matter is not None:
        _official_matter(sub(header, f"{_M3}OfficialMatter"), message.official_matter)
    for tag, value in message.metadata:
        metadata = sub(header, f"{_M3}Metadata")
        sub(metadata, f"{_M1}Tag", tag)
        sub(metadata, f"{_M1}Value", value)
    sub(header, f"{_M3}Language", message.language)
    if message.reply is not None:
        sub(header, f"{_M3}Reply", message.reply)
    if message.receipt_request is not None:
        sub(header, f"{_M3}ReceiptRequest", message.receipt_request)
    body = sub(element, f"{_M3}Body")
    sub(body, f"{_M1}ContentType", message.content_type)
    sub(body, f"{_M1}Body", b64encode(message.body))
    append_attachments(element, f"{_M3}Attachment", message.attachments)


def _official_matter(element: etree._Element, matter: OfficialMatter) -> None:
    extension = etree.SubElement(element, f"{_OFM}OfficialMatterExtension", nsmap={"ofm": OFFICIAL_MATTER_NS})
    sub(extension, f"{_OFM}Timestamp", matter.timestamp.isoformat())
    for tag, value in matter.extensions:
        if tag.startswith(_OFM) or not tag.startswith("{"):
            raise EnvelopeError(f"an OfficialMatter extension must be in another namespace, not {tag}")
        sub(extension, tag, value)
    ids = (matter.event_id, matter.official_matter_id, matter.preceding_event_id)
    if any(v is not None for v in ids):
        identity = sub(extension, f"{_OFM}Identity")
        for name, found in zip(("EventId", "OfficialMatterId", "PrecedingEventId"), ids, strict=True):
            if found is not None:
                sub(identity, f"{_OFM}{name}", found)
    for name, found in (
        ("MatterSubject", matter.matter_subject),
        ("EventType", matter.event_type),
        ("MatterStatus", matter.matter_status),
    ):
        if found is not None:
            sub(extension, f"{_OFM}{name}", found)


def _parse_official_matter(element: etree._Element) -> OfficialMatter:
    extension = need(element, f"{_OFM}OfficialMatterExtension", "OfficialMatter/OfficialMatterExtension")
    status = optional_text(extension, f"{_OFM}MatterStatus")
    if status is not None and status not in set(MatterStatus):
        raise EnvelopeError(f"MatterStatus {status[:40]!r} is not senderinitiative, recipientinitiative or closed")
    identity = extension.find(f"{_OFM}Identity")
    ids = [None if identity is None else optional_text(identity, f"{_OFM}{n}")
           for n in ("EventId", "OfficialMatterId", "PrecedingEventId")]  # fmt: skip
    return OfficialMatter(
        timestamp=parse_date(need_text(extension, f"{_OFM}Timestamp", "OfficialMatter/Timestamp"), "Timestamp"),
        event_id=ids[0],
        official_matter_id=ids[1],
        preceding_event_id=ids[2],
        matter_subject=optional_text(extension, f"{_OFM}MatterSubject"),
        event_type=optional_text(extension, f"{_OFM}EventType"),
        matter_status=MatterStatus(status) if status is not None else None,
        extensions=tuple(
            (child.tag, text(child))
            for child in extension
            if isinstance(child.tag, str) and not child.tag.startswith(_OFM)
        ),
    )


def _validate(layer: etree._Element, schema: etree.XMLSchema | None) -> None:
    """Validate a layer against the contract through the global element that carries its type on the wire."""
    if schema is None:
        return
    if layer.tag == SIGNED_DELIVERY:
        wrapper = etree.Element(f"{_M3}distributeSecure", nsmap={"m3": M3_NS})
        inner = copy.deepcopy(layer)
        inner.tag = f"{_M3}signedDelivery"
        wrapper.append(inner)
    elif layer.tag == SEALED_DELIVERY:
        wrapper = to_deliver_secure(layer)
    else:
        wrapper = layer
    require_valid(schema, wrapper)


def build_signed_delivery(
    delivery: SecureDelivery, sender_keys: KeyPair, *, schema: etree.XMLSchema | None = None
) -> bytes:
    """The sender's layer: the SecureDelivery signed (enveloped) with the sender's key."""
    root = etree.Element(SIGNED_DELIVERY, nsmap=_NSMAP)
    _secure_delivery(root, f"{_M3}Delivery", delivery)
    sign_enveloped(root, sender_keys)
    _validate(root, schema)
    return serialize(root)


def build_sealed_delivery(
    signed_delivery: bytes | etree._Element,
    intermediary_keys: KeyPair,
    *,
    received: date,
    sender: x509.Certificate | None = None,
    schema: etree.XMLSchema | None = None,
) -> bytes:
    """The intermediary's layer. The sender's signature is verified first (with ``sender`` when given, else the
    KeyInfo certificate, whose trust the caller has checked); a delivery whose signature fails is not sealed."""
    signed = parse_document(signed_delivery, what="SignedDelivery")
    expect_root(signed, SIGNED_DELIVERY, "a SignedDelivery")
    _verify_layer(signed, sender, ALLOWED)
    # The SealedDelivery declares exactly the namespaces the SignedDelivery had in scope when it was signed: a
    # sender digest in inclusive C14N (the reference code's, Reference with the enveloped transform only) covers
    # every declaration in scope, so one more on the new root would break it. The Seal declares its own.
    root = etree.Element(SEALED_DELIVERY, nsmap=signed.nsmap)  # type: ignore[arg-type]  # lxml-stubs: no None (default) prefix
    root.append(copy.deepcopy(signed))
    seal_nsmap = {} if M1_NS in signed.nsmap.values() else {"m1": M1_NS}
    seal = etree.SubElement(root, f"{_M3}Seal", nsmap=seal_nsmap)
    sub(seal, f"{_M1}ReceivedTime", received.isoformat())
    sub(seal, f"{_M1}SignaturesOK", "true")
    sign_enveloped(root, intermediary_keys)
    _validate(root, schema)
    return serialize(root)


def to_deliver_secure(sealed: bytes | etree._Element) -> etree._Element:
    """The Service v3 ``deliverSecure`` request element carrying the SealedDelivery (a copy, renamed)."""
    root = parse_document(sealed, what="SealedDelivery")
    expect_root(root, SEALED_DELIVERY, "a SealedDelivery")
    nsmap = dict(root.nsmap)
    if SERVICE3_NS not in nsmap.values():
        nsmap["svc3"] = SERVICE3_NS
    wrapper = etree.Element(f"{_SV3}deliverSecure", nsmap=nsmap)  # type: ignore[arg-type]  # as above
    inner = copy.deepcopy(root)
    inner.tag = f"{_SV3}deliverSecure"
    wrapper.append(inner)
    return wrapper


def from_deliver_secure(request: bytes | etree._Element) -> etree._Element:
    """The SealedDelivery a ``deliverSecure`` request (the element, or a SOAP envelope around it) carries."""
    root = parse_document(request, what="deliverSecure")
    if root.tag in (f"{{{NS.SOAP11}}}Envelope", f"{{{NS.SOAP12}}}Envelope"):
        root = _soap_body_child(root)
    expect_root(root, f"{_SV3}deliverSecure", "a deliverSecure request")
    inner = need(root, f"{_SV3}deliverSecure", "deliverSecure/deliverSecure")
    # Serialised, not deep-copied: a deep copy drops the unused namespace declarations in scope, which an
    # inclusive-C14N signature inside covers.
    sealed = standalone(inner)
    sealed.tag = SEALED_DELIVERY
    return sealed


# --- parsing and verifying ---


def _parse_message(element: etree._Element) -> SecureMessage:
    header = need(element, f"{_M3}Header", "Message/Header")
    support = need(header, f"{_M3}Supportinfo", "Supportinfo")
    attachments = parse_attachments(element, f"{_M3}Attachment")
    request = optional_text(header, f"{_M3}ReceiptRequest")
    if request and request not in set(ReceiptRequest):
        raise EnvelopeError(f"ReceiptRequest {request!r} is not NOT, SIMPLE or SIGNED")
    reply = optional_text(header, f"{_M3}Reply")
    if reply and reply not in set(ReplyOption):
        raise EnvelopeError(f"Reply {reply[:40]!r} is not REQUESTED, ACCEPTED or NOT_ALLOWED")
    matter = header.find(f"{_M3}OfficialMatter")
    message_body = need(element, f"{_M3}Body", "Message/Body")
    return SecureMessage(
        id=need_text(header, f"{_M3}Id", "Message/Header/Id"),
        subject=text(need(header, f"{_M3}Subject", "Subject")),
        support=SupportInfo(
            text(need(support, f"{_M3}Text", "Supportinfo/Text")),
            optional_text(support, f"{_M3}URL"),
            optional_text(support, f"{_M3}PhoneNumber"),
            optional_text(support, f"{_M3}EmailAdress"),
        ),
        content_type=need_text(message_body, f"{_M1}ContentType", "Body/ContentType"),
        body=b64decode(text(need(message_body, f"{_M1}Body", "Body/Body")), "Body/Body"),
        attachments=attachments,
        language=need_text(header, f"{_M3}Language", "Language"),
        metadata=tuple(
            (text(m.find(f"{_M1}Tag")), text(m.find(f"{_M1}Value"))) for m in header.iterfind(f"{_M3}Metadata")
        ),
        receipt_request=ReceiptRequest(request) if request else None,
        reply=ReplyOption(reply) if reply else None,
        official_matter=None if matter is None else _parse_official_matter(matter),
    )


def parse_secure_delivery(element: etree._Element) -> SecureDelivery:
    """The model of a SecureDelivery element (the ``Delivery`` of a SignedDelivery)."""
    header = need(element, f"{_M3}Header", "Delivery/Header")
    sender = need(header, f"{_M2}Sender", "Header/Sender")
    messages = tuple(_parse_message(m) for m in element.iterfind(f"{_M3}Message"))
    if not messages:
        raise EnvelopeError("a SecureDelivery carries at least one Message")
    return SecureDelivery(
        sender=Sender(
            need_text(sender, f"{_S}Id", "Sender/Id"),
            need_text(sender, f"{_S}Name", "Sender/Name"),
            optional_text(sender, f"{_S}Attention"),
        ),
        recipient=need_text(header, f"{_M2}Recipient", "Header/Recipient"),
        messages=messages,
        reference=optional_text(header, f"{_M2}Reference"),
        correlation_id=optional_text(header, f"{_M2}CorrelationId"),
        attention=optional_text(header, f"{_M2}Attention"),
    )


# Namespaces the transport wraps around a layer and that no Mina meddelanden document uses itself.
_WRAPPER_NAMESPACES = frozenset({NS.SOAP11.value, NS.SOAP12.value, SERVICE3_NS})


def _without_wrapper_namespaces(element: etree._Element) -> etree._Element | None:
    """A standalone copy without the unused declarations of SOAP's and Service v3's namespaces, or None when none
    is in scope. A layer signed with an inclusive-C14N digest was signed before it was wrapped (and a Java
    receiver re-marshals it before checking), so these declarations were not in scope when it was signed."""
    copied = standalone(element)
    if not _WRAPPER_NAMESPACES & set(copied.nsmap.values()):
        return None
    keep = [prefix for prefix, uri in copied.nsmap.items() if prefix and uri not in _WRAPPER_NAMESPACES]
    etree.cleanup_namespaces(copied, keep_ns_prefixes=keep)
    return copied


def _verify_layer(
    element: etree._Element, expected: x509.Certificate | None, allowed: frozenset[str]
) -> VerifiedSignature:
    """Verify one layer as it stands and, failing that, as it stood before a SOAP or deliverSecure wrapper was put
    around it (the same elements, attributes and text; only unused namespace declarations differ)."""
    try:
        return verify_enveloped(element, expected=expected, allowed=allowed)
    except EnvelopeError as first:
        unwrapped = _without_wrapper_namespaces(element)
        if unwrapped is None:
            raise
        try:
            return verify_enveloped(unwrapped, expected=expected, allowed=allowed)
        except EnvelopeError:
            raise first from None


@dataclass(frozen=True, slots=True)
class VerifiedSignedDelivery:
    """A SignedDelivery whose sender signature covers it all: the delivery and who signed it."""

    delivery: SecureDelivery
    sender_signature: VerifiedSignature


@dataclass(frozen=True, slots=True)
class VerifiedSealedDelivery:
    """A SealedDelivery whose seal and sender signatures both verified: the delivery, the seal, both signers."""

    delivery: SecureDelivery
    seal: Seal
    sender_signature: VerifiedSignature
    seal_signature: VerifiedSignature


def verify_signed_delivery(
    data: bytes | etree._Element,
    *,
    sender: x509.Certificate | None = None,
    schema: etree.XMLSchema | None = None,
    allowed: frozenset[str] = ALLOWED,
) -> VerifiedSignedDelivery:
    """Verify the sender's layer (with ``sender``'s certificate when given) and return what it signed."""
    root = parse_document(data, what="SignedDelivery")
    expect_root(root, SIGNED_DELIVERY, "a SignedDelivery")
    signature = _verify_layer(root, sender, allowed)
    _validate(root, schema)
    return VerifiedSignedDelivery(parse_secure_delivery(need(root, f"{_M3}Delivery", "Delivery")), signature)


def verify_sealed_delivery(
    data: bytes | etree._Element,
    *,
    intermediary: x509.Certificate | None = None,
    sender: x509.Certificate | None = None,
    schema: etree.XMLSchema | None = None,
    allowed: frozenset[str] = ALLOWED,
) -> VerifiedSealedDelivery:
    """Verify the seal over the whole SealedDelivery, then the sender's signature over the SignedDelivery inside
    it, and require ``SignaturesOK``. ``data`` may also be a ``deliverSecure`` request (or its SOAP envelope)."""
    root = parse_document(data, what="SealedDelivery")
    if root.tag != SEALED_DELIVERY:
        root = from_deliver_secure(root)
    seal_signature = _verify_layer(root, intermediary, allowed)
    _validate(root, schema)
    signed = need(root, SIGNED_DELIVERY, "SignedDelivery")
    verified = verify_signed_delivery(signed, sender=sender, allowed=allowed)
    seal_element = need(root, f"{_M3}Seal", "Seal")
    received = parse_date(need_text(seal_element, f"{_M1}ReceivedTime", "Seal/ReceivedTime"), "Seal/ReceivedTime")
    seal = Seal(received, need_text(seal_element, f"{_M1}SignaturesOK", "Seal/SignaturesOK") in ("true", "1"))
    if not seal.signatures_ok:
        raise EnvelopeError(Finding("SEAL", "the intermediary's seal says the sender's signature did not verify"))
    return VerifiedSealedDelivery(verified.delivery, seal, verified.sender_signature, seal_signature)


# --- the signed Receipt ---


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """A Mina meddelanden Receipt for one message: ``message_id`` is the SecureMessage's Header/Id,
    ``receipt_recipient`` the sender the receipt goes back to (its Sender/Id) and ``receipt_sender`` the
    recipient whose mailbox acknowledged the message; ``acknowledged`` is a date in the contract."""

    message_id: str
    receipt_recipient: str
    receipt_sender: str
    acknowledged: date


def receipt_for(delivery: SecureDelivery, message_id: str, acknowledged: date) -> DeliveryReceipt:
    """The Receipt the mailbox operator owes for ``message_id`` of ``delivery`` (which must ask for one)."""
    message = next((m for m in delivery.messages if m.id == message_id), None)
    if message is None:
        raise EnvelopeError(f"the delivery has no message {message_id!r}")
    if message.receipt_request not in (ReceiptRequest.SIMPLE, ReceiptRequest.SIGNED):
        raise EnvelopeError(f"message {message_id!r} asks for no receipt")
    return DeliveryReceipt(message_id, delivery.sender.id, delivery.recipient, acknowledged)


def receipt_matches(receipt: DeliveryReceipt, delivery: SecureDelivery) -> bool:
    """Whether ``receipt`` answers a message of ``delivery``: same message id, sender and recipient."""
    return (
        any(m.id == receipt.message_id for m in delivery.messages)
        and receipt.receipt_recipient == delivery.sender.id
        and receipt.receipt_sender == delivery.recipient
    )


def build_delivery_receipt(
    receipt: DeliveryReceipt, operator_keys: KeyPair, *, schema: etree.XMLSchema | None = None
) -> bytes:
    """The signed Receipt (enveloped signature by the mailbox operator)."""
    root = etree.Element(RECEIPT, nsmap={"rcp": RECEIPT_NS})
    sub(root, f"{_R}MessageId", receipt.message_id)
    sub(root, f"{_R}ReceiptRecipient", receipt.receipt_recipient)
    sub(root, f"{_R}ReceiptSender", receipt.receipt_sender)
    sub(root, f"{_R}AcknowledgedTime", receipt.acknowledged.isoformat())
    sign_enveloped(root, operator_keys)
    _validate(root, schema)
    return serialize(root)


@dataclass(frozen=True, slots=True)
class VerifiedDeliveryReceipt:
    """A Receipt whose signature verified, and the operator certificate that verified it."""

    receipt: DeliveryReceipt
    signature: VerifiedSignature


def verify_delivery_receipt(
    data: bytes | etree._Element,
    *,
    operator: x509.Certificate | None = None,
    schema: etree.XMLSchema | None = None,
    allowed: frozenset[str] = ALLOWED,
) -> VerifiedDeliveryReceipt:
    """Verify a signed Receipt (with the ``operator``'s certificate when given) and return what it says."""
    root = parse_document(data, what="Receipt")
    expect_root(root, RECEIPT, "a Receipt")
    signature = verify_enveloped(root, expected=operator, allowed=allowed)
    _validate(root, schema)
    acknowledged = parse_date(need_text(root, f"{_R}AcknowledgedTime", "AcknowledgedTime"), "AcknowledgedTime")
    receipt = DeliveryReceipt(
        need_text(root, f"{_R}MessageId", "MessageId"),
        need_text(root, f"{_R}ReceiptRecipient", "ReceiptRecipient"),
        need_text(root, f"{_R}ReceiptSender", "ReceiptSender"),
        acknowledged,
    )
    return VerifiedDeliveryReceipt(receipt, signature)


# --- Service v3 answers ---


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """``deliverSecureResponse``: the operator's transaction id and, per recipient, whether it was delivered."""

    trans_id: str
    statuses: tuple[tuple[str, bool], ...] = field(default=())


def _soap_body_child(envelope: etree._Element) -> etree._Element:
    body = envelope.find(f"{{{envelope.tag[1:].split('}')[0]}}}Body")
    children = [c for c in body if isinstance(c.tag, str)] if body is not None else []
    if len(children) != 1:
        raise EnvelopeError("the SOAP Body must hold exactly one element")
    return children[0]


def parse_delivery_result(data: bytes | etree._Element) -> DeliveryResult:
    """A ``deliverSecureResponse`` (bare, or in its SOAP envelope); any other answer is refused."""
    root = parse_document(data, what="deliverSecureResponse")
    if root.tag in (f"{{{NS.SOAP11}}}Envelope", f"{{{NS.SOAP12}}}Envelope"):
        root = _soap_body_child(root)
    expect_root(root, f"{_SV3}deliverSecureResponse", "a deliverSecureResponse")
    result = need(root, f"{_SV3}return", "deliverSecureResponse/return")
    statuses = tuple(
        (
            need_text(s, f"{_SV}RecipientId", "Status/RecipientId"),
            need_text(s, f"{_SV}Delivered", "Delivered") == "true",
        )
        for s in result.iterfind(f"{_SV}Status")
    )
    return DeliveryResult(need_text(result, f"{_SV}TransId", "TransId"), statuses)
