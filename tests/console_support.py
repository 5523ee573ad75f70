"""What the console's tests share: a console over an in-process access point pair, a client that logs in and
carries the session cookie and CSRF token, a local SMTP server (aiosmtpd) and a webhook receiver that keep what
they are sent, a ping P-Mode on the ebMS test service, and a trust anchor that expires soon."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from accesspoint.console.accounts import Role
from accesspoint.console.app import CONSOLE, Console, create_console
from accesspoint.console.settings import load_settings
from accesspoint.core.namespaces import TEST_ACTION, TEST_SERVICE
from accesspoint.servicekit.tokens import BearerToken, scopes
from accesspoint.servicekit.webhooks import signature_matches
from accesspoint.testing import services
from far.service import FarService
from tests.inmemory import Node, Pair
from tests.test_msh import CERTS

ADMIN, VIEWER = ("ada", "a-long-admin-password"), ("vic", "a-long-viewer-password")
FAR_READER = "console-far-reader-0123456789"  # FaR's read token for the console
FAR_APPROVER = "console-far-approver-0123456789"  # FaR's token with the approve scope
WEBHOOK_SECRET = "console-webhook-secret-0123"
STATUS_TOKEN = "status-token-0123456789abcdef"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def ping_pmode(self_name: str) -> dict[str, Any]:
    """Sweden pings Belgium on the ebMS test service (ebMS 3 5.2.2.9), with the agreements' security."""
    security = {"trust": {"anchors": [str(CERTS / "ca.pem")], "pin_partner": True, "revocation": "off"}}
    awareness = {"retries": 0, "backoff_base": "300ms", "backoff_max": "1s", "jitter": 0.0}
    return {
        "id": "se-ping-be",
        "network": "edelivery-1.15",
        "initiator": {"party": "ap-sweden"},
        "responder": {"party": "partner-115"},
        "legs": [{"service": {"value": TEST_SERVICE}, "action": TEST_ACTION, "security": security,
                  "reception_awareness": awareness}],
    }  # fmt: skip


def expiring_anchor(folder: Path, days: int) -> Path:
    """A self-signed CA certificate whose not-after is ``days`` from now (an extra trust anchor, harmless)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Soon Expiring Test CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=300))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = folder / "soon-expiring-ca.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def with_ping(pair: Pair, *, anchors: list[str] | None = None, **agreed: Any) -> None:
    """Give both access points of a pair the ping P-Mode besides the test agreements (before they start)."""
    from tests.test_msh_support import agreements

    for node, name in ((pair.se, "ap-sweden"), (pair.be, "partner-115")):
        document = agreements(name, pair.se_url, pair.be_url, anchors=anchors, **agreed)
        document["pmodes"].append(ping_pmode(name))
        node.write_pmodes(document)


def write_settings(folder: Path, **console: Any) -> Path:
    """A console settings file (JSON is YAML) with the test defaults and ``console`` overrides."""
    document: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "secure_cookies": True,
        "status_tokens": [STATUS_TOKEN],
        "login": {"delay": "100ms", "delay_max": "2s", "alert_after": 3},
        **console,
    }
    path = folder / "console.yaml"
    path.write_text(json.dumps({"console": document}))
    return path


@dataclass
class RunningConsole:
    """A console served beside a started access point node."""

    server: TestServer
    app: web.Application
    base: str

    @property
    def console(self) -> Console:
        """Its components."""
        return self.app[CONSOLE]


async def start_console(node: Node, settings_file: Path, *, users: bool = True) -> RunningConsole:
    """Serve a console over a started node on a free loopback port, with an admin and a viewer."""
    assert node.app is not None
    app = create_console(load_settings(settings_file), node.app)
    server = TestServer(app, host="127.0.0.1", port=services.free_port())
    await server.start_server()
    running = RunningConsole(server, app, f"http://127.0.0.1:{server.port}")
    if users:
        await running.console.accounts.add_user(*ADMIN, Role.ADMIN)
        await running.console.accounts.add_user(*VIEWER, Role.VIEWER)
    return running


@dataclass
class ConsoleClient:
    """A browser-like client without a browser: keeps the console's cookies (Secure ones too, over loopback HTTP,
    as a browser does for localhost) and the CSRF token of the last page it read."""

    base: str
    http: aiohttp.ClientSession = field(
        default_factory=lambda: aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    )
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie: list[str] = field(default_factory=list)
    csrf: str = ""

    async def request(
        self, method: str, path: str, data: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        """One request (redirects not followed): (status, body as text, response)."""
        sent = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), **(headers or {})}
        async with self.http.request(method, self.base + path, data=data, headers=sent, allow_redirects=False) as r:
            body = await r.read()
            for header in r.headers.getall("Set-Cookie", []):
                self.set_cookie.append(header)
                name, _, rest = header.partition("=")
                value = rest.split(";", 1)[0]
                if "Max-Age=0" in header or value in ('""', ""):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
            text = body.decode("utf-8", "replace")
            if (found := _CSRF.search(text)) is not None:
                self.csrf = found.group(1)
            return r.status, text, r

    async def get(self, path: str) -> tuple[int, str]:
        """GET a page."""
        status, text, _ = await self.request("GET", path)
        return status, text

    async def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = None
    ) -> tuple[int, str, str]:
        """POST a form with the CSRF token of the last page (or the one given): (status, body, Location)."""
        form = {"csrf": self.csrf if csrf is None else csrf, **(data or {})}
        status, text, response = await self.request("POST", path, form)
        return status, text, response.headers.get("Location", "")

    async def login(self, user: tuple[str, str]) -> int:
        """Log in through the form; the status of the answer (303 when in)."""
        await self.get("/login")
        status, _, _ = await self.post("/login", {"name": user[0], "password": user[1], "next": "/messages"})
        if status == 303:
            await self.get("/messages")  # the session's CSRF token
        return status

    async def close(self) -> None:
        """Close the client."""
        await self.http.close()


class SmtpSink:
    """A local SMTP server (aiosmtpd) on a free loopback port that keeps every message it is sent."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = services.free_port()
        self.messages: list[Message] = []
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        """Keep the message."""
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def start(self) -> None:
        """Start the server thread."""
        self.controller.start()

    def stop(self) -> None:
        """Stop it."""
        self.controller.stop()


class WebhookSink:
    """A webhook receiver on a loopback port: keeps each body whose HMAC signature verifies; answers 200."""

    def __init__(self, secret: str = WEBHOOK_SECRET) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        app = web.Application()
        app.router.add_post("/alerts", self.take)
        self.server = TestServer(app, host="127.0.0.1", port=services.free_port())

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.server.port}/alerts"

    async def take(self, request: web.Request) -> web.Response:
        """Check the signature over the raw body, then keep it."""
        body = await request.read()
        if not signature_matches(self.secret, body, request.headers.get("X-Accesspoint-Signature")):
            self.refused += 1
            return web.Response(status=401)
        self.received.append(json.loads(body))
        return web.Response(text="ok")


@dataclass
class RunningFar:
    """FaR served in this event loop (SQLite, Kivra and Billo as approved operators) for the console's FaR pages."""

    server: TestServer
    service: FarService

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.server.port}"

    def console_settings(self, *, approve: bool = True) -> dict[str, str]:
        """The console's ``far`` table: the read token, and the approval token unless ``approve`` is False."""
        return {"url": self.url, "token": FAR_READER, **({"approval_token": FAR_APPROVER} if approve else {})}

    async def close(self) -> None:
        """Stop serving and close its database."""
        await self.server.close()
        await self.service.engine.dispose()


async def start_far(folder: Path) -> RunningFar:
    """FaR with the console's two tokens: ``console`` reads, ``console-approver`` reads and approves."""
    from far.app import create_app as far_app
    from far.settings import FarSettings
    from tests.test_far_support import make_service

    service = await make_service(folder / "far.db")
    settings = FarSettings(
        tokens=(
            BearerToken("console", FAR_READER, scopes("read")),
            BearerToken("console-approver", FAR_APPROVER, scopes("read", "approve")),
        )
    )
    server = TestServer(far_app(settings, service=service), host="127.0.0.1", port=services.free_port())
    await server.start_server()
    return RunningFar(server, service)


async def until(read: Any, holds: Any, what: str, timeout: float = 15) -> Any:
    """Read until ``holds`` says yes; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if holds(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {value}")
        await asyncio.sleep(0.02)
