"""The console's tables: users, sessions, login failures, audit, alerts and deliveries, incidents and their events,
P-Mode versions, monitored P-Modes and connection checks, cursors."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "console_0001"
down_revision = None
branch_labels = None
depends_on = None

# Spelled out rather than imported from console/model.py: a revision must keep creating what it created then.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Moment = sa.DateTime()  # UTC, stored naive (accesspoint.store.schema.UtcDateTime)


def _id() -> sa.Column[int]:
    return sa.Column("id", BigId, primary_key=True, autoincrement=True)


def upgrade() -> None:
    """Create every table of the console."""
    op.create_table(
        "console_users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", Moment, nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_name", sa.String(64), sa.ForeignKey("console_users.name", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", Moment, nullable=False),
        sa.Column("seen_at", Moment, nullable=False),
        sa.Column("address", sa.String(64)),
    )
    op.create_table(
        "console_login_failures",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_at", Moment, nullable=False),
    )
    op.create_table(
        "console_audit",
        _id(),
        sa.Column("at", Moment, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512)),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("address", sa.String(64)),
    )
    op.create_index("ix_console_audit_at", "console_audit", ["at"])
    op.create_table(
        "console_alerts",
        _id(),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("first_at", Moment, nullable=False),
        sa.Column("last_at", Moment, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("incident_id", BigId),
    )
    op.create_index("ix_console_alerts_kind_key", "console_alerts", ["kind", "key"])
    op.create_index("ix_console_alerts_last_at", "console_alerts", ["last_at"])
    op.create_table(
        "console_deliveries",
        _id(),
        sa.Column("alert_id", BigId, sa.ForeignKey("console_alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(512), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", Moment, nullable=False),
        sa.Column("sent_at", Moment),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index("ix_console_deliveries_state_not_before", "console_deliveries", ["state", "not_before"])
    op.create_index("ix_console_deliveries_channel_sent_at", "console_deliveries", ["channel", "sent_at"])
    op.create_table(
        "console_incidents",
        _id(),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("classification", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("affected", sa.JSON(), nullable=False),
        sa.Column("detected_at", Moment, nullable=False),
        sa.Column("aware_at", Moment, nullable=False),
        sa.Column("supervisory_due", Moment, nullable=False),
        sa.Column("parties_due", Moment, nullable=False),
        sa.Column("supervisory_notified_at", Moment),
        sa.Column("parties_notified_at", Moment),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("closed_at", Moment),
        sa.Column("opened_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "console_incident_events",
        _id(),
        sa.Column("incident_id", BigId, sa.ForeignKey("console_incidents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", Moment, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_console_incident_events_incident_id", "console_incident_events", ["incident_id"])
    op.create_table(
        "console_pmode_versions",
        _id(),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("seen_at", Moment, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.UniqueConstraint("sha256", name="uq_console_pmode_versions_sha256"),
    )
    op.create_table(
        "console_monitored",
        sa.Column("pmode_id", sa.String(255), primary_key=True),
        sa.Column("added_by", sa.String(64), nullable=False),
        sa.Column("added_at", Moment, nullable=False),
    )
    op.create_table(
        "console_checks",
        _id(),
        sa.Column("pmode_id", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255)),
        sa.Column("started_at", Moment, nullable=False),
        sa.Column("finished_at", Moment),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text()),
    )
    op.create_index("ix_console_checks_pmode_id_started_at", "console_checks", ["pmode_id", "started_at"])
    op.create_index("ix_console_checks_outcome", "console_checks", ["outcome"])
    op.create_table(
        "console_cursors",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    """Drop them, dependants first."""
    for table in (
        "console_cursors", "console_checks", "console_monitored", "console_pmode_versions", "console_incident_events",
        "console_incidents", "console_deliveries", "console_alerts", "console_audit", "console_login_failures",
        "console_sessions", "console_users",
    ):  # fmt: skip
        op.drop_table(table)
