"""The PostgreSQL writer: each batch is one statement, so one round trip and one commit, however many operations.

The statement is fixed (prepared once per connection): every kind of operation comes as arrays, one per column,
and data-modifying CTEs do the inserts, the compare-and-sets, the claims, the audit and the evidence together.
A single statement outside an explicit transaction is atomic: it commits whole or not at all. Two operations on
the same message never share a batch (PostgreSQL leaves undefined which of two changes to one row in a statement
wins), so the later one waits for the next batch, as it would for the first one's commit anyway.

asyncpg is imported here only, so PostgreSQL support stays optional.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
from sqlalchemy.engine import make_url

from accesspoint.store.codec import (
    MESSAGE_COLUMNS,
    MessageRows,
    from_postgres_datetime,
    json_text,
    new_message,
    postgres_datetime,
    utc,
)
from accesspoint.store.ops import ALSO_COLUMNS, Also, Claim, Duplicate, Insert, Inserted, Keep, Move, Op, Outcome
from accesspoint.store.records import Evidence
from accesspoint.store.states import INITIAL, MessageState
from accesspoint.store.writer import MAX_BATCH, Writer, _Entry

# SQLSTATE classes of a failed statement that roll back only it (bad data, a constraint, a raised exception, a
# deadlock): its operations are then run one by one. Any other failure (the connection, the server) fails them all.
_STATEMENT_FAILURES = ("22", "23", "40", "42", "P0")
CONNECT_TIMEOUT = 10.0  # seconds to connect (again, after an outage)
BATCH_TIMEOUT = 60.0  # seconds one batch's statement may take before its callers hear the store is unavailable

log = logging.getLogger("accesspoint.store")

_SENDING = MessageState.SENDING.value
_DUE = (
    f"(m.state = '{MessageState.SUBMITTED.value}'"
    f" OR (m.state = '{MessageState.AWAITING_RECEIPT.value}' AND m.next_attempt_at <= t.now)"
    f" OR (m.state = '{_SENDING}' AND (m.lease_until IS NULL OR m.lease_until < t.now)))"
)
_MESSAGE = ", ".join(f"m.{name}" for name in MESSAGE_COLUMNS)
_NO_MESSAGE = ", ".join(f"NULL AS {name}" if name != "id" else "id" for name in MESSAGE_COLUMNS)

BATCH_SQL = f"""
WITH
i_in AS (
  SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::text[],
                       $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bigint[], $15::timestamp[])
    AS t(ord, direction, message_id, ref_to_message_id, conversation_id, pmode_id, leg, mpc, from_party, to_party,
         service, action, state, payload_bytes, now)
),
ins AS (
  INSERT INTO messages (direction, message_id, ref_to_message_id, conversation_id, pmode_id, leg, mpc, from_party,
                        to_party, service, action, state, version, attempts, payload_bytes, created_at, updated_at)
  SELECT direction, message_id, ref_to_message_id, conversation_id, pmode_id, leg, mpc, from_party, to_party, service,
         action, state, 1, 0, payload_bytes, now, now
  FROM i_in ORDER BY ord
  ON CONFLICT (direction, message_id) DO NOTHING
  RETURNING id, direction, message_id
),
ins_ord AS (
  SELECT i.ord, ins.id, i.state, i.now FROM ins JOIN i_in i ON i.direction = ins.direction
                                                         AND i.message_id = ins.message_id
),
payload_rows AS (
  INSERT INTO payloads (message, content_id, mime_type, properties, size, sha256, path, data)
  SELECT io.id, p.content_id, p.mime_type, p.properties::json, p.size, p.sha256, p.path, p.data
  FROM unnest($16::int[], $17::text[], $18::text[], $19::text[], $20::bigint[], $21::text[], $22::text[],
              $23::bytea[]) AS p(ord, content_id, mime_type, properties, size, sha256, path, data)
  JOIN ins_ord io ON io.ord = p.ord
),
m_in AS (
  SELECT * FROM unnest($24::int[], $25::bigint[], $26::text[], $27::int[], $28::text[], $29::timestamp[],
                       $30::timestamp[], $31::text[], $32::timestamp[], $33::bool[], $34::text[], $35::text[],
                       $36::int[], $37::text[])
    AS t(ord, pk, from_state, version, target, now, next_attempt_at, lease_owner, lease_until, set_error, error_code,
         error_detail, attempts_add, detail)
),
moved AS (
  UPDATE messages m SET state = t.target, version = m.version + 1, updated_at = t.now,
         next_attempt_at = t.next_attempt_at, lease_owner = t.lease_owner, lease_until = t.lease_until,
         attempts = m.attempts + t.attempts_add,
         last_error_code = CASE WHEN t.set_error THEN t.error_code ELSE m.last_error_code END,
         last_error_detail = CASE WHEN t.set_error THEN t.error_detail ELSE m.last_error_detail END
  FROM m_in t WHERE m.id = t.pk AND m.state = t.from_state AND m.version = t.version
  RETURNING t.ord, m.id, t.from_state, t.target, t.now, t.detail
),
c_in AS (
  SELECT * FROM unnest($38::int[], $39::text[], $40::timestamp[], $41::timestamp[]) AS t(ord, message_id, now, until)
),
c_old AS (
  SELECT t.ord, t.now, t.until, m.id, m.state, m.lease_owner, m.lease_until
  FROM messages m JOIN c_in t ON m.direction = 'out' AND m.message_id = t.message_id
  WHERE {_DUE}
  FOR UPDATE OF m
),
claimed AS (
  UPDATE messages m SET state = '{_SENDING}', version = m.version + 1, attempts = m.attempts + 1,
         lease_owner = $53, lease_until = o.until, next_attempt_at = NULL, updated_at = o.now
  FROM c_old o WHERE m.id = o.id AND m.state = o.state
  RETURNING o.ord, o.state AS from_state, o.now,
            CASE WHEN o.state = '{_SENDING}' THEN 'lease of ' || coalesce(o.lease_owner, 'None') || ' expired at '
                 || coalesce(o.lease_until::text || '+00:00', 'None') END AS detail, {_MESSAGE}
),
audit AS (
  INSERT INTO transitions (message, from_state, to_state, at, actor, detail)
  SELECT id, NULL, state, now, $53, NULL FROM ins_ord
  UNION ALL SELECT id, from_state, target, now, $53, detail FROM moved
  UNION ALL SELECT id, from_state, '{_SENDING}', now, $53, detail FROM claimed
),
e_in AS (
  SELECT e.*, nextval(pg_get_serial_sequence('evidence', 'id')) AS new_id
  FROM unnest($42::int[], $43::bool[], $44::text[], $45::text[], $46::text[], $47::bigint[], $48::text[],
              $49::text[], $50::bytea[], $51::timestamp[], $52::timestamp[])
    WITH ORDINALITY AS e(ord, conditional, direction, message_id, kind, size, sha256, path, data, created_at,
                         retain_until, position)
  WHERE NOT e.conditional OR e.ord IN (SELECT ord FROM ins_ord)
  ORDER BY e.position
),
evidence_rows AS (
  INSERT INTO evidence (id, direction, message_id, kind, size, sha256, path, data, created_at, retain_until)
  SELECT new_id, direction, message_id, kind, size, sha256, path, data, created_at, retain_until FROM e_in
),
happened AS (SELECT ord FROM ins_ord UNION ALL SELECT ord FROM moved),
outbox_rows AS (
  INSERT INTO outbox (event_id, sink, kind, body, created_at, available_at, attempts)
  SELECT o.event_id, o.sink, o.kind, o.body, o.created_at, o.available_at, 0
  FROM unnest($54::int[], $55::text[], $56::text[], $57::text[], $58::text[], $59::timestamp[], $60::timestamp[])
    WITH ORDINALITY AS o(ord, event_id, sink, kind, body, created_at, available_at, position)
  WHERE o.ord IN (SELECT ord FROM happened)
  ORDER BY o.position
),
route_rows AS (
  INSERT INTO route_targets (message_id, received_message_id, operator_id, operator_name, party_id, endpoint,
                             created_at)
  SELECT r.message_id, r.received_message_id, r.operator_id, r.operator_name, r.party_id, r.endpoint, r.created_at
  FROM unnest($61::int[], $62::text[], $63::text[], $64::text[], $65::text[], $66::text[], $67::text[],
              $68::timestamp[])
    AS r(ord, message_id, received_message_id, operator_id, operator_name, party_id, endpoint, created_at)
  WHERE r.ord IN (SELECT ord FROM happened)
),
key_rows AS (
  INSERT INTO idempotency_keys (scope, key, request_sha256, message_id, status, response, created_at, expires_at)
  SELECT k.scope, k.key, k.request_sha256, k.message_id, k.status, k.response, k.created_at, k.expires_at
  FROM unnest($69::int[], $70::text[], $71::text[], $72::text[], $73::text[], $74::int[], $75::text[],
              $76::timestamp[], $77::timestamp[])
    AS k(ord, scope, key, request_sha256, message_id, status, response, created_at, expires_at)
  WHERE k.ord IN (SELECT ord FROM happened)
)
SELECT 'i' AS kind, ord, NULL AS from_state, {_NO_MESSAGE} FROM ins_ord
UNION ALL SELECT 'd', i.ord, NULL, {_MESSAGE} FROM i_in i JOIN messages m ON m.direction = i.direction
                                                                 AND m.message_id = i.message_id
UNION ALL SELECT 'm', ord, NULL, {_NO_MESSAGE} FROM moved
UNION ALL SELECT 'c', ord, from_state, {", ".join(MESSAGE_COLUMNS)} FROM claimed
UNION ALL SELECT 'e', ord, NULL, {_NO_MESSAGE.replace("id", "new_id AS id", 1)} FROM e_in WHERE NOT conditional
"""  # noqa: S608 (names from the schema; every value is a parameter)


def asyncpg_dsn(url: str) -> str:
    """The DSN asyncpg takes for a SQLAlchemy URL (``postgresql://``, ``postgresql+asyncpg://``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresWriter(Writer):
    """One asyncpg connection, one task: each batch is ``BATCH_SQL`` with the batch's arrays."""

    def __init__(self, url: str, *, instance: str, max_batch: int = MAX_BATCH) -> None:
        super().__init__(instance=instance, max_batch=max_batch)
        self._dsn = asyncpg_dsn(url)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection | None = None
        self._rows = MessageRows(postgres_datetime, from_postgres_datetime)

    async def start(self) -> None:
        """Connect (so a wrong URL fails here) and start the writer's task."""
        self._loop = asyncio.get_running_loop()
        self._connection = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
        self._task = asyncio.create_task(self._run(), name="store-writer:postgresql")

    async def close(self) -> None:
        """Commit what is queued, then stop the task and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=5)

    def _add(self, entries: list[_Entry]) -> None:
        self._pending.extend(entries)
        self._wake.set()

    def _take(self) -> list[_Entry]:
        """Whole groups in order up to max_batch, leaving for later an operation on a message already in the batch."""
        batch: list[_Entry] = []
        keys: set[tuple[str, str]] = set()
        waiting: list[_Entry] = []
        while self._pending and (len(batch) < self.max_batch or self._pending[0].group == batch[-1].group):
            entry = self._pending.popleft()
            if entry.op.key in keys and entry.group != batch[-1].group:
                waiting.append(entry)
                continue
            keys.add(entry.op.key)
            batch.append(entry)
        self._pending.extendleft(reversed(waiting))
        return batch

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._take()
                outcomes = await self._commit([entry.op for entry in batch])
                self._settle(batch, outcomes)
            if self._closed:
                return

    async def _commit(self, ops: list[Op]) -> list[Outcome | BaseException]:
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
            # Bounded: a server that went away mid-statement must not hold every caller's future for good.
            rows = await self._connection.fetch(BATCH_SQL, *self._arguments(ops), timeout=BATCH_TIMEOUT)
        except asyncpg.PostgresError as exc:
            if str(exc.sqlstate or "")[:2] not in _STATEMENT_FAILURES:
                await self._drop_connection()
                return [exc] * len(ops)
            if len(ops) == 1:
                return [exc]
            return [(await self._commit([op]))[0] for op in ops]
        except (OSError, asyncpg.InterfaceError, TimeoutError) as exc:
            await self._drop_connection()
            return [exc] * len(ops)
        except Exception as exc:  # anything else the driver raises: this batch fails, the writer goes on
            log.exception("the PostgreSQL writer's batch failed unexpectedly")
            await self._drop_connection()
            return [exc] * len(ops)
        return self._outcomes(ops, rows)

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

    def _arguments(self, ops: list[Op]) -> list[Any]:
        """BATCH_SQL's parameters: per kind of row, one array per column (each row has its operation's ``ord``)."""
        dt = postgres_datetime
        inserts: list[list[Any]] = [[] for _ in range(15)]
        payloads: list[list[Any]] = [[] for _ in range(8)]
        moves: list[list[Any]] = [[] for _ in range(14)]
        claims: list[list[Any]] = [[] for _ in range(4)]
        evidence: list[list[Any]] = [[] for _ in range(11)]
        # The rows written when an insert or move happens, per table: its operation's ord, then the table's
        # ALSO_COLUMNS (the outbox's attempts start at 0 in the statement itself).
        names_of = {table: tuple(n for n in names if n != "attempts") for table, names in ALSO_COLUMNS.items()}
        also: dict[str, list[list[Any]]] = {table: [[] for _ in range(len(n) + 1)] for table, n in names_of.items()}

        def write_also(ord_: int, rows: Sequence[Also]) -> None:
            for row in rows:
                values = [row.values[name] for name in names_of[row.table]]
                _append(also[row.table], (ord_, *(dt(v) if isinstance(v, datetime) else v for v in values)))

        def keep(ord_: int, conditional: bool, direction: str, message_id: str, rows: Sequence[Any], now: Any) -> None:
            for row in rows:
                content, until = row.content, dt(row.retain_until)
                _append(evidence, (ord_, conditional, direction, message_id, row.kind.value, content.size,
                                   content.sha256, content.path, content.data, dt(now), until))  # fmt: skip

        for ord_, op in enumerate(ops):
            if isinstance(op, Insert):
                info = op.info
                size = sum(p.content.size for p in op.payloads)
                _append(inserts, (ord_, op.direction.value, info.message_id, info.ref_to_message_id,
                                  info.conversation_id, info.pmode_id, info.leg, info.mpc, info.from_party,
                                  info.to_party, info.service, info.action, INITIAL[op.direction].value, size,
                                  dt(op.now)))  # fmt: skip
                for p in op.payloads:
                    _append(payloads, (ord_, p.content_id, p.mime_type, json_text(p.properties),
                                       p.content.size, p.content.sha256, p.content.path, p.content.data))  # fmt: skip
                keep(ord_, True, op.direction.value, info.message_id, op.evidence, op.now)
                write_also(ord_, op.also)
            elif isinstance(op, Move):
                message = op.message
                code, detail = op.error if op.error is not None else (None, None)
                _append(moves, (ord_, message.pk, message.state.value, message.version, op.target.value,
                                dt(op.now), dt(op.next_attempt_at), op.lease_owner, dt(op.lease_until),
                                op.error is not None, code, detail, op.attempts_add, op.detail))  # fmt: skip
                keep(ord_, False, message.direction.value, message.message_id, op.evidence, op.now)
                write_also(ord_, op.also)
            elif isinstance(op, Claim):
                _append(claims, (ord_, op.message_id, dt(op.now), dt(op.lease_until)))
            else:
                keep(ord_, False, op.direction.value, op.message_id, op.evidence, op.now)
        return [
            *inserts, *payloads, *moves, *claims, *evidence, self.instance,
            *also["outbox"], *also["route_targets"], *also["idempotency_keys"],
        ]  # fmt: skip

    def _outcomes(self, ops: list[Op], rows: Sequence[Any]) -> list[Outcome | BaseException]:
        outcomes: list[Any] = [None] * len(ops)
        kept: dict[int, list[int]] = {}
        for row in rows:
            kind, ord_ = row[0], row[1]
            op = ops[ord_]
            if kind == "i" and isinstance(op, Insert):
                size = sum(p.content.size for p in op.payloads)
                outcomes[ord_] = Inserted(new_message(row[3], op, INITIAL[op.direction], size))
            elif kind == "d":
                outcomes[ord_] = Duplicate(self._rows.message(row[3:]))
            elif kind == "m" and isinstance(op, Move):
                outcomes[ord_] = op.moved()
            elif kind == "c":
                outcomes[ord_] = self._rows.message(row[3:])
            elif kind == "e":
                kept.setdefault(ord_, []).append(row[3])
        for ord_, op in enumerate(ops):
            if isinstance(op, Insert) and outcomes[ord_] is None:
                outcomes[ord_] = Duplicate(None)  # taken by an insert this statement's snapshot does not see
            elif isinstance(op, Keep):
                ids = sorted(kept.get(ord_, []))
                outcomes[ord_] = tuple(
                    Evidence(pk, op.direction, op.message_id, row.kind, row.content.size, row.content.sha256,
                             row.content.path, utc(op.now), utc(row.retain_until))
                    for pk, row in zip(ids, op.evidence, strict=True)
                )  # fmt: skip
        return outcomes


def _append(columns: list[list[Any]], row: Sequence[Any]) -> None:
    for column, value in zip(columns, row, strict=True):
        column.append(value)
