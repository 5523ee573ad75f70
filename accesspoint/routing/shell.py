"""The thin I/O layer the access point calls: dynamic partners for sending, the router for receiving.

``Routing`` is built by the access point (``create_app``) from its settings (no globals) and closed when it
stops; it plugs into the inbound pipeline through the interface the access point defines for it (``decide``,
``forward``). The decisions themselves are pure (:mod:`accesspoint.routing.decision`); this module only asks
FaR, reads the stored header, records route targets and submits forwarded messages.

Receiving, with ``routing`` settings: :meth:`Routing.decide` runs after the message passed security and before
it is stored; a refusal is an EbmsError (EBMS:0004 with the reason), which the MSH answers as a signed error
signal instead of the receipt. After the message is stored, :meth:`Routing.forward` records the route target,
submits the forwarded message (same payloads, properties and conversation) on the forwarding P-Mode and moves
the received message to ``delivered_to_backend`` with the outcome in its history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

from opentelemetry.trace import Tracer
from prometheus_client import Counter, Histogram

from accesspoint.core.envelope import parse_envelope
from accesspoint.core.errors import EbmsError
from accesspoint.core.ids import new_message_id
from accesspoint.core.model import PartyId, UserMessage
from accesspoint.routing.decision import (
    FINAL_RECIPIENT,
    ORIGINAL_SENDER,
    UNAVAILABLE,
    FarFailure,
    MessageFacts,
    Refusal,
    RouteKind,
    RoutingDecision,
    check_sender,
    classify,
    decide,
    forward_route,
    no_agreement,
    operator_standing,
    refuse,
)
from accesspoint.routing.letters import (
    MAX_LETTER_BYTES,
    LetterCheck,
    LetterPart,
    LetterRefused,
    certificate_sha256,
    check_letter,
    worth_reading,
)
from accesspoint.routing.outbound import PartnerResolver, RouteRecords, RouteTarget, RouteUnavailable
from accesspoint.routing.settings import RoutingSettings
from accesspoint.security.keys import KeyPair
from accesspoint.security.revocation import RevocationSource
from accesspoint.security.signing import VerifiedSignature
from accesspoint.servicekit.httpclient import AddressPolicy
from accesspoint.store import Direction, EvidenceKind, MessageState, MessageStore, NewPayload, StoredMessage
from accesspoint.store.clock import Clock
from accesspoint.store.hooks import TransactionHook
from far.client import FarClient, FarUnavailable, ReachabilityLookup, SenderLookup
from far.senders import SenderView
from far.service import FarError, FarService, NotFound, Operator, Reachability, Routes
from pmode import PModeSet, Route
from pmode.model import PayloadFormat
from smp.client import DiscoverySettings

log = logging.getLogger("accesspoint.routing")
_Record = TypeVar("_Record")


async def stored_header(store: MessageStore, message: StoredMessage) -> UserMessage:
    """The header of an outgoing message as submitted (the first raw-message evidence)."""
    kept = await store.evidence(Direction.OUT, message.message_id, EvidenceKind.RAW_MESSAGE)
    header = b"".join([c async for c in store.read(kept[0])])
    user = parse_envelope(header).messaging.message
    assert isinstance(user, UserMessage)
    return user


def forwarded_id(message_id: str) -> str:
    """The MessageId a routed message is forwarded under (one forward per received message, even on retries)."""
    return f"fwd-{message_id}"


class Submitter(Protocol):
    """What forwarding needs from the access point: its P-Modes, its store and its submission path."""

    @property
    def pmodes(self) -> PModeSet:
        """The P-Modes in force now."""
        ...

    @property
    def store(self) -> MessageStore | None:
        """The message store."""
        ...

    async def submit(
        self,
        document: dict[str, Any],
        files: Sequence[NewPayload] | None = None,
        *,
        hooks: Sequence[TransactionHook] = (),
    ) -> StoredMessage:
        """Store and queue an outgoing message (``hooks`` write in the transaction that stores it)."""
        ...


class VerifiedLetter(Protocol):
    """What the router reads of a message that passed security (the MSH's ``VerifiedMessage`` is one)."""

    @property
    def route(self) -> Route:
        """The leg it arrived on."""
        ...

    @property
    def user_message(self) -> UserMessage:
        """Its header."""
        ...

    @property
    def signature(self) -> VerifiedSignature | None:
        """Who signed it, as the security layer verified (None on a leg that does not sign)."""
        ...

    def new_payloads(self) -> list[NewPayload]:
        """Its payloads, decrypted and decompressed."""
        ...


@dataclass(frozen=True, slots=True)
class RoutedSubmission:
    """A submission as the router left it: the P-Mode and MessageId it chose, and the target to record with it
    (in the transaction that stores the message: ``RouteRecords.hook``)."""

    document: dict[str, Any]
    target: RouteTarget | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A routing decision for a received message, the leg it is forwarded on and the parts forwarded instead of
    what came (the router's seal)."""

    decision: RoutingDecision
    route: Route
    replaced: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FarLookupMetrics:
    """Where the router counts its FaR questions by outcome and times them (the access point's /metrics)."""

    outcomes: Counter
    duration: Histogram
    tracer: Tracer


# FaR is asked about every letter before its receipt. Under load the letters' questions are gathered: at most
# _IN_FLIGHT requests are out at once, and the questions asked meanwhile go together in the next one (up to _BATCH),
# so FaR and the router spend one HTTP request on many letters; a lone letter is asked about at once.
_IN_FLIGHT = 2
_BATCH = 500


class _Questions:
    """Recipients one sender's letters asked FaR about, sent together in one ``routes`` request."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.recipients: list[str] = []
        self.waiting: list[asyncio.Future[Reachability | FarFailure]] = []
        self.sent = False

    def add(self, recipient: str) -> asyncio.Future[Reachability | FarFailure]:
        """Ask about ``recipient`` too: the future answer."""
        waiting: asyncio.Future[Reachability | FarFailure] = asyncio.get_running_loop().create_future()
        self.recipients.append(recipient)
        self.waiting.append(waiting)
        return waiting

    def answer(self, answer: Routes | FarFailure) -> None:
        """Give each question its answer (a failure of the request is every question's)."""
        found: list[Reachability | FarFailure] = (
            [answer] * len(self.recipients) if isinstance(answer, FarFailure) else [*answer.answers(self.recipients)]
        )
        for waiting, one in zip(self.waiting, found, strict=True):
            if not waiting.done():
                waiting.set_result(one)


class _FarLookup:
    """FaR over HTTP (FarClient) or in this process (FarService on its own engine), opened on first use."""

    def __init__(self, settings: RoutingSettings, metrics: FarLookupMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._lookup: ReachabilityLookup | None = None
        self._senders: SenderLookup | None = None
        self._client: FarClient | None = None
        self._engine: Any = None
        self._lock = asyncio.Lock()
        # Sender records as FaR gave them, with when: (monotonic time, the record or None for unregistered).
        self._known: dict[str, tuple[float, SenderView | None]] = {}
        # Operator records (their approval) likewise, for the check before each forwarding attempt.
        self._operators: dict[str, tuple[float, Operator | None]] = {}
        # Questions about recipients gathering for FaR, by sender, while the requests in flight are answered.
        self._questions: dict[str, _Questions] = {}
        self._in_flight = asyncio.Semaphore(_IN_FLIGHT)
        self._asking: set[asyncio.Task[None]] = set()

    async def _open(self) -> ReachabilityLookup:
        async with self._lock:
            if self._lookup is not None:
                return self._lookup
            if self.settings.far_url is not None:
                client = FarClient(
                    self.settings.far_url, self.settings.token, timeout=self.settings.timeout.total_seconds()
                )
                self._client = await client.__aenter__()
                self._lookup = client
                self._senders = client
            else:
                from far.model import create_engine, upgrade_schema
                from far.senders import SenderRegister
                from far.service import FarService

                far = self.settings.far_settings
                self._engine = create_engine(far.database)
                await upgrade_schema(self._engine)
                self._lookup = FarService(self._engine, policy=far.policy, parties=far.parties)
                self._senders = SenderRegister(self._engine, policy=far.parties)
            return self._lookup

    async def sender(self, sender_id: str) -> SenderView | FarFailure | None:
        """The register's record of a sender (None: not registered), kept for ``sender_cache``."""

        async def fetch() -> SenderView:
            await self._open()
            assert self._senders is not None
            return await self._senders.get(sender_id)

        # Bounded: senders are few, a flood of made-up ids must not grow it.
        return await self._cached(self._known, sender_id, fetch, f"sender {sender_id}", limit=10_000)

    async def operator(self, operator_id: str) -> Operator | FarFailure | None:
        """FaR's record of an operator with its approval (None: FaR has none), kept for ``sender_cache``."""

        async def fetch() -> Operator:
            lookup = await self._open()
            if isinstance(lookup, FarClient):
                return await lookup.operator(operator_id)
            assert isinstance(lookup, FarService)
            return await lookup.get_operator(operator_id)

        return await self._cached(self._operators, operator_id, fetch, f"operator {operator_id}", limit=1_000)

    async def _cached(
        self,
        cache: dict[str, tuple[float, _Record | None]],
        key: str,
        fetch: Callable[[], Awaitable[_Record]],
        what: str,
        *,
        limit: int,
    ) -> _Record | FarFailure | None:
        """A record FaR gave less than ``sender_cache`` ago, else FaR's answer now (None: FaR has none)."""
        now = time.monotonic()
        cached = cache.get(key)
        if cached is not None and now - cached[0] < self.settings.sender_cache.total_seconds():
            return cached[1]
        try:
            found: _Record | None = await asyncio.wait_for(fetch(), self.settings.timeout.total_seconds())
        except NotFound:
            found = None
        except FarError as exc:
            return FarFailure(unavailable=False, detail=exc.detail)
        except (FarUnavailable, TimeoutError, OSError) as exc:
            log.warning("FaR cannot answer about %s: %s", what, exc or type(exc).__name__)
            return FarFailure(unavailable=True, detail=str(exc))
        except Exception:
            log.exception("FaR failed")
            return FarFailure(unavailable=True, detail="FaR failed")
        if len(cache) > limit:
            cache.clear()
        cache[key] = (now, found)
        return found

    async def is_reachable(self, sender: str, recipient: str) -> Reachability | FarFailure:
        """FaR's answer about one recipient, or why there is none (a span and the metrics when given)."""
        if self.metrics is None:
            return await self._one(sender, recipient)
        metrics = self.metrics
        with metrics.tracer.start_as_current_span("far.is_reachable"), metrics.duration.time():
            answer = await self._one(sender, recipient)
        if isinstance(answer, FarFailure):
            outcome = "unavailable" if answer.unavailable else "refused"
        else:
            outcome = "reachable" if answer.reachable else "not-reachable"
        metrics.outcomes.labels(outcome=outcome).inc()
        return answer

    async def _one(self, sender: str, recipient: str) -> Reachability | FarFailure:
        """FaR's answer about one recipient: asked with the others asked about meanwhile (see ``_Questions``)."""
        questions = self._questions.get(sender)
        if questions is None or questions.sent or len(questions.recipients) >= _BATCH:
            questions = self._questions[sender] = _Questions(sender)
            task = asyncio.create_task(self._ask(questions))
            self._asking.add(task)
            task.add_done_callback(self._asking.discard)
        return await questions.add(recipient)

    async def _ask(self, questions: _Questions) -> None:
        """Send a batch once one of the ``_IN_FLIGHT`` requests is free (questions gather while none is), and answer
        every question in it; whatever happens, none is left waiting."""
        try:
            async with self._in_flight:
                questions.sent = True
                if self._questions.get(questions.sender) is questions:
                    del self._questions[questions.sender]
                answer = await self.routes(questions.sender, questions.recipients)
            questions.answer(answer)
        except BaseException as exc:
            questions.answer(FarFailure(unavailable=True, detail=f"FaR failed: {type(exc).__name__}"))
            if not isinstance(exc, Exception):
                raise

    async def routes(self, sender: str, recipients: Sequence[str]) -> Routes | FarFailure:
        """FaR's answers about up to 1,000 recipients, in order, or why there are none."""
        try:
            lookup = await self._open()
            answer = await asyncio.wait_for(lookup.routes(sender, recipients), self.settings.timeout.total_seconds())
        except FarError as exc:
            return FarFailure(unavailable=False, detail=exc.detail)
        except (FarUnavailable, TimeoutError, OSError) as exc:
            log.warning("FaR cannot answer: %s", exc or type(exc).__name__)
            return FarFailure(unavailable=True, detail=str(exc))
        except Exception:  # a database failure of an in-process FaR, say: still a clear answer to the sender
            log.exception("FaR failed")
            return FarFailure(unavailable=True, detail="FaR failed")
        return answer

    async def operators(self) -> list[Operator]:
        """Every operator FaR knows; FarUnavailable (or OSError, TimeoutError) when FaR cannot answer."""
        lookup = await self._open()
        if isinstance(lookup, FarClient):
            return await asyncio.wait_for(lookup.operators(), self.settings.timeout.total_seconds())
        assert isinstance(lookup, FarService)
        return await lookup.list_operators()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        self._lookup = None


class Routing:
    """Dynamic partners for the send workers and, with ``routing`` settings, the router for incoming messages."""

    def __init__(
        self,
        discovery: DiscoverySettings | None,
        records: RouteRecords,
        *,
        revocation: RevocationSource | None = None,
        routing: RoutingSettings | None = None,
        seal: KeyPair | None = None,
        own: Sequence[KeyPair] = (),
        far_metrics: FarLookupMetrics | None = None,
    ) -> None:
        self.records = records
        self.resolver = PartnerResolver(discovery, records, revocation=revocation)
        self.settings = routing
        self.far = None if routing is None else _FarLookup(routing, far_metrics)
        # The intermediary's key seals Mina meddelanden deliveries; what this access point's backend sends is bound to
        # its senders through the access point's own signing certificates.
        self.seal = seal
        self.own_certificates = frozenset(
            certificate_sha256(pair.certificate) for pair in (*own, *([seal] if seal else []))
        )

    async def close(self) -> None:
        """Close the discovery client and FaR's."""
        await self.resolver.close()
        if self.far is not None:
            await self.far.close()

    def addresses(self, route: Route) -> AddressPolicy | None:
        """Where the endpoint of a dynamic partner on this leg may be connected to (see PartnerResolver)."""
        return self.resolver.addresses(route.pmode.network)

    async def resolve(
        self, store: MessageStore, message: StoredMessage, route: Route, *, at: datetime, sending: bool = True
    ) -> Route:
        """The leg with a dynamic partner filled in (see :meth:`PartnerResolver.resolve`); others unchanged.

        Before a forwarding attempt (``sending``) the router asks FaR whether the operator the route record names
        is still approved: a suspended or revoked operator fails the forward at once with EBMS:0004
        ``operator-suspended`` / ``operator-revoked`` (recorded with the message, never retried); FaR without an
        answer is RouteUnavailable (retried). A receipt from the operator for what was sent is still checked.
        """
        if not route.dynamic:
            return route
        if sending:
            await self._check_operator(message.message_id)

        async def header() -> UserMessage:
            return await stored_header(store, message)

        return await self.resolver.resolve(message.message_id, header, route, at=at)

    async def _check_operator(self, message_id: str) -> None:
        """EbmsError when the operator of this forward's route record is no longer approved (see ``resolve``)."""
        if self.far is None:
            return
        target = await self.records.get(message_id)
        if target is None:
            return
        found = await self.far.operator(target.operator_id)
        if isinstance(found, FarFailure):
            raise RouteUnavailable(f"FaR cannot say whether operator {target.operator_id} is approved: {found.detail}")
        refusal = operator_standing(target.operator_id, found)
        if refusal is not None:
            log.warning("%s (received as %s) not forwarded: %s", message_id, target.original_message_id, refusal)
            raise refusal

    # ------------------------------------------------------------------------------------------ the router

    def _routes(self, pmode_id: str | None) -> bool:
        settings = self.settings
        return settings is not None and (not settings.pmodes or pmode_id in settings.pmodes)

    async def decide(self, store: MessageStore, pmodes: PModeSet, verified: VerifiedLetter) -> Plan | None:
        """Where a received message goes; None when it stays here. EbmsError (EBMS:0004) refuses it.

        Digital post is checked before anything is stored: the sender against the register (who signed the
        message, :func:`check_sender`), the letter's envelope against its header (and sealed,
        :mod:`accesspoint.routing.letters`), then FaR about the recipient.
        """
        route, user = verified.route, verified.user_message
        if not self._routes(route.pmode.id):
            return None
        if await store.get(Direction.IN, user.message_id) is not None:
            return None  # a duplicate: it gets the stored receipt, and was routed the first time
        signer = None if verified.signature is None else certificate_sha256(verified.signature.signer.certificate)
        return await self._plan(
            pmodes, route, user, _read_parts(verified.new_payloads()), signer=signer,
            party_ids=user.party_info.sender.party_ids,
        )  # fmt: skip

    async def _plan(
        self,
        pmodes: PModeSet,
        route: Route,
        user: UserMessage,
        parts: AsyncIterator[LetterPart],
        *,
        signer: str | None,
        party_ids: tuple[PartyId, ...] | None,
        bound: bool = False,
    ) -> Plan | None:
        """The plan for a verified message; ``bound``: its sender binding was checked when it was received."""
        settings, far = self.settings, self.far
        assert settings is not None and far is not None
        sdk = route.pmode.network == "sdk" or route.leg.payload.format is PayloadFormat.XHE
        facts = MessageFacts.of(user, sdk=sdk)
        destination = classify(facts)
        answer = None
        letter = LetterCheck()
        decision: RoutingDecision | None = None
        if destination.needs_far and destination.sender and destination.recipient:
            decision, letter = await self._check_sender(
                facts, destination.sender, parts, signer=signer, party_ids=party_ids, bound=bound
            )
            if decision is None:
                answer = await far.is_reachable(destination.sender, destination.recipient)
        decision = decision or decide(facts, answer)
        if decision.kind is RouteKind.LOCAL:
            return None
        if not decision.refused:
            action = user.collaboration_info.action
            forward = forward_route(decision, pmodes, action=action, pmode_id=settings.forward_pmode)
            if forward is not None:
                sealed = f" ({letter.detail})" if letter.detail else ""
                log.info("%s routed: %s on %s%s", user.message_id, decision.describe(), forward.name, sealed)
                return Plan(decision, forward, letter.replaced)
            decision = no_agreement(decision)
        log.info("%s %s", user.message_id, decision.describe())
        raise decision.error()

    async def _check_sender(
        self,
        facts: MessageFacts,
        sender: str,
        parts: AsyncIterator[LetterPart],
        *,
        signer: str | frozenset[str] | None,
        party_ids: tuple[PartyId, ...] | None,
        bound: bool,
    ) -> tuple[RoutingDecision | None, LetterCheck]:
        """The sender's record, the binding (unless ``bound``) and the letter's envelope: a refusal, or None and
        what the letter check found."""
        settings, far = self.settings, self.far
        assert settings is not None and far is not None
        if not settings.sender_binding:
            return None, LetterCheck()
        found = await far.sender(sender)
        if isinstance(found, FarFailure):
            reason = Refusal.FAR_UNAVAILABLE if found.unavailable else Refusal.INVALID_SENDER
            return refuse(facts, facts.final_recipient, reason, UNAVAILABLE if found.unavailable else found.detail), (
                LetterCheck()
            )
        refusal: RoutingDecision | None = None
        read = [part async for part in parts]
        check = partial(
            check_letter,
            read,
            sender=sender,
            recipient=facts.final_recipient,
            signing_certificates=() if found is None else found.sender.signing_certificates,
            seal=self.seal,
            today=datetime.now(UTC).date(),
        )
        try:
            # Parsing, verifying and sealing a letter is off the event loop; with nothing to read, nothing is.
            letter = await asyncio.to_thread(check) if read else check()
        except LetterRefused as refused:
            letter, refusal = LetterCheck(), refuse(facts, facts.final_recipient, refused.reason, refused.detail)
        if not bound:
            binding = check_sender(
                facts, sender, found, certificate_sha256=signer, party_ids=party_ids, network=letter.network
            )
            refusal = binding or refusal  # who may send comes before what was sent
        return refusal, letter

    async def forward(
        self, access_point: Submitter, plan: Plan, received: StoredMessage, user: UserMessage, *, now: datetime
    ) -> StoredMessage | None:
        """Submit the forwarded message and record where it went; None (logged) when it could not be submitted."""
        store = access_point.store
        assert store is not None
        decision = plan.decision
        message_id = forwarded_id(received.message_id)
        outcome = decision.describe()
        hooks: list[TransactionHook] = []
        if decision.kind is RouteKind.OPERATOR and decision.operator is not None and decision.endpoint is not None:
            operator = decision.operator
            target = RouteTarget(
                message_id, received.message_id, operator.id, operator.name, operator.party_id, decision.endpoint
            )
            # Recorded with the forwarded message, in its transaction: every attempt (and a restart) finds it.
            hooks.append(self.records.hook(target, now=now))
            outcome = target.describe()
        properties = {
            p.name: {"value": p.value, "type": p.type} if p.type else p.value for p in user.message_properties
        }
        document = {
            "pmode": plan.route.pmode.id,
            "message_id": message_id,
            "conversation_id": user.collaboration_info.conversation_id,
            "properties": properties,
        }
        files = [
            NewPayload(
                p.content_id,
                "application/xml" if p.content_id in plan.replaced else p.mime_type,
                _once(plan.replaced[p.content_id]) if p.content_id in plan.replaced else store.reusable(p),
                p.properties,
            )
            for p in await store.payloads(received)
        ]
        try:
            forwarded = await access_point.submit(document, files, hooks=hooks)
        except Exception:
            log.exception("%s: forwarding on %s failed", received.message_id, plan.route.name)
            return None
        await store.transition(received, MessageState.DELIVERED_TO_BACKEND, now=now, detail=outcome)
        log.info("%s %s", received.message_id, outcome)
        return forwarded

    async def recover(self, access_point: Submitter, *, now: datetime, received_before: datetime | None = None) -> int:
        """Forward what was received but not forwarded (the receipt had gone); how many were forwarded.

        Only messages received before ``received_before`` (default ``now``) are looked at: a newer one's own
        request is forwarding it. A message that can no longer be routed (FaR now says no, or cannot answer) is
        logged and left for the backend: its sender already has the receipt.
        """
        before = now if received_before is None else received_before
        store = access_point.store
        if self.settings is None or store is None:
            return 0
        forwarded = 0
        after = 0
        while batch := await store.search(direction=Direction.IN, state=MessageState.RECEIVED, after_pk=after):
            after = batch[-1].pk
            for message in batch:
                if not self._routes(message.pmode_id) or message.created_at >= before:
                    continue  # not routed here, or received too recently (its own request forwards it)
                try:
                    forwarded += await self._recover_one(access_point, store, message, now=now)
                except EbmsError as refusal:
                    log.warning("%s was received but can no longer be routed: %s", message.message_id, refusal)
                except Exception:
                    log.exception("%s: re-routing after a restart failed", message.message_id)
        return forwarded

    async def _recover_one(
        self, access_point: Submitter, store: MessageStore, message: StoredMessage, *, now: datetime
    ) -> int:
        done = await store.get(Direction.OUT, forwarded_id(message.message_id))
        if done is not None:  # forwarded, but stopped before the received message was moved on
            await store.transition(
                message, MessageState.DELIVERED_TO_BACKEND, now=now, detail="forwarded as " + done.message_id
            )
            return 0
        pmode = access_point.pmodes.get(message.pmode_id or "")
        if pmode is None or (message.leg or 0) >= len(pmode.legs):
            return 0
        kept = await store.evidence(Direction.IN, message.message_id, EvidenceKind.RAW_MESSAGE)
        if not kept:
            return 0
        user = parse_envelope(b"".join([c async for c in store.read(kept[0])])).messaging.message
        if not isinstance(user, UserMessage):
            return 0
        parts = _read_parts(
            [NewPayload(p.content_id, p.mime_type, store.read(p), p.properties) for p in await store.payloads(message)]
        )
        route = Route(pmode, pmode.legs[message.leg or 0])
        # Its sender was bound to the signing access point before the receipt; the seal is made again.
        plan = await self._plan(access_point.pmodes, route, user, parts, signer=None, party_ids=None, bound=True)
        if plan is None:
            return 0
        log.info("%s was received but not forwarded before a stop: forwarding it now", message.message_id)
        return 0 if await self.forward(access_point, plan, message, user, now=now) is None else 1

    async def keep_forwarding(self, access_point: Submitter, clock: Clock, *, every: timedelta) -> None:
        """:meth:`recover` at start (what a stop left), then every ``every`` (what a failed forward left, e.g.
        during a database outage: the message was stored and receipted, its forward was not).

        Each later round looks only at messages received more than ``every`` ago. A message forwarded twice at
        once cannot become two: the forward's MessageId is derived from the received one and submissions are
        idempotent. Whatever fails is logged, and the next round tries again.
        """
        cutoff = clock.now()
        while True:
            try:
                count = await self.recover(access_point, now=clock.now(), received_before=cutoff)
            except Exception:
                log.exception("re-routing received but unforwarded messages failed; again in %s", every)
            else:
                if count:
                    log.info("forwarded %d received message(s) left unforwarded", count)
            await clock.sleep_until(clock.now() + every)
            cutoff = clock.now() - every

    # ------------------------------------------------------------------------------- backend submissions

    async def route_submission(self, pmodes: PModeSet, document: dict[str, Any]) -> RoutedSubmission:
        """A backend submission with ``"route": true``, routed like a received message; others unchanged.

        Returns the submission with the forwarding P-Mode and its MessageId, and the route target to record with the
        message; ValueError (422 for the backend) when it is refused, with the router's reason.
        """
        if "route" not in document:
            return RoutedSubmission(document)
        if document.get("route") is not True:
            raise ValueError("route: true, or leave it out")
        if self.settings is None:
            raise ValueError("route: this access point has no routing settings")
        properties = document.get("properties")
        facts = MessageFacts(
            message_id=str(document.get("message_id") or new_message_id()),
            final_recipient=_value(properties, FINAL_RECIPIENT),
            final_recipient_type=_type(properties, FINAL_RECIPIENT),
            original_sender=_value(properties, ORIGINAL_SENDER),
            original_sender_type=_type(properties, ORIGINAL_SENDER),
            sdk=document.get("network") == "sdk",
        )
        destination = classify(facts)
        if destination.kind is RouteKind.LOCAL:
            raise ValueError("properties.finalRecipient: required to route a submission")
        answer = None
        decision: RoutingDecision | None = None
        if self.far is not None and destination.needs_far and destination.sender and destination.recipient:
            # A backend of this access point sends for a sender connected here: the sender's record must name
            # this access point's own certificate (no PartyId: nothing came over AS4).
            empty = _read_parts([])
            decision, _letter = await self._check_sender(
                facts, destination.sender, empty, signer=self.own_certificates, party_ids=None, bound=False
            )
            if decision is None:
                answer = await self.far.is_reachable(destination.sender, destination.recipient)
        decision = decision or decide(facts, answer)
        if not decision.refused:
            action = str(document.get("action") or "")
            forward = forward_route(decision, pmodes, action=action, pmode_id=self.settings.forward_pmode)
            if forward is None:
                decision = no_agreement(decision)
        if decision.refused:
            raise ValueError(f"refused: {decision.error().detail}")
        assert forward is not None
        target = None
        if decision.kind is RouteKind.OPERATOR and decision.operator is not None and decision.endpoint is not None:
            operator = decision.operator
            target = RouteTarget(
                facts.message_id, facts.message_id, operator.id, operator.name, operator.party_id, decision.endpoint
            )
        log.info("submission %s routed: %s on %s", facts.message_id, decision.describe(), forward.name)
        routed = {k: v for k, v in document.items() if k != "route"}
        return RoutedSubmission({**routed, "pmode": forward.pmode.id, "message_id": facts.message_id}, target)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _read_parts(payloads: Sequence[NewPayload]) -> AsyncIterator[LetterPart]:
    """The payloads the letter check may read (XML, not too large), read into memory one at a time."""
    for payload in payloads:
        if not worth_reading(payload.mime_type, 0):
            continue
        data = bytearray()
        async for chunk in payload.chunks:
            data += chunk
            if len(data) > MAX_LETTER_BYTES:
                break
        else:
            yield LetterPart(payload.content_id, payload.mime_type, bytes(data))


def _value(properties: object, name: str) -> str | None:
    given = properties.get(name) if isinstance(properties, dict) else None
    if isinstance(given, dict):
        given = given.get("value")
    return given.strip() if isinstance(given, str) else None


def _type(properties: object, name: str) -> str | None:
    given = properties.get(name) if isinstance(properties, dict) else None
    kind = given.get("type") if isinstance(given, dict) else None
    return kind if isinstance(kind, str) and kind else None
