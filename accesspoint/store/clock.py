"""Time as a parameter: the system clock for service, a manual one so tests run schedules in milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    """Where the store and the queues read the time and wait for it."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once this clock has reached when (at once if it already has)."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        """Sleep for real."""
        await asyncio.sleep(max((when - self.now()).total_seconds(), 0.0))


class ManualClock:
    """A clock that moves only when told to; sleepers wake as soon as ``advance`` passes their time."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._moved = asyncio.Condition()

    def now(self) -> datetime:
        """The time this clock was last set to."""
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        """Wait until the clock has been advanced to when or past it."""
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= when)

    async def advance(self, delta: timedelta) -> None:
        """Move the clock forward and wake whoever is sleeping past the new time."""
        async with self._moved:
            self._now += delta
            self._moved.notify_all()


async def first_of(*waits: Coroutine[Any, Any, object]) -> None:
    """Return when the first of the coroutines finishes, cancelling the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
