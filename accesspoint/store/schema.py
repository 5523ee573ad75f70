"""The tables of the message store (SQLAlchemy Core); migrations/ creates them, this module names them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

# SQLite keeps only INTEGER PRIMARY KEY as the auto-increment rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# How constraints and indexes are named, in the store's tables and in every service's beside them (the console's).
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=dict(NAMING_CONVENTION))


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, stored naive in UTC on every backend."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes so no local time ever lands in the store."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the store takes timezone-aware datetimes only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Give back the stored UTC time as an aware datetime."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


messages = Table(
    "messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("direction", String(3), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("ref_to_message_id", String(255)),
    Column("conversation_id", String(255)),
    Column("pmode_id", String(255)),
    Column("leg", Integer),
    Column("mpc", String(255)),
    Column("from_party", String(255)),
    Column("to_party", String(255)),
    Column("service", String(255)),
    Column("action", String(255)),
    Column("state", String(32), nullable=False),
    # Bumped by every transition: the compare-and-set also fences a worker that read an older row.
    Column("version", Integer, nullable=False, default=1),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime()),
    Column("lease_owner", String(255)),
    Column("lease_until", UtcDateTime()),
    Column("last_error_code", String(32)),
    Column("last_error_detail", Text),
    Column("payload_bytes", BigInteger, nullable=False, default=0),
    Column("payloads_purged_at", UtcDateTime()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    # Duplicate elimination: a MessageId is stored once per direction, whoever inserts first wins.
    UniqueConstraint("direction", "message_id", name="uq_messages_direction_message_id"),
    Index("ix_messages_state_next_attempt_at", "state", "next_attempt_at"),
    Index("ix_messages_ref_to_message_id", "ref_to_message_id"),
    Index("ix_messages_updated_at", "updated_at"),
    # What operators search and the status reads (accesspoint/store/search.py; migration 0006).
    Index("ix_messages_created_at", "created_at"),
    Index("ix_messages_state_updated_at", "state", "updated_at"),
    Index("ix_messages_conversation_id", "conversation_id"),
    Index("ix_messages_to_party_state_updated_at", "to_party", "state", "updated_at"),
    Index("ix_messages_state_created_at", "state", "created_at"),
    Index("ix_messages_to_party_created_at", "to_party", "created_at"),
    Index("ix_messages_from_party_created_at", "from_party", "created_at"),
)

payloads = Table(
    "payloads",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message", BigId, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("content_id", String(255), nullable=False),
    Column("mime_type", String(255), nullable=False),
    Column("properties", JSON, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    # Exactly one of the two: short content inline, committed with its row; longer content in the file store.
    Column("path", String(255)),
    Column("data", LargeBinary),
    UniqueConstraint("message", "content_id", name="uq_payloads_message_content_id"),
)

# No foreign key to messages on purpose: evidence outlives the message rows and their payloads.
evidence = Table(
    "evidence",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("direction", String(3), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("path", String(255)),  # or, for short evidence, inline:
    Column("data", LargeBinary),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("retain_until", UtcDateTime(), nullable=False),
    Index("ix_evidence_message_id", "message_id"),
    Index("ix_evidence_retain_until", "retain_until"),
)

transitions = Table(
    "transitions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message", BigId, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("from_state", String(32)),
    Column("to_state", String(32), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(255)),
    Column("detail", Text),
    Index("ix_transitions_message", "message"),
)

# The recipient's operator's verified end-to-end answer to an outgoing message (at most one per message).
end_to_end = Table(
    "end_to_end",
    metadata,
    Column("message_id", String(255), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("operator", String(255), nullable=False),
    Column("operator_subject", Text, nullable=False),
    Column("operator_sha256", String(64), nullable=False),
    Column("reply_message_id", String(255), nullable=False),
    Column("recipient", String(255)),
    Column("reasons", JSON, nullable=False),
    Column("recorded_at", UtcDateTime(), nullable=False),
)

# The transactional outbox: events written in the transaction of the move that causes them, one row per sink (a
# webhook, or a job this access point runs itself). Delivered in ``id`` order per sink, each row leased to one
# instance at a time; a settled row (delivered or given up) is purged after its retention.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("sink", String(64), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("available_at", UtcDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(255)),
    Column("lease_until", UtcDateTime()),
    Column("last_error", Text),
    Column("settled_at", UtcDateTime()),
    Column("outcome", String(16)),
    UniqueConstraint("event_id", "sink", name="uq_outbox_event_id_sink"),
    Index("ix_outbox_sink_settled_at", "sink", "settled_at"),
    Index("ix_outbox_settled_at", "settled_at"),
)

# Where a routed message goes (the router's or a submission's choice), kept with the message it routes.
route_targets = Table(
    "route_targets",
    metadata,
    Column("message_id", String(255), primary_key=True),
    Column("received_message_id", String(255), nullable=False),
    Column("operator_id", String(255), nullable=False),
    Column("operator_name", String(255), nullable=False),
    Column("party_id", String(255), nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

# What a submission was answered, per backend and key (an Idempotency-Key header, or the MessageId it gave): a
# retry of the same request gets the same answer, another request under the same key is refused.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_sha256", String(64), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("status", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)
