"""FaR's register: operators, recipients, refusals and the audit trail (as ``create_all`` made them before)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Spelled out rather than imported from far/model.py: a revision must keep creating what it created then.
# model.UtcDateTime: timestamptz on PostgreSQL, fixed-width ISO 8601 text on SQLite.
Moment = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the four tables; the keyed ones WITHOUT ROWID on SQLite (the key is the table)."""
    op.create_table(
        "far_operators",
        sa.Column("id", sa.String(10), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("party_id", sa.String(512), nullable=False),
        sa.Column("endpoint", sa.String(2048), nullable=True),
        sa.Column("service_address", sa.String(2048), nullable=True),
        sa.Column("ui_address", sa.String(2048), nullable=True),
        sa.Column("updated_at", Moment, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "far_recipients",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("operator_id", sa.String(10), sa.ForeignKey("far_operators.id"), nullable=True),
        sa.Column("last_registration", Moment, nullable=True),
        sa.Column("updated_at", Moment, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("far_recipients_operator", "far_recipients", ["operator_id"])
    op.create_table(
        "far_refusals",
        sa.Column("recipient_id", sa.String(256), primary_key=True),
        sa.Column("sender_orgnr", sa.String(10), primary_key=True),
        sa.Column("created_at", Moment, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("far_refusals_sender", "far_refusals", ["sender_orgnr"])
    op.create_table(
        "far_audit",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", Moment, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("entity", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.String(300), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("far_audit_entity", "far_audit", ["entity", "entity_id"])


def downgrade() -> None:
    """Drop the four tables."""
    op.drop_table("far_audit")
    op.drop_table("far_refusals")
    op.drop_table("far_recipients")
    op.drop_table("far_operators")
