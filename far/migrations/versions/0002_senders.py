"""The sender register (senders, their access points, dispatchers) and refusals keyed on general party ids.

``far_refusals.sender_orgnr`` (10 digits) becomes ``sender_id``, the refused sender's canonical party id: a
refusal stored before is the Swedish organisation ``0007:<orgnr>``. The table is copied rather than altered so
that it stays WITHOUT ROWID on SQLite (a batch ALTER would rebuild it as a rowid table).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Moment = sa.DateTime(timezone=True).with_variant(sa.String(32), "sqlite")


def upgrade() -> None:
    """Create the sender tables; copy the refusals with their sender as a party id."""
    op.create_table(
        "far_senders",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("networks", sa.Text(), nullable=False),
        sa.Column("support", sa.Text(), nullable=True),
        sa.Column("signing_certificates", sa.Text(), nullable=False),
        sa.Column("updated_at", Moment, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "far_sender_access_points",
        sa.Column("sender_id", sa.String(256), sa.ForeignKey("far_senders.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("certificate_sha256", sa.String(64), primary_key=True),
        sa.Column("party_id", sa.String(512), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("far_sender_access_points_certificate", "far_sender_access_points", ["certificate_sha256"])
    op.create_table(
        "far_dispatched_senders",
        sa.Column(
            "dispatcher_id", sa.String(256), sa.ForeignKey("far_senders.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("sender_id", sa.String(256), primary_key=True),
        sqlite_with_rowid=False,
    )
    op.create_index("far_dispatched_senders_sender", "far_dispatched_senders", ["sender_id"])

    op.create_table(
        "far_refusals_v2",
        sa.Column("recipient_id", sa.String(256), primary_key=True),
        sa.Column("sender_id", sa.String(256), primary_key=True),
        sa.Column("created_at", Moment, nullable=False),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO far_refusals_v2 (recipient_id, sender_id, created_at) "
        "SELECT recipient_id, '0007:' || sender_orgnr, created_at FROM far_refusals"
    )
    op.drop_index("far_refusals_sender", table_name="far_refusals")
    op.drop_table("far_refusals")
    op.rename_table("far_refusals_v2", "far_refusals")
    op.create_index("far_refusals_sender", "far_refusals", ["sender_id"])


def downgrade() -> None:
    """Drop the sender tables; refusals of Swedish senders go back to 10 digits, others are lost."""
    op.create_table(
        "far_refusals_v1",
        sa.Column("recipient_id", sa.String(256), primary_key=True),
        sa.Column("sender_orgnr", sa.String(10), primary_key=True),
        sa.Column("created_at", Moment, nullable=False),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO far_refusals_v1 (recipient_id, sender_orgnr, created_at) "
        "SELECT recipient_id, substr(sender_id, 6), created_at FROM far_refusals WHERE sender_id LIKE '0007:%'"
    )
    op.drop_index("far_refusals_sender", table_name="far_refusals")
    op.drop_table("far_refusals")
    op.rename_table("far_refusals_v1", "far_refusals")
    op.create_index("far_refusals_sender", "far_refusals", ["sender_orgnr"])
    op.drop_table("far_dispatched_senders")
    op.drop_table("far_sender_access_points")
    op.drop_table("far_senders")
