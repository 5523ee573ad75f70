"""One writer per database that group-commits: whatever is pending goes into one transaction with one sync.

Callers ``await writer.submit(op)`` (the operations are in ``accesspoint.store.ops``). While the writer commits a
batch, new operations queue up; the next batch takes them all, so under load one disk flush covers many messages
and with a single caller the writer is one commit per operation, as before. A caller's future is resolved only
after its batch's commit returned, so whatever it answers on the strength of it (202, a signed receipt) is
durable first.

Failures:
- an operation whose statement fails (a bug, a constraint the caller should have kept): the batch is rolled back
  and each of its operations runs again alone, so only the failing one fails (``WriteFailed``);
- the commit itself fails (disk full, I/O error, the connection lost): every caller of the batch gets
  ``WriteFailed`` and nothing of the batch is kept (the database's own atomicity);
- a caller that is cancelled while waiting does not stop its operation (it is queued and runs like the others),
  like a crash right after the commit, which the store's recovery rules cover.

``SqliteWriter`` runs one thread with its own sqlite3 connection: the statements of a batch run back to back in
that thread, with no hop per statement or per message; the loop is woken once per batch. ``PostgresWriter``
(``accesspoint.store.writer_pg``) sends each batch as one statement over one asyncpg connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, overload

from sqlalchemy.engine import make_url

from accesspoint.store.codec import (
    INSERT_COLUMNS,
    MESSAGE_COLUMNS,
    MessageRows,
    from_sqlite_datetime,
    json_text,
    new_message,
    sqlite_datetime,
    utc,
)
from accesspoint.store.db import Durability, StoreUnavailable, sqlite_pragmas, transient
from accesspoint.store.ops import (
    ALSO_COLUMNS,
    Also,
    Claim,
    Duplicate,
    EvidenceRow,
    Insert,
    Inserted,
    Keep,
    Move,
    Op,
    Outcome,
)
from accesspoint.store.records import Evidence, StoredMessage
from accesspoint.store.states import INITIAL, Direction, MessageState

# At most this many operations per batch (a transaction's statements and its memory stay bounded).
MAX_BATCH = 256
# Content up to this many bytes is kept in its database row; longer content goes to the file store. A row commits
# with its batch for no extra sync, where a file costs two fsyncs (file and folder) of its own.
INLINE_LIMIT = 256 * 1024


class WriteFailed(Exception):
    """The store could not commit the operation; nothing of it was kept. Worth retrying later."""


class WriteUnavailable(WriteFailed, StoreUnavailable):
    """The write failed because the database is away or busy (not a refused statement): callers answer "try again
    later" (StoreUnavailable) as for a read that could not reach it."""


@dataclass(slots=True)
class _Entry:
    op: Op
    future: asyncio.Future[Any]
    group: int  # operations submitted together share a group and a batch


def open_writer(url: str, *, instance: str, durability: Durability = Durability.POWER_LOSS) -> Writer:
    """The writer for the database at a SQLAlchemy URL (not started yet)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("the store needs a SQLite file, not an in-memory database")
        return SqliteWriter(Path(parsed.database), instance=instance, durability=durability)
    from accesspoint.store.writer_pg import PostgresWriter

    return PostgresWriter(url, instance=instance)


class Writer(ABC):
    """The queue, the batches and the callers' futures; a backend commits the batches (``_commit``)."""

    def __init__(self, *, instance: str, max_batch: int = MAX_BATCH) -> None:
        self.instance = instance
        self.max_batch = max_batch
        self._pending: deque[_Entry] = deque()
        self._groups = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Counters for benchmarks and tests: batches committed, operations in them.
        self.batches = 0
        self.operations = 0

    @overload
    async def submit(self, op: Insert) -> Inserted | Duplicate: ...
    @overload
    async def submit(self, op: Move | Claim) -> StoredMessage | None: ...
    @overload
    async def submit(self, op: Keep) -> tuple[Evidence, ...]: ...
    async def submit(self, op: Op) -> Outcome:
        """Commit op with whatever else is pending; its outcome once the batch is durable (WriteFailed if not)."""
        outcome: Outcome = await self._enqueue([op])[0]
        return outcome

    async def submit_all(self, ops: Sequence[Op], *, return_exceptions: bool = False) -> list[Outcome | BaseException]:
        """Commit ops in one batch (one transaction); their outcomes. WriteFailed for the first that failed, or with
        ``return_exceptions`` in the place of each failed one's outcome."""
        return list(await asyncio.gather(*self._enqueue(ops), return_exceptions=return_exceptions))

    def _enqueue(self, ops: Sequence[Op]) -> list[asyncio.Future[Any]]:
        if self._closed or self._loop is None:
            raise WriteFailed("the store's writer is not running")
        if len({op.key for op in ops}) < len(ops):
            raise ValueError("operations submitted together must each touch another message")
        self._groups += 1
        entries = [_Entry(op, self._loop.create_future(), self._groups) for op in ops]
        self._add(entries)
        return [entry.future for entry in entries]

    def _take(self) -> list[_Entry]:
        """The next batch: pending entries in order, whole groups, up to max_batch (a group may exceed it)."""
        batch: list[_Entry] = []
        while self._pending:
            entry = self._pending[0]
            if len(batch) >= self.max_batch and entry.group != batch[-1].group:
                break
            batch.append(self._pending.popleft())
        return batch

    def _settle(self, batch: Sequence[_Entry], outcomes: Sequence[Outcome | BaseException]) -> None:
        """On the loop: hand each caller its outcome (callers that gave up are skipped)."""
        self.batches += 1
        self.operations += len(batch)
        for entry, outcome in zip(batch, outcomes, strict=True):
            if entry.future.done():
                continue
            if isinstance(outcome, BaseException):
                kind = WriteUnavailable if transient(outcome) else WriteFailed
                failure = kind(f"{type(outcome).__name__}: {outcome}")
                failure.__cause__ = outcome
                entry.future.set_exception(failure)
            else:
                entry.future.set_result(outcome)

    @abstractmethod
    def _add(self, entries: list[_Entry]) -> None:
        """Queue entries and wake the committer."""

    @abstractmethod
    async def start(self) -> None:
        """Connect and begin taking operations."""

    @abstractmethod
    async def close(self) -> None:
        """Commit what is queued, then stop and disconnect."""


class SqliteWriter(Writer):
    """The SQLite writer: one thread, one sqlite3 connection, ``BEGIN IMMEDIATE`` ... ``COMMIT`` per batch."""

    def __init__(
        self,
        path: Path,
        *,
        instance: str,
        durability: Durability = Durability.POWER_LOSS,
        max_batch: int = MAX_BATCH,
        connect: Callable[..., sqlite3.Connection] = sqlite3.connect,
    ) -> None:
        super().__init__(instance=instance, max_batch=max_batch)
        self.path = path
        self.durability = durability
        self._connect = connect  # tests pass a connection factory that fails on purpose
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"store-writer:{path.name}", daemon=True)
        self._statements = _SqliteStatements(instance)

    async def start(self) -> None:
        """Start the writer's thread (its connection is opened there, on the first batch)."""
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def close(self) -> None:
        """Commit what is queued, then stop the thread and close its connection."""
        if self._closed:
            return
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)

    def _add(self, entries: list[_Entry]) -> None:
        with self._wake:
            self._pending.extend(entries)
            self._wake.notify()

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        assert self._loop is not None
        try:
            while True:
                with self._wake:
                    while not self._pending and not self._closed:
                        self._wake.wait()
                    batch = self._take()
                if not batch:
                    return  # closed and drained
                try:
                    if connection is None:
                        connection = self._open()
                    outcomes = self._commit(connection, [entry.op for entry in batch])
                except BaseException as exc:  # the thread must outlive any failure
                    outcomes = [exc] * len(batch)
                if isinstance(outcomes, _Broken):
                    # The connection may be unusable (I/O error, disk full): a new one for the next batch.
                    _close_quietly(connection)
                    connection = None
                    outcomes = outcomes.outcomes
                self._loop.call_soon_threadsafe(self._settle, batch, outcomes)
        finally:
            _close_quietly(connection)

    def _open(self) -> sqlite3.Connection:
        connection = self._connect(str(self.path), isolation_level=None, check_same_thread=False)
        for pragma in sqlite_pragmas(self.durability):
            connection.execute(f"PRAGMA {pragma}")
        return connection

    def _commit(self, connection: sqlite3.Connection, ops: list[Op]) -> list[Outcome | BaseException] | _Broken:
        statements = self._statements
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:  # locked past the busy timeout, or the file unusable
            return _Broken([exc] * len(ops))
        try:
            outcomes: list[Outcome | BaseException] = [statements.apply(connection, op) for op in ops]
        except Exception:
            _rollback(connection)
            if len(ops) == 1:
                raise
            return [self._alone(connection, op) for op in ops]
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(connection)
            return _Broken([exc] * len(ops))
        return outcomes

    def _alone(self, connection: sqlite3.Connection, op: Op) -> Outcome | BaseException:
        """One operation in a transaction of its own (after its batch failed on some statement)."""
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                outcome = self._statements.apply(connection, op)
            except BaseException:
                _rollback(connection)
                raise
            connection.execute("COMMIT")
        except Exception as exc:  # handed to its caller
            _rollback(connection)
            return exc
        return outcome


@dataclass(slots=True)
class _Broken:
    """A batch whose commit failed: every caller gets the error, and the connection is replaced."""

    outcomes: list[Outcome | BaseException]


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        # On failure the transaction is gone with the connection, which is replaced after a failed commit.
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


def _close_quietly(connection: sqlite3.Connection | None) -> None:
    if connection is not None:
        with contextlib.suppress(sqlite3.Error):
            connection.close()


class _SqliteStatements:
    """The SQL of each operation on SQLite. Rows written are not read back: an insert needs only its new id, and
    a move's result follows from the row it compared against (``Move.moved``)."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.rows = MessageRows(sqlite_datetime, from_sqlite_datetime)
        # Table and column names come from the schema; every value is a parameter.
        every = ", ".join(MESSAGE_COLUMNS)
        self.insert = (
            f"INSERT INTO messages ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"  # noqa: S608
            " ON CONFLICT (direction, message_id) DO NOTHING RETURNING id"
        )
        self.existing = f"SELECT {every} FROM messages WHERE direction = ? AND message_id = ?"  # noqa: S608
        self.move = (
            "UPDATE messages SET state = ?, version = version + 1, updated_at = ?, next_attempt_at = ?,"
            " lease_owner = ?, lease_until = ?, attempts = attempts + ? WHERE id = ? AND state = ? AND version = ?"
        )
        self.move_with_error = self.move.replace(
            "attempts = attempts + ?", "attempts = attempts + ?, last_error_code = ?, last_error_detail = ?"
        )
        self.claimable = (
            f"SELECT {every} FROM messages WHERE direction = 'out' AND message_id = ? AND ("  # noqa: S608
            f"state = '{MessageState.SUBMITTED.value}'"
            f" OR (state = '{MessageState.AWAITING_RECEIPT.value}' AND next_attempt_at <= ?)"
            f" OR (state = '{MessageState.SENDING.value}' AND (lease_until IS NULL OR lease_until < ?)))"
        )
        self.payload_insert = _insert_sql(
            "payloads", ("message", "content_id", "mime_type", "properties", "size", "sha256", "path", "data")
        )
        self.evidence_insert = _insert_sql(
            "evidence",
            ("direction", "message_id", "kind", "size", "sha256", "path", "data", "created_at", "retain_until"),
        )
        self.audit = _insert_sql("transitions", ("message", "from_state", "to_state", "at", "actor", "detail"))
        self.also = {table: _insert_sql(table, names) for table, names in ALSO_COLUMNS.items()}

    def apply(self, connection: sqlite3.Connection, op: Op) -> Outcome:
        if isinstance(op, Insert):
            return self._insert(connection, op)
        if isinstance(op, Move):
            return self._move(connection, op)
        if isinstance(op, Claim):
            return self._claim(connection, op)
        return self._keep(connection, op.direction, op.message_id, op.evidence, op.now, returning=True)

    def _insert(self, connection: sqlite3.Connection, op: Insert) -> Inserted | Duplicate:
        state = INITIAL[op.direction]
        size = sum(p.content.size for p in op.payloads)
        row = connection.execute(self.insert, self.rows.insert_values(op, state, size)).fetchone()
        if row is None:
            found = connection.execute(self.existing, op.key).fetchone()
            return Duplicate(None if found is None else self.rows.message(found))
        pk = row[0]
        if op.payloads:
            connection.executemany(
                self.payload_insert,
                [
                    (pk, p.content_id, p.mime_type, json_text(p.properties), p.content.size, p.content.sha256,
                     p.content.path, p.content.data)
                    for p in op.payloads
                ],
            )  # fmt: skip
        self._audit(connection, pk, None, state, op.now, None)
        self._keep(connection, op.direction, op.info.message_id, op.evidence, op.now)
        self._also(connection, op.also)
        return Inserted(new_message(pk, op, state, size))

    def _move(self, connection: sqlite3.Connection, op: Move) -> StoredMessage | None:
        message, dt = op.message, sqlite_datetime
        values: tuple[Any, ...] = (
            op.target.value, dt(op.now), dt(op.next_attempt_at), op.lease_owner, dt(op.lease_until), op.attempts_add,
        )  # fmt: skip
        statement = self.move
        if op.error is not None:
            values, statement = (*values, *op.error), self.move_with_error
        changed = connection.execute(statement, (*values, message.pk, message.state.value, message.version)).rowcount
        self._keep(connection, message.direction, message.message_id, op.evidence, op.now)
        if changed != 1:
            return None
        self._audit(connection, message.pk, message.state, op.target, op.now, op.detail)
        self._also(connection, op.also)
        return op.moved()

    def _claim(self, connection: sqlite3.Connection, op: Claim) -> StoredMessage | None:
        now = sqlite_datetime(op.now)
        row = connection.execute(self.claimable, (op.message_id, now, now)).fetchone()
        if row is None:
            return None
        message = self.rows.message(row)
        detail = None
        if message.state is MessageState.SENDING:
            detail = f"lease of {message.lease_owner} expired at {message.lease_until}"
        move = Move(
            message, MessageState.SENDING, op.now, lease_owner=self.instance, lease_until=op.lease_until,
            attempts_add=1, detail=detail,
        )  # fmt: skip
        return self._move(connection, move)

    def _keep(
        self,
        connection: sqlite3.Connection,
        direction: Direction,
        message_id: str,
        rows: tuple[EvidenceRow, ...],
        now: datetime,
        *,
        returning: bool = False,
    ) -> tuple[Evidence, ...]:
        if not rows:
            return ()
        created = sqlite_datetime(now)
        values = [
            (direction.value, message_id, row.kind.value, row.content.size, row.content.sha256, row.content.path,
             row.content.data, created, sqlite_datetime(row.retain_until))
            for row in rows
        ]  # fmt: skip
        if not returning:
            connection.executemany(self.evidence_insert, values)
            return ()
        kept = []
        for row, value in zip(rows, values, strict=True):
            pk = connection.execute(self.evidence_insert, value).lastrowid
            assert pk is not None
            content = row.content
            kept.append(
                Evidence(pk, direction, message_id, row.kind, content.size, content.sha256, content.path, utc(now),
                         utc(row.retain_until))
            )  # fmt: skip
        return tuple(kept)

    def _also(self, connection: sqlite3.Connection, rows: tuple[Also, ...]) -> None:
        """The rows an insert or move writes when it happens (events, route targets, idempotency keys)."""
        for row in rows:
            names = ALSO_COLUMNS[row.table]
            values = [_sqlite_value(row.values[name]) for name in names]
            connection.execute(self.also[row.table], values)

    def _audit(
        self,
        connection: sqlite3.Connection,
        pk: int,
        source: MessageState | None,
        target: MessageState,
        now: datetime,
        detail: str | None,
    ) -> None:
        source_value = None if source is None else source.value
        values = (pk, source_value, target.value, sqlite_datetime(now), self.instance, detail)
        connection.execute(self.audit, values)


def _sqlite_value(value: Any) -> Any:
    return sqlite_datetime(value) if isinstance(value, datetime) else value


def _insert_sql(table: str, names: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608
