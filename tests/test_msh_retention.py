"""Retention in running access points: the periodic purge follows each P-Mode's retention, final states only."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.test_msh_support import Peer, pair, running, submission


def _files(peer: Peer) -> list[Path]:
    return [p for p in (peer.folder / "data" / "files").rglob("*") if p.is_file()]


def _wait(condition: str, check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(condition)


def test_purge_drops_payloads_then_messages_then_evidence_per_pmode_retention(tmp_path: Path) -> None:
    """Payloads after 0.5 s, records and evidence after 1 s once final; an unacknowledged message stays."""
    retention = {"payloads": 0.5, "messages": 1, "evidence": 1}
    quick = {"retention": {"interval": "200ms"}}
    sweden, belgium = pair(tmp_path, se=quick, be=quick, retention=retention)
    with running(belgium, sweden):
        assert sweden.api("POST", "/api/v1/messages", submission("se-to-be", b"<old/>", "r1@se"))[0] == 202
        sent = sweden.wait_state("r1@se", {"delivered", "failed"})
        assert sent["state"] == "delivered" and sent["payloads"]
        _wait("payloads purged", lambda: sweden.api("GET", "/api/v1/messages/r1@se")[1].get("payloads") == [])
        _wait("message purged", lambda: sweden.api("GET", "/api/v1/messages/r1@se")[0] == 404)
        _wait("evidence and payload files deleted", lambda: _files(sweden) == [])

        # Received but not acknowledged is not final: the purge leaves it however old it is.
        time.sleep(1.5)
        kept = belgium.api("GET", "/api/v1/messages/r1@se?direction=in")[1]
        assert kept["state"] == "received" and kept["payloads"]
        assert belgium.api("POST", "/api/v1/messages/r1@se/ack")[0] == 200
        _wait(
            "acknowledged message purged", lambda: belgium.api("GET", "/api/v1/messages/r1@se?direction=in")[0] == 404
        )
