"""Retention in running access points: the periodic purge follows each P-Mode's retention, final states only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from accesspoint.msh.app import MAINTENANCE
from accesspoint.store import PurgeReport
from tests.inmemory import Node, Pair, eventually
from tests.test_msh_support import submission

DAY = timedelta(days=1)


def _files(node: Node) -> list[Path]:
    return [p for p in (node.folder / "data" / "files").rglob("*") if p.is_file() and p.parent.name != "tmp"]


async def test_purge_drops_payloads_then_messages_then_evidence_per_pmode_retention(
    pair_factory: Callable[..., Pair],
) -> None:
    """Payloads after a day, records and evidence after two once final; an unacknowledged message stays."""
    pair = pair_factory(retention={"payloads": "1d", "messages": "2d", "evidence": "2d"})
    sweden, belgium = pair.se, pair.be
    for node in (sweden, belgium):
        pair.configure(node, retention={"interval": "1h"})
    await belgium.start()
    await sweden.start()
    assert (await sweden.api("POST", "/api/v1/messages", submission("se-to-be", b"<old/>", "r1@se")))[0] == 202
    sent = await sweden.until("r1@se", {"delivered", "failed"})
    assert sent["state"] == "delivered" and sent["payloads"]

    async def record() -> tuple[int, dict[str, object]]:
        return await sweden.api("GET", "/api/v1/messages/r1@se")

    hour = timedelta(hours=1)
    await pair.advance(DAY)
    await pair.advance_until(hour, record, lambda answer: answer[1].get("payloads") == [], "payloads purged")
    await pair.advance(DAY - 2 * hour)
    await pair.advance_until(hour, record, lambda answer: answer[0] == 404, "message purged")

    async def files() -> list[Path]:
        return _files(sweden)

    await eventually(files, lambda found: found == [], "evidence and payload files deleted")

    # Received but not acknowledged is not final: the purge leaves it however old it is.
    kept = await belgium.message("r1@se", "in")
    assert kept["state"] == "received" and kept["payloads"]
    assert (await belgium.api("POST", "/api/v1/messages/r1@se/ack"))[0] == 200
    await pair.advance(2 * DAY - hour)

    async def acknowledged() -> int:
        return (await belgium.api("GET", "/api/v1/messages/r1@se?direction=in"))[0]

    await pair.advance_until(hour, acknowledged, lambda status: status == 404, "acknowledged message purged")


async def test_purge_runs_on_the_injected_clock(pair_factory: Callable[..., Pair]) -> None:
    """A failed message loses its payloads after 30 days, its record after 90, its evidence after a year."""
    pair = pair_factory(retries=0, retention={"payloads": "30d", "messages": "90d", "evidence": "1y"})
    sweden = pair.se
    await sweden.start()
    assert (await sweden.api("POST", "/api/v1/messages", submission("se-to-be", b"<x/>", "old@se")))[0] == 202
    # Nobody listens at the partner's endpoint and the leg allows no wait: it fails at once, a final state.
    assert (await sweden.until("old@se", {"failed"}))["state"] == "failed"
    assert sweden.app is not None
    maintenance, now = sweden.app[MAINTENANCE], pair.clock.now()
    assert await maintenance.purge(now=now + 29 * DAY) == PurgeReport()
    assert await maintenance.purge(now=now + 31 * DAY) == PurgeReport(payloads=1)
    assert await maintenance.purge(now=now + 91 * DAY) == PurgeReport(messages=1)
    assert (await sweden.api("GET", "/api/v1/messages/old@se"))[0] == 404
    assert (await maintenance.purge(now=now + 366 * DAY)).evidence >= 1
