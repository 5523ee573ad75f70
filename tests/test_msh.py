"""Two access points exchanging over HTTP in one event loop: receipt, problems, peer down then up, MissingReceipt.

``AccessPointProcess`` (``accesspoint serve`` in a process of its own) is kept here for the tests where the
process is the point (CLI, TLS, kill -9, several instances, the federations).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accesspoint.testing.processes import listens, wait_until
from tests.conftest import REPO

if TYPE_CHECKING:
    from tests.inmemory import Node, Pair

CERTS = REPO / "pmode" / "examples" / "certs"
TOKEN = "test-token-0123456789abcdef"
SERVICE = {"value": "urn:example:service:letters", "type": "urn:example:service-type"}
UNREGISTERED = "urn:oasis:names:tc:ebcore:partyid-type:unregistered"


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
        wait_until(listens(self.port), self.process, "accesspoint serve", log=self.folder / "server.log")

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


def _submission(payload: bytes, message_id: str) -> dict[str, Any]:
    return {
        "pmode": "se-to-be",
        "message_id": message_id,
        "properties": {"originalSender": "urn:se:sender", "finalRecipient": "urn:be:recipient"},
        "payloads": [
            {"content_id": "letter@se", "mime_type": "application/xml", "data": base64.b64encode(payload).decode()}
        ],
    }


async def _submit(node: Node, payload: bytes, message_id: str) -> None:
    status, document = await node.api("POST", "/api/v1/messages", _submission(payload, message_id))
    assert status == 202, document
    assert document["state"] == "submitted"


async def test_message_is_delivered_with_a_verified_receipt_and_downloadable_at_the_receiver(
    pair_factory: Callable[..., Pair],
) -> None:
    """Signed, encrypted 1.15 message from one access point to the other; the receipt is verified and kept."""
    pair = pair_factory()
    sweden, belgium = pair.se, pair.be
    await belgium.start()
    await sweden.start()
    payload = b"<letter>" + os.urandom(2000).hex().encode() + b"</letter>"
    await _submit(sweden, payload, "m1@se")
    sent = await sweden.until("m1@se", {"delivered", "failed"})
    assert sent["state"] == "delivered", sent
    assert "partner-receipt" in {e["kind"] for e in sent["evidence"]}
    received = await belgium.until("m1@se", {"received"}, direction="in")
    assert received["from"].endswith("AP-SE-0001")
    (part,) = received["payloads"]
    assert (part["size"], part["sha256"]) == (len(payload), hashlib.sha256(payload).hexdigest())
    status, body = await belgium.api("GET", "/api/v1/messages/m1@se/payloads/letter@se?direction=in")
    assert status == 200 and body == payload
    status, acked = await belgium.api("POST", "/api/v1/messages/m1@se/ack")
    assert status == 200 and acked["state"] == "acknowledged"
    evidence = (await belgium.message("m1@se", "in"))["evidence"]
    assert {"raw-message", "our-receipt"} <= {e["kind"] for e in evidence}


async def test_backend_api_answers_bad_requests_with_problem_bodies(pair_factory: Callable[..., Pair]) -> None:
    """No token or a bare one: 401 with a challenge; unknown P-Mode: 422; unknown message: 404; problem bodies."""
    sweden = pair_factory().se
    await sweden.start()
    assert sweden.http is not None
    for headers in ({}, {"Authorization": TOKEN}, {"Authorization": "Basic " + TOKEN}):
        async with sweden.http.get(f"{sweden.base}/api/v1/messages/x", headers=headers) as response:
            assert response.status == 401 and response.content_type == "application/problem+json"
            assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")
            assert (await response.json())["status"] == 401
    async with sweden.http.get(
        f"{sweden.base}/api/v1/messages/x", headers={"Authorization": "bearer " + TOKEN}
    ) as response:
        assert response.status == 404  # the scheme in any case (RFC 9110 11.1)
    status, problem = await sweden.api("POST", "/api/v1/messages", {"pmode": "nope", "payloads": [{"data": "AA=="}]})
    assert status == 422 and "P-Mode" in problem["detail"]
    status, problem = await sweden.api("GET", "/api/v1/messages/unknown@x")
    assert status == 404 and problem["title"] == "not-found"
    status, spec = await sweden.api("GET", "/api/v1/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")


async def test_peer_down_then_up_is_retried_until_delivered(pair_factory: Callable[..., Pair]) -> None:
    """The receiver starts only after the first attempt failed: reception awareness retries and delivers."""
    pair = pair_factory(retries=10, backoff="5s")
    sweden, belgium = pair.se, pair.be
    await sweden.start()
    await _submit(sweden, b"<late/>", "late@se")
    waiting = await sweden.until("late@se", {"awaiting_receipt"})
    assert waiting["attempts"] == 1 and waiting["next_attempt_at"] is not None
    await belgium.start()
    await pair.advance(timedelta(seconds=5))
    sent = await sweden.until("late@se", {"delivered", "failed"})
    assert sent["state"] == "delivered", sent
    assert sent["attempts"] == 2
    received = await belgium.until("late@se", {"received"}, direction="in")
    assert received["payloads"][0]["size"] == len(b"<late/>")


async def test_missing_receipt_after_the_last_retry(pair_factory: Callable[..., Pair]) -> None:
    """Nobody listens at the partner's endpoint: after the last retry the message fails with EBMS:0301."""
    pair = pair_factory(retries=1, backoff="5s")
    sweden = pair.se
    await sweden.start()
    await _submit(sweden, b"<void/>", "void@se")
    await sweden.until("void@se", {"awaiting_receipt"})
    await pair.advance(timedelta(seconds=5))
    failed = await sweden.until("void@se", {"failed", "delivered"})
    assert failed["state"] == "failed"
    assert failed["last_error"]["code"] == "EBMS:0301"
    assert failed["attempts"] == 2


async def test_a_payload_larger_than_the_in_memory_spool_is_streamed_through_and_arrives_intact(
    pair_factory: Callable[..., Pair],
) -> None:
    """3 MiB (past the 1 MiB in-memory spool and the offload threshold) is secured in a thread, arrives intact."""
    pair = pair_factory()
    sweden, belgium = pair.se, pair.be
    await belgium.start()
    await sweden.start()
    payload = os.urandom(3 * 1024 * 1024)
    await _submit(sweden, payload, "big@se")
    sent = await sweden.until("big@se", {"delivered", "failed"}, timeout=60)
    assert sent["state"] == "delivered", sent
    (part,) = (await belgium.until("big@se", {"received"}, direction="in"))["payloads"]
    assert (part["size"], part["sha256"]) == (len(payload), hashlib.sha256(payload).hexdigest())
