"""``accesspoint far serve | import | senders import | reachable | registers``: run FaR, bulk-import recipients or
senders, ask FaR about recipients, serve the reference population and business registers FaR asks about holders.

``far reachable --far URL --sender ORGNR RECIPIENT...`` prints a JSON array, one object per recipient
(``recipient``, ``reachable``, ``reason``, ``operator``, ``endpoint``, ``sender_accepted``) and exits 0 when FaR
answered, 2 on bad input (a sender that is no party id, a recipient that is not 12 digits, or a request FaR
refused), 1 when FaR cannot be reached. The bearer token comes from ``--token`` or the ``FAR_TOKEN`` environment
variable.

``far import FILE`` exits 0 when every row was stored, 2 when any row was bad (then nothing is stored; each bad
row is listed with its line), 64 for an unreadable file or configuration. ``far senders import FILE`` does the
same for the sender register (``far/sender_import.py``: JSON lines or CSV).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from accesspoint.cli import EXIT_MALFORMED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, failure

_CLI_KEYS = ("recipient", "reachable", "reason", "operator", "endpoint", "sender_accepted")


def register(commands: Any) -> None:
    """Add ``far serve``, ``far import`` and ``far reachable``."""
    far = commands.add_parser("far", help="FaR, the routing register of Swedish digital post")
    far_commands = far.add_subparsers(dest="far_command", required=True, parser_class=type(far))
    serve = far_commands.add_parser("serve", help="run FaR: REST API and the Recipient v3 SOAP endpoint")
    serve.add_argument("--config", required=True, help="TOML file with a [far] table")
    serve.set_defaults(handler=cmd_serve)

    load = far_commands.add_parser("import", help="bulk-import recipients from CSV (header row) or JSON lines")
    load.add_argument("file", help="a .csv file, or .jsonl / .ndjson (columns: see far/README.md)")
    load.add_argument("--config", help="TOML file with a [far] table (default: far.db in this folder)")
    load.add_argument("--batch", type=int, default=20_000, help="rows per batched insert")
    load.set_defaults(handler=cmd_import)

    senders = far_commands.add_parser("senders", help="the sender register")
    sender_commands = senders.add_subparsers(dest="senders_command", required=True, parser_class=type(far))
    sender_load = sender_commands.add_parser("import", help="bulk-import sender records (JSON lines or CSV)")
    sender_load.add_argument("file", help="a .jsonl / .ndjson file (one record a line) or a .csv with a header")
    sender_load.add_argument("--config", help="TOML file with a [far] table (default: far.db in this folder)")
    sender_load.set_defaults(handler=cmd_import_senders)

    reachable = far_commands.add_parser("reachable", help="ask a FaR whether recipients can get digital post")
    reachable.add_argument("--far", required=True, help="FaR's base URL, e.g. http://127.0.0.1:8470")
    reachable.add_argument("--sender", required=True, help="the sender's party id (0192:…), or its organisationsnummer")
    reachable.add_argument("--token", help="bearer token (default: $FAR_TOKEN)")
    reachable.add_argument("--timeout", type=float, default=10.0, help="seconds before FaR counts as unreachable")
    reachable.add_argument("recipients", nargs="+", metavar="RECIPIENT", help="12 digits each")
    reachable.set_defaults(handler=cmd_reachable)

    registers = far_commands.add_parser(
        "registers", help="serve the reference population and business registers from a JSON file (development)"
    )
    registers.add_argument("--data", required=True, help="JSON: {persons: {id: …}, companies: {orgnr: …}, roles: …}")
    registers.add_argument("--host", default="127.0.0.1")
    registers.add_argument("--port", type=int, default=8490)
    registers.add_argument("--token", help="bearer token that may replace records (PUT); default: none may")
    registers.set_defaults(handler=cmd_registers)


def _settings(config: str | None) -> Any:
    from far.settings import FarSettings, load_settings

    return FarSettings() if config is None else load_settings(Path(config))


def cmd_serve(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Run FaR until SIGINT or SIGTERM."""
    from accesspoint.servicekit.server import Listener, run
    from accesspoint.servicekit.settings import SettingsError
    from accesspoint.servicekit.tls import server_context
    from accesspoint.servicekit.tracing import configure_tracing
    from far.app import create_app

    try:
        settings = _settings(args.config)
    except SettingsError as exc:
        return EXIT_USAGE, failure("config", str(exc), problems=exc.problems)
    tls = None if settings.tls is None else server_context(settings.tls)
    settings.observability.configure_logging()
    configure_tracing("far")
    listener = Listener(create_app(settings), settings.host, settings.port, tls)

    def started() -> None:
        # Everything alive now lives as long as the server: frozen, full collections skip it, which keeps them
        # from adding tens of milliseconds to an isReachable answer (see bench/far.py).
        gc.collect()
        gc.freeze()
        sys.stderr.write(f"far: listening on {listener.url}\n")
        sys.stderr.flush()

    try:
        run([listener], started=started)
    except OSError as exc:
        return EXIT_MALFORMED, failure("listen", f"cannot listen: {exc}", config=args.config)
    return EXIT_OK, {"ok": True, "stopped": True, "url": listener.url}


def cmd_registers(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Serve the reference registers (far/registers.py) until SIGINT or SIGTERM."""
    from accesspoint.servicekit.server import Listener, run
    from far.registers import load_data, reference_app

    try:
        data = load_data(Path(args.data))
    except (OSError, ValueError) as exc:
        return EXIT_USAGE, failure("usage", f"cannot read {args.data}: {exc}")
    if args.token is not None and len(args.token) < 16:
        return EXIT_USAGE, failure("usage", "--token must be at least 16 characters")
    listener = Listener(reference_app(data, token=args.token), args.host, args.port)

    def started() -> None:
        sys.stderr.write(f"registers: listening on {listener.url}\n")
        sys.stderr.flush()

    try:
        run([listener], started=started)
    except OSError as exc:
        return EXIT_MALFORMED, failure("listen", f"cannot listen: {exc}")
    return EXIT_OK, {"ok": True, "stopped": True, "url": listener.url}


def _import_file(
    args: argparse.Namespace, load: Callable[[Any, Any, Path], Awaitable[Any]], *, usage: str | None = None
) -> tuple[int, dict[str, Any]]:
    """What both imports share: read the settings and ``args.file``, refuse ``usage`` (a bad option) if given,
    bring the schema up to date and ``load(engine, settings, path)`` in one transaction; a report with bad rows
    exits 2, an unreadable file or configuration 64."""
    from accesspoint.servicekit.settings import SettingsError
    from far.model import create_engine, upgrade_schema

    try:
        settings = _settings(args.config)
    except SettingsError as exc:
        return EXIT_USAGE, failure("config", str(exc), problems=exc.problems)
    path = Path(args.file)
    if not path.is_file():
        return EXIT_USAGE, failure("usage", f"cannot read {args.file}")
    if usage is not None:
        return EXIT_USAGE, failure("usage", usage)

    async def _run() -> Any:
        engine = create_engine(settings.database)
        try:
            await upgrade_schema(engine)
            return await load(engine, settings, path)
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(_run())
    except UnicodeDecodeError as exc:
        return EXIT_MALFORMED, failure("encoding", f"{args.file} is not UTF-8: {exc.reason}")
    except OSError as exc:
        return EXIT_USAGE, failure("usage", f"cannot read {args.file}: {exc.strerror}")
    document = {"file": args.file, **report.to_json()}
    if not report.ok:
        return EXIT_MALFORMED, {**document, "error": {"code": "bad-rows", "reason": f"{report.bad_rows} bad row(s)"}}
    return EXIT_OK, document


def cmd_import(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Import recipients in one transaction, with a progress bar on stderr."""
    from far.importer import Progress, import_file

    async def load(engine: Any, settings: Any, path: Path) -> Any:
        return await import_file(
            engine,
            path,
            policy=settings.policy,
            actor=f"import:{path.name}",
            progress=Progress(path.stat().st_size),
            batch_size=args.batch,
        )

    return _import_file(args, load, usage="--batch must be at least 1" if args.batch < 1 else None)


def cmd_import_senders(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Import sender records in one transaction; every bad row named with its line."""
    from far.sender_import import import_senders

    async def load(engine: Any, settings: Any, path: Path) -> Any:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return await import_senders(
                engine,
                handle,
                jsonl=path.suffix.lower() in {".jsonl", ".ndjson", ".json"},
                policy=settings.parties,
                actor=f"import:{path.name}",
            )

    return _import_file(args, load)


def cmd_reachable(args: argparse.Namespace) -> tuple[int, dict[str, Any] | list[dict[str, Any]]]:
    """Ask FaR; print one object per recipient."""
    from far.client import FarClient, FarUnavailable
    from far.identifiers import InvalidIdentifier
    from far.parties import parse_party_id
    from far.service import FarError

    try:
        sender = parse_party_id(args.sender)
    except InvalidIdentifier as exc:
        return EXIT_MALFORMED, failure("bad-input", f"--sender: {exc.reason}")
    bad = [r for r in args.recipients if not re.fullmatch(r"\d{12}", r)]
    if bad:
        return EXIT_MALFORMED, failure("bad-input", f"a recipient is 12 digits: {bad[0][:32]!r}", recipients=bad)
    token = args.token or os.environ.get("FAR_TOKEN")

    async def _ask() -> list[dict[str, Any]]:
        async with FarClient(args.far, token, timeout=args.timeout) as far:
            results = await far.is_reachable(sender, args.recipients)
        return [{key: item.to_json()[key] for key in _CLI_KEYS} for item in results]

    try:
        return EXIT_OK, asyncio.run(_ask())
    except FarUnavailable as exc:
        return EXIT_REFUSED, failure("far-unreachable", str(exc))
    except FarError as exc:
        return EXIT_MALFORMED, failure("bad-input", exc.detail)
