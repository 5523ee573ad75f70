"""Holders' encryption certificates (end-to-end encryption to the mailbox holder, far/holder_keys.py)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "e001"
down_revision = "0002"
branch_labels = None
depends_on = None

Moment = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")


def upgrade() -> None:
    """Create far_holder_keys."""
    op.create_table(
        "far_holder_keys",
        sa.Column("recipient_id", sa.String(256), primary_key=True),
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("operator_id", sa.String(10), nullable=False),
        sa.Column("registered_at", Moment, nullable=False),
        sa.Column("not_after", Moment, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    """Drop far_holder_keys."""
    op.drop_table("far_holder_keys")
