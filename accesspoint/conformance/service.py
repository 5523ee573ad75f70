"""``accesspoint conformance serve``: the conformance test service, a backend adapter for an EC-style test bed.

It stands between the test driver (C1/C4) and one access point, using only the access point's public
interfaces:

- ``POST /as4`` takes the driver's **Submit** (an unsigned ebMS user message, see ``protocol``), submits the AS4
  message it describes through ``POST /api/v1/messages`` (MessageId, ConversationId, RefToMessageId, Service,
  Action, To, every other property and the payloads with their PartProperties) and answers with an unsigned
  receipt, or an ebMS error signal when the Submit or the submission is refused.
- ``POST /events`` is the access point's webhook (HMAC-checked): ``message-received`` becomes a **Deliver** (the
  header and payloads read through ``GET /api/v1/messages/{id}``, then the message is acknowledged),
  ``receipt`` and ``error`` become a **Notify** to the producer, ``message-refused`` a Notify to the consumer
  (AS4_CP_TA31). An event is answered 2xx only once the driver took the message, so the access point's outbox
  retries until it did; a repeated event id is answered at once (webhooks deliver at least once).

Unsigned input makes it a test tool: it runs on its own listener (loopback unless told otherwise), only when
started, and an access point's P-Mode validator refuses the conformance service on any network profile.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from accesspoint.conformance import protocol
from accesspoint.conformance.protocol import Action, BackendPayload, BusinessMessage, Notification, SignalType
from accesspoint.conformance.settings import ConformanceSettings
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import PartyId, Property, Service
from accesspoint.core.namespaces import PartProperty

log = logging.getLogger("accesspoint.conformance")

SIGNATURE_HEADER = "X-Accesspoint-Signature"
SEEN_EVENTS = 10_000  # event ids remembered to answer a redelivered event without acting twice


class Unavailable(Exception):
    """The access point or the driver did not take a call now; the event stays in the access point's outbox."""


def _new_id() -> str:
    return f"{uuid.uuid4()}@conformance.accesspoint"


def _now() -> datetime:
    return datetime.now(UTC)


def _hmac(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, "sha256").hexdigest()


def submission(message: BusinessMessage) -> dict[str, Any]:
    """The REST API's submission document for the AS4 message a Submit describes."""
    document: dict[str, Any] = {
        "service": message.service.value,
        "action": message.action,
        "to": message.to_party.value,
        "properties": {
            p.name: p.value if p.type is None else {"value": p.value, "type": p.type} for p in message.properties
        },
        "payloads": [
            {
                "content_id": p.content_id,
                "mime_type": p.mime_type,
                "data": base64.b64encode(p.data).decode("ascii"),
                "properties": {q.name: q.value for q in p.properties},
            }
            for p in message.payloads
        ],
    }
    optional = {
        "message_id": message.message_id,
        "conversation_id": message.conversation_id,
        "ref_to_message_id": message.ref_to_message_id,
    }
    document.update({key: value for key, value in optional.items() if value})
    return document


def delivered(detail: dict[str, Any], payloads: list[BackendPayload]) -> BusinessMessage:
    """The AS4 message a Deliver reports, from the REST API's view of a received message."""
    header = detail["header"]

    def first(side: dict[str, Any]) -> PartyId:
        found = side["party_ids"][0]
        return PartyId(found["value"], found.get("type"))

    return BusinessMessage(
        service=Service(header["service"]["value"], header["service"].get("type")),
        action=header["action"],
        to_party=first(header["to"]),
        to_role=header["to"]["role"],
        from_party=first(header["from"]),
        from_role=header["from"]["role"],
        message_id=detail["message_id"],
        conversation_id=header["conversation_id"],
        ref_to_message_id=detail.get("ref_to_message_id"),
        properties=tuple(Property(p["name"], p["value"], p.get("type")) for p in header["message_properties"]),
        payloads=tuple(payloads),
    )


def error_notification(message_id: str, code: str | None, detail: str | None, short: str | None = None) -> Notification:
    """Notify Error for a message: the ebMS code, its short description (from the error table) and the detail."""
    known = None if code is None else ErrorCode.from_code(code)
    return Notification(
        SignalType.ERROR,
        message_id,
        error_code=code,
        short_description=short or (None if known is None else known.value.short_description),
        description=detail,
    )


class ConformanceService:
    """The adapter: Submit in, Deliver and Notify out, the access point in between."""

    def __init__(self, settings: ConformanceSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the service's application is not running"
        return self._session

    # ------------------------------------------------------------------------------------------ Submit

    async def handle_submit(self, request: web.Request) -> web.Response:
        """POST /as4: a Submit from the driver becomes a submission to the access point."""
        body = await self._body(request)
        user = None
        try:
            backend = protocol.read_backend_message(request.headers.get("Content-Type", ""), body)
            user = backend.user_message
            backend.check(Action.SUBMIT)
            message = backend.business()
            status, answer = await self._api("POST", "/api/v1/messages", submission(message))
            if status != 202:
                detail = str(answer.get("detail") or answer.get("title") or f"HTTP {status}")
                raise EbmsError(ErrorCode.OTHER, f"the access point refused the submission: {detail}")
            log.info("Submit %s: submitted %s", user.message_id, answer.get("message_id"))
            reply = protocol.receipt(user, message_id=_new_id(), now=_now())
        except EbmsError as exc:
            log.warning("Submit refused: %s", exc)
            exc.ref_to_message_id = exc.ref_to_message_id or (None if user is None else user.message_id)
            reply = protocol.error(exc, message_id=_new_id(), now=_now())
        except Unavailable as exc:
            return web.Response(status=503, text=str(exc))
        return web.Response(body=reply, headers={"Content-Type": protocol.soap_content_type()})

    async def _body(self, request: web.Request) -> bytes:
        size = 0
        chunks = []
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self.settings.max_message_size:
                raise web.HTTPRequestEntityTooLarge(max_size=self.settings.max_message_size, actual_size=size)
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------------------------------ events

    async def handle_event(self, request: web.Request) -> web.Response:
        """POST /events: the access point's webhook, checked against its HMAC before it is read."""
        body = await self._body(request)
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not hmac.compare_digest(given, _hmac(self.settings.webhook_secret, body)):
            return web.Response(status=401, text="bad webhook signature")
        try:
            event = json.loads(body)
            event_id, kind, data = str(event["id"]), str(event["event"]), event["data"]
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="not a webhook event")
        if event_id in self._seen:
            return web.Response(status=200, text="already handled")
        try:
            await self._dispatch(kind, data)
        except Unavailable as exc:
            log.warning("%s event %s not passed on yet: %s", kind, event_id, exc)
            return web.Response(status=503, text=str(exc))
        self._seen[event_id] = None
        while len(self._seen) > SEEN_EVENTS:
            self._seen.popitem(last=False)
        return web.Response(status=200)

    async def _dispatch(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "message-received":
            await self._deliver(str(data["message_id"]))
        elif kind == "receipt":
            await self._notify(Notification(SignalType.RECEIPT, str(data["message_id"])))
        elif kind == "error":
            failure = data.get("last_error") or {}
            await self._notify(error_notification(str(data["message_id"]), failure.get("code"), failure.get("detail")))
        elif kind == "message-refused":
            failure = data["error"]
            await self._notify(
                error_notification(
                    str(data["message_id"]), failure["code"], failure.get("detail"), failure.get("short_description")
                )
            )

    async def _deliver(self, message_id: str) -> None:
        path = f"/api/v1/messages/{quote(message_id, safe='@')}"
        status, detail = await self._api("GET", f"{path}?direction=in")
        if status != 200 or not detail.get("header"):
            raise Unavailable(f"GET {path}: HTTP {status}")
        payloads = []
        for item in detail["payloads"]:
            data = await self._download(f"{path}/payloads/{quote(item['content_id'], safe='@')}?direction=in")
            properties = item.get("properties") or {}
            payloads.append(
                BackendPayload(
                    item["content_id"],
                    item["mime_type"],
                    data,
                    # Delivered decompressed: CompressionType described the wire, not what is delivered.
                    tuple(
                        Property(name, value)
                        for name, value in properties.items()
                        if name not in (PartProperty.MIME_TYPE, PartProperty.COMPRESSION_TYPE)
                    ),
                )
            )
        message = delivered(detail, payloads)
        settings = self.settings
        packed = protocol.deliver(message, sut=settings.sut, driver=settings.driver, message_id=_new_id(), now=_now())
        await self._to_driver(packed.content_type, packed.to_bytes())
        await self._api("POST", f"{path}/ack")
        log.info("Deliver %s sent to the test driver", message_id)

    async def _notify(self, notification: Notification) -> None:
        sut, driver = self.settings.sut, self.settings.driver
        packed = protocol.notify(notification, sut=sut, driver=driver, message_id=_new_id(), now=_now())
        await self._to_driver(packed.content_type, packed.to_bytes())
        log.info("Notify %s %s sent to the test driver", notification.signal_type, notification.ref_to_message_id)

    # ----------------------------------------------------------------------------------------- calls out

    async def _api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.settings.api_token}"}
        try:
            async with self.session.request(method, self.settings.api_url + path, json=body, headers=headers) as answer:
                raw = await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"the access point: {type(exc).__name__}: {exc}") from None
        if status >= 500:
            raise Unavailable(f"the access point: HTTP {status}")
        try:
            document = json.loads(raw) if raw else {}
        except ValueError:
            document = {}
        return status, document if isinstance(document, dict) else {}

    async def _download(self, path: str) -> bytes:
        headers = {"Authorization": f"Bearer {self.settings.api_token}"}
        try:
            async with self.session.get(self.settings.api_url + path, headers=headers) as answer:
                if answer.status != 200:
                    raise Unavailable(f"GET {path}: HTTP {answer.status}")
                return await answer.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"the access point: {type(exc).__name__}: {exc}") from None

    async def _to_driver(self, content_type: str, body: bytes) -> None:
        try:
            headers = {"Content-Type": content_type}
            async with self.session.post(self.settings.driver_endpoint, data=body, headers=headers) as answer:
                await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"the test driver: {type(exc).__name__}: {exc}") from None
        if not 200 <= status < 300:
            raise Unavailable(f"the test driver: HTTP {status}")

    # ----------------------------------------------------------------------------------------- the app

    def application(self) -> web.Application:
        """The aiohttp application: /as4 for the driver, /events for the access point, /health."""
        app = web.Application(client_max_size=self.settings.max_message_size)
        app.router.add_post("/as4", self.handle_submit)
        app.router.add_post("/events", self.handle_event)
        app.router.add_get("/health", _health)

        async def client(_app: web.Application) -> AsyncIterator[None]:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
            yield
            await self._session.close()

        app.cleanup_ctx.append(client)
        return app


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def run_service(settings: ConformanceSettings) -> None:
    """Serve until interrupted (``accesspoint conformance serve``)."""
    service = ConformanceService(settings)
    web.run_app(service.application(), host=settings.host, port=settings.port, print=None, access_log=None)
