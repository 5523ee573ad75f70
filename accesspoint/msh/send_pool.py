"""The send pool: workers per receiving party, started as its due messages arrive and ended when it has none.

One intake takes the queue's entries and claims them (``store.queue.Claims``: the database's claim decides who
sends; an outage of the queue or the database is ridden out there). A claimed message goes to its partner's
*lane* (partners are told apart by the receiving party, ``to_party``); a lane whose messages have no idle worker
gets a new one, up to the partner's maximum and ``send.workers`` in all. A worker sends its lane's messages one
after another and ends when the lane is empty, unless the lane would then hold fewer than its minimum: those wait
on an event, never polling, so an idle access point runs no worker that wakes.

Fair share. When every worker is taken and another partner has due messages, ``send_plan.plan`` says how many
workers each partner should have; a worker whose partner is above its share ends after its current send and its
place goes to the partner waiting longest. A partner that already has a claimed message waiting for each of its
workers gets its further queue entries *kept unclaimed* (``Claims.next``'s ``admit``): the intake goes on to
other partners' entries instead of stalling behind a slow partner's burst, and the lane claims them when a worker
is free (``Claims.take``). Unknown entries are looked up (one read by MessageId) only while claimed messages fill
half the room and some lane is full.

Restarts. Nothing here is the record: a claimed message waiting in a lane holds a lease in the database (renewed
before it is sent when it waited half a lease), and an entry kept unclaimed is still due there. A stop loses the
lanes; the recovery sweep re-queues what is due (a Redis entry not acknowledged is handed out again), and the
claim, a compare-and-set, keeps every message sent at most once per lease.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from accesspoint.msh.metrics import MshMetrics
from accesspoint.msh.send_plan import Limits, Load, plan
from accesspoint.msh.sending import PAUSE_AFTER_FAULT, SendWorkers
from accesspoint.store import Direction, StoredMessage, StoreUnavailable
from accesspoint.store.queue import Claim, QueueItem

log = logging.getLogger("accesspoint.msh.send_pool")

# Entries kept unclaimed for full lanes, at most (ids only): past it the intake waits for workers to catch up.
DEFERRED_LIMIT = 100_000
INTAKES = 4  # claims under way at once, at most (fewer with send.workers below 8)
HINTS_LIMIT = 65_536  # MessageId -> lane of messages already seen (retries), so they need no look-up


@dataclass(eq=False)
class Lane:
    """One receiving party's messages and workers."""

    key: str  # the receiving party ("" for none)
    label: str  # the partner's name in the P-Mode file: its limits and its metrics label
    limits: Limits
    # Both hold the pool's arrival number, so a worker takes the lane's messages in the order they came: a message
    # claimed after a full lane kept an older one unclaimed must not pass it (that starved kept ones under load).
    ready: deque[tuple[Claim, datetime, int]] = field(default_factory=deque)  # claimed, with when, for a worker
    deferred: deque[tuple[QueueItem, int]] = field(default_factory=deque)  # kept unclaimed while the lane is full
    workers: int = 0
    busy: int = 0
    idle: int = 0
    waiting_since: int | None = None  # the pool's turn when its backlog last began to wait unserved
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def backlog(self) -> int:
        """Due messages of this partner that no worker has taken yet (in this instance)."""
        return len(self.ready) + len(self.deferred)

    @property
    def full(self) -> bool:
        """A claimed message waits for each of its workers (or one, with none): more would only age their leases."""
        return len(self.ready) >= max(1, self.workers)

    def load(self) -> Load:
        """What ``send_plan.plan`` knows of it."""
        return Load(self.backlog, self.busy, self.limits, self.waiting_since)


class SendPool:
    """The intake (``run``, supervised) and the workers it starts per lane."""

    def __init__(
        self,
        workers: SendWorkers,
        *,
        total: int,
        limits: Limits,
        partners: Mapping[str, Limits],
        metrics: MshMetrics | None = None,
    ) -> None:
        self.sender = workers
        self.ctx = workers.ctx
        self.total = total
        self.limits = limits
        self.partners = partners
        self.lanes: dict[str, Lane] = {}
        self.running = 0  # workers in all lanes
        self._ready = 0  # claimed messages waiting in lanes
        self._deferred = 0  # entries kept unclaimed in lanes
        self._arrivals = itertools.count()  # the order messages reach their lanes in
        self._starved: set[str] = set()  # lanes with a backlog that no worker could be started for
        self._hints: OrderedDict[str, str] = OrderedDict()
        self._stopping = False
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._turns = itertools.count()  # the order lanes began to wait unserved (a clock's readings could tie)
        # A few intakes claim at once: a claim is a database write, and one at a time would bound the send rate by
        # the commit's latency; each idle one only waits on the queue.
        self.intakes = max(1, min(INTAKES, total // 2))
        if metrics is not None:
            metrics.refresh_with(self._report(metrics))

    # --- the intake ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Take due messages for the lanes, forever (a stop ends the workers too)."""
        self._stopping = False
        try:
            await asyncio.gather(*(self._intake() for _ in range(self.intakes)))
        finally:
            self._stopping = True  # workers ending now start no others
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._reset()

    async def _intake(self) -> None:
        while True:
            await self._room.wait()
            try:
                claim = await self.sender.claims.next(self._admit)
            except Exception:
                log.exception("taking the next message failed; trying again shortly")
                await asyncio.sleep(PAUSE_AFTER_FAULT)
                continue
            lane = self._lane_of(claim.message)
            lane.ready.append((claim, self.ctx.clock.now(), next(self._arrivals)))
            self._ready += 1
            self._arrived(lane)

    async def _admit(self, item: QueueItem) -> bool:
        """Claim this entry now (True), or keep it unclaimed in its lane because the lane is full (False)."""
        # Most entries are claimed unseen: a look-up pays only once claimed messages fill half the room and a lane
        # is full, that is when claiming on would let one partner's burst close the room to the others.
        if self._ready * 2 < self.total or not any(lane.full for lane in self.lanes.values()):
            return True
        key = self._hints.get(item.message_id)
        if key is None:
            found = await self.ctx.store.get(Direction.OUT, item.message_id)
            if found is None:
                return True  # the claim decides (and acks it)
            lane = self._lane_of(found)
        else:
            known = self.lanes.get(key)
            if known is None:
                return True  # its lane is gone (it was idle): the claim makes it again
            lane = known
        if not lane.full:
            return True
        lane.deferred.append((item, next(self._arrivals)))
        self._deferred += 1
        self._arrived(lane)
        return False

    def _lane_of(self, message: StoredMessage) -> Lane:
        key = message.to_party or ""
        self._hint(message.message_id, key)
        lane = self.lanes.get(key)
        if lane is None:
            route = self.ctx.agreements.route_of(message)
            lane = self._new_lane(key, None if route is None else route.partner.name)
        return lane

    def _new_lane(self, key: str, label: str | None) -> Lane:
        name = label or "unknown"
        lane = self.lanes[key] = Lane(key, name, self.partners.get(name, self.limits))
        return lane

    def _hint(self, message_id: str, key: str) -> None:
        if len(self._hints) >= HINTS_LIMIT:
            self._hints.popitem(last=False)
        self._hints[message_id] = key

    # --- the workers --------------------------------------------------------------------------------------------

    def _arrived(self, lane: Lane) -> None:
        """A message joined the lane: an idle worker takes it, or a new one, or the lane waits for its share."""
        if lane.waiting_since is None:
            lane.waiting_since = next(self._turns)
        self._update_room()
        if lane.idle:
            lane.wake.set()
        elif not self._start(lane) and lane.workers < lane.limits.maximum:
            self._starved.add(lane.key)

    def _start(self, lane: Lane) -> bool:
        if self._stopping or self.running >= self.total or lane.workers >= lane.limits.maximum:
            return False
        lane.workers += 1
        self.running += 1
        task = asyncio.create_task(self._work(lane), name=f"send worker {lane.label}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _work(self, lane: Lane) -> None:
        try:
            while not self._over_share(lane):
                job = await self._next_job(lane)
                if job is None:
                    return
                claim, claimed_at = job
                lane.busy += 1
                try:
                    # A message that waited half a lease in its lane has its lease renewed before it is sent.
                    waited = self.ctx.clock.now() - claimed_at >= self.ctx.settings.lease / 2
                    await self.sender.attempt(claim, renew=waited)
                finally:
                    lane.busy -= 1
        except Exception:
            # attempt() settles its own faults; what is left is a bug here: the lane gets a new worker.
            log.exception("a send worker of %s failed", lane.label)
            await asyncio.sleep(PAUSE_AFTER_FAULT)
        finally:
            lane.workers -= 1
            self.running -= 1
            self._ended(lane)

    async def _next_job(self, lane: Lane) -> tuple[Claim, datetime] | None:
        """The lane's next claimed message; None when the worker should end (the lane is empty, above its minimum)."""
        while True:
            if lane.ready and not (lane.deferred and lane.deferred[0][1] < lane.ready[0][2]):
                ready, claimed_at, _ = lane.ready.popleft()
                self._ready -= 1
                self._taken(lane)
                return ready, claimed_at
            if lane.deferred:
                item, arrival = lane.deferred.popleft()
                self._deferred -= 1
                self._taken(lane)
                try:
                    claim = await self.sender.claims.take(item)
                except StoreUnavailable as exc:  # kept for the next try; the database decides when it is back
                    log.warning("claiming %s failed (%s); again shortly", item.message_id, exc)
                    lane.deferred.appendleft((item, arrival))
                    self._deferred += 1
                    await asyncio.sleep(PAUSE_AFTER_FAULT)
                    continue
                if claim is not None:
                    return claim, self.ctx.clock.now()
                continue
            if lane.workers > lane.limits.minimum or self._over_share(lane):
                return None
            lane.wake.clear()
            lane.idle += 1
            try:
                await lane.wake.wait()
            finally:
                lane.idle -= 1

    def _taken(self, lane: Lane) -> None:
        """A worker took one of the lane's messages: what is left waits from now, behind the lanes not served."""
        lane.waiting_since = next(self._turns) if lane.backlog else None
        self._update_room()

    def _over_share(self, lane: Lane) -> bool:
        """True when another partner waits for a worker and this lane has more than its fair share."""
        self._starved = {key for key in self._starved if key in self.lanes and self.lanes[key].backlog}
        if not self._starved or lane.key in self._starved:
            return False
        share = plan({key: other.load() for key, other in self.lanes.items()}, self.total)
        return lane.workers > share[lane.key]

    def _ended(self, lane: Lane) -> None:
        """A worker ended: its place goes to a starved lane (the one waiting longest first), or to its own lane
        when a message is left there; an empty lane without workers is forgotten."""
        waiting = sorted(
            (self.lanes[key] for key in self._starved if key in self.lanes and self.lanes[key].backlog),
            key=lambda other: (other.waiting_since or 0, other.key),
        )
        for other in waiting:
            if self._start(other):
                self._starved.discard(other.key)
        if lane.backlog and not lane.workers and not self._start(lane):
            self._starved.add(lane.key)
        if not lane.workers and not lane.backlog and self.lanes.get(lane.key) is lane:
            del self.lanes[lane.key]

    def _update_room(self) -> None:
        """The intake claims more while fewer than ``total`` claimed messages wait and the kept entries fit."""
        if self._ready < self.total and self._deferred < DEFERRED_LIMIT:
            self._room.set()
        else:
            self._room.clear()

    def _reset(self) -> None:
        self.lanes.clear()
        self._starved.clear()
        self.running = self._ready = self._deferred = 0
        self._room.set()

    # --- what it reports ------------------------------------------------------------------------------------

    def by_partner(self) -> Iterator[tuple[str, int, int]]:
        """(partner name, workers, backlog) summed over the lanes of each partner named in the P-Modes."""
        totals: dict[str, tuple[int, int]] = {}
        for lane in self.lanes.values():
            workers, backlog = totals.get(lane.label, (0, 0))
            totals[lane.label] = (workers + lane.workers, backlog + lane.backlog)
        for label, (workers, backlog) in sorted(totals.items()):
            yield label, workers, backlog

    def _report(self, metrics: MshMetrics) -> Callable[[], Awaitable[None]]:
        async def report() -> None:
            metrics.send_pool(self.by_partner())

        return report
