"""The SMP server (aiohttp): Peppol, OASIS BDXR SMP 1.0 and OASIS SMP 2.0 read APIs and a management API.

Peppol and OASIS 1.0 share their URL paths, so each flavour is served under its own base path or port
(``Listener``). Reading is public: ``GET {base}/{participant}`` and ``GET {base}/{participant}/services/{doc}``
(SMP 2.0 adds ``bdxr-smp-2/`` after the base, as the OASIS REST binding and phoss-smp do). Writing follows
phoss-smp's REST API on the same paths with a bearer token: ``PUT``/``DELETE {participant}``,
``PUT``/``DELETE {participant}/services/{doc}`` with a ServiceMetadata document of any flavour as body
(the phoss rest-files in ../shared/interop/smp/phoss/rest-files are valid bodies); 201 created, 200 replaced.

Signed responses are cached per store generation (and for at most ``max_age`` seconds, since another process
may write to the same database): signing costs an RSA operation, a lookup should not.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from lxml import etree

from accesspoint.core.errors import EbmsError
from accesspoint.core.xml import parse_xml
from accesspoint.security.keys import KeyPair, load_key_pair
from accesspoint.servicekit import server
from accesspoint.servicekit.metrics import Metrics, http_metrics_middleware, timed
from accesspoint.servicekit.observability import (
    OBSERVABILITY_KEYS,
    Observability,
    admin_application,
    read_observability,
)
from accesspoint.servicekit.problems import Problem, problem_middleware
from accesspoint.servicekit.settings import SettingsReader, read_document
from accesspoint.servicekit.status import certificate_dates, held, probe, tls_certificate
from accesspoint.servicekit.tls import TlsSettings, server_context
from accesspoint.servicekit.tokens import BearerAuth, BearerToken
from accesspoint.servicekit.tracing import trace_middleware, tracer_for
from smp.documents import (
    DocumentError,
    flavour_of,
    parse_service_group,
    parse_service_metadata,
    render_service_group,
    render_service_metadata,
)
from smp.identifiers import Identifier, IdentifierError
from smp.model import Flavour, ServiceMetadata
from smp.signature import sign_document
from smp.store import SmpStore

log = logging.getLogger(__name__)

SMP2_SEGMENT = "bdxr-smp-2"
MAX_CACHED = 10_000  # signed answers kept in memory; the cache is emptied when full
MAX_BODY = 1024 * 1024  # a ServiceMetadata with a few endpoints and certificates is a few KB
_FLAVOURS = {"peppol": Flavour.PEPPOL, "oasis1": Flavour.OASIS1, "oasis2": Flavour.OASIS2}


@dataclass(frozen=True, slots=True)
class Listener:
    """One flavour served at ``http://host:port{base_path}``."""

    flavour: Flavour
    host: str = "127.0.0.1"
    port: int = 8080
    base_path: str = "/"

    @property
    def prefix(self) -> str:
        """The path prefix of the read API (no trailing slash; SMP 2.0 includes ``/bdxr-smp-2``)."""
        base = "/" + self.base_path.strip("/")
        base = "" if base == "/" else base
        return f"{base}/{SMP2_SEGMENT}" if self.flavour is Flavour.OASIS2 else base


@dataclass(frozen=True, slots=True)
class SmpSettings:
    """Everything ``create_app`` needs: store URL, signing keys, tokens, listeners, HTTP cache lifetime, TLS."""

    database: str
    signing: KeyPair
    tokens: tuple[BearerToken, ...]
    listeners: tuple[Listener, ...]
    max_age: int = 60  # seconds a client may cache a response (Cache-Control); short so changes show up quickly
    engine_options: dict[str, Any] = field(default_factory=dict)
    tls: TlsSettings | None = None
    observability: Observability = field(default_factory=Observability)  # admin listener (/metrics), logging


class SmpMetrics(Metrics):
    """The SMP's series: its HTTP requests by route template and status, and signed answers by cache use."""

    def __init__(self) -> None:
        super().__init__("smp")
        self.answers = self.counter("smp_answers_total", "Signed read answers by flavour, cache", ("flavour", "cache"))
        self.signing = self.histogram("smp_signing_duration_seconds", "Signing one read answer")


KNOWN = frozenset(
    {"database", "signing_key", "signing_certificate", "tokens", "listen", "max_age", "tls", *OBSERVABILITY_KEYS}
)


def load_settings(path: str | Path) -> SmpSettings:
    """Read a TOML config (``[smp]`` with database, signing_key, signing_certificate, tokens, ``[[smp.listen]]``,
    max_age, tls); SettingsError names every mistake with its field."""
    source = Path(path)
    reader = SettingsReader(source.parent)
    smp = reader.section(read_document(source).get("smp"), f"{source}: smp", known=KNOWN)
    database = smp.database("database", "sqlite+aiosqlite:///smp.sqlite3")
    key, certificate = smp.path("signing_key", required=True), smp.path("signing_certificate", required=True)
    signing = None
    if key is not None and certificate is not None:
        try:
            signing = load_key_pair(key, certificate=certificate)
        except ValueError as exc:
            smp.mistake("signing_key", str(exc))
    # A plain secret may change everything; a table {name, token, scopes = ["write"]} says so explicitly.
    tokens = smp.tokens("tokens", actions={"write"})
    listeners = []
    for item in smp.sections("listen", known={"flavour", "host", "port", "base_path"}):
        if not item.has("flavour"):
            item.mistake("flavour", f"required, one of {', '.join(_FLAVOURS)}")
        flavour = item.choice("flavour", Flavour.PEPPOL, _FLAVOURS)
        host = item.string("host", "127.0.0.1", min_length=1)
        listeners.append(Listener(flavour, host, item.port("port", 8080), item.string("base_path", "/")))
    if not listeners:
        smp.mistake("listen", "at least one [[smp.listen]] is needed")
    if len({(x.host, x.port, x.prefix) for x in listeners}) != len(listeners):
        smp.mistake("listen", "two listeners share host, port and base path (Peppol and OASIS 1.0 clash)")
    max_age = smp.integer("max_age", 60, minimum=0)
    tls = smp.tls("tls")
    observability = read_observability(smp)
    reader.done()
    assert signing is not None, "a missing key is a mistake done() raised"
    return SmpSettings(database, signing, tokens, tuple(listeners), max_age, tls=tls, observability=observability)


STORE = web.AppKey("smp_store", SmpStore)
SETTINGS = web.AppKey("smp_settings", SmpSettings)
AUTH = web.AppKey("smp_auth", BearerAuth)
METRICS = web.AppKey("smp_metrics", SmpMetrics)
_CACHE = web.AppKey("smp_response_cache", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _xml_response(request: web.Request, body: bytes, max_age: int) -> web.Response:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"Cache-Control": f"public, max-age={max_age}", "ETag": etag}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="text/xml", charset="utf-8", headers=headers)


def _not_found(what: str) -> Problem:
    return Problem(404, f"{what} not found")


def _bad(detail: str) -> Problem:
    return Problem(400, detail)


def _identifier(text: str, what: str, *, participant: bool = False) -> Identifier:
    try:
        return Identifier.parse(text, allow_ebcore=participant)
    except IdentifierError:
        raise _bad(f"{what} is not scheme::value") from None


def _require_token(request: web.Request) -> None:
    request.app[AUTH].authorize(request, "write")


async def _read_xml(request: web.Request) -> etree._Element:
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise Problem(413, f"a document is at most {MAX_BODY} bytes")
    try:
        return parse_xml(body, max_bytes=MAX_BODY, what="SMP document")
    except EbmsError as exc:
        raise _bad(exc.detail) from None


class _Routes:
    """The handlers of one listener (flavour and prefix are fixed per instance)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def register(self, app: web.Application) -> None:
        prefix = self.listener.prefix
        group = f"{prefix}/{{participant}}"
        metadata = f"{group}/services/{{document}}"
        app.router.add_get(group, self.get_group)
        app.router.add_put(group, self.put_group)
        app.router.add_delete(group, self.delete_group)
        app.router.add_get(metadata, self.get_metadata)
        app.router.add_put(metadata, self.put_metadata)
        app.router.add_delete(metadata, self.delete_metadata)

    def _base_url(self, request: web.Request) -> str:
        return f"{request.url.origin()}{self.listener.prefix}"

    async def _answer(
        self, request: web.Request, key: tuple[object, ...], build: Callable[[], Awaitable[etree._Element | None]]
    ) -> web.Response:
        """A cached signed body, or ``build()`` rendered and signed now; 404 when ``build`` finds nothing."""
        store = request.app[STORE]
        cache = request.app[_CACHE]
        settings = request.app[SETTINGS]
        full_key = (store.generation, self.listener.flavour, self._base_url(request), *key)
        now = time.monotonic()
        cached = cache.get(full_key)
        metrics, flavour = request.app[METRICS], self.listener.flavour.name.lower()
        # Another process may write to the same database; a cached answer lives at most max_age seconds.
        if cached is None or now - cached[0] > settings.max_age:
            root = await build()
            if root is None:
                raise _not_found(str(key[0]))
            with timed(metrics.signing):
                sign_document(root, settings.signing, self.listener.flavour)
            if len(cache) >= MAX_CACHED:
                cache.clear()
            cached = cache[full_key] = (now, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
            metrics.answers.labels(flavour=flavour, cache="miss").inc()
        else:
            metrics.answers.labels(flavour=flavour, cache="hit").inc()
        return _xml_response(request, cached[1], settings.max_age)

    async def get_group(self, request: web.Request) -> web.Response:
        participant = _identifier(request.match_info["participant"], "participant", participant=True)

        async def build() -> etree._Element | None:
            group = await request.app[STORE].get_group(participant)
            if group is None:
                return None
            return render_service_group(group, self.listener.flavour, self._base_url(request))

        if self.listener.flavour is not Flavour.OASIS2:
            # SMP 1.0 ServiceGroups are not signed; only SMP 2.0 has ds:Signature (0..n) in its ServiceGroup.
            group = await build()
            if group is None:
                raise _not_found("participant")
            return _xml_response(
                request, etree.tostring(group, xml_declaration=True, encoding="UTF-8"), request.app[SETTINGS].max_age
            )
        return await self._answer(request, ("participant", participant.key()), build)

    async def get_metadata(self, request: web.Request) -> web.Response:
        participant = _identifier(request.match_info["participant"], "participant", participant=True)
        document = _identifier(request.match_info["document"], "document type")

        async def build() -> etree._Element | None:
            metadata = await request.app[STORE].get_metadata(participant, document)
            return None if metadata is None else render_service_metadata(metadata, self.listener.flavour)

        return await self._answer(request, ("service metadata", participant.key(), str(document)), build)

    async def put_group(self, request: web.Request) -> web.Response:
        _require_token(request)
        participant = _identifier(request.match_info["participant"], "participant", participant=True)
        if request.can_read_body:
            root = await _read_xml(request)
            try:
                named, _ = parse_service_group(root)
            except DocumentError as exc:
                raise _bad(str(exc)) from None
            if named.key() != participant.key():
                raise _bad("the body names another participant than the URL")
        created = await request.app[STORE].put_group(participant)
        log.info("service group %s %s", participant, "created" if created else "kept")
        return web.Response(status=201 if created else 200)

    async def delete_group(self, request: web.Request) -> web.Response:
        _require_token(request)
        participant = _identifier(request.match_info["participant"], "participant", participant=True)
        if not await request.app[STORE].delete_group(participant):
            raise _not_found("participant")
        return web.Response(status=200)

    async def put_metadata(self, request: web.Request) -> web.Response:
        _require_token(request)
        participant = _identifier(request.match_info["participant"], "participant", participant=True)
        document = _identifier(request.match_info["document"], "document type")
        root = await _read_xml(request)
        try:
            flavour_of(root)
            metadata = parse_service_metadata(root)
        except DocumentError as exc:
            raise _bad(str(exc)) from None
        if metadata.redirect is not None:
            metadata = ServiceMetadata(participant, document, redirect=metadata.redirect)
        elif metadata.participant.key() != participant.key() or metadata.document != document:
            raise _bad("the body names another participant or document type than the URL")
        created = await request.app[STORE].put_metadata(metadata)
        if created is None:
            raise _not_found("participant")
        return web.Response(status=201 if created else 200)

    async def delete_metadata(self, request: web.Request) -> web.Response:
        _require_token(request)
        participant = _identifier(request.match_info["participant"], "participant", participant=True)
        document = _identifier(request.match_info["document"], "document type")
        if not await request.app[STORE].delete_metadata(participant, document):
            raise _not_found("service metadata")
        return web.Response(status=200)


def create_app(
    settings: SmpSettings,
    listeners: tuple[Listener, ...] | None = None,
    *,
    store: SmpStore | None = None,
    metrics: SmpMetrics | None = None,
) -> web.Application:
    """The application serving ``listeners`` (default: all of them, whatever their port) from one store;
    ``metrics``: the series it counts in (shared by the applications of one SMP)."""
    metrics = metrics or SmpMetrics()
    middlewares = [http_metrics_middleware(metrics), trace_middleware(tracer_for("smp")), problem_middleware()]
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[METRICS] = metrics
    app[SETTINGS] = settings
    app[AUTH] = BearerAuth(settings.tokens, realm="smp")
    app[_CACHE] = {}
    for listener in listeners or settings.listeners:
        _Routes(listener).register(app)

    async def _store(app: web.Application) -> AsyncIterator[None]:
        own = store is None
        app[STORE] = store or await SmpStore.open(settings.database)
        yield
        if own:
            await app[STORE].close()

    app.cleanup_ctx.append(_store)
    return app


def sites(settings: SmpSettings, store: SmpStore) -> list[server.Listener]:
    """One application per (host, port), each serving the flavours configured there, all on one store and one set
    of metrics; and the admin listener when one is configured."""
    by_address: dict[tuple[str, int], list[Listener]] = {}
    for listener in settings.listeners:
        by_address.setdefault((listener.host, listener.port), []).append(listener)
    tls = None if settings.tls is None else server_context(settings.tls)
    metrics = SmpMetrics()
    sites = [
        server.Listener(create_app(settings, tuple(listeners), store=store, metrics=metrics), host, port, tls)
        for (host, port), listeners in by_address.items()
    ]
    admin = settings.observability.admin
    if admin is not None:  # GET /metrics on its own address, for the admin listener's tokens
        admin_tls = None if admin.tls is None else server_context(admin.tls)
        status = functools.partial(smp_status, settings, store)
        sites.append(server.Listener(admin_application(metrics, admin, status), admin.host, admin.port, admin_tls))
    return sites


async def smp_status(settings: SmpSettings, store: SmpStore) -> dict[str, Any]:
    """``GET /status`` on the admin listener (``accesspoint.servicekit.status``): whether the database answers, how
    many participants and ServiceMetadata documents are published, and the dates of the certificate that signs
    the answers (and of the TLS one)."""
    now = datetime.now(UTC)
    database, counts = await probe(store.engine, store.counts)
    certificates = [held("SMP signing", settings.signing.certificate)]
    certificates += await asyncio.to_thread(tls_certificate, None if settings.tls is None else settings.tls.certificate)
    return {
        "service": "smp",
        "at": now.isoformat(),
        "ok": database == "ok",
        "database": database,
        "published": counts,
        "certificates": certificate_dates(certificates, now),
    }


async def serve(settings: SmpSettings) -> tuple[server.Running, SmpStore]:
    """Start every site on one store; stop with ``await running.stop()``, then ``await store.close()``."""
    store = await SmpStore.open(settings.database)
    try:
        running = await server.start(sites(settings, store))
    except BaseException:
        await store.close()
        raise
    for listener in settings.listeners:
        log.info("SMP serving %s on %s:%d%s", listener.flavour.name, listener.host, listener.port, listener.prefix)
    return running, store
