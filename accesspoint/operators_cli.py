"""``accesspoint operator serve | status``: run the reference mailbox operator; follow a sent message end to end.

``operator serve --config FILE`` runs the operator (settings: ``operators/settings.py``) until interrupted.
``operator status ID --api URL --token T --operator-cert FILE`` asks the sender's access point for the
operator's answer to the sent message ``ID``, checks it with the operator's certificate and prints its state:
``delivered-to-mailbox`` (when, by which operator's signature), ``rejected`` (with the reasons), or the
transport state while no answer has come; under ``two_way`` what else came back about the letter, each piece
verified: the holder's answers, the read receipt, the delgivning (``served`` with its kvitto and RFC 3161
time-stamp, checked against ``--tsa-trust``, or ``not-served``) and the payment confirmation.

Exit codes: 0 success (also "no answer yet"); 1 an answer came but does not verify or fit the message, or the
delivery was rejected; 2 a settings file that does not validate; 3 the access point cannot be reached or does
not know the message; 64 usage.
"""

from __future__ import annotations

import argparse
import asyncio
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
