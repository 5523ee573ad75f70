"""The sender's end-to-end status across real processes: the demo's federation (FaR, a Nordic sender's access
point, the Swedish router, two operators each an access point + ``operator serve``) with a webhook listener on
the sender; and the sans-I/O check of an operator's answer.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from accesspoint import demo_federation as fed
from accesspoint.keys_cli import DevelopmentPki
from accesspoint.msh.end_to_end import verify_answer
from accesspoint.store import EndToEnd, MessageStore, sqlite_url
from accesspoint.testing.webhooks import WebhookListener
from operators.deliveries import DeliveryTrust, check_delivery, unknown_recipient
from operators.receipts import build_answer
from tests.conftest import REPO, SharedFederation
from tests.test_operators_support import OPERATOR, STRANGER, sbd


@pytest.fixture
def running(shared_federation: SharedFederation) -> tuple[fed.Federation, DevelopmentPki, WebhookListener]:
    """The federation shared with other modules (tests/conftest.py), with the sender's end-to-end-receipt webhooks
    going to a listener in this test."""
    return shared_federation.world.federation, shared_federation.world.pki, shared_federation.receipts


def _answered(federation: fed.Federation, message_id: str) -> dict[str, Any]:
    return federation.nordic.wait(message_id, lambda d: "end_to_end" in d, what="end-to-end receipt")


@pytest.mark.timeout(300)  # a hang guard: the first test also starts the shared federation
def test_sender_status_shows_delivered_to_mailbox_by_the_operators_signature_and_keeps_it(
    running: tuple[fed.Federation, DevelopmentPki, WebhookListener],
) -> None:
    """A routed letter's status at the sender: delivered-to-mailbox, when, signed by operator 1 (subject and
    certificate SHA-256), also through ``accesspoint status``, announced by a signed webhook, kept over a restart."""
    federation, pki, events = running
    letter = fed.LETTERS[0]
    fed.send(federation, letter)
    answer = _answered(federation, letter.message_id)["end_to_end"]
    certificate = pki.parties["op1"].rsa.certificate
    assert answer["status"] == "delivered-to-mailbox"
    assert answer["operator"]["id"] == f"16{fed.OPERATORS[0].orgnr}"
    assert answer["operator"]["subject"].startswith("CN=AP-OPERATOR-1")
    assert (
        answer["operator"]["certificate_sha256"] == hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
    )
    assert answer["recipient"] == letter.recipient and answer["reasons"] == []
    assert abs(datetime.fromisoformat(answer["at"]) - datetime.now(UTC)).total_seconds() < 120
    assert answer["reply_message_id"].startswith("rev-")  # relayed by the router

    # The router keeps the same answer with the message it forwarded (certificate from its P-Mode party).
    routed = federation.sweden.wait(f"fwd-{letter.message_id}", lambda d: "end_to_end" in d)
    assert routed["end_to_end"]["operator"]["certificate_sha256"] == answer["operator"]["certificate_sha256"]

    cli = subprocess.run(
        [sys.executable, "-m", "accesspoint", "status", letter.message_id, "--direction", "out",
         "--api", federation.nordic.url, f"--token={federation.nordic.token}"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["end_to_end"] == answer

    def announced() -> list[tuple[dict[str, Any], bool]]:  # other modules' letters are announced here too
        return [(e, ok) for e, ok in events.received if e["data"]["message_id"] == letter.message_id]

    deadline = datetime.now(UTC).timestamp() + 20
    while not announced() and datetime.now(UTC).timestamp() < deadline:
        threading.Event().wait(0.1)
    ((event, signed),) = announced()
    assert signed and event["event"] == "end-to-end-receipt"
    assert event["data"] == {"message_id": letter.message_id, "end_to_end": answer}

    federation.nordic.stop()
    federation.nordic._terminated = False
    federation.nordic.start()
    federation.nordic.wait_ready()
    assert federation.nordic.status(letter.message_id)["end_to_end"] == answer


@pytest.mark.timeout(300)  # a hang guard: the first test also starts the shared federation
def test_sender_status_shows_rejected_with_the_operators_reasons(
    running: tuple[fed.Federation, DevelopmentPki, WebhookListener],
) -> None:
    """FaR names operator 2, which has no such mailbox: the sender's status says rejected, unknown-recipient,
    signed by operator 2."""
    federation, _pki, _events = running
    letter = fed.LETTERS[4]
    fed.send(federation, letter)
    answer = _answered(federation, letter.message_id)["end_to_end"]
    assert answer["status"] == "rejected"
    assert [r["code"] for r in answer["reasons"]] == ["unknown-recipient"]
    assert answer["operator"]["subject"].startswith("CN=AP-OPERATOR-2")


def _answer_parts(payload: bytes, message_id: str, *, delivered: bool = True) -> dict[str, bytes]:
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    checked = check_delivery(payload, DeliveryTrust(), at=at)
    outcome = checked if delivered else unknown_recipient(checked)
    parts = build_answer(
        outcome, message_id=message_id, payloads=[("letter@se", payload)], operator="op", keys=OPERATOR, at=at
    )
    return {part.content_id: part.data for part in parts}


def test_an_answer_counts_only_with_the_operators_certificate_and_for_what_was_sent() -> None:
    """The answer verifies with the operator's certificate, for the message id (or its router's fwd- id) and the
    payload that was sent; another certificate, another message or other payload bytes give nothing."""
    payload = sbd()
    sent = {"letter@se": payload}
    direct = _answer_parts(payload, "m-1@se")
    assert verify_answer(direct, message_id="m-1@se", sent=sent, certificates=[OPERATOR.certificate]) is not None
    routed = _answer_parts(payload, "fwd-m-1@se", delivered=False)
    checked = verify_answer(routed, message_id="m-1@se", sent=sent, certificates=[OPERATOR.certificate])
    assert checked is not None and checked.state == "rejected"
    assert verify_answer(direct, message_id="m-1@se", sent=sent, certificates=[STRANGER.certificate]) is None
    assert verify_answer(direct, message_id="m-2@se", sent=sent, certificates=[OPERATOR.certificate]) is None
    other = {"letter@se": sbd()}
    assert verify_answer(direct, message_id="m-1@se", sent=other, certificates=[OPERATOR.certificate]) is None
    assert verify_answer({"x": b"<not-an-answer/>"}, message_id="m-1@se", sent=sent, certificates=[]) is None


async def test_the_store_keeps_the_first_answer_per_message(tmp_path: Path) -> None:
    """record_end_to_end keeps one answer per sent message; a second is refused and the first stands."""
    store = await MessageStore.open(sqlite_url(tmp_path / "ap.db"), tmp_path / "files")
    try:
        at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        first = EndToEnd("m@se", "delivered-to-mailbox", at, "op", "CN=op", "ab" * 32, "r1", at, (), "1970")
        assert await store.record_end_to_end(first)
        assert not await store.record_end_to_end(
            EndToEnd("m@se", "rejected", at, "op", "CN=op", "ab" * 32, "r2", at, (("x", "y"),))
        )
        assert await store.end_to_end("m@se") == first
        assert await store.end_to_end("other@se") is None
    finally:
        await store.close()
