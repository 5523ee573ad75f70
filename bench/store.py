"""The store's writer alone: messages/s and CPU per message, against raw sqlite3 doing the same rows in the same run.

One *message* is what the two access points write for a 4 KB letter: the receiver inserts it with its payload, the
raw envelope and our signed receipt (inline); the sender inserts it with its payload and header, claims it and
moves it to ``delivered`` with the partner's receipt. ``callers`` coroutines keep that many messages in flight
(closed loop) through:

- ``writer``: ``MessageStore``'s operations straight to the group-committing writer (``writer.submit``);
- ``store``: the whole ``MessageStore`` (streams taken into content, then the writer);
- ``raw``: the same statements with sqlite3 in one thread, in transactions of the writer's average batch size
  (no event loop, no futures): what the database itself costs for those rows at ``synchronous=FULL``.

CPU = user + system time of this process (the writer's thread included) per message; msg/s are wall-clock and
depend on the machine's load (printed). ``--postgresql`` runs ``writer`` and ``store`` on a throw-away PostgreSQL
(tests/services.py, fsync and synchronous commits on) too; there the server's own CPU is not counted (another
process).

``python -m bench.store [--seconds 5] [--callers 64] [--postgresql]``; ``python -m bench --only store``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from accesspoint.store import Direction, EvidenceKind, MessageInfo, MessageState, MessageStore, NewEvidence, NewPayload
from accesspoint.store.codec import INSERT_COLUMNS, sqlite_datetime
from accesspoint.store.db import sqlite_url, upgrade_to_head
from accesspoint.store.files import Content
from accesspoint.store.ops import Claim, EvidenceRow, Insert, Inserted, Move, PayloadRow
from accesspoint.store.writer import Writer

PAYLOAD = os.urandom(2048).hex().encode()  # 4 KB
ENVELOPE = os.urandom(2048).hex().encode()  # about a signed 1.15 envelope
RECEIPT = os.urandom(1536).hex().encode()
KEEP = timedelta(days=3650)
LEASE = timedelta(minutes=2)


def _content(data: bytes) -> Content:
    return Content(size=len(data), sha256=hashlib.sha256(data).hexdigest(), data=data)


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


# ------------------------------------------------------------------------------------------- cases


async def through_writer(writer: Writer, number: int) -> None:
    """Both sides of one message as writer operations (the contents are already taken, as the server has them)."""
    now = datetime.now(UTC)
    payload = (PayloadRow("letter@bench", "application/xml", _content(PAYLOAD)),)
    received = Insert(
        Direction.IN,
        MessageInfo(f"{number}@bench", pmode_id="letters"),
        now,
        payload,
        (
            EvidenceRow(EvidenceKind.RAW_MESSAGE, _content(ENVELOPE), now + KEEP),
            EvidenceRow(EvidenceKind.OUR_RECEIPT, _content(RECEIPT), now + KEEP),
        ),
    )
    submitted = Insert(
        Direction.OUT,
        MessageInfo(f"{number}@bench", pmode_id="letters"),
        now,
        payload,
        (EvidenceRow(EvidenceKind.RAW_MESSAGE, _content(ENVELOPE[:1200]), now + KEEP),),
    )
    inserted, stored = await asyncio.gather(writer.submit(received), writer.submit(submitted))
    assert isinstance(inserted, Inserted) and isinstance(stored, Inserted)
    claimed = await writer.submit(Claim(stored.message.message_id, now, now + LEASE))
    assert claimed is not None
    receipt = (EvidenceRow(EvidenceKind.PARTNER_RECEIPT, _content(RECEIPT), now + KEEP),)
    assert await writer.submit(Move(claimed, MessageState.DELIVERED, now, evidence=receipt)) is not None


async def through_store(store: MessageStore, number: int) -> None:
    """Both sides of one message through MessageStore's methods, as the server calls them."""
    now = datetime.now(UTC)
    message_id = f"{number}@store"

    def letter() -> list[NewPayload]:
        return [NewPayload("letter@bench", "application/xml", _once(PAYLOAD))]

    received = [NewEvidence(EvidenceKind.RAW_MESSAGE, _once(ENVELOPE), KEEP)]
    received.append(NewEvidence(EvidenceKind.OUR_RECEIPT, _once(RECEIPT), KEEP))
    header = [NewEvidence(EvidenceKind.RAW_MESSAGE, _once(ENVELOPE[:1200]), KEEP)]
    info = MessageInfo(message_id, pmode_id="letters")
    await asyncio.gather(
        store.receive(info, letter(), now=now, evidence=received),
        store.submit(info, letter(), now=now, evidence=header),
    )
    claimed = await store.claim(message_id, now=now, lease=LEASE)
    assert claimed is not None
    receipt = [NewEvidence(EvidenceKind.PARTNER_RECEIPT, _once(RECEIPT), KEEP)]
    assert await store.transition(claimed, MessageState.DELIVERED, now=now, evidence=receipt) is not None


async def closed_loop(
    one: Callable[[int], Coroutine[Any, Any, None]], *, callers: int, seconds: float, first: int = 0
) -> dict[str, float]:
    """``callers`` coroutines each running ``one`` back to back for ``seconds``: messages, msg/s, CPU us each."""
    done = 0
    end = time.monotonic() + seconds

    async def caller(start: int) -> None:
        nonlocal done
        number = start
        while time.monotonic() < end:
            await one(number)
            number += callers
            done += 1

    cpu, wall = _cpu(), time.monotonic()
    await asyncio.gather(*(caller(first + index) for index in range(callers)))
    cpu, wall = _cpu() - cpu, time.monotonic() - wall
    return {"messages": done, "msg_per_s": done / wall, "cpu_us_per_msg": cpu * 1e6 / max(done, 1)}


def raw_sqlite(path: Path, *, messages: int, batch: int) -> dict[str, float]:
    """The writer's statements for ``messages`` messages with sqlite3 alone, ``batch`` operations per transaction."""
    connection = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=FULL"):
        connection.execute(f"PRAGMA {pragma}")
    insert = (
        f"INSERT INTO messages ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"  # noqa: S608
        " ON CONFLICT (direction, message_id) DO NOTHING RETURNING id"
    )
    payload = (
        "INSERT INTO payloads (message, content_id, mime_type, properties, size, sha256, path, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    evidence = (
        "INSERT INTO evidence (direction, message_id, kind, size, sha256, path, data, created_at, retain_until)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    audit = "INSERT INTO transitions (message, from_state, to_state, at, actor, detail) VALUES (?, ?, ?, ?, ?, ?)"
    claim = "SELECT * FROM messages WHERE direction = 'out' AND message_id = ? AND state = 'submitted'"
    move = "UPDATE messages SET state = ?, version = version + 1, updated_at = ? WHERE id = ? AND version = ?"
    digest = hashlib.sha256(PAYLOAD).hexdigest()

    def operations(number: int) -> Iterator[Callable[[], None]]:
        now = sqlite_datetime(datetime.now(UTC))
        message_id = f"{number}@raw"

        def store(direction: str, state: str, evidence_rows: list[bytes]) -> None:
            values = (direction, message_id, None, None, "letters", None, None, None, None, None, None, state, 1, 0)
            (pk,) = connection.execute(insert, (*values, len(PAYLOAD), now, now)).fetchone()
            connection.execute(payload, (pk, "letter@bench", "application/xml", "{}", 4096, digest, None, PAYLOAD))
            connection.execute(audit, (pk, None, state, now, "bench", None))
            for data in evidence_rows:
                connection.execute(
                    evidence, (direction, message_id, "raw-message", len(data), digest, None, data, now, now)
                )

        def settle() -> None:
            row = connection.execute(claim, (message_id,)).fetchone()
            connection.execute(move, ("sending", now, row[0], row[13]))
            connection.execute(audit, (row[0], "submitted", "sending", now, "bench", None))
            connection.execute(move, ("delivered", now, row[0], row[13] + 1))
            connection.execute(audit, (row[0], "sending", "delivered", now, "bench", None))
            connection.execute(evidence, ("out", message_id, "partner-receipt", 3072, digest, None, RECEIPT, now, now))

        yield lambda: store("in", "received", [ENVELOPE, RECEIPT])
        yield lambda: store("out", "submitted", [ENVELOPE[:1200]])
        yield settle

    pending = [op for number in range(messages) for op in operations(number)]
    cpu, wall = _cpu(), time.monotonic()
    for start in range(0, len(pending), batch):
        connection.execute("BEGIN IMMEDIATE")
        for operation in pending[start : start + batch]:
            operation()
        connection.execute("COMMIT")
    cpu, wall = _cpu() - cpu, time.monotonic() - wall
    connection.close()
    return {"messages": messages, "msg_per_s": messages / wall, "cpu_us_per_msg": cpu * 1e6 / messages}


# --------------------------------------------------------------------------------------------- runs


async def _measure(url: str, folder: Path, *, callers: int, seconds: float) -> dict[str, Any]:
    await upgrade_to_head(url)
    store = await MessageStore.open(url, folder / "files", instance="bench", migrate=False)
    try:
        writer = store.writer
        await closed_loop(lambda n: through_writer(writer, n), callers=callers, seconds=min(1.0, seconds), first=10**8)
        before = (writer.batches, writer.operations)
        direct = await closed_loop(lambda n: through_writer(writer, n), callers=callers, seconds=seconds)
        batches, operations = writer.batches - before[0], writer.operations - before[1]
        direct["ops_per_batch"] = operations / max(batches, 1)
        facade = await closed_loop(lambda n: through_store(store, n), callers=callers, seconds=seconds)
    finally:
        await store.close()
    return {"writer": direct, "store": facade}


def run(*, seconds: float = 5.0, callers: int = 64, postgresql: bool = False, quick: bool = False) -> dict[str, Any]:
    """Writer and store on SQLite (and PostgreSQL when asked), and raw sqlite3 at the writer's batch size."""
    if quick:
        seconds = min(seconds, 1.5)
    result: dict[str, Any] = {"seconds": seconds, "callers": callers, "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as temp:
        folder = Path(temp)
        result["sqlite"] = asyncio.run(_measure(sqlite_url(folder / "w.db"), folder, callers=callers, seconds=seconds))
        batch = max(1, round(result["sqlite"]["writer"]["ops_per_batch"]))
        asyncio.run(upgrade_to_head(sqlite_url(folder / "raw.db")))
        count = max(200, int(result["sqlite"]["writer"]["messages"]))
        result["sqlite"]["raw"] = raw_sqlite(folder / "raw.db", messages=count, batch=batch)
        result["sqlite"]["raw"]["ops_per_batch"] = batch
        if postgresql:
            result["postgresql"] = _on_postgresql(folder, callers=callers, seconds=seconds)
    result["load_average_end"] = os.getloadavg()
    return result


def _on_postgresql(folder: Path, *, callers: int, seconds: float) -> dict[str, Any]:
    from accesspoint.testing import services  # a throw-away server, started the way the tests start it

    reason = services.missing_postgres()
    if reason is not None:
        return {"skipped": reason}
    with services.postgres_server(durable=True) as server:

        async def measure() -> dict[str, Any]:
            name = await services.create_postgres_database(server)
            return await _measure(server.url(name), folder / "pg", callers=callers, seconds=seconds)

        return asyncio.run(measure())


def print_result(result: dict[str, Any], say: Callable[[str], None]) -> None:
    """The table ``python -m bench`` prints."""
    load = result["load_average_start"][0], result["load_average_end"][0]
    say(
        f"Store writer: a message = receiver insert (4 KB payload, envelope, receipt inline) + sender insert, claim,"
        f" delivered with the partner's receipt; {result['callers']} in flight, {result['seconds']:.0f} s per case;"
        f" load average {load[0]:.1f} -> {load[1]:.1f} ({os.cpu_count()} CPUs)"
    )
    say(f"  {'backend':10} {'case':8} {'messages':>8} {'msg/s':>8} {'CPU us/msg':>10} {'ops/batch':>9}")
    for backend in ("sqlite", "postgresql"):
        cases = result.get(backend)
        if cases is None:
            continue
        if "skipped" in cases:
            say(f"  {backend:10} skipped: {cases['skipped']}")
            continue
        for case in ("writer", "store", "raw"):
            if case in cases:
                run_ = cases[case]
                batch = f"{run_['ops_per_batch']:.1f}" if "ops_per_batch" in run_ else ""
                say(
                    f"  {backend:10} {case:8} {run_['messages']:>8.0f} {run_['msg_per_s']:>8.0f}"
                    f" {run_['cpu_us_per_msg']:>10.0f} {batch:>9}"
                )
    sqlite = result["sqlite"]
    ratio = sqlite["writer"]["cpu_us_per_msg"] / sqlite["raw"]["cpu_us_per_msg"]
    say(
        f"  writer / raw sqlite3 CPU per message: {ratio:.2f}x (raw = the same statements in one thread,"
        f" {sqlite['raw']['ops_per_batch']} operations per transaction, synchronous=FULL); PostgreSQL's own CPU"
        " is not counted"
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.store``."""
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--postgresql", action="store_true")
    args = parser.parse_args(argv)
    result = run(seconds=args.seconds, callers=args.callers, postgresql=args.postgresql)
    print_result(result, lambda text: sys.stdout.write(text + "\n"))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
