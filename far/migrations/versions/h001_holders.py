"""Holders: activity and dormancy of recipients, switches between operators, pending registrations, explicitly
accepted senders, guardians' consents and used assertion nonces (far/holders.py)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "h001"
down_revision = "e001"
branch_labels = None
depends_on = None

Moment = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")


def upgrade() -> None:
    """Two nullable columns on far_recipients (an ALTER TABLE ADD COLUMN, which keeps it WITHOUT ROWID), and the
    holder tables."""
    op.add_column("far_recipients", sa.Column("last_activity", Moment, nullable=True))
    op.add_column("far_recipients", sa.Column("dormant_since", Moment, nullable=True))
    op.create_table(
        "far_switches",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("recipient_id", sa.String(256), nullable=False),
        sa.Column("from_operator", sa.String(10), nullable=False),
        sa.Column("to_operator", sa.String(10), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_at", Moment, nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("switch_at", Moment, nullable=True),
        sa.Column("switched_at", Moment, nullable=True),
        sa.Column("cancelled_at", Moment, nullable=True),
        sa.Column("closed_by", sa.String(128), nullable=True),
        sa.Column("agreement", sa.Text(), nullable=False),
    )
    op.create_index("far_switches_recipient", "far_switches", ["recipient_id", "state"])
    op.create_table(
        "far_account_requests",
        sa.Column("recipient_id", sa.String(256), primary_key=True),
        sa.Column("operator_id", sa.String(10), nullable=False),
        sa.Column("account_type", sa.String(10), nullable=False),
        sa.Column("agreement_text", sa.Text(), nullable=False),
        sa.Column("signers", sa.Text(), nullable=False),
        sa.Column("created_at", Moment, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "far_accepted_senders",
        sa.Column("recipient_id", sa.String(256), primary_key=True),
        sa.Column("sender_id", sa.String(256), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", Moment, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "far_consents",
        sa.Column("recipient_id", sa.String(256), primary_key=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("given_at", Moment, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "far_nonces",
        sa.Column("nonce", sa.String(200), primary_key=True),
        sa.Column("used_at", Moment, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    """Drop the holder tables and columns."""
    for table in ("far_nonces", "far_consents", "far_accepted_senders", "far_account_requests", "far_switches"):
        op.drop_table(table)
    with op.batch_alter_table("far_recipients") as batch:
        batch.drop_column("dormant_since")
        batch.drop_column("last_activity")
