"""What the operator signs about a letter after delivering it, sans-I/O: mailbox events and the delgivningskvitto.

**Mailbox events** (``{urn:accesspoint:operators:mailbox-event:1}MailboxEvent``, enveloped XML-DSig by the
operator): ``opened`` (the holder first opened a letter that asked for a receipt), ``not-served`` (a served
letter's deadline passed without the holder's acknowledgement), ``broadcast`` (how many mailboxes an operator
message reached). Each names the AS4 message it is about, the business id, the operator, the holder, when, and
details by name. For a Mina meddelanden letter that asked for one, the read receipt also travels in the
contract's form: its ``Receipt`` with ``AcknowledgedTime`` the day the letter was opened, signed for SIGNED and
unsigned for SIMPLE (the contract's signature is optional).

**The delgivningskvitto** (``{urn:accesspoint:operators:delgivning:1}Delgivningskvitto``): the operator's signed
statement that the holder, logged in with e-ID, acknowledged a served letter: which letter (AS4 MessageId,
business id, sender, subject), whom (the holder, and the e-ID signature they made: identity, name, certificate
SHA-256, nonce, when, the SHA-256 of the text they signed), when it was served, the deadline, and the SHA-256
and size of every part that was served. An RFC 3161 time-stamp token over the SHA-256 of the signed kvitto's
bytes, from an authority with the critical id-kp-timeStamping usage, travels beside it; ``verify_kvitto``
checks both (``accesspoint verify`` does the same offline).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

from cryptography import x509
from lxml import etree

from accesspoint.envelopes._common import (
    EnvelopeError,
    need,
    need_text,
    optional_text,
    parse_datetime,
    root_is,
    serialize,
    sub,
    text,
    xml_datetime,
)
from accesspoint.envelopes.minameddelanden import (
    RECEIPT,
    RECEIPT_NS,
    DeliveryReceipt,
    ReceiptRequest,
    build_delivery_receipt,
)
from accesspoint.envelopes.signature import sign_enveloped, verify_enveloped_by_one_of
from accesspoint.security.keys import KeyPair
from accesspoint.security.timestamp import TimestampError, VerifiedTimestamp, verify_token
from operators.signed_documents import operator_document, verified_operator_document

EVENT_NS = "urn:accesspoint:operators:mailbox-event:1"
KVITTO_NS = "urn:accesspoint:operators:delgivning:1"
_E, _K = f"{{{EVENT_NS}}}", f"{{{KVITTO_NS}}}"
MAILBOX_EVENT = f"{_E}MailboxEvent"
KVITTO = f"{_K}Delgivningskvitto"
TOKEN_MIME = "application/timestamp-token"  # noqa: S105 (a MIME type, not a secret)


class EventKind(StrEnum):
    """What a mailbox event says happened."""

    OPENED = "opened"
    NOT_SERVED = "not-served"
    BROADCAST = "broadcast"


@dataclass(frozen=True, slots=True)
class MailboxEvent:
    """One signed statement by the operator about a letter (or an operator message)."""

    kind: EventKind
    message_id: str  # the AS4 message it is about
    operator: str
    at: datetime
    business_id: str | None = None
    recipient: str | None = None
    details: tuple[tuple[str, str], ...] = ()

    def detail(self, name: str) -> str | None:
        """The first detail of that name."""
        return next((v for k, v in self.details if k == name), None)


def build_event(event: MailboxEvent, keys: KeyPair) -> bytes:
    """The signed MailboxEvent."""
    root = etree.Element(MAILBOX_EVENT, nsmap={"e": EVENT_NS})
    sub(root, f"{_E}Kind", event.kind)
    sub(root, f"{_E}MessageId", event.message_id)
    if event.business_id is not None:
        sub(root, f"{_E}BusinessId", event.business_id)
    sub(root, f"{_E}Operator", event.operator)
    if event.recipient is not None:
        sub(root, f"{_E}Recipient", event.recipient)
    sub(root, f"{_E}Time", xml_datetime(event.at))
    for name, value in event.details:
        sub(root, f"{_E}Detail", value, Name=name)
    sign_enveloped(root, keys)
    return serialize(root)


def verify_event(data: bytes | etree._Element, operator: x509.Certificate) -> MailboxEvent:
    """A MailboxEvent whose signature verifies with the operator's certificate; EnvelopeError otherwise."""
    root = verified_operator_document(data, operator, tag=MAILBOX_EVENT, what="MailboxEvent")
    try:
        kind = EventKind(need_text(root, f"{_E}Kind", "Kind"))
    except ValueError:
        raise EnvelopeError("MailboxEvent: unknown Kind") from None
    return MailboxEvent(
        kind=kind,
        message_id=need_text(root, f"{_E}MessageId", "MessageId"),
        operator=need_text(root, f"{_E}Operator", "Operator"),
        at=parse_datetime(need_text(root, f"{_E}Time", "Time"), "Time"),
        business_id=optional_text(root, f"{_E}BusinessId"),
        recipient=optional_text(root, f"{_E}Recipient"),
        details=tuple((d.get("Name") or "", text(d)) for d in root.iterfind(f"{_E}Detail")),
    )


def read_receipt(
    request: ReceiptRequest, *, message_id: str, sender: str, holder: str, opened: date, keys: KeyPair
) -> bytes:
    """The contract's Receipt for a Mina meddelanden message opened on ``opened``: signed for SIGNED, bare for
    SIMPLE."""
    receipt = DeliveryReceipt(message_id, sender, holder, opened)
    if request is ReceiptRequest.SIGNED:
        return build_delivery_receipt(receipt, keys)
    root = etree.Element(RECEIPT, nsmap={"rcp": RECEIPT_NS})
    for name, value in (
        ("MessageId", message_id),
        ("ReceiptRecipient", sender),
        ("ReceiptSender", holder),
        ("AcknowledgedTime", opened.isoformat()),
    ):
        sub(root, f"{{{RECEIPT_NS}}}{name}", value)
    return serialize(root)


# --- the delgivningskvitto ---


@dataclass(frozen=True, slots=True)
class ServedPart:
    """One part of a served letter: its content id, size and SHA-256."""

    content_id: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """The holder's e-ID signature that acknowledged the letter (what the operator verified of it)."""

    identity: str
    name: str
    certificate_sha256: str
    nonce: str
    signed_at: datetime
    text_sha256: str


@dataclass(frozen=True, slots=True)
class Kvitto:
    """A delgivningskvitto (see the module docstring)."""

    message_id: str
    business_id: str
    sender: str
    subject: str
    recipient: str
    operator: str
    served_at: datetime
    deadline: datetime
    acknowledgement: Acknowledgement
    parts: tuple[ServedPart, ...]


def acknowledgement_text(*, business_id: str, subject: str, sender: str, parts: Sequence[ServedPart]) -> str:
    """What the holder signs with e-ID to acknowledge a served letter: it names the letter and the digest of
    every part, so the signature counts for this letter's content and nothing else."""
    digests = ", ".join(f"{p.content_id} SHA-256 {p.sha256}" for p in parts)
    return (
        f"Jag bekräftar att jag har tagit del av meddelandet {business_id!r} från {sender} med rubriken "
        f"{subject!r} ({digests})."
    )


def build_kvitto(kvitto: Kvitto, keys: KeyPair) -> bytes:
    """The signed Delgivningskvitto."""
    root = etree.Element(KVITTO, nsmap={"k": KVITTO_NS})
    for name, value in (
        ("MessageId", kvitto.message_id),
        ("BusinessId", kvitto.business_id),
        ("Sender", kvitto.sender),
        ("Subject", kvitto.subject),
        ("Recipient", kvitto.recipient),
        ("Operator", kvitto.operator),
        ("ServedAt", xml_datetime(kvitto.served_at)),
        ("Deadline", xml_datetime(kvitto.deadline)),
    ):
        sub(root, f"{_K}{name}", value)
    ack = kvitto.acknowledgement
    element = sub(root, f"{_K}AcknowledgedBy")
    for name, value in (
        ("Identity", ack.identity),
        ("Name", ack.name),
        ("CertificateSHA256", ack.certificate_sha256),
        ("Nonce", ack.nonce),
        ("SignedAt", xml_datetime(ack.signed_at)),
        ("TextSHA256", ack.text_sha256),
    ):
        sub(element, f"{_K}{name}", value)
    served = sub(root, f"{_K}Served")
    for part in kvitto.parts:
        sub(served, f"{_K}Part", ContentId=part.content_id, Size=str(part.size), SHA256=part.sha256)
    sign_enveloped(root, keys)
    return serialize(root)


def _kvitto_of(root: etree._Element) -> Kvitto:
    ack = need(root, f"{_K}AcknowledgedBy", "AcknowledgedBy")
    parts = []
    for part in root.iterfind(f"{_K}Served/{_K}Part"):
        size = part.get("Size") or ""
        if not size.isdigit():
            raise EnvelopeError("Delgivningskvitto: a served part's Size is not a number")
        parts.append(ServedPart(part.get("ContentId") or "", int(size), part.get("SHA256") or ""))

    def moment(parent: etree._Element, name: str) -> datetime:
        return parse_datetime(need_text(parent, f"{_K}{name}", name), name)

    return Kvitto(
        message_id=need_text(root, f"{_K}MessageId", "MessageId"),
        business_id=need_text(root, f"{_K}BusinessId", "BusinessId"),
        sender=need_text(root, f"{_K}Sender", "Sender"),
        subject=text(need(root, f"{_K}Subject", "Subject")),
        recipient=need_text(root, f"{_K}Recipient", "Recipient"),
        operator=need_text(root, f"{_K}Operator", "Operator"),
        served_at=moment(root, "ServedAt"),
        deadline=moment(root, "Deadline"),
        acknowledgement=Acknowledgement(
            identity=need_text(ack, f"{_K}Identity", "Identity"),
            name=need_text(ack, f"{_K}Name", "Name"),
            certificate_sha256=need_text(ack, f"{_K}CertificateSHA256", "CertificateSHA256"),
            nonce=need_text(ack, f"{_K}Nonce", "Nonce"),
            signed_at=moment(ack, "SignedAt"),
            text_sha256=need_text(ack, f"{_K}TextSHA256", "TextSHA256"),
        ),
        parts=tuple(parts),
    )


@dataclass(frozen=True, slots=True)
class VerifiedKvitto:
    """A delgivningskvitto whose signature and time-stamp verified: what it says, who signed it, when stamped."""

    kvitto: Kvitto
    signer: x509.Certificate
    timestamp: VerifiedTimestamp
    sha256: str  # of the kvitto's bytes, the time-stamped digest

    def to_json(self) -> dict[str, object]:
        """The ``served`` evidence as statuses show it."""
        kvitto = self.kvitto
        return {
            "served_at": kvitto.served_at.isoformat(),
            "deadline": kvitto.deadline.isoformat(),
            "acknowledged_by": {
                "identity": kvitto.acknowledgement.identity,
                "name": kvitto.acknowledgement.name,
                "certificate_sha256": kvitto.acknowledgement.certificate_sha256,
            },
            "parts": [{"content_id": p.content_id, "size": p.size, "sha256": p.sha256} for p in kvitto.parts],
            "kvitto_sha256": self.sha256,
            "signed_by": self.signer.subject.rfc4514_string(),
            "timestamp": self.timestamp.to_json(),
        }


def kvitto_sha256(data: bytes) -> bytes:
    """The digest that is time-stamped: SHA-256 of the signed kvitto's bytes as sent."""
    return hashlib.sha256(data).digest()


def is_kvitto(data: bytes) -> bool:
    """Whether the bytes are a Delgivningskvitto (by their root element; nothing is verified)."""
    return root_is(data, KVITTO)


def verify_kvitto(
    data: bytes,
    token: bytes,
    *,
    operators: Iterable[x509.Certificate],
    tsa_anchors: Sequence[x509.Certificate],
    at: datetime | None = None,
) -> VerifiedKvitto:
    """Check a kvitto's signature with one of the ``operators``' certificates and its time-stamp token over the
    SHA-256 of ``data`` against ``tsa_anchors``; the token's time must not precede the service. EnvelopeError
    (or TimestampError) says which check failed."""
    root = operator_document(data, tag=KVITTO, what="Delgivningskvitto")
    signer = verify_enveloped_by_one_of(
        root, operators, refused="the Delgivningskvitto verifies with no operator's certificate"
    ).signer
    kvitto = _kvitto_of(root)
    digest = kvitto_sha256(data)
    stamp = verify_token(token, digest=digest, anchors=tsa_anchors)
    if stamp.gen_time < kvitto.served_at.astimezone(UTC).replace(microsecond=0):
        raise TimestampError("the time-stamp is older than the service it stamps")
    if at is not None and stamp.gen_time > at:
        raise TimestampError("the time-stamp is dated in the future")
    return VerifiedKvitto(kvitto, signer, stamp, digest.hex())
