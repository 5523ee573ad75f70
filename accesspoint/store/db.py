"""Engines for the store (SQLite by default, PostgreSQL by URL) and the migrations run at startup."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from accesspoint.servicekit import database as servicekit

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
    return servicekit.create_engine(url, pragmas=sqlite_pragmas(durability), **options)


class Database(servicekit.Database):
    """The toolkit's transaction runner with the store's durability and its StoreUnavailable for transient errors."""

    def __init__(self, url: str | URL, *, durability: Durability = Durability.POWER_LOSS) -> None:
        super().__init__(url, pragmas=sqlite_pragmas(durability))

    async def run(self, work: Callable[[Connection], _Result]) -> _Result:
        """Run work in a transaction that commits when it returns and rolls back when it raises.

        StoreUnavailable when the database is away or busy (see ``transient``); other errors as raised.
        """
        try:
            return await super().run(work)
        except StoreUnavailable:
            raise
        except Exception as error:
            if transient(error):
                raise StoreUnavailable(f"{type(error).__name__}: {error}"[:500]) from error
            raise


def sqlite_pragmas(durability: Durability) -> tuple[str, ...]:
    """The store's SQLite settings: WAL, foreign keys, a busy timeout and the sync its durability asks for."""
    # In WAL mode NORMAL loses no commit when the process dies; FULL also keeps them through a power cut.
    synchronous = "FULL" if durability is Durability.POWER_LOSS else "NORMAL"
    busy = f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}"
    return ("journal_mode=WAL", "foreign_keys=ON", busy, f"synchronous={synchronous}")


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
