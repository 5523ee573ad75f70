"""``create_app(settings)``: one access point as an aiohttp application, composed from the shell's modules.

The AS4 endpoint (``POST /as4``, ``inbound``), the backend API (the ``/api/v1`` sub-application, ``api``) and
the health routes are registered when the application is made; the rest is built when it starts, in one
cleanup context: the ``Context`` (store, queue, HTTP client, webhooks, routing), then the components over it,
each put on the application under its typed ``AppKey``, then every long-lived task under the ``Supervisor``.
At the stop the tasks end first, then the context closes.

    receive ──► inbound ──► receive_pipeline ──► VerifiedMessage ──► store + receipt ──► router / replies
                  │
                  ├── PullRequest ──► pull.PullServer ──► send_pipeline
                  └── receipt / error ──► signals ──► next_step (the decision table) ──► store
    submit ──► api ──► submissions ──► store + queue ──► sending (workers) ──► send_pipeline ──► partner
                                                                     └──► signals ──► next_step ──► store
    supervised: the send pool (workers per partner), pull.Puller, maintenance (recovery, purge), P-Mode watcher,
    webhooks
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from opentelemetry.trace import Tracer, TracerProvider

from accesspoint.msh.agreements import Agreements
from accesspoint.msh.api import API, Api, api_application
from accesspoint.msh.config import ServerConfig
from accesspoint.msh.context import Context
from accesspoint.msh.health import READINESS, Readiness, healthz, readyz
from accesspoint.msh.inbound import Inbound
from accesspoint.msh.mailings import MAILINGS, Mailings
from accesspoint.msh.maintenance import Maintenance
from accesspoint.msh.metrics import MshMetrics, own_certificates
from accesspoint.msh.operations import Operations
from accesspoint.msh.pull import Puller, PullServer
from accesspoint.msh.receive_pipeline import ReceivePipeline
from accesspoint.msh.replies import Replies
from accesspoint.msh.send_pipeline import SendPipeline
from accesspoint.msh.send_pool import SendPool
from accesspoint.msh.sending import SendWorkers
from accesspoint.msh.signals import Settlement, Signals
from accesspoint.msh.status import Status
from accesspoint.msh.submissions import Submissions
from accesspoint.msh.supervisor import Supervisor
from accesspoint.msh.tls import server_context
from accesspoint.servicekit.metrics import http_metrics_middleware
from accesspoint.servicekit.observability import admin_context
from accesspoint.servicekit.problems import Problem, problem_middleware
from accesspoint.servicekit.tracing import configure_tracing, trace_middleware, tracer_for
from accesspoint.store import StoreUnavailable, SystemClock
from accesspoint.store.clock import Clock
from accesspoint.store.mailings import MailingStore

log = logging.getLogger("accesspoint.msh")

CONTEXT = web.AppKey("context", Context)
INBOUND = web.AppKey("inbound", Inbound)
SUBMISSIONS = web.AppKey("submissions", Submissions)
MAINTENANCE = web.AppKey("maintenance", Maintenance)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
PULLER = web.AppKey("puller", Puller)
METRICS = web.AppKey("metrics", MshMetrics)
SEND_POOL = web.AppKey("send_pool", SendPool)  # the send workers per partner (its lanes, for tests and metrics)
# What an operator does by hand (resend, park, ping): the console calls it, the access point never does.
OPERATIONS = web.AppKey("operations", Operations)
# The status document of the admin listener's /status and the console's status page.
STATUS = web.AppKey("status", Status)


def create_app(
    settings: ServerConfig, *, clock: Clock | None = None, tracer_provider: TracerProvider | None = None
) -> web.Application:
    """The access point's application; P-Modes are loaded now (PModeError stops a start), the rest at start.

    ``tracer_provider``: where its spans go (the process's by default, set by ``OTEL_*``; tests pass their own).
    """
    agreements = Agreements(settings.pmodes, evidence_retention=settings.evidence_retention)
    translate = functools.partial(_unavailable, settings)
    metrics = MshMetrics()
    tracer = tracer_for("accesspoint.msh", tracer_provider)
    partners = settings.observability.trace_partners
    middlewares = [
        http_metrics_middleware(metrics),
        # A partner's traceparent on /as4 is continued only when tracing.partners allows it; the API's always.
        trace_middleware(tracer, continues=lambda request: partners or request.path != "/as4"),
        problem_middleware(translate),
    ]
    app = web.Application(client_max_size=settings.max_message_size, middlewares=middlewares)
    app[METRICS] = metrics
    app.router.add_post("/as4", _as4)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/health", healthz)
    app.router.add_get("/readyz", readyz)
    app.add_subapp("/api/v1", api_application())
    app.cleanup_ctx.append(functools.partial(_running, settings, clock or SystemClock(), agreements, tracer))
    # The admin listener (GET /metrics) is up while the access point is, on its own address: never on /as4's.
    app.cleanup_ctx.append(admin_context(metrics, settings.observability.admin, functools.partial(_status, app)))
    return app


def _unavailable(settings: ServerConfig, error: Exception) -> Problem | None:
    """The database away is 503 with Retry-After: nothing was stored, the request may simply be sent again."""
    if not isinstance(error, StoreUnavailable):
        return None
    log.warning("answering 503: the database is unavailable (%s)", error)
    retry = str(max(1, round(settings.body_limits.retry_after.total_seconds())))
    return Problem(503, "the database is unavailable; nothing was stored, try again later", kind="unavailable",
                   headers={"Retry-After": retry})  # fmt: skip


async def _as4(request: web.Request) -> web.StreamResponse:
    """POST /as4."""
    return await request.app[INBOUND].handle(request)


async def _running(
    settings: ServerConfig, clock: Clock, agreements: Agreements, tracer: Tracer, app: web.Application
) -> AsyncIterator[None]:
    ctx = await Context.open(settings, clock, agreements, app[METRICS], tracer)
    supervisor = Supervisor()
    mailings = None
    try:
        if settings.routing is not None:  # mass mailings go out through the router (msh/mailings.py)
            mailings = await MailingStore.open(settings.database_url, durability=settings.durability)
        _compose(app, ctx, supervisor, mailings)
        yield
    finally:
        await supervisor.stop()
        if mailings is not None:
            await mailings.close()
        await ctx.close()


def _compose(app: web.Application, ctx: Context, supervisor: Supervisor, mailings: MailingStore | None) -> None:
    """Build the components over the context, put them on the application and start the supervised tasks."""
    send_pipeline = SendPipeline(ctx)
    settlement = Settlement(ctx)
    submissions = Submissions(ctx, send_pipeline)
    replies = Replies(ctx, submissions.submit)
    pulls = PullServer(ctx, send_pipeline, settlement)
    inbound = Inbound(ctx, ReceivePipeline(ctx), ctx.routing, submissions, replies, Signals(ctx, settlement), pulls)
    workers = SendWorkers(ctx, send_pipeline, settlement, not_forwarded=replies.not_forwarded_job)
    puller = Puller(ctx, inbound.accept)
    maintenance = Maintenance(ctx)
    app[CONTEXT] = ctx
    app[INBOUND] = inbound
    app[SUBMISSIONS] = submissions
    app[MAINTENANCE] = maintenance
    app[SUPERVISOR] = supervisor
    app[PULLER] = puller
    app[OPERATIONS] = Operations(ctx, submissions)
    app[API] = Api(ctx, submissions)
    app[READINESS] = Readiness(ctx, supervisor)
    app[STATUS] = Status(ctx)
    ctx.metrics.watch(ctx.store, ctx.outbox, lambda: own_certificates(ctx.settings), lambda: ctx.agreements.current)
    supervisor.spawn("recovery", maintenance.recover)
    pool = SendPool(
        workers, total=ctx.settings.send_workers, limits=ctx.settings.send_per_partner,
        partners=ctx.settings.send_partners, metrics=ctx.metrics,
    )  # fmt: skip
    app[SEND_POOL] = pool
    supervisor.spawn("send pool", pool.run)
    supervisor.spawn("pull", puller.run)
    supervisor.spawn("purge", maintenance.purge_periodically)
    supervisor.spawn("P-Mode watcher", ctx.agreements.watch)
    for name, deliver in ctx.webhooks.deliveries(ctx.http):
        supervisor.spawn(name, deliver)
    if mailings is not None:
        app[MAILINGS] = Mailings(ctx, submissions, mailings)
        supervisor.spawn("mailings", app[MAILINGS].run)
    supervisor.spawn("reply jobs", replies.dispatcher().run)
    # Routed messages a stop or a failed forward left received but not forwarded (their senders have the receipt).
    supervisor.spawn(
        "routing recovery",
        functools.partial(ctx.routing.keep_forwarding, submissions, ctx.clock, every=ctx.settings.lease),
    )


async def _status(app: web.Application) -> dict[str, Any]:
    """GET /status on the admin listener (``accesspoint.msh.status``, as the console's status page)."""
    return await app[STATUS].document()


# The cyclic collector's young generation is collected after this many container allocations (Python's default is
# 700: about once per message on the AS4 path, each pass also scanning whatever survived since the last one).
GC_YOUNG_THRESHOLD = 10_000


async def settle_collector(_app: web.Application) -> None:
    """Once started: what is alive now (modules, settings, keys, P-Modes, pools) lives as long as the process, so it
    is frozen out of the collector's scans, and the young generation is collected less often (together ~1 % of the
    CPU per message in ``bench.profile``; objects without cycles are freed by their reference counts as ever)."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run_server(settings: ServerConfig, *, beside: Callable[[web.Application], None] | None = None) -> None:
    """Serve until interrupted (``accesspoint serve``): JSON logs, traces when ``OTEL_*`` asks, the admin listener;
    ``beside`` adds what else runs with the access point (the console on its own listener)."""
    settings.observability.configure_logging()
    configure_tracing("accesspoint")
    app = create_app(settings)
    app.on_startup.append(settle_collector)
    if beside is not None:
        beside(app)
    tls = None if settings.tls is None else server_context(settings.tls)
    with contextlib.suppress(KeyboardInterrupt):
        # aiohttp closes a connection whose request has not fully arrived once its keep-alive time runs out (the
        # timer starts when the connection opens and is not moved by bytes trickling in): that is the header timeout
        # that stops a slowloris, and an idle connection between requests gets the same time.
        web.run_app(
            app, host=settings.host, port=settings.port, print=None, access_log=None, ssl_context=tls,
            keepalive_timeout=settings.header_timeout.total_seconds(),
        )  # fmt: skip
