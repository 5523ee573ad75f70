"""The archive's tables (SQLAlchemy 2 Core) and their migrations (version table ``keyarchive_alembic_version``).

Moments are ISO 8601 UTC strings (they go into the audit chain's hashes as text, the same on every database).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, Index, Integer, LargeBinary, MetaData, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncEngine

from accesspoint.servicekit.database import Migrations

metadata = MetaData()

keys = Table(
    "keyarchive_keys",
    metadata,
    Column("holder", String(256), primary_key=True),
    Column("key_id", String(64), primary_key=True),  # the certificate's SHA-256 (what FaR publishes)
    Column("key_type", String(16), nullable=False),
    Column("certificate", Text, nullable=False),  # PEM
    Column("wrapped", LargeBinary, nullable=True),  # the PKCS#8 key under the master key; NULL once deleted
    Column("master", String(64), nullable=True),  # the label of the master key that wraps it
    Column("state", String(10), nullable=False),  # active | deleted
    Column("deposited_at", String(40), nullable=False),
)

audit = Table(
    "keyarchive_audit",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),
    Column("actor", String(300), nullable=False),
    Column("action", String(40), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("detail", Text, nullable=False),  # JSON
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("keyarchive_audit_subject", "subject", "action"),
)

challenges = Table(
    "keyarchive_challenges",
    metadata,
    Column("challenge", String(64), primary_key=True),
    Column("expires_at", String(40), nullable=False),
    Column("used", Integer, nullable=False, default=0),
)

acts = Table(
    "keyarchive_acts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("action", String(40), nullable=False),  # rotate-master-key | export | force-delete
    Column("subject", String(300), nullable=False),
    Column("proposer", String(128), nullable=False),
    Column("proposed_at", String(40), nullable=False),
    Column("state", String(10), nullable=False),  # pending | done | expired
    Column("approver", String(128), nullable=True),
    Column("decided_at", String(40), nullable=True),
)

masters = Table(
    "keyarchive_masters",
    metadata,
    Column("label", String(64), primary_key=True),
    Column("created_at", String(40), nullable=False),
    Column("state", String(10), nullable=False),  # current | retired
)

MIGRATIONS = Migrations(Path(__file__).resolve().parent / "migrations", version_table="keyarchive_alembic_version")


async def upgrade_schema(engine: AsyncEngine) -> None:
    """Bring the archive's tables to the newest migration."""
    await MIGRATIONS.upgrade(engine)
