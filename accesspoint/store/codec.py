"""Values in and out of the store's tables as SQLAlchemy stores them, for the writers that talk to the driver.

The writers (``writer.py``, ``writer_pg.py``) use sqlite3 and asyncpg directly while every read goes through
SQLAlchemy, so both must agree on each column's format (a SQLite datetime is a string compared in SQL).
SQLAlchemy's own processors cost several microseconds per datetime; these do the same in a fraction of that,
and ``tests/test_store_writer.py`` checks that they agree with SQLAlchemy's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from accesspoint.store import schema
from accesspoint.store.records import StoredMessage
from accesspoint.store.states import Direction, MessageState

if TYPE_CHECKING:
    from accesspoint.store.ops import Insert

MESSAGE_COLUMNS = tuple(column.name for column in schema.messages.columns)
_DATETIMES = frozenset(column.name for column in schema.messages.columns if isinstance(column.type, schema.UtcDateTime))

# The columns a new message row is inserted with; the others start empty.
INSERT_COLUMNS = (
    "direction", "message_id", "ref_to_message_id", "conversation_id", "pmode_id", "leg", "mpc", "from_party",
    "to_party", "service", "action", "state", "version", "attempts", "payload_bytes", "created_at", "updated_at",
)  # fmt: skip


def utc(value: datetime) -> datetime:
    """An aware datetime in UTC (the store refuses naive ones, as ``schema.UtcDateTime`` does)."""
    if value.tzinfo is None:
        raise ValueError("the store takes timezone-aware datetimes only")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def sqlite_datetime(value: datetime | None) -> str | None:
    """A datetime as SQLAlchemy's SQLite dialect stores it: naive UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if value is None:
        return None
    return utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")


def from_sqlite_datetime(value: str | None) -> datetime | None:
    """The aware UTC datetime of a stored SQLite datetime."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def postgres_datetime(value: datetime | None) -> datetime | None:
    """A datetime as the store keeps it on PostgreSQL: ``timestamp without time zone`` in UTC."""
    return None if value is None else utc(value).replace(tzinfo=None)


def from_postgres_datetime(value: datetime | None) -> datetime | None:
    """The aware UTC datetime of a stored PostgreSQL timestamp."""
    return None if value is None else value.replace(tzinfo=UTC)


def json_text(value: Mapping[str, Any]) -> str:
    """A JSON object column's value as SQLAlchemy serialises it."""
    return json.dumps(dict(value)) if value else "{}"


class MessageRows:
    """Message rows of one backend: the values of a new row, and a row read back as a StoredMessage."""

    def __init__(
        self, to_database: Callable[[datetime | None], Any], from_database: Callable[[Any], datetime | None]
    ) -> None:
        self.to_database = to_database
        readers: list[Callable[[Any], Any]] = []
        for name in MESSAGE_COLUMNS:
            readers.append(from_database if name in _DATETIMES else _same)
        self._readers = readers

    def insert_values(self, op: Insert, state: MessageState, payload_bytes: int) -> tuple[Any, ...]:
        """The values of INSERT_COLUMNS for a new message."""
        info, now = op.info, self.to_database(op.now)
        return (
            op.direction.value, info.message_id, info.ref_to_message_id, info.conversation_id, info.pmode_id,
            info.leg, info.mpc, info.from_party, info.to_party, info.service, info.action, state.value, 1, 0,
            payload_bytes, now, now,
        )  # fmt: skip

    def message(self, row: Sequence[Any]) -> StoredMessage:
        """A row of every column (in table order) as a StoredMessage."""
        values = {name: read(value) for name, read, value in zip(MESSAGE_COLUMNS, self._readers, row, strict=True)}
        values["pk"] = values.pop("id")
        values["direction"] = Direction(values["direction"])
        values["state"] = MessageState(values["state"])
        return StoredMessage(**values)


def new_message(pk: int, op: Insert, state: MessageState, payload_bytes: int) -> StoredMessage:
    """The row an insert just wrote, without reading it back."""
    info, now = op.info, utc(op.now)
    return StoredMessage(
        pk=pk, direction=op.direction, message_id=info.message_id, ref_to_message_id=info.ref_to_message_id,
        conversation_id=info.conversation_id, pmode_id=info.pmode_id, leg=info.leg, mpc=info.mpc,
        from_party=info.from_party, to_party=info.to_party, service=info.service, action=info.action, state=state,
        version=1, attempts=0, next_attempt_at=None, lease_owner=None, lease_until=None, last_error_code=None,
        last_error_detail=None, payload_bytes=payload_bytes, payloads_purged_at=None, created_at=now, updated_at=now,
    )  # fmt: skip


def _same(value: Any) -> Any:
    return value
