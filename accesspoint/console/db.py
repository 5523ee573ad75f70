"""The console's database: its migrations (version table ``console_alembic_version``) and transactions.

Transactions run through the store's ``Database`` (one thread hop per transaction on SQLite, asyncpg on
PostgreSQL), so the console's code is plain SQLAlchemy Core over a Connection, as the store's is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, select

from accesspoint.console import model
from accesspoint.servicekit.database import Migrations, create_engine
from accesspoint.store.db import Database

MIGRATIONS = Migrations(Path(__file__).resolve().parent / "migrations", version_table="console_alembic_version")

_Result = TypeVar("_Result")


class ConsoleDb:
    """The console's tables on one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.database = Database(url)

    @classmethod
    async def open(cls, url: str) -> ConsoleDb:
        """Bring the schema up to date, then connect."""
        engine = create_engine(url)
        try:
            await MIGRATIONS.upgrade(engine)
        finally:
            await engine.dispose()
        return cls(url)

    async def run(self, work: Callable[[Connection], _Result]) -> _Result:
        """``work`` in one transaction."""
        return await self.database.run(work)

    async def close(self) -> None:
        """Close its connections."""
        await self.database.dispose()

    async def cursor(self, name: str) -> Any:
        """A named value kept for restarts (None when never set)."""

        def read(connection: Connection) -> Any:
            value = connection.execute(select(model.cursors.c.value).where(model.cursors.c.name == name)).scalar()
            return None if value is None else json.loads(value)

        return await self.run(read)

    async def set_cursor(self, name: str, value: Any) -> None:
        """Keep a named value."""
        text = json.dumps(value)

        def write(connection: Connection) -> None:
            table = model.cursors
            updated = connection.execute(table.update().where(table.c.name == name).values(value=text)).rowcount
            if not updated:
                connection.execute(table.insert().values(name=name, value=text))

        await self.run(write)
