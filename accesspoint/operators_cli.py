"""``accesspoint operator serve | status | export | import``: run the reference mailbox operator; follow a sent
message end to end; move a mailbox's letters between operators by file (operators' own migrations).

``operator serve --config FILE`` runs the operator (settings: ``operators/settings.py``) until interrupted.
``operator status ID --api URL --token T --operator-cert FILE`` asks the sender's access point for the
operator's answer to the sent message ``ID``, checks it with the operator's certificate and prints its state:
``delivered-to-mailbox`` (when, by which operator's signature), ``rejected`` (with the reasons), or the
transport state while no answer has come; under ``two_way`` what else came back about the letter, each piece
verified: the holder's answers, the read receipt, the delgivning (``served`` with its kvitto and RFC 3161
time-stamp, checked against ``--tsa-trust``, or ``not-served``) and the payment confirmation.

``operator export HOLDER --config FILE --to OPERATOR --out FILE`` writes every letter of a mailbox, exactly as it
arrived, into one archive signed by this operator (operators/portability.py); nothing is deleted.
``operator import FILE --config FILE [--trust CERT]`` verifies such an archive (the signature with the exporting
operator's certificate from ``operator.peers`` or ``--trust``, every file's SHA-256, every letter's seal and
signatures) and stores it in one transaction, or refuses it whole.

``operator check URL --config SERVER --pmode ID [--pmode ID …] [--operator-cert FILE] [--answer-cert FILE]
[--listen HOST:PORT] [--answer-timeout SECONDS]`` runs the conformance battery (accesspoint/operator_check.py)
against the operator's access point at ``URL``, from this access point's settings (its keys, the P-Modes agreed with
the operator, one per network form): a test letter must get a receipt signed by the operator's registered
certificate (the P-Mode party's, or ``--operator-cert``), then the operator's signed business answer on the two-way
P-Mode's reply leg, received by the check itself at ``--listen`` (default: the settings' ``listen``, the endpoint the
operator's P-Modes name for this access point) within ``--answer-timeout`` (60 s), verified with ``--answer-cert``
(default: the settings' ``end_to_end.operators`` and the operator's registered certificate); a forged one EBMS:0101
and no receipt. It prints ``{ok, url, passed, failed, cases: [{form, case, passed, message_id, detail}]}``.

Exit codes: 0 success (also "no answer yet"; every check case passed); 1 an answer came but does not verify or fit
the message, the delivery was rejected, an archive was refused (its reason in ``error.reason``; nothing imported),
or a check case failed; 2 a settings file that does not validate; 3 the access point cannot be reached or does not
know the message (for ``check``: no case could be sent at all); 64 usage.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from accesspoint.cli import EXIT_MALFORMED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, failure

EXIT_UNREACHABLE = 3


def register(commands: Any) -> None:
    """Add ``operator serve`` and ``operator status``."""
    operator = commands.add_parser("operator", help="the reference mailbox operator")
    sub = operator.add_subparsers(dest="operator_command", required=True, parser_class=type(operator))
    serve = sub.add_parser("serve", help="run the mailbox operator (backend of an access point)")
    serve.add_argument("--config", required=True, help="settings file (TOML or YAML) with an operator table")
    serve.set_defaults(handler=cmd_serve)
    status = sub.add_parser("status", help="the end-to-end status of a sent message, checked")
    status.add_argument("message_id")
    status.add_argument("--api", required=True, help="the sender's access point, e.g. http://127.0.0.1:8080")
    status.add_argument("--token", required=True, help="its backend API token")
    status.add_argument("--operator-cert", required=True, help="the operator's signing certificate (PEM/DER)")
    status.add_argument(
        "--tsa-trust",
        action="append",
        default=[],
        metavar="FILE",
        help="anchors of the time-stamp authority that stamps delgivningskvitton (repeatable)",
    )
    status.set_defaults(handler=cmd_status)
    export = sub.add_parser("export", help="write a mailbox's letters into a signed transfer archive")
    export.add_argument("holder", help="the mailbox (12 digits or an eIDAS identifier)")
    export.add_argument("--config", required=True, help="the operator's settings file")
    export.add_argument("--to", default="any", help="the operator the archive is for (16 + orgnr); default any")
    export.add_argument("--out", required=True, help="the archive file to write")
    export.set_defaults(handler=cmd_export)
    load = sub.add_parser("import", help="verify a transfer archive and store its letters (all or nothing)")
    load.add_argument("archive", help="an archive written by operator export (or sent in a move)")
    load.add_argument("--config", required=True, help="the operator's settings file")
    load.add_argument("--trust", help="the exporting operator's signing certificate (default: operator.peers)")
    load.set_defaults(handler=cmd_import)
    check = sub.add_parser("check", help="the conformance battery against an operator's access point")
    check.add_argument("url", help="the operator's AS4 endpoint, e.g. https://as4.operator.example/as4")
    check.add_argument("--config", required=True, help="this access point's settings file (keys, P-Modes)")
    check.add_argument(
        "--pmode", action="append", required=True, metavar="ID", help="a P-Mode agreed with the operator (repeatable)"
    )
    check.add_argument("--operator-cert", help="the operator's registered signing certificate (default: the P-Mode's)")
    check.add_argument(
        "--answer-cert",
        help="the certificate the operator signs its business answers with (default: end_to_end.operators)",
    )
    check.add_argument("--listen", help="HOST:PORT where the operator's answers arrive (default: the settings' listen)")
    check.add_argument("--answer-timeout", type=float, default=60.0, help="seconds to wait for each business answer")
    check.set_defaults(handler=cmd_check)


def cmd_serve(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Serve until interrupted."""
    from accesspoint.servicekit.settings import SettingsError
    from operators.service import run
    from operators.settings import load_settings

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        return EXIT_MALFORMED, failure("config", str(exc), problems=exc.problems)
    try:
        run(settings)
    except OSError as exc:
        return EXIT_MALFORMED, failure("listen", f"cannot listen: {exc}")
    return EXIT_OK, {"ok": True, "stopped": True}


def cmd_status(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Find, check and print the operator's answer."""
    import aiohttp

    from accesspoint.security.keys import KeyLoadError, load_certificates
    from operators.receipts import ReceiptMismatch
    from operators.sender import end_to_end_status, two_way_status

    tsa_anchors = []
    try:
        (certificate, *_rest) = load_certificates(args.operator_cert)
        for path in args.tsa_trust:
            tsa_anchors += load_certificates(path)
    except (KeyLoadError, OSError, ValueError) as exc:
        return EXIT_USAGE, failure("usage", f"cannot read a certificate: {exc}")
    try:
        status = asyncio.run(end_to_end_status(args.api, args.token, args.message_id, certificate))
        two_way = asyncio.run(
            two_way_status(args.api, args.token, args.message_id, [certificate], tsa_anchors=tsa_anchors)
        )
    except ReceiptMismatch as exc:
        return EXIT_REFUSED, failure("receipt", str(exc), message_id=args.message_id)
    except (LookupError, aiohttp.ClientError, TimeoutError) as exc:
        return EXIT_UNREACHABLE, failure("unreachable", str(exc), message_id=args.message_id)
    document = {"ok": status.state != "rejected", **status.to_json(), "two_way": two_way.to_json()}
    return (EXIT_REFUSED if status.state == "rejected" else EXIT_OK), document


def _offline(config: str) -> Any:
    """The operator's settings and an Operator over its database and storage (no server, no access point)."""
    from operators.service import Operator
    from operators.settings import load_settings

    return Operator(load_settings(config))


def cmd_export(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Write the archive."""
    from accesspoint.servicekit.settings import SettingsError
    from operators.moves import export_mailbox
    from operators.portability import TransferRefused

    try:
        operator = _offline(args.config)
    except SettingsError as exc:
        return EXIT_MALFORMED, failure("config", str(exc), problems=exc.problems)

    async def run() -> dict[str, Any]:
        try:
            await operator.store.create((), now=operator.clock())
            return await export_mailbox(operator, args.holder, args.to, Path(args.out))
        finally:
            await operator.store.engine.dispose()

    try:
        return EXIT_OK, {"ok": True, **asyncio.run(run())}
    except TransferRefused as exc:
        Path(args.out).unlink(missing_ok=True)
        return EXIT_REFUSED, failure("export", exc.reason, holder=args.holder)
    except OSError as exc:
        return EXIT_USAGE, failure("usage", f"cannot write {args.out}: {exc}")


def cmd_import(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Verify and store the archive, all or nothing."""
    from accesspoint.security.keys import KeyLoadError, load_certificates
    from accesspoint.servicekit.settings import SettingsError
    from operators.moves import import_mailbox
    from operators.portability import TransferRefused

    try:
        operator = _offline(args.config)
        trusted = None if args.trust is None else load_certificates(args.trust)[0]
    except SettingsError as exc:
        return EXIT_MALFORMED, failure("config", str(exc), problems=exc.problems)
    except (KeyLoadError, OSError, ValueError, IndexError) as exc:
        return EXIT_USAGE, failure("usage", f"cannot read {args.trust}: {exc}")
    archive = Path(args.archive)
    if not archive.is_file():
        return EXIT_USAGE, failure("usage", f"cannot read {args.archive}")

    async def run() -> dict[str, Any]:
        try:
            await operator.store.create((), now=operator.clock())
            return await import_mailbox(operator, archive, trusted)
        finally:
            await operator.store.engine.dispose()

    try:
        return EXIT_OK, {"ok": True, **asyncio.run(run())}
    except TransferRefused as exc:
        return EXIT_REFUSED, failure("refused", exc.reason, archive=args.archive)


def cmd_check(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Run the battery and print its report."""
    from aiohttp import web

    from accesspoint.msh.config import ConfigError, load_config
    from accesspoint.operator_check import AnswerInbox, check_operator
    from accesspoint.security.keys import KeyLoadError, load_certificates
    from accesspoint.servicekit.httpclient import new_session
    from pmode import PModeError, load_pmodes

    try:
        config = load_config(args.config)
        pmodes = load_pmodes(config.pmodes)
    except (ConfigError, PModeError, OSError) as exc:
        return EXIT_MALFORMED, failure("invalid-config", str(exc))
    routes = []
    for pmode_id in args.pmode:
        route = pmodes.match_submission(pmode_id=pmode_id).route
        if route is None:
            return EXIT_USAGE, failure("usage", f"no outgoing P-Mode {pmode_id!r} in {config.pmodes.name}")
        routes.append(route)
    try:
        certificates = [] if args.operator_cert is None else load_certificates(args.operator_cert)
        answers = list(config.operator_certificates) + certificates
        if args.answer_cert is not None:
            answers = load_certificates(args.answer_cert)
        key = config.keys.signing_key(routes[0].security)
        host, port = _listen(args.listen, config.host, config.port)
    except (KeyLoadError, ConfigError, OSError, ValueError) as exc:
        return EXIT_USAGE, failure("usage", f"cannot read a key or certificate, or --listen: {exc}")
    if args.answer_timeout <= 0:
        return EXIT_USAGE, failure("usage", "--answer-timeout must be positive")
    inbox = AnswerInbox(key, config.keys.decryption_keys())

    async def run() -> list[Any]:
        runner = web.AppRunner(inbox.application(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            async with new_session(timeout=30) as http:
                return await check_operator(
                    args.url, routes, key, http=http, certificates=certificates, inbox=inbox,
                    answer_certificates=answers, answer_timeout=args.answer_timeout,
                )  # fmt: skip
        finally:
            await runner.cleanup()

    try:
        cases = asyncio.run(run())
    except OSError as exc:
        return EXIT_USAGE, failure("usage", f"cannot listen on {host}:{port} for the operator's answers: {exc}")
    failed = [c for c in cases if not c.passed]
    report = {
        "ok": not failed,
        "url": args.url,
        "passed": len(cases) - len(failed),
        "failed": len(failed),
        "cases": [c.to_json() for c in cases],
    }
    if all(c.detail.startswith("not sent:") for c in cases):
        return EXIT_UNREACHABLE, {**report, "error": {"code": "unreachable", "reason": cases[0].detail}}
    return (EXIT_REFUSED if failed else EXIT_OK), report


def _listen(given: str | None, host: str, port: int) -> tuple[str, int]:
    """``--listen HOST:PORT``, or the settings' listen address; ValueError for one that is not."""
    if given is None:
        return host, port
    name, _, number = given.rpartition(":")
    if not name or not number.isdigit() or not 0 < int(number) < 65536:
        raise ValueError(f"--listen {given!r} is not HOST:PORT")
    return name.strip("[]"), int(number)
