"""``accesspoint pmode validate|show|import``: check, print and convert P-Mode files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from accesspoint.cli import EXIT_INCOMPLETE, EXIT_MALFORMED, EXIT_OK, UsageError, failure
from pmode.document import describe, dump_toml, dump_yaml
from pmode.domibus import import_domibus_file
from pmode.errors import PModeError
from pmode.loader import load_pmodes
from pmode.matching import PModeSet

SUFFIXES = (".yaml", ".yml", ".toml")


def _invalid(exc: PModeError, file: str) -> tuple[int, dict[str, Any]]:
    document = failure("PMODE_INVALID", f"{len(exc.problems)} problem(s) in {file}", file=file)
    document["error"]["problems"] = [problem.to_json() for problem in exc.problems]
    return EXIT_MALFORMED, document


def _readable(path: str, suffixes: tuple[str, ...]) -> Path:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"cannot read {path}: no such file")
    if file.suffix.lower() not in suffixes:
        raise UsageError(f"{path}: expected a file ending in {', '.join(suffixes)}")
    return file


def _load(args: argparse.Namespace) -> PModeSet | tuple[int, dict[str, Any]]:
    file = _readable(args.file, SUFFIXES)
    try:
        return load_pmodes(file)
    except PModeError as exc:
        return _invalid(exc, args.file)


def cmd_validate(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Load a P-Mode file and report every problem, or the P-Modes it defines."""
    pmodes = _load(args)
    if not isinstance(pmodes, PModeSet):
        return pmodes
    return EXIT_OK, {
        "ok": True,
        "file": args.file,
        "self": list(pmodes.local_parties),
        "parties": [party.name for party in pmodes.parties],
        "pmodes": [pmode.id for pmode in pmodes],
    }


def cmd_show(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Print the P-Modes of a file with every default filled in (or one P-Mode with --id)."""
    pmodes = _load(args)
    if not isinstance(pmodes, PModeSet):
        return pmodes
    if args.id is not None and pmodes.get(args.id) is None:
        known = ", ".join(p.id for p in pmodes)
        raise UsageError(f"no P-Mode {args.id!r} in {args.file} (it has: {known})")
    return EXIT_OK, {"ok": True, "file": args.file, **describe(pmodes, args.id)}


def _with_header(text: str, source: str, notes: list[dict[str, str]]) -> str:
    lines = [f"Imported from the Domibus P-Mode {source} by `accesspoint pmode import`."]
    if notes:
        lines.append("Not imported (or only approximately); review before use:")
        lines.extend(f"- {note['item']}: {note['reason']}" for note in notes)
    return "".join(f"# {line}\n" for line in lines) + text


def cmd_import(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Convert a Domibus P-Mode XML file; exit 3 when some of it could not be mapped (the report says what)."""
    source = _readable(args.file, (".xml",))
    try:
        result = import_domibus_file(source)
    except PModeError as exc:
        return _invalid(exc, args.file)
    notes = [note.to_json() for note in result.unmapped]
    document: dict[str, Any] = {"ok": True, "file": args.file, "pmodes": list(result.pmode_ids), "unmapped": notes}
    if args.out is None:
        document["document"] = result.document
    else:
        out = Path(args.out)
        if out.suffix.lower() not in SUFFIXES:
            raise UsageError(f"--out {args.out}: expected a file ending in {', '.join(SUFFIXES)}")
        text = dump_toml(result.document) if out.suffix.lower() == ".toml" else dump_yaml(result.document)
        try:
            out.write_text(_with_header(text, args.file, notes), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.out}: {exc.strerror}") from None
        document["out"] = args.out
    return (EXIT_INCOMPLETE if notes else EXIT_OK), document


def register(commands: Any) -> None:
    """Add ``pmode`` and its subcommands to the CLI."""
    pmode = commands.add_parser("pmode", help="validate, show and import P-Mode files")
    sub = pmode.add_subparsers(dest="pmode_command", required=True)
    validate = sub.add_parser("validate", help="check a P-Mode file (YAML or TOML) and list every problem")
    validate.add_argument("file")
    validate.set_defaults(handler=cmd_validate)
    show = sub.add_parser("show", help="print the P-Modes of a file with every default filled in")
    show.add_argument("file")
    show.add_argument("--id", help="only this P-Mode (and its parties)")
    show.set_defaults(handler=cmd_show)
    importer = sub.add_parser("import", help="convert a Domibus P-Mode XML file into our format")
    importer.add_argument("file", metavar="DOMIBUS_XML")
    importer.add_argument("--out", help="write the result here (.yaml, .yml or .toml) instead of printing it")
    importer.set_defaults(handler=cmd_import)
