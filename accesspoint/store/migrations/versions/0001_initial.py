"""Messages, payloads, evidence and the transition audit."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Spelled out rather than imported from schema.py: a revision must keep creating what it created then.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the four tables."""
    op.create_table(
        "messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("ref_to_message_id", sa.String(255)),
        sa.Column("conversation_id", sa.String(255)),
        sa.Column("pmode_id", sa.String(255)),
        sa.Column("leg", sa.Integer()),
        sa.Column("mpc", sa.String(255)),
        sa.Column("from_party", sa.String(255)),
        sa.Column("to_party", sa.String(255)),
        sa.Column("service", sa.String(255)),
        sa.Column("action", sa.String(255)),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime()),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_until", sa.DateTime()),
        sa.Column("last_error_code", sa.String(32)),
        sa.Column("last_error_detail", sa.Text()),
        sa.Column("payload_bytes", sa.BigInteger(), nullable=False),
        sa.Column("payloads_purged_at", sa.DateTime()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("direction", "message_id", name="uq_messages_direction_message_id"),
    )
    op.create_index("ix_messages_state_next_attempt_at", "messages", ["state", "next_attempt_at"])
    op.create_index("ix_messages_ref_to_message_id", "messages", ["ref_to_message_id"])
    op.create_index("ix_messages_updated_at", "messages", ["updated_at"])
    op.create_table(
        "payloads",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("message", BigId, nullable=False),
        sa.Column("content_id", sa.String(255), nullable=False),
        sa.Column("mime_type", sa.String(255), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payloads"),
        sa.ForeignKeyConstraint(["message"], ["messages.id"], name="fk_payloads_message", ondelete="CASCADE"),
        sa.UniqueConstraint("message", "content_id", name="uq_payloads_message_content_id"),
    )
    op.create_table(
        "evidence",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("retain_until", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_evidence"),
    )
    op.create_index("ix_evidence_message_id", "evidence", ["message_id"])
    op.create_index("ix_evidence_retain_until", "evidence", ["retain_until"])
    op.create_table(
        "transitions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("message", BigId, nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(255)),
        sa.Column("detail", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_transitions"),
        sa.ForeignKeyConstraint(["message"], ["messages.id"], name="fk_transitions_message", ondelete="CASCADE"),
    )
    op.create_index("ix_transitions_message", "transitions", ["message"])


def downgrade() -> None:
    """Drop the four tables."""
    op.drop_table("transitions")
    op.drop_table("evidence")
    op.drop_table("payloads")
    op.drop_table("messages")
