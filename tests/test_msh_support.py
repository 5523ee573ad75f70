"""Helpers for the MSH tests over real processes: agreements for every MEP, peers with extra settings, HTTPS.

``Peer`` is ``tests.test_msh.AccessPointProcess`` with its P-Modes and settings given by the test and an
optional HTTPS base URL; ``agreements`` writes one P-Mode file for both sides (only ``self`` differs).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from accesspoint.core.message import read_message
from accesspoint.core.model import SignalMessage
from accesspoint.testing.processes import log_tail, wait_until
from accesspoint.testing.services import free_port
from tests.conftest import REPO
from tests.test_msh import CERTS, SERVICE, TOKEN, AccessPointProcess, _party

LOOKUP = {"value": "urn:example:service:lookup", "type": "urn:example:service-type"}
PULL_MPC = "urn:example:mpc:for-be"
SE_KEY = "ap-sweden-sign"
BE_KEY = "partner-115"


def agreements(
    self_name: str,
    se_url: str,
    be_url: str,
    *,
    retries: int = 3,
    backoff: str = "300ms",
    retention: dict[str, str] | None = None,
    anchors: list[str] | None = None,
) -> dict[str, Any]:
    """Sweden (ap-sweden) and Belgium (partner-115): one-way push, two-way push-and-push and a pull leg."""
    awareness = {"retries": retries, "backoff_base": backoff, "backoff_max": "10s", "jitter": 0.0}
    security = {"trust": {"anchors": anchors or [str(CERTS / "ca.pem")], "pin_partner": True, "revocation": "off"}}
    parties = {
        "ap-sweden": _party("AP-SE-0001", signing_certificate=str(CERTS / "ap-sweden-sign.pem"), endpoint=se_url),
        "partner-115": _party("AP-BE-0115", signing_certificate=str(CERTS / "partner-115.pem"), endpoint=be_url),
    }

    def leg(service: dict[str, str], action: str, **extra: Any) -> dict[str, Any]:
        return {"service": service, "action": action, "security": security, "reception_awareness": awareness, **extra}

    push: dict[str, Any] = {
        "id": "se-to-be",
        "network": "edelivery-1.15",
        "initiator": {"party": "ap-sweden"},
        "responder": {"party": "partner-115"},
        "legs": [leg(SERVICE, "Deliver")],
    }
    if retention is not None:
        push["retention"] = retention
    return {
        "version": 1,
        "self": self_name,
        "parties": parties,
        "pmodes": [
            push,
            {
                "id": "se-be-request-reply",
                "network": "edelivery-1.15",
                "mep": "two-way",
                "binding": "push-and-push",
                "initiator": {"party": "ap-sweden"},
                "responder": {"party": "partner-115"},
                "legs": [leg(LOOKUP, "Request"), leg(LOOKUP, "Reply")],
            },
            {
                # Belgium pulls what Sweden has for it: the initiator sends the PullRequest, the responder the message.
                "id": "be-pulls-from-se",
                "network": "edelivery-1.15",
                "binding": "pull",
                "initiator": {"party": "partner-115"},
                "responder": {"party": "ap-sweden"},
                "legs": [leg(SERVICE, "Collect", mpc=PULL_MPC)],
            },
        ],
    }


class Peer(AccessPointProcess):
    """An access point process with the test's P-Modes and extra settings, over HTTP or HTTPS."""

    def __init__(
        self,
        folder: Path,
        name: str,
        own_key: str,
        port: int,
        pmodes: dict[str, Any],
        *,
        settings: dict[str, Any] | None = None,
        https: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(folder, name, own_key, port, port)
        (folder / "pmodes.yaml").write_text(json.dumps(pmodes))
        base = json.loads((folder / "server.yaml").read_text())
        base["pull"] = {"interval": "200ms"}
        base.update(settings or {})
        (folder / "server.yaml").write_text(json.dumps(base))
        self.https = https
        self.base = f"{'https' if https else 'http'}://127.0.0.1:{port}"

    def _request(self, path: str, data: bytes | None = None, method: str = "GET") -> urllib.request.Request:
        return urllib.request.Request(f"{self.base}{path}", data=data, method=method)  # noqa: S310 (loopback)

    def _open(self, request: urllib.request.Request, timeout: float) -> Any:
        return urllib.request.urlopen(request, timeout=timeout, context=self.https)  # noqa: S310 (loopback)

    def start(self) -> None:
        """Start the server and wait until /health answers (over HTTPS when configured)."""
        log = self._log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "accesspoint", "serve", "--config", str(self.folder / "server.yaml")],
            cwd=REPO,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_until(self._answers, self.process, "accesspoint serve", log=self.folder / "server.log")

    def _answers(self) -> bool:
        with self._open(self._request("/health"), 1):
            return True

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Call the backend API; (status, JSON or bytes)."""
        data = None if body is None else json.dumps(body).encode()
        return self.call(method, path, data, "application/json")

    def call(self, method: str, path: str, data: bytes | None, content_type: str) -> tuple[int, Any]:
        """Call the backend API with any body; (status, JSON or bytes)."""
        request = self._request(path, data, method)
        request.add_header("Authorization", f"Bearer {TOKEN}")
        request.add_header("Content-Type", content_type)
        try:
            with self._open(request, 10) as response:
                raw = response.read()
                kind = response.headers.get("Content-Type", "")
                return response.status, json.loads(raw) if "json" in kind else raw
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (ConnectionError, http.client.HTTPException) as exc:
            # A dropped connection means the server died or closed on us: say which, with its log, so a rare
            # failure in CI can be understood from its report alone.
            exit_code = None if self.process is None else self.process.poll()
            raise AssertionError(
                f"{self.folder.name}: {method} {path} got {exc!r} (server exit code {exit_code}):\n"
                f"{log_tail(self.folder / 'server.log')}"
            ) from exc

    def post_as4(self, body: bytes, content_type: str) -> tuple[int, str, bytes]:
        """POST raw bytes to /as4: (status, Content-Type, body)."""
        request = self._request("/as4", body, "POST")
        request.add_header("Content-Type", content_type)
        try:
            with self._open(request, 10) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()

    def messages(self, **query: str) -> list[dict[str, Any]]:
        """GET /api/v1/messages with the query."""
        status, document = self.api("GET", "/api/v1/messages?" + "&".join(f"{k}={v}" for k, v in query.items()))
        assert status == 200, document
        return list(document["messages"])


def submission(pmode: str, payload: bytes, message_id: str, **extra: Any) -> dict[str, Any]:
    """A JSON submission with one XML payload."""
    return {
        "pmode": pmode,
        "message_id": message_id,
        "payloads": [
            {"content_id": "letter@se", "mime_type": "application/xml", "data": base64.b64encode(payload).decode()}
        ],
        **extra,
    }


def error_codes(content_type: str, body: bytes) -> list[str]:
    """The eb:Error codes of an error signal answer (AssertionError if it is anything else)."""
    header = read_message(content_type, body).parsed.messaging.message
    assert isinstance(header, SignalMessage) and header.errors, header
    return [e.error_code for e in header.errors]


@contextmanager
def running(*peers: Peer) -> Iterator[None]:
    """Start the peers in order and stop them all at the end."""
    try:
        for peer in peers:
            peer.start()
        yield
    finally:
        for peer in peers:
            peer.stop()


def pair(
    tmp_path: Path, *, se: dict[str, Any] | None = None, be: dict[str, Any] | None = None, **agreed: Any
) -> tuple[Peer, Peer]:
    """Sweden and Belgium over HTTP with the agreements (not started)."""
    port_se, port_be = free_port(), free_port()
    se_url, be_url = f"http://127.0.0.1:{port_se}/as4", f"http://127.0.0.1:{port_be}/as4"
    sweden = Peer(
        tmp_path / "se", "ap-sweden", SE_KEY, port_se, agreements("ap-sweden", se_url, be_url, **agreed), settings=se
    )
    belgium = Peer(
        tmp_path / "be",
        "partner-115",
        BE_KEY,
        port_be,
        agreements("partner-115", se_url, be_url, **agreed),
        settings=be,
    )
    return sweden, belgium
