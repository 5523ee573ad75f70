"""Operator approval: each operator's status (approved, suspended, revoked), since when, who decided it, why, and
the audit row that recorded the decision (far/service.py). Operators already in the register are approved, since
their last change, decided by this migration."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "o001"
down_revision = "h001"
branch_labels = None
depends_on = None

Moment = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Columns added with ALTER TABLE ADD COLUMN (far_operators stays WITHOUT ROWID on SQLite)."""
    op.add_column("far_operators", sa.Column("status", sa.String(10), nullable=False, server_default="approved"))
    op.add_column("far_operators", sa.Column("status_since", Moment, nullable=True))
    op.add_column("far_operators", sa.Column("status_decided_by", sa.String(128), nullable=True))
    op.add_column("far_operators", sa.Column("status_reason", sa.String(512), nullable=True))
    op.add_column("far_operators", sa.Column("status_audit_id", BigId, nullable=True))
    op.execute(
        "UPDATE far_operators SET status_since = updated_at, status_decided_by = 'migration o001', "
        "status_reason = 'in the register before operator approval'"
    )


def downgrade() -> None:
    """Drop the approval columns (batch mode: SQLite before 3.35 cannot drop a column in place)."""
    with op.batch_alter_table("far_operators") as batch:
        for column in ("status_audit_id", "status_reason", "status_decided_by", "status_since", "status"):
            batch.drop_column(column)
