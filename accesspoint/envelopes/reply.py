"""A holder's answer in Mina meddelanden's form: the contracts' reply delivery (Reply.xsd), sans-I/O.

``ReplyDelivery`` = ``Header`` (the contract's DeliveryHeader: Sender = the holder, Recipient = the sender of the
letter answered, ``Reference`` = that sender's case reference, ``CorrelationId`` = the answered message's id),
``ReplyMessage`` (a v1 SecureMessage: the answer's text and attachments), ``ReplyTime`` and the signature of the
holder's mailbox operator, which authenticated the holder with e-ID and speaks for them. ``SealedReplyDelivery``
adds the ``Seal`` and the intermediary's signature, as a SealedDelivery does; here the operator seals what it
received from the holder, so both signatures are its own and the sender checks both with its certificate.

The contract defines these as types only; like the delivery layers (``minameddelanden.py``) each is a document
of its own whose root is ``{…/Reply}SignedDelivery`` (the element name the sealed layer gives it) or
``{…/Reply}SealedReplyDelivery``. ``schemas.load_reply_schema`` declares those elements over the contract's types.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date

from cryptography import x509
from lxml import etree

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
from accesspoint.envelopes.minameddelanden import (
    M1_NS,
    REPLY_NS,
    SENDER_NS,
    Attachment,
    Sender,
    SupportInfo,
    append_attachments,
    parse_attachments,
)
from accesspoint.envelopes.signature import ALLOWED, VerifiedSignature, sign_enveloped, verify_enveloped
from accesspoint.security.keys import KeyPair

_Y, _M1, _S = f"{{{REPLY_NS}}}", f"{{{M1_NS}}}", f"{{{SENDER_NS}}}"
SIGNED_REPLY = f"{_Y}SignedDelivery"
SEALED_REPLY = f"{_Y}SealedReplyDelivery"
_NSMAP = {"reply": REPLY_NS, "m1": M1_NS, "snd": SENDER_NS}


@dataclass(frozen=True, slots=True)
class ReplyMessage:
    """The answer itself: its id, subject, the text (``content_type`` and ``body``) and attachments."""

    id: str
    subject: str
    content_type: str
    body: bytes
    attachments: tuple[Attachment, ...] = ()
    support: SupportInfo = field(default_factory=lambda: SupportInfo("Svar från mottagaren"))
    language: str = "sv"


@dataclass(frozen=True, slots=True)
class ReplyDelivery:
    """A holder's answer to one message: from the holder (``sender``) to the letter's sender (``recipient``)."""

    sender: Sender
    recipient: str
    message: ReplyMessage
    reply_time: date
    reference: str | None = None  # the letter's sender's case reference
    correlation_id: str | None = None  # the answered SecureMessage's id


@dataclass(frozen=True, slots=True)
class VerifiedReply:
    """A sealed reply whose seal and signature both verified: the answer and who signed each layer."""

    reply: ReplyDelivery
    received: date
    signature: VerifiedSignature
    seal_signature: VerifiedSignature


def _validate(root: etree._Element, schema: etree.XMLSchema | None) -> None:
    if schema is not None:
        require_valid(schema, root)


def _reply_delivery(root: etree._Element, reply: ReplyDelivery) -> None:
    header = sub(root, f"{_Y}Header")
    sender = sub(header, f"{_M1}Sender")
    sub(sender, f"{_S}Id", reply.sender.id)
    sub(sender, f"{_S}Name", reply.sender.name)
    sub(header, f"{_M1}Recipient", reply.recipient)
    for name, value in (("Reference", reply.reference), ("CorrelationId", reply.correlation_id)):
        if value is not None:
            sub(header, f"{_M1}{name}", value)
    message = sub(root, f"{_Y}ReplyMessage")
    answer = reply.message
    message_header = sub(message, f"{_M1}Header")
    sub(message_header, f"{_M1}Id", answer.id)
    sub(message_header, f"{_M1}Subject", answer.subject)
    sub(sub(message_header, f"{_M1}Supportinfo"), f"{_M1}Text", answer.support.text)
    sub(message_header, f"{_M1}Language", answer.language)
    body = sub(message, f"{_M1}Body")
    sub(body, f"{_M1}ContentType", answer.content_type)
    sub(body, f"{_M1}Body", b64encode(answer.body))
    append_attachments(message, f"{_M1}Attachment", answer.attachments)
    sub(root, f"{_Y}ReplyTime", reply.reply_time.isoformat())


def build_sealed_reply(
    reply: ReplyDelivery, keys: KeyPair, *, received: date, schema: etree.XMLSchema | None = None
) -> bytes:
    """The reply delivery signed with ``keys`` and sealed (``received``, SignaturesOK) with the same keys."""
    signed = etree.Element(SIGNED_REPLY, nsmap=_NSMAP)
    _reply_delivery(signed, reply)
    sign_enveloped(signed, keys)
    signed = parse_document(serialize(signed), what="SignedDelivery")  # see signature.standalone: a fresh tree
    _validate(signed, schema)
    root = etree.Element(SEALED_REPLY, nsmap=_NSMAP)
    root.append(copy.deepcopy(signed))
    seal = sub(root, f"{_Y}Seal")
    sub(seal, f"{_M1}ReceivedTime", received.isoformat())
    sub(seal, f"{_M1}SignaturesOK", "true")
    sign_enveloped(root, keys)
    _validate(root, schema)
    return serialize(root)


def _parse_reply(element: etree._Element) -> ReplyDelivery:
    header = need(element, f"{_Y}Header", "ReplyDelivery/Header")
    sender = need(header, f"{_M1}Sender", "Header/Sender")
    recipients = [text(r) for r in header.iterfind(f"{_M1}Recipient")]
    if len(recipients) != 1:
        raise EnvelopeError(f"a reply goes to one recipient, not {len(recipients)}")
    message = need(element, f"{_Y}ReplyMessage", "ReplyMessage")
    message_header = need(message, f"{_M1}Header", "ReplyMessage/Header")
    body = need(message, f"{_M1}Body", "ReplyMessage/Body")
    attachments = parse_attachments(message, f"{_M1}Attachment")
    return ReplyDelivery(
        sender=Sender(need_text(sender, f"{_S}Id", "Sender/Id"), need_text(sender, f"{_S}Name", "Sender/Name")),
        recipient=recipients[0],
        message=ReplyMessage(
            id=need_text(message_header, f"{_M1}Id", "ReplyMessage/Header/Id"),
            subject=text(need(message_header, f"{_M1}Subject", "Subject")),
            content_type=need_text(body, f"{_M1}ContentType", "Body/ContentType"),
            body=b64decode(text(need(body, f"{_M1}Body", "Body/Body")), "Body/Body"),
            attachments=attachments,
            support=SupportInfo(text(need(message_header, f"{_M1}Supportinfo/{_M1}Text", "Supportinfo/Text"))),
            language=need_text(message_header, f"{_M1}Language", "Language"),
        ),
        reply_time=parse_date(need_text(element, f"{_Y}ReplyTime", "ReplyTime"), "ReplyTime"),
        reference=optional_text(header, f"{_M1}Reference"),
        correlation_id=optional_text(header, f"{_M1}CorrelationId"),
    )


def verify_sealed_reply(
    data: bytes | etree._Element,
    *,
    operator: x509.Certificate | None = None,
    schema: etree.XMLSchema | None = None,
    allowed: frozenset[str] = ALLOWED,
) -> VerifiedReply:
    """Verify the seal over the whole sealed reply, then the signature of the reply delivery inside it (both with
    ``operator``'s certificate when given), require SignaturesOK, and return what they signed."""
    root = parse_document(data, what="SealedReplyDelivery")
    expect_root(root, SEALED_REPLY, "a SealedReplyDelivery")
    seal_signature = verify_enveloped(root, expected=operator, allowed=allowed)
    _validate(root, schema)
    signed = need(root, SIGNED_REPLY, "SealedReplyDelivery/SignedDelivery")
    signature = verify_enveloped(signed, expected=operator, allowed=allowed)
    seal = need(root, f"{_Y}Seal", "Seal")
    if need_text(seal, f"{_M1}SignaturesOK", "Seal/SignaturesOK") not in ("true", "1"):
        raise EnvelopeError(Finding("SEAL", "the seal says the reply's signature did not verify"))
    received = parse_date(need_text(seal, f"{_M1}ReceivedTime", "Seal/ReceivedTime"), "Seal/ReceivedTime")
    return VerifiedReply(_parse_reply(signed), received, signature, seal_signature)
