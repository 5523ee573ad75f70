"""FaR's mailing check at the mass-mailing issue's size: 100,000 recipients against 1,000,000 registered.

What a router checking a mailing makes FaR do, batches of 1,000, four at a time (as ``accesspoint/msh/mailings.py``
asks), 19 in 20 recipients registered, 1 in 50 of those refusing the sender, in three depths:

- ``routes``: :meth:`FarService.routes` in this process (identifier check, one query, the answer);
- ``routes + router``: the same, its JSON form written and read back (``Routes.to_json``, ``read_routes``) and each
  row decided as the router decides a mailing's batch (``decide_routes``): FaR's and the router's per-recipient
  work without HTTP;
- ``REST + router``: through FaR's REST API over loopback (``FarClient.routes``, server and client in this process)
  and ``decide_routes``: what the router's FaR check costs, both sides on this machine's cores.

Each figure is recipients per second of wall time, CPU µs per recipient (this process's user + system time: on
SQLite that is everything, on PostgreSQL the server's backend is not counted) and the load average when it ran;
on a shared machine wall rates stretch with the load, CPU per recipient much less. The register is filled straight
through the driver (``bench/far.py`` measures the import path), on SQLite and on a throw-away PostgreSQL.

``python -m bench.far_check [--registered 1000000] [--recipients 100000] [--no-postgresql] [--profile]``
(``--profile``: the top of a cProfile of the ``routes + router`` depth, event-loop thread only).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from accesspoint.routing.decision import decide_routes
from accesspoint.servicekit.tokens import BearerToken, scopes
from bench.far import OPERATORS, SENDER, _cpu, _in_parallel, _people
from far.app import create_app
from far.client import FarClient
from far.model import create_engine, sqlite_text, upgrade_schema
from far.service import FarService, read_routes
from far.settings import FarSettings

TARGET = 50_000.0  # recipients/s (issues 11 and 12)
BATCH = 1000
CONCURRENCY = 4
PARTY = "0007:" + SENDER


def _rows(registered: list[str]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    people = [(r, "personnummer", "secure", False, OPERATORS[i % 2].id, now, now) for i, r in enumerate(registered)]
    refusals = [(r, PARTY, now) for r in registered[::50]]
    return people, refusals


_COLUMNS = ("id", "kind", "status", "pending", "operator_id", "last_registration", "updated_at")


async def _fill(engine: Any, folder: Path, registered: list[str]) -> float:
    """Operators through FaRService, recipients and refusals straight through the driver; the seconds it took."""
    await upgrade_schema(engine)
    service = FarService(engine)
    for operator in OPERATORS:
        await service.put_operator(operator, actor="bench")
    started = time.perf_counter()
    people, refusals = _rows(registered)
    if engine.dialect.name == "sqlite":
        with sqlite3.connect(folder / "far.db") as db:
            db.executemany(
                "INSERT INTO far_recipients (id, kind, status, pending, operator_id, last_registration, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*row[:5], sqlite_text(row[5]), sqlite_text(row[6])) for row in people],
            )
            db.executemany(
                "INSERT INTO far_refusals (recipient_id, sender_id, created_at) VALUES (?, ?, ?)",
                [(*row[:2], sqlite_text(row[2])) for row in refusals],
            )
        return time.perf_counter() - started
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        await driver.copy_records_to_table("far_recipients", records=people, columns=_COLUMNS)
        await driver.copy_records_to_table(
            "far_refusals", records=refusals, columns=("recipient_id", "sender_id", "created_at")
        )
        await driver.execute("ANALYZE")
    return time.perf_counter() - started


def _load() -> float:
    return os.getloadavg()[0]


async def _measure(check: Callable[[list[str]], Awaitable[int]], batches: list[list[str]]) -> dict[str, Any]:
    count = sum(len(batch) for batch in batches)
    load = _load()
    begun, cpu_begun, loop_begun = time.perf_counter(), _cpu(), time.thread_time()
    reachable = sum(await _in_parallel(check, batches, CONCURRENCY))
    seconds, cpu = time.perf_counter() - begun, _cpu() - cpu_begun
    loop = time.thread_time() - loop_begun
    return {
        "recipients_per_s": count / seconds,
        "cpu_us_per_recipient": cpu * 1e6 / count,
        # The event loop's thread (Python under the GIL: one core at most) apart from the rest (aiosqlite's threads
        # running SQLite, which release the GIL): what bounds the rate on a quiet machine is the larger of
        # loop_us and cpu_us / cores.
        "loop_us_per_recipient": loop * 1e6 / count,
        "reachable": reachable,
        "seconds": seconds,
        "load_average": [load, _load()],
    }


async def _run(folder: Path, registered_count: int, count: int, database: str | None, profile: bool) -> dict[str, Any]:
    ids = _people(registered_count + count // 20 + 1)
    registered, unknown = ids[:registered_count], ids[registered_count:]
    engine = create_engine(database or f"sqlite+aiosqlite:///{folder / 'far.db'}")
    fill_seconds = await _fill(engine, folder, registered)
    service = FarService(engine)
    rng = random.Random(5)
    mailing = rng.sample(registered, count - count // 20) + rng.sample(unknown, count // 20)
    rng.shuffle(mailing)
    batches = [mailing[start : start + BATCH] for start in range(0, len(mailing), BATCH)]

    async def in_process(batch: list[str]) -> int:
        answer = await service.routes(SENDER, batch)
        return sum(1 for result in answer.results if isinstance(result, int))

    async def with_router(batch: list[str]) -> int:
        written = json.dumps((await service.routes(SENDER, batch)).to_json())
        answer = read_routes(json.loads(written), len(batch))
        return sum(1 for decision in decide_routes(SENDER, batch, answer) if isinstance(decision, int))

    for batch in batches:  # every page the mailing touches mapped, the statement caches warm
        await service.routes(SENDER, batch)
    gc.collect()
    gc.freeze()  # as `far serve` and `accesspoint serve` do once started
    result: dict[str, Any] = {"database": engine.dialect.name, "registered": registered_count, "recipients": count}
    result["fill_seconds"] = fill_seconds
    result["routes"] = await _measure(in_process, batches)
    result["routes_router"] = await _measure(with_router, batches)
    if profile:  # a pass of its own: the profiler's cost is in no figure
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        await _measure(with_router, batches)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        result["profile"] = text.getvalue()

    token = BearerToken("bench", "bench-token-0123456789", scopes("read"))
    runner = web.AppRunner(create_app(FarSettings(tokens=(token,)), service=service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # the port the OS chose
    try:
        async with FarClient(f"http://127.0.0.1:{port}", token.secret) as client:

            async def over_rest(batch: list[str]) -> int:
                answer = await client.routes(SENDER, batch)
                return sum(1 for decision in decide_routes(SENDER, batch, answer) if isinstance(decision, int))

            await over_rest(batches[0])
            result["rest_router"] = await _measure(over_rest, batches)
    finally:
        await runner.cleanup()
        await engine.dispose()
        gc.unfreeze()
    return result


def run(
    *, registered: int = 1_000_000, recipients: int = 100_000, postgresql: bool = True, profile: bool = False
) -> dict[str, Any]:
    """The three depths on SQLite and (``postgresql``) PostgreSQL; ``{"skipped": why}`` where one cannot run."""
    with tempfile.TemporaryDirectory(prefix="bench-far-check-") as folder:
        result = asyncio.run(_run(Path(folder), registered, recipients, None, profile))
    if postgresql:
        from accesspoint.testing.services import missing_postgres, postgres_server

        why = missing_postgres()
        if why is not None:
            result["postgresql"] = {"skipped": why}
        else:
            with postgres_server() as server, tempfile.TemporaryDirectory(prefix="bench-far-check-pg-") as folder:
                result["postgresql"] = asyncio.run(_run(Path(folder), registered, recipients, server.url(), profile))
    return result


DEPTHS = (
    ("routes", "FarService.routes (in-process)"),
    ("routes_router", "  + JSON both ways + decide_routes"),
    ("rest_router", "REST over loopback + decide_routes"),
)


def print_result(result: dict[str, Any], say: Callable[[str], None]) -> None:
    """One line per depth and database: rate, CPU per recipient, load."""
    say(
        f"FaR mailing check: {result['recipients']:,} recipients against {result['registered']:,} registered, "
        f"batches of {BATCH:,}, {CONCURRENCY} at a time, {os.cpu_count()} CPUs"
    )
    columns = [result]
    if "postgresql" in result:
        columns.append(result["postgresql"])
    for column in columns:
        if "skipped" in column:
            say(f"  PostgreSQL: skipped ({column['skipped']})")
            continue
        name = "SQLite" if column["database"] == "sqlite" else "PostgreSQL (this process's CPU only)"
        say(f"  {name} (filled in {column['fill_seconds']:.0f} s):")
        for key, label in DEPTHS:
            figure = column[key]
            ok = "met" if figure["recipients_per_s"] >= TARGET else "NOT met"
            say(
                f"    {label:40} {figure['recipients_per_s']:>9,.0f} recipients/s  "
                f"{figure['cpu_us_per_recipient']:5.1f} us CPU/recipient "
                f"({figure['loop_us_per_recipient']:4.1f} on the event loop's thread)  "
                f"load {figure['load_average'][0]:.1f}"
                f"->{figure['load_average'][1]:.1f}  (target {TARGET:,.0f}/s: {ok})"
            )
        if "profile" in column:
            say(column["profile"])


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.far_check``."""
    parser = argparse.ArgumentParser(prog="python -m bench.far_check", description=__doc__)
    parser.add_argument("--registered", type=int, default=1_000_000)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--no-postgresql", dest="postgresql", action="store_false")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    result = run(**vars(args))
    print_result(result, _say)
    _say(json.dumps({k: v for k, v in result.items() if k != "profile"}, default=str))


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
