"""Time as a parameter: the system clock for service, a manual one so tests run schedules in milliseconds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the store and the queues read the time and wait for it."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once that much time has passed on this clock."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        await asyncio.sleep(max(seconds, 0.0))


class ManualClock:
    """A clock that moves only when told to; sleepers wake as soon as ``advance`` passes their time."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._moved = asyncio.Condition()

    def now(self) -> datetime:
        """The time this clock was last set to."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced past now + seconds."""
        until = self._now + timedelta(seconds=seconds)
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= until)

    async def advance(self, delta: timedelta) -> None:
        """Move the clock forward and wake whoever is sleeping past the new time."""
        async with self._moved:
            self._now += delta
            self._moved.notify_all()
