"""Webhooks: a JSON event per incoming message, delivered receipt and failure, POSTed to the backend's URLs.

Each body is signed with HMAC-SHA256 under the webhook's secret (``X-Accesspoint-Signature: sha256=<hex>``)
so the backend knows the event came from this access point. Delivery is retried with exponential backoff
until the backend answers 2xx or the attempts run out. Events wait in memory: the backend API (search by
state) stays the source of truth, a webhook only saves the backend from polling.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid
from typing import Any

import aiohttp

from accesspoint.msh.config import Webhook, WebhookEvent
from accesspoint.store.clock import Clock

log = logging.getLogger("accesspoint.msh.webhooks")

SIGNATURE_HEADER = "X-Accesspoint-Signature"
EVENT_HEADER = "X-Accesspoint-Event"
QUEUE_LIMIT = 10_000


def signature(secret: str, body: bytes) -> str:
    """The value of the signature header for a body: ``sha256=`` and the hex HMAC-SHA256 under the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """One delivery task and queue per webhook; ``notify`` never blocks the message path."""

    def __init__(self, hooks: tuple[Webhook, ...], *, clock: Clock) -> None:
        self.hooks = hooks
        self.clock = clock
        self._queues: list[asyncio.Queue[tuple[WebhookEvent, bytes]]] = [asyncio.Queue(QUEUE_LIMIT) for _ in hooks]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, session: aiohttp.ClientSession) -> None:
        """Start delivering with the given HTTP client."""
        self._tasks = [
            asyncio.create_task(self._deliver(hook, queue, session))
            for hook, queue in zip(self.hooks, self._queues, strict=True)
        ]

    async def close(self) -> None:
        """Stop delivering (events still queued are dropped; the API still shows their messages)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def notify(self, event: WebhookEvent, data: dict[str, Any]) -> None:
        """Queue an event for every webhook that asked for it."""
        if not self.hooks:
            return
        body = json.dumps(
            {"id": str(uuid.uuid4()), "event": event.value, "at": self.clock.now().isoformat(), "data": data}
        ).encode()
        for hook, queue in zip(self.hooks, self._queues, strict=True):
            if event in hook.events:
                try:
                    queue.put_nowait((event, body))
                except asyncio.QueueFull:
                    log.error("webhook %s: queue full, %s event dropped", hook.url, event.value)

    async def _deliver(
        self, hook: Webhook, queue: asyncio.Queue[tuple[WebhookEvent, bytes]], session: aiohttp.ClientSession
    ) -> None:
        # One at a time per webhook, so the backend sees a message's events in the order they happened.
        while True:
            event, body = await queue.get()
            headers = {
                "Content-Type": "application/json",
                EVENT_HEADER: event.value,
                SIGNATURE_HEADER: signature(hook.secret, body),
            }
            for attempt in range(hook.max_attempts):
                try:
                    async with session.post(hook.url, data=body, headers=headers) as response:
                        await response.read()
                        if 200 <= response.status < 300:
                            break
                        reason = f"HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                delay = min(hook.backoff * 2**attempt, hook.backoff_max)
                log.warning("webhook %s: %s event refused (%s); retry in %s", hook.url, event.value, reason, delay)
                await asyncio.sleep(delay.total_seconds())
            else:
                log.error("webhook %s: %s event dropped after %d attempts", hook.url, event.value, hook.max_attempts)
