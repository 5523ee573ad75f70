"""What one access point instance runs on: settings, clock, P-Modes, store, queue, HTTP client, webhooks, routing.

``create_app`` opens a Context when the server starts and closes it when it stops; every component of the shell
(inbound, signals, pull, sending, submissions, api, maintenance) is built over it. Nothing here is global: two
access points in one process (the tests' in-memory pair) each have their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from accesspoint.msh.agreements import Agreements
from accesspoint.msh.config import ServerConfig
from accesspoint.msh.tls import client_context
from accesspoint.msh.webhooks import WebhookNotifier
from accesspoint.routing.outbound import RouteRecords
from accesspoint.routing.shell import Routing
from accesspoint.security.fetch import UrlFetcher
from accesspoint.security.revocation import RevocationChecker
from accesspoint.store import MemorySendQueue, MessageStore
from accesspoint.store.clock import Clock
from accesspoint.store.queue import SendQueue


@dataclass(slots=True)
class Context:
    """The infrastructure the shell's components share; opened at start, closed at stop."""

    settings: ServerConfig
    clock: Clock
    agreements: Agreements
    store: MessageStore
    queue: SendQueue
    http: aiohttp.ClientSession
    webhooks: WebhookNotifier
    routing: Routing
    revocation: RevocationChecker | None

    @classmethod
    async def open(cls, settings: ServerConfig, clock: Clock, agreements: Agreements) -> Context:
        """Open the store (migrating it), the send queue and the HTTP client."""
        settings.storage.mkdir(parents=True, exist_ok=True)
        store = await MessageStore.open(
            settings.database_url,
            settings.storage / "files",
            instance=settings.instance,
            durability=settings.durability,
        )
        queue: SendQueue
        if settings.redis_url:
            from accesspoint.store.redis_queue import RedisSendQueue

            # An entry held unacknowledged for a lease was taken by an instance that died: others take it over.
            queue = RedisSendQueue.from_url(
                settings.redis_url, consumer=settings.instance, clock=clock, claim_idle=settings.lease
            )
        else:
            queue = MemorySendQueue(clock)
        timeout = aiohttp.ClientTimeout(total=settings.send_timeout.total_seconds())
        tls = client_context(settings.tls_trust, settings.tls_client or settings.tls)
        http = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=64, ssl=tls))
        revocation = RevocationChecker(UrlFetcher()) if settings.revocation else None
        webhooks = WebhookNotifier(settings.webhooks, clock=clock, outbox=settings.storage / "webhooks")
        # Dynamic partners (BDXL + SMP) and the router; route records of forwarded messages live in storage.
        routing = Routing(
            settings.discovery,
            RouteRecords(settings.storage / "routing"),
            revocation=revocation,
            routing=settings.routing,
            # The router seals with its RSA key (XML-DSig RSA-SHA256, as Mina meddelanden signs every layer).
            seal=next((k for k in settings.keys.signing if isinstance(k.private_key, rsa.RSAPrivateKey)), None),
            own=settings.keys.signing,
        )
        return cls(settings, clock, agreements, store, queue, http, webhooks, routing, revocation)

    async def close(self) -> None:
        """Close routing's clients, the HTTP client, the queue and the store."""
        await self.routing.close()
        await self.http.close()
        await self.queue.close()
        await self.store.close()
