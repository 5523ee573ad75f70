"""The running access point: the aiohttp shell around the sans-I/O core, the store and the send workers.

POST /as4 receives AS4 (user messages answered with a synchronous signed receipt or error signal); the backend
REST API under /api/v1 submits, lists, reads, downloads and acknowledges; workers send what was submitted,
with reception awareness (retries, MissingReceipt) driven by each leg's P-Mode.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import random
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime
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
    UserMessage,
)
from accesspoint.core.model import (
    MessageInfo as HeaderInfo,
)
from accesspoint.core.namespaces import GZIP, SoapVersion
from accesspoint.msh.config import ServerConfig
from accesspoint.msh.openapi import OPENAPI
from accesspoint.msh.receiving import accept_user_message, error_response, new_message_id, signed_signal
from accesspoint.security.fetch import UrlFetcher
from accesspoint.security.outbound import Payload, secure_message
from accesspoint.security.receipts import verify_receipt
from accesspoint.security.revocation import RevocationChecker
from accesspoint.store import (
    Direction,
    EvidenceKind,
    MemorySendQueue,
    MessageInfo,
    MessageState,
    MessageStore,
    NewPayload,
    StoredMessage,
    SystemClock,
    claim_next,
)
from accesspoint.store.clock import Clock
from accesspoint.store.queue import SendQueue
from pmode import MatchStatus, PModeSet, Route, load_if_changed, load_pmodes

log = logging.getLogger("accesspoint.msh")

READ_CHUNK = 64 * 1024
SPOOL_IN_MEMORY = 1024 * 1024


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
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store, the HTTP client and the queue; re-queue what a previous run left unsent."""
        self.config.storage.mkdir(parents=True, exist_ok=True)
        self.store = await MessageStore.open(
            self.config.database_url, self.config.storage / "files", instance=self.config.instance
        )
        if self.config.redis_url:
            from accesspoint.store.redis_queue import RedisSendQueue

            self.queue = RedisSendQueue.from_url(self.config.redis_url, consumer=self.config.instance, clock=self.clock)
        timeout = aiohttp.ClientTimeout(total=self.config.send_timeout.total_seconds())
        self.session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=64))
        for message_id in await self.store.recoverable(now=self.clock.now()):
            await self.queue.put(message_id)
        self._tasks = [asyncio.create_task(self._send_worker(i)) for i in range(self.config.send_workers)]
        self._tasks.append(asyncio.create_task(self._watch_pmodes()))

    async def stop(self) -> None:
        """Stop the workers, then close the client, the queue and the store."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
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

    # ---------------------------------------------------------------------------------------- receiving

    async def handle_as4(self, request: web.Request) -> web.Response:
        """POST /as4: read, check, store, answer with a signed receipt or error signal (HTTP 200)."""
        content_type = request.headers.get("Content-Type", "")
        soap_version = SoapVersion.V11 if "text/xml" in content_type.lower() else SoapVersion.V12
        now = self.clock.now()
        signing = self.config.keys.signing_key()
        try:
            received = await self._read(request, content_type)
            soap_version = received.parsed.messaging.soap_version
            if not isinstance(received.parsed.messaging.message, UserMessage):
                raise EbmsError(
                    ErrorCode.FEATURE_NOT_SUPPORTED,
                    "this endpoint takes user messages (signals ride on HTTP responses)",
                )
            accepted = accept_user_message(
                received,
                self.pmodes,
                keys=self.config.keys.decryption_keys(),
                at=now,
                revocation=self.revocation,
                read_part=_read_spooled,
            )
        except EbmsError as error:
            log.warning("refused an incoming message: %s", error)
            body = error_response(error, keys=signing, policy=None, soap_version=soap_version, at=now)
            return _soap(body, soap_version)
        policy = accepted.route.security
        receipt_bytes = signed_signal(accepted.receipt, self.config.keys.signing_key(policy), policy, soap_version)
        user = accepted.user_message
        reception = await self._store.receive(_info(user, accepted.route), list(_new_payloads(accepted)), now=now)
        if reception.duplicate:
            log.info("duplicate %s: answering with the stored receipt", user.message_id)
            if reception.receipt is not None:
                return _soap(b"".join([c async for c in self._store.read(reception.receipt)]), soap_version)
            return _soap(receipt_bytes, soap_version)
        retention = self.config.evidence_retention
        await self._store.add_evidence(
            Direction.IN,
            user.message_id,
            EvidenceKind.RAW_MESSAGE,
            _once(received.envelope_bytes),
            now=now,
            retain_for=retention,
        )
        await self._store.add_evidence(
            Direction.IN, user.message_id, EvidenceKind.OUR_RECEIPT, _once(receipt_bytes), now=now, retain_for=retention
        )
        return _soap(receipt_bytes, soap_version)

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

    async def submit(self, document: dict[str, Any]) -> StoredMessage:
        """Store a backend submission as ``submitted`` and queue it; ValueError for a bad submission."""
        match = self.pmodes.match_submission(
            pmode_id=document.get("pmode"),
            service=document.get("service"),
            action=document.get("action"),
            to_party=document.get("to"),
        )
        if match.status is not MatchStatus.MATCHED or match.route is None:
            raise ValueError(f"no single outgoing P-Mode leg fits ({match.status}): {match.reason}")
        route = match.route
        payloads = document.get("payloads") or []
        if not isinstance(payloads, list) or not payloads:
            raise ValueError("payloads: at least one payload is required")
        message_id = str(document.get("message_id") or new_message_id())
        properties = document.get("properties") or {}
        if not isinstance(properties, dict):
            raise ValueError("properties: a JSON object of name to value or to {value, type}")
        now = self.clock.now()
        header = UserMessage(
            message_info=HeaderInfo(message_id=message_id, timestamp=now),
            party_info=PartyInfo(sender=route.from_party, receiver=route.to_party),
            collaboration_info=CollaborationInfo(
                service=route.leg.service,
                action=route.leg.action,
                conversation_id=str(document.get("conversation_id") or message_id),
                agreement_ref=route.agreement_ref,
            ),
            message_properties=tuple(_property(str(k), v) for k, v in properties.items()),
            mpc=route.leg.mpc,
        )
        new_payloads = []
        for index, item in enumerate(payloads):
            if not isinstance(item, dict) or "data" not in item:
                raise ValueError(f"payloads[{index}]: expected {{content_id, mime_type, data (base64)}}")
            try:
                data = base64.b64decode(item["data"], validate=True)
            except (ValueError, TypeError):
                raise ValueError(f"payloads[{index}].data: not base64") from None
            content_id = str(item.get("content_id") or f"part{index + 1}@{message_id.split('@')[-1]}")
            mime = str(item.get("mime_type") or "application/octet-stream")
            new_payloads.append(NewPayload(content_id, mime, _once(data)))
        stored = await self._store.submit(_info(header, route), new_payloads, now=now)
        # The header as submitted: what the sender rebuilds the message from on every attempt.
        await self._store.add_evidence(
            Direction.OUT, message_id, EvidenceKind.RAW_MESSAGE, _once(serialize(build_envelope(header))),
            now=now, retain_for=self.config.evidence_retention,
        )  # fmt: skip
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

    async def _send(self, message: StoredMessage) -> None:
        store = self._store
        pmode = self.pmodes.get(message.pmode_id or "")
        if pmode is None:
            await self._fail(
                message, EbmsError(ErrorCode.PROCESSING_MODE_MISMATCH, f"P-Mode {message.pmode_id!r} is gone")
            )
            return
        route = Route(pmode, pmode.legs[message.leg or 0])
        header_evidence = (await store.evidence(Direction.OUT, message.message_id, EvidenceKind.RAW_MESSAGE))[0]
        header_bytes = b"".join([c async for c in store.read(header_evidence)])
        user = parse_envelope(header_bytes).messaging.message
        assert isinstance(user, UserMessage)
        payloads = [
            Payload(p.content_id, p.mime_type, _file_source(store.files.root / p.path), compress=route.leg.compression)
            for p in await store.payloads(message)
        ]
        endpoint = route.endpoint
        if endpoint is None:
            await self._fail(message, EbmsError(ErrorCode.PROCESSING_MODE_MISMATCH, "the P-Mode names no endpoint"))
            return
        secured = secure_message(
            user,
            payloads,
            route.security,
            signing_key=self.config.keys.signing_key(route.security),
            recipient_certificate=route.partner_encryption_certificate,
        )
        body = b"".join(secured.packed.body)
        assert self.session is not None
        try:
            async with self.session.post(
                endpoint, data=body, headers={"Content-Type": secured.packed.content_type}
            ) as response:
                answer = await response.read()
                answer_type = response.headers.get("Content-Type", "")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self._retry_or_fail(message, route, f"{type(exc).__name__}: {exc}")
            return
        now = self.clock.now()
        if status >= 500 and not answer.lstrip().startswith(b"<"):
            await self._retry_or_fail(message, route, f"HTTP {status}")
            return
        try:
            parsed = read_message(answer_type, answer).parsed
            partner = [c for c in (route.partner_signing_certificate,) if c is not None]
            verify_receipt(
                parsed,
                route.security,
                sent_message_id=message.message_id,
                sent_references=secured.references,
                partner_certificates=partner,
            )
        except EbmsError as error:
            kind = EvidenceKind.ERROR_SIGNAL
            await store.add_evidence(
                Direction.OUT,
                message.message_id,
                kind,
                _once(answer),
                now=now,
                retain_for=self.config.evidence_retention,
            )
            await self._fail(message, error)
            return
        await store.add_evidence(
            Direction.OUT,
            message.message_id,
            EvidenceKind.PARTNER_RECEIPT,
            _once(answer),
            now=now,
            retain_for=self.config.evidence_retention,
        )
        await store.transition(message, MessageState.DELIVERED, now=now, detail=f"receipt from {endpoint}")

    async def _retry_or_fail(self, message: StoredMessage, route: Route, reason: str) -> None:
        awareness = route.leg.reception_awareness
        now = self.clock.now()
        if awareness.enabled and message.attempts <= awareness.retries:
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
        log.warning("%s failed: %s", message.message_id, error)
        await self._store.transition(
            message, MessageState.FAILED, now=self.clock.now(), error=(error.code, error.log_detail[:500])
        )

    # -------------------------------------------------------------------------------------- backend API

    def _authorised(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip()
        if not any(hmac.compare_digest(token, t) for t in self.config.api_tokens):
            raise _problem(401, "unauthorised", "a valid Bearer token is required")

    async def api_submit(self, request: web.Request) -> web.Response:
        """POST /api/v1/messages: submit a message (JSON with base64 payloads)."""
        self._authorised(request)
        try:
            document = await request.json()
        except ValueError:
            raise _problem(400, "invalid-json", "the body is not JSON") from None
        if not isinstance(document, dict):
            raise _problem(400, "invalid-submission", "expected a JSON object")
        try:
            stored = await self.submit(document)
        except ValueError as exc:
            raise _problem(422, "invalid-submission", str(exc)) from None
        except Exception as exc:  # DuplicateMessage and friends
            if type(exc).__name__ == "DuplicateMessage":
                raise _problem(409, "duplicate", f"message id {exc} was already submitted") from None
            raise
        return web.json_response(_message_json(stored), status=202)

    async def api_get(self, request: web.Request) -> web.Response:
        """GET /api/v1/messages/{id}: a message's state, payloads and history."""
        self._authorised(request)
        message = await self._find(request)
        payloads = await self._store.payloads(message)
        history = await self._store.history(message)
        evidence = await self._store.evidence(message.direction, message.message_id)
        return web.json_response(
            {
                **_message_json(message),
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
        """GET /api/v1/messages?direction=&state=&conversation_id=: list messages."""
        self._authorised(request)
        query = request.query
        try:
            direction = Direction(query["direction"]) if "direction" in query else None
            state = MessageState(query["state"]) if "state" in query else None
            limit = min(int(query.get("limit", "100")), 1000)
        except ValueError as exc:
            raise _problem(400, "invalid-query", str(exc)) from None
        rows = await self._store.search(
            direction=direction, state=state, conversation_id=query.get("conversation_id"), limit=limit
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
        if message.state is MessageState.RECEIVED:
            moved = await self._store.transition(message, MessageState.DELIVERED_TO_BACKEND, now=now)
            message = moved or message
        if message.state is MessageState.DELIVERED_TO_BACKEND:
            message = await self._store.transition(message, MessageState.ACKNOWLEDGED, now=now) or message
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
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(access_point.application(), host=config.host, port=config.port, print=None, access_log=None)
