"""Mailings and their recipients."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Spelled out rather than imported: a revision keeps creating what it created then. The store keeps naive UTC
# times (accesspoint/store/schema.py UtcDateTime).
Moment = sa.DateTime()


def upgrade() -> None:
    """Create the two tables."""
    op.create_table(
        "mailings",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("sender", sa.String(256), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("created_at", Moment, nullable=False),
        sa.Column("updated_at", Moment, nullable=False),
        sa.Column("completed_at", Moment, nullable=True),
    )
    op.create_table(
        "mailing_recipients",
        sa.Column("mailing_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("operator", sa.JSON(), nullable=True),
        sa.Column("payloads", sa.JSON(), nullable=True),
        sa.Column("properties", sa.JSON(), nullable=True),
    )
    op.create_index("ix_mailing_recipients_state", "mailing_recipients", ["mailing_id", "state", "seq"])


def downgrade() -> None:
    """Drop them."""
    op.drop_table("mailing_recipients")
    op.drop_table("mailings")
