"""What a letter asks of the mailbox beyond its content, in each network's form, sans-I/O.

``LetterTerms`` are the two-way terms of one letter: whether and until when it may be answered, whether a
receipt is wanted when it is opened, whether it is served (*e-delgivning*) and by when it must be acknowledged,
whether it is an invoice and its payment data, the sender's case reference, a case event (*Mina ärenden*), the
sender's other metadata, and content parts that travel as AS4 attachments bound by their digest. Two forms carry
them:

**Mina meddelanden** (``SecureMessage`` header, signed by the sender inside the SignedDelivery): the contract's
own elements where it has them — ``Reply`` (REQUESTED / ACCEPTED / NOT_ALLOWED), ``ReceiptRequest``,
``OfficialMatter`` (the case event; its time and link as elements of this module's namespace in the slot the
contract leaves open), ``Metadata`` and the delivery's ``Reference`` (the case reference) — and Metadata tags for
what it has not:

======================== ======================================================================================
``accesspoint:reply-deadline``  when answers stop being accepted (ISO 8601 with a zone)
``accesspoint:delgivning``      the letter is served: the holder must acknowledge it by this time (ISO 8601)
``accesspoint:invoice``         ``true``: the letter is an invoice; its payment data as ``en16931:BT-…`` tags
``accesspoint:part``            a content part sent as an AS4 attachment: JSON ``{cid, sha256, size, type,
                                filename, role}``; the message's Body is then empty (``role`` body) or the part is
                                an attachment
======================== ======================================================================================

**The letter document** (``{urn:accesspoint:letter:1}Letter``) for the networks without such a header: SDK
carries it as the XHE payload, Peppol and the Nordic partners as the SBD's business document. The same document,
with ``InReplyTo``, is a holder's answer in those networks (``envelopes/reply.py``).

``check_terms`` holds the rules every form obeys (payment data only on an invoice, a served letter has a deadline,
a letter that may not be answered has no reply deadline, a case event names its case and status); a letter that
breaks one is refused with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

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
    parse_datetime,
    parse_document,
    serialize,
    sub,
    text,
    xml_datetime,
)
from accesspoint.envelopes.minameddelanden import (
    MatterStatus,
    OfficialMatter,
    ReceiptRequest,
    ReplyOption,
    SecureMessage,
)
from accesspoint.envelopes.payment import (
    INVOICE_TAG,
    PAYMENT_DATA,
    TAG_PREFIX,
    PaymentData,
    build_ubl,
    from_metadata,
    is_invoice,
    parse_ubl,
    to_metadata,
)

LETTER_NS = "urn:accesspoint:letter:1"
_L = f"{{{LETTER_NS}}}"
LETTER = f"{_L}Letter"
# The XHE payload's DocumentTypeCode and the SBDH document identification of the letter document.
LETTER_DOCUMENT_TYPE = f"Q{{{LETTER_NS}}}Letter"
LETTER_STANDARD, LETTER_TYPE, LETTER_VERSION = LETTER_NS, "Letter", "1"

REPLY_DEADLINE_TAG = "accesspoint:reply-deadline"
DELGIVNING_TAG = "accesspoint:delgivning"
PART_TAG = "accesspoint:part"
OUR_TAGS = frozenset({REPLY_DEADLINE_TAG, DELGIVNING_TAG, PART_TAG, INVOICE_TAG})
# The case event's time and link, in the slot OfficialMatterExtension leaves for other namespaces.
EVENT_TIME = f"{_L}EventTime"
EVENT_LINK = f"{_L}Link"


class PartRole(StrEnum):
    """What a content part is to the letter."""

    BODY = "body"
    ATTACHMENT = "attachment"


@dataclass(frozen=True, slots=True)
class ExternalPart:
    """Content sent as an AS4 attachment beside the envelope, bound to it by SHA-256 and size."""

    content_id: str
    sha256: str  # lower-case hex
    size: int
    content_type: str
    role: PartRole = PartRole.ATTACHMENT
    filename: str | None = None

    def to_json(self) -> dict[str, str | int | None]:
        """The ``accesspoint:part`` value and the REST form."""
        return {
            "cid": self.content_id,
            "sha256": self.sha256,
            "size": self.size,
            "type": self.content_type,
            "role": self.role.value,
            "filename": self.filename,
        }

    @classmethod
    def from_json(cls, item: object) -> ExternalPart:
        """Read one back; EnvelopeError naming what is wrong."""
        if not isinstance(item, dict):
            raise EnvelopeError(Finding("PART", "a part is an object {cid, sha256, size, type, role, filename}"))
        cid, digest, size, kind = item.get("cid"), item.get("sha256"), item.get("size"), item.get("type")
        role, filename = item.get("role", PartRole.ATTACHMENT.value), item.get("filename")
        if not isinstance(cid, str) or not cid or len(cid) > 255:
            raise EnvelopeError(Finding("PART", "a part needs its content id (cid)"))
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise EnvelopeError(Finding("PART", f"part {cid[:64]}: sha256 must be 64 lower-case hex digits"))
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise EnvelopeError(Finding("PART", f"part {cid[:64]}: size must be a whole number of bytes"))
        if not isinstance(kind, str) or "/" not in kind or len(kind) > 255:
            raise EnvelopeError(Finding("PART", f"part {cid[:64]}: type must be a MIME type"))
        if role not in set(PartRole):
            raise EnvelopeError(Finding("PART", f"part {cid[:64]}: role is body or attachment"))
        if filename is not None and (not isinstance(filename, str) or len(filename) > 255):
            raise EnvelopeError(Finding("PART", f"part {cid[:64]}: filename must be a string"))
        return cls(cid, digest, size, kind, PartRole(str(role)), filename)


@dataclass(frozen=True, slots=True)
class ReplyTerms:
    """Whether the letter may be answered, and until when."""

    option: ReplyOption
    deadline: datetime | None = None

    def refusal(self, at: datetime) -> tuple[str, str] | None:
        """(code, reason) when an answer made ``at`` is not accepted; None when it is."""
        if self.option is ReplyOption.NOT_ALLOWED:
            return "reply-not-allowed", "the sender does not accept answers to this letter (Reply NOT_ALLOWED)"
        if self.deadline is not None and at > self.deadline:
            return "reply-too-late", f"answers to this letter were accepted until {self.deadline.isoformat()}"
        return None


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """An event in one of the sender's cases: which case, what happened (status), when, and where to read more."""

    case_id: str
    status: str
    time: datetime
    link: str | None = None
    matter_status: MatterStatus | None = None
    event_id: str | None = None
    subject: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """The REST form."""
        return {
            "case_id": self.case_id,
            "status": self.status,
            "time": self.time.isoformat(),
            "link": self.link,
            "matter_status": None if self.matter_status is None else self.matter_status.value,
            "event_id": self.event_id,
            "subject": self.subject,
        }


@dataclass(frozen=True, slots=True)
class LetterTerms:
    """The two-way terms of one letter (see the module docstring)."""

    reply: ReplyTerms | None = None
    receipt: ReceiptRequest | None = None
    delgivning_deadline: datetime | None = None
    invoice: bool = False
    payment: PaymentData | None = None
    case_reference: str | None = None
    case_event: CaseEvent | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # the sender's own Tag/Value pairs
    parts: tuple[ExternalPart, ...] = ()

    @property
    def served(self) -> bool:
        """Whether the letter is served (*e-delgivning*): the holder must acknowledge it."""
        return self.delgivning_deadline is not None

    @property
    def body_part(self) -> ExternalPart | None:
        """The part that is the letter's body, when it travels as an attachment."""
        return next((p for p in self.parts if p.role is PartRole.BODY), None)

    def wants_receipt(self) -> bool:
        """Whether a receipt is owed when the holder first opens the letter."""
        return self.receipt in (ReceiptRequest.SIMPLE, ReceiptRequest.SIGNED)


def check_terms(terms: LetterTerms, *, has_content: bool) -> None:
    """The rules every form obeys; EnvelopeError naming the rule (``TERMS``) and the reason."""

    def fail(reason: str) -> EnvelopeError:
        return EnvelopeError(Finding("TERMS", reason))

    if terms.payment is not None and not terms.invoice:
        raise fail("payment data on a letter that is not marked as an invoice")
    if terms.reply is not None and terms.reply.option is ReplyOption.NOT_ALLOWED and terms.reply.deadline:
        raise fail("a reply deadline on a letter that may not be answered")
    content = has_content or bool(terms.parts)
    if terms.case_event is not None:
        if not terms.case_event.case_id.strip() or not terms.case_event.status.strip():
            raise fail("a case event names its case and its status")
        if len(terms.case_event.case_id) > 255 or len(terms.case_event.status) > 2000:
            raise fail("a case id is at most 255 characters, a status at most 2000")
    elif not content:
        raise fail("a letter without content must be a case event")
    if not content and (terms.served or terms.invoice or terms.reply is not None):
        raise fail("a served letter, an invoice or a letter to answer has content")
    seen: set[str] = set()
    for part in terms.parts:
        if part.content_id in seen:
            raise fail(f"the part {part.content_id[:64]} is listed twice")
        seen.add(part.content_id)
    if sum(p.role is PartRole.BODY for p in terms.parts) > 1:
        raise fail("a letter has one body")


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise EnvelopeError(Finding("TERMS", f"{what} must have a time zone"))
    return value


# --- Mina meddelanden ---


def with_terms(message: SecureMessage, terms: LetterTerms) -> SecureMessage:
    """``message`` carrying ``terms`` (its ``metadata``, ``reply``, ``receipt_request`` and ``official_matter``
    replaced); the case reference goes in the delivery header's ``Reference``."""
    metadata = list(terms.metadata)
    if terms.reply is not None and terms.reply.deadline is not None:
        metadata.append((REPLY_DEADLINE_TAG, _aware(terms.reply.deadline, "the reply deadline").isoformat()))
    if terms.delgivning_deadline is not None:
        metadata.append((DELGIVNING_TAG, _aware(terms.delgivning_deadline, "the delgivning deadline").isoformat()))
    if terms.payment is not None:
        metadata.extend(to_metadata(terms.payment))
    elif terms.invoice:
        metadata.append((INVOICE_TAG, "true"))
    metadata.extend((PART_TAG, json.dumps(p.to_json(), sort_keys=True, separators=(",", ":"))) for p in terms.parts)
    matter = None
    if terms.case_event is not None:
        event = terms.case_event
        extensions = [(EVENT_TIME, xml_datetime(_aware(event.time, "the event time")))]
        if event.link is not None:
            extensions.append((EVENT_LINK, event.link))
        matter = OfficialMatter(
            timestamp=event.time.date(),
            official_matter_id=event.case_id,
            event_id=event.event_id,
            matter_subject=event.subject,
            event_type=event.status,
            matter_status=event.matter_status,
            extensions=tuple(extensions),
        )
    return replace(
        message,
        metadata=tuple(metadata),
        reply=None if terms.reply is None else terms.reply.option,
        receipt_request=terms.receipt,
        official_matter=matter,
    )


def _moment(value: str, what: str) -> datetime:
    try:
        moment = parse_datetime(value, what)
    except EnvelopeError:
        raise EnvelopeError(Finding("TERMS", f"{what} {value[:40]!r} is not an ISO 8601 time")) from None
    return _aware(moment, what)


def _case_event(matter: OfficialMatter) -> CaseEvent:
    extra = dict(matter.extensions)
    time_text = extra.get(EVENT_TIME)
    if time_text:
        time = _moment(time_text, "the event time")
    else:  # the contract's Timestamp is a day: its start in UTC
        time = datetime.combine(matter.timestamp, datetime.min.time(), tzinfo=UTC)
    return CaseEvent(
        case_id=matter.official_matter_id or "",
        status=matter.event_type or "",
        time=time,
        link=extra.get(EVENT_LINK),
        matter_status=matter.matter_status,
        event_id=matter.event_id,
        subject=matter.matter_subject,
    )


def terms_of_secure_message(message: SecureMessage, *, reference: str | None = None) -> LetterTerms:
    """The terms a SecureMessage carries (``reference``: its delivery's Reference), checked."""
    pairs = message.metadata
    ours = {tag: value for tag, value in pairs if tag in (REPLY_DEADLINE_TAG, DELGIVNING_TAG)}
    deadline = ours.get(REPLY_DEADLINE_TAG)
    parts = []
    for tag, value in pairs:
        if tag == PART_TAG:
            try:
                parts.append(ExternalPart.from_json(json.loads(value)))
            except ValueError as exc:
                if isinstance(exc, EnvelopeError):
                    raise
                raise EnvelopeError(Finding("PART", "an accesspoint:part value is not JSON")) from None
    reply = None
    if message.reply is not None:
        reply = ReplyTerms(message.reply, None if deadline is None else _moment(deadline, "the reply deadline"))
    elif deadline is not None:
        raise EnvelopeError(Finding("TERMS", "a reply deadline on a letter that says nothing of replies"))
    served = ours.get(DELGIVNING_TAG)
    terms = LetterTerms(
        reply=reply,
        receipt=message.receipt_request,
        delgivning_deadline=None if served is None else _moment(served, "the delgivning deadline"),
        invoice=is_invoice(pairs),
        payment=from_metadata(pairs),
        case_reference=reference,
        case_event=None if message.official_matter is None else _case_event(message.official_matter),
        metadata=tuple((t, v) for t, v in pairs if t not in OUR_TAGS and not t.startswith(TAG_PREFIX)),
        parts=tuple(parts),
    )
    check_terms(terms, has_content=bool(message.body) or bool(message.attachments))
    return terms


# --- the letter document (SDK, SBDH) ---


@dataclass(frozen=True, slots=True)
class InlineFile:
    """Content carried inside the letter document (small letters)."""

    content_type: str
    data: bytes
    filename: str | None = None


@dataclass(frozen=True, slots=True)
class LetterDocument:
    """``{urn:accesspoint:letter:1}Letter``: a letter (or, with ``in_reply_to``, a holder's answer)."""

    id: str
    subject: str
    terms: LetterTerms = field(default_factory=LetterTerms)
    body: InlineFile | None = None
    attachments: tuple[InlineFile, ...] = ()
    in_reply_to: str | None = None  # the business id of the letter answered

    @property
    def has_content(self) -> bool:
        """Whether anything besides the terms came (inline or as parts)."""
        return self.body is not None or bool(self.attachments) or any(self.terms.parts)


def _file(parent: etree._Element, tag: str, item: InlineFile) -> None:
    attributes = {"ContentType": item.content_type}
    if item.filename is not None:
        attributes["Filename"] = item.filename
    sub(parent, tag, b64encode(item.data), **attributes)


def build_letter_element(letter: LetterDocument) -> etree._Element:
    """The letter document's element (checked against ``check_terms`` first)."""
    terms = letter.terms
    check_terms(terms, has_content=letter.body is not None or bool(letter.attachments))
    root = etree.Element(LETTER, nsmap={"l": LETTER_NS})
    sub(root, f"{_L}Id", letter.id)
    sub(root, f"{_L}Subject", letter.subject)
    if letter.in_reply_to is not None:
        sub(root, f"{_L}InReplyTo", letter.in_reply_to)
    if terms.case_reference is not None:
        sub(root, f"{_L}CaseReference", terms.case_reference)
    if terms.reply is not None:
        attributes = {} if terms.reply.deadline is None else {"Deadline": xml_datetime(terms.reply.deadline)}
        sub(root, f"{_L}Reply", terms.reply.option, **attributes)
    if terms.receipt is not None:
        sub(root, f"{_L}ReceiptRequest", terms.receipt)
    if terms.delgivning_deadline is not None:
        sub(root, f"{_L}Delgivning", Deadline=xml_datetime(_aware(terms.delgivning_deadline, "the deadline")))
    if terms.invoice:
        invoice = sub(root, f"{_L}Invoice")
        if terms.payment is not None:
            build_ubl(terms.payment, invoice)
    if terms.case_event is not None:
        event = terms.case_event
        element = sub(root, f"{_L}CaseEvent")
        sub(element, f"{_L}CaseId", event.case_id)
        sub(element, f"{_L}Status", event.status)
        sub(element, f"{_L}Time", xml_datetime(_aware(event.time, "the event time")))
        for name, value in (("Link", event.link), ("MatterStatus", event.matter_status),
                            ("EventId", event.event_id), ("Subject", event.subject)):  # fmt: skip
            if value is not None:
                sub(element, f"{_L}{name}", value)
    for tag, value in terms.metadata:
        sub(root, f"{_L}Metadata", value, Tag=tag)
    if letter.body is not None:
        _file(root, f"{_L}Body", letter.body)
    for attachment in letter.attachments:
        _file(root, f"{_L}Attachment", attachment)
    for part in terms.parts:
        attributes = {"ContentId": part.content_id, "SHA256": part.sha256, "Size": str(part.size),
                      "ContentType": part.content_type, "Role": part.role.value}  # fmt: skip
        if part.filename is not None:
            attributes["Filename"] = part.filename
        sub(root, f"{_L}Part", **attributes)
    return root


def build_letter(letter: LetterDocument) -> bytes:
    """The letter document as bytes."""
    return serialize(build_letter_element(letter))


def _read_file(element: etree._Element, what: str) -> InlineFile:
    content_type = element.get("ContentType")
    if not content_type:
        raise EnvelopeError(f"{what} has no ContentType")
    return InlineFile(content_type, b64decode(text(element), what), element.get("Filename"))


def _attribute_moment(element: etree._Element, what: str) -> datetime | None:
    value = element.get("Deadline")
    return None if value is None else _moment(value, what)


def parse_letter(data: bytes | etree._Element) -> LetterDocument:
    """Read a letter document, its terms checked; EnvelopeError (or PaymentDataError) with the reason."""
    root = parse_document(data, what="Letter")
    expect_root(root, LETTER, "a letter document")
    reply = None
    reply_element = root.find(f"{_L}Reply")
    if reply_element is not None:
        option = text(reply_element).strip()
        if option not in set(ReplyOption):
            raise EnvelopeError(f"Reply {option[:40]!r} is not REQUESTED, ACCEPTED or NOT_ALLOWED")
        reply = ReplyTerms(ReplyOption(option), _attribute_moment(reply_element, "the reply deadline"))
    receipt_text = optional_text(root, f"{_L}ReceiptRequest")
    if receipt_text is not None and receipt_text not in set(ReceiptRequest):
        raise EnvelopeError(f"ReceiptRequest {receipt_text[:40]!r} is not NOT, SIMPLE or SIGNED")
    served = root.find(f"{_L}Delgivning")
    deadline = None
    if served is not None:
        deadline = _attribute_moment(served, "the delgivning deadline")
        if deadline is None:
            raise EnvelopeError(Finding("TERMS", "a served letter has a Deadline"))
    invoice = root.find(f"{_L}Invoice")
    payment_element = None if invoice is None else invoice.find(PAYMENT_DATA)
    event = None
    event_element = root.find(f"{_L}CaseEvent")
    if event_element is not None:
        status = optional_text(event_element, f"{_L}MatterStatus")
        if status is not None and status not in set(MatterStatus):
            raise EnvelopeError(f"MatterStatus {status[:40]!r} is not senderinitiative, recipientinitiative or closed")
        event = CaseEvent(
            case_id=need_text(event_element, f"{_L}CaseId", "CaseEvent/CaseId"),
            status=need_text(event_element, f"{_L}Status", "CaseEvent/Status"),
            time=_moment(need_text(event_element, f"{_L}Time", "CaseEvent/Time"), "the event time"),
            link=optional_text(event_element, f"{_L}Link"),
            matter_status=None if status is None else MatterStatus(status),
            event_id=optional_text(event_element, f"{_L}EventId"),
            subject=optional_text(event_element, f"{_L}Subject"),
        )
    parts = tuple(_part(p) for p in root.iterfind(f"{_L}Part"))
    terms = LetterTerms(
        reply=reply,
        receipt=None if receipt_text is None else ReceiptRequest(receipt_text),
        delgivning_deadline=deadline,
        invoice=invoice is not None,
        payment=None if payment_element is None else parse_ubl(payment_element),
        case_reference=optional_text(root, f"{_L}CaseReference"),
        case_event=event,
        metadata=tuple((m.get("Tag") or "", text(m)) for m in root.iterfind(f"{_L}Metadata")),
        parts=parts,
    )
    body_element = root.find(f"{_L}Body")
    letter = LetterDocument(
        id=need_text(root, f"{_L}Id", "Letter/Id"),
        subject=text(need(root, f"{_L}Subject", "Letter/Subject")),
        terms=terms,
        body=None if body_element is None else _read_file(body_element, "Letter/Body"),
        attachments=tuple(_read_file(a, "Letter/Attachment") for a in root.iterfind(f"{_L}Attachment")),
        in_reply_to=optional_text(root, f"{_L}InReplyTo"),
    )
    check_terms(terms, has_content=letter.body is not None or bool(letter.attachments))
    return letter


def _part(element: etree._Element) -> ExternalPart:
    size = element.get("Size") or ""
    names = (("cid", "ContentId"), ("sha256", "SHA256"), ("type", "ContentType"), ("filename", "Filename"))
    item = {name: element.get(attribute) for name, attribute in names}
    return ExternalPart.from_json(
        {**item, "size": int(size) if size.isdigit() else None, "role": element.get("Role", PartRole.ATTACHMENT)}
    )


def with_parts(terms: LetterTerms, parts: Iterable[ExternalPart]) -> LetterTerms:
    """The same terms, with ``parts`` as the content sent beside the envelope."""
    return replace(terms, parts=tuple(parts))


# --- the JSON form (the operator's records and REST views) ---


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def terms_to_json(terms: LetterTerms) -> dict[str, Any]:
    """The terms as JSON values."""
    return {
        "reply": None
        if terms.reply is None
        else {"option": terms.reply.option.value, "deadline": _iso(terms.reply.deadline)},
        "receipt": None if terms.receipt is None else terms.receipt.value,
        "delgivning_deadline": _iso(terms.delgivning_deadline),
        "invoice": terms.invoice,
        "payment": None if terms.payment is None else terms.payment.to_json(),
        "case_reference": terms.case_reference,
        "case_event": None if terms.case_event is None else terms.case_event.to_json(),
        "metadata": [[tag, value] for tag, value in terms.metadata],
        "parts": [part.to_json() for part in terms.parts],
    }


def terms_from_json(item: Mapping[str, Any]) -> LetterTerms:
    """Read the JSON form back (as written by ``terms_to_json``)."""
    reply, event, payment = item.get("reply"), item.get("case_event"), item.get("payment")

    def moment(value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(str(value))

    return LetterTerms(
        reply=None if reply is None else ReplyTerms(ReplyOption(reply["option"]), moment(reply.get("deadline"))),
        receipt=None if item.get("receipt") is None else ReceiptRequest(item["receipt"]),
        delgivning_deadline=moment(item.get("delgivning_deadline")),
        invoice=bool(item.get("invoice")),
        payment=None if payment is None else PaymentData.from_json(payment),
        case_reference=item.get("case_reference"),
        case_event=None
        if event is None
        else CaseEvent(
            case_id=event["case_id"],
            status=event["status"],
            time=datetime.fromisoformat(event["time"]),
            link=event.get("link"),
            matter_status=None if event.get("matter_status") is None else MatterStatus(event["matter_status"]),
            event_id=event.get("event_id"),
            subject=event.get("subject"),
        ),
        metadata=tuple((str(t), str(v)) for t, v in item.get("metadata", ())),
        parts=tuple(ExternalPart.from_json(p) for p in item.get("parts", ())),
    )
