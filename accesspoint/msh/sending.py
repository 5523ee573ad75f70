"""Sending: take a due message from the queue, win its claim, send it, settle what came back.

The dispatcher is a supervised task that starts one task per send (as many as the backlog asks, within the
limits of ``send.workers`` and ``send.per_partner``). It survives a database or queue outage: a failure to
claim, to record an outcome or to acknowledge the queue entry is logged and it goes on after a pause (the
message stays due in the database, so the recovery sweep queues it again). What an attempt led to is reported to
``Settlement`` as an ``Outcome``; the retry policy lives in ``next_step``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.model import SignalMessage
from accesspoint.msh.context import Context
from accesspoint.msh.next_step import Action, Outcome
from accesspoint.msh.send_pipeline import SendPipeline, SpooledMessage
from accesspoint.msh.signals import Settlement
from accesspoint.msh.wire import spooled_chunks
from accesspoint.routing.outbound import RouteUnavailable
from accesspoint.security.policy import RevocationMode
from accesspoint.security.receipts import verify_receipt
from accesspoint.security.trust import CertificateUsage, TrustError, TrustFailure, validate_certificate
from accesspoint.store import Direction, EvidenceKind, QueueItem, StoredMessage, claim_next
from pmode import Route

log = logging.getLogger("accesspoint.msh")

PAUSE_AFTER_FAULT = 1.0  # seconds the dispatcher waits after the database or the queue failed under it


class SendLimits:
    """How many sends may run at once: ``total`` in all, ``per_partner`` to one receiving party.

    ``slot(partner)`` waits for the partner's slot first and only then for one of the total, so a partner at its
    limit holds none of the total while it waits.
    """

    def __init__(self, total: int, per_partner: int) -> None:
        self.total = asyncio.Semaphore(total)
        self.per_partner = per_partner
        self.by_partner = per_partner < total  # else the total alone bounds every partner
        self._lanes: dict[str | None, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def slot(self, partner: str | None) -> AsyncIterator[None]:
        """Hold a send slot for a message to partner."""
        lane = self._lanes.get(partner)
        if lane is None:
            lane = self._lanes[partner] = asyncio.Semaphore(self.per_partner)
        async with lane, self.total:
            yield


class SendWorkers:
    """Pushes outgoing messages: ``run`` takes due messages and sends each in a task of its own.

    Concurrency follows the backlog: a send starts for every due message, up to ``send.workers`` at once, so an
    idle instance runs none and a burst uses them all; a message never waits behind a free worker. With
    ``send.per_partner`` below ``send.workers``, each partner (the receiving party) gets at most that many at
    once, so a slow partner cannot hold every send: its messages wait, unclaimed, for one of its own slots.
    """

    def __init__(self, ctx: Context, pipeline: SendPipeline, settlement: Settlement) -> None:
        self.ctx = ctx
        self.pipeline = pipeline
        self.settlement = settlement
        settings = ctx.settings
        self.limits = SendLimits(settings.send_workers, settings.send_per_partner)
        # Entries taken from the queue but not sent yet (waiting for their partner's slot): bounded, so a slow
        # partner's backlog stays in the queue, not in this process.
        self._taken = asyncio.Semaphore(4 * settings.send_workers)
        self._running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """The dispatcher (one supervised task): take, start a send, repeat; a stop cancels the sends in flight."""
        try:
            while True:
                if not self.limits.by_partner:
                    await self.limits.total.acquire()
                    taken = await self._claim_next()
                    if taken is None:
                        self.limits.total.release()
                        continue
                    self._start(self._send_claimed(*taken))
                else:
                    await self._taken.acquire()
                    item = await self._take()
                    if item is None:
                        self._taken.release()
                        continue
                    self._start(self._send_in_lane(item))
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    def _start(self, send: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(send)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _claim_next(self) -> tuple[QueueItem, StoredMessage] | None:
        ctx = self.ctx
        try:
            return await claim_next(ctx.queue, ctx.store, clock=ctx.clock, lease=ctx.settings.lease)
        except Exception:
            log.exception("taking the next message failed; trying again shortly")
            await asyncio.sleep(PAUSE_AFTER_FAULT)
            return None

    async def _take(self) -> QueueItem | None:
        try:
            return await self.ctx.queue.get()
        except Exception:
            log.exception("taking the next queue entry failed; trying again shortly")
            await asyncio.sleep(PAUSE_AFTER_FAULT)
            return None

    async def _send_claimed(self, item: QueueItem, message: StoredMessage) -> None:
        try:
            await self._attempt(item, message)
        finally:
            self.limits.total.release()

    async def _send_in_lane(self, item: QueueItem) -> None:
        """Wait for a slot of the message's partner, then for a send slot, and only then claim it: a claim's lease
        starts when its send can."""
        ctx = self.ctx
        try:
            try:
                found = await ctx.store.get(Direction.OUT, item.message_id)
            except Exception:  # the claim decides: the entry comes back with the recovery sweep
                log.exception("looking up %s failed", item.message_id)
                return
            async with self.limits.slot(None if found is None else found.to_party):
                try:
                    message = await ctx.store.claim(item.message_id, now=ctx.clock.now(), lease=ctx.settings.lease)
                except Exception:
                    log.exception("claiming %s failed", item.message_id)
                    return
                if message is None:
                    await ctx.queue.ack(item)
                    return
                await self._attempt(item, message)
        finally:
            self._taken.release()

    async def _attempt(self, item: QueueItem, message: StoredMessage) -> None:
        ctx = self.ctx
        try:
            await self.send(message)
        except Exception as exc:
            # A bug or a broken stored message must not leave it in `sending` until its lease runs out.
            log.exception("sending %s failed unexpectedly", message.message_id)
            error = EbmsError(ErrorCode.OTHER, f"internal error: {type(exc).__name__}: {exc}")
            try:
                await self.settlement.failed(message, ctx.agreements.route_of(message), Outcome.UNSENDABLE, error)
            except Exception:  # the database itself: the lease runs out and the message is taken over
                log.exception("recording the failure of %s failed", message.message_id)
        try:
            await ctx.queue.ack(item)
        except Exception:  # the claim decides who sends: a redelivered entry is turned away
            log.exception("acknowledging %s failed", message.message_id)

    async def send(self, message: StoredMessage) -> None:
        """One attempt at a claimed message, from the checks before it to the settling of its answer."""
        ctx, settlement = self.ctx, self.settlement
        route = ctx.agreements.route_of(message)
        if route is None:
            gone = EbmsError(ErrorCode.PROCESSING_MODE_MISMATCH, f"P-Mode {message.pmode_id!r} is gone")
            await settlement.failed(message, None, Outcome.UNSENDABLE, gone)
            return
        decision = await settlement.settle(message, route, Outcome.CLAIMED)
        if decision.action is not Action.SEND:
            return
        if route.dynamic:  # endpoint and certificates from a route record or BDXL + SMP
            try:
                route = await ctx.routing.resolve(ctx.store, message, route, at=ctx.clock.now())
            except RouteUnavailable as exc:
                await settlement.settle(message, route, Outcome.TRANSIENT, detail=str(exc))
                return
            except EbmsError as exc:
                await settlement.failed(message, route, Outcome.REFUSED, exc)
                return
        endpoint = route.endpoint
        if endpoint is None:
            nowhere = EbmsError(ErrorCode.PROCESSING_MODE_MISMATCH, "the P-Mode names no endpoint")
            await settlement.failed(message, route, Outcome.UNSENDABLE, nowhere)
            return
        refused = await self._partner_refused(route)
        if refused is not None:
            reason = f"the partner's certificate is not trusted: {refused.reason}"
            if refused.failure is TrustFailure.REVOCATION_UNKNOWN:  # a responder that is down may answer later
                await settlement.settle(message, route, Outcome.TRANSIENT, detail=reason)
            else:
                await settlement.settle(
                    message, route, Outcome.REFUSED, code=ErrorCode.FAILED_AUTHENTICATION.code, detail=reason
                )
            return
        try:
            spooled = await self.pipeline.secure(message, route)
        except (ValueError, EbmsError) as exc:  # no certificate to encrypt to, say: every attempt would fail
            unsendable = EbmsError(ErrorCode.OTHER, f"cannot be prepared for sending: {exc}")
            await settlement.failed(message, route, Outcome.UNSENDABLE, unsendable)
            return
        await self._post(message, route, endpoint, spooled)

    async def _post(self, message: StoredMessage, route: Route, endpoint: str, spooled: SpooledMessage) -> None:
        settlement = self.settlement
        try:
            headers = {"Content-Type": spooled.content_type, "Content-Length": str(spooled.size)}
            async with self.ctx.http.post(endpoint, data=spooled_chunks(spooled.body), headers=headers) as response:
                answer = await response.read()
                answer_type = response.headers.get("Content-Type", "")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            await settlement.settle(message, route, Outcome.TRANSIENT, detail=f"{type(exc).__name__}: {exc}")
            return
        finally:
            spooled.close()
        if 200 <= status < 300 and not answer.strip():
            # No synchronous receipt: it comes later as a signal to /as4 and must echo what we signed.
            await settlement.keep(message, route, EvidenceKind.RAW_MESSAGE, spooled.secured.envelope)
            await settlement.settle(message, route, Outcome.ACCEPTED, detail="no synchronous receipt")
            return
        try:
            parsed = read_message(answer_type, answer).parsed
        except EbmsError as error:
            if status >= 500:  # a SOAP Fault or an error page: the partner could not process it now
                await settlement.settle(message, route, Outcome.TRANSIENT, detail=f"HTTP {status}")
            else:
                await self._unusable(message, route, answer, error)
            return
        header = parsed.messaging.message
        if isinstance(header, SignalMessage) and header.errors:
            await settlement.error_signal(message, route, header, answer)
            return
        try:
            partner = [c for c in (route.partner_signing_certificate,) if c is not None]
            verify_receipt(
                parsed,
                route.security,
                sent_message_id=message.message_id,
                sent_references=spooled.secured.references,
                partner_certificates=partner,
            )
        except EbmsError as error:
            await self._unusable(message, route, answer, error)
            return
        await settlement.delivered(message, route, answer, f"receipt from {endpoint}")

    async def _unusable(self, message: StoredMessage, route: Route, answer: bytes, error: EbmsError) -> None:
        await self.settlement.settle(
            message, route, Outcome.INVALID_ANSWER, code=error.code, detail=error.log_detail,
            evidence=(EvidenceKind.ERROR_SIGNAL, answer),
        )  # fmt: skip

    async def _partner_refused(self, route: Route) -> TrustError | None:
        """Why the partner's configured certificates must not be used now, or None.

        With revocation checking on, the leg's trust settings (path to an anchor, CN bound to the PartyId,
        revocation) hold for the certificate we encrypt to and the one its receipts are signed with, as they do
        for the partner's own messages: a Peppol AP does not send to a revoked AP. With it off, the configured
        certificates are used as configured.
        """
        trust = route.security.trust
        if trust.revocation is RevocationMode.OFF:
            return None
        party_ids = route.partner.party_ids
        party_id = party_ids[0].value if party_ids else None
        checks = [(route.partner_signing_certificate, CertificateUsage.SIGNATURE)]
        if route.security.encrypt:
            checks.append((route.partner_encryption_certificate, CertificateUsage.ENCRYPTION))
        at = self.ctx.clock.now()
        for certificate, usage in checks:
            if certificate is None:
                continue
            try:
                # In a thread: CRL and OCSP fetches block.
                await asyncio.to_thread(
                    validate_certificate,
                    certificate,
                    (),
                    trust,
                    at=at,
                    usage=usage,
                    revocation=self.ctx.revocation,
                    party_id=party_id,
                )
            except TrustError as exc:
                return exc
        return None
