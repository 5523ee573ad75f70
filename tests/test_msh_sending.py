"""How many sends run at once: send.workers in all, send.per_partner to one receiving party."""

from __future__ import annotations

import asyncio

from accesspoint.msh.sending import SendLimits


async def _hold(limits: SendLimits, partner: str, started: list[str], release: asyncio.Event) -> None:
    async with limits.slot(partner):
        started.append(partner)
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_partner_at_its_limit_does_not_hold_the_others_back() -> None:
    """With 2 sends in all and 1 per partner, a second send to a busy partner waits without a slot: the other runs."""
    limits = SendLimits(2, 1)
    started: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(limits, partner, started, release)) for partner in ("slow", "slow", "fast")]
    await _settle()
    assert sorted(started) == ["fast", "slow"]
    release.set()
    await asyncio.gather(*tasks)
    assert sorted(started) == ["fast", "slow", "slow"]


async def test_the_total_bounds_every_partner_together() -> None:
    """With 2 sends in all, a third waits whatever its partner, and starts when one ends."""
    limits = SendLimits(2, 2)
    assert not limits.by_partner
    started: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(limits, partner, started, release)) for partner in ("a", "b", "c")]
    await _settle()
    assert started == ["a", "b"]
    release.set()
    await asyncio.gather(*tasks)
    assert started == ["a", "b", "c"]
