"""Sends to one partner at once: send.per_partner, so a slow partner cannot hold every worker."""

from __future__ import annotations

import asyncio

from accesspoint.msh.sending import PartnerLanes


async def _hold(lanes: PartnerLanes, partner: str, started: list[tuple[str, bool]], release: asyncio.Event) -> None:
    async with lanes.slot(partner) as waited:
        started.append((partner, waited))
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_partner_at_its_limit_waits_while_the_others_go_on() -> None:
    """With one send per partner, a second send to a busy partner waits (and says so) while another partner's runs."""
    lanes = PartnerLanes(1)
    started: list[tuple[str, bool]] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(lanes, partner, started, release)) for partner in ("slow", "slow", "fast")]
    await _settle()
    assert started == [("slow", False), ("fast", False)]
    release.set()
    await asyncio.gather(*tasks)
    assert started[2] == ("slow", True)
