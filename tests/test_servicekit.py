"""The service toolkit: duration and size grammar, problem documents, bearer tokens and scopes, settings
reports, TLS, start and graceful stop, per-schema migrations, webhook signatures."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import ssl
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Column, Integer, MetaData, String, Table, text

from accesspoint.servicekit import tokens as tokens_module
from accesspoint.servicekit.database import Migrations, create_engine
from accesspoint.servicekit.problems import INTERNAL_DETAIL, PROBLEM_JSON, Problem, problem_middleware
from accesspoint.servicekit.server import Listener, serve, start
from accesspoint.servicekit.settings import SettingsError, SettingsReader, read_document, sqlite_relative
from accesspoint.servicekit.tls import TlsSettings, client_context, server_context
from accesspoint.servicekit.tokens import BearerAuth, BearerToken, Scope, bearer_credentials, scopes
from accesspoint.servicekit.units import parse_duration, parse_size
from accesspoint.servicekit.webhooks import signature, signature_matches
from accesspoint.testing.pki import make_ca, tls_certificate
from accesspoint.testing.services import free_port

# ------------------------------------------------------------------------------------------------ grammar


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (30, 30),
        (0.5, 0.5),
        (0, 0),
        ("30", 30),
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("1d2h3m4s5ms", 93784.005),
        ("1.5h", 5400),
        (".5s", 0.5),
        ("7d", 604800),
        (" 5m ", 300),
        ("PT5M", 300),
        ("PT1H30M", 5400),
        ("PT0.5S", 0.5),
        ("P7D", 604800),
        ("P1DT2H", 93600),
        ("P2W", 1209600),
    ],
)
def test_durations_in_every_accepted_form(given: object, seconds: float) -> None:
    """Seconds as numbers, unit suffixes largest first, and ISO 8601 durations all read as the same timedelta."""
    assert parse_duration(given) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "given",
    [
        *("", "5M", "30m1h", "1h1h", "1h 30m", "-5s", "5 s", "1e3s", "5mss", "m", "P", "PT", "P1H", "PT1D", "pt5m"),
        *("x", True, None, -1, float("nan"), float("inf"), [], "P1W2D"),
    ],
)
def test_durations_refused_name_the_grammar(given: object) -> None:
    """Anything outside the grammar (wrong case, wrong order, repeats, signs, booleans) is refused with examples."""
    with pytest.raises(ValueError, match=r"duration|longer than any") as caught:
        parse_duration(given)
    assert repr(given) in str(caught.value)


@pytest.mark.parametrize("given", ["P1M", "P1Y", "P1Y2M3DT4H", "P2MT1H"])
def test_iso_years_and_months_are_refused_as_having_no_fixed_length(given: str) -> None:
    """ISO 8601 months and years are refused with the reason (their length varies), not read as minutes."""
    with pytest.raises(ValueError, match="no fixed length"):
        parse_duration(given)
    assert parse_duration("PT2M") == timedelta(minutes=2)


@pytest.mark.parametrize(
    ("given", "size"),
    [
        (0, 0),
        (1048576, 1048576),
        ("1048576", 1048576),
        ("10B", 10),
        ("1kB", 1000),
        ("2KB", 2000),
        ("1GB", 10**9),
        ("3TB", 3 * 10**12),
        ("64MiB", 64 * 2**20),
        ("512 KiB", 512 * 1024),
        ("1.5GiB", 3 * 2**29),
        ("0.3MB", 300000),
        (2.0, 2),
        ("1TiB", 2**40),
    ],
)
def test_sizes_in_every_accepted_form(given: object, size: int) -> None:
    """Bytes as numbers, SI (powers of 1000) and IEC (powers of 1024) units read as whole bytes."""
    assert parse_size(given) == size


@pytest.mark.parametrize(
    "given", ["64mb", "1gib", "0.5B", "1.5", "-1", "1e3", "MiB", "", "x", True, -1, 1.5, float("inf"), None]
)
def test_sizes_refused(given: object) -> None:
    """Unknown or wrongly cased units, fractions of a byte, negative numbers and booleans are refused."""
    with pytest.raises(ValueError, match=r"size|unit|whole number") as caught:
        parse_size(given)
    assert repr(given) in str(caught.value)


# ----------------------------------------------------------------------------------------------- problems


class _Refused(Exception):
    pass


def _problem_app() -> web.Application:
    def translate(exc: Exception) -> Problem | None:
        return Problem(409, str(exc), kind="refused") if isinstance(exc, _Refused) else None

    async def raises_problem(_request: web.Request) -> web.Response:
        raise Problem(422, "pmode: no such P-Mode", kind="invalid-submission", field="pmode")

    async def raises_own(_request: web.Request) -> web.Response:
        raise _Refused("the service said no")

    async def raises_bug(_request: web.Request) -> web.Response:
        raise KeyError("SELECT secret FROM internals WHERE path='/srv/data'")

    async def raises_http(_request: web.Request) -> web.Response:
        raise web.HTTPBadRequest(text="participant is not scheme::value")

    async def raises_http_500(_request: web.Request) -> web.Response:
        raise web.HTTPInternalServerError(text="connection to db01.internal:5432 refused")

    async def redirects(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = web.Application(middlewares=[problem_middleware(translate)], client_max_size=1024)
    app.router.add_get("/problem", raises_problem)
    app.router.add_get("/own", raises_own)
    app.router.add_get("/bug", raises_bug)
    app.router.add_get("/http", raises_http)
    app.router.add_get("/http500", raises_http_500)
    app.router.add_get("/redirect", redirects)
    app.router.add_post("/echo", echo)
    return app


async def _problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status
    assert response.headers["Content-Type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = json.loads(await response.text())
    assert body["status"] == status and body["title"] and body["detail"]
    return body


async def test_a_raised_problem_is_answered_with_its_document(aiohttp_client: Any) -> None:
    """A Problem carries type (from its kind), title, status, detail and extension members such as field."""
    client: TestClient[Any, Any] = await aiohttp_client(_problem_app())
    body = await _problem(await client.get("/problem"), 422)
    assert body == {
        "type": "urn:accesspoint:problem:invalid-submission",
        "title": "invalid-submission",
        "status": 422,
        "detail": "pmode: no such P-Mode",
        "field": "pmode",
    }
    own = await _problem(await client.get("/own"), 409)
    assert own["type"] == "urn:accesspoint:problem:refused" and own["detail"] == "the service said no"


async def test_aiohttp_errors_become_about_blank_problems(aiohttp_client: Any) -> None:
    """Unknown routes, wrong methods (with Allow), oversized bodies and raised 4xx get about:blank problems."""
    client: TestClient[Any, Any] = await aiohttp_client(_problem_app())
    missing = await _problem(await client.get("/nowhere"), 404)
    assert (missing["type"], missing["title"]) == ("about:blank", "Not Found")
    wrong = await client.post("/problem")
    assert (await _problem(wrong, 405))["title"] == "Method Not Allowed"
    assert wrong.headers["Allow"] == "GET,HEAD"
    await _problem(await client.post("/echo", data=b"x" * 4096), 413)
    bad = await _problem(await client.get("/http"), 400)
    assert bad["detail"] == "participant is not scheme::value"
    redirect = await client.get("/redirect", allow_redirects=False)
    assert redirect.status == 302 and redirect.headers["Location"] == "/elsewhere"


async def test_a_500_never_leaks_internals(aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A bug is answered 500 with a generic detail and an incident id; the exception text goes only to the log."""
    client: TestClient[Any, Any] = await aiohttp_client(_problem_app())
    with caplog.at_level(logging.ERROR, "accesspoint.servicekit"):
        response = await client.get("/bug")
        body = await _problem(response, 500)
    raw = json.dumps(body)
    assert "secret" not in raw and "KeyError" not in raw and "/srv" not in raw
    assert body["detail"] == INTERNAL_DETAIL and body["type"] == "about:blank"
    incident = body["instance"].removeprefix("urn:uuid:").replace("-", "")
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and logged[0].exc_info is not None and "internals" in str(logged[0].exc_info[1])
    also_500 = await _problem(await client.get("/http500"), 500)
    assert "db01" not in json.dumps(also_500)


def test_a_problem_status_is_an_error_status() -> None:
    """A Problem refuses a status that is not 4xx or 5xx, and an about:blank title is the status phrase."""
    with pytest.raises(ValueError, match="4xx or 5xx"):
        Problem(200, "fine")
    assert Problem(503, "later").to_json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "later",
    }


# ------------------------------------------------------------------------------------------------- tokens

SECRET_ALL = "all-powerful-secret-0001"
SECRET_READ = "read-only-secret-000002"
SECRET_PARTY = "one-party-secret-0000003"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("BeArEr abc", "abc"),
        ("Bearer    abc", "abc"),
        (" Bearer abc ", "abc"),
        ("Bearer a.b-c_d~e+f/g==", "a.b-c_d~e+f/g=="),
        ("abc", None),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer a b", None),
        ("Bearerabc", None),
        ("Bearer\tabc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_scheme_in_any_case_and_never_a_bare_token(header: str | None, token: str | None) -> None:
    """The Bearer scheme is case-insensitive; a bare token, another scheme or extra words present no token."""
    assert bearer_credentials(header) == token


def _auth() -> BearerAuth:
    return BearerAuth(
        [
            BearerToken("admin", SECRET_ALL, scopes("read", "write")),
            BearerToken("reader", SECRET_READ, scopes("read")),
            BearerToken("party", SECRET_PARTY, scopes("read:party=0007:5567212345", "submit:pmode=se-to-no")),
        ],
        realm="test",
    )


def _token_app() -> web.Application:
    auth = _auth()

    async def read(request: web.Request) -> web.Response:
        token = auth.authorize(request, "read", party=request.query.get("party", ""))
        return web.json_response({"name": token.name})

    async def write(request: web.Request) -> web.Response:
        return web.json_response({"name": auth.authorize(request, "write").name})

    app = web.Application(middlewares=[problem_middleware()])
    app.router.add_get("/read", read)
    app.router.add_post("/write", write)
    return app


async def test_tokens_answer_401_403_with_www_authenticate(aiohttp_client: Any) -> None:
    """No credentials: 401 without an error code; an unknown token: invalid_token; a missing scope: 403."""
    client: TestClient[Any, Any] = await aiohttp_client(_token_app())
    for header in ({}, {"Authorization": SECRET_ALL}, {"Authorization": f"Basic {SECRET_ALL}"}):
        response = await client.get("/read", headers=header)
        assert (await _problem(response, 401))["type"] == "urn:accesspoint:problem:unauthorised"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="test"'
    wrong = await client.get("/read", headers={"Authorization": f"Bearer {SECRET_ALL[:-1]}x"})
    await _problem(wrong, 401)
    assert wrong.headers["WWW-Authenticate"] == (
        'Bearer realm="test", error="invalid_token", error_description="unknown token"'
    )
    refused = await client.post("/write", headers={"Authorization": f"bearer {SECRET_READ}"})
    assert (await _problem(refused, 403))["title"] == "forbidden"
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="test", error="insufficient_scope", scope="write"'
    for scheme in ("Bearer", "bearer", "BEARER"):
        ok = await client.post("/write", headers={"Authorization": f"{scheme} {SECRET_ALL}"})
        assert ok.status == 200 and (await ok.json())["name"] == "admin"


async def test_a_party_scope_reads_only_that_party(aiohttp_client: Any) -> None:
    """read:party=X grants reading X's messages, not another party's, nor a request that names no party."""
    client: TestClient[Any, Any] = await aiohttp_client(_token_app())
    auth = {"Authorization": f"Bearer {SECRET_PARTY}"}
    assert (await client.get("/read?party=0007:5567212345", headers=auth)).status == 200
    other = await client.get("/read?party=0007:9999999999", headers=auth)
    assert "for party 0007:9999999999" in (await _problem(other, 403))["detail"]
    await _problem(await client.get("/read", headers=auth), 403)


def test_every_token_is_compared_through_equal_length_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request compares against every configured token (no early exit) with fixed-length digests."""
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", recording)
    auth = _auth()
    for presented in (SECRET_ALL, "a-much-longer-token-that-matches-nothing-at-all-0123456789", "short"):
        compared.clear()
        with contextlib.suppress(Problem):
            auth.identify(f"Bearer {presented}")
        assert len(compared) == len(auth.tokens)
        assert {len(a) for a, _ in compared} | {len(b) for _, b in compared} == {32}


def test_scopes_narrow_by_kind_and_fail_closed() -> None:
    """A narrowed scope grants only its resource; write:operator=X says FaR writes for operator X only."""
    operator = Scope.parse("write:operator=5567212345")
    assert (operator.action, operator.kind, operator.value, str(operator)) == (
        "write",
        "operator",
        "5567212345",
        "write:operator=5567212345",
    )
    token = BearerToken("op", "x" * 16, frozenset({operator, Scope("read")}))
    assert token.allows("write", operator="5567212345")
    assert not token.allows("write", operator="5560000000")
    assert not token.allows("write")
    assert token.allows("read") and token.allows("read", operator="anything")
    for bad in ("", "read write", "read:", "read:party", "read:=x", "1read", "read:party=a b"):
        with pytest.raises(ValueError, match="not a scope"):
            Scope.parse(bad)


def test_a_grant_says_what_a_search_may_show() -> None:
    """grant() lists the P-Modes and parties a restricted token may see, or says it sees everything."""
    token = BearerToken("t", "x" * 16, scopes("read:pmode=a", "read:pmode=b", "read:party=p", "submit"))
    grant = token.grant("read")
    assert not grant.unrestricted and grant.only == {"pmode": {"a", "b"}, "party": {"p"}}
    assert grant.covers(pmode="b", party="q") and grant.covers(party="p") and not grant.covers(pmode="c")
    assert token.grant("submit").unrestricted and token.grant("ack").nothing


# ----------------------------------------------------------------------------------------------- settings


def _write(folder: Path, name: str, content: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(content), encoding="utf-8")
    return path


def _read_service(path: Path) -> dict[str, Any]:
    reader = SettingsReader(path.parent)
    service = reader.section(read_document(path).get("service"), f"{path}: service", known=SERVICE_KEYS)
    values = {
        "host": service.string("host", "127.0.0.1", min_length=1),
        "port": service.port("port", 8000),
        "timeout": service.duration("timeout", "5s", positive=True),
        "limit": service.size("limit", "1MiB", positive=True),
        "debug": service.boolean("debug", False),
        "url": service.url("url", required=True),
        "mode": service.choice("mode", "fast", {"fast": "fast", "safe": "safe"}),
        "names": service.strings("names"),
        "database": service.database("database", "sqlite+aiosqlite:///service.db"),
        "tokens": service.tokens("tokens", actions={"read", "write"}, kinds={"party"}),
        "nested": service.section("nested", known={"depth"}).integer("depth", 1, minimum=1, maximum=9),
    }
    reader.done()
    return values


SERVICE_KEYS = {"host", "port", "timeout", "limit", "debug", "url", "mode", "names", "database", "tokens", "nested"}


def test_settings_report_every_mistake_with_file_and_field(tmp_path: Path) -> None:
    """One read names every wrong field of the file, nested tables and array items included, not just the first."""
    path = _write(
        tmp_path,
        "service.toml",
        """
        [service]
        host = ""
        port = 70000
        timeout = "5 minutes"
        limit = "64mb"
        debug = "yes"
        url = "ftp://x"
        mode = "slow"
        names = ["a", 1]
        colour = "blue"
        nested = { depth = 10, width = 2 }
        tokens = [
            "short",
            { name = "a", token = "bad token with spaces", scopes = ["read"] },
            { name = "b", token = "good-token-0000000001", scopes = ["delete"] },
            { name = "c", token = "good-token-0000000002", scopes = ["read:pmode=x"] },
            { token = "good-token-0000000003", scopes = ["read"] },
        ]
        """,
    )
    with pytest.raises(SettingsError) as caught:
        _read_service(path)
    fields = [problem.removeprefix(f"{path}: ").split(": ")[0] for problem in caught.value.problems]
    assert fields == [
        "service.colour",
        "service.host",
        "service.port",
        "service.timeout",
        "service.limit",
        "service.debug",
        "service.url",
        "service.mode",
        "service.names",
        "service.tokens[0]",
        "service.tokens[1].token",
        "service.tokens[2].scopes",
        "service.tokens[3].scopes",
        "service.tokens[4].name",
        "service.nested.width",
        "service.nested.depth",
    ]
    assert all(problem.startswith(f"{path}: ") for problem in caught.value.problems)
    assert "5 minutes" in str(caught.value) and "unknown unit 'mb'" in str(caught.value)


def test_settings_read_well_formed_values(tmp_path: Path) -> None:
    """Good values come back typed; a relative SQLite path is taken from the settings file's folder (YAML)."""
    path = _write(
        tmp_path,
        "service.yaml",
        """
        service:
          port: 8080
          timeout: PT1M30S
          limit: 64MiB
          url: https://example.test/x
          mode: safe
          names: [a, b]
          database: sqlite+aiosqlite:///data/service.db
          tokens:
            - a-plain-secret-gets-every-action
            - {name: reader, token: reader-secret-000001, scopes: ["read:party=0007:1"]}
          nested: {depth: 3}
        """,
    )
    values = _read_service(path)
    assert values["timeout"] == timedelta(seconds=90) and values["limit"] == 64 * 2**20
    assert values["database"] == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'service.db'}"
    plain, reader = values["tokens"]
    assert plain.scopes == scopes("read", "write") and plain.name == "tokens[0]"
    assert reader.name == "reader" and reader.allows("read", party="0007:1") and not reader.allows("read")
    assert (values["mode"], values["names"], values["nested"]) == ("safe", ("a", "b"), 3)


def test_a_top_level_section_names_its_fields_after_a_prefix(tmp_path: Path) -> None:
    """A file whose top level is the settings names fields as the access point does: ``file: field send.lease``."""
    reader = SettingsReader(tmp_path)
    top = reader.section({"send": {"lease": "soon"}, "api_tokens": ["short"]}, "server.yaml: field ")
    top.section("send").duration("lease", "2m")
    top.tokens("api_tokens", actions={"submit", "read"}, kinds={"pmode", "party"})
    with pytest.raises(SettingsError) as caught:
        reader.done()
    assert [p.split(": ")[1] for p in caught.value.problems] == ["field send.lease", "field api_tokens[0]"]


def test_two_tokens_with_one_secret_are_a_mistake(tmp_path: Path) -> None:
    """A secret configured twice would make the second holder's scopes unreachable: refused."""
    reader = SettingsReader(tmp_path)
    section = reader.section({"tokens": ["same-secret-000000001", "same-secret-000000001"]}, "f: s")
    section.tokens("tokens", actions={"read"})
    with pytest.raises(SettingsError, match=r"f: s\.tokens: entries 0 and 1 have the same token"):
        reader.done()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.toml", "[service\n", "not valid TOML"),
        ("a.yaml", "service: [\n", "not valid YAML"),
        ("a.yaml", "- 1\n- 2\n", "top level must be a mapping"),
        ("missing.toml", None, "cannot read"),
    ],
)
def test_unreadable_settings_files_name_the_file(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    """A file that cannot be read or parsed is one mistake naming the file."""
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError) as caught:
        read_document(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: ") and message in problem


def test_sqlite_paths_relative_to_the_settings_file(tmp_path: Path) -> None:
    """Only a relative SQLite file path moves; absolute paths, memory databases and other URLs stay as given."""
    assert (
        sqlite_relative("sqlite+aiosqlite:///x.db?mode=ro", tmp_path) == f"sqlite+aiosqlite:///{tmp_path}/x.db?mode=ro"
    )
    assert sqlite_relative("sqlite:///x.db", tmp_path) == f"sqlite:///{tmp_path}/x.db"
    for unchanged in ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:///:memory:", "postgresql://h/db"):
        assert sqlite_relative(unchanged, tmp_path) == unchanged


# ---------------------------------------------------------------------------------------------------- TLS


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    ca = make_ca("Kit CA")
    files = tls_certificate(ca, "server", folder)
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    return ca_file, Path(files["certificate"]), Path(files["key"])


def test_tls_settings_are_checked_when_read(tmp_path: Path) -> None:
    """A key that is not the certificate's, an unknown cipher list, TLS 1.1 and max below min are all named."""
    ca_file, certificate, key = _tls_files(tmp_path)
    reader = SettingsReader(tmp_path)
    section = reader.section(
        {"tls": {"certificate": certificate.name, "key": ca_file.name, "ciphers": "NOPE", "min_version": "1.1"}},
        "f: s",
    )
    section.tls("tls")
    again = reader.section(
        {"tls": {"certificate": "server.pem", "key": "server.key", "min_version": "1.3", "max_version": "1.2"}}, "f: t"
    )
    assert again.tls("tls") is not None
    with pytest.raises(SettingsError) as caught:
        reader.done()
    fields = [p.split(": ")[1] for p in caught.value.problems]
    assert fields == ["s.tls.min_version", "s.tls.ciphers", "s.tls.key", "t.tls.max_version"]
    good = SettingsReader(tmp_path).section({"tls": {"certificate": "server.pem", "key": "server.key"}}, "f: s")
    settings = good.tls("tls")
    assert settings is not None and settings.minimum_version is ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError, match=r"below 1\.2"):
        server_context(TlsSettings(certificate, key, minimum_version=ssl.TLSVersion.TLSv1_1))


async def test_tls_versions_are_what_the_settings_say(tmp_path: Path) -> None:
    """A server capped at TLS 1.2 negotiates 1.2; a client that insists on 1.3 cannot connect to it."""
    ca_file, certificate, key = _tls_files(tmp_path)

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    context = server_context(TlsSettings(certificate, key, maximum_version=ssl.TLSVersion.TLSv1_2))
    port = free_port()
    running = await start([Listener(app, "127.0.0.1", port, context)])
    try:
        client = client_context(ca_file)
        _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="127.0.0.1")
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
        writer.close()
        await writer.wait_closed()
        strict = client_context(ca_file, minimum_version=ssl.TLSVersion.TLSv1_3)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection("127.0.0.1", port, ssl=strict, server_hostname="127.0.0.1")
    finally:
        await running.stop()


# ----------------------------------------------------------------------------------------- start and stop


async def test_sigterm_stops_gracefully_after_requests_in_flight(tmp_path: Path) -> None:
    """On SIGTERM a request in flight is still answered, then the cleanup contexts run and the port is closed."""
    events: list[str] = []
    begun = asyncio.Event()

    async def slow(_request: web.Request) -> web.Response:
        begun.set()
        await asyncio.sleep(0.3)
        events.append("answered")
        return web.Response(text="done")

    async def lifecycle(_app: web.Application) -> Any:
        events.append("opened")
        yield
        events.append("closed")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.cleanup_ctx.append(lifecycle)
    port = free_port()
    up = asyncio.Event()
    server = asyncio.create_task(serve([Listener(app, "127.0.0.1", port)], started=up.set, grace=5))
    await asyncio.wait_for(up.wait(), 10)
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/slow"))
        await asyncio.wait_for(begun.wait(), 10)
        os.kill(os.getpid(), signal.SIGTERM)
        response = await asyncio.wait_for(request, 10)
        assert response.status == 200 and await response.text() == "done"
    await asyncio.wait_for(server, 10)
    assert events == ["opened", "answered", "closed"]
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_port_in_use_stops_what_was_started() -> None:
    """When the second address cannot be bound, start raises OSError and the first site is stopped again."""
    closed: list[bool] = []

    async def lifecycle(_app: web.Application) -> Any:
        yield
        closed.append(True)

    first, second = web.Application(), web.Application()
    first.cleanup_ctx.append(lifecycle)
    port = free_port()
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
    free = free_port()
    try:
        with pytest.raises(OSError):
            await start([Listener(first, "127.0.0.1", free), Listener(second, "127.0.0.1", port)])
    finally:
        blocker.close()
        await blocker.wait_closed()
    assert closed == [True]
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", free)


# ------------------------------------------------------------------------------------------------ database

KIT_REVISION = '''
"""A kit table."""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("kit_things", sa.Column("id", sa.Integer(), primary_key=True), sa.Column("name", sa.String(20)))


def downgrade() -> None:
    op.drop_table("kit_things")
'''

KIT_SECOND = '''
"""A column more."""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kit_things") as batch:
        batch.add_column(sa.Column("size", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kit_things") as batch:
        batch.drop_column("size")
'''


def _kit_migrations(folder: Path) -> Migrations:
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(
        "from sqlalchemy import MetaData\nfrom accesspoint.servicekit.database import run_environment\n"
        "run_environment(MetaData())\n"
    )
    (folder / "versions" / "0001_kit.py").write_text(KIT_REVISION)
    (folder / "versions" / "0002_size.py").write_text(KIT_SECOND)
    return Migrations(folder, version_table="kit_alembic_version", adopt_tables={"kit_things"})


async def test_migrations_keep_their_own_version_table(database_url: str, tmp_path: Path) -> None:
    """Two instances upgrading at once end at head once, in the schema's own version table, beside others'."""
    migrations = _kit_migrations(tmp_path / "kit")
    engine, other = create_engine(database_url), create_engine(database_url)
    try:
        assert await migrations.current(engine) is None
        await asyncio.gather(migrations.upgrade(engine), migrations.upgrade(other))
        assert await migrations.current(engine) == migrations.head == "0002"
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT count(*) FROM kit_alembic_version"))).scalar()
            await connection.execute(text("SELECT id, name, size FROM kit_things"))
        assert rows == 1
        await migrations.upgrade(engine)  # at head: nothing to do
    finally:
        await engine.dispose()
        await other.dispose()


async def test_a_database_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    """Tables made by create_all, without a version table: the first revision is recorded, the next one runs."""
    migrations = _kit_migrations(tmp_path / "kit")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    old = MetaData()
    Table("kit_things", old, Column("id", Integer, primary_key=True), Column("name", String(20)))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(old.create_all)
            await connection.execute(text("INSERT INTO kit_things (id, name) VALUES (1, 'kept')"))
        await migrations.upgrade(engine)
        assert await migrations.current(engine) == "0002"
        async with engine.connect() as connection:
            row = (await connection.execute(text("SELECT name, size FROM kit_things"))).one()
            pragmas = [
                (await connection.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "foreign_keys", "synchronous")
            ]
        assert tuple(row) == ("kept", None)
        assert pragmas == ["wal", 1, 2]  # synchronous FULL
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------------------ webhooks


def test_webhook_signatures_match_only_their_body_and_secret() -> None:
    """The signature header fits the body under its secret, and nothing else."""
    header = signature("webhook-secret-0001", b'{"event":"receipt"}')
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert signature_matches("webhook-secret-0001", b'{"event":"receipt"}', header)
    assert not signature_matches("webhook-secret-0002", b'{"event":"receipt"}', header)
    assert not signature_matches("webhook-secret-0001", b'{"event":"error"}', header)
    assert not signature_matches("webhook-secret-0001", b'{"event":"receipt"}', None)


def test_a_free_port_lies_below_the_kernels_ephemeral_range_and_is_not_handed_out_twice() -> None:
    """A picked port is bindable, outside the range the kernel gives outgoing connections, and never repeated."""
    from accesspoint.servicekit import ports

    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    picked = [free_port() for _ in range(200)]
    assert len(set(picked)) == len(picked)
    assert all(10000 <= port < ephemeral_start for port in picked)
    both = ports.free_port(udp=True)
    assert both not in picked and 10000 <= both < ephemeral_start


def test_parallel_test_workers_pick_ports_from_disjoint_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pytest-xdist worker has its own slice of the port range, so two workers never pick the same port."""
    from accesspoint.servicekit import ports

    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    slices = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices.append(set(ports._picking_range()))
    assert all(slices) and not (slices[0] & slices[1] or slices[1] & slices[2] or slices[0] & slices[2])
