"""The transactional outbox: events to tell the backend (webhooks) or to act on later, kept in the database.

- An event is written in the transaction of the move that causes it (``EventHook`` rides on the store's insert
  or move), one row per *sink*: a webhook, or a job of this access point. No move without its events, no event
  without its move.
- Each sink's events go out one at a time in the order they were written. ``claim`` leases the oldest pending
  events of a sink to one instance for ``lease``; another instance sees the head leased and leaves the sink alone,
  so a cluster delivers each event once, unless the instance holding it dies mid-delivery: then the lease runs
  out and another delivers it again (at least once; the ``event_id`` stays the same, receivers deduplicate on it).
- A failed delivery waits its backoff (``available_at``) and blocks the events behind it, as the order demands;
  after the sink's last attempt it is settled as ``dropped``. Settled rows are purged after their retention.
- A sink of independent jobs (the replies to check) needs no order: claimed ``ordered=False``, any due event no
  other instance holds is taken, a failed one waits its backoff alone, and its dispatcher runs several at once.

``Dispatcher`` is that loop for one sink: claim, deliver, settle, wait for a wake-up or the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, delete, func, insert, or_, select, update

from accesspoint.store import schema
from accesspoint.store.clock import Clock, first_of
from accesspoint.store.db import Database, StoreUnavailable
from accesspoint.store.ops import Also
from accesspoint.store.records import StoredMessage
from accesspoint.store.shield import Shield

log = logging.getLogger("accesspoint.store.outbox")

O = schema.outbox  # noqa: E741 (the table, as M is messages)

_Result = TypeVar("_Result")

DELIVERED = "delivered"
DROPPED = "dropped"
PURGE_BATCH = 500


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to write: its kind, its JSON data and the sinks that get it (none: nothing is written)."""

    kind: str
    data: Mapping[str, Any]
    sinks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One sink's copy of an event, as claimed; ``body`` is what is delivered, the same on every attempt."""

    pk: int
    event_id: str
    sink: str
    kind: str
    body: str
    created_at: datetime
    attempts: int
    lease_owner: str | None
    lease_until: datetime | None


def event_body(event_id: str, kind: str, at: datetime, data: Mapping[str, Any]) -> str:
    """The JSON document delivered: ``{"id", "event", "at", "data"}``."""
    return json.dumps({"id": event_id, "event": kind, "at": at.isoformat(), "data": dict(data)})


def event_rows(
    events: Sequence[NewEvent], *, now: datetime, new_id: Callable[[], str] | None = None
) -> list[dict[str, Any]]:
    """The outbox rows of events: one per event and sink, the event's id (a fresh one each) shared by its sinks."""
    rows: list[dict[str, Any]] = []
    for event in events:
        event_id = new_id() if new_id is not None else str(uuid.uuid4())
        body = event_body(event_id, event.kind, now, event.data)
        rows += [
            {
                "event_id": event_id,
                "sink": sink,
                "kind": event.kind,
                "body": body,
                "created_at": now,
                "available_at": now,
                "attempts": 0,
            }
            for sink in event.sinks
        ]
    return rows


def write_events(
    connection: Connection, events: Sequence[NewEvent], *, now: datetime, new_id: Callable[[], str] | None = None
) -> list[str]:
    """Insert the events in the caller's transaction; their event ids (one per event, shared by its sinks)."""
    rows = event_rows(events, now=now, new_id=new_id)
    if rows:
        connection.execute(insert(O), rows)
    return list(dict.fromkeys(row["event_id"] for row in rows))


class EventHook:
    """A TransactionHook that writes the events ``make`` builds from the message as inserted or moved.

    ``make`` runs before the write, with the message as the write will leave it: an event carries the message
    exactly as that move left it.
    """

    def __init__(
        self,
        make: Callable[[StoredMessage], Sequence[NewEvent]],
        *,
        now: datetime,
        wake: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self._make = make
        self._now = now
        self._wake = wake
        self._sinks: list[str] = []

    def rows(self, message: StoredMessage) -> list[Also]:
        """The outbox rows of the events built from message."""
        events = self._make(message)
        self._sinks = [sink for event in events for sink in event.sinks]
        return [Also("outbox", row) for row in event_rows(events, now=self._now)]

    def committed(self) -> None:
        """Wake the dispatchers of the sinks written to."""
        if self._wake is not None and self._sinks:
            self._wake(self._sinks)


class Outbox:
    """The outbox table over one database, as seen by one instance (the owner of the leases it takes)."""

    def __init__(self, database: Database, *, instance: str) -> None:
        self.db = database
        self.instance = instance
        self._shield = Shield()

    async def add(self, events: Sequence[NewEvent], *, now: datetime) -> list[str]:
        """Write events in a transaction of their own (for events no move causes); their ids."""
        return await self._run(lambda connection: write_events(connection, events, now=now))

    async def adopt(self, sink: str, events: Sequence[tuple[str, str, str]], *, now: datetime) -> int:
        """Take in events made elsewhere as (event id, kind, body), in that order, skipping ids the sink has;
        how many were new (for importing an older outbox: several instances may import the same files)."""

        def insert_new(connection: Connection) -> int:
            ids = [event_id for event_id, _kind, _body in events]
            known = set(
                connection.execute(select(O.c.event_id).where(O.c.sink == sink, O.c.event_id.in_(ids))).scalars()
            )
            rows = [
                {"event_id": event_id, "sink": sink, "kind": kind, "body": body, "created_at": now,
                 "available_at": now, "attempts": 0}
                for event_id, kind, body in events
                if event_id not in known
            ]  # fmt: skip
            if rows:
                connection.execute(insert(O), rows)
            return len(rows)

        if not events:
            return 0
        return await self._run(insert_new)

    async def claim(
        self, sink: str, *, now: datetime, lease: timedelta, limit: int = 20, ordered: bool = True
    ) -> list[OutboxEvent]:
        """Lease up to limit of the sink's oldest pending events to this instance, in order.

        Empty when the sink has nothing due, its head waits out a backoff, or another instance holds its head.
        Unordered (a sink of independent jobs), the oldest due events no other instance holds, whatever is ahead.
        """

        def take_any(connection: Connection) -> list[OutboxEvent]:
            # SKIP LOCKED (PostgreSQL): instances claiming at once take different events instead of queueing.
            pending = (O.c.sink == sink, O.c.settled_at.is_(None), O.c.available_at <= now)
            due = connection.execute(
                select(O.c.id)
                .where(*pending, _free_for(self.instance, now))
                .order_by(O.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).scalars()
            return _lease(connection, list(due))

        def _lease(connection: Connection, wanted: list[int]) -> list[OutboxEvent]:
            if not wanted:
                return []
            rows = connection.execute(
                update(O)
                .where(O.c.id.in_(wanted), O.c.settled_at.is_(None), _free_for(self.instance, now))
                .values(lease_owner=self.instance, lease_until=now + lease)
                .returning(*O.c)
            ).all()
            return sorted((_event(row) for row in rows), key=lambda event: event.pk)

        def take(connection: Connection) -> list[OutboxEvent]:
            # FOR UPDATE in id order (PostgreSQL; SQLite serialises writers anyway): two instances claiming the
            # same sink queue on the head row instead of deadlocking, and the second then sees the first's lease.
            head = connection.execute(
                select(O.c.id, O.c.available_at, O.c.lease_owner, O.c.lease_until)
                .where(O.c.sink == sink, O.c.settled_at.is_(None))
                .order_by(O.c.id)
                .limit(limit)
                .with_for_update()
            ).all()
            if not head or head[0].available_at > now or _held_by_other(head[0], self.instance, now):
                return []
            wanted: list[int] = []
            for row in head:
                if row.available_at > now or _held_by_other(row, self.instance, now):
                    break
                wanted.append(row.id)
            return _lease(connection, wanted)

        return await self._run(take if ordered else take_any)

    async def delivered(self, event: OutboxEvent, *, now: datetime) -> bool:
        """Settle a delivered event; False when this instance no longer held it (another delivered it too)."""
        values = {"settled_at": now, "outcome": DELIVERED, "attempts": O.c.attempts + 1}
        return await self._settle(event, values)

    async def failed(self, event: OutboxEvent, *, now: datetime, retry_at: datetime | None, error: str) -> bool:
        """A failed attempt: try again at retry_at, or, when None, give up (settled as dropped)."""
        values: dict[str, Any] = {"attempts": O.c.attempts + 1, "last_error": error[:500]}
        if retry_at is None:
            values |= {"settled_at": now, "outcome": DROPPED}
        else:
            values["available_at"] = retry_at
        return await self._settle(event, values)

    async def due_now(self, sink: str, *, now: datetime) -> int:
        """Make the sink's events that wait out a backoff due now (a start tries them at once); how many."""
        statement = (
            update(O)
            .where(O.c.sink == sink, O.c.settled_at.is_(None), O.c.available_at > now)
            .values(available_at=now)
        )
        count: int = await self._run(lambda connection: connection.execute(statement).rowcount)
        return count

    async def release(self, sink: str) -> None:
        """Give back what this instance leased of the sink and did not settle (stopping, or the head failed)."""
        statement = (
            update(O)
            .where(O.c.sink == sink, O.c.settled_at.is_(None), O.c.lease_owner == self.instance)
            .values(lease_owner=None, lease_until=None)
        )
        await self._run(lambda connection: connection.execute(statement))

    async def pending(self, sink: str | None = None) -> int:
        """How many events wait (of one sink, or of all)."""
        query = select(func.count()).select_from(O).where(O.c.settled_at.is_(None))
        if sink is not None:
            query = query.where(O.c.sink == sink)
        return int(await self._run(lambda connection: connection.execute(query).scalar_one()))

    async def events(self, sink: str) -> list[tuple[OutboxEvent, str | None]]:
        """Every row of a sink, oldest first, with its outcome (None while pending): for tests and operators."""
        query = select(O).where(O.c.sink == sink).order_by(O.c.id)
        rows = await self._run(lambda connection: connection.execute(query).all())
        return [(_event(row), row.outcome) for row in rows]

    async def purge(self, *, now: datetime, keep: timedelta) -> int:
        """Delete events settled longer than keep ago, in batches; how many."""
        old = select(O.c.id).where(O.c.settled_at <= now - keep).limit(PURGE_BATCH)
        total = 0
        while True:
            count: int = await self._run(
                lambda connection: connection.execute(delete(O).where(O.c.id.in_(old.scalar_subquery()))).rowcount
            )
            total += count
            if count < PURGE_BATCH:
                return total

    async def close(self) -> None:
        """Let operations whose callers were cancelled finish."""
        await self._shield.drain()

    async def _settle(self, event: OutboxEvent, values: dict[str, Any]) -> bool:
        statement = (
            update(O)
            .where(O.c.id == event.pk, O.c.settled_at.is_(None), O.c.lease_owner == self.instance)
            .values(lease_owner=None, lease_until=None, **values)
        )
        count: int = await self._run(lambda connection: connection.execute(statement).rowcount)
        return count > 0

    async def _run(self, work: Callable[[Connection], _Result]) -> _Result:
        return await self._shield.run(self.db.run(work))


def _held_by_other(row: Any, instance: str, now: datetime) -> bool:
    return row.lease_owner not in (None, instance) and row.lease_until is not None and row.lease_until >= now


def _free_for(instance: str, now: datetime) -> Any:
    return or_(O.c.lease_owner.is_(None), O.c.lease_owner == instance, O.c.lease_until < now)


def _event(row: Row[Any]) -> OutboxEvent:
    return OutboxEvent(
        pk=row.id,
        event_id=row.event_id,
        sink=row.sink,
        kind=row.kind,
        body=row.body,
        created_at=row.created_at,
        attempts=row.attempts,
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
    )


class DeliveryFailed(Exception):
    """A delivery attempt did not succeed (the reason is logged and kept); the event is tried again later."""


class Dispatcher:
    """Delivers one sink's events with ``deliver``, in order, at least once, until cancelled.

    ``retry(attempts)`` is the wait after that many failed attempts, or None to give up. ``timeout`` bounds one
    delivery; an event is only handed to ``deliver`` while its lease has that much left, so no lease runs out
    mid-delivery (leave room: ``lease`` well above ``timeout``). The loop survives the database going away: it
    backs off and tries again, and what it held is redelivered once its lease ran out.

    With ``concurrency`` above 1 the sink is one of independent jobs: claimed unordered, up to ``concurrency``
    deliveries run at once (each a job that mostly waits on the database or a partner), and a failure holds back
    only its own event.
    """

    def __init__(
        self,
        outbox: Outbox,
        sink: str,
        deliver: Callable[[OutboxEvent], Awaitable[None]],
        *,
        clock: Clock,
        lease: timedelta,
        timeout: timedelta,
        retry: Callable[[int], timedelta | None],
        poll: timedelta = timedelta(seconds=1),
        batch: int = 20,
        concurrency: int = 1,
    ) -> None:
        if lease <= timeout:
            raise ValueError("the lease must be longer than the delivery timeout")
        if concurrency < 1:
            raise ValueError("at least one delivery at a time")
        self._concurrency = concurrency
        self.outbox = outbox
        self.sink = sink
        self._deliver = deliver
        self._clock = clock
        self._lease = lease
        self._timeout = timeout
        self._retry = retry
        self._poll = poll
        self._batch = batch
        self._woken = asyncio.Event()
        self._retry_at: datetime | None = None  # when the head that failed last is due again

    def wake(self) -> None:
        """Look for new events now rather than at the next poll."""
        self._woken.set()

    async def run(self) -> None:
        """Deliver until cancelled; between rounds wait for a wake-up, the poll interval or a head's backoff.

        At its start it tries at once what waits out a backoff: a restart (after the receiving end was fixed,
        say) is when an operator expects the backlog to move.
        """
        failures = 0
        try:
            await self.outbox.due_now(self.sink, now=self._clock.now())
        except StoreUnavailable as exc:
            log.warning("outbox %s: the database is unavailable (%s)", self.sink, exc)
        while True:
            self._woken.clear()
            try:
                handled = await self.round()
                failures = 0
            except StoreUnavailable as exc:
                failures += 1
                handled = 0
                log.warning("outbox %s: the database is unavailable (%s); trying again", self.sink, exc)
            if handled and (self._retry_at is None or self._concurrency > 1):
                continue  # independent jobs: a failed one does not hold back those due now
            until = self._clock.now() + self._poll * min(2**failures, 30)
            if self._retry_at is not None:
                until, self._retry_at = min(until, self._retry_at), None
            await first_of(self._woken.wait(), self._clock.sleep_until(until))

    async def round(self) -> int:
        """Claim a batch and deliver it; how many events were settled (0: nothing to do now)."""
        if self._concurrency > 1:
            return await self._round_unordered()
        events = await self.outbox.claim(self.sink, now=self._clock.now(), lease=self._lease, limit=self._batch)
        settled = 0
        try:
            for event in events:
                now = self._clock.now()
                assert event.lease_until is not None
                if now + self._timeout >= event.lease_until:
                    break  # too little lease left for another delivery: claim again (and renew)
                try:
                    await asyncio.wait_for(self._deliver(event), self._timeout.total_seconds())
                except (DeliveryFailed, TimeoutError) as exc:
                    reason = str(exc) or type(exc).__name__
                    await self._failed(event, reason)
                    settled += 1
                    break  # the head waits out its backoff; the events behind it wait with it
                await self.outbox.delivered(event, now=self._clock.now())
                settled += 1
        finally:
            if len(events) > settled:
                await _quietly(self.outbox.release(self.sink))
        return settled

    async def _round_unordered(self) -> int:
        """A round of independent jobs: at most ``concurrency`` deliveries at once, each settled on its own."""
        limit = max(self._batch, self._concurrency)
        now = self._clock.now()
        events = await self.outbox.claim(self.sink, now=now, lease=self._lease, limit=limit, ordered=False)
        slots = asyncio.Semaphore(self._concurrency)
        retries: list[datetime] = []

        async def one(event: OutboxEvent) -> int:
            async with slots:
                assert event.lease_until is not None
                if self._clock.now() + self._timeout >= event.lease_until:
                    return 0  # too little lease left: given back below, claimed (and renewed) next round
                try:
                    await asyncio.wait_for(self._deliver(event), self._timeout.total_seconds())
                except (DeliveryFailed, TimeoutError) as exc:
                    retry_at = await self._failed_alone(event, str(exc) or type(exc).__name__)
                    if retry_at is not None:
                        retries.append(retry_at)
                    return 1
                await self.outbox.delivered(event, now=self._clock.now())
                return 1

        settled = 0
        try:
            # Every job ends before the round does (a failing one does not leave the others running unowned).
            results = await asyncio.gather(*(one(event) for event in events), return_exceptions=True)
            settled = sum(result for result in results if isinstance(result, int))
        finally:
            if len(events) > settled:
                await _quietly(self.outbox.release(self.sink))
            if retries:
                self._retry_at = min(retries)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return settled

    async def _failed_alone(self, event: OutboxEvent, reason: str) -> datetime | None:
        """Record a failed job without holding back the others; when it is due again."""
        await self._failed(event, reason)
        retry_at, self._retry_at = self._retry_at, None
        return retry_at

    async def _failed(self, event: OutboxEvent, reason: str) -> None:
        attempts = event.attempts + 1
        delay = self._retry(attempts)
        now = self._clock.now()
        if delay is None:
            log.error("outbox %s: %s event %s dropped after %d attempts: %s", self.sink, event.kind,
                      event.event_id, attempts, reason)  # fmt: skip
        else:
            log.warning("outbox %s: %s event %s failed (%s); retry in %s", self.sink, event.kind,
                        event.event_id, reason, delay)  # fmt: skip
        retry_at = None if delay is None else now + delay
        await self.outbox.failed(event, now=now, retry_at=retry_at, error=reason)
        self._retry_at = retry_at


async def _quietly(operation: Awaitable[None]) -> None:
    with contextlib.suppress(StoreUnavailable):  # the leases run out by themselves
        await operation
