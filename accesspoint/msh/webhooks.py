"""Webhooks: a JSON event per incoming message, delivered receipt and failure, POSTed to the backend's URLs.

Each event is written to the database's outbox (``accesspoint.store.outbox``) in the transaction of the move that
causes it (``WebhookNotifier.hooks``: a message received, delivered, failed), one row per webhook that asked
for it, so an event exists exactly when its move does and survives any restart. One instance at a time delivers
a webhook's events, in order (its lease), each with its stable id in the body and the ``Webhook-Id`` header,
signed with HMAC-SHA256 under the webhook's secret (``X-Accesspoint-Signature: sha256=<hex>``). A refused
delivery is retried with exponential backoff (``backoff`` doubling up to ``backoff_max``) and dropped after
``max_attempts``; an instance that dies mid-delivery leaves the event to another once its lease runs out, so a
backend can see an event twice, with the same id, and never one without its move. Delivered events are purged
after ``retention``. The backend API (search by state) stays the source of truth; a webhook saves polling.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from opentelemetry import context as otel_context

from accesspoint.msh.config import Webhook, WebhookEvent
from accesspoint.servicekit.httpclient import open_request
from accesspoint.servicekit.tracing import Handoffs
from accesspoint.servicekit.webhooks import EVENT_HEADER, SIGNATURE_HEADER, signature
from accesspoint.store.clock import Clock
from accesspoint.store.hooks import TransactionHook
from accesspoint.store.outbox import DeliveryFailed, Dispatcher, EventHook, NewEvent, Outbox, OutboxEvent
from accesspoint.store.records import StoredMessage

log = logging.getLogger("accesspoint.msh.webhooks")

ID_HEADER = "Webhook-Id"  # the event's id, the same on every delivery of it (and in the body)


def sink_of(hook: Webhook) -> str:
    """The outbox sink of a webhook: named after its URL, so reordering the settings keeps its pending events."""
    return "webhook:" + hashlib.sha256(hook.url.encode()).hexdigest()[:16]


def message_key(direction: str, message_id: str) -> str:
    """The key a message's trace is handed over under (``Handoffs``): its direction and MessageId."""
    return f"{direction}/{message_id}"


def _message_key(event: OutboxEvent) -> str:
    """The message an event is about (events carry it in ``data``), as ``message_key`` writes it."""
    try:
        data = json.loads(event.body).get("data") or {}
        return message_key(str(data.get("direction")), str(data.get("message_id")))
    except (ValueError, AttributeError):
        return ""


class WebhookNotifier:
    """The webhooks of one access point over the outbox: events written in transactions, delivered by loops."""

    def __init__(
        self,
        hooks: tuple[Webhook, ...],
        outbox: Outbox,
        *,
        clock: Clock,
        lease: timedelta,
        timeout: timedelta,
        retention: timedelta = timedelta(days=7),
        handoffs: Handoffs | None = None,
    ) -> None:
        self.hooks = hooks
        self.outbox = outbox
        self.handoffs = handoffs or Handoffs()  # an event about a message carries that message's trace
        self.clock = clock
        self.retention = retention
        self._lease = lease
        self._timeout = timeout
        self._dispatchers: dict[str, Dispatcher] = {}

    def sinks(self, event: WebhookEvent) -> tuple[str, ...]:
        """The sinks of the webhooks that asked for event."""
        return tuple(sink_of(hook) for hook in self.hooks if event in hook.events)

    def hooks_for(
        self, event: WebhookEvent, data: Callable[[StoredMessage], Mapping[str, Any]], *, now: datetime
    ) -> list[TransactionHook]:
        """What writes event, with data built from the message as the move leaves it, in the move's transaction."""
        sinks = self.sinks(event)
        if not sinks:
            return []
        return [EventHook(lambda message: [NewEvent(event.value, data(message), sinks)], now=now, wake=self.wake)]

    async def notify(self, event: WebhookEvent, data: Mapping[str, Any]) -> None:
        """Write an event no move causes, in a transaction of its own."""
        sinks = self.sinks(event)
        if sinks:
            await self.outbox.add([NewEvent(event.value, data, sinks)], now=self.clock.now())
            self.wake(sinks)

    def wake(self, sinks: Any) -> None:
        """Tell the dispatchers of sinks that events were committed."""
        for sink in sinks:
            dispatcher = self._dispatchers.get(sink)
            if dispatcher is not None:
                dispatcher.wake()

    def deliveries(self, session: aiohttp.ClientSession) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """One delivery loop per webhook, named after its URL, for the supervisor to run."""
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        for hook in self.hooks:
            dispatcher = Dispatcher(
                self.outbox, sink_of(hook), partial(self._post, hook, session), clock=self.clock, lease=self._lease,
                timeout=self._timeout, retry=partial(_retry, hook),
            )  # fmt: skip
            self._dispatchers[dispatcher.sink] = dispatcher
            loops.append((f"webhook {hook.url}", dispatcher.run))
        return loops

    async def purge(self, now: datetime) -> int:
        """Delete events delivered (or dropped) longer than the retention ago."""
        return await self.outbox.purge(now=now, keep=self.retention)

    async def _post(self, hook: Webhook, session: aiohttp.ClientSession, event: OutboxEvent) -> None:
        body = event.body.encode()
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: event.kind,
            ID_HEADER: event.event_id,
            SIGNATURE_HEADER: signature(hook.secret, body),
        }
        parent = self.handoffs.context(_message_key(event))
        token = None if parent is None else otel_context.attach(parent)
        try:
            # Only the status counts: the answer's body is never read, nor a redirect followed.
            async with open_request(session, "POST", hook.url, data=body, headers=headers) as response:
                status = response.status
            if 200 <= status < 300:
                return
            raise DeliveryFailed(f"HTTP {status}")
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        finally:
            if token is not None:
                otel_context.detach(token)

    async def adopt_folder(self, folder: Path) -> int:
        """Take in the events an earlier version left as files (``storage/webhooks/<16 hex>/*.json``, in order),
        then delete them; how many were new. Several instances may do it at once: an event id is taken once."""
        adopted = 0
        for hook in self.hooks:
            sink = sink_of(hook)
            pending = folder / sink.removeprefix("webhook:")
            paths = await asyncio.to_thread(_pending_files, pending)
            events: list[tuple[str, str, str]] = []
            for path in paths:
                try:
                    body = await asyncio.to_thread(path.read_text, "utf-8")
                    document = json.loads(body)
                    events.append((str(document["id"]), str(document["event"]), body))
                except (OSError, ValueError, KeyError) as exc:
                    log.error("webhook %s: outbox file %s not taken in: %s", hook.url, path.name, exc)
            adopted += await self.outbox.adopt(sink, events, now=self.clock.now())
            for path in paths:
                await asyncio.to_thread(path.unlink, missing_ok=True)
        return adopted


def _retry(hook: Webhook, attempts: int) -> timedelta | None:
    if attempts >= hook.max_attempts:
        return None
    delay: timedelta = min(hook.backoff * 2 ** (attempts - 1), hook.backoff_max)
    return delay


def _pending_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


