"""``accesspoint tsa serve``: the development RFC 3161 time-stamp authority over HTTP (``security/tsa.py``).

``POST /`` with ``Content-Type: application/timestamp-query`` and a DER TimeStampReq answers a DER
TimeStampResp (``application/timestamp-reply``), as RFC 3161 section 3.4 describes. For the demo, tests and the
bench: a mailbox operator's ``[operator.timestamping] url`` points here. Not a production authority.

Exit codes: 0 stopped; 64 usage (unreadable key or certificate, or a certificate without the critical
id-kp-timeStamping extended key usage).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from accesspoint.cli import EXIT_OK, UsageError
from accesspoint.security.keys import KeyPair
from accesspoint.security.timestamp import TimestampError, check_timestamping_certificate
from accesspoint.security.tsa import QUERY_TYPE, REPLY_TYPE, TimeStampAuthority

if TYPE_CHECKING:
    from aiohttp import web

# A TimeStampReq is a digest, a nonce and a few flags: a hundred bytes; a few kilobytes with extensions.
MAX_QUERY = 64 * 1024


def application(authority: TimeStampAuthority) -> web.Application:
    """``POST /``: a DER TimeStampReq in, a DER TimeStampResp out; ``GET /health``."""
    from aiohttp import web  # here, not at the top: every command of the CLI imports this module

    async def stamp(request: web.Request) -> web.Response:
        if request.content_type != QUERY_TYPE:
            raise web.HTTPUnsupportedMediaType(text=f"send {QUERY_TYPE}")
        return web.Response(body=authority.respond(await request.read()), content_type=REPLY_TYPE)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=MAX_QUERY)
    app.router.add_post("/", stamp)
    app.router.add_get("/health", health)
    return app


def load_authority(key_path: Path, certificate_path: Path) -> TimeStampAuthority:
    """The authority from PEM files; UsageError naming what cannot be used."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"the authority's key or certificate cannot be read: {exc}") from None
    try:
        check_timestamping_certificate(certificate)
    except TimestampError as exc:
        raise UsageError(f"{certificate_path}: {exc}") from None
    return TimeStampAuthority(KeyPair(key, certificate))  # type: ignore[arg-type]


def register(commands: Any) -> None:
    """Add ``tsa serve`` to the CLI."""
    tsa = commands.add_parser("tsa", help="a development RFC 3161 time-stamp authority")
    actions = tsa.add_subparsers(dest="tsa_command", required=True, parser_class=type(tsa))
    serve = actions.add_parser("serve", help="answer RFC 3161 time-stamp requests over HTTP (POST /)")
    serve.add_argument("--key", type=Path, required=True, help="the authority's private key (PEM)")
    serve.add_argument("--certificate", type=Path, required=True, help="its certificate (critical timeStamping EKU)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, required=True)
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Serve until SIGTERM or SIGINT."""
    from accesspoint.servicekit import server

    authority = load_authority(args.key, args.certificate)
    server.run([server.Listener(application(authority), args.host, args.port, None)])
    return EXIT_OK, {"ok": True, "stopped": True}
