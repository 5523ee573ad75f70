"""The typed model of the ebMS 3 / AS4 header: what a message says, independent of its bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import unquote

from accesspoint.core.errors import Category, ErrorCode, Severity
from accesspoint.core.namespaces import DEFAULT_MPC, MessageProperty, PartProperty, SoapVersion


@dataclass(frozen=True, slots=True)
class PartyId:
    """eb:PartyId: a party identifier and, for a non-URI value, its type."""

    value: str
    type: str | None = None


@dataclass(frozen=True, slots=True)
class Party:
    """eb:From or eb:To: the party's ids and the role it plays."""

    party_ids: tuple[PartyId, ...]
    role: str


@dataclass(frozen=True, slots=True)
class PartyInfo:
    """eb:PartyInfo: sender and receiver."""

    sender: Party
    receiver: Party


@dataclass(frozen=True, slots=True)
class AgreementRef:
    """eb:AgreementRef: the agreement governing the exchange, optionally naming the P-Mode."""

    value: str
    type: str | None = None
    pmode: str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """eb:Service: the business service, typed when it is not a URI."""

    value: str
    type: str | None = None


@dataclass(frozen=True, slots=True)
class CollaborationInfo:
    """eb:CollaborationInfo: agreement, service, action and conversation."""

    service: Service
    action: str
    conversation_id: str
    agreement_ref: AgreementRef | None = None


@dataclass(frozen=True, slots=True)
class Property:
    """eb:Property in MessageProperties or PartProperties."""

    name: str
    value: str
    type: str | None = None


@dataclass(frozen=True, slots=True)
class PartSchema:
    """eb:Schema: the schema a payload conforms to."""

    location: str
    version: str | None = None
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class Description:
    """A human-readable description with its language."""

    text: str
    lang: str = "en"


@dataclass(frozen=True, slots=True)
class PartInfo:
    """eb:PartInfo: one payload, referenced by ``cid:`` (attachment) or absent href (SOAP Body)."""

    href: str | None
    properties: tuple[Property, ...] = ()
    schema: PartSchema | None = None
    description: Description | None = None

    def part_property(self, name: str) -> str | None:
        """The value of the named part property, or None."""
        for prop in self.properties:
            if prop.name == name:
                return prop.value
        return None

    @property
    def content_id(self) -> str | None:
        """The Content-ID a ``cid:`` href points at (percent-decoded, RFC 2392), or None for another href."""
        if self.href is not None and self.href.lower().startswith("cid:"):
            return unquote(self.href[4:])
        return None

    @property
    def mime_type(self) -> str | None:
        """The payload's MIME type before compression (AS4: required)."""
        return self.part_property(PartProperty.MIME_TYPE)

    @property
    def character_set(self) -> str | None:
        """The payload's character set (AS4: recommended for XML)."""
        return self.part_property(PartProperty.CHARACTER_SET)

    @property
    def compression_type(self) -> str | None:
        """``application/gzip`` when the MSH compressed the part, else None."""
        return self.part_property(PartProperty.COMPRESSION_TYPE)


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """eb:MessageInfo: id, time and, for replies and signals, the message referred to.

    ``timestamp_text`` keeps the timestamp exactly as sent; it is not part of equality.
    """

    message_id: str
    timestamp: datetime
    ref_to_message_id: str | None = None
    timestamp_text: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class UserMessage:
    """eb:UserMessage: a business message's header."""

    message_info: MessageInfo
    party_info: PartyInfo
    collaboration_info: CollaborationInfo
    message_properties: tuple[Property, ...] = ()
    payload_info: tuple[PartInfo, ...] = ()
    mpc: str | None = None

    @property
    def message_id(self) -> str:
        """Shortcut for ``message_info.message_id``."""
        return self.message_info.message_id

    @property
    def effective_mpc(self) -> str:
        """The MPC, defaulting to the default MPC when the header names none."""
        return self.mpc or DEFAULT_MPC

    def message_property(self, name: str) -> Property | None:
        """The named message property, or None."""
        for prop in self.message_properties:
            if prop.name == name:
                return prop
        return None

    @property
    def original_sender(self) -> Property | None:
        """The four-corner originalSender (C1)."""
        return self.message_property(MessageProperty.ORIGINAL_SENDER)

    @property
    def final_recipient(self) -> Property | None:
        """The four-corner finalRecipient (C4)."""
        return self.message_property(MessageProperty.FINAL_RECIPIENT)

    @property
    def tracking_identifier(self) -> Property | None:
        """The optional four-corner trackingIdentifier."""
        return self.message_property(MessageProperty.TRACKING_IDENTIFIER)


@dataclass(frozen=True, slots=True)
class Transform:
    """A ds:Transform of a reference, with exclusive C14N's InclusiveNamespaces PrefixList if any."""

    algorithm: str
    inclusive_prefixes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ReferenceEcho:
    """A ds:Reference as a receipt echoes it in ebbp:MessagePartNRInformation."""

    uri: str
    digest_method: str
    digest_value: str
    transforms: tuple[Transform, ...] = ()


@dataclass(frozen=True, slots=True)
class Receipt:
    """eb:Receipt: non-repudiation references of a signed message, or a copy of an unsigned UserMessage."""

    references: tuple[ReferenceEcho, ...] = ()
    user_message: UserMessage | None = None

    @property
    def is_non_repudiation(self) -> bool:
        """True when the receipt carries ebbp:NonRepudiationInformation."""
        return bool(self.references)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """eb:Error as carried in an error signal."""

    error_code: str
    severity: str
    category: str | None = None
    short_description: str | None = None
    ref_to_message_in_error: str | None = None
    origin: str | None = None
    description: Description | None = None
    detail: str | None = None

    @property
    def known(self) -> ErrorCode | None:
        """The table row for this code, or None for a code outside ebMS 3 / AS4."""
        return ErrorCode.from_code(self.error_code)

    @classmethod
    def from_code(
        cls,
        code: ErrorCode,
        *,
        detail: str | None = None,
        ref_to_message_in_error: str | None = None,
        severity: Severity | None = None,
        origin: str = "ebMS",
    ) -> ErrorInfo:
        """An eb:Error for a table row."""
        spec = code.value
        return cls(
            error_code=spec.code,
            severity=(severity or spec.severity).value,
            category=Category(spec.category).value,
            short_description=spec.short_description,
            ref_to_message_in_error=ref_to_message_in_error,
            origin=origin,
            description=Description(spec.description),
            detail=detail or None,
        )


@dataclass(frozen=True, slots=True)
class PullRequest:
    """eb:PullRequest for one MPC."""

    mpc: str = DEFAULT_MPC


@dataclass(frozen=True, slots=True)
class SignalMessage:
    """eb:SignalMessage: a receipt, error(s) or a pull request."""

    message_info: MessageInfo
    receipt: Receipt | None = None
    errors: tuple[ErrorInfo, ...] = ()
    pull_request: PullRequest | None = None

    @property
    def message_id(self) -> str:
        """Shortcut for ``message_info.message_id``."""
        return self.message_info.message_id

    @property
    def kind(self) -> str:
        """``receipt``, ``error`` or ``pull-request``."""
        if self.pull_request is not None:
            return "pull-request"
        if self.errors:
            return "error"
        return "receipt"


AS4Header = UserMessage | SignalMessage


@dataclass(frozen=True, slots=True)
class Messaging:
    """eb:Messaging as AS4 allows it: exactly one user message or one signal message (no bundling)."""

    message: AS4Header
    soap_version: SoapVersion = SoapVersion.V12

    @property
    def kind(self) -> str:
        """``user-message``, ``receipt``, ``error`` or ``pull-request``."""
        if isinstance(self.message, UserMessage):
            return "user-message"
        return self.message.kind
