"""The archive's tables; the audit table append-only (triggers refuse UPDATE and DELETE)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_REFUSAL = "the key archive audit log is append-only"


def upgrade() -> None:
    """Create the tables and the triggers that keep the audit log append-only."""
    op.create_table(
        "keyarchive_keys",
        sa.Column("holder", sa.String(256), primary_key=True),
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("master", sa.String(64), nullable=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("deposited_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "keyarchive_audit",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("keyarchive_audit_subject", "keyarchive_audit", ["subject", "action"])
    op.create_table(
        "keyarchive_challenges",
        sa.Column("challenge", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.String(40), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
    )
    op.create_table(
        "keyarchive_acts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("proposer", sa.String(128), nullable=False),
        sa.Column("proposed_at", sa.String(40), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("approver", sa.String(128), nullable=True),
        sa.Column("decided_at", sa.String(40), nullable=True),
    )
    op.create_table(
        "keyarchive_masters",
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION keyarchive_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_REFUSAL}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER keyarchive_audit_append_only BEFORE UPDATE OR DELETE ON keyarchive_audit "
            "FOR EACH ROW EXECUTE FUNCTION keyarchive_audit_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER keyarchive_audit_no_{event.lower()} BEFORE {event} ON keyarchive_audit "
                f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END"
            )


def downgrade() -> None:
    """Drop everything (the audit log with it: a downgrade is for development only)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER keyarchive_audit_append_only ON keyarchive_audit")
        op.execute("DROP FUNCTION keyarchive_audit_append_only()")
    for table in ("keyarchive_masters", "keyarchive_acts", "keyarchive_challenges", "keyarchive_audit",
                  "keyarchive_keys"):  # fmt: skip
        op.drop_table(table)
