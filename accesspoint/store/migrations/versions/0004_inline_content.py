"""Short payloads and evidence kept inline in their rows (``data``), committed with them; ``path`` only for files.

Numbered 0004 to leave 0003 to the outbox/route/idempotency revision developed beside it; whichever lands second
points its ``down_revision`` at the other.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``data`` to payloads and evidence; ``path`` may be empty where ``data`` holds the bytes."""
    for table in ("payloads", "evidence"):
        # Batch mode: SQLite cannot drop NOT NULL in place, so Alembic copies the table (once, at upgrade).
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("data", sa.LargeBinary()))
            batch.alter_column("path", existing_type=sa.String(255), nullable=True)


def downgrade() -> None:
    """Drop ``data`` (rows kept inline lose their bytes: run only on a store that has none)."""
    for table in ("payloads", "evidence"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("data")
            batch.alter_column("path", existing_type=sa.String(255), nullable=False)
