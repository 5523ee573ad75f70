"""What every service is watched through: the admin listener (``/metrics``), its logs and its traces.

Each service's settings take the same three tables beside its own (``observability_keys`` lists them)::

    admin:                          # its own listener: never the public AS4 or API address
      host: 127.0.0.1
      port: 9464
      tokens: [{name: prometheus, token: "…", scopes: [metrics]}]   # required: the admin listener is never open
      tls: {certificate: admin.pem, key: admin.key}                 # optional
    logging: {level: info, format: json}                            # json (default) or text
    tracing: {partners: false}      # true: send traceparent to AS4 partners and continue theirs

Traces are exported when the standard ``OTEL_*`` variables say so (:mod:`accesspoint.servicekit.tracing`).
The admin listener answers ``GET /metrics`` (scope ``metrics``) and, where the service reports one (the access
point, FaR, the SMP and the operator do, from :mod:`accesspoint.servicekit.status`), ``GET /status`` (scope
``status``) to a bearer token, as every admin endpoint of the project does (:mod:`accesspoint.servicekit.tokens`);
it is started and stopped with the service's application (:func:`admin_context`), so a service that starts it in
a test gets it too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from accesspoint.servicekit.logs import LogFormat, configure_logging, parse_level
from accesspoint.servicekit.metrics import Metrics
from accesspoint.servicekit.problems import problem_middleware
from accesspoint.servicekit.settings import Section
from accesspoint.servicekit.tls import TlsSettings, server_context
from accesspoint.servicekit.tokens import BearerAuth, BearerToken

log = logging.getLogger("accesspoint.servicekit.observability")

ADMIN_SCOPES = frozenset({"metrics", "status"})
ADMIN_PORT = 9464  # Prometheus' registry of default ports gives 9464 to OpenTelemetry's Prometheus exporter
OBSERVABILITY_KEYS = frozenset({"admin", "logging", "tracing"})
Status = Callable[[], Awaitable[Mapping[str, Any]]]  # what a service reports at GET /status


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin listener: its address, who may call it, and optionally TLS."""

    host: str = "127.0.0.1"
    port: int = ADMIN_PORT
    tokens: tuple[BearerToken, ...] = ()
    tls: TlsSettings | None = None


@dataclass(frozen=True, slots=True)
class Observability:
    """How a service is watched: the admin listener (None: none), the log level and format, trace propagation."""

    admin: AdminSettings | None = None
    log_level: int = logging.INFO
    log_format: LogFormat = LogFormat.JSON
    trace_partners: bool = False

    def configure_logging(self) -> None:
        """Send the process's logs as these settings say (a serving command calls it once)."""
        configure_logging(self.log_level, self.log_format)


def read_observability(section: Section) -> Observability:
    """The ``admin``, ``logging`` and ``tracing`` tables of a service's section, mistakes recorded in its reader."""
    admin = None
    if section.has("admin"):
        table = section.section("admin", known={"host", "port", "tokens", "tls"})
        tokens = table.tokens("tokens", actions=ADMIN_SCOPES)
        if not tokens and not table.has("tokens"):
            table.mistake("tokens", "required: the admin listener answers only to a bearer token")
        admin = AdminSettings(
            host=table.string("host", "127.0.0.1", min_length=1),
            port=table.port("port", ADMIN_PORT),
            tokens=tokens,
            tls=table.tls("tls", client_ca=True),
        )
    logs = section.section("logging", known={"level", "format"})
    level = logging.INFO
    if logs.has("level"):
        try:
            level = parse_level(str(logs.get("level")))
        except ValueError as exc:
            logs.mistake("level", str(exc))
    form = logs.choice("format", LogFormat.JSON, {f.value: f for f in LogFormat})
    partners = section.section("tracing", known={"partners"}).boolean("partners", False)
    return Observability(admin=admin, log_level=level, log_format=form, trace_partners=partners)


def admin_application(metrics: Metrics, settings: AdminSettings, status: Status | None = None) -> web.Application:
    """``GET /metrics`` for a token with the ``metrics`` scope, ``GET /status`` (when the service has one) for
    the ``status`` scope; every failure an RFC 9457 problem."""
    auth = BearerAuth(settings.tokens, realm=f"{metrics.service}-admin")

    async def scrape(request: web.Request) -> web.StreamResponse:
        auth.authorize(request, "metrics")
        return await metrics.handle(request)

    async def report(request: web.Request) -> web.StreamResponse:
        auth.authorize(request, "status")
        assert status is not None
        return web.json_response(await status())

    app = web.Application(middlewares=[problem_middleware()])
    app.router.add_get("/metrics", scrape)
    if status is not None:
        app.router.add_get("/status", report)
    return app


def admin_context(
    metrics: Metrics, settings: AdminSettings | None, status: Status | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context for the service's application: the admin listener up while the service is."""

    async def running(_: web.Application) -> AsyncIterator[None]:
        if settings is None:
            yield
            return
        runner = web.AppRunner(admin_application(metrics, settings, status), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            tls = None if settings.tls is None else server_context(settings.tls)
            await web.TCPSite(runner, settings.host, settings.port, ssl_context=tls).start()
            log.info("%s: admin listener (metrics) on %s:%d", metrics.service, settings.host, settings.port)
            yield
        finally:
            await runner.cleanup()

    return running
