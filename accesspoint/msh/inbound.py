"""The inbound pipeline: POST /as4 → received → verified message → persisted → signed receipt.

A user message is read into spooled parts, verified by the receive pipeline (P-Mode, decryption, signature,
trust, decompression: a ``VerifiedMessage``), checked against its leg (binding, reply), offered to the router,
stored with its raw form and our receipt in one transaction and answered with that receipt; a repeated
MessageId gets the stored receipt again, never a second delivery. Signals go to pull or signals. Any
EbmsError becomes a signed ebMS error signal; what is left (a bug, the store down) a SOAP Fault with HTTP 500.

Routing plugs in through ``InboundRouting``, an interface this module owns: it sees the verified route and
header before anything is stored (and may refuse), and forwards what it accepted once it is stored.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol, TypeVar

from aiohttp import web

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import ReceivedMessage
from accesspoint.core.model import SignalMessage, UserMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.msh.config import WebhookEvent
from accesspoint.msh.context import Context
from accesspoint.msh.headers import refusal
from accesspoint.msh.limits import Admission, BodyRefused, declared_length
from accesspoint.msh.metrics import labels_of
from accesspoint.msh.pull import PullServer
from accesspoint.msh.receive_pipeline import ReceivePipeline, VerifiedMessage
from accesspoint.msh.receiving import is_ping, refused_route, reply_policy
from accesspoint.msh.replies import Replies
from accesspoint.msh.revocation import transient
from accesspoint.msh.signals import Signals
from accesspoint.msh.views import message_info, message_json
from accesspoint.msh.webhooks import message_key
from accesspoint.msh.wire import READ_CHUNK, discard, once, read_message_body, soap_fault, soap_response
from accesspoint.routing.shell import Submitter
from accesspoint.servicekit.logs import LogType, log_context
from accesspoint.servicekit.metrics import timed
from accesspoint.servicekit.tracing import failed
from accesspoint.store import (
    Direction,
    EvidenceKind,
    MessageState,
    MessageStore,
    NewEvidence,
    Reception,
    StoredMessage,
    StoreUnavailable,
)
from pmode import Binding, PModeSet, Route

log = logging.getLogger("accesspoint.msh")

_WHAT = "the AS4 message"
# Refusals that go to the security log (a signature, a certificate, a decryption or the policy failed).
SECURITY_ERRORS = frozenset(
    {ErrorCode.FAILED_AUTHENTICATION, ErrorCode.FAILED_DECRYPTION, ErrorCode.POLICY_NONCOMPLIANCE}
)


def _retry(ctx: Context) -> int:
    """Seconds a sender is asked to wait before it tries again (the limits' retry_after)."""
    return max(1, round(ctx.settings.body_limits.retry_after.total_seconds()))


PlanT = TypeVar("PlanT")


class InboundRouting(Protocol[PlanT]):
    """What the router does for the inbound pipeline (``accesspoint.routing.shell.Routing`` is one)."""

    async def decide(self, store: MessageStore, pmodes: PModeSet, verified: VerifiedMessage) -> PlanT | None:
        """Where a verified message goes before it is stored: None keeps it here, EbmsError refuses it."""
        ...

    async def forward(
        self, access_point: Submitter, plan: PlanT, received: StoredMessage, user: UserMessage, *, now: datetime
    ) -> StoredMessage | None:
        """Submit the stored message onwards as planned."""
        ...


class Inbound:
    """The AS4 endpoint."""

    def __init__(
        self,
        ctx: Context,
        pipeline: ReceivePipeline,
        router: InboundRouting[Any],
        submitter: Submitter,
        replies: Replies,
        signals: Signals,
        pulls: PullServer,
    ) -> None:
        self.ctx = ctx
        self.pipeline = pipeline
        self.router = router
        self.submitter = submitter
        self.replies = replies
        self.signals = signals
        self.pulls = pulls

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """POST /as4: a user message, a PullRequest, a receipt or an error signal.

        Anyone may post here, so the body is admitted before a byte of it is read (``limits``): a declared length
        past ``max_message_size`` is refused at once (EBMS:0103), one past the server's budget gets 503 with
        Retry-After, and what it took is given back when the answer is made, however it ends.
        """
        content_type = request.headers.get("Content-Type", "")
        soap_version = SoapVersion.V11 if "text/xml" in content_type.lower() else SoapVersion.V12
        try:
            declared = declared_length(request.headers)
            with self.ctx.bodies.admit(declared, limit=self.ctx.settings.max_message_size, what=_WHAT) as admission:
                return await self._answer(request, content_type, soap_version, admission)
        except BodyRefused as refused:
            return self._refused(refused, soap_version)
        except StoreUnavailable as exc:
            # Nothing was stored (or what was is covered by duplicate elimination): the sender tries again later.
            log.warning("answering an AS4 request with 503: the database is unavailable (%s)", exc)
            return soap_fault(soap_version, status=503, reason="temporarily unavailable", retry_after=_retry(self.ctx))
        except Exception:
            # AS4 answers with a signed ebMS error signal wherever one can be built; this is what is left (a bug,
            # a key unusable): a SOAP Fault with HTTP 500, which senders treat as transient.
            log.exception("internal error while answering an AS4 request")
            return soap_fault(soap_version)

    def _refused(self, refused: BodyRefused, soap_version: SoapVersion) -> web.Response:
        """A body not taken in: too large is EBMS:0103 as ever; busy (503) and stalled (408) are SOAP Faults."""
        log.warning("refused an AS4 request body: %s %s", refused.status, refused.detail)
        if refused.status == 413:
            error = EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, "the message is larger than this access point accepts")
            response = soap_response(self._error_signal(error, None, soap_version, self.ctx.clock.now()), soap_version)
        else:
            response = soap_fault(soap_version, status=refused.status, reason=refused.kind)
        response.headers.update(refused.headers())
        return response

    async def read(self, request: web.Request, content_type: str, admission: Admission) -> ReceivedMessage:
        """The request body parsed into spooled parts, accounted to its admission as it streams."""
        return await read_message_body(
            admission.chunks(request.content, chunk=READ_CHUNK),
            content_type,
            limit=self.ctx.settings.max_message_size,
            too_large="the message is larger than this access point accepts",
        )

    async def _answer(
        self, request: web.Request, content_type: str, soap_version: SoapVersion, admission: Admission
    ) -> web.StreamResponse:
        now = self.ctx.clock.now()
        received: ReceivedMessage | None = None
        try:
            received = await self.read(request, content_type, admission)
            soap_version = received.parsed.messaging.soap_version
            message = received.parsed.messaging.message
            if isinstance(message, SignalMessage) and message.pull_request is not None:
                return await self.pulls.serve(request, received, message, now)
            if isinstance(message, SignalMessage):
                await self.signals.take(received, message, now)
                return web.Response(status=200)  # ebMS 3: signals are not acknowledged
            return soap_response(await self.accept(received, now), soap_version)
        except EbmsError as error:
            if transient(error):
                # Hard-fail revocation and the responder cannot be asked now: "try again later", not a refusal.
                log.warning("answered 503 for now: %s", error.log_detail)
                return soap_fault(soap_version, status=503, reason="try again later", retry_after=30)
            # An empty MPC is the normal answer to most PullRequests, not a refusal.
            level = logging.DEBUG if error.error_code is ErrorCode.EMPTY_MPC else logging.WARNING
            kind = LogType.SECURITY if error.error_code in SECURITY_ERRORS else LogType.BUSINESS
            log.log(level, "refused an incoming message: %s", error, extra={"log_type": kind})
            return soap_response(self._error_signal(error, received, soap_version, now), soap_version)
        finally:
            await discard(received)

    def _error_signal(
        self, error: EbmsError, received: ReceivedMessage | None, soap_version: SoapVersion, now: datetime
    ) -> bytes:
        """The signed error signal, signed as the leg's profile signs (Ed25519 on a 2.0 leg) where one matches."""
        self.ctx.metrics.ebms_errors.labels(code=error.code, direction="sent").inc()
        policy = reply_policy(received, self.ctx.agreements.current)
        return self.ctx.signer.error(error, policy, soap_version, at=now)

    async def accept(self, received: ReceivedMessage, now: datetime, pulled_on: str | None = None) -> bytes:
        """Verify, check, store and acknowledge a user message, pushed or pulled: the signed receipt to send back.

        ``pulled_on`` is the MPC of the PullRequest that returned it (None when pushed): a message must travel
        the way its leg's binding says. EbmsError when it is refused; then nothing is stored. A repeated
        MessageId gets the stored receipt.
        """
        ctx = self.ctx
        header = received.parsed.messaging.message
        ids = (header.message_id, header.collaboration_info.conversation_id) if isinstance(header, UserMessage) else ()
        with (
            ctx.tracer.start_as_current_span("as4.receive", attributes={"as4.pulled": pulled_on is not None}) as span,
            log_context(message_id=ids[0] if ids else None, conversation_id=ids[1] if ids else None),
            timed(ctx.metrics.receive_duration),
        ):
            if ids:  # its webhook events continue this trace (kept before they can be written)
                ctx.handoffs.keep(message_key(Direction.IN.value, ids[0]))
            try:
                route, user, plan, receipt, reception = await self._verify_and_store(received, now, pulled_on)
            except EbmsError as error:
                refused = refused_route(received, ctx.agreements.current)
                ctx.metrics.received.labels(**labels_of(refused), result="refused").inc()
                failed(span, error.code)
                await self._announce_refusal(received, error)
                raise
            result = "duplicate" if reception.duplicate else "received"
            ctx.metrics.received.labels(**labels_of(route), result=result).inc()
            span.set_attributes({"as4.pmode": route.pmode.id, "as4.duplicate": reception.duplicate})
            if reception.duplicate and reception.receipt is not None:
                log.info("duplicate %s: answering with the stored receipt", user.message_id)
                return b"".join([c async for c in ctx.store.read(reception.receipt)])
            log.info("received %s on %s", user.message_id, route.name)
            if is_ping(user):
                await self._settle_ping(reception.message, now)
            # The backend's message-received event and a reply's check were written with the message (_persist).
            if plan is not None:
                await self.router.forward(self.submitter, plan, reception.message, user, now=now)
            return receipt

    async def _verify_and_store(
        self, received: ReceivedMessage, now: datetime, pulled_on: str | None
    ) -> tuple[Route, UserMessage, Any, bytes, Reception]:
        """Verify and check a user message, let the router decide, sign the receipt and store the message."""
        ctx = self.ctx
        verified = await self.pipeline.verify(received, now)
        try:
            route, user = verified.route, verified.user_message
            _check_binding(route, user, pulled_on)
            await self._check_reply(route, user)
            # The router asks FaR (or picks discovery) before the receipt: a refusal is EBMS:0004 with the reason.
            plan = await self.router.decide(ctx.store, ctx.agreements.current, verified)
            receipt = ctx.signer.signal(verified.receipt, route.security, verified.soap_version)
            # Stored as received now, not when its request began: a large message takes minutes to read and check,
            # and the router's recovery takes a message received longer ago than a lease without its forward for
            # one a stop left behind (it forwarded a 2 GiB letter a second time, racing the request's own forward).
            reception = await self._persist(verified, receipt, ctx.clock.now())
        finally:
            await verified.close()
        return route, user, plan, receipt, reception

    async def _announce_refusal(self, received: ReceivedMessage, error: EbmsError) -> None:
        """Tell the backend about a refused user message when its leg says so (ProcessErrorNotifyConsumer); the
        event goes to the outbox on its own (nothing is stored with it); the database away loses only it."""
        route = refused_route(received, self.ctx.agreements.current)
        user = received.parsed.messaging.message
        if route is not None and route.leg.error_handling.notify_consumer and isinstance(user, UserMessage):
            try:
                await self.ctx.webhooks.notify(WebhookEvent.MESSAGE_REFUSED, refusal(user, route, error))
            except StoreUnavailable as exc:
                log.warning("the refusal of %s was not announced: %s", user.message_id, exc)

    async def _settle_ping(self, message: StoredMessage, now: datetime) -> None:
        """An ebMS test message is receipted and kept as evidence, never delivered: it is acknowledged at once and
        no webhook hears of it (ebMS 3 5.2.2.9, AS4_CP_TA17)."""
        detail = "ebMS test message: not delivered to the backend"
        for state in (MessageState.DELIVERED_TO_BACKEND, MessageState.ACKNOWLEDGED):
            moved = await self.ctx.store.transition(message, state, now=now, detail=detail)
            if moved is None:
                return
            message = moved

    async def _persist(self, verified: VerifiedMessage, receipt: bytes, now: datetime) -> Reception:
        """Store a new message with its raw form and our receipt in one transaction (a repetition stores nothing)."""
        store, user = self.ctx.store, verified.user_message
        retention = self.ctx.agreements.evidence_retention(verified.route)
        evidence = [
            NewEvidence(EvidenceKind.RAW_MESSAGE, once(verified.envelope), retention),
            NewEvidence(EvidenceKind.OUR_RECEIPT, once(receipt), retention),
        ]
        info = message_info(user, verified.route)
        # What the reception causes is written with it: the backend's event (not for an ebMS test message), and for
        # a reply to a message we sent the job that checks the operator's answer and relays it; a duplicate
        # writes neither.
        hooks = (
            [] if is_ping(user) else self.ctx.webhooks.hooks_for(WebhookEvent.MESSAGE_RECEIVED, message_json, now=now)
        )
        if user.message_info.ref_to_message_id is not None:
            hooks.append(self.replies.job(now=now))
        reception = await store.receive(info, verified.new_payloads(), now=now, evidence=evidence, hooks=hooks)
        if reception.duplicate and reception.receipt is None:
            # The first reception stopped (a crash) between storing the message and keeping its receipt: this
            # one finishes it, keeping the evidence (the backend's event was written with the message).
            log.warning("duplicate %s without a stored receipt: keeping this reception's evidence", user.message_id)
            kept = [(EvidenceKind.OUR_RECEIPT, receipt)]
            if not await store.evidence(Direction.IN, user.message_id, EvidenceKind.RAW_MESSAGE):
                kept.insert(0, (EvidenceKind.RAW_MESSAGE, verified.envelope))
            for kind, data in kept:
                await store.add_evidence(Direction.IN, user.message_id, kind, once(data), now=now, retain_for=retention)
        return reception

    async def _check_reply(self, route: Route, user: UserMessage) -> None:
        """Two-way push-and-push: the reply (leg 2) must refer to a request this access point sent (ebMS 3 2.2.3)."""
        if route.pmode.binding is not Binding.PUSH_AND_PUSH or route.leg.index != 1:
            return
        ref = user.message_info.ref_to_message_id
        if ref is None or await self.ctx.store.get(Direction.OUT, ref) is None:
            raise EbmsError(
                ErrorCode.VALUE_INCONSISTENT,
                "the reply does not refer to a request sent to this partner",
                ref_to_message_id=user.message_id,
                log_detail=f"RefToMessageId {ref!r} names no message we sent",
            )


def _check_binding(route: Route, user: UserMessage, pulled_on: str | None) -> None:
    """EBMS:0010 for a message pushed on a pull leg, or pulled on a push leg or from another MPC."""
    pull = route.pmode.binding is Binding.PULL
    if pulled_on is None and not pull:
        return
    if pulled_on is None:
        problem = f"{route.name} is a pull leg but the message was pushed"
    elif not pull:
        problem = f"{route.name} is a push leg but the message came in answer to a PullRequest"
    elif user.effective_mpc != pulled_on:
        problem = f"pulled on {pulled_on} but the message is on {user.effective_mpc}"
    else:
        return
    raise EbmsError(
        ErrorCode.PROCESSING_MODE_MISMATCH,
        "the message does not travel as its P-Mode leg says",
        ref_to_message_id=user.message_id,
        log_detail=problem,
    )
