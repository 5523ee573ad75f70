"""The end_to_end table: the recipient's operator's verified answer to an outgoing message."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create end_to_end."""
    op.create_table(
        "end_to_end",
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("operator", sa.String(255), nullable=False),
        sa.Column("operator_subject", sa.Text(), nullable=False),
        sa.Column("operator_sha256", sa.String(64), nullable=False),
        sa.Column("reply_message_id", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(255)),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_end_to_end"),
    )


def downgrade() -> None:
    """Drop end_to_end."""
    op.drop_table("end_to_end")
