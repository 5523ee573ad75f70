"""The durable state of the MSH: messages, payloads, evidence and the audit, moved only by compare-and-set.

Recovery rules (what a restart, or another instance, does with what a crash left behind):

- A message row and its payload rows are inserted in one transaction, after the payload files are durable;
  a crash before the commit leaves only orphan files, never a row without its payload.
- ``submitted``: never picked up, or picked up by a worker that died before committing its claim. It is
  due at once; ``recoverable`` lists it and any worker may ``claim`` it.
- ``sending`` with ``lease_until`` in the past: its worker died (or stalled) mid-send. ``claim`` takes it
  over (``sending -> sending``, attempts + 1). The partner may thus get the message twice; its duplicate
  elimination on MessageId answers with the same receipt, so it is still delivered once.
- ``awaiting_receipt`` with ``next_attempt_at`` in the past: reception awareness retries it.
- A queue entry can be lost while its message still needs sending (the in-process queue of a process that
  died, an entry a dead instance had taken): ``recoverable(idle=...)`` finds what is due and untouched for
  that long, and the server queues it again.
- Every transition is ``UPDATE ... WHERE id = ? AND state = ? AND version = ?``; the loser of a race, and a
  worker whose lease was taken over, matches no row and gets ``None``, so it must not act.
- Incoming duplicates are found by the unique (direction, message_id) constraint, whoever inserts first;
  the second gets ``Reception(duplicate=True)`` with the receipt stored for the first, if any. If the first
  crashed before storing its receipt, ``receipt`` is None and the caller builds and stores a new one.
- Purges delete rows first and files after the commit: a crash in between leaves orphan files, never a row
  that points at a missing file.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Row,
    Select,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import BindParameter

from accesspoint.store import schema
from accesspoint.store.codec import new_message
from accesspoint.store.db import Database, Durability, upgrade_to_head
from accesspoint.store.files import Content, FileStore, StoredFileRef
from accesspoint.store.hooks import TransactionHook, committed_all, rows_of, write_also
from accesspoint.store.ops import Claim, Duplicate, EvidenceRow, Insert, Inserted, Keep, Move, PayloadRow
from accesspoint.store.records import (
    EndToEnd,
    Evidence,
    EvidenceKind,
    MessageInfo,
    NewEvidence,
    NewPayload,
    PurgeReport,
    Reception,
    Retention,
    StoredMessage,
    StoredPayload,
    Transition,
)
from accesspoint.store.shield import Shield
from accesspoint.store.states import FINAL, INITIAL, Direction, MessageState, check_transition
from accesspoint.store.writer import INLINE_LIMIT, WriteFailed, Writer, open_writer

M = schema.messages


@dataclass(frozen=True, slots=True)
class MessageDetails:
    """A message with everything a reader shows of it, read in one transaction."""

    message: StoredMessage
    payloads: list[StoredPayload]  # without inline bytes: read() fetches them
    history: list[Transition]
    evidence: list[Evidence]
    end_to_end: EndToEnd | None
    raw_message: Evidence | None  # the first raw-message evidence: the envelope received or the header submitted
    raw_inline: bytes | None  # its bytes when kept in the database (else read() them from its file)


@dataclass(frozen=True, slots=True)
class Pending:
    """Messages waiting in one state: how many, and when the oldest of them was stored."""

    count: int
    oldest: datetime | None


# Outgoing messages not yet delivered or failed, incoming ones not yet handed to the backend.
PENDING_STATES = (MessageState.SUBMITTED, MessageState.SENDING, MessageState.AWAITING_RECEIPT, MessageState.RECEIVED)
P = schema.payloads
E = schema.evidence
T = schema.transitions

# Rows handled per statement by purges, so one purge never holds a long transaction.
PURGE_BATCH = 500


_Args = ParamSpec("_Args")
_Result = TypeVar("_Result")


def _shielded(
    method: Callable[Concatenate[MessageStore, _Args], Coroutine[Any, Any, _Result]],
) -> Callable[Concatenate[MessageStore, _Args], Coroutine[Any, Any, _Result]]:
    """Run a database operation to its end even if the caller is cancelled (see Shield for why)."""

    @functools.wraps(method)
    async def run(store: MessageStore, /, *args: _Args.args, **kwargs: _Args.kwargs) -> _Result:
        return await store._shield.run(method(store, *args, **kwargs))

    return run


class DuplicateMessage(Exception):
    """An outgoing message with that MessageId is already stored."""


class MessageStore:
    """Messages, payloads and evidence in one database (short content inline) and one file store (the rest).

    Every write goes through the database's group-committing writer (``accesspoint.store.writer``); reads go
    through SQLAlchemy.
    """

    def __init__(
        self,
        database: Database,
        files: FileStore,
        writer: Writer,
        *,
        instance: str = "local",
        inline_limit: int = INLINE_LIMIT,
    ) -> None:
        self.db = database
        self.files = files
        self.writer = writer
        self.instance = instance
        self.inline_limit = inline_limit
        self._shield = Shield()

    @classmethod
    async def open(
        cls,
        url: str,
        file_root: Path,
        *,
        instance: str = "local",
        migrate: bool = True,
        durability: Durability = Durability.POWER_LOSS,
        inline_limit: int = INLINE_LIMIT,
    ) -> MessageStore:
        """Connect to url (running the migrations first unless told not to) with files under file_root."""
        if migrate:
            await upgrade_to_head(url)
        files = FileStore(file_root, fsync=durability is Durability.POWER_LOSS)
        database = Database(url, durability=durability)
        writer = open_writer(url, instance=instance, durability=durability)
        await writer.start()
        return cls(database, files, writer, instance=instance, inline_limit=inline_limit)

    async def close(self) -> None:
        """Let the operations still running finish, then close the writer and the database connections."""
        await self._shield.drain()
        await self.writer.close()
        await self.db.dispose()

    # --- inserting ---------------------------------------------------------------------------------------

    async def submit(
        self,
        info: MessageInfo,
        payloads: Sequence[NewPayload],
        *,
        now: datetime,
        evidence: Sequence[NewEvidence] = (),
        hooks: Sequence[TransactionHook] = (),
    ) -> StoredMessage:
        """Store an outgoing message as ``submitted`` with its evidence and what hooks write, in one transaction.

        DuplicateMessage if its MessageId is taken, or a hook's row collides (an idempotency key already used).
        """
        # No look-up first: duplicates are a backend's mistake, so the unique constraint alone catches them.
        try:
            outcome = await self._insert(Direction.OUT, info, payloads, now=now, evidence=evidence, hooks=hooks)
        except WriteFailed as failure:
            if _unique_violation(failure):
                raise DuplicateMessage(info.message_id) from failure
            raise
        if isinstance(outcome, Duplicate):
            raise DuplicateMessage(info.message_id)
        return outcome.message

    async def receive(
        self,
        info: MessageInfo,
        payloads: Sequence[NewPayload],
        *,
        now: datetime,
        evidence: Sequence[NewEvidence] = (),
        hooks: Sequence[TransactionHook] = (),
    ) -> Reception:
        """Store an incoming message as ``received`` with its evidence (and what hooks write), or report it as a
        duplicate with its stored receipt (then nothing is stored: the caller decides what a repetition keeps)."""
        outcome = await self._insert(Direction.IN, info, payloads, now=now, evidence=evidence, hooks=hooks)
        if isinstance(outcome, Inserted):
            return Reception(outcome.message, duplicate=False)
        # Another instance's insert may have committed after the writer's snapshot: then it is read here.
        existing = outcome.existing or await self.get(Direction.IN, info.message_id)
        if existing is None:
            raise WriteFailed(f"{info.message_id} was refused as a duplicate but is not stored")
        receipts = await self.evidence(Direction.IN, info.message_id, EvidenceKind.OUR_RECEIPT)
        return Reception(existing, duplicate=True, receipt=receipts[-1] if receipts else None)

    async def _insert(
        self,
        direction: Direction,
        info: MessageInfo,
        payloads: Sequence[NewPayload],
        *,
        now: datetime,
        evidence: Sequence[NewEvidence],
        hooks: Sequence[TransactionHook] = (),
    ) -> Inserted | Duplicate:
        # The message, its payloads and its evidence in one operation of the writer: none is ever kept without the
        # others, and the batch's one commit covers them.
        taken: list[Content] = []
        try:
            rows = []
            for payload in payloads:
                taken.append(content := await self._take(payload.chunks))
                rows.append(PayloadRow(payload.content_id, payload.mime_type, content, dict(payload.properties)))
        except BaseException:
            await self._discard(taken)
            raise
        kept = await self._evidence_rows(evidence, now, taken)
        op = Insert(direction, info, now, tuple(rows), kept)
        if hooks:
            # What the hooks write is built from the message as the insert will leave it (its pk not known yet).
            written = new_message(0, op, INITIAL[direction], sum(row.content.size for row in rows))
            try:
                op = replace(op, also=rows_of(hooks, written))
            except BaseException:
                await self._discard(taken)
                raise
        outcome = await self._write(op, taken)
        if isinstance(outcome, Duplicate):
            await self._discard(taken)
        else:
            committed_all(hooks)
        return outcome

    @overload
    async def _write(self, op: Insert, taken: Sequence[Content]) -> Inserted | Duplicate: ...
    @overload
    async def _write(self, op: Move, taken: Sequence[Content]) -> StoredMessage | None: ...
    @overload
    async def _write(self, op: Keep, taken: Sequence[Content]) -> tuple[Evidence, ...]: ...
    async def _write(self, op: Insert | Move | Keep, taken: Sequence[Content]) -> Any:
        """Submit op to the writer; the files taken for it are deleted when it is known not to be kept. A caller
        cancelled while waiting leaves them: its operation stays queued and commits like any other (no shield is
        needed, the writer finishes what it was given)."""
        try:
            return await self.writer.submit(op)
        except WriteFailed:
            await self._discard(taken)
            raise

    async def _take(self, chunks: AsyncIterable[bytes]) -> Content:
        return await self.files.take(chunks, inline_limit=self.inline_limit)

    async def _evidence_rows(
        self, evidence: Sequence[NewEvidence], now: datetime, taken: list[Content]
    ) -> tuple[EvidenceRow, ...]:
        """Each piece of evidence's stream taken into content (appended to taken); on failure, all taken is dropped."""
        rows = []
        try:
            for item in evidence:
                taken.append(content := await self._take(item.chunks))
                rows.append(EvidenceRow(item.kind, content, now + item.retain_for))
        except BaseException:
            await self._discard(taken)
            raise
        return tuple(rows)

    async def _discard(self, contents: Sequence[Content]) -> None:
        """Delete the files of content that was not kept (short content was only in memory)."""
        for content in contents:
            if content.path is not None:
                await self.files.delete(content.path)

    # --- reading -----------------------------------------------------------------------------------------

    @_shielded
    async def get(self, direction: Direction, message_id: str) -> StoredMessage | None:
        """The message with that MessageId in that direction, if stored."""
        parameters = {"b_direction": direction.value, "b_message_id": message_id}
        row = await self.db.run(lambda connection: connection.execute(_BY_MESSAGE_ID, parameters).one_or_none())
        return None if row is None else _message(row)

    @_shielded
    async def search(
        self,
        *,
        direction: Direction | None = None,
        state: MessageState | None = None,
        pmode_id: str | None = None,
        conversation_id: str | None = None,
        ref_to_message_id: str | None = None,
        after_pk: int = 0,
        limit: int = 100,
        only: Mapping[str, Collection[str]] | None = None,
    ) -> list[StoredMessage]:
        """Messages matching every filter given, oldest first, for pages of at most limit rows.

        ``only`` narrows to what a scoped caller may see: messages whose ``pmode`` (P-Mode id) or ``party`` (From
        or To, as stored) is among the values given for that kind; any one kind matching is enough, a kind the
        store does not know matches nothing, and an empty mapping nothing at all. None: no narrowing.
        """
        filters = {
            "b_direction": direction,
            "b_state": state,
            "b_pmode_id": pmode_id,
            "b_conversation_id": conversation_id,
            "b_ref_to_message_id": ref_to_message_id,
        }
        given = {name: str(value) for name, value in filters.items() if value is not None}
        kinds = None if only is None else tuple(sorted(only))
        statement = _search_statement(frozenset(given), kinds)
        parameters: dict[str, Any] = {**given, "b_after": after_pk, "b_limit": limit}
        for kind in kinds or ():
            parameters[f"b_only_{kind}"] = sorted(only[kind]) if only is not None else []
        rows = await self._all(statement, parameters)
        return [_message(row) for row in rows]

    @_shielded
    async def pending(self) -> dict[MessageState, Pending]:
        """How many messages wait in each state that is not yet final, and since when the oldest has (for the
        metrics and the status; the state index finds the rows, which are few unless something is stuck)."""
        waiting = [state.value for state in PENDING_STATES]
        query = (
            select(M.c.state, func.count(), func.min(M.c.created_at)).where(M.c.state.in_(waiting)).group_by(M.c.state)
        )
        found = {state: Pending(0, None) for state in PENDING_STATES}
        for state, count, oldest in (tuple(row) for row in await self._all(query)):
            found[MessageState(state)] = Pending(int(count), oldest)
        return found

    @_shielded
    async def payloads(self, message: StoredMessage) -> list[StoredPayload]:
        """The payloads of a message in the order they were submitted (empty once purged)."""
        return [_payload(row) for row in await self._all(_PAYLOADS, {"b_message": message.pk})]

    @_shielded
    async def visible(
        self, message_id: str, directions: Sequence[Direction], visible: Callable[[StoredMessage], bool]
    ) -> StoredMessage | None:
        """The first message with that MessageId in these directions (in their order) that ``visible`` admits."""
        return await self.db.run(lambda connection: _first_visible(connection, message_id, directions, visible))

    @_shielded
    async def visible_payload(
        self,
        message_id: str,
        directions: Sequence[Direction],
        visible: Callable[[StoredMessage], bool],
        content_id: str,
    ) -> tuple[StoredMessage, StoredPayload | None] | None:
        """As ``visible``, with the message's payload of that Content-ID (inline bytes included), in one
        transaction."""

        def read(connection: Connection) -> tuple[StoredMessage, StoredPayload | None] | None:
            message = _first_visible(connection, message_id, directions, visible)
            if message is None:
                return None
            row = connection.execute(_PAYLOAD_BY_CID, {"b_message": message.pk, "b_content_id": content_id}).first()
            return message, None if row is None else _payload(row)

        return await self.db.run(read)

    @_shielded
    async def details(
        self, message_id: str, directions: Sequence[Direction], visible: Callable[[StoredMessage], bool]
    ) -> MessageDetails | None:
        """The first message with that MessageId in these directions (in their order) that ``visible`` admits, with
        its payloads, history, evidence, end-to-end answer and the inline bytes of its first raw message: one
        transaction (``visible`` runs in it, so it must be quick and pure)."""

        def read(connection: Connection) -> MessageDetails | None:
            message = _first_visible(connection, message_id, directions, visible)
            if message is None:
                return None
            keys = {"b_direction": message.direction.value, "b_message_id": message_id}
            payloads = [_payload(row) for row in connection.execute(_PAYLOAD_LIST, {"b_message": message.pk})]
            history = [_transition(row) for row in connection.execute(_HISTORY, {"b_message": message.pk})]
            evidence: list[Evidence] = []
            first_raw, raw = None, None
            for row in connection.execute(_EVIDENCE_WITH_RAW, {**keys, "b_raw": EvidenceKind.RAW_MESSAGE.value}):
                evidence.append(item := _evidence(row, "raw"))
                if first_raw is None and item.kind is EvidenceKind.RAW_MESSAGE:
                    first_raw, raw = item, row.raw
            answer = None
            if message.direction is Direction.OUT:
                found_answer = connection.execute(_END_TO_END, {"b_message_id": message_id}).one_or_none()
                answer = None if found_answer is None else _end_to_end(found_answer)
            return MessageDetails(message, payloads, history, evidence, answer, first_raw, raw)

        return await self.db.run(read)

    def read(self, item: StoredPayload | Evidence) -> AsyncIterator[bytes]:
        """The bytes of a payload or of evidence, in chunks (from its file, or the database where kept inline)."""
        if item.path is not None:
            return self.files.read(item.path)
        return self._read_inline(item)

    def reusable(self, payload: StoredPayload) -> AsyncIterable[bytes]:
        """A payload's bytes as a stream this store takes again without a copy (a second name for its file), e.g.
        for a router forwarding what it received unchanged; read anywhere else it is just the bytes."""
        if payload.path is None:
            return self._read_inline(payload)
        return StoredFileRef(self.files, payload.path, payload.size, payload.sha256)

    def payload_source(self, payload: StoredPayload) -> Callable[[], Iterator[bytes]]:
        """A payload's bytes as a re-openable blocking stream, for code that reads it in a worker thread."""
        if payload.path is None:
            data = payload.data or b""
            return lambda: iter((data,))
        return functools.partial(self.files.blocking_read, payload.path)

    async def _read_inline(self, item: StoredPayload | Evidence) -> AsyncIterator[bytes]:
        data = item.data if isinstance(item, StoredPayload) else None
        if data is None:
            table = P if isinstance(item, StoredPayload) else E
            query = select(table.c.data).where(table.c.id == item.pk)
            data = await self._shield.run(self.db.run(lambda connection: connection.execute(query).scalar_one()))
        if data:
            yield data

    @_shielded
    async def history(self, message: StoredMessage) -> list[Transition]:
        """The audit trail of a message, oldest first."""
        return [_transition(row) for row in await self._all(_HISTORY, {"b_message": message.pk})]

    # --- moving ------------------------------------------------------------------------------------------

    async def transition(
        self,
        message: StoredMessage,
        target: MessageState,
        *,
        now: datetime,
        next_attempt_at: datetime | None = None,
        error: tuple[str, str] | None = None,
        detail: str | None = None,
        evidence: Sequence[NewEvidence] = (),
        hooks: Sequence[TransactionHook] = (),
    ) -> StoredMessage | None:
        """Move message to target if it is still as read; None if another writer moved it first.

        IllegalTransition for a move the table does not allow. Moving to ``sending`` is ``claim``'s job,
        since it also takes the lease. ``error`` is an (ebMS code, detail) pair kept as the last error.
        ``evidence`` (a partner's receipt that settles the message) is kept in the same transaction, whether
        the move happens or not; ``hooks`` write only when it happens (the events a move causes).
        """
        check_transition(message.direction, message.state, target)
        if target is MessageState.SENDING:
            raise ValueError("use claim() to move a message to sending: it takes the lease")
        if error is not None:
            detail = detail or error[0]
        taken: list[Content] = []
        rows = await self._evidence_rows(evidence, now, taken)
        move = Move(message, target, now, next_attempt_at=next_attempt_at, error=error, detail=detail, evidence=rows)
        if hooks:
            try:
                move = replace(move, also=rows_of(hooks, move.moved()))
            except BaseException:
                await self._discard(taken)
                raise
        moved = await self._write(move, taken)
        if moved is not None:
            committed_all(hooks)
        return moved

    async def renew(self, message: StoredMessage, *, now: datetime, lease: timedelta) -> StoredMessage | None:
        """Extend this instance's lease of a message it claimed to now + lease (``sending -> sending``); None when it
        is no longer as read (its lease ran out and another worker took it over)."""
        if message.state is not MessageState.SENDING or message.lease_owner != self.instance:
            raise ValueError("only a message this instance holds in sending has a lease to renew")
        renewal = Move(
            message,
            MessageState.SENDING,
            now,
            lease_owner=self.instance,
            lease_until=now + lease,
            detail="lease renewed",
        )
        return await self.writer.submit(renewal)

    async def claim(self, message_id: str, *, now: datetime, lease: timedelta) -> StoredMessage | None:
        """Take an outgoing message for sending (attempts + 1, leased until now + lease) if it is due.

        Due means: ``submitted``; ``awaiting_receipt`` whose next attempt has come; or ``sending`` whose
        lease has run out. None when it is not due, unknown, or another worker claimed it first.
        """
        return await self.writer.submit(Claim(message_id, now, now + lease))

    @_shielded
    async def recoverable(self, *, now: datetime, limit: int = 1000, idle: timedelta | None = None) -> list[str]:
        """MessageIds of outgoing messages that are due and that some worker should claim (see the module).

        ``idle``: only those untouched for at least that long (a queue has lost them, not merely not reached
        them yet), for the periodic sweep.
        """
        due = select(M.c.message_id).where(M.c.direction == Direction.OUT.value, _due_clause(now))
        if idle is not None:
            due = due.where(M.c.updated_at <= now - idle)
        rows = await self._all(due.order_by(M.c.id).limit(limit))
        return [row.message_id for row in rows]

    # --- evidence ----------------------------------------------------------------------------------------

    async def add_evidence(
        self,
        direction: Direction,
        message_id: str,
        kind: EvidenceKind,
        chunks: AsyncIterable[bytes],
        *,
        now: datetime,
        retain_for: timedelta,
    ) -> Evidence:
        """Keep evidence (inline when short, else in the file store) until now + retain_for."""
        taken: list[Content] = []
        rows = await self._evidence_rows([NewEvidence(kind, chunks, retain_for)], now, taken)
        (kept,) = await self._write(Keep(direction, message_id, now, rows), taken)
        return kept

    @_shielded
    async def evidence(self, direction: Direction, message_id: str, kind: EvidenceKind | None = None) -> list[Evidence]:
        """The evidence kept for a message, oldest first, optionally of one kind."""
        parameters = {"b_direction": direction.value, "b_message_id": message_id}
        if kind is None:
            rows = await self._all(_EVIDENCE, parameters)
        else:
            rows = await self._all(_EVIDENCE_OF_KIND, {**parameters, "b_kind": kind.value})
        return [_evidence(row) for row in rows]

    # --- end-to-end answers ------------------------------------------------------------------------------

    @_shielded
    async def record_end_to_end(self, answer: EndToEnd, *, hooks: Sequence[TransactionHook] = ()) -> bool:
        """Keep the operator's verified answer to an outgoing message; False when one is kept already (the first
        answer stands: an operator answers a delivery once, a repeated reply changes nothing). ``hooks`` write
        with it, given the outgoing message it answers (when that is still stored)."""
        values = {
            "message_id": answer.message_id,
            "status": answer.status,
            "at": answer.at,
            "operator": answer.operator,
            "operator_subject": answer.operator_subject,
            "operator_sha256": answer.operator_sha256,
            "reply_message_id": answer.reply_message_id,
            "recipient": answer.recipient,
            "reasons": [list(reason) for reason in answer.reasons],
            "recorded_at": answer.recorded_at,
        }

        def record(connection: Connection) -> None:
            connection.execute(insert(schema.end_to_end), values)
            parameters = {"b_direction": Direction.OUT.value, "b_message_id": answer.message_id}
            answered = connection.execute(_BY_MESSAGE_ID, parameters).one_or_none()
            if answered is not None:
                write_also(connection, rows_of(hooks, _message(answered)))

        try:
            await self.db.run(record)
        except IntegrityError:
            return False
        committed_all(hooks)
        return True

    @_shielded
    async def end_to_end(self, message_id: str) -> EndToEnd | None:
        """The operator's verified answer to the outgoing message, if one came."""
        row = await self.db.run(
            lambda connection: connection.execute(_END_TO_END, {"b_message_id": message_id}).one_or_none()
        )
        return None if row is None else _end_to_end(row)

    # --- retention ---------------------------------------------------------------------------------------

    @_shielded
    async def purge(
        self, *, now: datetime, retention: Mapping[str, Retention], default: Retention | None = None
    ) -> PurgeReport:
        """Delete payloads, then whole messages, that reached a final state longer ago than their P-Mode keeps.

        ``retention`` maps P-Mode ids to their durations; ``default`` covers the others. Evidence is not
        touched: ``purge_evidence`` runs on its own schedule. Messages not in a final state are never purged.
        """
        payloads = messages = 0
        policies: list[tuple[ColumnElement[bool], Retention]] = [
            (M.c.pmode_id == pmode_id, policy) for pmode_id, policy in retention.items()
        ]
        if default is not None:
            others = or_(M.c.pmode_id.is_(None), M.c.pmode_id.not_in(list(retention)))
            policies.append((others, default))
        final = or_(
            *(
                and_(M.c.direction == direction.value, M.c.state.in_([state.value for state in states]))
                for direction, states in FINAL.items()
            )
        )
        for which, policy in policies:
            if policy.payloads is not None:
                old = and_(which, final, M.c.updated_at <= now - policy.payloads, M.c.payloads_purged_at.is_(None))
                payloads += await self._in_batches(M.c.id, old, _drop_payloads(now))
            if policy.messages is not None:
                old = and_(which, final, M.c.updated_at <= now - policy.messages)
                messages += await self._in_batches(M.c.id, old, _drop_messages)
        return PurgeReport(payloads=payloads, messages=messages)

    @_shielded
    async def purge_evidence(self, *, now: datetime) -> PurgeReport:
        """Delete the evidence whose own retention has run out, whatever became of its message."""
        return PurgeReport(evidence=await self._in_batches(E.c.id, E.c.retain_until <= now, _drop_evidence))

    async def _in_batches(self, key: ColumnElement[int], which: ColumnElement[bool], drop: _Drop) -> int:
        """Drop the rows which selects, a batch per transaction, deleting their files after each commit."""

        def batch(connection: Connection) -> tuple[int, Sequence[str]]:
            ids = list(connection.execute(select(key).where(which).limit(PURGE_BATCH)).scalars())
            return len(ids), drop(connection, ids) if ids else []

        count = 0
        while True:
            found, paths = await self.db.run(batch)
            if not found:
                return count
            count += found
            for path in paths:
                await self.files.delete(path)

    async def _all(self, query: Executable, parameters: Mapping[str, Any] | None = None) -> Sequence[Row[Any]]:
        return await self.db.run(lambda connection: connection.execute(query, parameters).all())


# Deletes the rows with the given ids and returns the file paths they released.
_Drop = Callable[[Connection, list[int]], Sequence[str]]


def _delete_payloads(connection: Connection, message_ids: list[int]) -> Sequence[str]:
    result = connection.execute(delete(P).where(P.c.message.in_(message_ids)).returning(P.c.path))
    return [path for path in result.scalars() if path is not None]  # inline payloads leave no file


def _drop_payloads(now: datetime) -> _Drop:
    def drop(connection: Connection, message_ids: list[int]) -> Sequence[str]:
        paths = _delete_payloads(connection, message_ids)
        connection.execute(update(M).where(M.c.id.in_(message_ids)).values(payloads_purged_at=now))
        return paths

    return drop


def _drop_messages(connection: Connection, message_ids: list[int]) -> Sequence[str]:
    paths = _delete_payloads(connection, message_ids)
    # A routed message's target goes with it; transitions go with their message through ON DELETE CASCADE.
    routed = select(M.c.message_id).where(M.c.id.in_(message_ids), M.c.direction == Direction.OUT.value)
    connection.execute(delete(schema.route_targets).where(schema.route_targets.c.message_id.in_(routed)))
    connection.execute(delete(M).where(M.c.id.in_(message_ids)))
    return paths


def _drop_evidence(connection: Connection, ids: list[int]) -> Sequence[str]:
    result = connection.execute(delete(E).where(E.c.id.in_(ids)).returning(E.c.path))
    return [path for path in result.scalars() if path is not None]


def _visible(kinds: Sequence[str]) -> ColumnElement[bool]:
    """Rows a caller limited to resources of these kinds may see, the values bound as ``b_only_<kind>``; a kind the
    store does not know matches nothing."""
    allowed: list[ColumnElement[bool]] = []
    for kind in kinds:
        wanted: BindParameter[str] = bindparam(f"b_only_{kind}", expanding=True)
        if kind == "pmode":
            allowed.append(M.c.pmode_id.in_(wanted))
        elif kind == "party":
            allowed.append(or_(M.c.from_party.in_(wanted), M.c.to_party.in_(wanted)))
    return or_(false(), *allowed)


_SEARCH_COLUMNS = {
    "b_direction": M.c.direction,
    "b_state": M.c.state,
    "b_pmode_id": M.c.pmode_id,
    "b_conversation_id": M.c.conversation_id,
    "b_ref_to_message_id": M.c.ref_to_message_id,
}


@functools.lru_cache(maxsize=256)
def _search_statement(given: frozenset[str], kinds: tuple[str, ...] | None) -> Select[Any]:
    """The search for the filters given and the kinds of a scoped caller's resources, with bound values: built
    once per shape (a poll builds none), so a search costs what SQLite takes to run it."""
    conditions: list[ColumnElement[bool]] = [M.c.id > bindparam("b_after")]
    if kinds is not None:
        conditions.append(_visible(kinds))
    conditions += [column == bindparam(name) for name, column in _SEARCH_COLUMNS.items() if name in given]
    return select(M).where(*conditions).order_by(M.c.id).limit(bindparam("b_limit"))


def _unique_violation(failure: WriteFailed) -> bool:
    """Whether a write failed on a unique constraint (a hook's row colliding, say an idempotency key in use)."""
    cause = failure.__cause__
    return isinstance(cause, sqlite3.IntegrityError) or getattr(cause, "sqlstate", None) == "23505"


def _due_clause(now: datetime | BindParameter[datetime]) -> ColumnElement[bool]:
    """The outgoing messages a worker may claim at now (see the module's recovery rules)."""
    return or_(
        M.c.state == MessageState.SUBMITTED.value,
        and_(M.c.state == MessageState.AWAITING_RECEIPT.value, M.c.next_attempt_at <= now),
        and_(M.c.state == MessageState.SENDING.value, or_(M.c.lease_until.is_(None), M.c.lease_until < now)),
    )


# Statements built once with bound parameters (b_...): building one with its values as literals costs more CPU than
# SQLite takes to run it.
_BY_MESSAGE_ID = select(M).where(M.c.direction == bindparam("b_direction"), M.c.message_id == bindparam("b_message_id"))
_PAYLOADS = select(P).where(P.c.message == bindparam("b_message")).order_by(P.c.id)
_PAYLOAD_BY_CID = _PAYLOADS.where(P.c.content_id == bindparam("b_content_id")).limit(1)
# Payloads listed without their inline bytes (read() fetches them).
_PAYLOAD_LIST = (
    select(*[column for column in P.c if column.name != "data"]).where(P.c.message == bindparam("b_message"))
).order_by(P.c.id)
_BY_MESSAGE_IDS = select(M).where(
    M.c.message_id == bindparam("b_message_id"), M.c.direction.in_(bindparam("b_directions", expanding=True))
)
_HISTORY = select(T).where(T.c.message == bindparam("b_message")).order_by(T.c.id)
_END_TO_END = select(schema.end_to_end).where(schema.end_to_end.c.message_id == bindparam("b_message_id"))
# Evidence is listed without its inline bytes (read() fetches them).
_EVIDENCE = (
    select(*[column for column in E.c if column.name != "data"]).where(
        E.c.direction == bindparam("b_direction"), E.c.message_id == bindparam("b_message_id")
    )
).order_by(E.c.id)
_EVIDENCE_OF_KIND = _EVIDENCE.where(E.c.kind == bindparam("b_kind"))
# The list, with the inline bytes of raw messages only (the header a reader shows is read from the first).
_EVIDENCE_WITH_RAW = _EVIDENCE.add_columns(case((E.c.kind == bindparam("b_raw"), E.c.data), else_=None).label("raw"))


def _message(row: Row[Any]) -> StoredMessage:
    values = dict(row._mapping)
    values["pk"] = values.pop("id")
    values["direction"] = Direction(values["direction"])
    values["state"] = MessageState(values["state"])
    return StoredMessage(**values)


def _first_visible(
    connection: Connection,
    message_id: str,
    directions: Sequence[Direction],
    visible: Callable[[StoredMessage], bool],
) -> StoredMessage | None:
    """The first message with that MessageId in these directions, in their order, that ``visible`` admits."""
    rows = connection.execute(
        _BY_MESSAGE_IDS, {"b_message_id": message_id, "b_directions": [d.value for d in directions]}
    )
    found = {Direction(row.direction): row for row in rows}
    for direction in directions:
        row = found.get(direction)
        if row is not None and visible(message := _message(row)):
            return message
    return None


def _payload(row: Row[Any]) -> StoredPayload:
    return StoredPayload(
        pk=row.id,
        content_id=row.content_id,
        mime_type=row.mime_type,
        properties=dict(row.properties),
        size=row.size,
        sha256=row.sha256,
        path=row.path,
        data=row._mapping.get("data"),
    )


def _transition(row: Row[Any]) -> Transition:
    return Transition(
        source=None if row.from_state is None else MessageState(row.from_state),
        target=MessageState(row.to_state),
        at=row.at,
        actor=row.actor,
        detail=row.detail,
    )


def _end_to_end(row: Row[Any]) -> EndToEnd:
    return EndToEnd(
        message_id=row.message_id,
        status=row.status,
        at=row.at,
        operator=row.operator,
        operator_subject=row.operator_subject,
        operator_sha256=row.operator_sha256,
        reply_message_id=row.reply_message_id,
        recorded_at=row.recorded_at,
        reasons=tuple((str(code), str(text)) for code, text in row.reasons),
        recipient=row.recipient,
    )


def _evidence(row: Row[Any], *extra: str) -> Evidence:
    values = dict(row._mapping)
    for name in extra:
        del values[name]
    values["pk"] = values.pop("id")
    values["direction"] = Direction(values["direction"])
    values["kind"] = EvidenceKind(values["kind"])
    return Evidence(**values)
