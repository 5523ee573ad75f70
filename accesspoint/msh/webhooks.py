"""Webhooks: a JSON event per incoming message, delivered receipt and failure, POSTed to the backend's URLs.

Each body is signed with HMAC-SHA256 under the webhook's secret (``X-Accesspoint-Signature: sha256=<hex>``)
so the backend knows the event came from this access point. Delivery is retried with exponential backoff
until the backend answers 2xx or the attempts run out. Each event is written to an outbox folder per webhook
before it is queued and deleted once delivered (or given up), so events survive a restart; the backend API
(search by state) stays the source of truth, a webhook only saves the backend from polling.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from accesspoint.httpclient import open_request
from accesspoint.msh.config import Webhook, WebhookEvent
from accesspoint.store.clock import Clock

log = logging.getLogger("accesspoint.msh.webhooks")

SIGNATURE_HEADER = "X-Accesspoint-Signature"
EVENT_HEADER = "X-Accesspoint-Event"


def signature(secret: str, body: bytes) -> str:
    """The value of the signature header for a body: ``sha256=`` and the hex HMAC-SHA256 under the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _folder(outbox: Path, hook: Webhook) -> Path:
    # Named after the URL, so reordering the webhooks in the settings keeps each one's pending events.
    return outbox / hashlib.sha256(hook.url.encode()).hexdigest()[:16]


class WebhookNotifier:
    """One outbox folder, queue and delivery task per webhook; ``notify`` never waits for the backend."""

    def __init__(self, hooks: tuple[Webhook, ...], *, clock: Clock, outbox: Path) -> None:
        self.hooks = hooks
        self.clock = clock
        self.outbox = outbox
        self._queues: list[asyncio.Queue[Path]] = [asyncio.Queue() for _ in hooks]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, session: aiohttp.ClientSession) -> None:
        """Queue the events a previous run left undelivered, oldest first, and start delivering."""
        for hook, queue in zip(self.hooks, self._queues, strict=True):
            folder = _folder(self.outbox, hook)
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.glob("*.json")):
                queue.put_nowait(path)
        self._tasks = [
            asyncio.create_task(self._deliver(hook, queue, session))
            for hook, queue in zip(self.hooks, self._queues, strict=True)
        ]

    async def close(self) -> None:
        """Stop delivering; what is still in the outbox goes out after the next start."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def notify(self, event: WebhookEvent, data: dict[str, Any]) -> None:
        """Write the event to the outbox of every webhook that asked for it and queue it there."""
        if not self.hooks:
            return
        event_id = str(uuid.uuid4())
        body = json.dumps({"id": event_id, "event": event.value, "at": self.clock.now().isoformat(), "data": data})
        for hook, queue in zip(self.hooks, self._queues, strict=True):
            if event in hook.events:
                # A name that sorts in the order the events happened; the file is small and written once.
                path = _folder(self.outbox, hook) / f"{time.time_ns():020d}-{event_id}.json"
                try:
                    path.write_text(body, "utf-8")
                except OSError as exc:  # the message itself is stored; only this notice is lost
                    log.error("webhook %s: %s event not written to the outbox: %s", hook.url, event.value, exc)
                    continue
                queue.put_nowait(path)

    async def _deliver(self, hook: Webhook, queue: asyncio.Queue[Path], session: aiohttp.ClientSession) -> None:
        # One at a time per webhook, so the backend sees a message's events in the order they happened.
        while True:
            path = await queue.get()
            try:
                body = path.read_bytes()
                event = str(json.loads(body)["event"])
            except (OSError, ValueError, KeyError) as exc:
                log.error("webhook %s: unreadable outbox entry %s dropped: %s", hook.url, path.name, exc)
                path.unlink(missing_ok=True)
                continue
            headers = {
                "Content-Type": "application/json",
                EVENT_HEADER: event,
                SIGNATURE_HEADER: signature(hook.secret, body),
            }
            for attempt in range(hook.max_attempts):
                try:
                    # Only the status counts: the answer's body is never read (nor a redirect followed).
                    async with open_request(session, "POST", hook.url, data=body, headers=headers) as response:
                        status = response.status
                    if 200 <= status < 300:
                        break
                    reason = f"HTTP {status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                delay = min(hook.backoff * 2**attempt, hook.backoff_max)
                log.warning("webhook %s: %s event refused (%s); retry in %s", hook.url, event, reason, delay)
                await asyncio.sleep(delay.total_seconds())
            else:
                log.error("webhook %s: %s event dropped after %d attempts", hook.url, event, hook.max_attempts)
            path.unlink(missing_ok=True)
