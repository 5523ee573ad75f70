"""``create_console(settings, access_point)``: the admin console as an aiohttp application on a listener of its own.

Server-rendered pages (Jinja2, autoescaped, plain HTML forms, no JavaScript: the Content-Security-Policy allows
none), over the access point's running context (its store, P-Modes, keys, queue) and its operator moves
(``accesspoint.msh.operations``), never over the AS4 endpoint. The console's own state (users, sessions, audit,
alerts, incidents, checks) lives in its own tables.

Every request but the login page, the style sheet and ``/status`` (which also takes a bearer token) needs a live
session. Every POST must carry the session's CSRF token (the login form a double-submit token of its own) and, when
the browser sends one, an ``Origin`` of this console; a viewer may read everything but the audit log, an admin also
acts; every action is audited, refused ones too.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import jinja2
from aiohttp import web

from accesspoint.console.accounts import Accounts, Session
from accesspoint.console.alerts import Alerts, Kind, Level
from accesspoint.console.audit import Audit
from accesspoint.console.checks import Checks
from accesspoint.console.db import ConsoleDb
from accesspoint.console.incidents import Incidents
from accesspoint.console.settings import ConsoleSettings
from accesspoint.msh.app import CONTEXT, OPERATIONS, STATUS
from accesspoint.msh.certificates import inventory
from accesspoint.msh.context import Context
from accesspoint.msh.operations import Operations
from accesspoint.msh.status import Status
from accesspoint.msh.supervisor import Supervisor
from accesspoint.servicekit.status import Held
from accesspoint.servicekit.tokens import BearerAuth
from accesspoint.store.search import MessageSearch

log = logging.getLogger("accesspoint.console")

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "console_session"
LOGIN_COOKIE = "console_login"  # the login form's double-submit CSRF token
PUBLIC = ("/login", "/static/", "/status", "/favicon.ico")
SECURITY_HEADERS = {
    # No script runs in the console, no frame holds it, forms post only to it.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Console:
    """What the console's handlers work with."""

    settings: ConsoleSettings
    access_point: web.Application
    db: ConsoleDb
    accounts: Accounts
    audit: Audit
    alerts: Alerts
    incidents: Incidents
    checks: Checks
    templates: jinja2.Environment
    http: aiohttp.ClientSession
    status_auth: BearerAuth
    supervisor: Supervisor

    @property
    def ctx(self) -> Context:
        """The access point's running context."""
        return self.access_point[CONTEXT]

    @property
    def operations(self) -> Operations:
        """The access point's operator moves."""
        return self.access_point[OPERATIONS]

    @property
    def status(self) -> Status:
        """The access point's status (``accesspoint.msh.status``): what the status page shows."""
        return self.access_point[STATUS]

    @property
    def search(self) -> MessageSearch:
        """Operators' queries over the message store."""
        return MessageSearch(self.ctx.store.db)

    def now(self) -> datetime:
        """The access point's clock."""
        return self.ctx.clock.now()

    async def certificates(self) -> list[Held]:
        """The certificates in use (keys, TLS, trust anchors) with the P-Modes in force, read off the event loop
        once per P-Mode set (the status keeps them: every page's banner needs them)."""
        return await self.status.certificates()


CONSOLE = web.AppKey("console", Console)
SESSION = web.RequestKey("console_session", Session)


def create_console(settings: ConsoleSettings, access_point: web.Application) -> web.Application:
    """The console over an access point application (which must be started first: its context is used)."""
    from accesspoint.console import pages  # the handlers, which import this module's helpers

    app = web.Application(middlewares=[_headers, _sessions], client_max_size=1024**2)
    pages.routes(app)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    app.cleanup_ctx.append(functools.partial(_running, settings, access_point))
    return app


async def _running(
    settings: ConsoleSettings, access_point: web.Application, app: web.Application
) -> AsyncIterator[None]:
    if CONTEXT not in access_point:
        raise RuntimeError("start the access point before its console: the console works on its running context")
    ctx = access_point[CONTEXT]
    db = await ConsoleDb.open(settings.database_url(ctx.settings.storage))
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    alerts = Alerts(db, settings.alerts, ctx.clock, http)
    supervisor = Supervisor()
    console = Console(
        settings=settings,
        access_point=access_point,
        db=db,
        accounts=Accounts(db, settings, ctx.clock),
        audit=Audit(db, ctx.clock),
        alerts=alerts,
        incidents=Incidents(db, settings.deadlines, ctx.clock),
        checks=Checks(db, settings, ctx, access_point[OPERATIONS], alerts, http),
        templates=_templates(),
        http=http,
        status_auth=BearerAuth(settings.status_tokens, realm="console"),
        supervisor=supervisor,
    )
    app[CONSOLE] = console
    await console.checks.record_pmodes()
    supervisor.spawn("console alerts", alerts.run)
    supervisor.spawn("console checks", console.checks.run)
    try:
        yield
    finally:
        await supervisor.stop()
        await http.close()
        await db.close()


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["short"] = lambda text, n=16: text if text is None or len(text) <= n else text[:n] + "…"
    return environment


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


# --- middleware ---------------------------------------------------------------------------------------------


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def _sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = request.app[CONSOLE]
    public = request.path in PUBLIC or request.path.startswith("/static/")
    session = None
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        session = await console.accounts.session(secret)
    if session is not None:
        request[SESSION] = session
        await console.certificates()  # for the page's banner: read now, off the loop, if the P-Modes changed
    if request.method not in ("GET", "HEAD"):
        await _check_post(request, console, session)
    if session is None and not public:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther(f"/login?next={_quote(request.path_qs)}")
        raise web.HTTPForbidden(text="log in first")
    return await handler(request)


async def _check_post(request: web.Request, console: Console, session: Session | None) -> None:
    """CSRF: the form's token must be the session's (the login form's the cookie's), the Origin this console's."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null" and urlsplit(origin).netloc != request.host:
        await _refuse(request, console, session, f"Origin {origin} is not this console")
    form = await request.post()
    given = str(form.get("csrf", ""))
    if request.path == "/login" and session is None:
        expected = request.cookies.get(LOGIN_COOKIE, "")
    else:
        expected = "" if session is None else session.csrf
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        await _refuse(request, console, session, "the form's CSRF token is missing or wrong")


async def _refuse(request: web.Request, console: Console, session: Session | None, why: str) -> None:
    actor = session.user.name if session else "anonymous"
    await console.audit.record(
        actor, "csrf-refused", target=request.path, outcome="refused", address=address(request), why=why
    )
    log.warning("refused %s %s from %s: %s", request.method, request.path, address(request), why)
    raise web.HTTPForbidden(text=f"refused: {why}")


def _quote(text: str) -> str:
    return quote(text, safe="")


# --- helpers for the handlers -------------------------------------------------------------------------------


def address(request: web.Request) -> str:
    """The client's address (the peer; a proxy in front should be the console's only client)."""
    return request.remote or "unknown"


def session_of(request: web.Request) -> Session:
    """The request's session (the middleware has checked there is one)."""
    return request[SESSION]


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """A page: the template with the session, its CSRF token, the navigation and the certificate banner."""
    console = request.app[CONSOLE]
    session = request.get(SESSION)
    expiring = 0
    if session is not None:
        now = console.now()
        held = console.status.held()
        if held is None:
            held = inventory(console.ctx.settings, console.ctx.agreements.current)
        expiring = sum(1 for item in held if item.status(now, console.settings.warn_before) != "ok")
    text = console.templates.get_template(template).render(
        session=session,
        csrf=session.csrf if session else "",
        path=request.path,
        far=console.settings.far is not None,
        operator=console.settings.operator is not None,
        expiring=expiring,
        warn_days=console.settings.warn_before.days,
        note=request.query.get("note", ""),
        **context,
    )
    return web.Response(text=text, content_type="text/html", charset="utf-8", status=status)


def admin_only(handler: Handler) -> Handler:
    """Refuse (403, audited) a handler to a viewer."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        session = session_of(request)
        if not session.user.admin:
            console = request.app[CONSOLE]
            await console.audit.record(
                session.user.name, "forbidden", target=request.path, outcome="refused", address=address(request)
            )
            raise web.HTTPForbidden(text="an admin's action")
        return await handler(request)

    return checked


async def audited(
    request: web.Request, action: str, *, target: str | None = None, outcome: str = "done", **detail: Any
) -> None:
    """Record an action of the request's user."""
    session = request.get(SESSION)
    actor = session.user.name if session else "anonymous"
    await request.app[CONSOLE].audit.record(
        actor, action, target=target, outcome=outcome, address=address(request), **detail
    )


def set_session_cookie(response: web.StreamResponse, console: Console, secret: str) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure unless the settings say otherwise (plain HTTP tests)."""
    response.set_cookie(
        SESSION_COOKIE, secret, httponly=True, samesite="Strict", secure=console.settings.secure_cookies, path="/"
    )


def login_form(request: web.Request, *, status: int = 200, target: str, error: str) -> web.Response:
    """The login page with a fresh double-submit CSRF token, in the form and in its cookie."""
    console = request.app[CONSOLE]
    # The token a browser already holds is kept: another tab's login page (or the browser's own request for a
    # favicon, redirected here) must not invalidate the form already shown.
    held = request.cookies.get(LOGIN_COOKIE, "")
    token = held if len(held) == 43 and held.replace("-", "").replace("_", "").isalnum() else secrets.token_urlsafe(32)
    response = render(request, "login.html", status=status, token=token, next=target, error=error)
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="Strict", secure=console.settings.secure_cookies, path="/login"
    )
    return response


async def login_failed_alert(console: Console, name: str, where: str, failures: int) -> None:
    """The alert raised when failed logins reach the threshold."""
    subject = f"{failures} failed console logins for {name!r} from {where}"
    body = f"user name: {name}\naddress: {where}\nfailures within {console.settings.login.window}: {failures}"
    await console.alerts.raise_alert(Kind.LOGIN_FAILURES, f"{name}|{where}", Level.MEDIUM, subject, body)
