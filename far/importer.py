"""Bulk import of recipients from CSV (with a header row) or JSON lines, streamed, in batched inserts.

Columns (CSV header names; JSON lines use the same keys):

====================  ========  ===================================================================
``recipient``         required  12 digits (personnummer, samordningsnummer, 16 + organisationsnummer)
                                or an eIDAS identifier ``XX/YY/…``
``status``            optional  ``secure`` (default), ``anonymous`` or ``none``
``pending``           optional  ``true``/``false`` (also ``1``/``0``, ``yes``/``no``); default false
``operator``          see note  the operator's organisationsnummer; required unless status is ``none``;
                                the operator must already be in FaR
``last_registration`` optional  ISO 8601 date-time (``2016-10-30T15:38:49.517+01:00``); no zone = UTC
``refused_senders``   optional  party ids of senders the recipient refuses (far/parties.py: ``0192:…``,
                                or a Swedish organisationsnummer), separated by spaces or ``;`` (a JSON
                                list in JSON lines)
====================  ========  ===================================================================

A recipient already in FaR is replaced (its refusals too, when the column is present); a recipient listed twice
keeps its last row. The import is one transaction: if any row is bad, every bad row is reported (line and
reason) and nothing is stored.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from far.identifiers import STRICT, InvalidIdentifier, Kind, Policy, parse_orgnr, recipient_kind
from far.model import AccountStatus, audit, operators, recipients, refusals, sqlite_text, upsert
from far.parties import PartyPolicy, parse_party_id

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

COLUMNS = ("recipient", "status", "pending", "operator", "last_registration", "refused_senders")
MAX_REPORTED_ERRORS = 100
BATCH_SIZE = 20_000
_COLUMN_SET = frozenset(COLUMNS)
# Plain strings, looked up once: a million rows make enum attribute access show in the profile.
_STATUSES = frozenset(status.value for status in AccountStatus)
_SECURE, _NONE = AccountStatus.SECURE.value, AccountStatus.NONE.value
_KIND_VALUES = {kind: kind.value for kind in Kind}
_RECIPIENT_COLUMNS = ("id", "kind", "status", "pending", "operator_id", "last_registration", "updated_at")
_REFUSAL_COLUMNS = ("recipient_id", "sender_id", "created_at")
_AUDIT_COLUMNS = ("at", "actor", "action", "entity", "entity_id", "detail")
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}


@dataclass(frozen=True)
class ImportRow:
    """One valid input row."""

    recipient: str
    kind: str
    status: str
    pending: bool
    operator: str | None
    last_registration: datetime | None
    refused_senders: tuple[str, ...] | None


@dataclass(frozen=True)
class RowError:
    """A bad input row: its line number and why."""

    line: int
    reason: str


@dataclass
class BadRows:
    """An import's bad rows: how many, and the first MAX_REPORTED_ERRORS of them (the recipients' and the
    senders' imports both report so)."""

    bad_rows: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the import was stored (no row was bad)."""
        return self.bad_rows == 0

    def add(self, error: RowError) -> None:
        """Count a bad row, and name it while fewer than MAX_REPORTED_ERRORS are named."""
        self.bad_rows += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    def errors_json(self) -> list[dict[str, Any]]:
        """The named bad rows as the CLI prints them and the REST API answers."""
        return [{"line": e.line, "reason": e.reason} for e in self.errors]


@dataclass
class ImportReport(BadRows):
    """What an import did: rows stored (0 when any was bad), the bad rows, and how long it took."""

    rows: int = 0
    refusals: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as the CLI prints it."""
        return {
            "ok": self.ok,
            "stored": self.rows if self.ok else 0,
            "refusals": self.refusals if self.ok else 0,
            "bad_rows": self.bad_rows,
            "errors": self.errors_json(),
            "seconds": round(self.seconds, 3),
        }


class RowParser:
    """Turns one record (a dict of column -> text or JSON value) into an ImportRow, or raises ValueError."""

    def __init__(self, policy: Policy, known_operators: frozenset[str], parties: PartyPolicy | None = None) -> None:
        self.policy = policy
        self.known_operators = known_operators
        self.parties = parties or PartyPolicy(check_digits=policy.check_digits)

    def parse(self, record: dict[str, Any]) -> ImportRow:
        """Validate one record."""
        if not record.keys() <= _COLUMN_SET:
            unknown = set(record) - _COLUMN_SET
            raise ValueError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        value = record.get("recipient")
        if not value:
            raise ValueError("recipient is missing")
        recipient = str(value)
        try:
            kind = recipient_kind(recipient, self.policy)
        except InvalidIdentifier as exc:
            raise ValueError(f"recipient {recipient[:64]!r}: {exc.reason}") from None
        status = _text(record.get("status")) or _SECURE
        if status not in _STATUSES:
            raise ValueError(f"status {status[:32]!r} is not secure, anonymous or none")
        pending = _flag(record.get("pending"))
        operator = _text(record.get("operator")) or None
        if operator is not None:
            operator = self._orgnr(operator, "operator")
            if operator not in self.known_operators:
                raise ValueError(f"operator {operator} is not in FaR (add operators before recipients)")
        elif status != _NONE:
            raise ValueError(f"a {status} account needs an operator")
        return ImportRow(
            recipient=recipient,
            kind=_KIND_VALUES[kind],
            status=status,
            pending=pending,
            operator=operator,
            last_registration=_moment(record.get("last_registration")),
            refused_senders=self._senders(record),
        )

    def _orgnr(self, value: str, what: str) -> str:
        try:
            return parse_orgnr(value, self.policy)
        except InvalidIdentifier as exc:
            raise ValueError(f"{what} {value[:32]!r}: {exc.reason}") from None

    def _senders(self, record: dict[str, Any]) -> tuple[str, ...] | None:
        if "refused_senders" not in record:
            return None
        raw = record["refused_senders"]
        if raw is None:
            return ()
        items = raw if isinstance(raw, list) else str(raw).replace(";", " ").split()
        return tuple(sorted({self._party(str(item)) for item in items}))

    def _party(self, value: str) -> str:
        try:
            return parse_party_id(value, self.parties)
        except InvalidIdentifier as exc:
            raise ValueError(f"refused sender {value[:64]!r}: {exc.reason}") from None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value.strip()


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text not in _TRUE:
        raise ValueError(f"pending {text[:16]!r} is not true or false")
    return _TRUE[text]


def _moment(value: Any) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"last_registration {text[:40]!r} is not an ISO 8601 date-time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def header_names(header: list[str]) -> list[str]:
    """A CSV header's column names as the importers match them: trimmed, lower case."""
    return [name.strip().lower() for name in header]


def csv_records(reader: CsvReader, names: list[str]) -> Iterator[tuple[int, dict[str, str]] | RowError]:
    """The rows after the header as (line, column -> cell); blank rows skipped, a row whose number of fields is
    not the header's a RowError."""
    for cells in reader:
        if not cells or cells == [""]:
            continue
        line = reader.line_num
        if len(cells) != len(names):
            yield RowError(line, f"{len(cells)} fields where the header has {len(names)}")
            continue
        yield line, dict(zip(names, cells, strict=True))


def read_csv(lines: Iterable[str], parser: RowParser) -> Iterator[ImportRow | RowError]:
    """Rows of a CSV text with a header row."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        yield RowError(1, "empty file: a header row is needed")
        return
    names = header_names(header)
    unknown = [name for name in names if name not in COLUMNS]
    if unknown or "recipient" not in names or len(set(names)) != len(names):
        yield RowError(1, f"header must name columns among {', '.join(COLUMNS)} (recipient required), once each")
        return
    for item in csv_records(reader, names):
        if isinstance(item, RowError):
            yield item
            continue
        line, record = item
        try:
            yield parser.parse(record)
        except ValueError as exc:
            yield RowError(line, str(exc))


def read_jsonl(lines: Iterable[str], parser: RowParser) -> Iterator[ImportRow | RowError]:
    """Rows of a JSON lines text: one object a line, blank lines skipped."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield RowError(number, f"not JSON: {exc.msg}")
            continue
        if not isinstance(record, dict):
            yield RowError(number, "not a JSON object")
            continue
        try:
            yield parser.parse(record)
        except ValueError as exc:
            yield RowError(number, str(exc))


class Progress:
    """A progress bar on stderr: bytes read of the file, rows, rows per second."""

    def __init__(self, total: int, stream: IO[str] | None = None, *, interval: float = 0.2) -> None:
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        # A log file gets a line every few seconds instead of a bar redrawn five times a second.
        self.interval = interval if self.tty else 5.0
        self.started = time.monotonic()
        self.shown = 0.0

    def update(self, done: int, rows: int, *, final: bool = False) -> None:
        """Redraw when the interval has passed (always when ``final``)."""
        now = time.monotonic()
        if not final and now - self.shown < self.interval:
            return
        self.shown = now
        fraction = min(done / self.total, 1.0)
        width = 30
        filled = int(fraction * width)
        rate = rows / max(now - self.started, 1e-9)
        bar = "#" * filled + "-" * (width - filled)
        text = f"import [{bar}] {fraction:6.1%} {rows:>11,} rows {rate:>9,.0f} rows/s"
        self.stream.write(("\r" + text if self.tty else text + "\n") + ("\n" if final and self.tty else ""))
        self.stream.flush()


def _lines(handle: IO[bytes], counter: list[int]) -> Iterator[str]:
    for raw in handle:
        counter[0] += len(raw)
        yield raw.decode("utf-8-sig" if counter[0] == len(raw) else "utf-8")


async def import_file(
    engine: AsyncEngine,
    path: Path,
    *,
    policy: Policy = STRICT,
    actor: str = "import",
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ImportReport:
    """Import a CSV or JSON lines file in one transaction; see the module docstring for the columns."""
    started = time.monotonic()
    report = ImportReport()
    counter = [0]
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # Rows arrive in any order, so inserts land all over the primary-key B-tree: a cache that holds the
            # whole table for the import (a million rows is about 120 MB) saves spilling and re-reading pages.
            await conn.exec_driver_sql("PRAGMA cache_size=-1048576")
        known = frozenset((await conn.execute(select(operators.c.id))).scalars())
        parser = RowParser(policy, known)
        with path.open("rb") as handle:
            lines = _lines(handle, counter)
            jsonl = path.suffix.lower() in {".jsonl", ".ndjson", ".json"}
            rows = read_jsonl(lines, parser) if jsonl else read_csv(lines, parser)
            writer = _BatchWriter(conn, actor, now())
            for item in rows:
                if isinstance(item, RowError):
                    report.add(item)
                    continue
                report.rows += 1
                # After the first bad row nothing will be stored, so the rest is only checked.
                if report.bad_rows == 0:
                    await writer.add(item, batch_size)
                if progress is not None and report.rows % 1000 == 0:
                    progress.update(counter[0], report.rows)
            if report.bad_rows == 0:
                await writer.flush()
                report.refusals = writer.refusals
                await conn.commit()
                if conn.dialect.name == "sqlite":
                    # Fold the import's WAL into the database file: until then every read of a page consults the
                    # WAL index too, which makes the first lookups after a big import several times slower.
                    await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                elif conn.dialect.name == "postgresql":
                    # Fresh statistics: right after a bulk load the planner's estimates are stale and a lookup
                    # took 37-107 ms instead of ~9 ms until autovacuum got round to analysing the tables.
                    await conn.exec_driver_sql("ANALYZE")
                    await conn.commit()
            else:
                await conn.rollback()
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql("PRAGMA cache_size=-65536")  # back to what model.create_engine sets
    if progress is not None:
        progress.update(counter[0], report.rows, final=True)
    report.seconds = time.monotonic() - started
    return report


class _BatchWriter:
    """Collects rows and writes them with one executemany per table and batch.

    On SQLite the statements are compiled once and handed to the driver with tuples of ready values (times as
    the text UtcDateTime stores): SQLAlchemy's per-row parameter processing was half of the import's time.
    Elsewhere SQLAlchemy's executemany does the work.
    """

    def __init__(self, conn: AsyncConnection, actor: str, at: datetime) -> None:
        self.conn = conn
        self.actor = actor
        self.sqlite = conn.dialect.name == "sqlite"
        self.time: Callable[[datetime | None], Any] = sqlite_text if self.sqlite else (lambda moment: moment)
        self.at = self.time(at)
        self.batch: list[ImportRow] = []
        self.refusals = 0
        dialect = conn.dialect.name
        forget = delete(refusals).where(refusals.c.recipient_id == bindparam("recipient_id"))
        self.statements: dict[str, tuple[Any, tuple[str, ...]]] = {
            "recipients": (upsert(dialect, recipients, ("id",)), _RECIPIENT_COLUMNS),
            "forget": (forget, ("recipient_id",)),
            "refusals": (upsert(dialect, refusals, ("recipient_id", "sender_id")), _REFUSAL_COLUMNS),
            "audit": (audit.insert(), _AUDIT_COLUMNS),
        }
        self.sql: dict[str, str] = {}

    async def add(self, row: ImportRow, batch_size: int) -> None:
        self.batch.append(row)
        if len(self.batch) >= batch_size:
            await self.flush()

    async def _write(self, name: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        statement, columns = self.statements[name]
        if not self.sqlite:
            await self.conn.execute(statement, [dict(zip(columns, row, strict=True)) for row in rows])
            return
        if name not in self.sql:
            compiled = statement.compile(dialect=self.conn.dialect, column_keys=list(columns))
            # The tuples are built in ``columns`` order; the compiled statement must take them in that order.
            assert tuple(compiled.positiontup or ()) == columns, (compiled.positiontup, columns)
            self.sql[name] = str(compiled)
        driver = (await self.conn.get_raw_connection()).driver_connection
        assert driver is not None, "a checked-out connection has its driver connection"
        await driver.executemany(self.sql[name], rows)

    async def flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        at = self.at
        stored = []
        audited = []
        for r in batch:
            text = sqlite_text(r.last_registration)
            last = text if self.sqlite else r.last_registration
            stored.append((r.recipient, r.kind, r.status, r.pending, r.operator, last, at))
            # Every change is audited, an imported recipient too: the detail is the row as stored.
            audited.append((at, self.actor, "import", "recipient", r.recipient, _detail(r, text)))
        await self._write("recipients", stored)
        await self._write("forget", [(r.recipient,) for r in batch if r.refused_senders is not None])
        pairs = [(r.recipient, s, at) for r in batch if r.refused_senders for s in r.refused_senders]
        await self._write("refusals", pairs)
        self.refusals += len(pairs)
        await self._write("audit", audited)


def _detail(row: ImportRow, last: str | None) -> str:
    # Every value is a validated number, a fixed word or an ISO 8601 time: nothing to escape, so the JSON is
    # written directly (json.dumps of a dict per row was a tenth of the import's time).
    refused = ""
    if row.refused_senders is not None:
        refused = ', "refused_senders": [' + ", ".join(f'"{s}"' for s in row.refused_senders) + "]"
    last_json = "null" if last is None else '"' + last + '"'
    operator_json = "null" if row.operator is None else '"' + row.operator + '"'
    return (
        f'{{"kind": "{row.kind}", "last_registration": {last_json}, "operator": {operator_json},'
        f' "pending": {"true" if row.pending else "false"}, "status": "{row.status}"{refused}}}'
    )
