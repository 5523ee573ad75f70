"""Two-way digital post across real processes: the demo's federation (FaR, the Nordic agency's access point, the
Swedish router, two operators each an access point + ``operator serve``) with a time-stamp authority and the
agency's webhook listener, started once for the session. Each flow goes agency → router → operator → holder and
back: answers in each network's form, a late answer refused, a read receipt, a served letter not acknowledged by
its deadline, a served letter acknowledged with e-ID and its time-stamped kvitto, an invoice found by due date
and paid once, a broadcast counted at both operators, a case timeline, and content outside the presentation
policy refused with the reason; and a 200 MB letter, its content an attachment bound by digest to the sealed
delivery, streamed through every hop with each process's memory far below its size."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from accesspoint import demo_federation as fed
from accesspoint import demo_twoway as tw
from accesspoint.envelopes.letter import CaseEvent, LetterTerms, ReplyTerms
from accesspoint.envelopes.minameddelanden import ReceiptRequest, ReplyOption
from accesspoint.envelopes.payment import AccountKind, PaymentData, luhn_digit
from accesspoint.testing import large_letters
from tests.conftest import SharedFederation

pytestmark = pytest.mark.timeout(300)

ALICE, BERTIL = fed.ALICE, fed.BERTIL  # mailboxes at operator 1 and operator 2
LARGE = 200 * 2**20  # the large letter's content (2 GiB in ``python -m bench --only large-letter``)
PEAK_BOUND = 150 * 10**6  # each process's peak resident memory while it passes: the content is streamed, never held


@pytest.fixture
def world(shared_federation: SharedFederation) -> tw.TwoWayFederation:
    """The federation shared with other modules (tests/conftest.py), running for every test of the module."""
    return shared_federation.world


def _sent(world: tw.TwoWayFederation, message_id: str) -> dict[str, object]:
    return world.nordic.wait(message_id, lambda d: "end_to_end" in d, what="the operator's delivery answer")


@pytest.mark.parametrize(("form", "recipient"), [("minameddelanden", ALICE), ("sdk", BERTIL), ("sbdh", ALICE)])
def test_answer_reaches_the_agencys_backend_correlated_in_each_form(
    world: tw.TwoWayFederation, form: str, recipient: str
) -> None:
    """The holder answers through the operator's mailbox API; the answer, in the letter's network's form, comes to
    the agency's access point through the router as a signed AS4 message referring to the letter in its
    conversation, is announced by a signed webhook, and names the letter and the case reference."""
    terms = LetterTerms(reply=ReplyTerms(ReplyOption.REQUESTED, datetime.now(UTC) + timedelta(days=14)),
                        case_reference=f"Dnr 2026/{form}")  # fmt: skip
    letter_id = f"letter-{form}-{time.monotonic_ns()}"
    payload = tw.FORMS[form](world, recipient, terms, subject="Beslut", body=b"Svara senast om 14 dagar.",
                             letter_id=letter_id)  # fmt: skip
    message_id = tw.send(world, recipient, payload)
    mail_id = tw.mail_id(world, recipient, message_id)
    code, sent = tw.holder(world, recipient, "POST", f"/messages/{mail_id}/replies",
                           {"text": f"Svar på {letter_id}"})  # fmt: skip
    assert code == 202, sent
    found = tw.wait_for(world, message_id, lambda s: bool(s.replies), "answer")
    (reply,) = found.replies
    assert reply["network"] == {"sbdh": "foreign"}.get(form, form) and reply["in_reply_to"] == letter_id
    assert reply["case_reference"] == f"Dnr 2026/{form}" and reply["text"] == f"Svar på {letter_id}"
    record = world.nordic.status(reply["message_id"], "in")
    letter = world.nordic.status(message_id)
    assert record["ref_to_message_id"] == message_id and record["conversation_id"] == letter["conversation_id"]
    assert record["from"].endswith(fed.PARTY_IDS["sweden"])  # relayed by the router
    deadline = time.monotonic() + 30
    while not world.backend.events(reply["message_id"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    ((event, signed),) = world.backend.events(reply["message_id"])[:1]
    assert signed and event["event"] == "message-received" and event["data"]["ref_to_message_id"] == message_id


def test_late_answer_is_refused_with_the_deadline_and_nothing_goes_back(world: tw.TwoWayFederation) -> None:
    """An answer after the letter's reply deadline is refused (409 with the deadline); the agency gets no answer."""
    terms = LetterTerms(reply=ReplyTerms(ReplyOption.ACCEPTED, datetime.now(UTC) - timedelta(minutes=1)))
    message_id = tw.send(world, ALICE, tw.mm_letter(world, ALICE, terms, subject="Sent svar", body=b"x"))
    code, refused = tw.holder(world, ALICE, "POST", f"/messages/{tw.mail_id(world, ALICE, message_id)}/replies",
                              {"text": "för sent"})  # fmt: skip
    assert code == 409 and refused["code"] == "reply-too-late" and "until" in refused["detail"]
    _sent(world, message_id)
    assert tw.status(world, message_id).replies == []


def test_first_opening_sends_the_read_receipt(world: tw.TwoWayFederation) -> None:
    """A letter asking for a signed receipt: the holder's first opening sends it; the agency's status shows it."""
    terms = LetterTerms(receipt=ReceiptRequest.SIGNED)
    message_id = tw.send(world, BERTIL, tw.mm_letter(world, BERTIL, terms, subject="Kvitto", body="Läs mig".encode()))
    mail_id = tw.mail_id(world, BERTIL, message_id)
    assert tw.status(world, message_id).opened is None
    assert tw.holder(world, BERTIL, "GET", f"/messages/{mail_id}")[0] == 200
    found = tw.wait_for(world, message_id, lambda s: s.opened is not None, "read receipt")
    assert found.opened is not None and found.opened["details"] == {"receipt": "SIGNED"}


def test_served_letter_not_acknowledged_is_not_served_at_its_deadline(world: tw.TwoWayFederation) -> None:
    """A served letter whose deadline passes unacknowledged: the operator's sweep sends a signed not-served notice."""
    deadline = datetime.now(UTC) + timedelta(seconds=2)
    terms = LetterTerms(delgivning_deadline=deadline)
    message_id = tw.send(world, ALICE, tw.sdk_letter(world, ALICE, terms, subject="Delgivning", body=b"Beslut"))
    tw.mail_id(world, ALICE, message_id)
    found = tw.wait_for(world, message_id, lambda s: s.delgivning is not None, "delgivning outcome")
    assert found.delgivning is not None and found.delgivning["status"] == "not-served"
    assert found.delgivning["details"]["deadline"] == deadline.isoformat()


def test_served_letter_acknowledged_with_e_id_gets_a_time_stamped_kvitto(world: tw.TwoWayFederation) -> None:
    """A served letter acknowledged by its holder in an e-ID session: the agency's status shows it served with the
    operator's kvitto, time-stamped over its SHA-256 and naming every part's digest; forged or token-made
    acknowledgements are refused first, and a second one is refused after."""
    body = b"Beslut om bygglov"
    terms = LetterTerms(delgivning_deadline=datetime.now(UTC) + timedelta(hours=1))
    message_id = tw.send(world, ALICE, tw.mm_letter(world, ALICE, terms, subject="Delgivning", body=body))
    mail_id = tw.mail_id(world, ALICE, message_id)
    session = tw.login(world, ALICE)
    code, letter = tw.holder(world, ALICE, "GET", f"/messages/{mail_id}/two-way", session=session)
    assert code == 200 and letter["delgivning"]["state"] == "pending", letter
    text = letter["delgivning"]["acknowledgement_text"]
    assert hashlib.sha256(body).hexdigest() in text
    path, signed = f"/messages/{mail_id}/acknowledgement", world.federation.signed
    for forged in (signed(text, BERTIL), signed(text.removesuffix(".") + "!", ALICE)):
        code, refused = tw.holder(world, ALICE, "POST", path, {"signatures": forged}, session=session)
        assert code == 422, refused
    code, refused = tw.holder(world, ALICE, "POST", path, {"signatures": signed(text, ALICE)})
    assert code == 403 and refused["code"] == "e-id-required"
    assert tw.holder(world, ALICE, "GET", f"/messages/{mail_id}/two-way")[1]["delgivning"]["state"] == "pending"

    code, served = tw.holder(world, ALICE, "POST", path, {"signatures": signed(text, ALICE)}, session=session)
    assert code == 201, served
    found = tw.wait_for(world, message_id, lambda s: s.delgivning is not None, "delgivningskvitto")
    evidence = found.delgivning
    assert evidence is not None and evidence["status"] == "served", found.to_json()
    assert evidence["kvitto_sha256"] == served["kvitto_sha256"] == evidence["timestamp"]["imprint_sha256"]
    assert evidence["acknowledged_by"]["identity"] == ALICE
    assert all(f"{p['content_id']} SHA-256 {p['sha256']}" in text for p in evidence["parts"])
    code, again = tw.holder(world, ALICE, "POST", path, {"signatures": signed(text, ALICE)}, session=session)
    assert code == 409 and again["code"] == "delgivning-served"


def _payment(due: datetime, reference: str) -> PaymentData:
    return PaymentData(Decimal("499.00"), "SEK", due.date(), reference, AccountKind.BANKGIRO, "50501055",
                       "Skatteverket", invoice_number="F-1")  # fmt: skip


def test_invoice_found_by_due_date_and_paid_once(world: tw.TwoWayFederation) -> None:
    """An invoice with payment data is found by its due date, paid through the reference provider and the agency
    gets the signed confirmation; a second payment is refused; a wrong OCR check digit is refused on arrival."""
    due = datetime.now(UTC) + timedelta(days=30)
    ocr = "20260042" + luhn_digit("20260042")
    terms = LetterTerms(invoice=True, payment=_payment(due, ocr))
    message_id = tw.send(world, BERTIL, tw.sbdh_letter(world, BERTIL, terms, subject="Faktura", body=b"Att betala"))
    mail_id = tw.mail_id(world, BERTIL, message_id)
    code, found = tw.holder(world, BERTIL, "GET", f"/invoices?state=unpaid&due_before={due.date().isoformat()}")
    assert code == 200 and [i["mail_id"] for i in found["invoices"]] == [mail_id]
    code, paid = tw.holder(world, BERTIL, "POST", f"/messages/{mail_id}/payment", {})
    assert code == 201, paid
    code, again = tw.holder(world, BERTIL, "POST", f"/messages/{mail_id}/payment", {})
    assert code == 409 and again["code"] == "already-paid"
    status = tw.wait_for(world, message_id, lambda s: s.payment is not None, "payment confirmation")
    assert status.payment is not None and status.payment["payment_id"] == paid["payment_id"]
    assert status.payment["terms"]["reference"] == ocr and "no money moved" in status.payment["note"]

    wrong = "20260042" + str((int(luhn_digit("20260042")) + 1) % 10)
    bad = LetterTerms(invoice=True, payment=_payment(due, ocr))
    document = tw.sbdh_letter(world, BERTIL, bad, subject="Faktura", body=b"x").replace(ocr.encode(), wrong.encode())
    refused = _sent(world, tw.send(world, BERTIL, document))["end_to_end"]
    assert refused["status"] == "rejected" and refused["reasons"][0]["code"] == "payment-data"
    assert "BT-83" in refused["reasons"][0]["text"]


def test_broadcast_is_counted_at_both_operators(world: tw.TwoWayFederation) -> None:
    """The infrastructure owner's broadcast goes once to each operator FaR knows; each fans it out and answers
    with a signed count; the router shows the counts per operator."""
    sweden = world.federation.sweden
    code, sent = sweden.api("POST", "/api/v1/broadcasts", {"issuer": "0007:2021005448", "subject": "Driftinfo",
                                                          "body": "Tjänsten är öppen igen.",
                                                          "audience": {"group": "persons"}})  # fmt: skip
    assert code == 202, sent
    assert sorted(o["operator"] for o in sent["operators"]) == sorted(o.orgnr for o in fed.OPERATORS)
    deadline = time.monotonic() + fed.ANSWER_TIMEOUT
    while True:
        code, counts = sweden.api("GET", f"/api/v1/broadcasts/{sent['id']}")
        if code == 200 and counts["totals"]["answered"] == 2:
            break
        assert time.monotonic() < deadline, counts
        time.sleep(0.2)
    per_operator = {o["operator"]: o["delivered"] for o in counts["operators"]}
    assert per_operator == {fed.OPERATORS[0].orgnr: 1, fed.OPERATORS[1].orgnr: 1}  # one person each
    assert counts["totals"]["delivered"] == 2
    code, mail = tw.holder(world, ALICE, "GET", "/messages")
    assert any(m["network"] == "broadcast" and m["subject"] == "Driftinfo" for m in mail["messages"])


def test_case_events_make_a_timeline(world: tw.TwoWayFederation) -> None:
    """Event-only messages (no content) and a letter of the same case show as one case, events in order."""
    case = f"2026/{time.monotonic_ns()}"
    start = datetime.now(UTC).replace(microsecond=0)
    for offset, status in ((0, "ansökan mottagen"), (1, "handläggning pågår")):
        event = LetterTerms(case_event=CaseEvent(case, status, start + timedelta(hours=offset)))
        tw.send(world, ALICE, tw.mm_letter(world, ALICE, event, subject="Ärende", body=b""))
    closing = LetterTerms(case_event=CaseEvent(case, "beslut", start + timedelta(hours=2), "https://example.se/x"))
    message_id = tw.send(world, ALICE, tw.mm_letter(world, ALICE, closing, subject="Beslut", body=b"Bifall"))
    tw.mail_id(world, ALICE, message_id)
    deadline = time.monotonic() + fed.ANSWER_TIMEOUT
    while True:
        _code, timeline = tw.holder(world, ALICE, "GET", "/cases")
        cases = [c for c in timeline.get("cases", []) if c["case_id"] == case]
        if cases and len(cases[0]["events"]) == 3:
            break
        assert time.monotonic() < deadline, timeline
        time.sleep(0.2)
    (found,) = cases
    assert found["sender"] == "16" + tw.AGENCY_ORGNR and found["status"] == "beslut"
    assert [e["status"] for e in found["events"]] == ["ansökan mottagen", "handläggning pågår", "beslut"]


def test_content_outside_the_presentation_policy_is_refused_with_the_reason(world: tw.TwoWayFederation) -> None:
    """HTML with a script is refused with the rule in the operator's signed answer and never reaches the mailbox."""
    payload = tw.mm_letter(world, ALICE, LetterTerms(), subject="Skript", body=b"<p>x</p><script>alert(1)</script>",
                           content_type="text/html")  # fmt: skip
    message_id = tw.send(world, ALICE, payload)
    answer = _sent(world, message_id)["end_to_end"]
    assert answer["status"] == "rejected" and answer["reasons"][0]["code"] == "presentation"
    assert "<script>" in answer["reasons"][0]["text"]
    _code, mail = tw.holder(world, ALICE, "GET", "/messages")
    assert all(m["as4_message_id"] != f"fwd-{message_id}" for m in mail["messages"])


@pytest.mark.timeout(900)
def test_a_200_mb_letter_is_streamed_to_the_mailbox_and_downloaded_intact(
    world: tw.TwoWayFederation, tmp_path: Path
) -> None:
    """A 200 MB letter, its content an AS4 attachment bound by digest to the sealed delivery, goes agency → router →
    operator into Alice's mailbox and is downloaded intact by her, every process's peak memory under 150 MB."""
    content = large_letters.write_pdf(tmp_path / "ritningar.pdf", LARGE)
    processes = large_letters.servers(world)
    large_letters.reset_peaks(processes)  # what this letter takes, whatever the module's other tests took
    message_id = large_letters.send(world, ALICE, content)
    mail_id = tw.mail_id(world, ALICE, message_id, timeout=600)
    assert large_letters.download(world, ALICE, mail_id, large_letters.CONTENT_ID) == (content.size, content.sha256)
    answer = _sent(world, message_id)["end_to_end"]  # the operator's signed answer quotes the content's digest
    assert answer["status"] == "delivered-to-mailbox", answer
    peaks = large_letters.peaks(processes)
    in_mib = {name: peak >> 20 for name, peak in peaks.items()}
    print(f"\n{LARGE >> 20} MiB letter, peak RSS in MiB: {in_mib}")
    assert all(peak < PEAK_BOUND for peak in peaks.values()), in_mib
    code, _envelope = tw.holder(world, ALICE, "GET", f"/messages/{mail_id}/parts/{large_letters.LETTER_ID}")
    assert code == 404  # the envelope is not a part of the content
    content.path.unlink()
