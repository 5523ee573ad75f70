"""Retention in running access points: the periodic purge follows each P-Mode's retention, final states only."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from accesspoint.msh.app import MAINTENANCE, create_app
from accesspoint.msh.config import load_config
from accesspoint.store import ManualClock, PurgeReport
from tests.test_msh import TOKEN
from tests.test_msh_support import Peer, agreements, pair, running, submission

Client = Callable[..., Awaitable[TestClient[Any, Any]]]


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


async def test_purge_runs_on_the_injected_clock(aiohttp_client: Client, tmp_path: Path) -> None:
    """With a manual clock, a failed message loses its payloads after 30 days, its record after 90, evidence later."""
    retention = {"payloads": "30d", "messages": "90d", "evidence": "1y"}
    sweden, _belgium = pair(tmp_path)
    pmodes = agreements("ap-sweden", sweden.base + "/as4", "http://127.0.0.1:9/as4", retries=0, retention=retention)
    sweden.folder.joinpath("pmodes.yaml").write_text(json.dumps(pmodes))
    clock = ManualClock(datetime.now(UTC))
    app = create_app(load_config(sweden.folder / "server.yaml"), clock=clock)
    client = await aiohttp_client(app)
    maintenance = app[MAINTENANCE]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = await client.post("/api/v1/messages", json=submission("se-to-be", b"<x/>", "old@se"), headers=auth)
    assert response.status == 202
    # Nobody listens at the partner's endpoint and the leg allows no wait: it fails at once, a final state.
    for _ in range(100):
        document = await (await client.get("/api/v1/messages/old@se", headers=auth)).json()
        if document["state"] == "failed":
            break
        await asyncio.sleep(0.05)
    assert document["state"] == "failed", document

    day = timedelta(days=1)
    assert await maintenance.purge(now=clock.now() + 29 * day) == PurgeReport()
    assert await maintenance.purge(now=clock.now() + 31 * day) == PurgeReport(payloads=1)
    assert await maintenance.purge(now=clock.now() + 91 * day) == PurgeReport(messages=1)
    assert (await client.get("/api/v1/messages/old@se", headers=auth)).status == 404
    assert (await maintenance.purge(now=clock.now() + 366 * day)).evidence >= 1
