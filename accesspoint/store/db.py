"""Engines for the store (SQLite by default, PostgreSQL by URL) and the migrations run at startup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from accesspoint.servicekit.database import async_url

_Result = TypeVar("_Result")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Any constant will do: every instance of the access point takes the same advisory lock while migrating.
_MIGRATION_LOCK = 0x41533453544F5245  # "AS4STORE"

# How long SQLite waits for another writer before giving up (ms): writers queue rather than fail.
SQLITE_BUSY_TIMEOUT_MS = 10_000


class Durability(StrEnum):
    """What a committed write survives: the store's trade between safety and commits per second."""

    # Every commit and every file is fsynced: survives a power cut. About one commit per disk flush.
    POWER_LOSS = "power-loss"
    # SQLite syncs the WAL only at checkpoints and files are not fsynced: survives kill -9 of the process
    # (the kernel still holds every write), not a power cut or a kernel crash. Many times faster.
    PROCESS_CRASH = "process-crash"


def sqlite_url(path: Path) -> str:
    """The URL of a SQLite database file, the embedded default."""
    return f"sqlite+aiosqlite:///{path}"


def create_engine(url: str | URL, *, durability: Durability = Durability.POWER_LOSS, **options: Any) -> AsyncEngine:
    """An async engine; on SQLite every connection gets WAL, foreign keys, a busy timeout and its durability.

    PostgreSQL keeps its own settings: it flushes each commit, batching concurrent ones into one flush.
    """
    parsed = async_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, pool_pre_ping=True, **options)
    engine = create_async_engine(parsed, **options)
    event.listen(engine.sync_engine, "connect", partial(_sqlite_pragmas, durability))
    return engine


class Database:
    """Runs a function over a Connection in one transaction: in a thread on SQLite, via asyncpg elsewhere.

    Why two ways: aiosqlite hops to its thread for every cursor, execute, fetch and commit, and under load
    each hop costs a scheduling delay; one hop per transaction with the plain driver is five times faster.
    The functions are the same SQLAlchemy Core code either way.
    """

    def __init__(self, url: str | URL, *, durability: Durability = Durability.POWER_LOSS) -> None:
        parsed = async_url(url)
        self.backend = parsed.get_backend_name()
        self._sync: Engine | None = None
        self._async: AsyncEngine | None = None
        if self.backend == "sqlite":
            # Connections move between the threads of the executor, one thread at a time.
            self._sync = create_sync_engine(
                parsed.set(drivername="sqlite+pysqlite"), connect_args={"check_same_thread": False}
            )
            event.listen(self._sync, "connect", partial(_sqlite_pragmas, durability))
        else:
            self._async = create_engine(parsed, durability=durability)

    async def run(self, work: Callable[[Connection], _Result]) -> _Result:
        """Run work in a transaction that commits when it returns and rolls back when it raises."""
        if self._sync is not None:
            return await asyncio.to_thread(self._run_sync, self._sync, work)
        assert self._async is not None
        async with self._async.begin() as connection:
            return await connection.run_sync(work)

    @staticmethod
    def _run_sync(engine: Engine, work: Callable[[Connection], _Result]) -> _Result:
        with engine.begin() as connection:
            return work(connection)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        if self._sync is not None:
            await asyncio.to_thread(self._sync.dispose)
        if self._async is not None:
            await self._async.dispose()


def _sqlite_pragmas(durability: Durability, dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers go on while one writer commits; foreign keys are off in SQLite unless asked for.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # In WAL mode NORMAL loses no commit when the process dies; FULL also keeps them through a power cut.
        synchronous = "FULL" if durability is Durability.POWER_LOSS else "NORMAL"
        cursor.execute(f"PRAGMA synchronous={synchronous}")
    finally:
        cursor.close()


def alembic_config() -> Config:
    """The Alembic configuration of the shipped migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade_to_head(url: str | URL) -> None:
    """Bring the database at url to the newest schema; safe to call from every instance at startup."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Two instances starting together must not both create the tables.
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
