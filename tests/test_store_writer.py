"""The group-committing writer on SQLite and a real PostgreSQL: batches, duplicates, races and failures."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from asyncpg.exceptions._base import InternalClientError
from sqlalchemy import func, select
from sqlalchemy.dialects.sqlite.pysqlite import dialect as pysqlite_dialect
from sqlalchemy.engine import make_url

from accesspoint.store import Direction, EvidenceKind, MessageInfo, MessageState, StoredMessage
from accesspoint.store.codec import from_sqlite_datetime, sqlite_datetime
from accesspoint.store.db import Database
from accesspoint.store.files import Content, FileStore, FileTooLarge, PreparedFile, StoredFileRef
from accesspoint.store.ops import Claim, Duplicate, EvidenceRow, Insert, Inserted, Keep, Move, PayloadRow
from accesspoint.store.schema import UtcDateTime, evidence, messages, payloads, transitions
from accesspoint.store.writer import SqliteWriter, WriteFailed, Writer, WriteUnavailable, open_writer

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEEP = T0 + timedelta(days=3650)
DOC = Content(size=6, sha256="0" * 64, data=b"<doc/>")


def insert(message_id: str, direction: Direction = Direction.IN) -> Insert:
    """A message with one inline payload and its raw-message evidence."""
    return Insert(
        direction,
        MessageInfo(message_id, pmode_id="p1"),
        T0,
        (PayloadRow("cid:1", "application/xml", DOC, {"MimeType": "application/xml"}),),
        (EvidenceRow(EvidenceKind.RAW_MESSAGE, DOC, KEEP),),
    )


@pytest.fixture
async def writer(migrated_database_url: str) -> AsyncIterator[Writer]:
    """A started writer on a migrated database of each backend."""
    started = open_writer(migrated_database_url, instance="w")
    await started.start()
    yield started
    await started.close()


@pytest.fixture
async def database(migrated_database_url: str) -> AsyncIterator[Database]:
    """SQLAlchemy over the same database, to read what the writer committed."""
    opened = Database(migrated_database_url)
    yield opened
    await opened.dispose()


async def count(database: Database, table: Any) -> int:
    """Rows in a table, read through another connection (so only committed rows count)."""
    return int(
        await database.run(lambda connection: connection.execute(select(func.count()).select_from(table)).scalar())
    )


def test_sqlite_datetimes_are_written_and_read_as_sqlalchemy_does() -> None:
    """The writer's SQLite datetime strings equal SQLAlchemy's, and read back to the same aware UTC instant."""
    dialect = pysqlite_dialect()
    column = UtcDateTime().dialect_impl(dialect)
    bind, result = column.bind_processor(dialect), column.result_processor(dialect, None)
    assert bind is not None and result is not None
    for value in (T0, T0.replace(microsecond=7), datetime(2026, 3, 1, 14, 0, 1, tzinfo=timezone(timedelta(hours=2)))):
        assert sqlite_datetime(value) == bind(value)
        assert from_sqlite_datetime(sqlite_datetime(value)) == result(bind(value)) == value
    with pytest.raises(ValueError, match="timezone-aware"):
        sqlite_datetime(datetime(2026, 3, 1))


async def test_concurrent_operations_share_batches_and_each_gets_its_own_outcome(
    writer: Writer, database: Database
) -> None:
    """Two hundred inserts submitted at once commit in fewer batches than operations, each answered Inserted."""
    outcomes = await asyncio.gather(*(writer.submit(insert(f"m{n}@partner")) for n in range(200)))
    assert all(isinstance(outcome, Inserted) for outcome in outcomes)
    assert len({outcome.message.pk for outcome in outcomes if isinstance(outcome, Inserted)}) == 200
    assert writer.operations == 200 and writer.batches < 200
    assert [await count(database, table) for table in (messages, payloads, evidence, transitions)] == [200] * 4


async def test_an_answered_operation_is_committed(writer: Writer, database: Database) -> None:
    """When a caller's future resolves, another connection already sees its rows (the batch has committed)."""
    for n in range(5):
        await writer.submit(insert(f"seen{n}@partner"))
        assert await count(database, messages) == n + 1


async def test_sqlite_writer_syncs_each_commit_fully(tmp_path: Path) -> None:
    """The SQLite writer's connection is in WAL mode with synchronous=FULL under the power-loss durability."""
    writer = SqliteWriter(tmp_path / "w.db", instance="w")
    connection = writer._open()
    try:
        pragmas = [connection.execute(f"PRAGMA {name}").fetchone()[0] for name in ("journal_mode", "synchronous")]
    finally:
        connection.close()
    assert pragmas == ["wal", 2]


async def test_a_duplicate_insert_is_answered_with_the_stored_message_and_keeps_nothing(
    writer: Writer, database: Database
) -> None:
    """The same (direction, MessageId) raced by two callers is stored once; the other gets Duplicate with it."""
    first, second = await asyncio.gather(writer.submit(insert("twice@partner")), writer.submit(insert("twice@partner")))
    assert isinstance(first, Inserted) and isinstance(second, Duplicate)
    assert second.existing == first.message
    assert [await count(database, table) for table in (messages, payloads, evidence, transitions)] == [1] * 4
    assert isinstance(await writer.submit(insert("twice@partner", Direction.OUT)), Inserted)


async def test_racing_moves_of_one_message_have_exactly_one_winner(writer: Writer, database: Database) -> None:
    """Compare-and-set: of several moves from the same snapshot one wins; the others get None but keep evidence."""
    inserted = await writer.submit(insert("race@ap", Direction.OUT))
    assert isinstance(inserted, Inserted)
    claimed = await writer.submit(Claim("race@ap", T0, T0 + timedelta(seconds=30)))
    assert claimed is not None and (claimed.state, claimed.attempts, claimed.lease_owner) == ("sending", 1, "w")
    receipt = (EvidenceRow(EvidenceKind.PARTNER_RECEIPT, DOC, KEEP),)
    moves = [Move(claimed, MessageState.DELIVERED, T0, detail=f"mover {n}", evidence=receipt) for n in range(4)]
    outcomes = await asyncio.gather(*(writer.submit(move) for move in moves))
    winners = [outcome for outcome in outcomes if outcome is not None]
    assert len(winners) == 1 and winners[0] == moves[0].moved()
    assert await count(database, evidence) == 1 + 4  # the raw message, and every mover's receipt
    assert await count(database, transitions) == 3  # inserted, claimed, delivered once


async def test_a_claim_takes_only_a_due_message_and_an_expired_lease(writer: Writer) -> None:
    """A claim answers None for a message not due, and takes over a lease that ran out (attempts + 1)."""
    await writer.submit(insert("due@ap", Direction.OUT))
    lease = T0 + timedelta(seconds=30)
    first = await writer.submit(Claim("due@ap", T0, lease))
    assert first is not None
    assert await writer.submit(Claim("due@ap", lease - timedelta(seconds=1), lease)) is None
    taken = await writer.submit(Claim("due@ap", lease + timedelta(seconds=1), lease + timedelta(seconds=31)))
    assert taken is not None and (taken.attempts, taken.version) == (2, 3)
    retry = Move(taken, MessageState.AWAITING_RECEIPT, T0, next_attempt_at=lease + timedelta(minutes=5),
                 error=("EBMS:0005", "refused"))  # fmt: skip
    waiting = await writer.submit(retry)
    assert waiting is not None and waiting.last_error_code == "EBMS:0005" and waiting.lease_owner is None
    assert await writer.submit(Claim("due@ap", lease + timedelta(minutes=4), lease)) is None
    assert await writer.submit(Claim("due@ap", lease + timedelta(minutes=5), lease)) is not None


async def test_kept_evidence_comes_back_with_its_ids_in_order(writer: Writer, database: Database) -> None:
    """Keep stores evidence about any message (even one never stored) and answers each piece's record in order."""
    rows = tuple(EvidenceRow(kind, DOC, KEEP) for kind in (EvidenceKind.ERROR_SIGNAL, EvidenceKind.PARTNER_RECEIPT))
    kept = await writer.submit(Keep(Direction.OUT, "gone@ap", T0, rows))
    assert [(item.kind, item.message_id, item.retain_until) for item in kept] == [
        (EvidenceKind.ERROR_SIGNAL, "gone@ap", KEEP),
        (EvidenceKind.PARTNER_RECEIPT, "gone@ap", KEEP),
    ]
    assert kept[0].pk < kept[1].pk
    stored = await database.run(
        lambda c: c.execute(select(evidence.c.id, evidence.c.kind).order_by(evidence.c.id)).all()
    )
    assert [tuple(row) for row in stored] == [(item.pk, item.kind.value) for item in kept]


async def test_operations_submitted_together_must_touch_different_messages(writer: Writer) -> None:
    """submit_all refuses two operations on one message (their order inside one statement would be undefined)."""
    with pytest.raises(ValueError, match="another message"):
        await writer.submit_all([insert("one@partner"), insert("one@partner")])


@contextlib.asynccontextmanager
async def _trigger(url: str, database: Database, message_id: str, action: str) -> AsyncIterator[None]:
    """A trigger doing ``action`` (SQLite: a RAISE; PostgreSQL: PL/pgSQL) before a message_id is inserted, dropped
    on the way out (the PostgreSQL test database is reused by the next test)."""
    if make_url(url).get_backend_name() == "sqlite":
        create = [
            f"CREATE TRIGGER injected BEFORE INSERT ON messages WHEN NEW.message_id = '{message_id}'"
            f" BEGIN {action}; END"
        ]
        drop = ["DROP TRIGGER injected"]
    else:
        create = [
            f"CREATE FUNCTION injected() RETURNS trigger AS $$ BEGIN IF NEW.message_id = '{message_id}' THEN {action};"
            " END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER injected BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION injected()",
        ]
        drop = ["DROP TRIGGER injected ON messages", "DROP FUNCTION injected()"]
    await database.run(lambda connection: [connection.exec_driver_sql(s) for s in create])
    try:
        yield
    finally:
        await database.run(lambda connection: [connection.exec_driver_sql(s) for s in drop])


async def test_an_operation_that_fails_fails_alone(
    writer: Writer, database: Database, migrated_database_url: str
) -> None:
    """A statement failing inside a batch rolls it back; the others are run again and kept, the culprit fails."""
    sqlite = make_url(migrated_database_url).get_backend_name() == "sqlite"
    refuse = "SELECT RAISE(ABORT, 'poisoned')" if sqlite else "RAISE EXCEPTION 'poisoned'"
    async with _trigger(migrated_database_url, database, "poison@partner", refuse):
        ops = [insert("fine-1@partner"), insert("poison@partner"), insert("fine-2@partner")]
        outcomes = await writer.submit_all(ops, return_exceptions=True)
    assert isinstance(outcomes[0], Inserted) and isinstance(outcomes[2], Inserted)
    assert isinstance(outcomes[1], WriteFailed) and "poisoned" in str(outcomes[1])
    assert [await count(database, table) for table in (messages, payloads, evidence, transitions)] == [2] * 4


class _FailingCommit(sqlite3.Connection):
    """A sqlite3 connection whose next COMMIT fails once armed, as a full disk or an I/O error would make it."""

    armed = threading.Event()

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        """Fail COMMIT once when armed; run everything else."""
        if sql == "COMMIT" and self.armed.is_set():
            self.armed.clear()
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return super().execute(sql, *args)


async def test_a_failed_commit_fails_every_caller_of_the_batch_and_keeps_nothing(
    migrated_database_url: str, database: Database
) -> None:
    """When the batch cannot commit (SQLite: COMMIT fails; PostgreSQL: the connection is lost mid-statement) every
    caller gets WriteFailed (WriteUnavailable: try later), none of the batch is stored, and the writer goes on with
    a new connection."""
    url = make_url(migrated_database_url)
    batch = [insert(f"batch-{n}@partner") for n in range(4)] + [insert("slow@partner")]
    if url.get_backend_name() == "sqlite":
        connect = functools.partial(sqlite3.connect, factory=_FailingCommit)
        writer: Writer = SqliteWriter(Path(url.database or ""), instance="w", connect=connect)
        await writer.start()
        await writer.submit(insert("before@partner"))
        _FailingCommit.armed.set()
        outcomes = await writer.submit_all(batch, return_exceptions=True)
    else:
        writer = open_writer(migrated_database_url, instance="w")
        await writer.start()
        await writer.submit(insert("before@partner"))
        async with _trigger(migrated_database_url, database, "slow@partner", "PERFORM pg_sleep(30)"):
            pending = asyncio.ensure_future(writer.submit_all(batch, return_exceptions=True))
            pid = int(writer._connection.get_server_pid())  # type: ignore[attr-defined]
            await _when_sleeping(database, pid)
            await database.run(lambda c: c.exec_driver_sql(f"SELECT pg_terminate_backend({pid})"))
            outcomes = await pending
    try:
        # An I/O error or a lost connection is the store being away: WriteFailed, and StoreUnavailable (HTTP 503).
        assert [type(outcome) for outcome in outcomes] == [WriteUnavailable] * 5
        assert [await count(database, table) for table in (messages, payloads, evidence, transitions)] == [1] * 4
        assert isinstance(await writer.submit(insert("after@partner")), Inserted)
        assert await count(database, messages) == 2
    finally:
        await writer.close()


async def _when_sleeping(database: Database, pid: int) -> None:
    """Until the PostgreSQL backend pid is inside pg_sleep (the batch's statement is running)."""
    query = f"SELECT wait_event FROM pg_stat_activity WHERE pid = {pid}"  # noqa: S608 (an int)
    async with asyncio.timeout(10):
        while await database.run(lambda c: c.exec_driver_sql(query).scalar()) != "PgSleep":
            await asyncio.sleep(0.02)


async def test_a_caller_cancelled_while_waiting_does_not_stop_its_operation(writer: Writer, database: Database) -> None:
    """A cancelled caller's operation still commits (as after a crash following the commit) and the writer goes on."""
    waiting = asyncio.ensure_future(writer.submit(insert("cancelled@partner")))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert isinstance(await writer.submit(insert("next@partner")), Inserted)
    assert await count(database, messages) == 2


async def test_short_content_is_held_inline_and_long_content_goes_to_a_durable_file(tmp_path: Path) -> None:
    """FileStore.take keeps a stream within the limit in memory and writes a longer one to a file, hashed either way."""
    files = FileStore(tmp_path)

    async def stream(*parts: bytes) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    short = await files.take(stream(b"ab", b"cd"), inline_limit=4)
    assert (short.data, short.path, short.size) == (b"abcd", None, 4)
    long = await files.take(stream(b"ab", b"cd", b"e"), inline_limit=4)
    assert long.data is None and long.path is not None and long.size == 5
    assert b"".join([chunk async for chunk in files.read(long.path)]) == b"abcde"
    assert long.sha256 == "36bbe50ed96841d10443bcb670d6554f0a34b761be67ec9c4a8ad2c0c44ca42c"


async def test_a_prepared_file_past_the_inline_limit_is_moved_into_place_and_a_short_one_inlined(
    tmp_path: Path,
) -> None:
    """take() adopts a PreparedFile longer than the inline limit (renamed, not copied) and inlines a short one."""
    files = FileStore(tmp_path)
    long_path, short_path = files.scratch / "long.prepared", files.scratch / "short.prepared"
    long_path.write_bytes(b"x" * 10)
    short_path.write_bytes(b"abc")
    long = await files.take(PreparedFile(long_path, 10, "not-recomputed"), inline_limit=4)
    assert (long.path is not None, long.sha256, long_path.exists()) == (True, "not-recomputed", False)
    assert long.path is not None and (tmp_path / long.path).read_bytes() == b"x" * 10
    short = await files.take(PreparedFile(short_path, 3, "unused"), inline_limit=4)
    assert (short.data, short.path) == (b"abc", None)


async def test_a_stored_file_taken_again_is_linked_and_copied_where_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """take() of a StoredFileRef of the same store gives the file a second name (same inode); where the file
    system refuses links it copies the bytes; past the limit it refuses either way."""
    files = FileStore(tmp_path)
    first = await files.write(_stream(b"y" * 10))
    ref = StoredFileRef(files, first.path, first.size, first.sha256)
    linked = await files.take(ref, inline_limit=4)
    assert linked.path is not None and linked.path != first.path
    assert (tmp_path / linked.path).stat().st_ino == (tmp_path / first.path).stat().st_ino
    with pytest.raises(FileTooLarge):
        await files.take(ref, inline_limit=4, limit=9)

    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    copied = await files.take(ref, inline_limit=4)
    assert copied.path is not None and copied.sha256 == first.sha256
    assert (tmp_path / copied.path).stat().st_ino != (tmp_path / first.path).stat().st_ino
    assert (tmp_path / copied.path).read_bytes() == b"y" * 10
    assert (await files.take(ref, inline_limit=64)).data == b"y" * 10  # short: inlined as before


async def _stream(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_writer_outcomes_match_what_sqlalchemy_reads(writer: Writer, database: Database) -> None:
    """The message a claim answers equals the row read back through SQLAlchemy, datetimes included."""
    await writer.submit(insert("same@ap", Direction.OUT))
    claimed = await writer.submit(Claim("same@ap", T0 + timedelta(microseconds=123), T0 + timedelta(seconds=9)))
    assert isinstance(claimed, StoredMessage)
    row = await database.run(lambda c: c.execute(select(messages).where(messages.c.id == claimed.pk)).one())
    assert (row.updated_at, row.lease_until, row.attempts) == (claimed.updated_at, claimed.lease_until, 1)


@pytest.mark.parametrize("migrated_database_url", ["postgresql"], indirect=True)  # SQLite's writer: a thread
async def test_an_unexpected_driver_error_fails_its_batch_and_the_writer_goes_on(
    migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: an exception of a kind the writer does not expect fails only its batch's callers; the next
    operation is committed (before, the writer's task died and every later caller waited for ever)."""
    writer = open_writer(migrated_database_url, instance="w")
    await writer.start()
    arguments = writer._arguments  # type: ignore[attr-defined]
    calls: list[int] = []

    def broken_twice(ops: list[Any]) -> Any:
        calls.append(len(ops))
        if len(calls) == 1:
            raise RuntimeError("a driver surprise")
        if len(calls) == 2:  # what a connection left mid-operation by a stopped server raised in an outage test
            raise InternalClientError("cannot switch to state 12; another operation (2) is in progress")
        return arguments(ops)

    monkeypatch.setattr(writer, "_arguments", broken_twice)
    try:
        (outcome,) = await writer.submit_all([insert("surprise@partner")], return_exceptions=True)
        assert isinstance(outcome, WriteFailed) and "a driver surprise" in str(outcome)
        assert not isinstance(outcome, WriteUnavailable)  # unknown: a 500, not "try again"
        (outcome,) = await writer.submit_all([insert("mid-operation@partner")], return_exceptions=True)
        assert isinstance(outcome, WriteUnavailable), outcome  # the API answers 503 with Retry-After
        assert isinstance(await asyncio.wait_for(writer.submit(insert("after@partner")), 30), Inserted)
    finally:
        await writer.close()
