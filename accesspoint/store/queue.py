"""The send queue: which outgoing messages to try next, and when; the database decides who may send.

A queue entry is only a hint. Whoever takes one must still win ``MessageStore.claim`` (a compare-and-set)
before sending, so an entry delivered twice (redelivery after a crash, a duplicate put, the recovery sweep)
never causes a second send. ``claim_next`` is that loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from accesspoint.store.clock import Clock, first_of
from accesspoint.store.messages import MessageStore
from accesspoint.store.records import StoredMessage


@dataclass(frozen=True, slots=True)
class QueueItem:
    """An entry taken from a queue; ``token`` identifies it to ``ack``."""

    message_id: str
    token: str


class SendQueue(Protocol):
    """Outgoing MessageIds, each due now or at a given time."""

    async def put(self, message_id: str, *, due: datetime | None = None) -> None:
        """Enqueue message_id, to be handed out at due (now when None)."""
        ...

    async def get(self) -> QueueItem:
        """Wait for the next due entry; it stays pending until acked."""
        ...

    async def ack(self, item: QueueItem) -> None:
        """Forget an entry once its message was claimed, or found not to need sending."""
        ...

    async def close(self) -> None:
        """Release what the queue holds (connections, waiters)."""
        ...


class MemorySendQueue:
    """The in-process queue for a single instance; after a restart ``MessageStore.recoverable`` refills it."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[datetime, int, str]] = []
        self._due: dict[str, datetime] = {}
        self._order = itertools.count()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    async def put(self, message_id: str, *, due: datetime | None = None) -> None:
        """Enqueue message_id; if it is already waiting, the earlier of the two times wins."""
        when = due or self._clock.now()
        known = self._due.get(message_id)
        if known is not None and known <= when:
            return
        # The older heap entry stays behind and is skipped when popped (lazy deletion).
        self._due[message_id] = when
        heapq.heappush(self._heap, (when, next(self._order), message_id))
        self._changed.set()

    async def get(self) -> QueueItem:
        """Wait until the earliest entry is due on the clock, or a new entry arrives, and hand it out."""
        while True:
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                heapq.heappop(self._heap)
            self._changed.clear()
            if self._heap:
                when, order, message_id = self._heap[0]
                if when <= self._clock.now():
                    heapq.heappop(self._heap)
                    del self._due[message_id]
                    return QueueItem(message_id, str(order))
                await first_of(self._changed.wait(), self._clock.sleep_until(when))
            else:
                await self._changed.wait()

    async def ack(self, item: QueueItem) -> None:
        """Nothing to do: an in-process entry is gone once handed out, and a crash loses the process anyway."""

    async def close(self) -> None:
        """Nothing to release."""


async def claim_next(
    queue: SendQueue, store: MessageStore, *, clock: Clock, lease: timedelta
) -> tuple[QueueItem, StoredMessage]:
    """Take entries until one whose message this instance wins the claim of; entries it loses are acked.

    The caller sends the message, records the outcome with ``store.transition`` (re-queueing with ``put``
    when a retry is due) and then acks the item, so a crash before the ack only leads to a redelivery that
    the next claim turns away or takes over once the lease runs out.
    """
    while True:
        item = await queue.get()
        message = await store.claim(item.message_id, now=clock.now(), lease=lease)
        if message is not None:
            return item, message
        await queue.ack(item)
