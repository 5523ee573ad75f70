"""The services' own schemas (FaR, the SMP, the operator): their migrations make exactly what the code declares,
on SQLite and PostgreSQL, and a database made before migrations existed is adopted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from accesspoint.servicekit.database import Migrations, create_engine
from far import model as far_model
from operators import mailbox, twoway_store  # noqa: F401  (its tables join the mailbox metadata)
from smp import store as smp_store


@dataclass(frozen=True)
class Schema:
    """One service's tables, migrations and engine factory."""

    name: str
    metadata: MetaData
    migrations: Migrations
    engine: Callable[[str], AsyncEngine]


SCHEMAS = [
    Schema("far", far_model.metadata, far_model.MIGRATIONS, far_model.create_engine),
    Schema("smp", smp_store.metadata, smp_store.MIGRATIONS, create_engine),
    # The two-way tables join the operator's metadata when their module is imported.
    Schema("operators", mailbox.metadata, mailbox.MIGRATIONS, mailbox.create_engine),
]


def _differences(connection: Connection, schema: Schema) -> list[Any]:
    options = {"compare_type": True, "version_table": schema.migrations.version_table}
    return list(compare_metadata(MigrationContext.configure(connection, opts=options), schema.metadata))


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.name)
async def test_migrations_make_the_declared_schema(schema: Schema, database_url: str) -> None:
    """Upgraded to head, the database has the tables, columns, types and indexes the code declares, nothing more."""
    engine = schema.engine(database_url)
    try:
        await schema.migrations.upgrade(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences, schema) == []
            tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        assert tables == {*schema.metadata.tables, schema.migrations.version_table}
        assert await schema.migrations.current(engine) == schema.migrations.head
    finally:
        await engine.dispose()


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.name)
async def test_a_database_made_before_migrations_is_adopted(schema: Schema, tmp_path: Path) -> None:
    """Tables from create_all, as the service made them before: recorded as migrated, not created a second time."""
    engine = schema.engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_first_revision_without_version_table, schema.migrations)
        assert await schema.migrations.current(engine) is None
        await schema.migrations.upgrade(engine)
        assert await schema.migrations.current(engine) == schema.migrations.head
    finally:
        await engine.dispose()


def _first_revision_without_version_table(connection: Connection, migrations: Migrations) -> None:
    """The tables as the service made them before it had migrations: the first revision's schema (later revisions
    change it, so the code's metadata of today is not it), and no version table."""
    config = migrations.config(connection)
    first = next(r for r in ScriptDirectory.from_config(config).walk_revisions() if r.down_revision is None)
    command.upgrade(config, first.revision)
    connection.execute(text(f"DROP TABLE {migrations.version_table}"))
