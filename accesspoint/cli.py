"""The ``accesspoint`` command line: one JSON document on stdout, logs on stderr, documented exit codes.

Exit codes (all commands):
  0  success
  1  well-formed but refused (security, trust, not registered)
  2  malformed input (the ebMS code says why)
  3  valid as far as it could be checked, but incomplete
  64 usage error (bad arguments, unreadable file)
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from accesspoint.core.errors import EbmsError
from accesspoint.core.httpdump import guess_bare_content_type, split_http_dump
from accesspoint.core.message import ReceivedMessage, read_message
from accesspoint.core.model import ErrorInfo, ReferenceEcho, SignalMessage, UserMessage
from accesspoint.core.summary import header_json, properties_json

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_MALFORMED = 2
EXIT_INCOMPLETE = 3
EXIT_USAGE = 64

log = logging.getLogger("accesspoint")


class UsageError(Exception):
    """Bad arguments or an unreadable file: exit 64."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def failure(code: str, reason: str, **extra: Any) -> dict[str, Any]:
    """The JSON document of a failed command: ``{"ok": false, "error": {"code", "reason"}, ...}``."""
    return {"ok": False, "error": {"code": code, "reason": reason}, **extra}


# --------------------------------------------------------------------------------------- message files


def load_message(path: str, content_type: str | None) -> tuple[str, bytes]:
    """Read a message file: raw body with ``--content-type``, or an HTTP dump whose headers give it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    dump = split_http_dump(data) if content_type is None else None
    if dump is not None:
        found = dump.header("content-type")
        return found or guess_bare_content_type(dump.body), dump.body
    assert content_type is not None
    # --content-type wins; a file that still carries dump headers is cut at the blank line.
    body = data
    if not data.lstrip().startswith(b"<") and not data.startswith(b"--"):
        body = split_http_dump(data).body
    return content_type, body


# ---------------------------------------------------------------------------------------------- inspect


def _reference(reference: ReferenceEcho) -> dict[str, Any]:
    return {
        "uri": reference.uri,
        "digest_method": reference.digest_method,
        "digest_value": reference.digest_value,
        "transforms": [t.algorithm for t in reference.transforms],
    }


def _error(error: ErrorInfo) -> dict[str, Any]:
    return {
        "code": error.error_code,
        "severity": error.severity,
        "category": error.category,
        "short_description": error.short_description,
        "description": None if error.description is None else error.description.text,
        "detail": error.detail,
        "ref_to_message_in_error": error.ref_to_message_in_error,
        "origin": error.origin,
    }


def summarize(received: ReceivedMessage) -> dict[str, Any]:
    """The JSON summary ``inspect`` prints."""
    parsed = received.parsed
    header = parsed.header
    info = header.message_info
    summary: dict[str, Any] = {
        "ok": True,
        "kind": parsed.messaging.kind,
        "soap_version": "1.2" if parsed.soap_version.name == "V12" else "1.1",
        "mime": received.is_mime,
        "message_id": info.message_id,
        "timestamp": info.timestamp_text,
        "ref_to_message_id": info.ref_to_message_id,
        "signed": parsed.security_header is not None
        and parsed.security_header.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is not None,
    }
    if isinstance(header, UserMessage):
        summary.update(header_json(header))
        summary["parts"] = [_part_summary(part, received) for part in header.payload_info]
    else:
        summary.update(_signal_summary(header))
    return summary


def _part_summary(part: Any, received: ReceivedMessage) -> dict[str, Any]:
    content_id = part.content_id
    attachment = None if content_id is None else received.attachment(content_id)
    location = "attachment" if content_id is not None else "body"
    size = attachment.size if attachment is not None else None
    if location == "body" and received.parsed.body_payload is not None:
        from lxml import etree

        size = len(etree.tostring(received.parsed.body_payload))
    return {
        "href": part.href,
        "location": location,
        "content_id": content_id,
        "content_type": None if attachment is None else attachment.content_type,
        "mime_type": part.mime_type,
        "character_set": part.character_set,
        "compression_type": part.compression_type,
        "properties": properties_json(part.properties),
        "size": size,
    }


def _signal_summary(signal: SignalMessage) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if signal.pull_request is not None:
        out["mpc"] = signal.pull_request.mpc
    if signal.receipt is not None:
        out["receipt"] = {
            "non_repudiation": signal.receipt.is_non_repudiation,
            "references": [_reference(r) for r in signal.receipt.references],
            "copied_user_message_id": None
            if signal.receipt.user_message is None
            else signal.receipt.user_message.message_id,
        }
    if signal.errors:
        out["errors"] = [_error(e) for e in signal.errors]
    return out


def cmd_inspect(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Parse a message or signal without checking security and summarise it."""
    content_type, body = load_message(args.file, args.content_type)
    try:
        received = read_message(content_type, body)
    except EbmsError as exc:
        log.info("inspect %s: %s", args.file, exc)
        return EXIT_MALFORMED, failure(exc.code, exc.detail, file=args.file)
    return EXIT_OK, summarize(received)


# ------------------------------------------------------------------------------------------------- main

Command = Callable[[argparse.Namespace], tuple[int, dict[str, Any]]]

# Each module adds its subcommands through ``register(commands)`` (an argparse subparsers action) and sets
# ``handler`` to a Command. Only the module of the command being run is imported (each costs 0.2-0.5 s of CPU at
# every start, and the tests start hundreds of these processes); help and unknown commands import them all.
COMMAND_MODULES: dict[str, str] = {
    "verify": "accesspoint.verify_cli",
    "serve": "accesspoint.msh_cli",
    "send": "accesspoint.msh_cli",
    "status": "accesspoint.msh_cli",
    "pmode": "accesspoint.pmode_cli",
    "smp": "accesspoint.smp_cli",
    "discover": "accesspoint.smp_cli",
    "far": "accesspoint.far_cli",
    "keys": "accesspoint.keys_cli",
    "operator": "accesspoint.operators_cli",
    "mailbox": "accesspoint.mailbox_cli",
    "keyarchive": "accesspoint.keyarchive_cli",
    "conformance": "accesspoint.conformance_cli",
    "mailing": "accesspoint.mailing_cli",
    "tsa": "accesspoint.tsa_cli",
    "console-user": "accesspoint.console_cli",
}


def build_parser(command: str | None = None) -> _ArgumentParser:
    """The argument parser with every subcommand, or with ``inspect`` and ``command``'s module's only."""
    parser = _ArgumentParser(prog="accesspoint", description="eDelivery AS4 access point")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output to stderr")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    inspect = commands.add_parser("inspect", help="parse an AS4 message or signal and print a JSON summary")
    inspect.add_argument("file", help="raw HTTP body (with --content-type) or an HTTP dump")
    inspect.add_argument("--content-type", help="the HTTP Content-Type of a raw body (wins over a dump's)")
    inspect.set_defaults(handler=cmd_inspect)
    if command == "inspect":
        return parser
    one = COMMAND_MODULES.get(command or "")
    for name in dict.fromkeys(COMMAND_MODULES.values()) if one is None else (one,):
        importlib.import_module(name).register(commands)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command word: the first argument that is no option (the only global option, -v, takes no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(_command(argv)).parse_args(argv)
        if args.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        handler: Command = args.handler
        code, document = handler(args)
    except UsageError as exc:
        code, document = EXIT_USAGE, failure("usage", str(exc))
    except EbmsError as exc:
        code, document = EXIT_MALFORMED, failure(exc.code, exc.detail)
    _emit(document)
    return code


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
