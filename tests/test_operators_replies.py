"""Letters with two-way terms checked at the operator in each network's form, and a holder's answer built in the
letter's form and read back by its sender (sans-I/O)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from accesspoint.envelopes.letter import (
    LETTER_DOCUMENT_TYPE,
    LETTER_NS,
    CaseEvent,
    InlineFile,
    LetterDocument,
    LetterTerms,
    ReplyTerms,
    build_letter,
    with_terms,
)
from accesspoint.envelopes.minameddelanden import ReceiptRequest, ReplyOption
from accesspoint.envelopes.sbdh import DocumentIdentification, Partner, Sbdh, build_sbd
from accesspoint.envelopes.xhe import Xhe, XheParty, XhePayload, build_xhe, sdk_scope
from operators.deliveries import CheckedDelivery, Network, Refusal, check_delivery
from operators.replies import (
    AnsweredLetter,
    HolderAnswer,
    ReplyRefused,
    build_reply,
    check_reply,
    is_reply,
    read_reply,
)
from tests.test_envelopes_payment import BANKGIRO, _wrong_digit
from tests.test_operators_support import (
    AUTHORITY,
    FEDERATION,
    OPERATOR,
    PERSON,
    SDK_ORG,
    STRANGER,
    TRUST,
    sealed,
    secure_delivery,
)

AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
TERMS = LetterTerms(
    reply=ReplyTerms(ReplyOption.REQUESTED, AT + timedelta(days=10)),
    receipt=ReceiptRequest.SIMPLE,
    invoice=True,
    payment=BANKGIRO,
    case_reference="Dnr 2026/4711",
)


def _mm(terms: LetterTerms, *, ocr: str | None = None) -> bytes:
    """A sealed delivery with ``terms``; ``ocr`` written over BT-83 after the terms were checked (a sender's bug)."""
    delivery = secure_delivery()
    message = with_terms(delivery.messages[0], terms)
    if ocr is not None:
        message = dataclasses.replace(
            message, metadata=tuple((t, ocr if t == "en16931:BT-83" else v) for t, v in message.metadata)
        )
    return sealed(dataclasses.replace(delivery, messages=(message,), reference=terms.case_reference))


def _letter(terms: LetterTerms = TERMS, body: bytes = b"Hej!") -> bytes:
    return build_letter(LetterDocument("letter-7", "Beslut", terms, InlineFile("text/plain", body)))


def _xhe(document: bytes) -> bytes:
    envelope = Xhe(
        str(uuid.uuid4()),
        AT,
        sdk_scope(f"busdox-docid-qns::{LETTER_NS}::Letter##1", FEDERATION),
        XheParty("0007:2021005448"),
        XheParty(SDK_ORG),
        XhePayload(LETTER_DOCUMENT_TYPE, "application/xml", document),
    )
    return build_xhe(envelope, keys=AUTHORITY)


def _sbd(document: bytes) -> bytes:
    header = Sbdh(
        sender=(Partner("0192:987654321"),),
        receiver=(Partner("0007:5566778899"),),
        document=DocumentIdentification(LETTER_NS, "1", "sbd-letter-1", "Letter", AT),
    )
    return build_sbd(header, document)


@pytest.mark.parametrize("form", ["minameddelanden", "sdk", "sbdh"])
def test_each_form_carries_the_terms_into_the_checked_delivery(form: str) -> None:
    """The operator reads the same reply, receipt, invoice and payment terms whichever network wrote them."""
    payload = {"minameddelanden": _mm(TERMS), "sdk": _xhe(_letter()), "sbdh": _sbd(_letter())}[form]
    delivery = check_delivery(payload, TRUST, at=AT)
    assert isinstance(delivery, CheckedDelivery)
    (item,) = delivery.items
    assert item.terms == TERMS
    if form != "minameddelanden":
        assert item.subject == "Beslut" and item.body == b"Hej!" and item.content_type == "text/plain"


@pytest.mark.parametrize("form", ["minameddelanden", "sdk", "sbdh"])
def test_wrong_ocr_check_digit_refuses_the_delivery_naming_bt_83(form: str) -> None:
    """Payment data with a wrong OCR check digit is a business-rule refusal; nothing is delivered."""
    if form == "minameddelanden":  # the builders refuse such terms: the OCR number is changed after them
        payload = _mm(TERMS, ocr=_wrong_digit(BANKGIRO.reference))
    else:
        document = _letter().replace(BANKGIRO.reference.encode(), _wrong_digit(BANKGIRO.reference).encode())
        payload = _xhe(document) if form == "sdk" else _sbd(document)
    with pytest.raises(Refusal) as refused:
        check_delivery(payload, TRUST, at=AT)
    assert refused.value.code == "payment-data" and refused.value.text.startswith("BT-83")


def test_event_only_letter_is_marked_for_the_timeline() -> None:
    """A case event without content is an event-only item; a letter with content is not."""
    event = LetterTerms(case_event=CaseEvent("2026/4711", "mottaget", AT))
    delivery = check_delivery(_mm(event), TRUST, at=AT)
    assert isinstance(delivery, CheckedDelivery) and not delivery.items[0].event_only
    document = build_letter(LetterDocument("event-1", "Ärende", event))
    delivery = check_delivery(_xhe(document), TRUST, at=AT)
    assert isinstance(delivery, CheckedDelivery) and delivery.items[0].event_only


def _answered(network: Network, **changes: object) -> AnsweredLetter:
    sender = {Network.MINA_MEDDELANDEN: "162021005448", Network.SDK: "0007:2021005448"}.get(network, "0192:98765")
    holder = PERSON if network is Network.MINA_MEDDELANDEN else SDK_ORG
    letter = AnsweredLetter(network, "letter-7", "Beslut", sender, holder, TERMS, "conv-1", FEDERATION)
    return dataclasses.replace(letter, **changes)  # type: ignore[arg-type]


ANSWER = HolderAnswer("Jag överklagar.", (InlineFile("application/pdf", b"%PDF-1.7 x", "overklagan.pdf"),))


@pytest.mark.parametrize("network", list(Network))
def test_answer_in_the_letters_form_is_read_back_correlated_by_its_sender(network: Network) -> None:
    """The sender reads the answer (text, attachment, the letter it answers, its case reference) and who signed."""
    data = build_reply(_answered(network), ANSWER, reply_id="reply-1", holder_name="Alice", keys=OPERATOR, at=AT)
    assert is_reply(data)
    reply = read_reply(data, [STRANGER.certificate, OPERATOR.certificate])
    assert (reply.network, reply.reply_id, reply.in_reply_to) == (network, "reply-1", "letter-7")
    assert reply.case_reference == "Dnr 2026/4711" and reply.text == "Jag överklagar."
    assert reply.attachments == (("overklagan.pdf", "application/pdf", b"%PDF-1.7 x"),)
    assert reply.signer == OPERATOR.certificate and reply.subject == "Sv: Beslut"
    with pytest.raises(Exception, match=r"signature|verif"):
        read_reply(data, [STRANGER.certificate])


def test_answers_are_refused_when_not_allowed_late_or_empty() -> None:
    """NOT_ALLOWED, no Reply, past the deadline or an empty answer: refused with the reason."""
    cases = [
        (dataclasses.replace(TERMS, reply=ReplyTerms(ReplyOption.NOT_ALLOWED)), AT, "reply-not-allowed"),
        (dataclasses.replace(TERMS, reply=None), AT, "reply-not-allowed"),
        (TERMS, AT + timedelta(days=11), "reply-too-late"),
    ]
    for terms, at, code in cases:
        with pytest.raises(ReplyRefused) as refused:
            check_reply(_answered(Network.MINA_MEDDELANDEN, terms=terms), at)
        assert refused.value.code == code
    with pytest.raises(ReplyRefused) as empty:
        build_reply(_answered(Network.SDK), HolderAnswer("  "), reply_id="r", holder_name="A", keys=OPERATOR, at=AT)
    assert empty.value.code == "empty" and empty.value.status == 422
