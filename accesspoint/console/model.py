"""The console's own tables (SQLAlchemy Core): users, sessions, login failures, audit, alerts, incidents, P-Mode
versions and connection checks. ``migrations/`` creates them (version table ``console_alembic_version``), so they
may share a PostgreSQL database with the message store and the other services."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, ForeignKey, Index, Integer, MetaData, String, Table, Text

from accesspoint.store.schema import NAMING_CONVENTION, BigId, UtcDateTime

# Its own metadata (the console's migrations create these tables), named as the store names its own.
metadata = MetaData(naming_convention=dict(NAMING_CONVENTION))

users = Table(
    "console_users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

# A session is known by the SHA-256 of its cookie's secret: a copy of the table opens no session.
sessions = Table(
    "console_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_name", String(64), ForeignKey("console_users.name", ondelete="CASCADE"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("seen_at", UtcDateTime(), nullable=False),
    Column("address", String(64)),
)

# Failed logins per user name (``user:<name>``) and per client address (``address:<ip>``).
login_failures = Table(
    "console_login_failures",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_at", UtcDateTime(), nullable=False),
)

audit = Table(
    "console_audit",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(512)),
    Column("outcome", String(32), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("address", String(64)),
    Index("ix_console_audit_at", "at"),
)

alerts = Table(
    "console_alerts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("key", String(512), nullable=False),
    Column("level", String(16), nullable=False),
    Column("subject", String(512), nullable=False),
    Column("body", Text, nullable=False),
    Column("first_at", UtcDateTime(), nullable=False),
    Column("last_at", UtcDateTime(), nullable=False),
    Column("count", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("incident_id", BigId),
    Index("ix_console_alerts_kind_key", "kind", "key"),
    Index("ix_console_alerts_last_at", "last_at"),
)

# One row per alert and channel: delivered once, retried with backoff, held back by the rate limit.
deliveries = Table(
    "console_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("alert_id", BigId, ForeignKey("console_alerts.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(512), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("not_before", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime()),
    Column("last_error", Text),
    Index("ix_console_deliveries_state_not_before", "state", "not_before"),
    Index("ix_console_deliveries_channel_sent_at", "channel", "sent_at"),
)

incidents = Table(
    "console_incidents",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("title", String(512), nullable=False),
    Column("classification", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("description", Text, nullable=False),
    Column("affected", JSON, nullable=False),
    Column("detected_at", UtcDateTime(), nullable=False),
    Column("aware_at", UtcDateTime(), nullable=False),
    Column("supervisory_due", UtcDateTime(), nullable=False),
    Column("parties_due", UtcDateTime(), nullable=False),
    Column("supervisory_notified_at", UtcDateTime()),
    Column("parties_notified_at", UtcDateTime()),
    Column("status", String(16), nullable=False),
    Column("closed_at", UtcDateTime()),
    Column("opened_by", String(64), nullable=False),
)

incident_events = Table(
    "console_incident_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("incident_id", BigId, ForeignKey("console_incidents.id", ondelete="CASCADE"), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_console_incident_events_incident_id", "incident_id"),
)

pmode_versions = Table(
    "console_pmode_versions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("text", Text, nullable=False),
    Column("seen_at", UtcDateTime(), nullable=False),
    Column("actor", String(64), nullable=False),
)

monitored = Table(
    "console_monitored",
    metadata,
    Column("pmode_id", String(255), primary_key=True),
    Column("added_by", String(64), nullable=False),
    Column("added_at", UtcDateTime(), nullable=False),
)

checks = Table(
    "console_checks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("pmode_id", String(255), nullable=False),
    Column("message_id", String(255)),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text),
    Index("ix_console_checks_pmode_id_started_at", "pmode_id", "started_at"),
    Index("ix_console_checks_outcome", "outcome"),
)

# Small named values a restart needs: the moment up to which failed messages were alerted, a watch's failures.
cursors = Table(
    "console_cursors",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("value", Text, nullable=False),
)
