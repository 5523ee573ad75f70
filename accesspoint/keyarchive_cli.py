"""``accesspoint keyarchive serve | verify-log | release``: the key archive, its log verifier, the holder's client.

``keyarchive serve --config FILE`` runs the archive (settings: accesspoint/keyarchive/settings.py).
``keyarchive verify-log (--config FILE | --database URL) [--expect-head HASH]`` walks the audit log's hash chain
and names the first entry that was altered, removed or reordered (``--expect-head``: the head hash published
earlier, which also catches entries cut off the end). ``keyarchive release HOLDER --archive URL --eid-key FILE
--eid-cert FILE --out DIR`` is the holder's new device: it authenticates with the e-ID, receives every key the
archive keeps for the holder, wrapped to a key it generated, and writes them as PEM files into DIR.

Exit codes: 0 success (the log verifies); 1 refused (the log does not verify; the archive refused the release);
2 a settings file that does not validate, or a server that cannot listen; 3 the archive cannot be reached;
64 usage.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from accesspoint.cli import EXIT_MALFORMED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, failure

EXIT_UNREACHABLE = 3


def register(commands: Any) -> None:
    """Add the keyarchive commands."""
    archive = commands.add_parser("keyarchive", help="the holders' key archive")
    sub = archive.add_subparsers(dest="keyarchive_command", required=True, parser_class=type(archive))
    serve = sub.add_parser("serve", help="run the key archive")
    serve.add_argument("--config", required=True, help="settings file (TOML) with a keyarchive table")
    serve.set_defaults(handler=cmd_serve)
    verify = sub.add_parser("verify-log", help="verify the audit log's hash chain")
    where = verify.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the archive's settings file (its database)")
    where.add_argument("--database", help="the archive's database URL")
    verify.add_argument("--expect-head", help="the head hash published earlier")
    verify.set_defaults(handler=cmd_verify_log)
    release = sub.add_parser("release", help="get the holder's keys released to this device")
    release.add_argument("holder")
    release.add_argument("--archive", required=True, help="the archive's URL")
    release.add_argument("--eid-key", required=True, help="the holder's e-ID private key (PEM)")
    release.add_argument("--eid-cert", required=True, help="the e-ID certificate (PEM, with its chain if needed)")
    release.add_argument("--out", required=True, help="folder for the released keys")
    release.set_defaults(handler=cmd_release)


def cmd_serve(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Serve until interrupted."""
    import sys

    from accesspoint.keyarchive.app import create_app
    from accesspoint.keyarchive.settings import load_settings
    from accesspoint.servicekit.server import Listener, run
    from accesspoint.servicekit.settings import SettingsError
    from accesspoint.servicekit.tls import server_context
    from accesspoint.servicekit.tracing import configure_tracing

    try:
        settings = load_settings(Path(args.config))
    except SettingsError as exc:
        return EXIT_MALFORMED, failure("config", str(exc), problems=exc.problems)
    tls = None if settings.tls is None else server_context(settings.tls)
    settings.observability.configure_logging()
    configure_tracing("keyarchive")
    listener = Listener(create_app(settings), settings.host, settings.port, tls)

    def started() -> None:
        sys.stderr.write(f"keyarchive: listening on {listener.url}\n")
        sys.stderr.flush()

    try:
        run([listener], started=started)
    except OSError as exc:
        return EXIT_MALFORMED, failure("listen", f"cannot listen: {exc}")
    return EXIT_OK, {"ok": True, "stopped": True, "url": listener.url}


def cmd_verify_log(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Walk the chain in the database."""
    from sqlalchemy.exc import SQLAlchemyError

    from accesspoint.keyarchive.auditlog import verify_chain
    from accesspoint.keyarchive.service import read_entries
    from accesspoint.servicekit.database import create_engine
    from accesspoint.servicekit.settings import SettingsError, SettingsReader, read_document

    database = args.database
    if args.config:
        try:
            path = Path(args.config)
            reader = SettingsReader(path.parent)
            section = reader.section(read_document(path).get("keyarchive"), f"{path}: keyarchive")
            database = section.database("database", "sqlite+aiosqlite:///archive.db")
        except (SettingsError, OSError) as exc:
            return EXIT_USAGE, failure("config", str(exc))

    async def check() -> dict[str, Any]:
        engine = create_engine(database)
        try:
            return verify_chain(await read_entries(engine), expect_head=args.expect_head).to_json()
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(check())
    except (SQLAlchemyError, OSError) as exc:
        return EXIT_USAGE, failure("database", f"cannot read the audit log: {exc}")
    return (EXIT_OK if report["ok"] else EXIT_REFUSED), report


def cmd_release(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Authenticate, receive, decrypt and write the holder's keys."""
    import aiohttp
    from cryptography.hazmat.primitives import serialization

    from accesspoint.keyarchive.client import ArchiveClient, ArchiveRefusal
    from accesspoint.security.cms import key_id
    from accesspoint.security.keys import KeyLoadError, load_key_pair

    try:
        eid = load_key_pair(args.eid_key, certificate=args.eid_cert)
    except KeyLoadError as exc:
        return EXIT_USAGE, failure("usage", str(exc))
    try:
        pairs = asyncio.run(ArchiveClient(args.archive, eid).release(args.holder))
    except ArchiveRefusal as exc:
        return EXIT_REFUSED, failure("refused", str(exc), status=exc.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return EXIT_UNREACHABLE, failure("unreachable", str(exc))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for pair in pairs:
        stem = out / key_id(pair.certificate)[:16]
        stem.with_suffix(".key.pem").write_bytes(
            pair.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        stem.with_suffix(".pem").write_bytes(pair.certificate.public_bytes(serialization.Encoding.PEM))
        written.append({"key_id": key_id(pair.certificate), "key": f"{stem}.key.pem", "certificate": f"{stem}.pem"})
    return EXIT_OK, {"ok": True, "holder": args.holder, "keys": written}
