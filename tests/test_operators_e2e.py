"""Sender access point -> operator access point -> operator backend -> mailbox, and the signed answer back.

Four real processes: Sweden's access point (the sender's, which sealed the delivery as the intermediary), the
operator's access point, both ``accesspoint serve`` on the two-way push-and-push P-Mode, and ``accesspoint
operator serve``, the backend of the operator's access point (webhook and polling). The answer comes back on
the reply leg, correlated by ``ref_to_message_id``, and the sender checks it with the operator's certificate.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from accesspoint.servicekit.webhooks import SIGNATURE_HEADER, signature
from accesspoint.testing import services
from accesspoint.testing.processes import wait_until
from accesspoint.testing.services import free_port
from operators.channels import As4Channel, SoapChannel
from operators.sender import SenderStatus, end_to_end_status
from tests.conftest import INTEROP, REPO
from tests.test_msh import CERTS, TOKEN
from tests.test_msh_support import Peer, pair
from tests.test_operators_support import (
    COMPANY,
    OPERATOR,
    OPERATOR_ID,
    PERSON,
    SENDERS_CA,
    sbd,
    sealed,
    secure_delivery,
    write_certificate,
    write_key_pair,
    xhe,
)

SECRET = "operator-webhook-secret-0123"
ADMIN = "mailbox-admin-token-0123456789"
PERSONAL = "mailbox-person-token-0123456789"
TWO_WAY = "se-be-request-reply"


@dataclass
class Federation:
    """The running processes and how to talk to them."""

    sender: Peer
    operator_ap: Peer
    operator_url: str
    folder: Path
    operator_pid: int


def _http(url: str, token: str | None = None, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")  # noqa: S310
    for name, value in {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _operator_settings(folder: Path, port: int, ap_port: int) -> Path:
    key, certificate = write_key_pair(OPERATOR, folder, "operator")
    anchors = write_certificate(SENDERS_CA, folder, "senders-ca")
    contracts = INTEROP / "minameddelanden" / "contracts"
    xhe_xsd = INTEROP / "sdk" / "xhe" / "xsd" / "XHE-1.0.xsd"
    schema_line = f'minameddelanden_contracts = "{contracts}"\n' if contracts.is_dir() else ""
    schema_line += f'xhe_schema = "{xhe_xsd}"\n' if xhe_xsd.is_file() else ""
    settings = folder / "operator.toml"
    settings.write_text(
        f"""[operator]
id = "{OPERATOR_ID}"
name = "Test Mailbox AB"
port = {port}
database = "sqlite+aiosqlite:///mailbox.db"
mailboxes = ["{PERSON}", "{COMPANY}"]
keys = {{ key = "{key}", certificate = "{certificate}" }}

[operator.access_point]
url = "http://127.0.0.1:{ap_port}"
token = "{TOKEN}"
webhook_secret = "{SECRET}"
poll_interval = "1s"

[operator.trust]
intermediaries = ["{CERTS / "ap-sweden-sign.pem"}"]
sender_anchors = ["{anchors}"]
{schema_line}
[[operator.tokens]]
token = "{ADMIN}"

[[operator.tokens]]
token = "{PERSONAL}"
recipients = ["{PERSON}"]
"""
    )
    return settings


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """Sweden's access point, the operator's access point (webhook to the operator) and the operator, running."""
    folder = tmp_path_factory.mktemp("operators")
    operator_port = free_port()
    hook = {
        "url": f"http://127.0.0.1:{operator_port}/hooks/accesspoint",
        "events": ["message-received"],
        "secret": SECRET,
        "backoff": "200ms",
        "max_attempts": 5,
    }
    sender, operator_ap = pair(folder, be={"webhooks": [hook]})
    (folder / "operator").mkdir()
    settings = _operator_settings(folder / "operator", operator_port, operator_ap.port)
    log = (folder / "operator" / "operator.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "accesspoint", "operator", "serve", "--config", str(settings)],
        cwd=REPO,
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{operator_port}"
    try:
        with ThreadPoolExecutor(2) as starting:  # both access points start at once: a few seconds saved
            list(starting.map(Peer.start, (operator_ap, sender)))
        wait_until(
            lambda: _http(f"{url}/health")[0] == 200, process, "the operator", log=folder / "operator" / "operator.log"
        )
        yield Federation(sender, operator_ap, url, folder, process.pid)
    finally:
        sender.stop()
        operator_ap.stop()
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _send(federation: Federation, payload: bytes, message_id: str) -> None:
    document = {
        "pmode": TWO_WAY,
        "message_id": message_id,
        "payloads": [
            {"content_id": "delivery@se", "mime_type": "application/xml", "data": base64.b64encode(payload).decode()}
        ],
    }
    status, answer = federation.sender.api("POST", "/api/v1/messages", document)
    assert status == 202, answer


def _answer(federation: Federation, message_id: str, timeout: float = 30) -> SenderStatus:
    """Poll the sender's access point until the operator's answer to the message has come and verified."""
    api = f"http://127.0.0.1:{federation.sender.port}"
    deadline = time.monotonic() + timeout
    while True:
        status = asyncio.run(end_to_end_status(api, TOKEN, message_id, OPERATOR.certificate))
        if status.receipt is not None:
            return status
        assert time.monotonic() < deadline, f"no answer to {message_id}: {status}"
        time.sleep(0.2)


def test_sealed_delivery_reaches_the_mailbox_and_the_signed_receipt_comes_back(federation: Federation) -> None:
    """A Mina meddelanden delivery lands in the person's mailbox; the sender gets the operator-signed Receipt."""
    delivery = secure_delivery(PERSON)
    channel = As4Channel(f"http://127.0.0.1:{federation.sender.port}", TOKEN, TWO_WAY)
    handover = asyncio.run(channel.deliver(sealed(delivery), message_id="mm-1@se", recipient=PERSON))
    assert (handover.channel, handover.reference, handover.delivered) == ("as4", "mm-1@se", None)
    status = _answer(federation, "mm-1@se")
    assert status.state == "delivered-to-mailbox" and status.transport == "delivered"
    assert status.receipt is not None and status.receipt.signer == OPERATOR.certificate
    assert status.receipt.network_receipts == (f"minameddelanden-receipt:{delivery.messages[0].id}",)
    assert status.receipt.notification.recipient == PERSON
    (reply,) = federation.sender.messages(ref_to_message_id="mm-1@se", direction="in")
    assert reply["message_id"] == status.reply_message_id and reply["action"] == "Reply"

    code, mailbox = _http(f"{federation.operator_url}/api/v1/mailboxes/{PERSON}/messages", PERSONAL)
    assert code == 200
    (mail,) = [m for m in mailbox["messages"] if m["as4_message_id"] == "mm-1@se"]
    assert (mail["reference"], mail["subject"], mail["network"]) == (
        delivery.messages[0].id,
        "Beslut om skatt",
        "minameddelanden",
    )
    assert "Skatteverket" in mail["signed_by"]
    code, full = _http(f"{federation.operator_url}/api/v1/mailboxes/{PERSON}/messages/{mail['id']}", PERSONAL)
    assert code == 200 and base64.b64decode(full["body"]) == delivery.messages[0].body
    assert [a["filename"] for a in full["attachments"]] == ["beslut.pdf"]
    assert federation.operator_ap.wait_state("mm-1@se", {"acknowledged"}, direction="in")["state"] == "acknowledged"

    # Announced again (a repeated webhook): handled once, one mail, one answer.
    event = json.dumps({"event": "message-received", "data": {"direction": "in", "message_id": "mm-1@se"}}).encode()
    code, _ = _http(
        f"{federation.operator_url}/hooks/accesspoint", data=event, headers={SIGNATURE_HEADER: signature(SECRET, event)}
    )
    assert code == 204
    time.sleep(1.5)
    # The delivery's one answer, and the read receipt the holder's first opening sent (the letter asked for one).
    assert len(federation.sender.messages(ref_to_message_id="mm-1@se", direction="in")) == 2
    mailbox = _http(f"{federation.operator_url}/api/v1/mailboxes/{PERSON}/messages", PERSONAL)[1]
    assert [m["as4_message_id"] for m in mailbox["messages"]].count("mm-1@se") == 1

    cli = subprocess.run(
        [
            sys.executable, "-m", "accesspoint", "operator", "status", "mm-1@se",
            "--api", f"http://127.0.0.1:{federation.sender.port}", "--token", TOKEN,
            "--operator-cert", str(federation.folder / "operator" / "operator.pem"),
        ],
        cwd=REPO, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    shown = json.loads(cli.stdout)
    assert cli.returncode == 0, shown
    assert (shown["state"], shown["operator"], shown["recipient"]) == ("delivered-to-mailbox", OPERATOR_ID, PERSON)
    assert "Test Mailbox AB" in shown["signed_by"]


def test_sdk_delivery_gets_accepted_and_unknown_recipient_gets_rejected_meddelandekvittens(
    federation: Federation,
) -> None:
    """SDK: ACCEPTED Meddelandekvittens for the company's mailbox, REJECTED (unknown-recipient) for a stranger."""
    _send(federation, xhe("0007:5566778899"), "sdk-ok@se")
    _send(federation, xhe("0007:2120000787"), "sdk-unknown@se")
    accepted = _answer(federation, "sdk-ok@se")
    assert accepted.state == "delivered-to-mailbox"
    assert accepted.receipt is not None and accepted.receipt.network_receipts == ("meddelandekvittens:ACCEPTED",)
    rejected = _answer(federation, "sdk-unknown@se")
    assert rejected.state == "rejected"
    assert rejected.receipt is not None and rejected.receipt.network_receipts == ("meddelandekvittens:REJECTED",)
    assert [r.code for r in rejected.receipt.notification.reasons] == ["unknown-recipient"]
    code, delivery = _http(f"{federation.operator_url}/api/v1/deliveries/sdk-unknown@se", ADMIN)
    assert code == 200 and delivery["outcome"] == "rejected" and delivery["reply_message_id"]
    code, mailbox = _http(f"{federation.operator_url}/api/v1/mailboxes/{COMPANY}/messages", ADMIN)
    assert [m["as4_message_id"] for m in mailbox["messages"] if m["network"] == "sdk"] == ["sdk-ok@se"]


def test_foreign_sbd_and_unknown_person_get_signed_notifications(federation: Federation) -> None:
    """An SBD to the company: a 'delivered' notification; a delivery to a person without a mailbox: 'rejected'."""
    _send(federation, sbd(), "sbd-1@se")
    _send(federation, sealed(secure_delivery("198112289874")), "mm-unknown@se")
    delivered = _answer(federation, "sbd-1@se")
    assert delivered.state == "delivered-to-mailbox"
    assert delivered.receipt is not None and delivered.receipt.network_receipts == ()
    refused = _answer(federation, "mm-unknown@se")
    assert refused.state == "rejected" and refused.receipt is not None
    assert refused.receipt.network_receipts == ()  # no Receipt for mail that reached no mailbox
    assert refused.receipt.notification.reasons[0].code == "unknown-recipient"


def test_mailbox_api_and_webhook_refuse_the_unauthorised(federation: Federation) -> None:
    """No token 401, another person's mailbox 403, a webhook with a wrong signature 401 (problem bodies)."""
    base = federation.operator_url
    assert _http(f"{base}/api/v1/mailboxes/{PERSON}/messages")[0] == 401
    code, problem = _http(f"{base}/api/v1/mailboxes/{COMPANY}/messages", PERSONAL)
    assert code == 403 and problem["title"] == "forbidden"
    assert _http(f"{base}/api/v1/mailboxes/199001011239/messages", ADMIN)[0] == 404
    body = json.dumps({"event": "message-received", "data": {"direction": "in", "message_id": "x"}}).encode()
    code, problem = _http(f"{base}/hooks/accesspoint", data=body, headers={"X-Accesspoint-Signature": "sha256=00"})
    assert code == 401 and problem["title"] == "bad-signature"


def test_legacy_router_delivers_over_service_v3_into_the_same_mailbox(federation: Federation) -> None:
    """deliverSecure to the running operator's Service v3 endpoint: Delivered=true, the letter is in the mailbox."""
    delivery = secure_delivery(PERSON)
    channel = SoapChannel(f"{federation.operator_url}/soap/v3/service")
    handover = asyncio.run(channel.deliver(sealed(delivery), message_id="soap-1@se", recipient=PERSON))
    assert (handover.channel, handover.delivered) == ("soap", True)
    stranger = secure_delivery("198112289874")
    refused = asyncio.run(channel.deliver(sealed(stranger), message_id="soap-2@se", recipient="198112289874"))
    assert refused.delivered is False
    mailbox = _http(f"{federation.operator_url}/api/v1/mailboxes/{PERSON}/messages", PERSONAL)[1]
    assert f"soap:{delivery.messages[0].id}" in [m["as4_message_id"] for m in mailbox["messages"]]


def test_a_mail_id_beyond_64_bits_is_no_message_not_a_server_error(federation: Federation) -> None:
    """Mail ids past 2**63 - 1, zero or written with non-ASCII digits answer 404 with a problem body."""
    base = f"{federation.operator_url}/api/v1/mailboxes/{PERSON}/messages"
    for mail_id in (str(2**63), str(2**64 + 5), "9" * 40, "0", "\u0663"):
        code, problem = _http(f"{base}/{urllib.parse.quote(mail_id)}", ADMIN)
        assert (code, problem["title"]) == (404, "not-found"), mail_id


def test_an_oversized_soap_request_is_refused_before_it_is_read_and_leaves_no_memory_or_files_behind(
    federation: Federation,
) -> None:
    """60 MiB posted to the unauthenticated Service v3 endpoint: 413 from the Content-Length alone; the operator's
    RSS and open files are as before (it once read such a body whole: RSS 108 -> 598 MB, kept)."""
    pid = federation.operator_pid
    files_before, rss_before = services.open_files(pid), services.rss_bytes(pid)
    body = b"<x>" + b"A" * (60 * 1024 * 1024) + b"</x>"
    request = urllib.request.Request(f"{federation.operator_url}/soap/v3/service", data=body, method="POST")  # noqa: S310
    request.add_header("Content-Type", "text/xml; charset=utf-8")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310 (loopback)
    assert refused.value.code == 413 and b"Fault" in refused.value.read()
    del body
    rss_after = services.rss_bytes(pid)
    print(f"operator RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB after a refused 60 MiB SOAP body")
    assert rss_after - rss_before < 16 * 1024 * 1024
    files_after = services.open_files(pid)
    print(f"operator open files {len(files_before)} -> {len(files_after)} (sockets included)")
    assert services.files_only(files_after) == services.files_only(files_before)
