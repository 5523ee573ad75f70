"""Two-way digital post at the operator, in this event loop: a sender's access point (Sweden) and the operator's
(Belgium's keys) on one manual clock, the operator (``operators.service.Operator``) as the latter's backend. Letters
with terms go in; answers, read receipts, not-served notices and payment confirmations come back to the sender on
the reply leg, correlated to the letter; refusals say why and store nothing."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from accesspoint.envelopes.broadcast import Audience, Broadcast, Group, build_broadcast
from accesspoint.envelopes.letter import CaseEvent, ExternalPart, LetterTerms, PartRole, ReplyTerms, with_terms
from accesspoint.envelopes.minameddelanden import MatterStatus, ReceiptRequest, ReplyOption, verify_delivery_receipt
from accesspoint.envelopes.payment import INVOICE_TAG
from accesspoint.testing import services
from accesspoint.testing.eid import EidCa
from operators.deliveries import payload_sha256
from operators.evidence import EventKind, verify_event
from operators.holders import login_text
from operators.payments import verify_confirmation
from operators.replies import read_reply
from operators.sender import two_way_status
from operators.service import Operator
from operators.settings import load_settings
from operators.twoway_store import letters
from tests.inmemory import Pair, eventually
from tests.test_envelopes_payment import BANKGIRO, _wrong_digit
from tests.test_msh import CERTS, TOKEN
from tests.test_operators_support import (
    COMPANY,
    INTERMEDIARY,
    OPERATOR,
    OPERATOR_ID,
    PERSON,
    SENDERS_CA,
    STRANGER,
    sealed,
    secure_delivery,
    write_certificate,
    write_key_pair,
)

SECRET = "operator-webhook-secret-0123"
ADMIN = "mailbox-admin-token-0123456789"
PERSONAL = "mailbox-person-token-0123456789"
COMPANY_TOKEN = "mailbox-company-token-012345678"
TWO_WAY = "se-be-request-reply"
EID = EidCa()
PDF_A = b"%PDF-1.7\n<x:xmpmeta><pdfaid:part>2</pdfaid:part></x:xmpmeta>\n%%EOF"


class Rig:
    """The two access points and the operator, with helpers to send letters and act as the holder."""

    def __init__(self, pair: Pair, operator: Operator, url: str, http: aiohttp.ClientSession) -> None:
        self.pair, self.operator, self.url, self.http = pair, operator, url, http

    @property
    def now(self) -> datetime:
        return self.pair.clock.now()

    async def deliver(self, payload: bytes, *, extra: tuple[tuple[str, bytes], ...] = ()) -> str:
        """Send a letter (and content parts) on the two-way P-Mode; its MessageId once the operator handled it."""
        message_id = f"{uuid.uuid4()}@agency.example"
        payloads = [("delivery@agency", "application/xml", payload), *((c, "application/pdf", d) for c, d in extra)]
        status, answer = await self.pair.se.api(
            "POST",
            "/api/v1/messages",
            {
                "pmode": TWO_WAY,
                "message_id": message_id,
                "payloads": [
                    {"content_id": c, "mime_type": m, "data": base64.b64encode(d).decode()} for c, m, d in payloads
                ],
            },
        )
        assert status == 202, answer
        await eventually(
            lambda: self.operator.store.handled(message_id), lambda h: h is not None, f"{message_id} handled", 30
        )
        return message_id

    async def holder(self, method: str, path: str, body: Any = None, token: str = PERSONAL) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None

    async def mail_id(self, message_id: str, recipient: str = PERSON) -> int:
        status, listing = await self.holder("GET", f"/api/v1/mailboxes/{recipient}/messages", token=ADMIN)
        assert status == 200, listing
        return int(next(m["id"] for m in listing["messages"] if m["as4_message_id"] == message_id))

    async def at_sender(self, letter: str, count: int) -> dict[str, bytes]:
        """The payloads of the messages that came back to the sender about ``letter`` (after ``count`` came)."""
        await self.operator.twoway.flush()
        found = await eventually(
            lambda: self.pair.se.messages(direction="in", ref_to_message_id=letter),
            lambda ms: len(ms) >= count,
            f"{count} messages back about {letter}",
            30,
        )
        conversation = (await self.pair.se.message(letter))["conversation_id"]
        payloads: dict[str, bytes] = {}
        for message in found:
            record = await self.pair.se.message(message["message_id"], "in")
            assert record["conversation_id"] == conversation
            for part in record["payloads"]:
                path = f"/api/v1/messages/{message['message_id']}/payloads/{part['content_id']}?direction=in"
                status, data = await self.pair.se.call("GET", path, None, "application/json")
                assert status == 200
                payloads[part["content_id"]] = data
        return payloads


def _settings(folder: Path, port: int, ap_port: int, *, presentation: bool = True) -> Path:
    key, certificate = write_key_pair(OPERATOR, folder, "operator")
    anchors = write_certificate(SENDERS_CA, folder, "senders-ca")
    eid_ca = folder / "eid-ca.pem"
    eid_ca.write_bytes(EID.pem)
    policy = '\n[operator.presentation]\ncontent_types = ["application/pdf", "text/plain"]\n' if presentation else ""
    (folder / "operator.toml").write_text(
        f'[operator]\nid = "{OPERATOR_ID}"\nname = "Test Mailbox AB"\nport = {port}\n'
        f'database = "sqlite+aiosqlite:///mailbox.db"\nmailboxes = ["{PERSON}", "{COMPANY}"]\n'
        f'keys = {{ key = "{key}", certificate = "{certificate}" }}\n\n'
        f'[operator.access_point]\nurl = "http://127.0.0.1:{ap_port}"\ntoken = "{TOKEN}"\n'
        f'webhook_secret = "{SECRET}"\npoll_interval = "0s"\n\n'
        f'[operator.trust]\nintermediaries = ["{CERTS / "ap-sweden-sign.pem"}"]\nsender_anchors = ["{anchors}"]\n\n'
        f'[operator.two_way]\nsweep_interval = "1h"\n{policy}\n'
        f'[operator.eid]\nanchors = ["{eid_ca}"]\n\n'
        # an authority that is not there: acknowledgements here are refused with 503 (the federation test has one)
        f'[operator.timestamping]\nurl = "http://127.0.0.1:{services.free_port()}/"\ntrust = ["{eid_ca}"]\n'
        'timeout = "2s"\n\n'
        f'[[operator.tokens]]\ntoken = "{ADMIN}"\n\n'
        f'[[operator.tokens]]\ntoken = "{PERSONAL}"\nrecipients = ["{PERSON}"]\n\n'
        f'[[operator.tokens]]\ntoken = "{COMPANY_TOKEN}"\nrecipients = ["{COMPANY}"]\n'
    )
    return folder / "operator.toml"


@pytest.fixture
async def rig(pair_factory: Callable[..., Pair], tmp_path: Path) -> AsyncIterator[Rig]:
    """Both access points and the operator running in this event loop (the sweep is driven by the test)."""
    pair = pair_factory()
    port = services.free_port()
    hook = {"url": f"http://127.0.0.1:{port}/hooks/accesspoint", "events": ["message-received"], "secret": SECRET,
            "backoff": "200ms"}  # fmt: skip
    pair.configure(pair.be, webhooks=[hook])
    await pair.se.start()
    await pair.be.start()
    (tmp_path / "operator").mkdir()
    operator = Operator(load_settings(_settings(tmp_path / "operator", port, pair.be.port)), clock=pair.clock.now)
    server = TestServer(operator.application(), host="127.0.0.1", port=port)
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Rig(pair, operator, f"http://127.0.0.1:{port}", http)
    await server.close()


def _letter(terms: LetterTerms, *, recipient: str = PERSON, body: bytes | None = None) -> bytes:
    delivery = secure_delivery(recipient, receipt=False)
    message = with_terms(delivery.messages[0], terms)
    if body is not None:
        message = dataclasses.replace(message, body=body, content_type="text/plain", attachments=())
    else:
        message = dataclasses.replace(message, attachments=())
    return sealed(dataclasses.replace(delivery, messages=(message,), reference=terms.case_reference))


async def test_answer_reaches_the_sender_correlated_and_late_or_foreign_answers_are_refused(rig: Rig) -> None:
    """The holder answers through the mailbox API; the sender gets the sealed reply delivery on the reply leg, in
    the letter's conversation, naming the letter and the case; a late answer, an answer to a letter that allows
    none and an answer through another holder's mailbox are refused with the reason, and nothing is sent."""
    terms = LetterTerms(reply=ReplyTerms(ReplyOption.REQUESTED, rig.now + timedelta(days=3)), case_reference="Dnr 42")
    letter = await rig.deliver(_letter(terms))
    mail_id = await rig.mail_id(letter)
    answer = {"text": "Jag överklagar.", "attachments": [{"filename": "a.pdf", "content_type": "application/pdf",
                                                           "data": base64.b64encode(PDF_A).decode()}]}  # fmt: skip
    status, sent = await rig.holder("POST", f"/api/v1/mailboxes/{PERSON}/messages/{mail_id}/replies", answer)
    assert status == 202, sent
    assert sent["case_reference"] == "Dnr 42" and sent["network"] == "minameddelanden"
    back = await rig.at_sender(letter, 2)  # the delivery answer and the reply
    reply = read_reply(back[f"reply@{OPERATOR_ID}"], [OPERATOR.certificate])
    assert reply.reply_id == sent["reply_id"] and reply.text == "Jag överklagar." and reply.holder == PERSON
    assert reply.case_reference == "Dnr 42" and reply.attachments == (("a.pdf", "application/pdf", PDF_A),)
    status = await two_way_status(rig.pair.se.base, TOKEN, letter, [OPERATOR.certificate])
    assert [r["reply_id"] for r in status.replies] == [sent["reply_id"]] and status.problems == []

    status, refused = await rig.holder("POST", f"/api/v1/mailboxes/{COMPANY}/messages/{mail_id}/replies", answer)
    assert status == 403, refused
    status, refused = await rig.holder(
        "POST", f"/api/v1/mailboxes/{COMPANY}/messages/{mail_id}/replies", answer, token=COMPANY_TOKEN
    )
    assert status == 404 and "no letter" in refused["detail"]
    await rig.pair.advance(timedelta(days=4))
    status, refused = await rig.holder("POST", f"/api/v1/mailboxes/{PERSON}/messages/{mail_id}/replies", answer)
    assert status == 409 and refused["code"] == "reply-too-late" and "until" in refused["detail"]
    silent = await rig.deliver(_letter(LetterTerms(reply=ReplyTerms(ReplyOption.NOT_ALLOWED))))
    status, refused = await rig.holder(
        "POST", f"/api/v1/mailboxes/{PERSON}/messages/{await rig.mail_id(silent)}/replies", answer
    )
    assert status == 409 and refused["code"] == "reply-not-allowed"
    assert len(await rig.operator.twoway.store.replies_of(mail_id)) == 1
    assert await rig.operator.twoway.flush() == 0


async def test_first_opening_by_the_holder_sends_the_read_receipt_once(rig: Rig) -> None:
    """The operator's own reading sends nothing; the holder's first opening sends the signed opened event and the
    contract's signed Receipt; opening again sends nothing more."""
    letter = await rig.deliver(_letter(LetterTerms(receipt=ReceiptRequest.SIGNED)))
    mail_id = await rig.mail_id(letter)
    delivered = {"network": "minameddelanden", "result": "delivered"}  # counted for the operator's /metrics
    assert rig.operator.metrics.registry.get_sample_value("operator_deliveries_total", delivered) == 1
    assert (await rig.holder("GET", f"/api/v1/mailboxes/{PERSON}/messages/{mail_id}", token=ADMIN))[0] == 200
    assert await rig.operator.twoway.flush() == 0
    for _ in range(2):
        assert (await rig.holder("GET", f"/api/v1/mailboxes/{PERSON}/messages/{mail_id}"))[0] == 200
    back = await rig.at_sender(letter, 2)
    event = verify_event(back[f"opened@{OPERATOR_ID}"], OPERATOR.certificate)
    assert event.kind is EventKind.OPENED and event.message_id == letter and event.at == rig.now
    receipt = verify_delivery_receipt(back[f"read-receipt@{OPERATOR_ID}"], operator=OPERATOR.certificate)
    assert receipt.receipt.receipt_sender == PERSON and receipt.receipt.acknowledged == rig.now.date()
    status = await two_way_status(rig.pair.se.base, TOKEN, letter, [OPERATOR.certificate])
    assert status.opened is not None and status.opened["details"] == {"receipt": "SIGNED"}
    assert await rig.operator.twoway.flush() == 0


async def test_invoice_is_found_by_due_date_and_paid_once_with_a_signed_confirmation(rig: Rig) -> None:
    """An invoice with payment data is listed by state and due date; paying sends the sender a signed confirmation
    with the EN 16931 terms; paying twice is refused; an invoice with a wrong OCR check digit never arrives."""
    due = rig.now.date() + timedelta(days=20)
    payment = dataclasses.replace(BANKGIRO, due_date=due)
    letter = await rig.deliver(_letter(LetterTerms(invoice=True, payment=payment)))
    await rig.deliver(_letter(LetterTerms(case_event=CaseEvent("x", "y", rig.now)), body=b"not an invoice"))
    mail_id = await rig.mail_id(letter)
    base = f"/api/v1/mailboxes/{PERSON}/invoices"
    status, found = await rig.holder("GET", f"{base}?state=unpaid&due_before={due.isoformat()}")
    assert status == 200 and [i["mail_id"] for i in found["invoices"]] == [mail_id]
    assert found["invoices"][0]["payment_data"]["reference"] == BANKGIRO.reference
    assert (await rig.holder("GET", f"{base}?due_before={(due - timedelta(days=1)).isoformat()}"))[1]["invoices"] == []
    status, paid = await rig.holder("POST", f"/api/v1/mailboxes/{PERSON}/messages/{mail_id}/payment", {})
    assert status == 201 and "no money moved" in paid["note"], paid
    status, again = await rig.holder("POST", f"/api/v1/mailboxes/{PERSON}/messages/{mail_id}/payment", {})
    assert status == 409 and again["code"] == "already-paid"
    assert (await rig.holder("GET", f"{base}?state=paid"))[1]["invoices"][0]["mail_id"] == mail_id
    back = await rig.at_sender(letter, 2)
    confirmation = verify_confirmation(back[f"payment@{OPERATOR_ID}"], OPERATOR.certificate)
    assert confirmation.payment == payment and confirmation.payment_id == paid["payment_id"]
    assert confirmation.invoice_message_id == letter and confirmation.payer == PERSON
    status = await two_way_status(rig.pair.se.base, TOKEN, letter, [OPERATOR.certificate])
    assert status.payment is not None and status.payment["payment_id"] == paid["payment_id"]

    delivery = secure_delivery(receipt=False)
    message = with_terms(delivery.messages[0], LetterTerms(invoice=True, payment=payment))
    tampered = tuple((t, _wrong_digit(v) if t == "en16931:BT-83" else v) for t, v in message.metadata)
    bad = await rig.deliver(
        sealed(dataclasses.replace(delivery, messages=(dataclasses.replace(message, metadata=tampered),)))
    )
    done = await rig.operator.store.handled(bad)
    assert done is not None and done.outcome == "rejected" and "BT-83" in (done.detail or "")
    assert (await rig.holder("GET", base))[1]["invoices"][0]["mail_id"] == mail_id
    assert (INVOICE_TAG, "true") in message.metadata


async def test_served_letter_not_acknowledged_by_its_deadline_is_not_served(rig: Rig) -> None:
    """The sweep on the operator's clock marks a served letter past its deadline not served and sends the sender a
    signed notice; before the deadline it does nothing."""
    deadline = rig.now + timedelta(days=7)
    letter = await rig.deliver(_letter(LetterTerms(delgivning_deadline=deadline)))
    mail_id = await rig.mail_id(letter)
    assert await rig.operator.twoway.sweep(rig.now) == 0
    await rig.pair.advance(timedelta(days=7, seconds=1))
    assert await rig.operator.twoway.sweep(rig.now) == 1
    assert await rig.operator.twoway.sweep(rig.now) == 0
    back = await rig.at_sender(letter, 2)
    event = verify_event(back[f"not-served@{OPERATOR_ID}"], OPERATOR.certificate)
    assert event.kind is EventKind.NOT_SERVED and event.detail("deadline") == deadline.isoformat()
    status = await two_way_status(rig.pair.se.base, TOKEN, letter, [OPERATOR.certificate])
    assert status.delgivning is not None and status.delgivning["status"] == "not-served"
    status, state = await rig.holder("GET", f"/api/v1/mailboxes/{PERSON}/messages/{mail_id}/two-way")
    assert status == 200 and state["delgivning"]["state"] == "not-served"


async def test_a_served_letter_is_acknowledged_only_in_an_e_id_session_with_a_time_stamp_before_its_deadline(
    rig: Rig,
) -> None:
    """Acknowledging a served letter with a mailbox token is refused (403), with the time-stamp authority away it is
    refused (503), after the deadline it is refused (409); the letter stays pending and nothing goes to the sender."""
    letter = await rig.deliver(_letter(LetterTerms(delgivning_deadline=rig.now + timedelta(days=7))))
    base = f"/api/v1/mailboxes/{PERSON}/messages/{await rig.mail_id(letter)}"

    async def acknowledge(token: str) -> tuple[int, Any]:
        _, state = await rig.holder("GET", base + "/two-way", token=token)
        signatures = EID.signed(state["delgivning"]["acknowledgement_text"], PERSON, at=rig.now)
        return await rig.holder("POST", base + "/acknowledgement", {"signatures": signatures}, token=token)

    async def login() -> str:
        text = login_text(OPERATOR_ID, "Test Mailbox AB")
        code, session = await rig.holder("POST", "/api/v1/sessions", {"agreement_text": text,
                                         "signatures": EID.signed(text, PERSON, at=rig.now)})  # fmt: skip
        assert code == 201, session
        return str(session["token"])

    code, refused = await acknowledge(PERSONAL)
    assert code == 403 and refused["code"] == "e-id-required"
    code, refused = await acknowledge(await login())
    assert code == 503 and refused["code"] == "timestamping-failed", refused
    await rig.pair.advance(timedelta(days=7, seconds=1))
    code, refused = await acknowledge(await login())
    assert code == 409 and refused["code"] == "deadline-passed", refused
    code, state = await rig.holder("GET", base + "/two-way")
    assert state["delgivning"]["state"] == "pending" and state["sent"] == []


async def test_case_events_build_a_timeline_per_sender_and_case(rig: Rig) -> None:
    """Event-only messages go to the timeline and not the mail list; a letter of the case appears in both; its
    metadata reaches the mailbox instead of being dropped."""
    first = rig.now
    await rig.deliver(_letter(LetterTerms(case_event=CaseEvent("2026/7", "ansökan mottagen", first)), body=b""))
    decided = CaseEvent(
        "2026/7", "beslut fattat", first + timedelta(days=2), "https://example.se/7", MatterStatus.CLOSED
    )
    letter = await rig.deliver(_letter(LetterTerms(case_event=decided, metadata=(("category", "beslut"),))))
    status, mail = await rig.holder("GET", f"/api/v1/mailboxes/{PERSON}/messages")
    assert status == 200 and [m["as4_message_id"] for m in mail["messages"]] == [letter]
    status, timeline = await rig.holder("GET", f"/api/v1/mailboxes/{PERSON}/cases")
    (case,) = timeline["cases"]
    assert (case["sender"], case["case_id"], case["status"]) == ("162021005448", "2026/7", "beslut fattat")
    assert [e["status"] for e in case["events"]] == ["ansökan mottagen", "beslut fattat"]
    assert case["events"][1]["link"] == "https://example.se/7" and case["events"][1]["mail_id"] is not None
    status, one = await rig.holder("GET", f"/api/v1/mailboxes/{PERSON}/cases/162021005448/2026%2F7")
    assert status == 200 and len(one["cases"][0]["events"]) == 2
    status, state = await rig.holder("GET", f"/api/v1/mailboxes/{PERSON}/messages/{await rig.mail_id(letter)}/two-way")
    assert state["terms"]["metadata"] == [["category", "beslut"]]


async def test_parts_bound_by_digest_and_the_presentation_policy(rig: Rig) -> None:
    """Content parts must come as the letter's digests bind them; content outside the presentation policy is
    refused with the reason in the signed answer; in both cases nothing is stored."""
    part = ExternalPart("body@agency", payload_sha256(PDF_A), len(PDF_A), "application/pdf", PartRole.BODY, "b.pdf")
    letter = await rig.deliver(_letter(LetterTerms(parts=(part,)), body=b""), extra=(("body@agency", PDF_A),))
    assert (await rig.operator.store.handled(letter)).outcome == "delivered"  # type: ignore[union-attr]
    swapped = await rig.deliver(_letter(LetterTerms(parts=(part,)), body=b""), extra=(("body@agency", PDF_A + b" "),))
    html = await rig.deliver(
        sealed(dataclasses.replace(secure_delivery(receipt=False), messages=(dataclasses.replace(
            secure_delivery().messages[0], content_type="text/html", body=b"<p>x</p>", attachments=()),)))
    )  # fmt: skip
    for message_id, words in ((swapped, "digest binds"), (html, "text/html is not shown")):
        done = await rig.operator.store.handled(message_id)
        assert done is not None and done.outcome == "rejected" and words in (done.detail or ""), done
        back = await rig.at_sender(message_id, 1)
        assert words.encode() in back[f"notification@{OPERATOR_ID}"]
    async with rig.operator.store.engine.connect() as conn:
        rows = (await conn.execute(letters.select())).all()
    assert [r.as4_message_id for r in rows] == [letter]
    assert datetime.now(UTC) > rig.now - timedelta(days=1)


async def test_a_part_fetched_by_the_holder_is_the_letter_opened(rig: Rig) -> None:
    """Fetching a content part through the parts route is reading the letter: the operator's own fetch sends
    nothing, the holder's first sends the signed opened event once, and reading the letter afterwards no more."""
    part = ExternalPart("body@agency", payload_sha256(PDF_A), len(PDF_A), "application/pdf", PartRole.BODY, "b.pdf")
    terms = LetterTerms(parts=(part,), receipt=ReceiptRequest.SIMPLE)
    letter = await rig.deliver(_letter(terms, body=b""), extra=(("body@agency", PDF_A),))
    mail_id = await rig.mail_id(letter)
    path = f"{rig.url}/api/v1/mailboxes/{PERSON}/messages/{mail_id}/parts/body@agency"
    for token in (ADMIN, PERSONAL):
        async with rig.http.get(path, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200 and await response.read() == PDF_A
        if token == ADMIN:
            assert await rig.operator.twoway.flush() == 0
    back = await rig.at_sender(letter, 2)  # the delivery answer and the opened event
    event = verify_event(back[f"opened@{OPERATOR_ID}"], OPERATOR.certificate)
    assert event.kind is EventKind.OPENED and event.message_id == letter
    assert (await rig.holder("GET", f"/api/v1/mailboxes/{PERSON}/messages/{mail_id}"))[0] == 200
    assert await rig.operator.twoway.flush() == 0


async def test_broadcast_reaches_its_audience_and_a_forged_one_none(rig: Rig) -> None:
    """A broadcast signed by a trusted intermediary goes into every mailbox of its group and is answered with the
    count; one signed by anyone else is refused (count 0, the reason) and stored nowhere."""
    persons = Broadcast("bc-1", "0007:2021005448", rig.now, "Driftstörning", "text/plain", b"Hej alla!",
                        Audience(Group.PERSONS))  # fmt: skip
    message_id = await rig.deliver(build_broadcast(persons, INTERMEDIARY))
    back = await rig.at_sender(message_id, 1)
    event = verify_event(back[f"broadcast@{OPERATOR_ID}"], OPERATOR.certificate)
    assert event.kind is EventKind.BROADCAST and event.detail("delivered") == "1" and event.business_id == "bc-1"
    _status, mail = await rig.holder("GET", f"/api/v1/mailboxes/{PERSON}/messages")
    assert [(m["network"], m["subject"]) for m in mail["messages"]] == [("broadcast", "Driftstörning")]
    assert (await rig.holder("GET", f"/api/v1/mailboxes/{COMPANY}/messages", token=ADMIN))[1]["messages"] == []
    everyone = dataclasses.replace(persons, id="bc-2", audience=Audience())
    back = await rig.at_sender(await rig.deliver(build_broadcast(everyone, INTERMEDIARY)), 1)
    assert verify_event(back[f"broadcast@{OPERATOR_ID}"], OPERATOR.certificate).detail("delivered") == "2"
    forged = await rig.deliver(build_broadcast(dataclasses.replace(everyone, id="bc-3"), STRANGER))
    back = await rig.at_sender(forged, 1)
    refused = verify_event(back[f"broadcast@{OPERATOR_ID}"], OPERATOR.certificate)
    assert refused.detail("delivered") == "0" and "no intermediary" in (refused.detail("refused") or "")
    assert len((await rig.holder("GET", f"/api/v1/mailboxes/{COMPANY}/messages", token=ADMIN))[1]["messages"]) == 1
