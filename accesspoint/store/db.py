"""Engines for the store (SQLite by default, PostgreSQL by URL) and the migrations run at startup."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import exc as sa_exc
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


class StoreUnavailable(Exception):
    """The database cannot be reached now, or failed in a way that a later try may not (a restart, a lock).

    The transaction did not commit, except in the one case no client can rule out: the connection broke while
    the commit's answer was on its way. Callers answer "try again later" (HTTP 503) or back off; they never
    conclude that what they asked for failed for good.
    """


def transient(error: BaseException) -> bool:
    """Whether error (or what caused it) is the database being away or busy rather than a refused statement."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, sa_exc.IntegrityError | sa_exc.ProgrammingError | sa_exc.DataError):
            return False  # the statement was refused: trying again gives the same answer
        if isinstance(current, StoreUnavailable | OSError | TimeoutError | sa_exc.OperationalError):
            return True
        if isinstance(current, sqlite3.OperationalError):  # locked past the busy timeout, an I/O error
            return True
        if isinstance(current, sa_exc.InterfaceError | sa_exc.DisconnectionError):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if _asyncpg_transient(current):
            return True
        pending += [current.__cause__, current.__context__, getattr(current, "orig", None)]
    return False


# asyncpg's connection errors, a closed or broken connection, and SQLSTATE class 57P (admin or crash shutdown,
# starting up); matched by name so that the store does not import the optional driver. InternalClientError is a
# connection left mid-operation by a server that went away ("cannot switch to state …; another operation is in
# progress"): raised before anything is sent, and the connection is replaced, so trying again is right.
_ASYNCPG_TRANSIENT = frozenset(
    {"PostgresConnectionError", "InterfaceError", "OperatorInterventionError", "InternalClientError"}
)


def _asyncpg_transient(error: BaseException) -> bool:
    return any(
        kind.__module__.startswith("asyncpg") and kind.__name__ in _ASYNCPG_TRANSIENT for kind in type(error).__mro__
    )


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
        """Run work in a transaction that commits when it returns and rolls back when it raises.

        StoreUnavailable when the database is away or busy (see ``transient``); other errors as raised.
        """
        try:
            if self._sync is not None:
                return await asyncio.to_thread(self._run_sync, self._sync, work)
            assert self._async is not None
            async with self._async.begin() as connection:
                return await connection.run_sync(work)
        except StoreUnavailable:
            raise
        except Exception as error:
            if transient(error):
                raise StoreUnavailable(f"{type(error).__name__}: {error}"[:500]) from error
            raise

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
