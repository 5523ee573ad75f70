"""Settling what was sent: receipts and error signals, and every other outcome of an outgoing message.

``Settlement.settle`` is the one place where an outcome (a verified receipt, an error signal, a failed
connection, a claim) becomes a move in the store: it asks ``next_step.decide`` what happens next and carries it
out (the compare-and-set transition with its evidence, the retry queued, the webhook event). ``Signals.take``
handles a receipt or error signal POSTed to /as4 for a message we sent.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import datetime

from accesspoint.core.conformance import check_wire
from accesspoint.core.envelope import parse_envelope
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import ReceivedMessage
from accesspoint.core.model import ReferenceEcho, SignalMessage
from accesspoint.core.signals import signed_references
from accesspoint.msh.config import WebhookEvent
from accesspoint.msh.context import Context
from accesspoint.msh.metrics import labels_of
from accesspoint.msh.next_step import Action, Channel, Decision, Facts, Outcome, decide
from accesspoint.msh.views import message_json
from accesspoint.msh.wire import once
from accesspoint.routing.outbound import RouteUnavailable
from accesspoint.store import Direction, EvidenceKind, NewEvidence, StoredMessage
from accesspoint.store.hooks import TransactionHook
from accesspoint.store.queue import QueueUnavailable
from pmode import Binding, Route
from pmode.model import ReceptionAwareness

log = logging.getLogger("accesspoint.msh")

_NO_AWARENESS = ReceptionAwareness(enabled=False)
# What a final move means for as4_messages_sent_total.
_RESULTS = {Action.DELIVER: "delivered", Action.FAIL: "failed", Action.DEAD_LETTER: "dead-letter"}


class Settlement:
    """Carries out what ``next_step`` decides for an outgoing message."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def keep(self, message: StoredMessage, route: Route | None, kind: EvidenceKind, data: bytes) -> None:
        """Keep evidence about an outgoing message for as long as its P-Mode says."""
        ctx = self.ctx
        await ctx.store.add_evidence(
            Direction.OUT,
            message.message_id,
            kind,
            once(data),
            now=ctx.clock.now(),
            retain_for=ctx.agreements.evidence_retention(route),
        )

    def decide(
        self,
        message: StoredMessage,
        route: Route | None,
        outcome: Outcome,
        *,
        code: str | None = None,
        detail: str = "",
    ) -> Decision:
        """What ``next_step`` decides for ``message`` after ``outcome`` (nothing is done yet)."""
        awareness = _NO_AWARENESS if route is None else route.leg.reception_awareness
        pull = route is not None and route.pmode.binding is Binding.PULL
        facts = Facts(message.state, message.attempts, awareness, Channel.PULL if pull else Channel.PUSH)
        jitter = random.random()  # noqa: S311 (spreads retries; not a secret)
        return decide(outcome, facts, now=self.ctx.clock.now(), jitter=jitter, code=code, detail=detail)

    async def settle(
        self,
        message: StoredMessage,
        route: Route | None,
        outcome: Outcome,
        *,
        code: str | None = None,
        detail: str = "",
        evidence: tuple[EvidenceKind, bytes] | None = None,
        hooks: Sequence[TransactionHook] = (),
    ) -> Decision:
        """Decide what happens next after ``outcome`` and do it; ``evidence`` is kept with the move (or alone),
        ``hooks`` written with the move."""
        decision = self.decide(message, route, outcome, code=code, detail=detail)
        await self.apply(message, route, decision, outcome=outcome, evidence=evidence, hooks=hooks)
        return decision

    async def apply(
        self,
        message: StoredMessage,
        route: Route | None,
        decision: Decision,
        *,
        outcome: Outcome,
        evidence: tuple[EvidenceKind, bytes] | None = None,
        hooks: Sequence[TransactionHook] = (),
    ) -> None:
        """Carry a decision out: the transition (with the evidence and ``hooks``, in one transaction), the retry, the
        event."""
        ctx = self.ctx
        if decision.target is None:
            if evidence is not None:
                await self.keep(message, route, *evidence)
            if decision.action is not Action.SEND:
                log.info("%s: %s while %s: %s", message.message_id, outcome, message.state, decision.detail)
            return
        retain = ctx.agreements.evidence_retention(route)
        kept = [] if evidence is None else [NewEvidence(evidence[0], once(evidence[1]), retain)]
        error = None if decision.code is None else (decision.code, decision.detail[:500])
        now = ctx.clock.now()
        moved = await ctx.store.transition(
            message,
            decision.target,
            now=now,
            next_attempt_at=decision.at,
            error=error,
            detail=None if error else decision.detail,
            evidence=kept,
            hooks=[*self._events(decision, now), *hooks],  # the webhook event, in the move's transaction
        )
        _log(message, decision)
        if moved is not None:
            self._count(route, outcome, decision)
        if moved is not None and decision.action is Action.RETRY and decision.at is not None:
            try:
                await ctx.queue.put(message.message_id, due=decision.at)
            except QueueUnavailable as exc:  # the retry is due in the database: the recovery sweep queues it
                log.warning("%s: the retry was not queued (%s); the database hands it out", message.message_id, exc)

    def _count(self, route: Route | None, outcome: Outcome, decision: Decision) -> None:
        """The metrics of a move: the attempt's outcome, a retry, the message's final result."""
        metrics, labels = self.ctx.metrics, labels_of(route)
        if outcome is not Outcome.CLAIMED:
            metrics.attempts.labels(**labels, outcome=outcome.value).inc()
        if decision.action is Action.RETRY:
            metrics.retries.labels(**labels).inc()
        result = _RESULTS.get(decision.action)
        if result is not None:
            metrics.sent.labels(**labels, result=result).inc()
        if decision.action is Action.DELIVER:
            metrics.delivered(labels["partner"], self.ctx.clock.now())

    def _events(self, decision: Decision, now: datetime) -> list[TransactionHook]:
        """The webhook event a decision's move causes: receipt on delivery, error on failure."""
        if decision.action is Action.DELIVER:
            return self.ctx.webhooks.hooks_for(WebhookEvent.RECEIPT, message_json, now=now)
        if decision.action in (Action.FAIL, Action.DEAD_LETTER):
            return self.ctx.webhooks.hooks_for(WebhookEvent.ERROR, message_json, now=now)
        return []

    async def failed(
        self,
        message: StoredMessage,
        route: Route | None,
        outcome: Outcome,
        error: EbmsError,
        *,
        hooks: Sequence[TransactionHook] = (),
    ) -> None:
        """Settle an outcome that carries an ebMS error (a refusal, an unusable answer, a message not sendable)."""
        await self.settle(message, route, outcome, code=error.code, detail=error.log_detail, hooks=hooks)

    async def error_signal(self, message: StoredMessage, route: Route, signal: SignalMessage, envelope: bytes) -> None:
        """A partner's error signal about a message we sent: kept; one with severity failure fails the message."""
        for error in signal.errors:  # a code off the wire counts as "other" unless the ebMS table knows it
            code = error.error_code if ErrorCode.from_code(error.error_code) else "other"
            self.ctx.metrics.ebms_errors.labels(code=code, direction="received").inc()
        failures = [e for e in signal.errors if e.severity.lower() == "failure"]
        if not failures:
            codes = [e.error_code for e in signal.errors]
            await self.settle(
                message, route, Outcome.WARNING_SIGNAL, detail=f"warnings {codes}",
                evidence=(EvidenceKind.ERROR_SIGNAL, envelope),
            )  # fmt: skip
            return
        first = failures[0]
        detail = first.detail or first.short_description or "error signal from the partner"
        await self.settle(
            message, route, Outcome.ERROR_SIGNAL, code=first.error_code, detail=detail,
            evidence=(EvidenceKind.ERROR_SIGNAL, envelope),
        )  # fmt: skip

    async def delivered(self, message: StoredMessage, route: Route, receipt: bytes, how: str) -> None:
        """A verified receipt: delivered, the receipt kept in the same transaction (or alone, if it came late)."""
        await self.settle(message, route, Outcome.RECEIPT, detail=how, evidence=(EvidenceKind.PARTNER_RECEIPT, receipt))

    async def sent_references(self, message: StoredMessage) -> tuple[ReferenceEcho, ...]:
        """The references we signed in the last copy sent of a message (kept when its receipt comes later)."""
        store = self.ctx.store
        kept = await store.evidence(Direction.OUT, message.message_id, EvidenceKind.RAW_MESSAGE)
        if len(kept) < 2:  # the first is the header as submitted, unsigned
            return ()
        envelope = b"".join([c async for c in store.read(kept[-1])])
        return signed_references(parse_envelope(envelope))


def _log(message: StoredMessage, decision: Decision) -> None:
    action, message_id = decision.action, message.message_id
    if action is Action.RETRY:
        log.info("%s: attempt %d: %s; next at %s", message_id, message.attempts, decision.detail, decision.at)
    elif action is Action.DEAD_LETTER:
        log.error("%s cannot be sent (dead letter): %s %s", message_id, decision.code, decision.detail)
    elif action is Action.FAIL:
        log.warning("%s failed: %s %s", message_id, decision.code, decision.detail)


class Signals:
    """Receipts and error signals POSTed to /as4 for messages we sent."""

    def __init__(self, ctx: Context, settlement: Settlement) -> None:
        self.ctx = ctx
        self.settlement = settlement

    async def take(self, received: ReceivedMessage, signal: SignalMessage, now: datetime) -> None:
        """Verify the signal as the partner's and settle the message it refers to (EbmsError when it cannot)."""
        ctx = self.ctx
        ref = signal.message_info.ref_to_message_id or next(
            (e.ref_to_message_in_error for e in signal.errors if e.ref_to_message_in_error), None
        )
        message = None if ref is None else await ctx.store.get(Direction.OUT, ref)
        route = None if message is None else ctx.agreements.route_of(message)
        if message is None or route is None:
            raise EbmsError(
                ErrorCode.VALUE_INCONSISTENT,
                "the signal refers to no message sent from here",
                ref_to_message_id=signal.message_id,
                log_detail=f"{signal.kind} {signal.message_id} refers to {ref!r}",
            )
        check_wire(received.deviations, lenient=route.pmode.leniency)
        try:
            if route.dynamic:  # the partner's certificate is the one its route record or discovery gives
                route = await self._resolved(message, route)
            if signal.errors:
                await ctx.verifier.signal(received, route, at=now)
                await self.settlement.error_signal(message, route, signal, received.envelope_bytes)
                return
            references = await self.settlement.sent_references(message)
            ctx.verifier.receipt(received, route, message_id=message.message_id, references=references)
            await self.settlement.delivered(message, route, received.envelope_bytes, "asynchronous receipt")
        except EbmsError as error:
            error.ref_to_message_id = signal.message_id
            raise

    async def _resolved(self, message: StoredMessage, route: Route) -> Route:
        """A dynamic partner filled in for checking its asynchronous signal (EbmsError when it cannot be now)."""
        ctx = self.ctx
        try:
            # sending=False: a receipt for what was sent is checked even if the operator was suspended since.
            return await ctx.routing.resolve(ctx.store, message, route, at=ctx.clock.now(), sending=False)
        except RouteUnavailable as exc:
            raise EbmsError(ErrorCode.OTHER, "the partner cannot be looked up now", log_detail=str(exc)) from None
