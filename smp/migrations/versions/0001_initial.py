"""Service groups and service metadata (as ``create_all`` made them before)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the two tables."""
    op.create_table(
        "smp_service_group",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("scheme", sa.String(200), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
    )
    op.create_table(
        "smp_service_metadata",
        sa.Column("group_key", sa.String(300), sa.ForeignKey("smp_service_group.key"), primary_key=True),
        sa.Column("document", sa.String(600), primary_key=True),
        sa.Column("body", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    """Drop the two tables."""
    op.drop_table("smp_service_metadata")
    op.drop_table("smp_service_group")
