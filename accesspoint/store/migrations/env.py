"""Alembic environment: runs on the connection that ``upgrade_to_head`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from accesspoint.store.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    # Offline SQL scripts and alembic's own CLI would bypass the advisory lock and the SQLite pragmas.
    raise RuntimeError("run migrations through accesspoint.store.upgrade_to_head(url)")

# Batch mode lets later revisions alter tables on SQLite, which has no ALTER COLUMN.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
