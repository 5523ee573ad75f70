"""The services' own databases (FaR, the SMP, the operator): async engines and Alembic migrations per schema.

Each schema ships its migrations in a folder of its package (``far/migrations``, ``smp/migrations``,
``operators/migrations``) with a two-line ``env.py`` calling :func:`run_environment`, and keeps its revisions in
a version table of its own (``far_alembic_version`` …), so several schemas, the message store's included, can
share one PostgreSQL database. :meth:`Migrations.upgrade` is safe from every instance at start-up (a PostgreSQL
advisory lock per schema), and adopts a database made before the schema had migrations (tables there, no
version table) by recording the first revision as done instead of creating the tables again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, event, inspect, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# WAL lets readers go on while one writer commits; foreign keys are off in SQLite unless asked for; writers wait
# for each other rather than fail; FULL keeps every commit through a power cut (NORMAL: through a process crash).
SQLITE_PRAGMAS = ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=10000", "synchronous=FULL")


def async_url(url: str | URL) -> URL:
    """The async driver for a URL that names only the database (``sqlite:///``, ``postgresql://``)."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        return parsed.set(drivername="postgresql+asyncpg")
    return parsed


def _pragmas(pragmas: Sequence[str], dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


def create_engine(url: str | URL, *, pragmas: Sequence[str] = SQLITE_PRAGMAS, **options: Any) -> AsyncEngine:
    """An async engine; every SQLite connection gets ``pragmas``, PostgreSQL connections are pinged before use."""
    parsed = async_url(url)
    if parsed.get_backend_name() != "sqlite":
        options.setdefault("pool_pre_ping", True)
        return create_async_engine(parsed, **options)
    engine = create_async_engine(parsed, **options)
    event.listen(engine.sync_engine, "connect", partial(_pragmas, tuple(pragmas)))
    return engine


_Result = TypeVar("_Result")


class Database:
    """Runs a function over a Connection in one transaction: in a thread on SQLite, via asyncpg elsewhere.

    Why two ways: aiosqlite hops to its thread for every cursor, execute, fetch and commit, and under load
    each hop costs a scheduling delay; one hop per transaction with the plain driver is five times faster.
    The functions are the same SQLAlchemy Core code either way.
    """

    def __init__(self, url: str | URL, *, pragmas: Sequence[str] = SQLITE_PRAGMAS) -> None:
        parsed = async_url(url)
        self.backend = parsed.get_backend_name()
        self._sync: Engine | None = None
        self._async: AsyncEngine | None = None
        if self.backend == "sqlite":
            # Connections move between the threads of the executor, one thread at a time.
            self._sync = create_sync_engine(
                parsed.set(drivername="sqlite+pysqlite"), connect_args={"check_same_thread": False}
            )
            event.listen(self._sync, "connect", partial(_pragmas, tuple(pragmas)))
        else:
            self._async = create_engine(parsed, pragmas=pragmas)

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


class Migrations:
    """One schema's migrations: the folder with ``env.py`` and ``versions/``, and the schema's version table.

    ``adopt_tables``: tables the first revision creates; a database that has them all but no version table was
    made before migrations existed, and gets the first revision recorded rather than run.
    """

    def __init__(self, folder: Path, *, version_table: str, adopt_tables: Collection[str] = ()) -> None:
        self.folder = folder
        self.version_table = version_table
        self.adopt_tables = frozenset(adopt_tables)
        # Any stable 63-bit number will do: every instance migrating this schema takes the same lock.
        self.lock = int.from_bytes(hashlib.sha256(version_table.encode()).digest()[:8], "big") >> 1

    def config(self, connection: Connection | None = None) -> Config:
        """The Alembic configuration (no alembic.ini needed); ``connection`` is the one ``env.py`` runs on."""
        config = Config()
        config.set_main_option("script_location", str(self.folder))
        config.attributes["version_table"] = self.version_table
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    @property
    def head(self) -> str:
        """The newest revision."""
        head = ScriptDirectory.from_config(self.config()).get_current_head()
        assert head is not None, f"{self.folder} has no revisions"
        return head

    async def upgrade(self, engine: AsyncEngine) -> None:
        """Bring the schema on ``engine`` to the newest revision, in one transaction."""
        async with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # SQLite changes a table by copying, dropping and renaming it (batch mode): dropping a table others
                # refer to would break their foreign keys midway. SQLite's own procedure: foreign keys off outside
                # the transaction (the pragma does nothing inside one), checked as a whole before the commit.
                await connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
                await connection.commit()
            try:
                async with connection.begin():
                    # Two instances starting together must not both create the tables: the second waits.
                    if connection.dialect.name == "postgresql":
                        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.lock})
                    elif sqlite:
                        # Take the write lock now (busy_timeout makes the other wait) rather than at the first
                        # CREATE, where two readers upgrading to writers would fail with "database is locked". The
                        # driver sends no BEGIN of its own before a statement that is not DML, and commits the
                        # transaction this one opens.
                        await connection.exec_driver_sql("BEGIN IMMEDIATE")
                    await connection.run_sync(self._upgrade)
                    if sqlite:
                        broken = (await connection.exec_driver_sql("PRAGMA foreign_key_check")).fetchall()
                        if broken:
                            raise RuntimeError(f"{self.version_table}: the migration breaks foreign keys: {broken}")
            finally:
                if sqlite:
                    await connection.exec_driver_sql("PRAGMA foreign_keys = ON")
                    await connection.commit()

    async def current(self, engine: AsyncEngine) -> str | None:
        """The revision the schema on ``engine`` is at (None: not migrated)."""
        async with engine.connect() as connection:
            return await connection.run_sync(self._current)

    def _current(self, connection: Connection) -> str | None:
        if not inspect(connection).has_table(self.version_table):
            return None
        return connection.execute(text(f"SELECT version_num FROM {self.version_table}")).scalar()  # noqa: S608

    def _upgrade(self, connection: Connection) -> None:
        config = self.config(connection)
        inspector = inspect(connection)
        if (
            self.adopt_tables
            and not inspector.has_table(self.version_table)
            and all(inspector.has_table(table) for table in self.adopt_tables)
        ):
            script = ScriptDirectory.from_config(config)
            first = next(r for r in script.walk_revisions() if r.down_revision is None)
            command.stamp(config, first.revision)
        # "heads": revisions made on parallel branches (each on the same parent) are all applied.
        command.upgrade(config, "heads")


def run_environment(metadata: MetaData) -> None:
    """The body of a schema's ``env.py``: run its migrations on the connection :class:`Migrations` hands over."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        # Offline SQL scripts and alembic's own CLI would bypass the advisory lock and the SQLite pragmas.
        raise RuntimeError("run migrations through accesspoint.servicekit.database.Migrations.upgrade")
    # Batch mode lets later revisions alter tables on SQLite, which has no ALTER COLUMN.
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        version_table=context.config.attributes["version_table"],
    )
    with context.begin_transaction():
        context.run_migrations()
