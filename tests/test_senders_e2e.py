"""Senders and the intermediary across real processes: the demo's federation (FaR with its sender register, the
Swedish router, a Nordic and a Finnish agency's access points, two operators each an access point + ``operator
serve``) driven as a sender would.

A Finnish agency's letter (AS4 2.0) reaches the mailbox and the operator's signed receipt comes back to the Finnish
access point; a SignedDelivery is sealed by the router and verified at the operator, while one that skipped the
router is refused there; an XHE letter to a person is answered with a Meddelandekvittens; and a mass mailing of
1,000 recipients, posted with ``accesspoint mailing submit``, survives a kill -9 of the router with every reachable
recipient getting exactly one letter.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from accesspoint import demo_federation as fed
from accesspoint.envelopes.kvittens import ResponseCode, parse_application_response
from accesspoint.envelopes.minameddelanden import (
    ReceiptRequest,
    SecureDelivery,
    SecureMessage,
    Sender,
    SupportInfo,
    build_signed_delivery,
    verify_sealed_delivery,
)
from accesspoint.envelopes.xhe import Xhe, XheParty, XhePayload, build_xhe, parse_xhe, sdk_scope
from accesspoint.keys_cli import DevelopmentPki, generate_keys
from accesspoint.msh.end_to_end import certificate_sha256
from accesspoint.security.keys import KeyPair, load_key_pair
from accesspoint.testing.webhooks import WebhookListener
from tests.conftest import REPO

MAILING_SIZE = 1000
HOOK_SECRET = "router-webhook-secret-0123456789"
SIGNER = "nordic"  # the development CA's certificate the Swedish agency signs its deliveries with (a test's shortcut)


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[fed.Federation, DevelopmentPki, WebhookListener]]:
    """The demo's federation with 1,000 mailing recipients in FaR and the operators' mailboxes; the router's
    mailing-completed events go to a listener here."""
    folder = tmp_path_factory.mktemp("senders")
    events = WebhookListener(HOOK_SECRET)
    pki = generate_keys(folder / "keys", fed.PARTY_IDS, days=1)
    router_events = {"webhooks": [events.hook("mailing-completed")]}
    federation = fed.build(folder, pki, sweden_settings=router_events, mailing=MAILING_SIZE)
    try:
        fed.start(federation, pki)
        yield federation, pki, events
    except Exception:
        for server in federation.all:
            sys.stderr.write(f"{server.name}'s log:\n{server.log_tail(40)}\n")
        raise
    finally:
        fed.stop(federation)
        events.close()


def _signing_keys(pki: DevelopmentPki) -> KeyPair:
    issued = pki.parties[SIGNER].rsa
    return load_key_pair(issued.key_path, None, certificate=issued.certificate_path)


def _register_signer(federation: fed.Federation, pki: DevelopmentPki, sender: str) -> None:
    """Add the signing certificate to ``sender``'s record in FaR (the router seals only what it signed)."""
    code, record = fed._call(f"{federation.far.url}/api/v1/senders/{sender}", fed.FAR_TOKEN)
    assert code == 200, record
    record.pop("dispatchers", None)
    record["signing_certificates"] = [certificate_sha256(pki.parties[SIGNER].rsa.certificate)]
    code, stored = fed._call(f"{federation.far.url}/api/v1/senders/{sender}", fed.FAR_TOKEN, "PUT", record)
    assert code == 200, stored


def _letter(message_id: str, pmode: str, sender: str, recipient: str, payload: bytes) -> dict[str, Any]:
    return {
        "pmode": pmode,
        "message_id": message_id,
        "properties": {
            "originalSender": {"value": sender, "type": "iso6523-actorid-upis"},
            "finalRecipient": recipient,
        },
        "payloads": [
            {"content_id": "letter@x", "mime_type": "application/xml", "data": base64.b64encode(payload).decode()}
        ],
    }


def _delivery(recipient: str, sender: str) -> SecureDelivery:
    return SecureDelivery(
        sender=Sender("16" + sender.removeprefix("0007:"), "Reklambyrån AB"),
        recipient=recipient,
        messages=(
            SecureMessage(
                str(uuid.uuid4()),
                "Beslut",
                SupportInfo("Ring oss"),
                "text/plain",
                b"Hej!",
                receipt_request=ReceiptRequest.SIGNED,  # the sender's end-to-end proof once the router sealed it
            ),
        ),
    )


@pytest.mark.timeout(300)
def test_a_finnish_agencys_letter_reaches_the_mailbox_and_the_receipt_comes_back(
    running: tuple[fed.Federation, DevelopmentPki, WebhookListener],
) -> None:
    """0216 sender over AS4 2.0 through its own access point: delivered-to-mailbox, signed by the operator."""
    federation, pki, _events = running
    letter = next(item for item in fed.LETTERS if item.message_id == "letter-7@finland")
    fed.send(federation, letter)
    assert fed._outcome(federation, letter, pki) is None
    sent = federation.finland.status(letter.message_id)
    assert sent["end_to_end"]["status"] == "delivered-to-mailbox"
    assert sent["end_to_end"]["operator"]["subject"].startswith("CN=AP-OPERATOR-1")
    received = federation.sweden.status(letter.message_id, "in")
    properties = {p["name"]: p["value"] for p in received["header"]["message_properties"]}
    assert properties["originalSender"] == fed.FINNISH_AGENCY


@pytest.mark.timeout(300)
def test_the_router_seals_a_signed_delivery_the_operator_verifies_and_refuses_one_unsealed(
    running: tuple[fed.Federation, DevelopmentPki, WebhookListener],
) -> None:
    """A SignedDelivery through the router arrives sealed by the router's key (the operator's trusted intermediary)
    and lands in the mailbox; the same delivery forwarded without the seal is rejected by the operator as unsealed."""
    federation, pki, _events = running
    sender = fed.REFUSED_AGENCY  # a Swedish sender connected through the Nordic access point
    _register_signer(federation, pki, sender)
    signed = build_signed_delivery(_delivery(fed.ALICE, sender), _signing_keys(pki))
    code, answer = federation.nordic.api(
        "POST", "/api/v1/messages", _letter("sealed-1@nordic", "nordic-to-se", sender, fed.ALICE, signed)
    )
    assert code == 202, answer
    answered = federation.nordic.wait("sealed-1@nordic", lambda d: "end_to_end" in d, what="end-to-end receipt")
    assert answered["end_to_end"]["status"] == "delivered-to-mailbox", answered["end_to_end"]
    op1 = federation.operator_aps["op1"]
    forwarded = op1.wait("fwd-sealed-1@nordic", lambda d: d["state"] != "received", "in")
    code, sealed = op1.api("GET", "/api/v1/messages/fwd-sealed-1@nordic/payloads/letter@x?direction=in")
    assert code == 200 and forwarded["payloads"][0]["sha256"] != answered["payloads"][0]["sha256"]
    verified = verify_sealed_delivery(sealed, intermediary=pki.parties["sweden"].rsa.certificate)
    assert verified.seal.signatures_ok and verified.delivery.recipient == fed.ALICE
    assert verified.sender_signature.signer == pki.parties[SIGNER].rsa.certificate

    # Past the seal: the router's own backend routes the delivery as it is ("route": true forwards payloads as
    # given), so it reaches the operator unsealed.
    plain = {**_letter("unsealed-1@se", "", fed.SWEDISH_AGENCY, fed.ALICE, signed), "route": True, "action": fed.ACTION}
    del plain["pmode"]
    code, answer = federation.sweden.api("POST", "/api/v1/messages", plain)
    assert code == 202, answer
    rejected = federation.sweden.wait("unsealed-1@se", lambda d: "end_to_end" in d, what="end-to-end receipt")
    assert rejected["end_to_end"]["status"] == "rejected"
    assert [r["code"] for r in rejected["end_to_end"]["reasons"]] == ["unsealed"]


@pytest.mark.timeout(300)
def test_an_xhe_letter_to_a_person_is_answered_with_a_meddelandekvittens(
    running: tuple[fed.Federation, DevelopmentPki, WebhookListener],
) -> None:
    """A signed XHE to a personnummer goes into digital post (FaR, operator); the answer carries an ACCEPTED
    Meddelandekvittens in an XHE signed by the operator, back at the sender's access point."""
    federation, pki, _events = running
    sender = fed.REFUSED_AGENCY
    _register_signer(federation, pki, sender)
    envelope = Xhe(
        id=str(uuid.uuid4()),
        created=datetime.now(UTC).replace(microsecond=0),
        scope=sdk_scope(
            "urn:riv:infrastructure:messaging:MessageWithAttachments:3::messagePayload##3.0::tm-base",
            "urn:fdc:digg.se:edelivery:federation:test",
        ),
        from_party=XheParty(sender),
        to_party=XheParty(fed.ALICE),
        payload=XhePayload("Q{urn:example:letter}Letter", "application/xml", b'<Letter xmlns="urn:example:letter"/>'),
    )
    xhe = build_xhe(envelope, keys=_signing_keys(pki))
    code, answer = federation.nordic.api(
        "POST", "/api/v1/messages", _letter("xhe-1@nordic", "nordic-to-se", sender, fed.ALICE, xhe)
    )
    assert code == 202, answer
    answered = federation.nordic.wait("xhe-1@nordic", lambda d: "end_to_end" in d, what="end-to-end receipt")
    assert answered["end_to_end"]["status"] == "delivered-to-mailbox"
    reply = federation.nordic.status(answered["end_to_end"]["reply_message_id"], "in")
    kvittens_part = next(p for p in reply["payloads"] if p["content_id"].startswith("kvittens"))
    path = f"/api/v1/messages/{reply['message_id']}/payloads/{kvittens_part['content_id']}?direction=in"
    code, body = federation.nordic.api("GET", path)
    assert code == 200
    response = parse_application_response(parse_xhe(body).payload.content)
    assert response.code is ResponseCode.ACCEPTED and response.document_reference == envelope.id


def _cli(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accesspoint", "mailing", *arguments],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.timeout(1200)
def test_a_kill_9_of_the_router_mid_mailing_sends_no_one_a_letter_twice(
    running: tuple[fed.Federation, DevelopmentPki, WebhookListener], tmp_path: Path
) -> None:
    """1,000 recipients posted with ``mailing submit``; the router is killed (SIGKILL) with letters in flight and
    started again: every reachable recipient has exactly one letter in a mailbox, the others FaR's reason, and
    the counts add up; ``mailing status --wait`` follows it to the end and the signed mailing-completed event
    carries the final counts."""
    federation, _pki, events = running
    sweden, recipients = federation.sweden, federation.mailing
    file = tmp_path / "mailing.jsonl"
    metadata = {
        "id": "kill-9",
        "sender": fed.SWEDISH_AGENCY,
        "action": fed.ACTION,
        "rate": 50,
        "payloads": [
            {"content_id": "letter@se", "mime_type": "application/xml",
             "data": base64.b64encode(fed.MAILING_LETTER).decode()}
        ],
    }  # fmt: skip
    file.write_text("".join(json.dumps(line) + "\n" for line in (metadata, *recipients)))
    submitted = _cli("submit", str(file), "--api", sweden.url, f"--token={sweden.token}")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert json.loads(submitted.stdout)["accepted"] == MAILING_SIZE

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        progress = sweden.api("GET", "/api/v1/mailings/kill-9")[1]
        if sum(progress["letters"].values()) >= 200:  # letters made, some delivered, others on their way
            break
        time.sleep(0.2)
    assert progress["letters"].get("delivered", 0) < len(federation.mailing) - 10, progress  # killed mid-mailing
    sweden.kill_and_restart()

    followed = _cli(
        "status", "kill-9", "--api", sweden.url, f"--token={sweden.token}", "--wait", "--interval", "2",
        "--timeout", "900", timeout=960,
    )  # fmt: skip
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "[" in followed.stderr and "completed" in followed.stderr  # the progress bar
    final = json.loads(followed.stdout)
    reachable = [r for index, r in enumerate(recipients) if fed.registered(index)]
    assert final["recipients"] == {"queued": len(reachable), "refused": MAILING_SIZE - len(reachable)}, final
    assert final["letters"] == {"delivered": len(reachable)}, final

    mailboxes = fed.check_mailboxes(federation, timeout=300)
    assert mailboxes.reachable == len(reachable) and mailboxes.exactly_once, mailboxes
    deadline = time.monotonic() + 60
    while not (completed := [(e, ok) for e, ok in events.received if e["data"]["id"] == "kill-9"]):
        assert time.monotonic() < deadline, "no mailing-completed event"
        time.sleep(0.2)
    event, signed = completed[0]  # at least once: a second announcement would say the same
    assert signed and event["event"] == "mailing-completed" and event["data"]["state"] == "completed"
    assert event["data"]["recipients"] == final["recipients"] and event["data"]["letters"] == final["letters"]
    refused = sweden.api("GET", "/api/v1/mailings/kill-9/recipients?state=refused")[1]["recipients"]
    assert {(r["reason"], r["detail"].endswith("has no digital mailbox")) for r in refused} == {("no-mailbox", True)}
