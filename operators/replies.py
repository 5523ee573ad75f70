"""A holder's answer to a letter, in the letter's network's form, sans-I/O — and the sender's side reading it.

The operator keeps, with each letter, what an answer needs (``AnsweredLetter``): its network, business id,
subject, the sender (as the envelope named it), the holder's party as the envelope named it, the sender's case
reference and whether and until when answers are accepted (``LetterTerms.reply``). ``check_reply`` refuses an
answer to a letter that does not allow one, or after its deadline, with the reason. ``build_reply`` makes the
answer in the form the letter's sender reads:

- **Mina meddelanden**: the contracts' ``SealedReplyDelivery`` (``envelopes/reply.py``): Sender = the holder,
  Recipient = the letter's sender, ``Reference`` = the case reference, ``CorrelationId`` = the letter's message id;
- **SDK**: an XHE from the letter's ToParty back to its FromParty carrying the letter document with
  ``InReplyTo``, signed (``tm-base-ext-sigenc``);
- **SBDH** (Peppol and the Nordic partners): an SBD from the letter's receiver back to its sender whose business
  document is the letter document with ``InReplyTo``, signed (enveloped XML-DSig on the letter document), the
  conversation in a ``ConversationId`` scope.

Every form is signed with the operator's key, which authenticated the holder with e-ID and speaks for them.
``read_reply`` is the sender's side: whichever form arrived, it verifies it with the operator's certificate and
returns one ``ReceivedReply``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from lxml import etree

from accesspoint.envelopes._common import EnvelopeError, parse_document, serialize
from accesspoint.envelopes.letter import (
    LETTER,
    LETTER_DOCUMENT_TYPE,
    LETTER_NS,
    LETTER_TYPE,
    LETTER_VERSION,
    InlineFile,
    LetterDocument,
    LetterTerms,
    build_letter_element,
    parse_letter,
)
from accesspoint.envelopes.minameddelanden import Attachment, Sender
from accesspoint.envelopes.reply import (
    SEALED_REPLY,
    ReplyDelivery,
    ReplyMessage,
    build_sealed_reply,
    verify_sealed_reply,
)
from accesspoint.envelopes.sbdh import (
    SBDH_NS,
    DocumentIdentification,
    Partner,
    Sbdh,
    Scope,
    ScopeType,
    build_sbd,
    parse_sbd,
)
from accesspoint.envelopes.signature import sign_enveloped, verify_enveloped
from accesspoint.envelopes.xhe import XHE_NS, Xhe, XheParty, XhePayload, build_xhe, sdk_scope, verify_xhe
from accesspoint.security.keys import KeyPair
from operators.deliveries import Network

# An answer is a few paragraphs and a few files a holder uploads; larger ones are refused before any work.
MAX_TEXT = 64 * 1024
MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_SIZE = 10 * 1024 * 1024
REPLY_DOCUMENT_ID = f"busdox-docid-qns::{LETTER_NS}::Letter##reply::1"
DEFAULT_FEDERATION = "urn:fdc:digg.se:edelivery:federation:test"
LETTER_STANDARD = LETTER_NS


class ReplyRefused(Exception):
    """An answer the operator does not send: ``code`` (machine) and ``reason`` (words)."""

    def __init__(self, code: str, reason: str, status: int = 409) -> None:
        self.code = code
        self.reason = reason
        self.status = status
        super().__init__(f"{code}: {reason}")


@dataclass(frozen=True, slots=True)
class AnsweredLetter:
    """What the operator kept of a letter for answering it (see the module docstring)."""

    network: Network
    business_id: str
    subject: str
    sender: str  # the letter's sender as its envelope named it (16 + orgnr, or an ISO 6523 party id)
    holder_party: str  # the holder as the envelope named them (12 digits, or an ISO 6523 party id)
    terms: LetterTerms
    conversation_id: str | None = None
    federation: str | None = None  # SDK: the letter's FEDERATIONID


@dataclass(frozen=True, slots=True)
class HolderAnswer:
    """What the holder wrote: text and files."""

    text: str
    attachments: tuple[InlineFile, ...] = ()

    def checked(self) -> HolderAnswer:
        """The answer when it is within bounds; ReplyRefused (422) naming what is not."""
        if not self.text.strip() and not self.attachments:
            raise ReplyRefused("empty", "an answer has text or attachments", 422)
        if len(self.text.encode()) > MAX_TEXT:
            raise ReplyRefused("too-large", f"the text is longer than {MAX_TEXT} bytes", 422)
        if len(self.attachments) > MAX_ATTACHMENTS:
            raise ReplyRefused("too-many", f"at most {MAX_ATTACHMENTS} attachments", 422)
        for item in self.attachments:
            if len(item.data) > MAX_ATTACHMENT_SIZE:
                raise ReplyRefused("too-large", f"{item.filename} is larger than {MAX_ATTACHMENT_SIZE} bytes", 422)
        return self


def check_reply(letter: AnsweredLetter, at: datetime) -> None:
    """ReplyRefused when the letter takes no answer now (not allowed, silent on replies, or past its deadline)."""
    reply = letter.terms.reply
    if reply is None:
        raise ReplyRefused("reply-not-allowed", "the letter does not ask for or accept answers (no Reply)")
    refusal = reply.refusal(at)
    if refusal is not None:
        raise ReplyRefused(*refusal)


def _subject(letter: AnsweredLetter) -> str:
    return f"Sv: {letter.subject}"[:255]


def build_reply(
    letter: AnsweredLetter,
    answer: HolderAnswer,
    *,
    reply_id: str,
    holder_name: str,
    keys: KeyPair,
    at: datetime,
    reply_schema: etree.XMLSchema | None = None,
    xhe_schema: etree.XMLSchema | None = None,
) -> bytes:
    """The answer in the letter's network's form, signed with the operator's ``keys`` (see the module docstring)."""
    check_reply(letter, at)
    answer = answer.checked()
    if letter.network is Network.MINA_MEDDELANDEN:
        reply = ReplyDelivery(
            sender=Sender(letter.holder_party, holder_name),
            recipient=letter.sender,
            message=ReplyMessage(
                id=reply_id,
                subject=_subject(letter),
                content_type="text/plain",
                body=answer.text.encode(),
                attachments=tuple(
                    Attachment(a.content_type, a.data, a.filename or f"bilaga-{i}")
                    for i, a in enumerate(answer.attachments, start=1)
                ),
            ),
            reply_time=at.astimezone(UTC).date(),
            reference=letter.terms.case_reference,
            correlation_id=letter.business_id,
        )
        return build_sealed_reply(reply, keys, received=at.astimezone(UTC).date(), schema=reply_schema)
    document = LetterDocument(
        id=reply_id,
        subject=_subject(letter),
        terms=LetterTerms(case_reference=letter.terms.case_reference),
        body=InlineFile("text/plain; charset=utf-8", answer.text.encode()),
        attachments=answer.attachments,
        in_reply_to=letter.business_id,
    )
    if letter.network is Network.SDK:
        xhe = Xhe(
            id=reply_id,
            created=at.astimezone(UTC).replace(microsecond=0),
            scope=sdk_scope(REPLY_DOCUMENT_ID, letter.federation or DEFAULT_FEDERATION),
            from_party=XheParty(letter.holder_party),
            to_party=XheParty(letter.sender),
            payload=XhePayload(LETTER_DOCUMENT_TYPE, "application/xml", serialize(build_letter_element(document))),
        )
        return build_xhe(xhe, keys=keys, schema=xhe_schema)
    element = sign_enveloped(build_letter_element(document), keys)
    header = Sbdh(
        sender=(Partner(letter.holder_party),),
        receiver=(Partner(letter.sender),),
        document=DocumentIdentification(
            LETTER_STANDARD, LETTER_VERSION, reply_id, LETTER_TYPE, at.astimezone(UTC).replace(microsecond=0)
        ),
        scopes=(Scope(ScopeType.CONVERSATION_ID, letter.conversation_id),) if letter.conversation_id else (),
    )
    return build_sbd(header, parse_document(serialize(element), what="signed letter"))


# --- the sender's side ---


@dataclass(frozen=True, slots=True)
class ReceivedReply:
    """A holder's answer as the letter's sender reads it, whichever form it came in, after it verified."""

    network: Network
    reply_id: str
    in_reply_to: str | None  # the letter's business id (CorrelationId or InReplyTo)
    case_reference: str | None
    holder: str
    sender: str
    subject: str
    text: str
    attachments: tuple[tuple[str, str, bytes], ...]  # (filename, content type, bytes)
    signer: x509.Certificate

    def to_json(self) -> dict[str, object]:
        """The REST/JSON view (attachments as base64)."""
        return {
            "network": self.network.value,
            "reply_id": self.reply_id,
            "in_reply_to": self.in_reply_to,
            "case_reference": self.case_reference,
            "holder": self.holder,
            "sender": self.sender,
            "subject": self.subject,
            "text": self.text,
            "attachments": [
                {"filename": f, "content_type": t, "data": base64.b64encode(d).decode()} for f, t, d in self.attachments
            ],
            "signed_by": self.signer.subject.rfc4514_string(),
        }


def is_reply(data: bytes) -> bool:
    """Whether a payload looks like a holder's answer in one of the three forms (nothing is verified)."""
    try:
        root = parse_document(data, what="payload")
    except EnvelopeError:
        return False
    if root.tag == SEALED_REPLY:
        return True
    if root.tag == f"{{{XHE_NS}}}XHE":
        return LETTER_DOCUMENT_TYPE.encode() in data and b"InReplyTo" in data
    return root.tag == f"{{{SBDH_NS}}}StandardBusinessDocument" and b"InReplyTo" in data


def _from_letter(
    network: Network, letter: LetterDocument, holder: str, sender: str, signer: x509.Certificate
) -> ReceivedReply:
    if letter.in_reply_to is None:
        raise EnvelopeError("the letter document answers nothing (no InReplyTo)")
    body = letter.body
    return ReceivedReply(
        network=network,
        reply_id=letter.id,
        in_reply_to=letter.in_reply_to,
        case_reference=letter.terms.case_reference,
        holder=holder,
        sender=sender,
        subject=letter.subject,
        text="" if body is None else body.data.decode("utf-8", "replace"),
        attachments=tuple((a.filename or "", a.content_type, a.data) for a in letter.attachments),
        signer=signer,
    )


def _read_one(data: bytes, operator: x509.Certificate) -> ReceivedReply:
    root = parse_document(data, what="reply")
    if root.tag == SEALED_REPLY:
        verified = verify_sealed_reply(root, operator=operator)
        reply = verified.reply
        return ReceivedReply(
            network=Network.MINA_MEDDELANDEN,
            reply_id=reply.message.id,
            in_reply_to=reply.correlation_id,
            case_reference=reply.reference,
            holder=reply.sender.id,
            sender=reply.recipient,
            subject=reply.message.subject,
            text=reply.message.body.decode("utf-8", "replace"),
            attachments=tuple((a.filename, a.content_type, a.body) for a in reply.message.attachments),
            signer=verified.seal_signature.signer,
        )
    if root.tag == f"{{{XHE_NS}}}XHE":
        envelope = verify_xhe(root, expected=operator)
        xhe = envelope.xhe
        letter = parse_letter(xhe.payload.content)
        return _from_letter(Network.SDK, letter, xhe.from_party.id, xhe.to_party.id, envelope.signature.signer)
    if root.tag == f"{{{SBDH_NS}}}StandardBusinessDocument":
        document = parse_sbd(root)
        if document.document.tag != LETTER:
            raise EnvelopeError("the SBD carries no letter document")
        signature = verify_enveloped(document.document, expected=operator)
        header = document.header
        return _from_letter(
            Network.FOREIGN,
            parse_letter(document.document),
            header.sender[0].identifier,
            header.receiver[0].identifier,
            signature.signer,
        )
    raise EnvelopeError(f"not a holder's answer: {root.tag}")


def read_reply(data: bytes, operators: Iterable[x509.Certificate]) -> ReceivedReply:
    """The holder's answer in ``data``, verified with one of the ``operators``' certificates; EnvelopeError when
    it verifies with none or is no answer."""
    last: EnvelopeError | None = None
    for certificate in operators:
        try:
            return _read_one(data, certificate)
        except EnvelopeError as exc:
            last = exc
    raise last or EnvelopeError("no operator's certificate to verify the answer with")


def answer_attachments(items: Sequence[tuple[str, str, bytes]]) -> tuple[InlineFile, ...]:
    """(filename, content type, bytes) as the letter document's inline files."""
    return tuple(InlineFile(kind, data, name) for name, kind, data in items)
