"""Webhooks: a JSON event per incoming message, delivered receipt and failure, POSTed to the backend's URLs.

Each body is signed with HMAC-SHA256 under the webhook's secret (``X-Accesspoint-Signature: sha256=<hex>``)
so the backend knows the event came from this access point. Delivery is retried with exponential backoff
until the backend answers 2xx or the attempts run out. Each event is written to an outbox folder per webhook
before it is queued and deleted once delivered (or given up), so events survive a restart; the backend API
(search by state) stays the source of truth, a webhook only saves the backend from polling.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from accesspoint.msh.config import Webhook, WebhookEvent
from accesspoint.servicekit.webhooks import EVENT_HEADER, SIGNATURE_HEADER, signature
from accesspoint.store.clock import Clock

log = logging.getLogger("accesspoint.msh.webhooks")


def _folder(outbox: Path, hook: Webhook) -> Path:
    # Named after the URL, so reordering the webhooks in the settings keeps each one's pending events.
    return outbox / hashlib.sha256(hook.url.encode()).hexdigest()[:16]


class WebhookNotifier:
    """One outbox folder, queue and delivery loop per webhook; ``notify`` never waits for the backend."""

    def __init__(self, hooks: tuple[Webhook, ...], *, clock: Clock, outbox: Path) -> None:
        self.hooks = hooks
        self.clock = clock
        self.outbox = outbox
        self._queues: list[asyncio.Queue[Path]] = [asyncio.Queue() for _ in hooks]

    def deliveries(self, session: aiohttp.ClientSession) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """One delivery loop per webhook, named after its URL, for the supervisor to run."""
        return [
            (f"webhook {hook.url}", functools.partial(self.deliver, index, session))
            for index, hook in enumerate(self.hooks)
        ]

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
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(body, "utf-8")
                except OSError as exc:  # the message itself is stored; only this notice is lost
                    log.error("webhook %s: %s event not written to the outbox: %s", hook.url, event.value, exc)
                    continue
                queue.put_nowait(path)

    async def deliver(self, index: int, session: aiohttp.ClientSession) -> None:
        """Deliver webhook ``index``'s events: first what its outbox holds (left by a stop, or by this loop
        before it failed and was restarted), oldest first, then each new one as it is queued."""
        hook, queue = self.hooks[index], self._queues[index]
        folder = _folder(self.outbox, hook)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        for path in sorted(await asyncio.to_thread(lambda: list(folder.glob("*.json")))):
            await self._deliver_one(hook, path, session)
        # One at a time per webhook, so the backend sees a message's events in the order they happened.
        while True:
            await self._deliver_one(hook, await queue.get(), session)

    async def _deliver_one(self, hook: Webhook, path: Path, session: aiohttp.ClientSession) -> None:
        try:
            body = await asyncio.to_thread(path.read_bytes)
            event = str(json.loads(body)["event"])
        except FileNotFoundError:
            return  # delivered already (queued again by a restart's look at the outbox)
        except (OSError, ValueError, KeyError) as exc:
            log.error("webhook %s: unreadable outbox entry %s dropped: %s", hook.url, path.name, exc)
            path.unlink(missing_ok=True)
            return
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: event,
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
            log.warning("webhook %s: %s event refused (%s); retry in %s", hook.url, event, reason, delay)
            await self.clock.sleep_until(self.clock.now() + delay)
        else:
            log.error("webhook %s: %s event dropped after %d attempts", hook.url, event, hook.max_attempts)
        path.unlink(missing_ok=True)
