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

import hashlib
import hmac
import logging
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from lxml import etree

from accesspoint.core.errors import EbmsError
from accesspoint.core.xml import parse_xml
from accesspoint.security.keys import KeyPair, load_key_pair
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


class ConfigError(ValueError):
    """A configuration file problem; the message names the file and the field."""


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
    """Everything ``create_app`` needs: store URL, signing keys, tokens, listeners, HTTP cache lifetime."""

    database: str
    signing: KeyPair
    tokens: tuple[str, ...]
    listeners: tuple[Listener, ...]
    max_age: int = 60  # seconds a client may cache a response (Cache-Control); short so changes show up quickly
    engine_options: dict[str, Any] = field(default_factory=dict)


def load_settings(path: str | Path) -> SmpSettings:
    """Read a TOML config (``[smp]`` with database, signing_key, signing_certificate, tokens, ``[[smp.listen]]``)."""
    source = Path(path)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8")).get("smp", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    folder = source.parent

    def _path(name: str) -> Path:
        value = data.get(name)
        if not isinstance(value, str):
            raise ConfigError(f"{source}: smp.{name} must be a path")
        return folder / value

    database = data.get("database", "sqlite+aiosqlite:///smp.sqlite3")
    if not isinstance(database, str):
        raise ConfigError(f"{source}: smp.database must be a SQLAlchemy async URL")
    if database.startswith("sqlite+aiosqlite:///") and not database.startswith("sqlite+aiosqlite:////"):
        database = "sqlite+aiosqlite:///" + str(folder / database.removeprefix("sqlite+aiosqlite:///"))
    try:
        signing = load_key_pair(_path("signing_key"), certificate=_path("signing_certificate"))
    except ValueError as exc:
        raise ConfigError(f"{source}: signing key: {exc}") from None
    tokens = data.get("tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) and len(t) >= 16 for t in tokens):
        raise ConfigError(f"{source}: smp.tokens must be a list of strings of at least 16 characters")
    listeners = []
    for index, item in enumerate(data.get("listen", [])):
        flavour = _FLAVOURS.get(str(item.get("flavour")))
        if flavour is None:
            raise ConfigError(f"{source}: smp.listen[{index}].flavour must be one of {', '.join(_FLAVOURS)}")
        listeners.append(
            Listener(
                flavour,
                str(item.get("host", "127.0.0.1")),
                int(item.get("port", 8080)),
                str(item.get("base_path", "/")),
            )
        )
    if not listeners:
        raise ConfigError(f"{source}: at least one [[smp.listen]] is needed")
    seen = {(x.host, x.port, x.prefix) for x in listeners}
    if len(seen) != len(listeners):
        raise ConfigError(f"{source}: two listeners share host, port and base path (Peppol and OASIS 1.0 clash)")
    return SmpSettings(database, signing, tuple(tokens), tuple(listeners), int(data.get("max_age", 60)))


STORE = web.AppKey("smp_store", SmpStore)
SETTINGS = web.AppKey("smp_settings", SmpSettings)
_CACHE = web.AppKey("smp_response_cache", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _xml_response(request: web.Request, body: bytes, max_age: int) -> web.Response:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"Cache-Control": f"public, max-age={max_age}", "ETag": etag}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="text/xml", charset="utf-8", headers=headers)


def _not_found(what: str) -> web.Response:
    return web.Response(status=404, text=f"{what} not found\n")


def _identifier(text: str, what: str, *, participant: bool = False) -> Identifier:
    try:
        return Identifier.parse(text, allow_ebcore=participant)
    except IdentifierError:
        raise web.HTTPBadRequest(text=f"{what} is not scheme::value\n") from None


def _authorised(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    # Compare against every token so that timing tells nothing about which one nearly matched.
    results = [hmac.compare_digest(token.encode(), known.encode()) for known in request.app[SETTINGS].tokens]
    return any(results)


def _require_token(request: web.Request) -> None:
    if not _authorised(request):
        raise web.HTTPUnauthorized(text="a valid bearer token is required\n", headers={"WWW-Authenticate": "Bearer"})


async def _read_xml(request: web.Request) -> etree._Element:
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(body))
    try:
        return parse_xml(body, max_bytes=MAX_BODY, what="SMP document")
    except EbmsError as exc:
        raise web.HTTPBadRequest(text=f"{exc.detail}\n") from None


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
        # Another process may write to the same database; a cached answer lives at most max_age seconds.
        if cached is None or now - cached[0] > settings.max_age:
            root = await build()
            if root is None:
                return _not_found(str(key[0]))
            sign_document(root, settings.signing, self.listener.flavour)
            if len(cache) >= MAX_CACHED:
                cache.clear()
            cached = cache[full_key] = (now, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
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
                return _not_found("participant")
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
                raise web.HTTPBadRequest(text=f"{exc}\n") from None
            if named.key() != participant.key():
                raise web.HTTPBadRequest(text="the body names another participant than the URL\n")
        created = await request.app[STORE].put_group(participant)
        log.info("service group %s %s", participant, "created" if created else "kept")
        return web.Response(status=201 if created else 200)

    async def delete_group(self, request: web.Request) -> web.Response:
        _require_token(request)
        participant = _identifier(request.match_info["participant"], "participant", participant=True)
        if not await request.app[STORE].delete_group(participant):
            return _not_found("participant")
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
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        if metadata.redirect is not None:
            metadata = ServiceMetadata(participant, document, redirect=metadata.redirect)
        elif metadata.participant.key() != participant.key() or metadata.document != document:
            raise web.HTTPBadRequest(text="the body names another participant or document type than the URL\n")
        created = await request.app[STORE].put_metadata(metadata)
        if created is None:
            return _not_found("participant")
        return web.Response(status=201 if created else 200)

    async def delete_metadata(self, request: web.Request) -> web.Response:
        _require_token(request)
        participant = _identifier(request.match_info["participant"], "participant", participant=True)
        document = _identifier(request.match_info["document"], "document type")
        if not await request.app[STORE].delete_metadata(participant, document):
            return _not_found("service metadata")
        return web.Response(status=200)


def create_app(
    settings: SmpSettings, listeners: tuple[Listener, ...] | None = None, *, store: SmpStore | None = None
) -> web.Application:
    """The application serving ``listeners`` (default: all of them, whatever their port) from one store."""
    app = web.Application(client_max_size=MAX_BODY)
    app[SETTINGS] = settings
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


async def serve(settings: SmpSettings) -> tuple[list[web.AppRunner], SmpStore]:
    """Start one site per (host, port), sharing one store; stop with ``cleanup()`` on each runner, then close."""
    store = await SmpStore.open(settings.database)
    by_address: dict[tuple[str, int], list[Listener]] = {}
    for listener in settings.listeners:
        by_address.setdefault((listener.host, listener.port), []).append(listener)
    runners = []
    for (host, port), listeners in by_address.items():
        runner = web.AppRunner(create_app(settings, tuple(listeners), store=store), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
        log.info("SMP serving %s on http://%s:%d", ", ".join(x.flavour.name for x in listeners), host, port)
    return runners, store
