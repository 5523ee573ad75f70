"""FaR: bulk import throughput, and isReachable for 1,000 recipients with one million registered (SQLite, PostgreSQL).

The register is filled through the real import path (CSV parsed, every identifier checked, batched upserts, an
audit row per recipient, one transaction). Then each round asks :meth:`FarService.is_reachable` about 1,000
recipients drawn at random (19 in 20 registered, the rest unknown; 1 in 50 registered refuses the sender), after
a warm-up, as the access point's router would in-process; a second series does the same through the Recipient v3
SOAP endpoint over loopback HTTP (request parsing, the query, the XML answer). Then a mailing check: 100,000
recipients in requests of 1,000, four at a time, in-process and over the REST API, in recipients/s. Targets: import
of one million under two minutes; service p99 under 20 ms; a mailing checked at 50,000 recipients/s over REST. The
load average is printed with the figures: on a shared machine wall times stretch with it, so CPU seconds are given
too.

The same runs again on PostgreSQL 15 (a throw-away cluster started as ``tests/services.py`` does: initdb and
pg_ctl as the postgres user on a free port, durability off) and the two are printed side by side; without
PostgreSQL installed that column says why it is missing. On PostgreSQL the CPU time is this process's only
(the driver, SQLAlchemy, building the answers): the server's own work runs in its backend process.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import text

from accesspoint.servicekit.tokens import BearerToken, scopes
from far.app import create_app
from far.identifiers import with_check_digit
from far.importer import Progress, import_file
from far.model import create_engine, upgrade_schema
from far.service import FarService, Operator
from far.settings import FarSettings

SENDER = "2021005448"
MAILING = 100_000  # recipients of the mailing check
MAILING_CONCURRENCY = 4  # requests of 1,000 in flight at once
TARGET_MAILING_PER_S = 50_000
OPERATORS = (
    Operator("5568402266", "Kivra", "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007:5568402266", "https://k/as4"),
    Operator("5567807507", "Billo", "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007:5567807507", None),
)


def _people(count: int) -> list[str]:
    """``count`` distinct valid personnummer (and every 10th a samordningsnummer), in a shuffled order."""
    ids = []
    for index in range(count):
        serial, day = divmod(index, 28 * 12 * 70)
        day, month = divmod(day, 12 * 70)
        month, year = divmod(month, 70)
        day_value = day + 1 + (60 if index % 10 == 9 else 0)
        nine = f"{30 + year:02d}{month + 1:02d}{day_value:02d}{serial:03d}"
        ids.append("19" + with_check_digit(nine))
    random.Random(7).shuffle(ids)
    return ids


def _write_csv(path: Path, ids: list[str]) -> int:
    refusing = 0
    with path.open("w", encoding="utf-8") as out:
        out.write("recipient,status,pending,operator,last_registration,refused_senders\n")
        for index, rid in enumerate(ids):
            status = "anonymous" if index % 97 == 0 else "secure"
            refused = SENDER if index % 50 == 0 else ""
            refusing += bool(refused)
            out.write(f"{rid},{status},false,{OPERATORS[index % 2].id},2024-03-01T10:00:00+01:00,{refused}\n")
    return refusing


def _percentiles(samples: list[float]) -> dict[str, float]:
    """Milliseconds: p50 and p99 (inclusive quantiles), max and mean."""
    ms = sorted(sample * 1e3 for sample in samples)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"n": len(ms), "p50_ms": cuts[49], "p99_ms": cuts[98], "max_ms": ms[-1], "mean_ms": statistics.fmean(ms)}


def _batch(rng: random.Random, registered: list[str], unknown: list[str]) -> list[str]:
    batch = rng.sample(registered, 950) + rng.sample(unknown, 50)
    rng.shuffle(batch)
    return batch


def _soap(recipients: list[str]) -> bytes:
    ids = "".join(f"<v3:recipientId>{r}</v3:recipientId>" for r in recipients)
    return (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:v3="http://minameddelanden.gov.se/schema/Recipient/v3"><s:Body><v3:isReachable>'
        f"<v3:senderOrgNr>16{SENDER}</v3:senderOrgNr>{ids}</v3:isReachable></s:Body></s:Envelope>"
    ).encode()


async def _database_mib(engine: Any, folder: Path) -> float:
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            size = await connection.scalar(text("SELECT pg_database_size(current_database())"))
        return float(size) / 2**20
    return (folder / "far.db").stat().st_size / 2**20


async def _run(folder: Path, count: int, rounds: int, database: str | None = None) -> dict[str, Any]:
    """Import and measure on ``database`` (a SQLAlchemy URL; default a SQLite file in ``folder``)."""
    ids = _people(count + 5_000)
    registered, unknown = ids[:count], ids[count:]
    csv_path = folder / "recipients.csv"
    refusing = _write_csv(csv_path, registered)
    engine = create_engine(database or f"sqlite+aiosqlite:///{folder / 'far.db'}")
    await upgrade_schema(engine)
    service = FarService(engine)
    for operator in OPERATORS:
        await service.put_operator(operator, actor="bench")
    load_before = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    report = await import_file(engine, csv_path, progress=Progress(csv_path.stat().st_size))
    import_seconds = time.perf_counter() - started
    import_cpu = time.process_time() - cpu_started
    assert report.ok and report.rows == count, report.to_json()

    rng = random.Random(11)
    plan = {}
    if engine.dialect.name == "postgresql":
        # Right after a bulk load PostgreSQL has no statistics yet (autovacuum gathers them a while later): the
        # first figure shows what a lookup costs then, the series below is measured once ANALYZE has run.
        begun = time.perf_counter()
        await service.is_reachable(SENDER, _batch(rng, registered, unknown))
        plan["before_analyze_ms"] = (time.perf_counter() - begun) * 1e3
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE"))
    for _ in range(20):  # warm the page cache and SQLAlchemy's statement cache
        await service.is_reachable(SENDER, _batch(rng, registered, unknown))
    # As `far serve` does once started: what exists now lives as long as the process, so the collector need not
    # walk it again in every full collection (those walks were the whole p99 tail before).
    gc.collect()
    gc.freeze()
    samples = []
    cpu_samples = []
    reachable = 0
    for _ in range(rounds):
        batch = _batch(rng, registered, unknown)
        begun, cpu_begun = time.perf_counter(), time.process_time()
        answers = await service.is_reachable(SENDER, batch)
        samples.append(time.perf_counter() - begun)
        cpu_samples.append(time.process_time() - cpu_begun)
        reachable += sum(a.reachable for a in answers)

    token = BearerToken("bench", secrets.token_urlsafe(24), scopes("read"))
    runner = web.AppRunner(create_app(FarSettings(tokens=(token,)), service=service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # the port the OS chose
    soap_samples = []
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/Recipient/v3"
        headers = {"Content-Type": "text/xml; charset=utf-8"}
        for index in range(10 + rounds // 2):
            body = _soap(_batch(rng, registered, unknown))
            begun = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                assert response.status == 200
            if index >= 10:
                soap_samples.append(time.perf_counter() - begun)
        mailing = await _mailing(service, session, f"http://127.0.0.1:{port}", token.secret, registered, unknown)
    await runner.cleanup()
    size = await _database_mib(engine, folder)
    await engine.dispose()
    return {
        "database": engine.dialect.name,
        "registered": count,
        "refusing_sender": refusing,
        "import_seconds": import_seconds,
        "import_rows_per_s": count / import_seconds,
        "import_cpu_seconds": import_cpu,
        "load_average": [load_before, os.getloadavg()[0]],
        "database_mib": size,
        "reachable_share": reachable / (rounds * 1000),
        "service": _percentiles(samples),
        # CPU time of the process (both threads: the event loop's and aiosqlite's) per call: what a call costs
        # when the machine is not shared; wall time above is what a caller waits.
        "service_cpu": _percentiles(cpu_samples),
        "soap_http": _percentiles(soap_samples),
        "mailing": mailing,
        **plan,
    }


async def _mailing(
    service: FarService,
    session: aiohttp.ClientSession,
    base: str,
    token: str,
    registered: list[str],
    unknown: list[str],
) -> dict[str, Any]:
    """An agency checks a mailing list before sending: MAILING recipients (19 in 20 registered) in requests of
    1,000, MAILING_CONCURRENCY at a time; in-process through FarService and over the REST API (JSON, loopback).

    recipients/s are wall-clock (the machine's load stretches them); CPU = this process's user + system time per
    recipient (the API's client and server both run here, so its CPU counts both)."""
    rng = random.Random(5)
    count = min(MAILING, len(registered))
    mailing = rng.sample(registered, count - count // 20) + rng.sample(unknown, min(count // 20, len(unknown)))
    batches = [mailing[start : start + 1000] for start in range(0, len(mailing), 1000)]
    headers = {"Authorization": f"Bearer {token}"}

    async def in_process(batch: list[str]) -> int:
        return sum(answer.reachable for answer in await service.is_reachable(SENDER, batch))

    async def over_rest(batch: list[str]) -> int:
        body = {"sender": SENDER, "recipients": batch}
        async with session.post(f"{base}/api/v1/reachable", json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            return sum(item["reachable"] for item in (await response.json())["results"])

    result: dict[str, Any] = {"recipients": len(mailing), "batch": 1000, "concurrency": MAILING_CONCURRENCY}
    for name, check in (("service", in_process), ("rest", over_rest)):
        begun, cpu_begun = time.perf_counter(), _cpu()
        reachable = sum(await _in_parallel(check, batches, MAILING_CONCURRENCY))
        seconds, cpu = time.perf_counter() - begun, _cpu() - cpu_begun
        result[name] = {
            "recipients_per_s": len(mailing) / seconds,
            "cpu_us_per_recipient": cpu * 1e6 / len(mailing),
            "reachable": reachable,
            "seconds": seconds,
        }
    result["load_average"] = os.getloadavg()[0]
    return result


async def _in_parallel(check: Callable[[list[str]], Awaitable[int]], batches: list[list[str]], width: int) -> list[int]:
    """Each batch checked, at most ``width`` at a time; the counts in order."""
    limit = asyncio.Semaphore(width)

    async def one(batch: list[str]) -> int:
        async with limit:
            return await check(batch)

    return list(await asyncio.gather(*(one(batch) for batch in batches)))


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _targets(result: dict[str, Any], count: int) -> dict[str, bool]:
    return {
        "import_1m_under_120s": result["import_seconds"] * 1_000_000 / count < 120,
        "service_p99_under_20ms": result["service"]["p99_ms"] < 20.0,
        "mailing_50k_per_s": result["mailing"]["rest"]["recipients_per_s"] >= TARGET_MAILING_PER_S,
    }


def _run_postgresql(count: int, rounds: int) -> dict[str, Any]:
    """The same on a throw-away PostgreSQL 15; ``{"skipped": why}`` when it cannot be started here."""
    from accesspoint.testing.services import missing_postgres, postgres_server

    why = missing_postgres()
    if why is not None:
        return {"skipped": why}
    with postgres_server() as server, tempfile.TemporaryDirectory(prefix="bench-far-pg-") as folder:
        result = asyncio.run(_run(Path(folder), count, rounds, server.url()))
    result["targets"] = _targets(result, count)
    return result


def run(*, quick: bool = False, postgresql: bool = True) -> dict[str, Any]:
    """Import, then measure on SQLite (top level) and PostgreSQL (``postgresql``); ms and the targets met."""
    count, rounds = (100_000, 100) if quick else (1_000_000, 500)
    with tempfile.TemporaryDirectory(prefix="bench-far-") as folder:
        result = asyncio.run(_run(Path(folder), count, rounds))
    result["targets"] = _targets(result, count)
    if postgresql:
        result["postgresql"] = _run_postgresql(count, rounds)
    return result


def print_result(result: dict[str, Any]) -> None:
    """The table ``python -m bench`` prints: SQLite and, beside it, PostgreSQL."""
    say = sys.stdout.write
    columns = [("SQLite", result)]
    postgresql = result.get("postgresql")
    if postgresql is not None and "skipped" not in postgresql:
        columns.append(("PostgreSQL", postgresql))
    say(f"FaR: {result['registered']:,} recipients registered, {os.cpu_count()} CPUs\n")
    head = "".join(f"{name:>24}" for name, _ in columns)
    say(f"  {'':44}{head}\n")

    def line(label: str, cell: Any) -> None:
        say(f"  {label:44}" + "".join(f"{cell(r):>24}" for _, r in columns) + "\n")

    line("database size", lambda r: f"{r['database_mib']:.0f} MiB")
    line("load average (before import -> after)", lambda r: f"{r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f}")
    line("import (CSV, checked, upserts + audit)", lambda r: f"{r['import_seconds']:.1f} s")
    line("  rows/s", lambda r: f"{r['import_rows_per_s']:,.0f}")
    line("  CPU time of this process", lambda r: f"{r['import_cpu_seconds']:.1f} s")
    line("  target: 1M under 120 s", lambda r: "met" if r["targets"]["import_1m_under_120s"] else "NOT met")
    say(f"  isReachable, 1,000 recipients each ({result['reachable_share']:.0%} reachable), p50 / p99 ms:\n")
    paths = (
        ("service", "FarService.is_reachable (in-process)"),
        ("service_cpu", "  the same, CPU time per call"),
        ("soap_http", "SOAP over loopback HTTP"),
    )
    for key, label in paths:
        line(f"  {label} (n={result[key]['n']})", lambda r, k=key: f"{r[k]['p50_ms']:.2f} / {r[k]['p99_ms']:.2f}")
    line("  max ms (service)", lambda r: f"{r['service']['max_ms']:.2f}")
    line("  target: service p99 under 20 ms", lambda r: "met" if r["targets"]["service_p99_under_20ms"] else "NOT met")
    mailing = result["mailing"]
    say(
        f"  mailing check: {mailing['recipients']:,} recipients in requests of {mailing['batch']:,},"
        f" {mailing['concurrency']} at a time (load average {mailing['load_average']:.1f}):\n"
    )
    for key, label in (("service", "FarService.is_reachable (in-process)"), ("rest", "REST API over loopback HTTP")):
        line(f"    {label}, recipients/s", lambda r, k=key: f"{r['mailing'][k]['recipients_per_s']:,.0f}")
        line("      CPU us per recipient", lambda r, k=key: f"{r['mailing'][k]['cpu_us_per_recipient']:.1f}")
    line(
        f"    target: REST >= {TARGET_MAILING_PER_S:,} recipients/s",
        lambda r: "met" if r["targets"]["mailing_50k_per_s"] else "NOT met",
    )
    if postgresql is not None and "before_analyze_ms" in postgresql:
        before = postgresql["before_analyze_ms"]
        say(f"  PostgreSQL: measured after ANALYZE; one call before it (no statistics yet) took {before:.0f} ms\n")
    if postgresql is not None and "skipped" in postgresql:
        say(f"  PostgreSQL: skipped ({postgresql['skipped']})\n")
    elif postgresql is not None:
        say("  (PostgreSQL CPU time is this process's: the server's backend process is not counted)\n")


if __name__ == "__main__":
    outcome = run(quick="--quick" in sys.argv)
    print_result(outcome)
