"""``accesspoint serve | send | status``: run the access point, and talk to a running one through its REST API.

Exit codes: 0 success; 1 refused (the server said no: unknown message, no P-Mode, duplicate, a property the
network wants typed given without ``--property-type``; the JSON error has the server's ``status`` and, where one
field is at fault, ``field``); 2 bad input (a settings file that does not validate); 3 the server could not be
reached; 64 usage.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from accesspoint.cli import EXIT_MALFORMED, EXIT_OK, EXIT_REFUSED, UsageError, failure

EXIT_UNREACHABLE = 3


def register(commands: Any) -> None:
    """Add ``serve``, ``send`` and ``status`` to the CLI."""
    serve = commands.add_parser("serve", help="run the access point (AS4 endpoint, backend API, senders)")
    serve.add_argument("--config", required=True, help="the server settings file (YAML or TOML)")
    serve.add_argument("--console", help="a console settings file: serve the admin console on its own listener too")
    serve.set_defaults(handler=cmd_serve)

    send = commands.add_parser("send", help="submit a message to a running access point")
    send.add_argument("files", nargs="+", help="payload files")
    send.add_argument("--api", required=True, help="the access point's base URL, e.g. http://127.0.0.1:8080")
    send.add_argument("--token", required=True, help="an API token")
    send.add_argument("--pmode", help="the P-Mode id to send under")
    send.add_argument("--service")
    send.add_argument("--action")
    send.add_argument("--to", help="the receiver's PartyId")
    send.add_argument("--message-id")
    send.add_argument("--conversation-id")
    send.add_argument("--property", action="append", default=[], metavar="NAME=VALUE", help="a MessageProperty")
    send.add_argument(
        "--property-type", action="append", default=[], metavar="NAME=TYPE",
        help="the type of a --property (Peppol: finalRecipient=iso6523-actorid-upis)",
    )  # fmt: skip
    send.add_argument("--mime-type", help="MIME type of every payload (default: guessed from the file name)")
    send.set_defaults(handler=cmd_send)

    status = commands.add_parser("status", help="show a message's state, history and evidence")
    status.add_argument("message_id")
    status.add_argument("--api", required=True)
    status.add_argument("--token", required=True)
    status.add_argument("--direction", choices=["in", "out"])
    status.set_defaults(handler=cmd_status)


def cmd_serve(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Validate the settings and P-Modes, then serve until interrupted."""
    from accesspoint.msh.app import run_server
    from accesspoint.msh.config import ConfigError, load_config
    from accesspoint.servicekit.settings import SettingsError
    from pmode import PModeError

    try:
        config = load_config(args.config)
        beside = None
        if args.console:
            from accesspoint.console.serve import beside_from

            beside = beside_from(Path(args.console))
        run_server(config, beside=beside)
    except (ConfigError, SettingsError) as exc:
        return EXIT_MALFORMED, failure("invalid-config", str(exc))
    except PModeError as exc:
        return EXIT_MALFORMED, failure("invalid-pmode", str(exc), problems=[p.to_json() for p in exc.problems])
    return EXIT_OK, {"ok": True, "stopped": True}


def _call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--api {url!r} is not an http(s) URL")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (scheme checked above)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read() or b"{}")
        except ValueError:
            problem = {"title": exc.reason}
        return exc.code, problem


def _answer(status: int, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if 200 <= status < 300:
        return EXIT_OK, {"ok": True, **document}
    detail = document.get("detail") or document.get("title") or f"HTTP {status}"
    return EXIT_REFUSED, failure(str(document.get("title", status)), str(detail), status=status,
                                 **({"field": document["field"]} if "field" in document else {}))  # fmt: skip


def message_properties(values: list[str], types: list[str]) -> dict[str, str | dict[str, str]]:
    """The submission's ``properties`` from ``--property NAME=VALUE`` and ``--property-type NAME=TYPE``: a plain
    value, or ``{value, type}`` where a type is given; UsageError for anything else."""
    properties: dict[str, str | dict[str, str]] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--property {item!r} is not NAME=VALUE")
        properties[name] = value
    for item in types:
        name, sep, kind = item.partition("=")
        if not sep or not name or not kind:
            raise UsageError(f"--property-type {item!r} is not NAME=TYPE")
        given = properties.get(name)
        if not isinstance(given, str):
            raise UsageError(f"--property-type {name}: no --property {name}=VALUE to give the type to")
        properties[name] = {"value": given, "type": kind}
    return properties


def cmd_send(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Submit the files as one message through the REST API."""
    payloads = []
    for index, name in enumerate(args.files):
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror}") from None
        mime = args.mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        payloads.append(
            {"content_id": f"payload-{index + 1}", "mime_type": mime, "data": base64.b64encode(data).decode()}
        )
    properties = message_properties(args.property, args.property_type)
    body = {
        key: value
        for key, value in {
            "pmode": args.pmode,
            "service": args.service,
            "action": args.action,
            "to": args.to,
            "message_id": args.message_id,
            "conversation_id": args.conversation_id,
            "properties": properties,
            "payloads": payloads,
        }.items()
        if value is not None
    }
    try:
        return _answer(*_call("POST", f"{args.api.rstrip('/')}/api/v1/messages", args.token, body))
    except (urllib.error.URLError, OSError) as exc:
        return EXIT_UNREACHABLE, failure("unreachable", f"{args.api}: {exc}")


def cmd_status(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Print a message's state as the access point knows it."""
    query = f"?direction={args.direction}" if args.direction else ""
    url = f"{args.api.rstrip('/')}/api/v1/messages/{urllib.parse.quote(args.message_id, safe='')}{query}"
    try:
        return _answer(*_call("GET", url, args.token))
    except (urllib.error.URLError, OSError) as exc:
        return EXIT_UNREACHABLE, failure("unreachable", f"{args.api}: {exc}")
