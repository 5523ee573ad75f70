"""The webhook/job outbox, route targets and idempotency keys: state that lived in files beside the database."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Spelled out rather than imported from schema.py: a revision must keep creating what it created then.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create outbox, route_targets and idempotency_keys."""
    op.create_table(
        "outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("sink", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("available_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("last_error", sa.Text()),
        sa.Column("settled_at", sa.DateTime()),
        sa.Column("outcome", sa.String(16)),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_id", "sink", name="uq_outbox_event_id_sink"),
    )
    op.create_index("ix_outbox_sink_settled_at", "outbox", ["sink", "settled_at"])
    op.create_index("ix_outbox_settled_at", "outbox", ["settled_at"])
    op.create_table(
        "route_targets",
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("received_message_id", sa.String(255), nullable=False),
        sa.Column("operator_id", sa.String(255), nullable=False),
        sa.Column("operator_name", sa.String(255), nullable=False),
        sa.Column("party_id", sa.String(255), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_route_targets"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("idempotency_keys")
    op.drop_table("route_targets")
    op.drop_index("ix_outbox_settled_at", table_name="outbox")
    op.drop_index("ix_outbox_sink_settled_at", table_name="outbox")
    op.drop_table("outbox")
