"""What the end-to-end benchmarks read from the sending access point's database: how far a run has got.

The sender's ``messages`` table, read-only: on SQLite through sqlite3 on the file, on PostgreSQL through asyncpg.
Both the load generator (to keep a window in flight) and the measuring process (to wait for a run to settle and to
take each message's delivery time) use it.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any, Protocol

TERMINAL = ("delivered", "failed")


class Ledger(Protocol):
    """The sender's messages, as far as the benchmark needs them."""

    async def last_id(self) -> int:
        """The highest message row id so far (a run's messages come after it)."""
        ...

    async def settled(self, first_id: int) -> int:
        """How many messages after first_id are delivered or failed."""
        ...

    async def rows(self, first_id: int) -> list[tuple[str, str, float]]:
        """(MessageId, state, epoch seconds of its last move) of each message after first_id."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


async def open_ledger(url: str) -> Ledger:
    """A ledger on ``sqlite:///FILE`` or a ``postgresql://`` URL."""
    if url.startswith("sqlite:///"):
        return SqliteLedger(url.removeprefix("sqlite:///"))
    import asyncpg

    return PostgresLedger(await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://")))


class SqliteLedger:
    """The sender's SQLite file, opened read-only (WAL: readers never block its writer)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    async def last_id(self) -> int:
        """The highest message row id so far."""
        return int(self._db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0])

    async def settled(self, first_id: int) -> int:
        """Messages after first_id delivered or failed."""
        query = "SELECT count(*) FROM messages WHERE id > ? AND state IN (?, ?)"
        return int(self._db.execute(query, (first_id, *TERMINAL)).fetchone()[0])

    async def rows(self, first_id: int) -> list[tuple[str, str, float]]:
        """(MessageId, state, updated_at as epoch seconds) after first_id."""
        query = "SELECT message_id, state, updated_at FROM messages WHERE id > ?"
        return [(mid, state, _epoch(at)) for mid, state, at in self._db.execute(query, (first_id,))]

    async def close(self) -> None:
        """Close the file."""
        self._db.close()


class PostgresLedger:
    """The sender's PostgreSQL database over one asyncpg connection."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def last_id(self) -> int:
        """The highest message row id so far."""
        return int(await self._connection.fetchval("SELECT coalesce(max(id), 0) FROM messages"))

    async def settled(self, first_id: int) -> int:
        """Messages after first_id delivered or failed."""
        query = "SELECT count(*) FROM messages WHERE id > $1 AND state = ANY($2::text[])"
        return int(await self._connection.fetchval(query, first_id, list(TERMINAL)))

    async def rows(self, first_id: int) -> list[tuple[str, str, float]]:
        """(MessageId, state, updated_at as epoch seconds) after first_id."""
        query = "SELECT message_id, state, updated_at FROM messages WHERE id > $1"
        return [(r[0], r[1], _epoch(r[2])) for r in await self._connection.fetch(query, first_id)]

    async def close(self) -> None:
        """Close the connection."""
        await self._connection.close()


def _epoch(value: str | datetime) -> float:
    """A stored naive-UTC datetime (SQLite text or a PostgreSQL timestamp) as epoch seconds."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC).timestamp()
