"""The running access point: the aiohttp shell around the sans-I/O core, the store and the send workers.

POST /as4 receives AS4: user messages are answered with a synchronous signed receipt or error signal,
PullRequests with the oldest message waiting on their MPC (or EBMS:0006), receipts and errors for messages we
sent are matched by RefToMessageId and settle them. The backend REST API under /api/v1 submits (JSON or
multipart), lists, reads, downloads and acknowledges; workers push what was submitted, with reception awareness
(retries, MissingReceipt) driven by each leg's P-Mode, pull from partners whose legs are pull, purge per P-Mode
retention, and tell the backend's webhooks what happened.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import os
import random
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from accesspoint.core.compression import decompress_stream
from accesspoint.core.envelope import build_envelope, parse_envelope, serialize
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import MessageReader, ReceivedMessage, ReceivedPart, read_message
from accesspoint.core.mime import PartStart
from accesspoint.core.model import (
    CollaborationInfo,
    PartyInfo,
    Property,
    ReferenceEcho,
    SignalMessage,
    UserMessage,
)
from accesspoint.core.model import (
    MessageInfo as HeaderInfo,
)
from accesspoint.core.namespaces import GZIP, SoapVersion
from accesspoint.core.signals import signed_references
from accesspoint.httpclient import fetch, new_session, open_request
from accesspoint.msh import end_to_end
from accesspoint.msh.config import ConfigError, ServerConfig, WebhookEvent
from accesspoint.msh.openapi import OPENAPI
from accesspoint.msh.receiving import (
    accept_user_message,
    error_response,
    new_message_id,
    pull_request,
    reply_policy,
    signed_signal,
    verify_signal,
)
from accesspoint.msh.tls import client_context, server_context
from accesspoint.msh.webhooks import WebhookNotifier
from accesspoint.routing.outbound import RouteRecords, RouteUnavailable, addressed, submission_receiver
from accesspoint.routing.shell import Routing, forwarded_id
from accesspoint.security.fetch import UrlFetcher
from accesspoint.security.outbound import Payload, SecuredMessage, secure_message
from accesspoint.security.policy import RevocationMode
from accesspoint.security.receipts import verify_receipt
from accesspoint.security.revocation import RevocationChecker
from accesspoint.security.trust import CertificateUsage, TrustError, TrustFailure, validate_certificate
from accesspoint.store import (
    Direction,
    DuplicateMessage,
    EvidenceKind,
    MemorySendQueue,
    MessageInfo,
    MessageState,
    MessageStore,
    NewEvidence,
    NewPayload,
    PurgeReport,
    StoredMessage,
    SystemClock,
    claim_next,
)
from accesspoint.store import Retention as StoreRetention
from accesspoint.store.clock import Clock
from accesspoint.store.queue import SendQueue
from pmode import Binding, MatchStatus, PModeSet, Route, load_if_changed, load_pmodes

log = logging.getLogger("accesspoint.msh")

READ_CHUNK = 64 * 1024
SPOOL_READ_CHUNK = 256 * 1024
SPOOL_IN_MEMORY = 1024 * 1024
METADATA_LIMIT = 1024 * 1024
ANSWER_LIMIT = 4 * 1024 * 1024  # a partner's synchronous answer to a push (a signal): more is a failed attempt
FOREVER = timedelta(days=100 * 366)  # a P-Mode retention of "forever", as a retain_until the database can hold
SUBMITTED_HEADERS = 4096  # headers as submitted kept in memory for their first attempt (the oldest go first)


class AccessPoint:
    """One access point instance: its settings, P-Modes, store, queue and HTTP client."""

    def __init__(self, config: ServerConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.pmodes: PModeSet = load_pmodes(config.pmodes)
        self.store: MessageStore | None = None
        self.queue: SendQueue = MemorySendQueue(self.clock)
        self.revocation = RevocationChecker(UrlFetcher()) if config.revocation else None
        self.session: aiohttp.ClientSession | None = None
        self.webhooks = WebhookNotifier(config.webhooks, clock=self.clock, outbox=config.storage / "webhooks")
        # Dynamic partners (BDXL + SMP) and the router; route records of forwarded messages live in storage.
        self.routing = Routing(
            config.discovery,
            RouteRecords(config.storage / "routing"),
            revocation=self.revocation,
            routing=config.routing,
        )
        self._tasks: list[asyncio.Task[None]] = []
        # The serialised header of each message submitted here, until its first attempt: the bytes kept as its
        # evidence, so the sender need not read them back (retries and other instances do).
        self._submitted: dict[str, bytes] = {}

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store, the HTTP client and the queue; re-queue what a previous run left unsent."""
        self.config.storage.mkdir(parents=True, exist_ok=True)
        self.store = await MessageStore.open(
            self.config.database_url,
            self.config.storage / "files",
            instance=self.config.instance,
            durability=self.config.durability,
        )
        if self.config.redis_url:
            from accesspoint.store.redis_queue import RedisSendQueue

            # An entry held unacknowledged for a lease was taken by an instance that died: others take it over.
            self.queue = RedisSendQueue.from_url(
                self.config.redis_url, consumer=self.config.instance, clock=self.clock, claim_idle=self.config.lease
            )
        tls = client_context(self.config.tls_trust, self.config.tls_client or self.config.tls)
        self.session = new_session(timeout=self.config.send_timeout.total_seconds(), ssl_context=tls, limit=64)
        await self._requeue()
        self.webhooks.start(self.session)
        self._tasks = [asyncio.create_task(self._send_worker(i)) for i in range(self.config.send_workers)]
        self._tasks.append(asyncio.create_task(self._watch_pmodes()))
        self._tasks.append(asyncio.create_task(self._pull_loop()))
        self._tasks.append(asyncio.create_task(self._purge_loop()))
        self._tasks.append(asyncio.create_task(self._recovery_loop()))
        # Routed messages a stop left received but not forwarded (their senders have the receipt) go on now.
        self._tasks.append(asyncio.create_task(self.routing.resume(self, now=self.clock.now())))

    async def _requeue(self, idle: timedelta | None = None) -> None:
        """Queue the outgoing messages that are due (and untouched for idle, when given) for the send workers."""
        for message_id in await self._store.recoverable(now=self.clock.now(), idle=idle):
            message = await self._store.get(Direction.OUT, message_id)
            route = None if message is None else self._route(message)
            if route is not None and route.pmode.binding is Binding.PULL:
                continue  # the partner pulls it; no worker pushes it
            await self.queue.put(message_id)

    async def _recovery_loop(self) -> None:
        # The queue can lose an entry whose message still needs sending: a retry this process scheduled before it
        # was killed and restarted, a lease that had not run out at the restart, an entry a dead instance held.
        # The database knows what is due; what stayed untouched for a whole lease is queued again (a duplicate
        # entry is harmless: the claim decides who sends).
        while True:
            await self.clock.sleep_until(self.clock.now() + self.config.lease)
            try:
                await self._requeue(idle=self.config.lease)
            except Exception:
                log.exception("re-queueing due messages failed; trying again in %s", self.config.lease)

    async def stop(self) -> None:
        """Stop the workers, then close the client, the queue and the store."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.webhooks.close()
        await self.routing.close()
        if self.session is not None:
            await self.session.close()
        await self.queue.close()
        if self.store is not None:
            await self.store.close()

    async def _watch_pmodes(self) -> None:
        while True:
            await asyncio.sleep(2)
            reload = load_if_changed(self.config.pmodes, self.pmodes)
            if reload.error is not None:
                log.error("P-Mode file %s not reloaded: %s", self.config.pmodes, reload.error)
            elif reload.changed:
                self.pmodes = reload.pmodes
                log.info("P-Modes reloaded from %s", self.config.pmodes)

    @property
    def _store(self) -> MessageStore:
        assert self.store is not None, "AccessPoint.start() first"
        return self.store

    def _route(self, message: StoredMessage) -> Route | None:
        """The P-Mode leg a stored message travels on (None when its P-Mode is gone)."""
        pmode = self.pmodes.get(message.pmode_id or "")
        index = message.leg or 0
        if pmode is None or index >= len(pmode.legs):
            return None
        return Route(pmode, pmode.legs[index])

    def _evidence_retention(self, route: Route | None) -> timedelta:
        """How long evidence is kept: the P-Mode's evidence retention, else the server's setting."""
        if route is None:
            return self.config.evidence_retention
        kept = route.pmode.retention.evidence
        return FOREVER if kept is None else kept

    # ---------------------------------------------------------------------------------------- receiving

    async def handle_as4(self, request: web.Request) -> web.StreamResponse:
        """POST /as4: answer a user message, a PullRequest, a receipt or an error signal (see the module)."""
        content_type = request.headers.get("Content-Type", "")
        soap_version = SoapVersion.V11 if "text/xml" in content_type.lower() else SoapVersion.V12
        try:
            return await self._answer_as4(request, content_type, soap_version)
        except Exception:
            # AS4 answers with a signed ebMS error signal wherever one can be built; this is what is left (a bug,
            # the store or a key unusable): a SOAP Fault with HTTP 500, which senders treat as transient.
            log.exception("internal error while answering an AS4 request")
            return _soap_fault(soap_version)

    async def _answer_as4(
        self, request: web.Request, content_type: str, soap_version: SoapVersion
    ) -> web.StreamResponse:
        now = self.clock.now()
        received: ReceivedMessage | None = None
        try:
            received = await self._read(request, content_type)
            soap_version = received.parsed.messaging.soap_version
            message = received.parsed.messaging.message
            if isinstance(message, SignalMessage):
                return await self._handle_signal(request, received, message, now)
            receipt = await self._accept(received, now)
        except EbmsError as error:
            # An empty MPC is the normal answer to most PullRequests, not a refusal.
            level = logging.DEBUG if error.error_code is ErrorCode.EMPTY_MPC else logging.WARNING
            log.log(level, "refused an incoming message: %s", error)
            # The error is signed as the leg's profile signs (Ed25519 on a 2.0 leg), where a P-Mode matches.
            policy = reply_policy(received, self.pmodes)
            try:
                signing = self.config.keys.signing_key(policy)
            except ConfigError:
                signing, policy = self.config.keys.signing_key(), None
            body = error_response(error, keys=signing, policy=policy, soap_version=soap_version, at=now)
            return _soap(body, soap_version)
        return _soap(receipt, soap_version)

    async def _accept(self, received: ReceivedMessage, now: datetime, *, pulled_on: str | None = None) -> bytes:
        """Check, store and acknowledge a user message, pushed to us or pulled: the signed receipt to send back.

        ``pulled_on`` is the MPC of the PullRequest that returned it (None when pushed): a message must travel
        the way its leg's binding says. EbmsError when it is refused; then nothing is stored. A repeated
        MessageId gets the stored receipt.
        """
        soap_version = received.parsed.messaging.soap_version
        accepted = accept_user_message(
            received,
            self.pmodes,
            keys=self.config.keys.decryption_keys(),
            at=now,
            revocation=self.revocation,
            read_part=_read_spooled,
        )
        route, user = accepted.route, accepted.user_message
        _check_binding(route, user, pulled_on)
        await self._check_reply(route, user)
        # The router asks FaR (or picks discovery) before the receipt: a refusal is EBMS:0004 with the reason.
        plan = await self.routing.decide(self._store, self.pmodes, route, user)
        policy = route.security
        receipt_bytes = signed_signal(accepted.receipt, self.config.keys.signing_key(policy), policy, soap_version)
        retention = self._evidence_retention(route)
        # A new message is stored with its raw form and our receipt in one transaction (one commit, and never
        # one without the others); a repetition stores nothing here.
        evidence = [
            NewEvidence(EvidenceKind.RAW_MESSAGE, _once(received.envelope_bytes), retention),
            NewEvidence(EvidenceKind.OUR_RECEIPT, _once(receipt_bytes), retention),
        ]
        reception = await self._store.receive(
            _info(user, route), list(_new_payloads(accepted)), now=now, evidence=evidence
        )
        if reception.duplicate and reception.receipt is not None:
            log.info("duplicate %s: answering with the stored receipt", user.message_id)
            return b"".join([c async for c in self._store.read(reception.receipt)])
        if reception.duplicate:
            # The first reception stopped (a crash) between storing the message and keeping its receipt: this
            # one finishes it, keeping the evidence and telling the backend, as the first would have.
            log.warning("duplicate %s without a stored receipt: keeping this reception's evidence", user.message_id)
            if not await self._store.evidence(Direction.IN, user.message_id, EvidenceKind.RAW_MESSAGE):
                await self._store.add_evidence(
                    Direction.IN, user.message_id, EvidenceKind.RAW_MESSAGE, _once(received.envelope_bytes),
                    now=now, retain_for=retention,
                )  # fmt: skip
            await self._store.add_evidence(
                Direction.IN, user.message_id, EvidenceKind.OUR_RECEIPT, _once(receipt_bytes),
                now=now, retain_for=retention,
            )  # fmt: skip
        self.webhooks.notify(WebhookEvent.MESSAGE_RECEIVED, _message_json(reception.message))
        if plan is not None:
            await self.routing.forward(self, plan, reception.message, user, now=now)
        if user.message_info.ref_to_message_id is not None and not reception.duplicate:
            await self._answered(reception.message, now)
        return receipt_bytes

    async def _answered(self, reply: StoredMessage, now: datetime) -> None:
        """A reply to a message we sent: the operator's end-to-end answer is checked and kept with the original
        (and announced); a router hands the answer to a forwarded message back to its original sender."""
        try:
            record = await end_to_end.check_reply(
                self._store,
                reply,
                end_to_end.operator_certificates(self.pmodes, self.config.operator_certificates),
                now=now,
            )
            if record is not None:
                self.webhooks.notify(
                    WebhookEvent.END_TO_END_RECEIPT,
                    {"message_id": record.message_id, "end_to_end": end_to_end.to_json(record)},
                )
            await self._relay_answer(reply)
        except Exception:  # the receipt for the reply is given regardless; the answer stays stored as received
            log.exception("checking the reply %s to %s failed", reply.message_id, reply.ref_to_message_id)

    async def _relay_answer(self, reply: StoredMessage) -> None:
        """The router: a reply to ``fwd-<id>`` goes back to the sender of ``<id>`` on its two-way P-Mode, payloads
        as they came, as ``rev-<reply id>`` (the same reply relayed twice is a duplicate, never a second answer)."""
        ref = reply.ref_to_message_id or ""
        original = ref.removeprefix("fwd-")
        if self.config.routing is None or original == ref or forwarded_id(original) != ref:
            return
        request = await self._store.get(Direction.IN, original)
        pmode = None if request is None else self.pmodes.get(request.pmode_id or "")
        if request is None or pmode is None or pmode.binding is not Binding.PUSH_AND_PUSH:
            return  # a one-way sender has no reply leg: the answer stays here, with the forwarded message
        files = [
            NewPayload(p.content_id, p.mime_type, self._store.read(p), p.properties)
            for p in await self._store.payloads(reply)
        ]
        try:
            await self.submit(
                {"pmode": pmode.id, "ref_to_message_id": original, "message_id": f"rev-{reply.message_id}"}, files
            )
        except DuplicateMessage:
            return
        log.info("relayed the answer %s to %s back to its sender", reply.message_id, original)

    async def _check_reply(self, route: Route, user: UserMessage) -> None:
        """Two-way push-and-push: the reply (leg 2) must refer to a request this access point sent (ebMS 3 2.2.3)."""
        if route.pmode.binding is not Binding.PUSH_AND_PUSH or route.leg.index != 1:
            return
        ref = user.message_info.ref_to_message_id
        if ref is None or await self._store.get(Direction.OUT, ref) is None:
            raise EbmsError(
                ErrorCode.VALUE_INCONSISTENT,
                "the reply does not refer to a request sent to this partner",
                ref_to_message_id=user.message_id,
                log_detail=f"RefToMessageId {ref!r} names no message we sent",
            )

    async def _handle_signal(
        self, request: web.Request, received: ReceivedMessage, signal: SignalMessage, now: datetime
    ) -> web.StreamResponse:
        """A PullRequest gets a user message or EBMS:0006; a receipt or error settles the message it refers to."""
        if signal.pull_request is not None:
            return await self._serve_pull(request, received, signal, now)
        ref = signal.message_info.ref_to_message_id or next(
            (e.ref_to_message_in_error for e in signal.errors if e.ref_to_message_in_error), None
        )
        message = None if ref is None else await self._store.get(Direction.OUT, ref)
        route = None if message is None else self._route(message)
        if message is None or route is None:
            raise EbmsError(
                ErrorCode.VALUE_INCONSISTENT,
                "the signal refers to no message sent from here",
                ref_to_message_id=signal.message_id,
                log_detail=f"{signal.kind} {signal.message_id} refers to {ref!r}",
            )
        try:
            if route.dynamic:  # the partner's certificate is the one its route record or discovery gives
                route = await self._resolved(message, route)
            if signal.errors:
                verify_signal(received, route, at=now, revocation=self.revocation)
                await self._error_signal(message, route, signal, received.envelope_bytes, now)
            else:
                references = await self._sent_references(message)
                partner = [c for c in (route.partner_signing_certificate,) if c is not None]
                verify_receipt(
                    received.parsed,
                    route.security,
                    sent_message_id=message.message_id,
                    sent_references=references,
                    partner_certificates=partner,
                )
                await self._delivered(message, route, received.envelope_bytes, now, "asynchronous receipt")
        except EbmsError as error:
            error.ref_to_message_id = signal.message_id
            raise
        # The signal was taken; there is nothing to answer it with (ebMS 3: signals are not acknowledged).
        return web.Response(status=200)

    async def _resolved(self, message: StoredMessage, route: Route) -> Route:
        """A dynamic partner filled in for checking its asynchronous signal (EbmsError when it cannot be now)."""
        try:
            return await self.routing.resolve(self._store, message, route, at=self.clock.now())
        except RouteUnavailable as exc:
            raise EbmsError(ErrorCode.OTHER, "the partner cannot be looked up now", log_detail=str(exc)) from None

    async def _keep(self, message: StoredMessage, route: Route, kind: EvidenceKind, data: bytes, now: datetime) -> None:
        """Keep evidence about an outgoing message for as long as its P-Mode says."""
        await self._store.add_evidence(
            Direction.OUT, message.message_id, kind, _once(data), now=now, retain_for=self._evidence_retention(route)
        )

    async def _error_signal(
        self, message: StoredMessage, route: Route, signal: SignalMessage, envelope: bytes, now: datetime
    ) -> None:
        await self._keep(message, route, EvidenceKind.ERROR_SIGNAL, envelope, now)
        failures = [e for e in signal.errors if e.severity.lower() == "failure"]
        if not failures:
            log.info("%s: warning signal %s", message.message_id, [e.error_code for e in signal.errors])
            return
        first = failures[0]
        if message.state not in (MessageState.SENDING, MessageState.AWAITING_RECEIPT):
            log.info(
                "%s: error %s arrived while %s; kept as evidence", message.message_id, first.error_code, message.state
            )
            return
        detail = first.detail or first.short_description or "error signal from the partner"
        await self._record_failure(message, first.error_code, detail)

    async def _sent_references(self, message: StoredMessage) -> tuple[ReferenceEcho, ...]:
        """The references we signed in the last copy sent of a message (kept when its receipt comes later)."""
        kept = await self._store.evidence(Direction.OUT, message.message_id, EvidenceKind.RAW_MESSAGE)
        if len(kept) < 2:  # the first is the header as submitted, unsigned
            return ()
        envelope = b"".join([c async for c in self._store.read(kept[-1])])
        return signed_references(parse_envelope(envelope))

    async def _remember_sent(self, message: StoredMessage, route: Route, envelope: bytes) -> None:
        """Keep the signed envelope as sent: an asynchronous receipt must echo its references."""
        await self._keep(message, route, EvidenceKind.RAW_MESSAGE, envelope, self.clock.now())

    async def _delivered(self, message: StoredMessage, route: Route, receipt: bytes, now: datetime, how: str) -> None:
        if message.state not in (MessageState.SENDING, MessageState.AWAITING_RECEIPT):
            await self._keep(message, route, EvidenceKind.PARTNER_RECEIPT, receipt, now)
            log.info("%s: %s arrived while %s; kept as evidence", message.message_id, how, message.state)
            return
        # The receipt is kept in the move's transaction (kept even if another writer moved the message first).
        evidence = [NewEvidence(EvidenceKind.PARTNER_RECEIPT, _once(receipt), self._evidence_retention(route))]
        moved = await self._store.transition(message, MessageState.DELIVERED, now=now, detail=how, evidence=evidence)
        if moved is not None:
            self.webhooks.notify(WebhookEvent.RECEIPT, _message_json(moved))

    # ------------------------------------------------------------------------------------------------ pull

    async def _serve_pull(
        self, request: web.Request, received: ReceivedMessage, signal: SignalMessage, now: datetime
    ) -> web.StreamResponse:
        """Answer an authorised PullRequest with the oldest message waiting on its MPC (ebMS 3 3.4, AS4 2.1)."""
        assert signal.pull_request is not None
        mpc = signal.pull_request.mpc
        why = f"no P-Mode serves pulls on {mpc!r}"
        authorised: list[Route] = []
        for route in self.pmodes.pull_requests_to_serve(mpc):
            try:
                verify_signal(received, route, at=now, revocation=self.revocation)
            except EbmsError as exc:
                why = f"{route.name}: {exc.log_detail}"
                continue
            authorised.append(route)
        if not authorised:
            # The same answer whether the MPC is unknown or the signer wrong: a puller learns nothing from it.
            raise EbmsError(
                ErrorCode.FAILED_AUTHENTICATION,
                "the PullRequest is not authorised",
                ref_to_message_id=signal.message_id,
                log_detail=why,
            )
        claimed = await self._claim_pullable(authorised, now)
        empty = EbmsError(ErrorCode.EMPTY_MPC, f"nothing waits on {mpc}", ref_to_message_id=signal.message_id)
        if claimed is None:
            raise empty
        message, route = claimed
        try:
            secured = await self._secure(message, route, received.parsed.messaging.soap_version)
            # Packed into a spool (memory, or a file past 1 MiB) in a thread: the crypto does not hold up the
            # loop, memory does not grow with the payload, and the signed envelope is kept as evidence before
            # the puller can have it and send its receipt.
            spool, envelope = await asyncio.to_thread(_spool_packed, secured)
        except (ValueError, EbmsError) as exc:
            # It would fail the same way on every pull (no certificate to encrypt to, say): fail it, not the pull.
            await self._fail(message, EbmsError(ErrorCode.OTHER, f"cannot be prepared for pulling: {exc}"))
            raise empty from None
        with spool:
            await self._keep(message, route, EvidenceKind.RAW_MESSAGE, envelope, now)
            await self._offered(message, route, now, mpc)
            response = web.StreamResponse(status=200, headers={"Content-Type": secured.packed.content_type})
            response.content_length = spool.tell()
            spool.seek(0)
            await response.prepare(request)
            while chunk := spool.read(READ_CHUNK):
                await response.write(chunk)
            await response.write_eof()
        return response

    async def _offered(self, message: StoredMessage, route: Route, now: datetime, mpc: str) -> None:
        """A message handed to a puller waits for its receipt; without one it is offered again after the delay."""
        awareness = route.leg.reception_awareness
        due = None
        if awareness.enabled:
            # Offered again to the next PullRequest after the retry delay unless its receipt came meanwhile.
            due = now + awareness.retry_delay(message.attempts - 1, random.random())  # noqa: S311 (jitter)
        await self._store.transition(
            message, MessageState.AWAITING_RECEIPT, now=now, next_attempt_at=due, detail=f"pulled on {mpc}"
        )
        log.info("%s pulled on %s (attempt %d)", message.message_id, mpc, message.attempts)

    async def _claim_pullable(self, routes: Sequence[Route], now: datetime) -> tuple[StoredMessage, Route] | None:
        """Claim the oldest message of these legs that is due: submitted, offered before without receipt, stale."""
        legs = {(r.pmode.id, r.leg.index): r for r in routes}
        candidates: list[StoredMessage] = []
        for pmode_id in {r.pmode.id for r in routes}:
            for state in (MessageState.SUBMITTED, MessageState.AWAITING_RECEIPT, MessageState.SENDING):
                found = await self._store.search(direction=Direction.OUT, state=state, pmode_id=pmode_id, limit=50)
                candidates.extend(found)
        for candidate in sorted(candidates, key=lambda m: m.pk):
            route = legs.get((candidate.pmode_id or "", candidate.leg or 0))
            if route is None:
                continue
            message = await self._store.claim(candidate.message_id, now=now, lease=self.config.lease)
            if message is None:
                continue
            awareness = route.leg.reception_awareness
            if awareness.enabled and message.attempts > awareness.retries + 1:
                reason = f"no receipt after {message.attempts - 1} pulls"
                await self._fail(message, EbmsError(ErrorCode.MISSING_RECEIPT, reason))
                continue
            return message, route
        return None

    async def _pull_loop(self) -> None:
        """Pull from every partner whose legs are pull; drain while messages come, else wait the interval."""
        while True:
            pulled = False
            for route in self.pmodes.pull_requests_to_send():
                try:
                    pulled = await self.pull_once(route) or pulled
                except Exception:
                    log.exception("pulling %s failed", route.name)
            if not pulled:
                await asyncio.sleep(self.config.pull_interval.total_seconds())

    async def pull_once(self, route: Route) -> bool:
        """Send one signed PullRequest for the leg's MPC; take the message it returns and POST our receipt back.

        True when a user message came (accepted or refused), False for EBMS:0006 or a failure to reach the partner.
        """
        endpoint = route.endpoint
        if endpoint is None:
            return False
        policy = route.security
        now = self.clock.now()
        request = signed_signal(
            pull_request(route.leg.mpc, at=now), self.config.keys.signing_key(policy), policy, SoapVersion.V12
        )
        assert self.session is not None
        headers = {"Content-Type": f"{SoapVersion.V12.content_type}; charset=UTF-8"}
        try:
            async with open_request(self.session, "POST", endpoint, data=request, headers=headers) as response:
                if response.status != 200:
                    log.warning("PullRequest to %s: HTTP %d", endpoint, response.status)
                    return False
                reader = MessageReader(response.headers.get("Content-Type", ""), sink_factory=_spool)
                size = 0
                async for chunk in response.content.iter_chunked(READ_CHUNK):
                    size += len(chunk)
                    if size > self.config.max_message_size:
                        raise EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, "the pulled message is too large")
                    reader.feed(chunk)
                received = reader.finish()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("PullRequest to %s failed: %s", endpoint, exc)
            return False
        except EbmsError as exc:
            log.warning("PullRequest to %s: unreadable answer: %s", endpoint, exc)
            return False
        message = received.parsed.messaging.message
        if isinstance(message, SignalMessage):
            codes = [e.error_code for e in message.errors]
            if codes != [ErrorCode.EMPTY_MPC.code]:
                log.warning("PullRequest to %s answered with %s", endpoint, codes or message.kind)
            return False
        soap_version = received.parsed.messaging.soap_version
        now = self.clock.now()
        try:
            answer = await self._accept(received, now, pulled_on=route.leg.mpc)
        except EbmsError as error:
            log.warning("refused a pulled message: %s", error)
            answer = error_response(
                error, keys=self.config.keys.signing_key(), policy=None, soap_version=soap_version, at=now
            )
        await self._post_signal(endpoint, answer, soap_version)
        return True

    async def _post_signal(self, endpoint: str, signal: bytes, soap_version: SoapVersion) -> None:
        """POST a receipt or error for a pulled message; if it is lost, the partner offers the message again and
        the duplicate gets the stored receipt."""
        assert self.session is not None
        headers = {"Content-Type": f"{soap_version.content_type}; charset=UTF-8"}
        try:
            answer = await fetch(self.session, "POST", endpoint, data=signal, headers=headers, max_bytes=ANSWER_LIMIT)
            if answer.status != 200:
                log.warning("signal to %s: HTTP %d", endpoint, answer.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("signal to %s failed: %s", endpoint, exc)

    async def _read(self, request: web.Request, content_type: str) -> ReceivedMessage:
        reader = MessageReader(content_type, sink_factory=_spool)
        size = 0
        async for chunk in request.content.iter_chunked(READ_CHUNK):
            size += len(chunk)
            if size > self.config.max_message_size:
                raise EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, "the message is larger than this access point accepts")
            reader.feed(chunk)
        return reader.finish()

    # ------------------------------------------------------------------------------------------ sending

    async def submit(self, document: dict[str, Any], files: Sequence[NewPayload] | None = None) -> StoredMessage:
        """Store a backend submission as ``submitted`` and queue it; ValueError for a bad submission.

        The payloads are ``files`` (a multipart submission, streamed) or the base64 ``payloads`` of the document.
        A reply names the received request in ``ref_to_message_id``: it takes the request's conversation and,
        unless the document names one, its two-way P-Mode. With ``"route": true`` the router picks the P-Mode
        (FaR for digital post, else discovery) and refuses with its reason (ValueError) before anything is stored.
        """
        document = await self.routing.route_submission(self.pmodes, document)
        ref = document.get("ref_to_message_id")
        request = None
        if ref is not None:
            request = await self._store.get(Direction.IN, str(ref))
            if request is None:
                raise ValueError(f"ref_to_message_id: no received message {ref!r}")
        pmode_id = document.get("pmode")
        if pmode_id is None and request is not None:
            two_way = self.pmodes.get(request.pmode_id or "")
            if two_way is not None and two_way.binding is Binding.PUSH_AND_PUSH:
                pmode_id = two_way.id
        match = self.pmodes.match_submission(
            pmode_id=pmode_id,
            service=document.get("service"),
            action=document.get("action"),
            to_party=document.get("to"),
        )
        if match.status is not MatchStatus.MATCHED or match.route is None:
            raise ValueError(f"no single outgoing P-Mode leg fits ({match.status}): {match.reason}")
        route = match.route
        if route.pmode.binding is Binding.PUSH_AND_PUSH and route.leg.index == 1 and request is None:
            raise ValueError("ref_to_message_id: a reply on a two-way P-Mode names the request it answers")
        payloads = document.get("payloads") or []
        if files is None and (not isinstance(payloads, list) or not payloads):
            raise ValueError("payloads: at least one payload is required")
        message_id = str(document.get("message_id") or new_message_id())
        properties = document.get("properties") or {}
        if not isinstance(properties, dict):
            raise ValueError("properties: a JSON object of name to value or to {value, type}")
        now = self.clock.now()
        conversation = document.get("conversation_id") or (request and request.conversation_id) or message_id
        header = UserMessage(
            message_info=HeaderInfo(
                message_id=message_id, timestamp=now, ref_to_message_id=None if ref is None else str(ref)
            ),
            party_info=PartyInfo(
                sender=route.from_party, receiver=submission_receiver(route, document.get("to"), properties)
            ),
            collaboration_info=CollaborationInfo(
                service=route.leg.service,
                action=route.leg.action,
                conversation_id=str(conversation),
                agreement_ref=route.agreement_ref,
            ),
            message_properties=tuple(_property(str(k), v) for k, v in properties.items()),
            mpc=route.leg.mpc,
        )
        new_payloads = list(files or ())
        for index, item in enumerate(() if files is not None else payloads):
            if not isinstance(item, dict) or "data" not in item:
                raise ValueError(f"payloads[{index}]: expected {{content_id, mime_type, data (base64)}}")
            try:
                data = base64.b64decode(item["data"], validate=True)
            except (ValueError, TypeError):
                raise ValueError(f"payloads[{index}].data: not base64") from None
            content_id = str(item.get("content_id") or f"part{index + 1}@{message_id.split('@')[-1]}")
            mime = str(item.get("mime_type") or "application/octet-stream")
            new_payloads.append(NewPayload(content_id, mime, _once(data)))
        if not new_payloads:
            raise ValueError("payloads: at least one payload is required")
        # The header as submitted, kept with the message: what the sender rebuilds it from on every attempt.
        header_bytes = serialize(build_envelope(header))
        submitted = NewEvidence(EvidenceKind.RAW_MESSAGE, _once(header_bytes), self._evidence_retention(route))
        stored = await self._store.submit(_info(header, route), new_payloads, now=now, evidence=[submitted])
        if len(self._submitted) >= SUBMITTED_HEADERS:
            del self._submitted[next(iter(self._submitted))]
        self._submitted[message_id] = header_bytes
        if route.pmode.binding is not Binding.PULL:  # on pull it waits for the partner's PullRequest
            await self.queue.put(message_id)
        return stored

    async def _send_worker(self, number: int) -> None:
        while True:
            item, message = await claim_next(self.queue, self._store, clock=self.clock, lease=self.config.lease)
            try:
                await self._send(message)
            except Exception as exc:
                # A bug or a broken stored message must not leave it in `sending` until the next restart.
                log.exception("worker %d: sending %s failed unexpectedly", number, message.message_id)
                await self._fail(message, EbmsError(ErrorCode.OTHER, f"internal error: {type(exc).__name__}: {exc}"))
            finally:
                await self.queue.ack(item)

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
        at = self.clock.now()
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
                    revocation=self.revocation,
                    party_id=party_id,
                )
            except TrustError as exc:
                return exc
        return None

    async def _send(self, message: StoredMessage) -> None:
        store = self._store
        route = self._route(message)
        if route is None:
            await self._fail(
                message, EbmsError(ErrorCode.PROCESSING_MODE_MISMATCH, f"P-Mode {message.pmode_id!r} is gone")
            )
            return
        awareness = route.leg.reception_awareness
        if awareness.enabled and message.attempts > awareness.retries + 1:
            # The wait after the last attempt (an asynchronous receipt, see _retry_or_fail) has run out.
            reason = f"no receipt after {message.attempts - 1} attempts"
            await self._fail(message, EbmsError(ErrorCode.MISSING_RECEIPT, reason))
            return
        if route.pmode.binding is Binding.PULL:
            # Claimed by a worker after a restart or a P-Mode change: it waits for the partner's PullRequest.
            await store.transition(
                message, MessageState.AWAITING_RECEIPT, now=self.clock.now(), detail="waits for pull"
            )
            return
        addresses = None  # a dynamic partner's endpoint is connected to only where discovery's policy allows
        if route.dynamic:  # endpoint and certificates from a route record or BDXL + SMP
            addresses = self.routing.addresses(route)
            try:
                route = await self.routing.resolve(store, message, route, at=self.clock.now())
            except RouteUnavailable as exc:
                await self._retry_or_fail(message, route, str(exc))
                return
            except EbmsError as exc:
                await self._fail(message, exc)
                return
        endpoint = route.endpoint
        if endpoint is None:
            await self._fail(message, EbmsError(ErrorCode.PROCESSING_MODE_MISMATCH, "the P-Mode names no endpoint"))
            return
        refused = await self._partner_refused(route)
        if refused is not None:
            reason = f"the partner's certificate is not trusted: {refused.reason}"
            if refused.failure is TrustFailure.REVOCATION_UNKNOWN:  # a responder that is down may answer later
                await self._retry_or_fail(message, route, reason)
            else:
                await self._fail(message, EbmsError(ErrorCode.FAILED_AUTHENTICATION, reason))
            return
        secured = await self._secure(message, route)
        # Compressed, signed and encrypted into a spool in a worker thread: memory does not grow with the payload,
        # and the event loop does not wait for the crypto of a large attachment.
        spool, envelope = await asyncio.to_thread(_spool_packed, secured)
        assert self.session is not None
        try:
            size = spool.tell()
            spool.seek(0)
            headers = {"Content-Type": secured.packed.content_type, "Content-Length": str(size)}
            sent = await fetch(
                self.session,
                "POST",
                endpoint,
                data=_spooled_chunks(spool),
                headers=headers,
                max_bytes=ANSWER_LIMIT,
                addresses=addresses,
            )
            answer, answer_type, status = sent.body, sent.content_type, sent.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self._retry_or_fail(message, route, f"{type(exc).__name__}: {exc}")
            return
        finally:
            spool.close()
        now = self.clock.now()
        if 200 <= status < 300 and not answer.strip():
            # No synchronous receipt: it comes later as a signal to /as4 and must echo what we signed.
            await self._remember_sent(message, route, envelope)
            await self._retry_or_fail(message, route, "no synchronous receipt", expected=True)
            return
        try:
            parsed = read_message(answer_type, answer).parsed
        except EbmsError as error:
            if status >= 500:  # a SOAP Fault or an error page: the partner could not process it now
                await self._retry_or_fail(message, route, f"HTTP {status}")
            else:
                await self._unusable_answer(message, route, answer, error, now)
            return
        header = parsed.messaging.message
        if isinstance(header, SignalMessage) and header.errors:
            await self._error_signal(message, route, header, answer, now)
            return
        try:
            partner = [c for c in (route.partner_signing_certificate,) if c is not None]
            verify_receipt(
                parsed,
                route.security,
                sent_message_id=message.message_id,
                sent_references=secured.references,
                partner_certificates=partner,
            )
        except EbmsError as error:
            await self._unusable_answer(message, route, answer, error, now)
            return
        await self._delivered(message, route, answer, now, f"receipt from {endpoint}")

    async def _unusable_answer(
        self, message: StoredMessage, route: Route, answer: bytes, error: EbmsError, now: datetime
    ) -> None:
        await self._keep(message, route, EvidenceKind.ERROR_SIGNAL, answer, now)
        await self._fail(message, error)

    async def _secure(
        self, message: StoredMessage, route: Route, soap_version: SoapVersion = SoapVersion.V12
    ) -> SecuredMessage:
        """Rebuild a stored message from its header as submitted and its payloads: compressed, signed, encrypted."""
        store = self._store
        header_bytes = self._submitted.pop(message.message_id, None)
        if header_bytes is None:
            header_evidence = (await store.evidence(Direction.OUT, message.message_id, EvidenceKind.RAW_MESSAGE))[0]
            header_bytes = b"".join([c async for c in store.read(header_evidence)])
        user = parse_envelope(header_bytes).messaging.message
        assert isinstance(user, UserMessage)
        user = addressed(user, route)  # a dynamic partner's eb:To is the access point discovery found
        payloads = [
            Payload(p.content_id, p.mime_type, _file_source(store.files.root / p.path), compress=route.leg.compression)
            for p in await store.payloads(message)
        ]
        return secure_message(
            user,
            payloads,
            route.security,
            signing_key=self.config.keys.signing_key(route.security),
            recipient_certificate=route.partner_encryption_certificate,
            soap_version=soap_version,
        )

    async def _retry_or_fail(
        self, message: StoredMessage, route: Route, reason: str, *, expected: bool = False
    ) -> None:
        """Schedule the next attempt, or fail with MissingReceipt after the last.

        ``expected``: the partner took the message and its receipt comes asynchronously, so even after the last
        attempt the receipt gets one more delay to arrive (the worker fails it when it comes due again).
        """
        awareness = route.leg.reception_awareness
        now = self.clock.now()
        if awareness.enabled and (message.attempts <= awareness.retries or expected):
            due = now + awareness.retry_delay(message.attempts - 1, random.random())  # noqa: S311 (jitter)
            moved = await self._store.transition(
                message, MessageState.AWAITING_RECEIPT, now=now, next_attempt_at=due, detail=f"retry: {reason}"
            )
            if moved is not None:
                await self.queue.put(message.message_id, due=due)
            log.info("%s: attempt %d failed (%s); next at %s", message.message_id, message.attempts, reason, due)
            return
        await self._fail(
            message, EbmsError(ErrorCode.MISSING_RECEIPT, f"no receipt after {message.attempts} attempts: {reason}")
        )

    async def _fail(self, message: StoredMessage, error: EbmsError) -> None:
        await self._record_failure(message, error.code, error.log_detail)

    async def _record_failure(self, message: StoredMessage, code: str, detail: str) -> None:
        log.warning("%s failed: %s %s", message.message_id, code, detail)
        moved = await self._store.transition(
            message, MessageState.FAILED, now=self.clock.now(), error=(code, detail[:500])
        )
        if moved is not None:
            self.webhooks.notify(WebhookEvent.ERROR, _message_json(moved))

    # ------------------------------------------------------------------------------------------- retention

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.purge_interval.total_seconds())
            try:
                await self.purge()
            except Exception:
                log.exception("retention purge failed")

    async def purge(self, now: datetime | None = None) -> PurgeReport:
        """Delete what each P-Mode's retention no longer keeps: payloads, then messages, then evidence."""
        now = now or self.clock.now()
        retention = {
            p.id: StoreRetention(payloads=p.retention.payloads, messages=p.retention.messages) for p in self.pmodes
        }
        purged = await self._store.purge(now=now, retention=retention)
        evidence = await self._store.purge_evidence(now=now)
        report = PurgeReport(payloads=purged.payloads, messages=purged.messages, evidence=evidence.evidence)
        if report != PurgeReport():
            log.info("retention: purged %s", report)
        return report

    # -------------------------------------------------------------------------------------- backend API

    def _authorised(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        if not any(hmac.compare_digest(token, t) for t in self.config.api_tokens):
            raise _problem(401, "unauthorised", "a valid Bearer token is required")

    async def api_submit(self, request: web.Request) -> web.Response:
        """POST /api/v1/messages: submit a message (JSON with base64 payloads, or multipart/form-data)."""
        self._authorised(request)
        spooled: list[Path] = []
        try:
            if request.content_type == "multipart/form-data":
                document, files = await self._read_multipart(request, spooled)
            else:
                document, files = await _json_submission(request), None
            stored = await self.submit(document, files)
        except ValueError as exc:
            raise _problem(422, "invalid-submission", str(exc)) from None
        except Exception as exc:  # DuplicateMessage and friends
            if type(exc).__name__ == "DuplicateMessage":
                raise _problem(409, "duplicate", f"message id {exc} was already submitted") from None
            raise
        finally:
            for path in spooled:
                path.unlink(missing_ok=True)
        return web.json_response(_message_json(stored), status=202)

    async def _read_multipart(
        self, request: web.Request, spooled: list[Path]
    ) -> tuple[dict[str, Any], list[NewPayload]]:
        """A ``metadata`` JSON part, then one file part per payload, each streamed to a file as it arrives.

        The part's form name is the payload's Content-ID (or ``metadata.payloads[i].part`` names it and gives
        content_id, mime_type and properties); its Content-Type is the payload's MIME type unless metadata says.
        """
        reader = await request.multipart()
        document: dict[str, Any] | None = None
        files: list[NewPayload] = []
        folder = self.config.storage / "submissions"
        folder.mkdir(parents=True, exist_ok=True)
        total = 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                raise _problem(400, "invalid-submission", "nested multipart is not supported")
            if document is None:
                if part.name != "metadata":
                    raise _problem(400, "invalid-submission", "the first part must be 'metadata' (JSON)")
                raw = await part.read()
                if len(raw) > METADATA_LIMIT:
                    raise _problem(400, "invalid-submission", "the metadata part is too large")
                document = _object(raw)
                continue
            name = part.name or part.filename or f"part{len(files) + 1}"
            described = _described(document, name)
            handle, path_text = tempfile.mkstemp(dir=folder, prefix="upload-")
            path = Path(path_text)
            spooled.append(path)
            with os.fdopen(handle, "wb") as sink:
                while chunk := await part.read_chunk(READ_CHUNK):
                    total += len(chunk)
                    if total > self.config.max_message_size:
                        raise _problem(
                            400, "invalid-submission", "the payloads are larger than this access point takes"
                        )
                    await asyncio.to_thread(sink.write, chunk)
            mime = str(described.get("mime_type") or part.headers.get("Content-Type") or "application/octet-stream")
            properties = described.get("properties") or {}
            files.append(
                NewPayload(
                    str(described.get("content_id") or name),
                    mime,
                    _read_file(path),
                    {str(k): str(v) for k, v in properties.items()} if isinstance(properties, dict) else {},
                )
            )
        if document is None:
            raise _problem(400, "invalid-submission", "no 'metadata' part")
        if not files:
            raise ValueError("payloads: at least one file part is required")
        return document, files

    async def api_get(self, request: web.Request) -> web.Response:
        """GET /api/v1/messages/{id}: a message's state, payloads and history."""
        self._authorised(request)
        message = await self._find(request)
        payloads = await self._store.payloads(message)
        history = await self._store.history(message)
        evidence = await self._store.evidence(message.direction, message.message_id)
        answer = await self._store.end_to_end(message.message_id) if message.direction is Direction.OUT else None
        return web.json_response(
            {
                **_message_json(message),
                **({} if answer is None else {"end_to_end": end_to_end.to_json(answer)}),
                "payloads": [
                    {"content_id": p.content_id, "mime_type": p.mime_type, "size": p.size, "sha256": p.sha256}
                    for p in payloads
                ],
                "history": [
                    {
                        "from": None if t.source is None else str(t.source),
                        "to": str(t.target),
                        "at": t.at.isoformat(),
                        "detail": t.detail,
                    }
                    for t in history
                ],
                "evidence": [{"kind": str(e.kind), "size": e.size, "sha256": e.sha256} for e in evidence],
            }
        )

    async def api_search(self, request: web.Request) -> web.Response:
        """GET /api/v1/messages?direction=&state=&pmode=&conversation_id=&ref_to_message_id=: list messages."""
        self._authorised(request)
        query = request.query
        try:
            direction = Direction(query["direction"]) if "direction" in query else None
            state = MessageState(query["state"]) if "state" in query else None
            limit = min(int(query.get("limit", "100")), 1000)
        except ValueError as exc:
            raise _problem(400, "invalid-query", str(exc)) from None
        rows = await self._store.search(
            direction=direction,
            state=state,
            pmode_id=query.get("pmode"),
            conversation_id=query.get("conversation_id"),
            ref_to_message_id=query.get("ref_to_message_id"),
            limit=limit,
        )
        return web.json_response({"messages": [_message_json(m) for m in rows]})

    async def api_download(self, request: web.Request) -> web.StreamResponse:
        """GET /api/v1/messages/{id}/payloads/{cid}: stream a received payload."""
        self._authorised(request)
        message = await self._find(request)
        wanted = request.match_info["cid"]
        for payload in await self._store.payloads(message):
            if payload.content_id == wanted:
                response = web.StreamResponse(headers={"Content-Type": payload.mime_type})
                response.content_length = payload.size
                await response.prepare(request)
                async for chunk in self._store.read(payload):
                    await response.write(chunk)
                await response.write_eof()
                if message.direction is Direction.IN and message.state is MessageState.RECEIVED:
                    await self._store.transition(message, MessageState.DELIVERED_TO_BACKEND, now=self.clock.now())
                return response
        raise _problem(404, "not-found", f"message {message.message_id} has no payload {wanted!r}")

    async def api_ack(self, request: web.Request) -> web.Response:
        """POST /api/v1/messages/{id}/ack: the backend has taken a received message."""
        self._authorised(request)
        message = await self._find(request, Direction.IN)
        now = self.clock.now()
        # A download that just finished may move the message to delivered_to_backend under our feet: then the
        # transition loses the race and the message is read again.
        for _ in range(3):
            if message.state is MessageState.RECEIVED:
                moved = await self._store.transition(message, MessageState.DELIVERED_TO_BACKEND, now=now)
                message = moved or await self._find(request, Direction.IN)
            if message.state is MessageState.DELIVERED_TO_BACKEND:
                moved = await self._store.transition(message, MessageState.ACKNOWLEDGED, now=now)
                message = moved or await self._find(request, Direction.IN)
            if message.state is MessageState.ACKNOWLEDGED:
                break
        if message.state is not MessageState.ACKNOWLEDGED:
            raise _problem(409, "conflict", f"message is {message.state}")
        return web.json_response(_message_json(message))

    async def api_openapi(self, _request: web.Request) -> web.Response:
        """GET /api/v1/openapi.json: the OpenAPI 3 document of this API."""
        return web.json_response(OPENAPI)

    async def _find(self, request: web.Request, direction: Direction | None = None) -> StoredMessage:
        message_id = request.match_info["id"]
        wanted = request.query.get("direction")
        try:
            directions = (
                [direction] if direction else ([Direction(wanted)] if wanted else [Direction.OUT, Direction.IN])
            )
        except ValueError:
            raise _problem(400, "invalid-query", f"direction {wanted!r} is neither in nor out") from None
        for candidate in directions:
            message = await self._store.get(candidate, message_id)
            if message is not None:
                return message
        raise _problem(404, "not-found", f"no message {message_id!r}")

    def application(self) -> web.Application:
        """The aiohttp application: AS4 endpoint, backend API, and the start/stop hooks."""
        app = web.Application(client_max_size=self.config.max_message_size, middlewares=[_problems])
        app.router.add_post("/as4", self.handle_as4)
        app.router.add_post("/api/v1/messages", self.api_submit)
        app.router.add_get("/api/v1/messages", self.api_search)
        app.router.add_get("/api/v1/messages/{id}", self.api_get)
        app.router.add_get("/api/v1/messages/{id}/payloads/{cid}", self.api_download)
        app.router.add_post("/api/v1/messages/{id}/ack", self.api_ack)
        app.router.add_get("/api/v1/openapi.json", self.api_openapi)
        app.router.add_get("/health", _health)

        async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.stop()

        app.cleanup_ctx.append(lifecycle)
        return app


# ------------------------------------------------------------------------------------------------ helpers


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _problem(status: int, kind: str, detail: str) -> web.HTTPException:
    """An HTTP error with an RFC 9457 problem body."""
    classes: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 404: web.HTTPNotFound,
        409: web.HTTPConflict, 422: web.HTTPUnprocessableEntity,
    }  # fmt: skip
    return classes[status](
        text=_json({"type": f"urn:accesspoint:problem:{kind}", "title": kind, "status": status, "detail": detail}),
        content_type="application/problem+json",
    )


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document)


@web.middleware
async def _problems(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown routes and wrong methods answer with problem bodies too."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.content_type == "application/problem+json" or exc.status < 400:
            raise
        raise _problem_any(exc.status, exc.reason) from None


def _problem_any(status: int, reason: str) -> web.HTTPException:
    exc = web.HTTPException(
        text=_json({"type": "about:blank", "title": reason, "status": status}), content_type="application/problem+json"
    )
    exc.set_status(status, reason)
    return exc


def _soap(body: bytes, version: SoapVersion) -> web.Response:
    return web.Response(body=body, status=200, headers={"Content-Type": f"{version.content_type}; charset=UTF-8"})


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


async def _json_submission(request: web.Request) -> dict[str, Any]:
    try:
        return _object(await request.read())
    except ValueError:
        raise _problem(400, "invalid-json", "the body is not a JSON object") from None


def _object(raw: bytes) -> dict[str, Any]:
    """A JSON object (ValueError for anything else)."""
    document = json.loads(raw)
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    return document


def _described(document: dict[str, Any], name: str) -> dict[str, Any]:
    """What the metadata says about the file part with that form name (empty when it says nothing)."""
    for item in document.get("payloads") or ():
        if isinstance(item, dict) and item.get("part") == name:
            return item
    return {}


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
            yield chunk


def _soap_fault(version: SoapVersion) -> web.Response:
    """A SOAP Fault (Receiver / Server) with HTTP 500, saying nothing about the cause."""
    if version is SoapVersion.V11:
        fault = b"<faultcode>soap:Server</faultcode><faultstring>internal error</faultstring>"
    else:
        fault = (
            b"<soap:Code><soap:Value>soap:Receiver</soap:Value></soap:Code>"
            b'<soap:Reason><soap:Text xml:lang="en">internal error</soap:Text></soap:Reason>'
        )
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="' + version.value.encode() + b'">'
        b"<soap:Body><soap:Fault>" + fault + b"</soap:Fault></soap:Body></soap:Envelope>"
    )
    return web.Response(body=body, status=500, headers={"Content-Type": f"{version.content_type}; charset=UTF-8"})


def _spool_packed(secured: SecuredMessage) -> tuple[tempfile.SpooledTemporaryFile[bytes], bytes]:
    """The packed message written to a spool, and its envelope as sent (for the evidence)."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (the caller closes it)
    try:
        for chunk in secured.packed.body:
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    return spool, secured.envelope


async def _spooled_chunks(spool: tempfile.SpooledTemporaryFile[bytes]) -> AsyncIterator[bytes]:
    """The spool's bytes in chunks, for a streamed request body."""
    while chunk := spool.read(SPOOL_READ_CHUNK):
        yield chunk


def _spool(_start: PartStart) -> tempfile.SpooledTemporaryFile[bytes]:
    # Small parts stay in memory, large ones go to a temporary file: memory does not grow with payload size.
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)


def _read_spooled(part: ReceivedPart) -> Iterator[bytes]:
    sink: Any = part.sink
    sink.seek(0)
    while chunk := sink.read(READ_CHUNK):
        yield chunk


def _file_source(path: Path) -> Any:
    def open_file() -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                yield chunk

    return open_file


def _property(name: str, given: object) -> Property:
    """A submitted message property: a plain value, or {value, type} where the network wants the type (Peppol
    AS4 2.0: originalSender and finalRecipient carry their identifier scheme, e.g. iso6523-actorid-upis)."""
    if not isinstance(given, dict):
        return Property(name, str(given))
    value, kind = given.get("value"), given.get("type")
    if not isinstance(value, str) or not (kind is None or isinstance(kind, str)) or set(given) - {"value", "type"}:
        raise ValueError(f"properties.{name}: expected a string or {{value: string, type: string}}")
    return Property(name, value, kind or None)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _iterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)


def _new_payloads(accepted: Any) -> Iterator[NewPayload]:
    """The plaintext (decrypted, decompressed) payloads of an accepted message, as the store takes them."""
    user: UserMessage = accepted.user_message
    limit = accepted.route.leg.payload.decompression_limit
    for part in user.payload_info:
        content_id = part.content_id
        if content_id is None:
            continue
        source = accepted.opened.sources[content_id]
        chunks: Iterable[bytes] = source.open()
        if part.compression_type == GZIP:
            chunks = decompress_stream(chunks, limit=limit)
        properties = {p.name: p.value for p in part.properties}
        yield NewPayload(content_id, part.mime_type or source.content_type, _iterate(chunks), properties)


def _party_text(party: Any) -> str:
    first = party.party_ids[0]
    return first.value if first.type is None else f"{first.type}::{first.value}"


def _info(user: UserMessage, route: Route) -> MessageInfo:
    return MessageInfo(
        message_id=user.message_id,
        ref_to_message_id=user.message_info.ref_to_message_id,
        conversation_id=user.collaboration_info.conversation_id,
        pmode_id=route.pmode.id,
        leg=route.leg.index,
        mpc=user.effective_mpc,
        from_party=_party_text(user.party_info.sender),
        to_party=_party_text(user.party_info.receiver),
        service=user.collaboration_info.service.value,
        action=user.collaboration_info.action,
    )


def _message_json(message: StoredMessage) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "message_id": message.message_id,
        "direction": str(message.direction),
        "state": str(message.state),
        "pmode": message.pmode_id,
        "conversation_id": message.conversation_id,
        "ref_to_message_id": message.ref_to_message_id,
        "from": message.from_party,
        "to": message.to_party,
        "service": message.service,
        "action": message.action,
        "attempts": message.attempts,
        "next_attempt_at": iso(message.next_attempt_at),
        "last_error": None
        if message.last_error_code is None
        else {"code": message.last_error_code, "detail": message.last_error_detail},
        "created_at": iso(message.created_at),
        "updated_at": iso(message.updated_at),
    }


def run_server(config: ServerConfig) -> None:
    """Serve until interrupted (``accesspoint serve``)."""
    access_point = AccessPoint(config)
    tls = None if config.tls is None else server_context(config.tls)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            access_point.application(),
            host=config.host,
            port=config.port,
            print=None,
            access_log=None,
            ssl_context=tls,
        )
