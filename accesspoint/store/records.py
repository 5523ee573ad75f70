"""What goes into the store and what comes out of it: frozen records, no database types."""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from accesspoint.store.states import Direction, MessageState


class EvidenceKind(StrEnum):
    """Non-repudiation evidence kept per message, each with its own retention."""

    RAW_MESSAGE = "raw-message"
    OUR_RECEIPT = "our-receipt"
    PARTNER_RECEIPT = "partner-receipt"
    ERROR_SIGNAL = "error-signal"


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """The header facts of a message that the store indexes (the rest lives in the raw evidence)."""

    message_id: str
    ref_to_message_id: str | None = None
    conversation_id: str | None = None
    pmode_id: str | None = None
    leg: int | None = None
    mpc: str | None = None
    from_party: str | None = None
    to_party: str | None = None
    service: str | None = None
    action: str | None = None


@dataclass(frozen=True, slots=True)
class NewPayload:
    """A payload to store: its bytes arrive as a stream of chunks."""

    content_id: str
    mime_type: str
    chunks: AsyncIterable[bytes]
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewEvidence:
    """Evidence to keep in the same transaction as a message's insert or move: its bytes arrive as chunks."""

    kind: EvidenceKind
    chunks: AsyncIterable[bytes]
    retain_for: timedelta


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message row as read; ``version`` is what a compare-and-set compares against."""

    pk: int
    direction: Direction
    message_id: str
    ref_to_message_id: str | None
    conversation_id: str | None
    pmode_id: str | None
    leg: int | None
    mpc: str | None
    from_party: str | None
    to_party: str | None
    service: str | None
    action: str | None
    state: MessageState
    version: int
    attempts: int
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    last_error_code: str | None
    last_error_detail: str | None
    payload_bytes: int
    payloads_purged_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StoredPayload:
    """A payload's metadata, and its bytes when they are kept in the database (``data``; else in the file store at
    ``path``); ``MessageStore.read`` reads either."""

    pk: int
    content_id: str
    mime_type: str
    properties: dict[str, str]
    size: int
    sha256: str
    path: str | None
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """One piece of stored evidence; its bytes are read with ``MessageStore.read`` (from the database or a file)."""

    pk: int
    direction: Direction
    message_id: str
    kind: EvidenceKind
    size: int
    sha256: str
    path: str | None  # None: the bytes are kept in the database
    created_at: datetime
    retain_until: datetime


@dataclass(frozen=True, slots=True)
class Transition:
    """One line of a message's audit trail (``source`` is None for the insert)."""

    source: MessageState | None
    target: MessageState
    at: datetime
    actor: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class Reception:
    """The outcome of storing an incoming message: new, or a duplicate with the receipt already given."""

    message: StoredMessage
    duplicate: bool
    receipt: Evidence | None = None


@dataclass(frozen=True, slots=True)
class EndToEnd:
    """The recipient's operator's verified answer to a message we sent: in the mailbox or rejected, when, by whom.

    ``operator_subject`` and ``operator_sha256`` name the certificate the answer verified with (RFC 4514 subject,
    SHA-256 of its DER); ``reasons`` are (code, text) pairs of a rejection."""

    message_id: str  # the outgoing message it answers
    status: str  # delivered-to-mailbox | rejected
    at: datetime  # when the operator says it happened
    operator: str  # the operator's id as it signed it
    operator_subject: str
    operator_sha256: str
    reply_message_id: str
    recorded_at: datetime
    reasons: tuple[tuple[str, str], ...] = ()
    recipient: str | None = None


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a P-Mode keeps things after a message reaches a final state (None: forever)."""

    payloads: timedelta | None = None
    messages: timedelta | None = None


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What one purge removed: messages that lost their payloads, whole messages, pieces of evidence."""

    payloads: int = 0
    messages: int = 0
    evidence: int = 0
