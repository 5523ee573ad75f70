"""Two real access point processes over HTTP: send with receipt, duplicates, peer down then up, MissingReceipt."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

CERTS = REPO / "pmode" / "examples" / "certs"
TOKEN = "test-token-0123456789abcdef"
SERVICE = {"value": "urn:example:service:letters", "type": "urn:example:service-type"}
UNREGISTERED = "urn:oasis:names:tc:ebcore:partyid-type:unregistered"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _party(value: str, **extra: Any) -> dict[str, Any]:
    return {"party_ids": [{"value": value, "type": UNREGISTERED}], **extra}


def _pmodes(self_name: str, peer_port: int, *, retries: int = 3) -> dict[str, Any]:
    """The same agreements seen from each side: SE sends to BE (1.15) and to NO (2.0)."""
    awareness = {"retries": retries, "backoff_base": "200ms", "backoff_max": "1s", "jitter": 0.0}
    endpoint = f"http://127.0.0.1:{peer_port}/as4"
    parties = {
        "ap-sweden": _party("AP-SE-0001", signing_certificate=str(CERTS / "ap-sweden-sign.pem"), endpoint=endpoint),
        "partner-115": _party("AP-BE-0115", signing_certificate=str(CERTS / "partner-115.pem"), endpoint=endpoint),
    }
    security = {"trust": {"anchors": [str(CERTS / "ca.pem")], "pin_partner": True, "revocation": "off"}}
    return {
        "version": 1,
        "self": self_name,
        "parties": parties,
        "pmodes": [
            {
                "id": "se-to-be",
                "network": "edelivery-1.15",
                "initiator": {"party": "ap-sweden"},
                "responder": {"party": "partner-115"},
                "legs": [
                    {
                        "service": SERVICE,
                        "action": "Deliver",
                        "security": security,
                        "reception_awareness": awareness,
                    }
                ],
            }
        ],
    }


class AccessPointProcess:
    """``accesspoint serve`` in its own process, with its own settings, P-Modes, database and files."""

    def __init__(self, folder: Path, name: str, own_key: str, port: int, peer_port: int, *, retries: int = 3):
        self.folder = folder
        self.port = port
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "pmodes.yaml").write_text(json.dumps(_pmodes(name, peer_port, retries=retries)))
        settings = {
            "listen": {"host": "127.0.0.1", "port": port},
            "pmodes": "pmodes.yaml",
            "storage": "data",
            "instance": name,
            "revocation": False,
            "api_tokens": [TOKEN],
            "send": {"workers": int(os.environ.get("AP_TEST_WORKERS", "2")), "timeout": "5s", "lease": "10s"},
            "keys": {
                "signing": {"key": str(CERTS / f"{own_key}.key.pem"), "certificate": str(CERTS / f"{own_key}.pem")}
            },
        }
        (folder / "server.yaml").write_text(json.dumps(settings))
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> None:
        """Start the server and wait until /health answers."""
        log = self._log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "accesspoint", "serve", "--config", str(self.folder / "server.yaml")],
            cwd=REPO,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("server did not start")

    def stop(self) -> None:
        """Terminate the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        if self._log is not None:
            self._log.close()
            self._log = None

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Call the backend API; (status, JSON)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {TOKEN}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http on loopback)
                raw = response.read()
                kind = response.headers.get("Content-Type", "")
                return response.status, json.loads(raw) if "json" in kind else raw
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def wait_state(
        self, message_id: str, states: set[str], direction: str = "out", timeout: float = 30
    ) -> dict[str, Any]:
        """Poll until the message reaches one of the states."""
        deadline = time.monotonic() + timeout
        document: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, document = self.api("GET", f"/api/v1/messages/{message_id}?direction={direction}")
            if status == 200 and document["state"] in states:
                return document
            time.sleep(0.1)
        raise AssertionError(f"{message_id} never reached {states}: {document}")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[AccessPointProcess, AccessPointProcess]]:
    """Sweden's access point (sender) and Belgium's (receiver), both running."""
    port_se, port_be = _free_port(), _free_port()
    sweden = AccessPointProcess(tmp_path / "se", "ap-sweden", "ap-sweden-sign", port_se, port_be)
    belgium = AccessPointProcess(tmp_path / "be", "partner-115", "partner-115", port_be, port_se)
    try:
        belgium.start()
        sweden.start()
        yield sweden, belgium
    finally:
        sweden.stop()
        belgium.stop()


def _submit(ap: AccessPointProcess, payload: bytes, message_id: str) -> None:
    status, document = ap.api(
        "POST",
        "/api/v1/messages",
        {
            "pmode": "se-to-be",
            "message_id": message_id,
            "properties": {"originalSender": "urn:se:sender", "finalRecipient": "urn:be:recipient"},
            "payloads": [
                {"content_id": "letter@se", "mime_type": "application/xml", "data": base64.b64encode(payload).decode()}
            ],
        },
    )
    assert status == 202, document
    assert document["state"] == "submitted"


def test_message_is_delivered_with_a_verified_receipt_and_downloadable_at_the_receiver(
    pair: tuple[AccessPointProcess, AccessPointProcess],
) -> None:
    """Signed, encrypted 1.15 message from one process to the other; the receipt is verified and kept as evidence."""
    sweden, belgium = pair
    payload = b"<letter>" + os.urandom(2000).hex().encode() + b"</letter>"
    _submit(sweden, payload, "m1@se")
    sent = sweden.wait_state("m1@se", {"delivered", "failed"})
    assert sent["state"] == "delivered", sent
    assert "partner-receipt" in {e["kind"] for e in sent["evidence"]}
    received = belgium.wait_state("m1@se", {"received"}, direction="in")
    assert received["from"].endswith("AP-SE-0001")
    (part,) = received["payloads"]
    assert (part["size"], part["sha256"]) == (len(payload), hashlib.sha256(payload).hexdigest())
    status, body = belgium.api("GET", "/api/v1/messages/m1@se/payloads/letter@se?direction=in")
    assert status == 200 and body == payload
    status, acked = belgium.api("POST", "/api/v1/messages/m1@se/ack")
    assert status == 200 and acked["state"] == "acknowledged"
    assert {"raw-message", "our-receipt"} <= {
        e["kind"] for e in belgium.api("GET", "/api/v1/messages/m1@se?direction=in")[1]["evidence"]
    }


def test_backend_api_answers_bad_requests_with_problem_bodies(
    pair: tuple[AccessPointProcess, AccessPointProcess],
) -> None:
    """No token: 401; unknown P-Mode: 422; unknown message: 404; each with a JSON problem body."""
    sweden, _belgium = pair
    request = urllib.request.Request(f"http://127.0.0.1:{sweden.port}/api/v1/messages/x", method="GET")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310 (http on loopback)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["status"] == 401
    status, problem = sweden.api("POST", "/api/v1/messages", {"pmode": "nope", "payloads": [{"data": "AA=="}]})
    assert status == 422 and "P-Mode" in problem["detail"]
    status, problem = sweden.api("GET", "/api/v1/messages/unknown@x")
    assert status == 404 and problem["title"] == "not-found"
    status, spec = sweden.api("GET", "/api/v1/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")


def test_peer_down_then_up_is_retried_until_delivered(tmp_path: Path) -> None:
    """The receiver starts only after the first attempt failed: reception awareness retries and delivers."""
    port_se, port_be = _free_port(), _free_port()
    sweden = AccessPointProcess(tmp_path / "se", "ap-sweden", "ap-sweden-sign", port_se, port_be, retries=10)
    belgium = AccessPointProcess(tmp_path / "be", "partner-115", "partner-115", port_be, port_se)
    try:
        sweden.start()
        _submit(sweden, b"<late/>", "late@se")
        waiting = sweden.wait_state("late@se", {"awaiting_receipt"})
        assert waiting["attempts"] >= 1 and waiting["next_attempt_at"] is not None
        belgium.start()
        sent = sweden.wait_state("late@se", {"delivered", "failed"})
        assert sent["state"] == "delivered", sent
        assert sent["attempts"] >= 2
        assert belgium.wait_state("late@se", {"received"}, direction="in")["payloads"][0]["size"] == len(b"<late/>")
    finally:
        sweden.stop()
        belgium.stop()


def test_missing_receipt_after_the_last_retry(tmp_path: Path) -> None:
    """Nobody listens at the partner's endpoint: after the last retry the message fails with EBMS:0301."""
    port_se, port_be = _free_port(), _free_port()
    sweden = AccessPointProcess(tmp_path / "se", "ap-sweden", "ap-sweden-sign", port_se, port_be, retries=1)
    try:
        sweden.start()
        _submit(sweden, b"<void/>", "void@se")
        failed = sweden.wait_state("void@se", {"failed", "delivered"})
        assert failed["state"] == "failed"
        assert failed["last_error"]["code"] == "EBMS:0301"
        assert failed["attempts"] == 2
    finally:
        sweden.stop()


def test_a_payload_larger_than_the_in_memory_spool_is_streamed_through_and_arrives_intact(
    pair: tuple[AccessPointProcess, AccessPointProcess],
) -> None:
    """3 MiB (past the 1 MiB in-memory spool on both sides) goes out from a spool file and arrives byte for byte."""
    sweden, belgium = pair
    payload = os.urandom(3 * 1024 * 1024)
    _submit(sweden, payload, "big@se")
    sent = sweden.wait_state("big@se", {"delivered", "failed"}, timeout=60)
    assert sent["state"] == "delivered", sent
    (part,) = belgium.wait_state("big@se", {"received"}, direction="in")["payloads"]
    assert (part["size"], part["sha256"]) == (len(payload), hashlib.sha256(payload).hexdigest())
