"""``accesspoint mailing submit FILE | status ID``: post a mass mailing to an access point and follow it.

``submit`` streams FILE (JSON lines: the mailing on the first line, then one recipient a line; see
``accesspoint/msh/mailings.py``) to ``POST /api/v1/mailings`` and prints the answer: the mailing's id, the rows
read and every bad row with its line. ``status`` prints the mailing's counts (recipients by state, letters by
message state, the operators' answers). With ``--wait`` both follow the mailing until it is completed, drawing a
progress bar on stderr, and print the final counts.

Exit codes: 0 the access point answered 2xx; 1 it refused (4xx/5xx: ``error.code`` is the problem's title);
3 it could not be reached; 64 usage (bad arguments, an unreadable file, ``--api`` not http(s)).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from accesspoint.cli import EXIT_INCOMPLETE, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, failure

WIDTH = 30


def register(commands: Any) -> None:
    """Add ``mailing submit`` and ``mailing status``."""
    mailing = commands.add_parser("mailing", help="mass mailings through an access point's API")
    sub = mailing.add_subparsers(dest="mailing_command", required=True, parser_class=type(mailing))
    submit = sub.add_parser("submit", help="post a mailing (JSON lines: the mailing, then one recipient a line)")
    submit.add_argument("file", help="the .jsonl file")
    status = sub.add_parser("status", help="a mailing's progress")
    status.add_argument("id", help="the mailing's id")
    for command in (submit, status):
        command.add_argument("--api", required=True, help="the access point's base URL, e.g. http://127.0.0.1:8080")
        command.add_argument("--token", required=True, help="a bearer token of its API")
        command.add_argument("--wait", action="store_true", help="follow the mailing until it is completed")
        command.add_argument("--interval", type=float, default=2.0, help="seconds between looks with --wait")
        command.add_argument("--timeout", type=float, default=0.0, help="give up waiting after this many seconds")
    submit.set_defaults(handler=cmd_submit)
    status.set_defaults(handler=cmd_status)


def _request(url: str, token: str, *, data: Any = None, length: int | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")  # noqa: S310
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/x-ndjson")
        if length is not None:
            request.add_header("Content-Length", str(length))
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 (the operator's own API)
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"{}")
        except json.JSONDecodeError:
            return exc.code, {"title": exc.reason, "detail": body[:200].decode(errors="replace")}


def _refused(status: int, document: Any) -> tuple[int, dict[str, Any]]:
    title = document.get("title", "refused") if isinstance(document, dict) else "refused"
    detail = document.get("detail", "") if isinstance(document, dict) else ""
    return EXIT_REFUSED, {**failure(str(title), str(detail), status=status), "answer": document}


def _checked(args: argparse.Namespace) -> str | None:
    if not args.api.startswith(("http://", "https://")):
        return "--api must be an http(s) URL"
    if args.interval <= 0:
        return "--interval must be more than 0"
    return None


def cmd_submit(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Stream the file to the API; with --wait follow the mailing."""
    problem = _checked(args)
    if problem is not None:
        return EXIT_USAGE, failure("usage", problem)
    path = Path(args.file)
    if not path.is_file():
        return EXIT_USAGE, failure("usage", f"cannot read {args.file}")
    url = args.api.rstrip("/") + "/api/v1/mailings"
    try:
        with path.open("rb") as body:  # streamed: urllib sends a file object in blocks
            status, document = _request(url, args.token, data=body, length=path.stat().st_size)
    except (urllib.error.URLError, OSError) as exc:
        return EXIT_INCOMPLETE, failure("unreachable", f"{url}: {exc}")
    if status >= 400:
        return _refused(status, document)
    if args.wait:
        return _follow(args, str(document["id"]), document)
    return EXIT_OK, document


def cmd_status(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Print the mailing's counts; with --wait follow it."""
    problem = _checked(args)
    if problem is not None:
        return EXIT_USAGE, failure("usage", problem)
    return _follow(args, args.id, None) if args.wait else _status(args, args.id)


def _status(args: argparse.Namespace, mailing_id: str) -> tuple[int, dict[str, Any]]:
    url = args.api.rstrip("/") + f"/api/v1/mailings/{mailing_id}"
    try:
        status, document = _request(url, args.token)
    except (urllib.error.URLError, OSError) as exc:
        return EXIT_INCOMPLETE, failure("unreachable", f"{url}: {exc}")
    if status >= 400:
        return _refused(status, document)
    return EXIT_OK, document


def progress_line(document: dict[str, Any]) -> str:
    """One line of progress: a bar over the rows settled and letters finished, then the counts."""
    rows = max(int(document.get("rows") or 0), 1)
    counts, letters = document.get("recipients", {}), document.get("letters", {})
    finished = counts.get("refused", 0) + counts.get("invalid", 0)
    finished += letters.get("delivered", 0) + letters.get("failed", 0)
    fraction = min(finished / rows, 1.0)
    bar = "#" * int(fraction * WIDTH) + "-" * (WIDTH - int(fraction * WIDTH))
    in_mailboxes = document.get("end_to_end", {}).get("delivered-to-mailbox", 0)
    return (
        f"mailing {document.get('id')} [{bar}] {fraction:6.1%} {document.get('state')}: "
        f"queued {counts.get('queued', 0):,} refused {counts.get('refused', 0):,} invalid {counts.get('invalid', 0):,}"
        f" | delivered {letters.get('delivered', 0):,} failed {letters.get('failed', 0):,}"
        f" | in mailboxes {in_mailboxes:,}"
    )


def _follow(args: argparse.Namespace, mailing_id: str, _first: Any, stream: IO[str] | None = None) -> tuple[int, Any]:
    out = stream if stream is not None else sys.stderr
    tty = out.isatty()
    started = time.monotonic()
    while True:
        code, document = _status(args, mailing_id)
        if code != EXIT_OK:
            return code, document
        line = progress_line(document)
        out.write("\r" + line if tty else line + "\n")
        out.flush()
        if document.get("state") == "completed":
            if tty:
                out.write("\n")
            return EXIT_OK, document
        if args.timeout and time.monotonic() - started > args.timeout:
            return EXIT_INCOMPLETE, {**failure("timeout", f"not completed after {args.timeout:.0f} s"), **document}
        time.sleep(args.interval)
