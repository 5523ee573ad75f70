"""Send workers: take a due message from the queue, win its claim, send it, settle what came back.

Each worker is a supervised task. It survives a database or queue outage (``store.queue.Claims``): a claim waits
for the database to come back, the database hands out what is due while the queue is away, and an attempt the
database failed under leaves the message claimed until its lease runs out (then it is sent again; the partner's
duplicate elimination answers with the same receipt), rather than failing a message the partner may have. What
an attempt led to is reported to ``Settlement`` as an ``Outcome``; the retry policy lives in ``next_step``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Protocol

import aiohttp
from opentelemetry.trace import SpanKind

from accesspoint.core.conformance import check_wire
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.model import SignalMessage
from accesspoint.msh.context import Context
from accesspoint.msh.next_step import Action, Outcome
from accesspoint.msh.send_pipeline import SendPipeline, SpooledMessage
from accesspoint.msh.signals import Settlement
from accesspoint.msh.webhooks import message_key
from accesspoint.routing.decision import NotForwarded
from accesspoint.routing.outbound import RouteUnavailable
from accesspoint.security.policy import RevocationMode
from accesspoint.security.trust import CertificateUsage, TrustError, TrustFailure
from accesspoint.servicekit.httpclient import AddressPolicy, fetch
from accesspoint.servicekit.logs import log_context
from accesspoint.servicekit.metrics import timed
from accesspoint.store import Direction, EvidenceKind, StoredMessage, StoreUnavailable
from accesspoint.store.hooks import TransactionHook
from accesspoint.store.queue import Claim, Claims
from pmode import Binding, Route

log = logging.getLogger("accesspoint.msh")

PAUSE_AFTER_FAULT = 1.0  # seconds a worker waits after the database or the queue failed under it
ANSWER_LIMIT = 4 * 1024 * 1024  # a partner's synchronous answer to a push (a signal): more is a failed attempt
# A large message's attempt (securing it, the POST, the partner's checks before its receipt) takes time with its
# size: past LARGE_MESSAGE bytes of payloads, its lease and the POST's timeout grow by a second per
# LARGE_SEND_RATE bytes (a slow floor: a busy host moves a few MiB a second through every step), so a 2 GiB
# letter is not cut off at send.timeout and sent again, nor taken over by another worker while it is sent.
LARGE_MESSAGE = 16 * 1024 * 1024
LARGE_SEND_RATE = 1024 * 1024


def large_allowance(payload_bytes: int) -> timedelta:
    """The time added to an attempt's lease and timeout for a message of ``payload_bytes`` (zero when small)."""
    return timedelta(seconds=payload_bytes / LARGE_SEND_RATE) if payload_bytes > LARGE_MESSAGE else timedelta()


class NotForwardedJob(Protocol):
    """What the router writes with the failure of a forward it will not make (``Replies.not_forwarded_job``)."""

    def __call__(self, refusal: NotForwarded, *, now: datetime) -> list[TransactionHook]:
        """The hooks that answer the letter's sender."""
        ...


class SendWorkers:
    """One attempt at an outgoing message (``attempt``); ``send_pool.SendPool`` decides which worker makes it."""

    def __init__(
        self,
        ctx: Context,
        pipeline: SendPipeline,
        settlement: Settlement,
        *,
        not_forwarded: NotForwardedJob | None = None,
    ) -> None:
        self.ctx = ctx
        self.pipeline = pipeline
        self.settlement = settlement
        self.not_forwarded = not_forwarded
        # The queue wakes the workers and spreads the work; the database decides and, when the queue is away,
        # hands out what is due itself (pulled messages wait for their puller instead).
        self.claims = Claims(
            ctx.queue, ctx.store, clock=ctx.clock, lease=ctx.settings.lease, poll=ctx.settings.lease / 4,
            skip=self._pulled,
        )  # fmt: skip

    def _pulled(self, message: StoredMessage) -> bool:
        route = self.ctx.agreements.route_of(message)
        return route is not None and route.pmode.binding is Binding.PULL

    async def attempt(self, claim: Claim, *, renew: bool = False) -> None:
        """One claimed message: send it, settle what came back, acknowledge its queue entry; never raises but for
        cancellation. ``renew``: it waited after its claim (for a worker of its partner), so its lease is renewed
        first, and it is not sent when another worker took it over meanwhile."""
        ctx, message = self.ctx, claim.message
        try:
            renewed: StoredMessage | None = message
            if renew:
                renewed = await ctx.store.renew(message, now=ctx.clock.now(), lease=ctx.settings.lease)
            if renewed is None:
                log.info("%s was taken over while it waited", message.message_id)
            else:
                message = renewed
                await self.send(message)
        except StoreUnavailable as exc:
            # The database went away mid-attempt: whatever was sent, the message stays claimed until its lease runs
            # out, then it is sent again and the partner's duplicate elimination answers with the same receipt.
            # Recording a failure now (should the database be back) would fail a message the partner may have.
            log.warning("%s: the database is unavailable (%s); retried after its lease", message.message_id, exc)
            await asyncio.sleep(PAUSE_AFTER_FAULT)
        except Exception as exc:
            # A bug or a broken stored message must not leave it in `sending` until its lease runs out.
            log.exception("sending %s failed unexpectedly", message.message_id)
            error = EbmsError(ErrorCode.OTHER, f"internal error: {type(exc).__name__}: {exc}")
            try:
                await self.settlement.failed(message, ctx.agreements.route_of(message), Outcome.UNSENDABLE, error)
            except Exception:  # the database itself: the lease runs out and the message is taken over
                log.exception("recording the failure of %s failed", message.message_id)
        await self.claims.done(claim)

    async def send(self, message: StoredMessage) -> None:
        """One attempt at a claimed message, from the checks before it to the settling of its answer."""
        attributes: dict[str, str | int] = {"as4.pmode": message.pmode_id or "", "as4.attempt": message.attempts}
        with (
            self.ctx.tracer.start_as_current_span(
                "as4.send",
                context=self.ctx.handoffs.context(message_key(Direction.OUT.value, message.message_id)),
                attributes=attributes,
            ),
            log_context(message_id=message.message_id, conversation_id=message.conversation_id),
        ):
            await self._send(message)

    async def _send(self, message: StoredMessage) -> None:
        ctx, settlement = self.ctx, self.settlement
        route = ctx.agreements.route_of(message)
        if route is None:
            gone = EbmsError(ErrorCode.PROCESSING_MODE_MISMATCH, f"P-Mode {message.pmode_id!r} is gone")
            await settlement.failed(message, None, Outcome.UNSENDABLE, gone)
            return
        decision = await settlement.settle(message, route, Outcome.CLAIMED)
        if decision.action is not Action.SEND:
            return
        addresses = None  # a dynamic partner's endpoint is connected to only where discovery's policy allows
        if route.dynamic:  # endpoint and certificates from a route record or BDXL + SMP
            addresses = ctx.routing.addresses(route)
            try:
                route = await ctx.routing.resolve(ctx.store, message, route, at=ctx.clock.now())
            except RouteUnavailable as exc:
                await settlement.settle(message, route, Outcome.TRANSIENT, detail=str(exc))
                return
            except EbmsError as exc:
                hooks: list[TransactionHook] = []
                if isinstance(exc, NotForwarded) and self.not_forwarded is not None:
                    hooks = self.not_forwarded(exc, now=ctx.clock.now())  # the sender's answer, with the failure
                await settlement.failed(message, route, Outcome.REFUSED, exc, hooks=hooks)
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
        allowance = large_allowance(message.payload_bytes)
        if allowance:
            renewed = await ctx.store.renew(message, now=ctx.clock.now(), lease=ctx.settings.lease + allowance)
            if renewed is None:
                log.info("%s was taken over before it was sent", message.message_id)
                return
            message = renewed
        try:
            spooled = await self.pipeline.secure(message, route)
        except (ValueError, EbmsError) as exc:  # no certificate to encrypt to, say: every attempt would fail
            unsendable = EbmsError(ErrorCode.OTHER, f"cannot be prepared for sending: {exc}")
            await settlement.failed(message, route, Outcome.UNSENDABLE, unsendable)
            return
        await self._post(message, route, endpoint, spooled, addresses, allowance)

    async def _post(
        self,
        message: StoredMessage,
        route: Route,
        endpoint: str,
        spooled: SpooledMessage,
        addresses: AddressPolicy | None = None,
        allowance: timedelta = timedelta(),
    ) -> None:
        ctx, settlement = self.ctx, self.settlement
        # Given explicitly: an attempt must end before its lease does, and a large one needs more than the session's.
        timeout = (ctx.settings.send_timeout + allowance).total_seconds()
        try:
            headers = {"Content-Type": spooled.content_type, "Content-Length": str(spooled.size)}
            with (
                ctx.tracer.start_as_current_span("as4.post", kind=SpanKind.CLIENT) as span,
                timed(ctx.metrics.send_duration, partner=route.partner.name),
            ):
                sent = await fetch(
                    ctx.http,
                    "POST",
                    endpoint,
                    data=spooled.payload(),
                    headers=headers,
                    max_bytes=ANSWER_LIMIT,
                    addresses=addresses,
                    timeout=timeout,
                    # A partner is another organisation: our trace ids go there only when tracing.partners says so.
                    trace=ctx.settings.observability.trace_partners,
                )
                span.set_attribute("http.response.status_code", sent.status)
            answer, answer_type, status = sent.body, sent.content_type, sent.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            await settlement.settle(message, route, Outcome.TRANSIENT, detail=f"{type(exc).__name__}: {exc}")
            return
        finally:
            await spooled.close()
        if 200 <= status < 300 and not answer.strip():
            # No synchronous receipt: it comes later as a signal to /as4 and must echo what we signed.
            await settlement.keep(message, route, EvidenceKind.RAW_MESSAGE, spooled.secured.envelope)
            await settlement.settle(message, route, Outcome.ACCEPTED, detail="no synchronous receipt")
            return
        try:
            received = read_message(answer_type, answer)
        except EbmsError as error:
            if status >= 500:  # a SOAP Fault or an error page: the partner could not process it now
                await settlement.settle(message, route, Outcome.TRANSIENT, detail=f"HTTP {status}")
            else:
                await self._unusable(message, route, answer, error)
            return
        try:
            # The partner's answer is held to the wire rules its own messages are (the P-Mode's leniency aside).
            check_wire(received.deviations, lenient=route.pmode.leniency)
        except EbmsError as error:
            await self._unusable(message, route, answer, error)
            return
        header = received.parsed.messaging.message
        if isinstance(header, SignalMessage) and header.errors:
            await settlement.error_signal(message, route, header, answer)
            return
        try:
            references = spooled.secured.references
            with ctx.tracer.start_as_current_span("as4.receipt_check"):
                ctx.verifier.receipt(received, route, message_id=message.message_id, references=references)
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
                await self.ctx.verifier.certificate(certificate, trust, usage=usage, party_id=party_id, at=at)
            except TrustError as exc:
                return exc
        return None
