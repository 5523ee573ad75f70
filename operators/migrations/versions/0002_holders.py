"""Holders: mailbox keys of 256 characters (eIDAS identifiers), mailbox states, letters kept as received,
the audit trail, sessions, used nonces, notification contacts, moves between operators and their batches."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Moment = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Widen the keys, add the mailbox columns, create the new tables."""
    with op.batch_alter_table("mailboxes") as batch:
        batch.alter_column("recipient", type_=sa.String(256), existing_type=sa.String(64))
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="active"))
        batch.add_column(sa.Column("holder_name", sa.String(256), nullable=True))
        batch.add_column(sa.Column("closed_at", Moment, nullable=True))
    with op.batch_alter_table("mail") as batch:
        batch.alter_column("recipient", type_=sa.String(256), existing_type=sa.String(64))
    op.create_table(
        "letters",
        sa.Column("uid", sa.String(36), primary_key=True),
        sa.Column("recipient", sa.String(256), sa.ForeignKey("mailboxes.recipient"), nullable=False),
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("network", sa.String(32), nullable=False),
        sa.Column("business_id", sa.String(255), nullable=False),
        sa.Column("sender", sa.String(255), nullable=False),
        sa.Column("received_at", Moment, nullable=False),
        sa.Column("parts", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("answered_by", sa.String(64), nullable=True),
        sa.Column("imported_from", sa.String(64), nullable=True),
        sa.Column("imported_at", Moment, nullable=True),
        sa.UniqueConstraint("recipient", "origin", name="uq_letter_origin"),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", Moment, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("mailbox", sa.String(256), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_audit_mailbox", "audit", ["mailbox"])
    op.create_table(
        "sessions",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("person", sa.String(256), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created_at", Moment, nullable=False),
        sa.Column("expires_at", Moment, nullable=False),
    )
    op.create_table(
        "used_nonces",
        sa.Column("nonce", sa.String(200), primary_key=True),
        sa.Column("used_at", Moment, nullable=False),
    )
    op.create_table(
        "contacts",
        sa.Column("mailbox", sa.String(256), primary_key=True),
        sa.Column("person", sa.String(256), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "moves",
        sa.Column("switch_id", sa.String(64), primary_key=True),
        sa.Column("recipient", sa.String(256), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("peer", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", Moment, nullable=False),
        sa.Column("updated_at", Moment, nullable=False),
    )
    op.create_table(
        "batches",
        sa.Column("switch_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("side", sa.String(8), primary_key=True),
        sa.Column("letters", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("updated_at", Moment, nullable=False),
    )


def downgrade() -> None:
    """Drop the new tables and columns (keys stay 256 wide)."""
    for table in ("batches", "moves", "contacts", "used_nonces", "sessions", "audit", "letters"):
        op.drop_table(table)
    with op.batch_alter_table("mailboxes") as batch:
        batch.drop_column("closed_at")
        batch.drop_column("holder_name")
        batch.drop_column("state")
