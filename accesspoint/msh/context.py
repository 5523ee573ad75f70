"""What one access point instance runs on: settings, clock, P-Modes, store, queue, HTTP client, webhooks, routing,
its signer and verifier (with their caches) and its revocation lookups.

``create_app`` opens a Context when the server starts and closes it when it stops; every component of the shell
(inbound, signals, pull, sending, submissions, api, maintenance) is built over it. Nothing here is global: two
access points in one process (the tests' in-memory pair) each have their own.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry.trace import Tracer

from accesspoint.msh.agreements import Agreements
from accesspoint.msh.config import ServerConfig
from accesspoint.msh.limits import BodyBudget
from accesspoint.msh.metrics import MshMetrics
from accesspoint.msh.revocation import FETCH_TIMEOUT, AsyncFetcher, Revocation
from accesspoint.msh.security import Signer, Verifier
from accesspoint.msh.tls import client_context
from accesspoint.msh.webhooks import WebhookNotifier
from accesspoint.routing.outbound import RouteRecords
from accesspoint.routing.shell import FarLookupMetrics, Routing
from accesspoint.servicekit.httpclient import new_session
from accesspoint.servicekit.tracing import Handoffs
from accesspoint.store import MemorySendQueue, MessageStore
from accesspoint.store.clock import Clock
from accesspoint.store.idempotency import IdempotencyKeys
from accesspoint.store.outbox import Outbox
from accesspoint.store.queue import SendQueue
from accesspoint.store.routes import RouteTargets

log = logging.getLogger("accesspoint.msh")


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
    signer: Signer
    verifier: Verifier
    outbox: Outbox
    idempotency: IdempotencyKeys
    bodies: BodyBudget
    metrics: MshMetrics
    tracer: Tracer
    # A message's trace (by ``webhooks.message_key``), continued by its send and its webhook events
    handoffs: Handoffs = field(default_factory=Handoffs)

    @classmethod
    async def open(
        cls, settings: ServerConfig, clock: Clock, agreements: Agreements, metrics: MshMetrics, tracer: Tracer
    ) -> Context:
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
        tls = client_context(settings.tls_trust, settings.tls_client or settings.tls)
        # Every outbound call through servicekit.httpclient: answers bounded, no redirects, addresses checked.
        http = new_session(timeout=settings.send_timeout.total_seconds(), ssl_context=tls, limit=64)
        revocation = None
        if settings.revocation:
            # OCSP responders and CRLs are mostly plain HTTP; HTTPS ones are checked against the system's CAs.
            revocation = Revocation(AsyncFetcher(new_session(timeout=FETCH_TIMEOUT)), clock=clock)
        # Events and route targets live in the database, written with the moves that cause them.
        outbox = Outbox(store.db, instance=settings.instance)
        handoffs = Handoffs()  # a message's trace, from where it is taken in to its send and its webhook events
        webhooks = WebhookNotifier(
            settings.webhooks, outbox, clock=clock, lease=settings.lease, timeout=settings.send_timeout,
            handoffs=handoffs,
        )  # fmt: skip
        # Dynamic partners (BDXL + SMP) and the router; route targets of forwarded messages live in the database.
        # Routing checks discovered certificates in worker threads: they wait there for the lookups, never here.
        routing = Routing(
            settings.discovery,
            RouteRecords(RouteTargets(store.db)),
            revocation=None if revocation is None else revocation.blocking(asyncio.get_running_loop()),
            routing=settings.routing,
            # The router seals with its RSA key (XML-DSig RSA-SHA256, as Mina meddelanden signs every layer).
            seal=next((k for k in settings.keys.signing if isinstance(k.private_key, rsa.RSAPrivateKey)), None),
            own=settings.keys.signing,
            far_metrics=FarLookupMetrics(metrics.far_lookups, metrics.far_duration, tracer),
        )
        signer, verifier = Signer(settings.keys), Verifier(settings.keys, revocation)
        ctx = cls(
            settings, clock, agreements, store, queue, http, webhooks, routing, signer, verifier, outbox,
            IdempotencyKeys(store.db), BodyBudget(settings.body_limits), metrics, tracer, handoffs,
        )  # fmt: skip
        await ctx.adopt_files()
        return ctx

    async def adopt_files(self) -> None:
        """Take in the webhook events and route targets an earlier version kept as files in ``storage``."""
        storage = self.settings.storage
        events = await self.webhooks.adopt_folder(storage / "webhooks")
        targets = await self.routing.records.adopt_folder(storage / "routing")
        if events or targets:
            log.info("took %d webhook event(s) and %d route target(s) from files into the database", events, targets)

    async def close(self) -> None:
        """Close routing's clients, the revocation lookups, the HTTP clients, the queue and the store."""
        await self.routing.close()
        revocation = self.verifier.revocation
        if revocation is not None:
            await revocation.close()
            if isinstance(revocation.fetch, AsyncFetcher):
                await revocation.fetch.http.close()
        await self.http.close()
        await self.queue.close()
        await self.outbox.close()
        await self.store.close()
