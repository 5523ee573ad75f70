"""Maintenance: recovery (re-queueing what the queue lost) and the retention purge, each a supervised loop."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from accesspoint.msh.context import Context
from accesspoint.store import Direction, PurgeReport, StoreUnavailable
from accesspoint.store import Retention as StoreRetention
from accesspoint.store.queue import QueueUnavailable
from pmode import Binding

log = logging.getLogger("accesspoint.msh")


class Maintenance:
    """Keeps the queue in step with the database and the store within each P-Mode's retention."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def requeue(self, idle: timedelta | None = None) -> int:
        """Queue the outgoing messages that are due (and untouched for ``idle``, when given); how many."""
        ctx = self.ctx
        queued = 0
        for message_id in await ctx.store.recoverable(now=ctx.clock.now(), idle=idle):
            message = await ctx.store.get(Direction.OUT, message_id)
            route = None if message is None else ctx.agreements.route_of(message)
            if route is not None and route.pmode.binding is Binding.PULL:
                continue  # the partner pulls it; no worker pushes it
            await ctx.queue.put(message_id)
            queued += 1
        return queued

    async def recover(self) -> None:
        """Re-queue what is due at start, then every lease what stayed untouched for a whole lease.

        The queue can lose an entry whose message still needs sending: a retry this process scheduled before it
        was killed and restarted, a lease that had not run out at the restart, an entry a dead instance held.
        The database knows what is due (a duplicate entry is harmless: the claim decides who sends).
        """
        ctx = self.ctx
        idle: timedelta | None = None
        while True:
            try:
                await self.requeue(idle=idle)
                idle = ctx.settings.lease
            except (StoreUnavailable, QueueUnavailable) as exc:
                # Everything due stays due in the database: the next round (a lease on) queues it.
                log.warning("re-queueing what is due failed (%s); again in %s", exc, ctx.settings.lease)
            await ctx.clock.sleep_until(ctx.clock.now() + ctx.settings.lease)

    async def purge_periodically(self) -> None:
        """Purge every ``retention.interval``."""
        ctx = self.ctx
        while True:
            await ctx.clock.sleep_until(ctx.clock.now() + ctx.settings.purge_interval)
            await self.purge()

    async def purge(self, now: datetime | None = None) -> PurgeReport:
        """Delete what each P-Mode's retention no longer keeps: payloads, then messages, then evidence."""
        ctx = self.ctx
        now = now or ctx.clock.now()
        retention = {
            p.id: StoreRetention(payloads=p.retention.payloads, messages=p.retention.messages)
            for p in ctx.agreements.current
        }
        purged = await ctx.store.purge(now=now, retention=retention)
        evidence = await ctx.store.purge_evidence(now=now)
        report = PurgeReport(payloads=purged.payloads, messages=purged.messages, evidence=evidence.evidence)
        if report != PurgeReport():
            log.info("retention: purged %s", report)
        # Delivered webhook events and jobs after their retention, and the answers kept for submission retries.
        events = await ctx.webhooks.purge(now)
        answers = await ctx.idempotency.purge(now=now)
        if events or answers:
            log.info("retention: purged %d settled outbox event(s), %d idempotency key(s)", events, answers)
        return report
