"""Two-way digital post: each letter's terms and states, case events, holders' answers, payments, and the outbox
of what the operator sends back (a branch of its own beside the holders' revisions: ``upgrade heads``)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "t001"
down_revision = "0001"
branch_labels = ("two_way",)
depends_on = None

Moment = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the five tables and their indexes."""
    op.create_table(
        "twoway_letters",
        sa.Column("mail_id", sa.Integer(), sa.ForeignKey("mail.id"), primary_key=True),
        sa.Column("recipient", sa.String(256), nullable=False),
        sa.Column("as4_message_id", sa.String(255), nullable=False),
        sa.Column("conversation_id", sa.String(255), nullable=True),
        sa.Column("network", sa.String(32), nullable=False),
        sa.Column("business_id", sa.String(255), nullable=False),
        sa.Column("sender", sa.String(255), nullable=False),
        sa.Column("sender_name", sa.String(256), nullable=True),
        sa.Column("holder_party", sa.String(256), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("federation", sa.String(255), nullable=True),
        sa.Column("terms", sa.Text(), nullable=False),
        sa.Column("reply_option", sa.String(16), nullable=True),
        sa.Column("reply_deadline", Moment, nullable=True),
        sa.Column("receipt_request", sa.String(8), nullable=True),
        sa.Column("opened_at", Moment, nullable=True),
        sa.Column("delgivning_deadline", Moment, nullable=True),
        sa.Column("delgivning_state", sa.String(16), nullable=True),
        sa.Column("served_at", Moment, nullable=True),
        sa.Column("invoice", sa.Boolean(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("paid_at", Moment, nullable=True),
        sa.Column("received_at", Moment, nullable=False),
    )
    op.create_index("ix_twoway_letters_recipient", "twoway_letters", ["recipient", "invoice", "due_date"])
    op.create_index("ix_twoway_letters_delgivning", "twoway_letters", ["delgivning_state", "delgivning_deadline"])
    op.create_table(
        "twoway_case_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("recipient", sa.String(256), nullable=False),
        sa.Column("sender", sa.String(255), nullable=False),
        sa.Column("sender_name", sa.String(256), nullable=True),
        sa.Column("case_id", sa.String(255), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("time", Moment, nullable=False),
        sa.Column("link", sa.Text(), nullable=True),
        sa.Column("matter_status", sa.String(32), nullable=True),
        sa.Column("event_id", sa.String(255), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("mail_id", sa.Integer(), nullable=True),
        sa.Column("as4_message_id", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("received_at", Moment, nullable=False),
        sa.UniqueConstraint("as4_message_id", "position", name="uq_twoway_case_event"),
    )
    op.create_index("ix_twoway_case_events_case", "twoway_case_events", ["recipient", "sender", "case_id", "time"])
    op.create_table(
        "twoway_replies",
        sa.Column("reply_id", sa.String(64), primary_key=True),
        sa.Column("mail_id", sa.Integer(), sa.ForeignKey("mail.id"), nullable=False),
        sa.Column("recipient", sa.String(256), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("created_at", Moment, nullable=False),
    )
    op.create_index("ix_twoway_replies_mail", "twoway_replies", ["mail_id"])
    op.create_table(
        "twoway_payments",
        sa.Column("mail_id", sa.Integer(), sa.ForeignKey("mail.id"), primary_key=True),
        sa.Column("payment_id", sa.String(64), nullable=False, unique=True),
        sa.Column("recipient", sa.String(256), nullable=False),
        sa.Column("payer", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("provider_reference", sa.String(255), nullable=True),
        sa.Column("amount", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("paid_at", Moment, nullable=True),
        sa.Column("message_id", sa.String(255), nullable=True),
    )
    op.create_table(
        "twoway_outbox",
        sa.Column("message_id", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("mail_id", sa.Integer(), nullable=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", Moment, nullable=False),
        sa.Column("sent_at", Moment, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index("ix_twoway_outbox_unsent", "twoway_outbox", ["sent_at"])


def downgrade() -> None:
    """Drop them."""
    for table in ("twoway_outbox", "twoway_payments", "twoway_replies", "twoway_case_events", "twoway_letters"):
        op.drop_table(table)
