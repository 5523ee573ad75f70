"""The admin console's pages over a large store: p50/p99 of each page through a real ``accesspoint serve --console``.

Sweden's access point (``bench.e2e``'s settings, keys and P-Modes) with its SQLite store filled beforehand with
``--messages`` messages (default 1,000,000: outgoing and incoming, 40 partners, a few services, 93 % delivered, the
rest failed or parked, some of the last ten minutes pending, each with the transitions of its states), spread evenly
over ``--days`` days (default 10: 100,000 a day, so the default 24-hour window holds more than the count cap of
50,000), then ANALYZEd (the plans without statistics are checked in tests/test_store_search.py). The console runs
on its own listener in the same process, as in production. One logged-in viewer (a pooled aiohttp client in this
process) then asks, one request at a time, ``--requests`` times each:

- search: ``/messages``, the last 24 hours, 50 rows newest first, the count capped ("more than 50,000");
- filtered: ``/messages`` for one partner's failed messages in the last 24 hours (a narrow filter on a big window);
- detail: ``/messages/{out|in}/{id}`` of a random message: its facts, timeline, payloads and evidence;
- errors: ``/errors``, the error log;
- status: ``/status`` (queues, oldest pending, certificate dates, last delivery per partner).

Latency = from sending the request to the last byte of the page, on loopback; CPU = the server process's CPU time
per request (what a shared, loaded machine does not change). Target (issue 16): p99 < 200 ms.
``python -m bench.console [--messages 1000000] [--days 10] [--requests 200]``; ``python -m bench --only console``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from accesspoint.store import upgrade_to_head
from bench.e2e import PARTIES, ROOT, SENDER, Server, cpu_seconds, free_port, generate_keys

USER, PASSWORD = "bench-viewer", "a-long-bench-password"
BATCH = 20_000
TARGET_P99_MS = 200.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _outcome(rng: random.Random, *, recent: bool) -> list[str]:
    """The states a message went through, its last one current: mostly delivered, some failed or parked, and of
    the last few minutes' some still pending."""
    roll = rng.random()
    if roll < 0.93 or (roll >= 0.98 and not recent):
        return ["submitted", "sending", "awaiting_receipt", "delivered"]
    if roll < 0.97:
        return ["submitted", "sending", "failed"]
    if roll < 0.98:
        return ["submitted", "sending", "failed", "dead_letter"]
    return ["submitted"]


MESSAGE_COLUMNS = (
    "id", "direction", "message_id", "conversation_id", "pmode_id", "leg", "from_party", "to_party", "service",
    "action", "state", "version", "attempts", "last_error_code", "last_error_detail", "payload_bytes", "created_at",
    "updated_at",
)  # fmt: skip
TRANSITION_COLUMNS = ("id", "message", "from_state", "to_state", "at", "actor")


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608 (fixed names)


def _stored(moment: datetime) -> str:
    """A time as the store keeps it on SQLite (naive UTC, ``UtcDateTime``)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def fill(path: Path, *, messages: int, days: float, seed: int = 16) -> list[tuple[str, str]]:
    """Write ``messages`` messages and their transitions straight into the migrated SQLite file (the store's own
    writes would take hours for a million), oldest first over ``days`` days up to now; a sample of
    (direction, MessageId) to open."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    step = timedelta(days=days) / max(messages, 1)
    partners = [f"urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007::partner-{n:02d}" for n in range(40)]
    own = "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007::ap-sweden"
    services = [("urn:example:letters", "Deliver"), ("urn:example:invoices", "Submit"), ("urn:example:receipts", "Ack")]
    sample: list[tuple[str, str]] = []
    transition_id = 0
    database = sqlite3.connect(path)
    try:
        database.execute("PRAGMA synchronous=OFF")
        for start in range(0, messages, BATCH):
            rows, moves = [], []
            for number in range(start, min(start + BATCH, messages)):
                created = now - timedelta(days=days) + step * number
                direction = "out" if number % 3 else "in"
                partner = partners[rng.randrange(len(partners))]
                service, action = services[number % len(services)]
                recent = now - created < timedelta(minutes=10)
                states = _outcome(rng, recent=recent) if direction == "out" else ["received", "delivered_to_backend"]
                failed = states[-1] in ("failed", "dead_letter")
                message_id = f"{number:08d}-{rng.getrandbits(48):012x}@bench.example"
                rows.append((
                    number + 1, direction, message_id, f"conversation-{number // 4}", "bench", 1,
                    own if direction == "out" else partner, partner if direction == "out" else own, service, action,
                    states[-1], len(states), 1 if direction == "out" else 0, "EBMS:0301" if failed else None,
                    "no receipt after 5 attempts" if failed else None, 4096, _stored(created),
                    _stored(created + timedelta(seconds=2)),
                ))  # fmt: skip
                for order, (before, after) in enumerate(zip([None, *states], states, strict=False)):
                    transition_id += 1
                    at = _stored(created + timedelta(milliseconds=500 * order))
                    moves.append((transition_id, number + 1, before, after, at, "bench"))
                if rng.random() < 2000 / max(messages, 1):
                    sample.append((direction, message_id))
            database.executemany(_insert("messages", MESSAGE_COLUMNS), rows)
            database.executemany(_insert("transitions", TRANSITION_COLUMNS), moves)
        database.commit()
        database.execute("ANALYZE")
    finally:
        database.close()
    return sample


def _pages(partner: str, sample: list[tuple[str, str]], rng: random.Random) -> dict[str, Callable[[], str]]:
    def detail() -> str:
        direction, message_id = rng.choice(sample)
        return f"/messages/{direction}/{message_id}"

    return {
        "search": lambda: "/messages",
        "filtered": lambda: f"/messages?state=failed&partner={partner}",
        "detail": detail,
        "errors": lambda: "/errors",
        "status": lambda: "/status",
    }


async def measure(base: str, pages: dict[str, Callable[[], str]], requests: int, server: int) -> dict[str, Any]:
    """Log in as the viewer, then each page ``requests`` times in a row (after five not counted, to warm the
    caches): milliseconds per request, and the server's CPU per request (load on the machine does not change it)."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(base, cookie_jar=jar) as http:
        async with http.get("/login") as answer:
            found = _CSRF.search(await answer.text())
            assert found is not None, "no CSRF token on the login page"
        form = {"csrf": found.group(1), "name": USER, "password": PASSWORD, "next": "/messages"}
        async with http.post("/login", data=form, allow_redirects=False) as answer:
            assert answer.status == 303, f"login answered {answer.status}"
        result: dict[str, Any] = {}
        for name, path in pages.items():
            timings: list[float] = []
            for number in range(requests + 5):
                if number == 5:
                    cpu = cpu_seconds(server)
                started = time.perf_counter()
                async with http.get(path()) as answer:
                    body = await answer.text()
                if answer.status != 200:
                    raise RuntimeError(f"{name} answered {answer.status}: {body[:300]}")
                if number >= 5:
                    timings.append((time.perf_counter() - started) * 1000)
            result[name] = {
                "p50_ms": statistics.median(timings),
                "p99_ms": _percentile(timings, 0.99),
                "max_ms": max(timings),
                "cpu_ms": (cpu_seconds(server) - cpu) * 1000 / requests,
                "requests": requests,
            }
            if name == "search":
                count = re.search(r'id="count">([^<(]+)', body)
                result["search_count"] = count.group(1).strip() if count else "?"
    return result


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextlib.contextmanager
def _console_server(
    folder: Path, messages: int, days: float
) -> Iterator[tuple[str, list[tuple[str, str]], float, int]]:
    pki = generate_keys(folder / "keys", PARTIES)
    ports = {name: free_port() for name in PARTIES}
    server = Server(SENDER, folder / SENDER, pki, ports, {"send": {"workers": 2}})
    console_port = free_port()
    # Plain HTTP on loopback: the session cookie cannot be Secure for this client.
    settings = {"console": {"host": "127.0.0.1", "port": console_port, "secure_cookies": False}}
    (server.folder / "console.yaml").write_text(json.dumps(settings))
    (server.folder / "data").mkdir()
    asyncio.run(upgrade_to_head(server.ledger))
    started = time.monotonic()
    sample = fill(server.folder / "data" / "accesspoint.db", messages=messages, days=days)
    filled = time.monotonic() - started
    command = [sys.executable, "-m", "accesspoint", "console-user", USER, "--role", "viewer"]
    command += ["--console", str(server.folder / "console.yaml"), "--config", str(server.folder / "server.yaml")]
    subprocess.run(command, input=PASSWORD + "\n", text=True, check=True, capture_output=True, cwd=ROOT)
    server.arguments = ["--console", str(server.folder / "console.yaml")]
    server.start()
    try:
        yield f"http://127.0.0.1:{console_port}", sample, filled, server.pid
    finally:
        server.stop()


def run(*, messages: int = 1_000_000, days: float = 10.0, requests: int = 200) -> dict[str, Any]:
    """Fill a store, serve the console over it, measure each page."""
    rng = random.Random(2026)
    with (
        tempfile.TemporaryDirectory(prefix="bench-console-") as folder,
        _console_server(Path(folder), messages, days) as (base, sample, filled, pid),
    ):
        partner = "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007::partner-07"
        pages = asyncio.run(measure(base, _pages(partner, sample, rng), requests, pid))
        load = os.getloadavg()
    return {"messages": messages, "days": days, "fill_seconds": filled, "pages": pages, "load": load}


def print_result(result: dict[str, Any], say: Callable[[str], None] = _say) -> None:
    """The table."""
    pages = result["pages"]
    say(
        f"Console pages over {result['messages']:,} messages in {result['days']:g} days (SQLite; filled in"
        f" {result['fill_seconds']:.0f} s); one viewer, one request at a time, loopback"
    )
    say(f"  {'page':10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU ms':>8} {'requests':>9}")
    for name, figures in pages.items():
        if isinstance(figures, dict):
            say(
                f"  {name:10} {figures['p50_ms']:>8.1f} {figures['p99_ms']:>8.1f} {figures['max_ms']:>8.1f}"
                f" {figures['cpu_ms']:>8.1f} {figures['requests']:>9}"
            )
    worst = max(figures["p99_ms"] for figures in pages.values() if isinstance(figures, dict))
    say(f"  the 24 h search shows: {pages['search_count']}; CPU ms = the server's CPU per request")
    say(f"  load average at the end: {result['load'][0]:.1f} (1 min), {result['load'][1]:.1f} (5 min)")
    verdict = "met" if worst < TARGET_P99_MS else "NOT met"
    say(f"  target: every page p99 < {TARGET_P99_MS:.0f} ms: {verdict} (worst p99 {worst:.1f} ms)")


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.console``."""
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    print_result(run(messages=args.messages, days=args.days, requests=args.requests))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
