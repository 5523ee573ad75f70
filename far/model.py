"""FaR's tables (SQLAlchemy 2 Core) and the engine: SQLite through aiosqlite by default, PostgreSQL by URL.

Sized for 10 million recipients: every lookup the reachability query makes is a primary-key probe
(``recipients.id``, ``refusals (recipient_id, sender_orgnr)``, ``operators.id``), and the SQLite tables whose key
is text are ``WITHOUT ROWID`` so that the key *is* the table (one B-tree probe, no second lookup by rowid).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import SchemaItem

from accesspoint.servicekit.database import Migrations
from accesspoint.servicekit.database import create_engine as servicekit_engine

metadata = MetaData()


def sqlite_text(moment: datetime | None) -> str | None:
    """How UtcDateTime stores a moment on SQLite: UTC, ISO 8601, always with microseconds (naive = UTC)."""
    if moment is None:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime: native on PostgreSQL, a fixed-width ISO 8601 string on SQLite.

    SQLite has no time zone type, and SQLAlchemy's own DATETIME comes back naive; a string that
    ``datetime.fromisoformat`` reads back aware costs a third of parsing plus ``replace(tzinfo=…)``, which counts
    when an answer carries 1,000 of them. Microseconds always written, so the strings sort as the instants do.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        """String(32) on SQLite, timestamptz elsewhere."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        """Aware UTC in; naive values are taken as UTC."""
        if value is None:
            return None
        if dialect.name == "sqlite":
            return sqlite_text(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """An aware datetime out."""
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromisoformat(value)


# The widths of the keys the tables share: a recipient (personnummer, organisation number or an eIDAS identifier),
# a party (a canonical party id, far/parties.py) and an operator (its organisationsnummer, 10 digits).
RecipientId = String(256)
PartyId = String(256)
OperatorId = String(10)


def _text_keyed(name: str, *items: SchemaItem) -> Table:
    """A table whose text primary key is the table on SQLite (``WITHOUT ROWID``: one B-tree probe per lookup)."""
    return Table(name, metadata, *items, sqlite_with_rowid=False)


def _recipient_key() -> Column[str]:
    """``recipient_id`` as (part of) the primary key."""
    return Column("recipient_id", RecipientId, primary_key=True)


def _sender_key() -> Column[str]:
    """``sender_id``, the sender's canonical party id, as (part of) the primary key."""
    return Column("sender_id", PartyId, primary_key=True)


class AccountStatus(enum.Enum):
    """A recipient's mailbox: secure (can receive), anonymous (not identified, cannot), or none."""

    SECURE = "secure"
    ANONYMOUS = "anonymous"
    NONE = "none"


operators = _text_keyed(
    "far_operators",
    # The operator's organisationsnummer (10 digits); Recipient v3 shows it as ServiceSupplier/Id with "16".
    Column("id", OperatorId, primary_key=True),
    Column("name", String(256), nullable=False),
    # The AS4 party id the access point sends to, e.g. urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007:…
    Column("party_id", String(512), nullable=False),
    # NULL means "discovery": the endpoint is found through SMP by the party id.
    Column("endpoint", String(2048), nullable=True),
    # The operator's Service v3 (deliverSecure) address and its web address, for Recipient v3 answers.
    Column("service_address", String(2048), nullable=True),
    Column("ui_address", String(2048), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
    # The operator's approval (far/service.py, migration o001): approved | suspended | revoked, since when, who
    # decided it, why, and the far_audit row that recorded the decision. Only a caller with the ``approve`` scope
    # changes it, never the operator's own write scope.
    Column("status", String(10), nullable=False, default="approved", server_default="approved"),
    Column("status_since", UtcDateTime(), nullable=True),
    Column("status_decided_by", String(128), nullable=True),
    Column("status_reason", String(512), nullable=True),
    Column("status_audit_id", BigInteger().with_variant(Integer, "sqlite"), nullable=True),
)

recipients = _text_keyed(
    "far_recipients",
    Column("id", RecipientId, primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("status", String(10), nullable=False),
    Column("pending", Boolean, nullable=False, default=False),
    Column("operator_id", OperatorId, ForeignKey("far_operators.id"), nullable=True),
    Column("last_registration", UtcDateTime(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
    # The last activity an operator reported (far/holders.py), and since when the recipient is dormant (None:
    # active); a dormant recipient is not reachable (reason "dormant") until its next activity.
    Column("last_activity", UtcDateTime(), nullable=True),
    Column("dormant_since", UtcDateTime(), nullable=True),
    # Operator changes and "how many recipients has this operator" walk this index, never the whole table.
    Index("far_recipients_operator", "operator_id"),
)

refusals = _text_keyed(
    "far_refusals",
    # No foreign key to recipients: the bulk import writes refusals in the same batches as the recipients, and a
    # refusal of an unknown recipient is harmless (the recipient has no mailbox either way).
    _recipient_key(),
    # The refused sender: 0007:<orgnr>, 0192:<orgnr>, XX/YY/…
    _sender_key(),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("far_refusals_sender", "sender_id"),
)

# The sender register (far/senders.py): who may send digital post, through which access points and networks.
senders = _text_keyed(
    "far_senders",
    Column("id", PartyId, primary_key=True),
    Column("name", String(256), nullable=False),
    Column("status", String(16), nullable=False),  # active | suspended
    Column("networks", Text, nullable=False),  # JSON list: minameddelanden, sdk, cross-border
    Column("support", Text, nullable=True),  # JSON {text, url, phone, email}
    # SHA-256 of the certificates the sender signs its deliveries with (SignedDelivery, XHE): JSON list
    Column("signing_certificates", Text, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

sender_access_points = _text_keyed(
    "far_sender_access_points",
    Column("sender_id", PartyId, ForeignKey("far_senders.id", ondelete="CASCADE"), primary_key=True),
    Column("certificate_sha256", String(64), primary_key=True),  # the AS4 signing certificate, hex
    Column("party_id", String(512), nullable=False),  # the access point's AS4 PartyId
    Index("far_sender_access_points_certificate", "certificate_sha256"),
)

# Dispatcher.Senders of the contracts: an intermediary or service provider (itself a sender record) sends for
# these senders through its access points. No foreign key on sender_id: a dispatcher may list a sender first.
dispatched_senders = _text_keyed(
    "far_dispatched_senders",
    Column("dispatcher_id", PartyId, ForeignKey("far_senders.id", ondelete="CASCADE"), primary_key=True),
    _sender_key(),
    Index("far_dispatched_senders_sender", "sender_id"),
)

# Holders' encryption certificates (far/holder_keys.py): one current key per holder, earlier ones kept as
# previous (old mail was encrypted to them), withdrawn ones as revoked. Keyed on (recipient, certificate SHA-256).
holder_keys = _text_keyed(
    "far_holder_keys",
    _recipient_key(),
    Column("key_id", String(64), primary_key=True),
    Column("key_type", String(16), nullable=False),  # rsa-oaep | x25519
    Column("state", String(10), nullable=False),  # current | previous | revoked
    Column("certificate", Text, nullable=False),  # PEM
    Column("operator_id", OperatorId, nullable=False),  # the operator that registered it
    Column("registered_at", UtcDateTime(), nullable=False),
    Column("not_after", UtcDateTime(), nullable=False),
)

audit = Table(
    "far_audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
    # create, update, delete, import, refuse, accept; holders: register, deregister, switch, dormant, reactivate,
    # consent, refused (a change FaR refused, with who tried)
    Column("action", String(16), nullable=False),
    # recipient, operator, refusal, sender
    Column("entity", String(16), nullable=False),
    Column("entity_id", String(300), nullable=False),
    # The new state as JSON (NULL for a delete).
    Column("detail", Text, nullable=True),
    Index("far_audit_entity", "entity", "entity_id"),
)

# ------------------------------------------------------------------ holders (far/holders.py; migration h001)

# A holder's move from one operator to another (changeServiceSupplier): pending until the current operator
# completes it (state switched, at switched_at) or someone cancels it. At most one pending switch per recipient.
switches = Table(
    "far_switches",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("recipient_id", RecipientId, nullable=False),
    Column("from_operator", OperatorId, nullable=False),
    Column("to_operator", OperatorId, nullable=False),
    Column("state", String(16), nullable=False),  # pending, switched, cancelled
    Column("requested_at", UtcDateTime(), nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("switch_at", UtcDateTime(), nullable=True),  # not before (None: as soon as the current operator can)
    Column("switched_at", UtcDateTime(), nullable=True),
    Column("cancelled_at", UtcDateTime(), nullable=True),
    Column("closed_by", String(128), nullable=True),
    Column("agreement", Text, nullable=False),  # JSON: the agreement's digest and who signed it
    Index("far_switches_recipient", "recipient_id", "state"),
)

# A registration waiting for more signatures (a company's joint signatories, a guardian's consent).
account_requests = Table(
    "far_account_requests",
    metadata,
    _recipient_key(),
    Column("operator_id", OperatorId, nullable=False),
    Column("account_type", String(10), nullable=False),
    Column("agreement_text", Text, nullable=False),
    Column("signers", Text, nullable=False),  # JSON list of verified signers so far
    Column("created_at", UtcDateTime(), nullable=False),
    Column("created_by", String(128), nullable=False),
)

# Senders a holder accepts explicitly (storeAccountPreferences); refusals stay in far_refusals.
accepted_senders = _text_keyed(
    "far_accepted_senders",
    _recipient_key(),
    _sender_key(),
    Column("name", String(256), nullable=False),
    Column("accepted", Boolean, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# What a guardian consented to (a minor's mailbox) or a holder signed, kept as long as the registration.
consents = _text_keyed(
    "far_consents",
    _recipient_key(),
    Column("detail", Text, nullable=False),  # JSON: who gave it (guardian id, name, certificate), when, for what
    Column("given_at", UtcDateTime(), nullable=False),
)

# Nonces of identity assertions already used: each assertion counts once.
nonces = _text_keyed(
    "far_nonces",
    Column("nonce", String(200), primary_key=True),
    Column("used_at", UtcDateTime(), nullable=False),
)


# WAL lets readers go on while an import writes; NORMAL sync is durable across process crashes in WAL mode.
# Memory-mapped reads: 1,000 random primary-key probes cost a third of what they do through read() calls
# (SQLite caps the size at its compile-time maximum, 2 GiB in common builds).
SQLITE_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    "busy_timeout=10000",
    "cache_size=-65536",
    "mmap_size=17179869184",
)

MIGRATIONS = Migrations(
    Path(__file__).resolve().parent / "migrations",
    version_table="far_alembic_version",
    adopt_tables={"far_operators", "far_recipients", "far_refusals", "far_audit"},
)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://…``)."""
    return servicekit_engine(url, pragmas=SQLITE_PRAGMAS, **kwargs)


async def upgrade_schema(engine: AsyncEngine) -> None:
    """Bring FaR's tables to the newest migration (``far/migrations``); safe from every instance at start-up."""
    await MIGRATIONS.upgrade(engine)


def upsert(dialect: str, table: Table, keys: tuple[str, ...]) -> Any:
    """``INSERT … ON CONFLICT (keys) DO UPDATE`` every other column, for SQLite or PostgreSQL."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement: Any = pg_insert(table)
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(table)
    else:
        raise ValueError(f"FaR supports SQLite and PostgreSQL, not {dialect}")
    updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
    if not updates:
        return statement.on_conflict_do_nothing(index_elements=list(keys))
    return statement.on_conflict_do_update(index_elements=list(keys), set_=updates)
