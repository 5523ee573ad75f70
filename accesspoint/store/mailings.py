"""Mass mailings (*massutskick*) in the store's database: one row per mailing, one per recipient.

A recipient row moves ``pending`` → ``reachable`` (FaR said yes, the operator noted) or ``refused`` (FaR's reason,
so the sender can print the letter on paper) → ``sending`` (claimed by the sender, in its own transaction before
the letter is stored) → ``queued`` (the letter is stored and queued under ``message_id``). A row that was not a
recipient at all is ``invalid`` with the reason and its line. A stop between ``sending`` and ``queued`` is settled
at the next start by looking the letter up: stored means queued, else the row is sent again. Letters have
MessageIds derived from the mailing and the row (:func:`letter_id`), so a letter is never stored twice.

The tables live beside the message store's (same database, their own Alembic version table
``mailing_alembic_version``), so a mailing's letters are counted by state with one range scan over the
messages' unique key.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from accesspoint.servicekit.database import Migrations
from accesspoint.servicekit.database import create_engine as async_engine
from accesspoint.store.db import Database, Durability
from accesspoint.store.schema import UtcDateTime, end_to_end, messages

metadata = MetaData()

mailings = Table(
    "mailings",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("sender", String(256), nullable=False),
    # What the mailing's letters are: pmode, action, service, properties, envelope, rate, reference, content files.
    Column("document", JSON, nullable=False),
    Column("state", String(16), nullable=False),  # receiving, running, completed
    Column("rows", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("completed_at", UtcDateTime(), nullable=True),
)

recipients = Table(
    "mailing_recipients",
    metadata,
    Column("mailing_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("line", Integer, nullable=False),
    Column("recipient", String(256), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("detail", Text, nullable=True),
    Column("message_id", String(255), nullable=True),
    # None is SQL NULL, not the JSON text null: most rows have none of these, and a row then costs no JSON
    # written at intake nor read at each look (rows stored as JSON null before still read back as None).
    Column("operator", JSON(none_as_null=True), nullable=True),  # FaR's operator: the forwarding target
    Column("payloads", JSON(none_as_null=True), nullable=True),  # this recipient's own payload files
    Column("properties", JSON(none_as_null=True), nullable=True),  # this recipient's own message properties
    Index("ix_mailing_recipients_state", "mailing_id", "state", "seq"),
)

MIGRATIONS = Migrations(Path(__file__).resolve().parent / "mailing_migrations", version_table="mailing_alembic_version")


class MailingState(enum.StrEnum):
    """A mailing: being uploaded, being worked on, or done (every letter sent or refused, each settled)."""

    RECEIVING = "receiving"
    RUNNING = "running"
    COMPLETED = "completed"


class RowState(enum.StrEnum):
    """A recipient of a mailing (see the module docstring)."""

    PENDING = "pending"
    REACHABLE = "reachable"
    SENDING = "sending"
    QUEUED = "queued"
    REFUSED = "refused"
    INVALID = "invalid"


class DuplicateMailing(Exception):
    """A mailing with that id exists."""


def letter_id(mailing_id: str, seq: int) -> str:
    """The MessageId of a mailing's letter to row ``seq`` (RFC 2822 msg-id shape, sorted by row)."""
    return f"ml.{mailing_id}.{seq:010d}@mailing"


def _letter_range(mailing_id: str) -> tuple[str, str]:
    prefix = f"ml.{mailing_id}."
    return prefix, prefix[:-1] + "/"  # "/" sorts right after "."


@dataclass(frozen=True, slots=True)
class Mailing:
    """A mailing as stored."""

    id: str
    sender: str
    document: dict[str, Any]
    state: MailingState
    rows: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Row:
    """A recipient row."""

    seq: int
    line: int
    recipient: str
    state: RowState
    reason: str | None = None
    detail: str | None = None
    message_id: str | None = None
    operator: dict[str, Any] | None = None
    payloads: list[dict[str, Any]] | None = None
    properties: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """As the API lists it."""
        return {
            "seq": self.seq,
            "line": self.line,
            "recipient": self.recipient,
            "state": self.state.value,
            "reason": self.reason,
            "detail": self.detail,
            "message_id": self.message_id,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a row (``operator`` None: the row keeps the operator it has)."""

    seq: int
    state: RowState
    reason: str | None = None
    detail: str | None = None
    message_id: str | None = None
    operator: dict[str, Any] | None = None


def _mailing(row: Any) -> Mailing:
    return Mailing(
        row.id, row.sender, dict(row.document), MailingState(row.state), row.rows, row.created_at,
        row.updated_at, row.completed_at,
    )  # fmt: skip


def _row(row: Any) -> Row:
    return Row(
        row.seq, row.line, row.recipient, RowState(row.state), row.reason, row.detail, row.message_id,
        row.operator, row.payloads, row.properties,
    )  # fmt: skip


_SETTLE = (
    update(recipients)
    .where(and_(recipients.c.mailing_id == bindparam("b_mailing"), recipients.c.seq == bindparam("b_seq")))
    .values(
        state=bindparam("b_state"),
        reason=bindparam("b_reason"),
        detail=bindparam("b_detail"),
        message_id=bindparam("b_message_id"),
        # An outcome without an operator keeps the row's: only FaR's check sets one, and the send phase need not
        # write each row's operator back (a JSON document a row).
        operator=func.coalesce(bindparam("b_operator", type_=recipients.c.operator.type), recipients.c.operator),
    )
)


class MailingStore:
    """The mailing tables over the store's database URL."""

    def __init__(self, database: Database) -> None:
        self.db = database

    @classmethod
    async def open(cls, url: str, *, durability: Durability = Durability.POWER_LOSS) -> MailingStore:
        """Migrate the mailing tables on ``url`` (the store's database) and open them."""
        engine = async_engine(url)
        try:
            await MIGRATIONS.upgrade(engine)
        finally:
            await engine.dispose()
        return cls(Database(url, durability=durability))

    async def close(self) -> None:
        """Close the connections."""
        await self.db.dispose()

    # --- intake ---------------------------------------------------------------------------------------------

    async def create(self, mailing_id: str, sender: str, document: Mapping[str, Any], *, now: datetime) -> None:
        """A new mailing, ``receiving`` its recipients; DuplicateMailing when the id is taken."""
        values = {
            "id": mailing_id, "sender": sender, "document": dict(document), "state": MailingState.RECEIVING.value,
            "rows": 0, "created_at": now, "updated_at": now,
        }  # fmt: skip
        try:
            await self.db.run(lambda c: c.execute(insert(mailings).values(**values)))
        except IntegrityError:
            raise DuplicateMailing(mailing_id) from None

    async def add_rows(self, mailing_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Store a batch of recipient rows (``seq``, ``line``, ``recipient``, ``state``, …)."""
        if rows:
            batch = [{"mailing_id": mailing_id, **row} for row in rows]
            await self.db.run(lambda c: c.execute(insert(recipients), batch))

    async def start(self, mailing_id: str, rows: int, *, now: datetime) -> None:
        """The upload is complete: the mailing runs."""
        statement = (
            update(mailings)
            .where(mailings.c.id == mailing_id)
            .values(state=MailingState.RUNNING.value, rows=rows, updated_at=now)
        )
        await self.db.run(lambda c: c.execute(statement))

    async def discard(self, mailing_id: str) -> None:
        """Forget a mailing whose upload did not complete."""

        def drop(connection: Connection) -> None:
            connection.execute(delete(recipients).where(recipients.c.mailing_id == mailing_id))
            connection.execute(delete(mailings).where(mailings.c.id == mailing_id))

        await self.db.run(drop)

    # --- reading --------------------------------------------------------------------------------------------

    async def get(self, mailing_id: str) -> Mailing | None:
        """The mailing, if there is one."""
        row = await self.db.run(lambda c: c.execute(select(mailings).where(mailings.c.id == mailing_id)).first())
        return None if row is None else _mailing(row)

    async def running(self) -> list[str]:
        """The ids of mailings at work."""
        query = select(mailings.c.id).where(mailings.c.state == MailingState.RUNNING.value).order_by(mailings.c.id)
        return list(await self.db.run(lambda c: c.execute(query).scalars().all()))

    async def counts(self, mailing_id: str) -> dict[str, Any]:
        """Counts of the mailing's recipients by state, of its letters by message state, of operators' answers."""
        low, high = _letter_range(mailing_id)
        by_row = (
            select(recipients.c.state, func.count())
            .where(recipients.c.mailing_id == mailing_id)
            .group_by(recipients.c.state)
        )
        in_range = and_(messages.c.direction == "out", messages.c.message_id >= low, messages.c.message_id < high)
        by_letter = select(messages.c.state, func.count()).where(in_range).group_by(messages.c.state)
        answered = (
            select(end_to_end.c.status, func.count())
            .where(and_(end_to_end.c.message_id >= low, end_to_end.c.message_id < high))
            .group_by(end_to_end.c.status)
        )

        def count(connection: Connection) -> dict[str, Any]:
            return {
                "recipients": {str(state): int(n) for state, n in connection.execute(by_row).all()},
                "letters": {str(state): int(n) for state, n in connection.execute(by_letter).all()},
                "end_to_end": {str(status): int(n) for status, n in connection.execute(answered).all()},
            }

        return await self.db.run(count)

    async def rows(
        self, mailing_id: str, *, state: RowState | None = None, after: int = -1, limit: int = 1000
    ) -> list[Row]:
        """Recipient rows in order, from ``after`` on, optionally of one state."""
        query = (
            select(recipients)
            .where(and_(recipients.c.mailing_id == mailing_id, recipients.c.seq > after))
            .order_by(recipients.c.seq)
            .limit(limit)
        )
        if state is not None:
            query = query.where(recipients.c.state == state.value)
        return [_row(r) for r in await self.db.run(lambda c: c.execute(query).all())]

    # --- work -----------------------------------------------------------------------------------------------

    async def claim(self, mailing_id: str, limit: int) -> list[Row]:
        """Up to ``limit`` reachable rows, moved to ``sending`` in the same transaction (one sender at a time)."""

        def take(connection: Connection) -> list[Row]:
            query = (
                select(recipients)
                .where(and_(recipients.c.mailing_id == mailing_id, recipients.c.state == RowState.REACHABLE.value))
                .order_by(recipients.c.seq)
                .limit(limit)
            )
            taken = [_row(r) for r in connection.execute(query).all()]
            if taken:
                connection.execute(
                    update(recipients)
                    .where(
                        and_(
                            recipients.c.mailing_id == mailing_id,
                            recipients.c.seq.in_([r.seq for r in taken]),
                        )
                    )
                    .values(state=RowState.SENDING.value)
                )
            return taken

        return await self.db.run(take)

    async def settle(self, mailing_id: str, outcomes: Sequence[Outcome], *, now: datetime) -> None:
        """Record what became of rows, in one transaction."""
        if not outcomes:
            return
        parameters = [
            {
                "b_mailing": mailing_id, "b_seq": o.seq, "b_state": o.state.value, "b_reason": o.reason,
                "b_detail": o.detail, "b_message_id": o.message_id, "b_operator": o.operator,
            }
            for o in outcomes
        ]  # fmt: skip

        def write(connection: Connection) -> None:
            connection.execute(_SETTLE, parameters)
            connection.execute(update(mailings).where(mailings.c.id == mailing_id).values(updated_at=now))

        await self.db.run(write)

    async def complete(self, mailing_id: str, *, now: datetime) -> bool:
        """Mark the mailing completed; False when it already was."""
        statement = (
            update(mailings)
            .where(and_(mailings.c.id == mailing_id, mailings.c.state == MailingState.RUNNING.value))
            .values(state=MailingState.COMPLETED.value, completed_at=now, updated_at=now)
        )
        done = await self.db.run(lambda c: c.execute(statement).rowcount)
        return bool(done)
