"""A letter's two-way terms (reply, receipt, delgivning, invoice and payment data, case event, content parts) in
the Mina meddelanden form (schema-valid) and as the letter document SDK and SBDH letters carry."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, date, datetime, timedelta

import pytest
from lxml import etree

from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.letter import (
    LETTER_DOCUMENT_TYPE,
    CaseEvent,
    ExternalPart,
    InlineFile,
    LetterDocument,
    LetterTerms,
    PartRole,
    ReplyTerms,
    build_letter,
    parse_letter,
    terms_of_secure_message,
    with_terms,
)
from accesspoint.envelopes.minameddelanden import (
    MatterStatus,
    ReceiptRequest,
    ReplyOption,
    SecureDelivery,
    SecureMessage,
    Sender,
    SupportInfo,
    build_signed_delivery,
    verify_signed_delivery,
)
from accesspoint.envelopes.payment import INVOICE_TAG, PaymentDataError
from accesspoint.envelopes.schemas import load_minameddelanden_schema, load_xhe_schema
from accesspoint.envelopes.xhe import Xhe, XheParty, XhePayload, build_xhe, parse_xhe, sdk_scope
from accesspoint.testing import pki
from tests.conftest import interop_path
from tests.test_envelopes_payment import BANKGIRO, IBAN, _wrong_digit

SENDER_KEYS = pki.issue(pki.make_ca("Senders"), "Skatteverket")
AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BIG = b"%PDF-1.7 " + b"x" * 1000
PART = ExternalPart(
    "body@agency.example", hashlib.sha256(BIG).hexdigest(), len(BIG), "application/pdf", PartRole.BODY, "beslut.pdf"
)
TERMS = LetterTerms(
    reply=ReplyTerms(ReplyOption.ACCEPTED, AT + timedelta(days=30)),
    receipt=ReceiptRequest.SIGNED,
    delgivning_deadline=AT + timedelta(days=14),
    invoice=True,
    payment=BANKGIRO,
    case_reference="Dnr 2026/4711",
    case_event=CaseEvent("2026/4711", "beslut fattat", AT, "https://example.se/arende/4711", MatterStatus.CLOSED),
    metadata=(("category", "beslut"),),
    parts=(PART,),
)


def _message(terms: LetterTerms, body: bytes = b"") -> SecureMessage:
    return with_terms(SecureMessage("letter-1", "Beslut", SupportInfo("Ring oss"), "application/pdf", body), terms)


def _delivery(message: SecureMessage) -> SecureDelivery:
    return SecureDelivery(Sender("162021005448", "Skatteverket"), "197001011234", (message,), reference="Dnr 2026/4711")


def test_mina_meddelanden_form_is_schema_valid_and_reads_back_the_same_terms() -> None:
    """Reply, ReceiptRequest and OfficialMatter as the contract's elements, the rest as Metadata tags: the signed
    delivery validates against the v3 contracts and the terms read back unchanged."""
    schema = load_minameddelanden_schema(interop_path("minameddelanden/contracts"))
    signed = build_signed_delivery(_delivery(_message(TERMS)), SENDER_KEYS, schema=schema)
    message = verify_signed_delivery(signed, schema=schema).delivery.messages[0]
    assert message.reply is ReplyOption.ACCEPTED and message.official_matter is not None
    assert terms_of_secure_message(message, reference="Dnr 2026/4711") == TERMS


def test_event_only_message_is_schema_valid_without_content() -> None:
    """A case event travels as an OfficialMatter with an empty body; without one an empty letter is refused."""
    schema = load_minameddelanden_schema(interop_path("minameddelanden/contracts"))
    event = LetterTerms(case_event=CaseEvent("2026/4711", "komplettering begärd", AT, None))
    signed = build_signed_delivery(_delivery(_message(event)), SENDER_KEYS, schema=schema)
    message = verify_signed_delivery(signed, schema=schema).delivery.messages[0]
    assert terms_of_secure_message(message).case_event == event.case_event
    with pytest.raises(EnvelopeError, match="without content must be a case event"):
        terms_of_secure_message(_message(LetterTerms()))


def test_letter_document_round_trips_and_travels_in_an_xhe() -> None:
    """The letter document reads back unchanged and passes DIGG's XHE rules and the XHE schema as a payload."""
    letter = LetterDocument(
        "letter-2",
        "Faktura",
        dataclasses.replace(TERMS, payment=IBAN),
        InlineFile("text/plain", b"Hej!"),
        (InlineFile("application/pdf", b"%PDF-1.7 bilaga", "bilaga.pdf"),),
    )
    data = build_letter(letter)
    assert parse_letter(data) == letter
    xhe = Xhe(
        "0b0d9a3e-3f8a-4d3c-9a6e-1f2e3d4c5b6a",
        AT,
        sdk_scope(LETTER_DOCUMENT_TYPE, "urn:fdc:digg.se:edelivery:federation:test"),
        XheParty("0007:2021005448"),
        XheParty("0007:5566778899"),
        XhePayload(LETTER_DOCUMENT_TYPE, "application/xml", data),
    )
    schema = load_xhe_schema(interop_path("sdk/xhe/xsd/XHE-1.0.xsd"))
    assert parse_letter(parse_xhe(build_xhe(xhe, schema=schema), schema=schema).payload.content) == letter


def test_reply_terms_refuse_not_allowed_and_late_answers() -> None:
    """NOT_ALLOWED refuses every answer; a deadline refuses those after it, naming it."""
    assert ReplyTerms(ReplyOption.NOT_ALLOWED).refusal(AT) == (
        "reply-not-allowed",
        "the sender does not accept answers to this letter (Reply NOT_ALLOWED)",
    )
    terms = ReplyTerms(ReplyOption.REQUESTED, AT)
    assert terms.refusal(AT) is None
    code, reason = terms.refusal(AT + timedelta(seconds=1)) or ("", "")
    assert code == "reply-too-late" and AT.isoformat() in reason


@pytest.mark.parametrize(
    ("terms", "reason"),
    [
        (dataclasses.replace(TERMS, invoice=False), "not marked as an invoice"),
        (dataclasses.replace(TERMS, reply=ReplyTerms(ReplyOption.NOT_ALLOWED, AT)), "may not be answered"),
        (dataclasses.replace(TERMS, parts=(PART, PART)), "listed twice"),
        (dataclasses.replace(TERMS, parts=(PART, dataclasses.replace(PART, content_id="b@x"))), "one body"),
    ],
)
def test_contradictory_terms_are_refused_in_both_forms(terms: LetterTerms, reason: str) -> None:
    """The same rule refuses the Mina meddelanden form and the letter document."""
    with pytest.raises(EnvelopeError, match=reason):
        build_letter(LetterDocument("x", "y", terms, InlineFile("text/plain", b"z")))
    message = _message(terms, b"z")
    if not terms.invoice:  # the Metadata form always writes the tag with the terms: the sender left it out
        message = dataclasses.replace(message, metadata=tuple(p for p in message.metadata if p[0] != INVOICE_TAG))
    with pytest.raises(EnvelopeError, match=reason):
        terms_of_secure_message(message)


def test_payment_data_with_a_wrong_ocr_check_digit_is_refused_when_read() -> None:
    """A letter whose OCR number was changed after it was built is refused naming BT-83, in both forms."""
    tampered = tuple((t, _wrong_digit(v) if t == "en16931:BT-83" else v) for t, v in _message(TERMS).metadata)
    with pytest.raises(PaymentDataError) as refused:
        terms_of_secure_message(dataclasses.replace(_message(TERMS), metadata=tampered))
    assert refused.value.term == "BT-83"
    document = build_letter(LetterDocument("x", "y", TERMS, InlineFile("text/plain", b"z")))
    tree = etree.fromstring(document)
    found = tree.find(".//{*}PaymentID")
    assert found is not None
    found.text = _wrong_digit(BANKGIRO.reference)
    with pytest.raises(PaymentDataError, match="check digit"):
        parse_letter(etree.tostring(tree))


def test_bad_parts_and_deadlines_are_named() -> None:
    """A part without a digest, a deadline without a zone and a reply deadline without Reply are refused."""
    with pytest.raises(EnvelopeError, match="sha256"):
        ExternalPart.from_json({**PART.to_json(), "sha256": "XYZ"})
    naive = dataclasses.replace(TERMS, delgivning_deadline=datetime(2027, 1, 1))  # naive: the point
    with pytest.raises(EnvelopeError, match="time zone"):
        _message(naive)
    message = _message(dataclasses.replace(TERMS, reply=None), b"z")
    stray = dataclasses.replace(message, metadata=(*message.metadata, ("accesspoint:reply-deadline", AT.isoformat())))
    with pytest.raises(EnvelopeError, match="says nothing of replies"):
        terms_of_secure_message(stray)
    assert date(2026, 12, 7) == AT.date()
