"""The send queue: which outgoing messages to try next, and when; the database decides who may send.

A queue entry is only a hint. Whoever takes one must still win ``MessageStore.claim`` (a compare-and-set)
before sending, so an entry delivered twice (redelivery after a crash, a duplicate put, the recovery sweep)
never causes a second send. ``claim_next`` is that loop; ``Claims`` is the same for workers that must outlive
an outage: the database is the record of what is due, the queue only wakes and spreads the work, so a queue
that is away (or came back empty) costs latency, never a message.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from accesspoint.store.clock import Clock, first_of
from accesspoint.store.db import StoreUnavailable
from accesspoint.store.messages import MessageStore
from accesspoint.store.records import StoredMessage
from accesspoint.store.states import Direction

log = logging.getLogger("accesspoint.store.queue")


class QueueUnavailable(Exception):
    """The shared queue cannot be reached now (Redis down or restarting); the database still knows what is due."""


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


@dataclass(frozen=True, slots=True)
class Claim:
    """A message this instance won the claim of; ``item`` is the queue entry it came from (None: from the database)."""

    item: QueueItem | None
    message: StoredMessage


class Claims:
    """The next message for a send worker, through outages: ``next`` never raises for a database or queue away.

    - The queue hands out an entry; the claim in the database decides. Lost claims are acked and skipped.
    - The database away (StoreUnavailable): the entry is kept in hand and its claim retried with backoff, so it
      is not lost with an in-process queue, and a Redis entry is not left for another consumer's idle timeout.
    - The queue away (QueueUnavailable): the worker asks the database what is due (``recoverable``) and claims
      from that, polling every ``poll``, until the queue answers again; ``skip`` names the due messages no push
      worker takes (those a partner pulls).
    """

    def __init__(
        self,
        queue: SendQueue,
        store: MessageStore,
        *,
        clock: Clock,
        lease: timedelta,
        poll: timedelta = timedelta(seconds=1),
        backoff_max: timedelta = timedelta(seconds=10),
        skip: Callable[[StoredMessage], bool] | None = None,
    ) -> None:
        self.queue = queue
        self.store = store
        self._clock = clock
        self._lease = lease
        self._poll = poll
        self._backoff_max = backoff_max
        self._skip = skip

    async def next(self, admit: Callable[[QueueItem], Awaitable[bool]] | None = None) -> Claim:
        """Wait for a message this instance may send, and claim it.

        ``admit``, asked of each entry before its claim, may keep the entry for later instead (it answers False
        and ``take`` claims it then): the send pool defers a saturated partner's entries that way, unclaimed.
        """
        failures = 0
        item: QueueItem | None = None
        while True:
            try:
                if item is None:
                    item = await self.queue.get()
                if admit is not None and not await admit(item):
                    item, failures = None, 0
                    continue
                message = await self.store.claim(item.message_id, now=self._clock.now(), lease=self._lease)
            except QueueUnavailable as exc:
                failures += 1
                log.warning("the send queue is unavailable (%s); taking due messages from the database", exc)
                claim = await self._from_database()
                if claim is not None:
                    return claim
                await self._pause(failures)
                continue
            except StoreUnavailable as exc:
                failures += 1
                log.warning("the database is unavailable (%s); claiming again in a moment", exc)
                await self._pause(failures)
                continue
            if message is not None:
                return Claim(item, message)
            await self._ack(item)
            item, failures = None, 0

    async def take(self, item: QueueItem) -> Claim | None:
        """Claim a kept entry's message; None (the entry acked) when it is no longer this instance's to send.

        StoreUnavailable passes: the caller keeps the entry and tries again later.
        """
        message = await self.store.claim(item.message_id, now=self._clock.now(), lease=self._lease)
        if message is None:
            await self._ack(item)
            return None
        return Claim(item, message)

    async def done(self, claim: Claim) -> None:
        """Acknowledge the claim's queue entry, if any; a queue away leaves it to its redelivery (claimed or not)."""
        await self._ack(claim.item)

    async def _ack(self, item: QueueItem | None) -> None:
        if item is None:
            return
        try:
            await self.queue.ack(item)
        except QueueUnavailable as exc:
            log.info("acknowledging %s failed (%s): its redelivery will find it settled", item.message_id, exc)

    async def _from_database(self) -> Claim | None:
        try:
            for message_id in await self.store.recoverable(now=self._clock.now(), limit=20):
                if self._skip is not None:
                    found = await self.store.get(Direction.OUT, message_id)
                    if found is None or self._skip(found):
                        continue
                message = await self.store.claim(message_id, now=self._clock.now(), lease=self._lease)
                if message is not None:
                    return Claim(None, message)
        except StoreUnavailable as exc:
            log.warning("the database is unavailable too (%s)", exc)
        return None

    async def _pause(self, failures: int) -> None:
        wait = min(self._poll * 2 ** min(failures - 1, 10), self._backoff_max)
        await self._clock.sleep_until(self._clock.now() + wait)
