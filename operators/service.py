"""The reference mailbox operator, running: the backend of an access point, and a small mailbox API.

It learns of deliveries from the access point's ``message-received`` webhook (HMAC-SHA256 checked) and by
searching its backend API every ``poll_interval`` (so nothing is lost while it was down or a webhook dropped).
For each received message it downloads the payloads, checks the delivery (``deliveries.check_delivery``),
stores it in the recipient's mailbox or records the refusal, submits the signed end-to-end answer
(``receipts.build_answer``) on the two-way P-Mode's reply leg with ``ref_to_message_id`` = the delivery, and
then acknowledges the delivery at the access point. The reply's MessageId is derived from the delivery's, so a
delivery handled again after a crash stores nothing twice and sends no second answer (the access point refuses
the duplicate with 409).

HTTP (bearer tokens, RFC 9457 problem bodies):

- ``POST /hooks/accesspoint``: the access point's webhook (``X-Accesspoint-Signature: sha256=<hex>``);
- ``GET /api/v1/mailboxes/{recipient}/messages``: the mailbox, newest first (no bodies);
- ``GET /api/v1/mailboxes/{recipient}/messages/{id}``: one message, body and attachments in base64;
- ``GET /api/v1/deliveries/{as4_message_id}``: what became of a delivery (outcome, reason, the reply's id);
- ``POST /soap/v3/service``: Service v3 ``deliverSecure`` (SOAP 1.1) into the same mailboxes, for routers still
  on the SOAP contract (``soap.deliver_secure_handler``; its answer is ``Delivered``, no AS4 reply);
- ``GET /health``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from accesspoint.envelopes._common import EnvelopeError, parse_document
from accesspoint.envelopes.schemas import load_minameddelanden_schema, load_xhe_schema
from accesspoint.servicekit import server
from accesspoint.servicekit.metrics import Metrics, http_metrics_middleware
from accesspoint.servicekit.observability import admin_context
from accesspoint.servicekit.problems import Problem, problem_middleware
from accesspoint.servicekit.tls import server_context
from accesspoint.servicekit.tokens import BearerAuth
from accesspoint.servicekit.tracing import configure_tracing, trace_middleware, tracer_for
from accesspoint.servicekit.webhooks import SIGNATURE_HEADER, signature_matches
from operators.deliveries import (
    CheckedDelivery,
    DeliveryTrust,
    Network,
    Refusal,
    check_delivery,
    classify,
    unknown_recipient,
)
from operators.mailbox import MailboxStore, StoredMail, create_engine
from operators.receipts import build_answer, stable_id
from operators.settings import OperatorSettings
from operators.soap import SoapBodyLimit, deliver_secure_handler
from operators.twoway import TwoWay

log = logging.getLogger("operators.service")

MAX_ATTEMPTS = 5
SERVICE_V3_PATH = "/soap/v3/service"
WEBHOOK_MAX_SIZE = 1024 * 1024


class AccessPointError(RuntimeError):
    """The access point answered something unusable (or could not be reached)."""


@dataclass
class AccessPointClient:
    """The access point's backend API, as the operator uses it."""

    url: str
    token: str
    session: aiohttp.ClientSession

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, json=body, headers=self._headers()) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None

    async def received(self) -> list[str]:
        """Received messages not yet acknowledged (received, or downloaded but not acknowledged)."""
        found: list[str] = []
        for state in ("received", "delivered_to_backend"):
            status, document = await self._json("GET", f"/api/v1/messages?direction=in&state={state}&limit=1000")
            if status != 200:
                raise AccessPointError(f"search: HTTP {status}")
            found += [m["message_id"] for m in document["messages"]]
        return found

    async def message(self, message_id: str) -> dict[str, Any] | None:
        """A received message's record (None when the access point does not know it)."""
        status, document = await self._json("GET", f"/api/v1/messages/{quote(message_id, safe='')}?direction=in")
        if status == 404:
            return None
        if status != 200:
            raise AccessPointError(f"get {message_id}: HTTP {status}")
        return dict(document)

    async def download(self, message_id: str, content_id: str) -> bytes:
        """A payload's bytes."""
        path = f"/api/v1/messages/{quote(message_id, safe='')}/payloads/{quote(content_id, safe='')}?direction=in"
        async with self.session.get(self.url + path, headers=self._headers()) as response:
            if response.status != 200:
                raise AccessPointError(f"download {message_id}/{content_id}: HTTP {response.status}")
            return await response.read()

    async def ack(self, message_id: str) -> None:
        """Tell the access point the operator has the message."""
        status, document = await self._json("POST", f"/api/v1/messages/{quote(message_id, safe='')}/ack")
        if status != 200:
            raise AccessPointError(f"ack {message_id}: HTTP {status} {document}")

    async def submit(self, document: dict[str, Any]) -> tuple[int, Any]:
        """Submit a message (202 queued, 409 already submitted)."""
        return await self._json("POST", "/api/v1/messages", document)


class Operator:
    """One operator: its settings, mailbox database, access point client, and the queue of work."""

    def __init__(self, settings: OperatorSettings, *, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self.metrics = OperatorMetrics()
        self.store = MailboxStore(create_engine(settings.database))
        contracts, xhe = settings.minameddelanden_contracts, settings.xhe_schema
        self.trust = DeliveryTrust(
            intermediaries=settings.intermediaries,
            sender_anchors=settings.sender_anchors,
            minameddelanden_schema=None if contracts is None else load_minameddelanden_schema(contracts),
            xhe_schema=None if xhe is None else load_xhe_schema(xhe),
        )
        self.auth = BearerAuth(settings.tokens, realm="operator")
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.pending: set[str] = set()
        self.client: AccessPointClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.twoway = TwoWay(self)  # replies, receipts, delgivning, invoices, case events (operators/twoway.py)

    # ------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Create the tables and mailboxes, then start the workers and the poller."""
        await self.store.create(self.settings.mailboxes, now=self.clock())
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        link = self.settings.access_point
        self.client = AccessPointClient(link.url, link.token, session)
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(link.workers)]
        if link.poll_interval.total_seconds() > 0:
            self._tasks.append(asyncio.create_task(self._poller()))
        await self.twoway.start()

    async def stop(self) -> None:
        """Stop the tasks, close the HTTP client and the database."""
        await self.twoway.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.session.close()
        await self.store.engine.dispose()

    def enqueue(self, message_id: str, attempt: int = 0) -> None:
        """Handle that received message (once, however often it is announced)."""
        if message_id not in self.pending:
            self.pending.add(message_id)
            self.queue.put_nowait((message_id, attempt))

    async def _poller(self) -> None:
        assert self.client is not None
        while True:
            try:
                for message_id in await self.client.received():
                    self.enqueue(message_id)
            except (aiohttp.ClientError, TimeoutError, AccessPointError) as exc:
                log.warning("polling the access point failed: %s", exc)
            await asyncio.sleep(self.settings.access_point.poll_interval.total_seconds())

    async def _worker(self) -> None:
        while True:
            message_id, attempt = await self.queue.get()
            try:
                await self.handle(message_id)
            except (aiohttp.ClientError, TimeoutError, AccessPointError) as exc:
                log.warning("delivery %s: attempt %d failed: %s", message_id, attempt + 1, exc)
                self.pending.discard(message_id)
                if attempt + 1 < MAX_ATTEMPTS:
                    asyncio.get_running_loop().call_later(2**attempt * 0.5, self.enqueue, message_id, attempt + 1)
                continue
            except Exception:
                log.exception("delivery %s: unexpected failure", message_id)
            self.pending.discard(message_id)

    # ---------------------------------------------------------------------------------------- the delivery

    def check(self, payloads: list[tuple[str, bytes]]) -> CheckedDelivery | Refusal:
        """The verdict on a message's payloads: the first payload in a known format is the delivery."""
        chosen = payloads[0][1] if payloads else b""
        for _cid, data in payloads:
            try:
                if classify(parse_document(data, what="payload")) is not None:
                    chosen = data
                    break
            except EnvelopeError:
                continue
        try:
            return check_delivery(chosen, self.trust, at=self.clock())
        except Refusal as refusal:
            return refusal

    async def handle(self, message_id: str) -> None:
        """Check, store, answer and acknowledge one received message (safe to repeat)."""
        client = self.client
        assert client is not None
        done = await self.store.handled(message_id)
        if done is not None and done.reply_message_id is not None:
            await client.ack(message_id)
            return
        record = await client.message(message_id)
        if record is None:
            return
        if record["state"] == "acknowledged":
            return
        payloads = [(p["content_id"], await client.download(message_id, p["content_id"])) for p in record["payloads"]]
        now = self.clock()
        outcome = self.check(payloads)
        if isinstance(outcome, CheckedDelivery):
            outcome = self.twoway.screen(outcome, payloads)
        if isinstance(outcome, CheckedDelivery) and not await self.store.has_mailbox(outcome.recipient):
            outcome = unknown_recipient(outcome)
        if isinstance(outcome, CheckedDelivery):
            ids = await self.store.deliver(message_id, self.twoway.for_mailbox(outcome), now=now)
            await self.twoway.delivered(message_id, record, outcome, ids, now)
            log.info("delivery %s: in the mailbox of %s", message_id, outcome.recipient)
            self.metrics.deliveries.labels(network=outcome.network.value, result="delivered").inc()
        else:
            await self.store.reject(message_id, str(outcome), now=now)
            log.info("delivery %s: rejected (%s)", message_id, outcome)
            self.metrics.deliveries.labels(network=outcome.network.value, result=outcome.code).inc()
        parts = build_answer(
            outcome,
            message_id=message_id,
            payloads=payloads,
            operator=self.settings.id,
            keys=self.settings.keys,
            at=now,
            minameddelanden_schema=self.trust.minameddelanden_schema,
            xhe_schema=self.trust.xhe_schema,
        )
        reply_id = f"{stable_id('reply', message_id)}@{self.settings.id}"
        answer = [{"content_id": p.content_id, "mime_type": p.mime_type} for p in parts]
        reply_pmode = self.settings.access_point.reply_pmode
        status, document = await client.submit(
            {
                **({"pmode": reply_pmode} if reply_pmode else {}),
                "message_id": reply_id,
                "ref_to_message_id": message_id,
                "properties": {"deliveryStatus": "delivered" if isinstance(outcome, CheckedDelivery) else "rejected"},
                "payloads": [
                    {**a, "data": base64.b64encode(p.data).decode()} for a, p in zip(answer, parts, strict=True)
                ],
            }
        )
        if status not in (202, 409):
            raise AccessPointError(f"reply to {message_id}: HTTP {status} {document}")
        await self.store.replied(message_id, reply_id, answer)
        await client.ack(message_id)

    async def deliver_soap(self, delivery: CheckedDelivery) -> bool:
        """A delivery that came over Service v3: into the mailbox (once per business id) when there is one."""
        if not await self.store.has_mailbox(delivery.recipient):
            return False
        await self.store.deliver(f"soap:{delivery.business_id}", delivery, now=self.clock())
        return True

    # ------------------------------------------------------------------------------------------------ HTTP

    def _reader(self, request: web.Request) -> str:
        """The mailbox a request reads, when its token may read it (``read:recipient=<id>``, or ``read``)."""
        recipient = request.match_info["recipient"]
        self.auth.authorize(request, "read", recipient=recipient)
        return recipient

    async def webhook(self, request: web.Request) -> web.Response:
        """POST /hooks/accesspoint: a signed event from the access point."""
        body = await request.read()
        secret = self.settings.access_point.webhook_secret
        if not signature_matches(secret, body, request.headers.get(SIGNATURE_HEADER)):
            raise Problem(401, "the webhook signature does not verify", kind="bad-signature")
        try:
            event = json.loads(body)
            data = event["data"]
        except (ValueError, KeyError, TypeError):
            raise Problem(400, "not a webhook event", kind="invalid-event") from None
        if event.get("event") == "message-received" and data.get("direction") == "in":
            self.enqueue(str(data["message_id"]))
        return web.Response(status=204)

    async def api_list(self, request: web.Request) -> web.Response:
        """GET /api/v1/mailboxes/{recipient}/messages."""
        recipient = self._reader(request)
        if not await self.store.has_mailbox(recipient):
            raise Problem(404, f"{recipient} has no mailbox here", kind="no-mailbox")
        return web.json_response({"messages": [_mail_json(m) for m in await self.store.list(recipient)]})

    async def api_read(self, request: web.Request) -> web.Response:
        """GET /api/v1/mailboxes/{recipient}/messages/{id}."""
        recipient = self._reader(request)
        text = request.match_info["id"]
        # Mail ids are positive 64-bit integers: anything else names no message (and must not reach the database).
        mail_id = int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else 0
        if not 0 < mail_id < 2**63:
            raise Problem(404, "no such message", kind="not-found")
        found = await self.store.read(recipient, mail_id)
        if found is None:
            raise Problem(404, f"no message {mail_id} in the mailbox of {recipient}", kind="not-found")
        await self.twoway.opened(request, recipient, mail_id)
        return web.json_response(
            {
                **_mail_json(found),
                "body": base64.b64encode(found.body).decode(),
                "attachments": [
                    {
                        "filename": a.filename,
                        "content_type": a.content_type,
                        "data": base64.b64encode(a.body).decode(),
                    }
                    for a in found.attachments
                ],
            }
        )

    async def api_delivery(self, request: web.Request) -> web.Response:
        """GET /api/v1/deliveries/{id}: what became of an AS4 message (tokens that see every mailbox only)."""
        self.auth.authorize(request, "read")
        done = await self.store.handled(request.match_info["id"])
        if done is None:
            raise Problem(404, "no such delivery (yet)", kind="not-found")
        return web.json_response(
            {
                "message_id": done.as4_message_id,
                "outcome": done.outcome,
                "detail": done.detail,
                "reply_message_id": done.reply_message_id,
            }
        )

    def application(self) -> web.Application:
        """The aiohttp application; starting it starts the operator."""
        # What this service reads whole is the webhook's small JSON event, unauthenticated until its HMAC is checked;
        # the SOAP endpoint reads its body itself, within the operator's soap_max_size.
        middlewares = [
            http_metrics_middleware(self.metrics),
            trace_middleware(tracer_for("operator")),
            problem_middleware(),
        ]
        app = web.Application(middlewares=middlewares, client_max_size=WEBHOOK_MAX_SIZE)
        app.router.add_post("/hooks/accesspoint", self.webhook)
        app.router.add_get("/api/v1/mailboxes/{recipient}/messages", self.api_list)
        app.router.add_get("/api/v1/mailboxes/{recipient}/messages/{id}", self.api_read)
        app.router.add_get("/api/v1/deliveries/{id}", self.api_delivery)
        # Service v3 for routers that still call deliverSecure: the same checks, the same mailboxes.
        schema = self.trust.minameddelanden_schema
        limit = SoapBodyLimit(max_size=self.settings.soap_max_size)
        handler = deliver_secure_handler(self.deliver_soap, self.trust, schema=schema, limit=limit)
        app.router.add_post(SERVICE_V3_PATH, handler)
        app.router.add_get("/health", _health)
        self.twoway.add_routes(app.router)

        async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.stop()

        app.cleanup_ctx.append(lifecycle)
        app.cleanup_ctx.append(admin_context(self.metrics, self.settings.observability.admin))
        return app


def _mail_json(found: StoredMail) -> dict[str, Any]:
    return {
        "id": found.id,
        "recipient": found.recipient,
        "as4_message_id": found.as4_message_id,
        "network": found.network,
        "reference": found.reference,
        "sender": found.sender,
        "sender_name": found.sender_name,
        "subject": found.subject,
        "content_type": found.content_type,
        "sha256": found.sha256,
        "signed_by": found.signed_by,
        "received_at": found.received_at.isoformat(),
    }


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def run(settings: OperatorSettings) -> None:
    """Serve until SIGTERM or SIGINT (``accesspoint operator serve``); OSError when the address is taken."""
    settings.observability.configure_logging()
    configure_tracing("operator")
    tls = None if settings.tls is None else server_context(settings.tls)
    server.run([server.Listener(Operator(settings).application(), settings.host, settings.port, tls)])


class OperatorMetrics(Metrics):
    """The operator's series: deliveries by network and result (delivered, or the refusal's code)."""

    def __init__(self) -> None:
        super().__init__("operator")
        self.deliveries = self.counter(
            "operator_deliveries_total", "Deliveries handled, by network and result", ("network", "result")
        )


__all__ = ["AccessPointClient", "AccessPointError", "Network", "Operator", "run"]
