"""Writes that ride along with a message's insert or move: outbox events, route targets, idempotency keys. What a
move causes is committed with it (in the writer's batch: one transaction) or not at all, so a restart never finds
one without the other.

A hook turns the message as the insert or move leaves it into rows (``ops.Also``); the store hands them to the
writer with the operation, and the writer writes them only when the insert or move happens. Since the rows are
built before the write, the message a hook sees is the one the write will leave, not read back: its ``pk`` is not
known yet for an insert (0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection, insert

from accesspoint.store import schema
from accesspoint.store.ops import Also
from accesspoint.store.records import StoredMessage


class TransactionHook(Protocol):
    """Something written with a message's insert or move."""

    def rows(self, message: StoredMessage) -> Sequence[Also]:
        """The rows to write, given the message as the insert or move leaves it (raising stops the write)."""
        ...

    def committed(self) -> None:
        """Called once the rows committed (wake whoever waits for them); must not raise."""
        ...


def rows_of(hooks: Sequence[TransactionHook], message: StoredMessage) -> tuple[Also, ...]:
    """Every hook's rows for message."""
    return tuple(row for hook in hooks for row in hook.rows(message))


def committed_all(hooks: Sequence[TransactionHook]) -> None:
    """Tell every hook its rows committed."""
    for hook in hooks:
        hook.committed()


def write_also(connection: Connection, rows: Sequence[Also]) -> None:
    """Insert rows in a SQLAlchemy transaction (for writes that do not go through the writer)."""
    for row in rows:
        connection.execute(insert(schema.metadata.tables[row.table]), dict(row.values))
