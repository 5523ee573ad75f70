"""Mailboxes, their mail and attachments, and what was done with each delivery (as ``create_all`` made them)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the four tables."""
    op.create_table(
        "mailboxes",
        sa.Column("recipient", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mail",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("recipient", sa.String(64), sa.ForeignKey("mailboxes.recipient"), nullable=False),
        sa.Column("as4_message_id", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("network", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(255), nullable=False),
        sa.Column("sender", sa.String(255), nullable=False),
        sa.Column("sender_name", sa.String(255), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("signed_by", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("as4_message_id", "position", name="uq_mail_delivery"),
    )
    op.create_index("ix_mail_recipient", "mail", ["recipient"])
    op.create_table(
        "attachments",
        sa.Column("mail_id", sa.Integer(), sa.ForeignKey("mail.id"), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "handled",
        sa.Column("as4_message_id", sa.String(255), primary_key=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("reply_message_id", sa.String(255), nullable=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    """Drop the four tables."""
    op.drop_table("handled")
    op.drop_table("attachments")
    op.drop_table("mail")
    op.drop_table("mailboxes")
