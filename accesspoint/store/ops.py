"""What the store's writer does: one frozen record per kind of write, and what each gives back.

A caller builds an operation and awaits ``writer.submit(op)`` (``accesspoint.store.writer``); the writer commits
it together with whatever else is pending in one transaction and one sync, and answers every caller of the batch
once that commit is durable. The operations carry everything the write needs (no read first on the caller's
side): an insert meets a duplicate through the unique constraint, a move compares the version the caller read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from accesspoint.store.codec import utc
from accesspoint.store.files import Content
from accesspoint.store.records import Evidence, EvidenceKind, MessageInfo, StoredMessage
from accesspoint.store.states import Direction, MessageState


@dataclass(frozen=True, slots=True)
class PayloadRow:
    """A payload of a message being inserted: its content is inline or already a durable file."""

    content_id: str
    mime_type: str
    content: Content
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    """A piece of evidence to keep, until ``retain_until``."""

    kind: EvidenceKind
    content: Content
    retain_until: datetime


@dataclass(frozen=True, slots=True)
class Also:
    """A row written with an insert or a move, only when that happens: an outbox event, a route target, an
    idempotency key (``accesspoint.store.hooks`` builds them). ``values`` by column; datetimes aware."""

    table: str  # one of ALSO_COLUMNS
    values: Mapping[str, Any]


# The tables Also rows go to and the columns each is written with (the rest take their defaults).
ALSO_COLUMNS: dict[str, tuple[str, ...]] = {
    "outbox": ("event_id", "sink", "kind", "body", "created_at", "available_at", "attempts"),
    "route_targets": (
        "message_id", "received_message_id", "operator_id", "operator_name", "party_id", "endpoint", "created_at",
    ),
    "idempotency_keys": (
        "scope", "key", "request_sha256", "message_id", "status", "response", "created_at", "expires_at",
    ),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Insert:
    """Store a new message in its direction's initial state, with its payloads and evidence.

    Answered ``Inserted``, or ``Duplicate`` when its (direction, MessageId) is taken: then nothing of it is kept.
    """

    direction: Direction
    info: MessageInfo
    now: datetime
    payloads: tuple[PayloadRow, ...] = ()
    evidence: tuple[EvidenceRow, ...] = ()
    also: tuple[Also, ...] = ()  # written only when the message is (not for a duplicate)

    @property
    def key(self) -> tuple[str, str]:
        """The message the operation touches."""
        return self.direction.value, self.info.message_id


@dataclass(frozen=True, slots=True)
class Move:
    """Compare-and-set: move ``message`` to ``target`` if its row still has the state and version read.

    Answered with the moved row, or None when another writer moved it first. The columns below replace the
    row's (``error`` only when given); ``evidence`` is kept whether or not the move happens. Callers check the
    transition table before building one (``MessageStore.transition`` does).
    """

    message: StoredMessage
    target: MessageState
    now: datetime
    next_attempt_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    error: tuple[str, str] | None = None
    attempts_add: int = 0
    detail: str | None = None
    evidence: tuple[EvidenceRow, ...] = ()
    also: tuple[Also, ...] = ()  # written only when the move happens (the events it causes)

    @property
    def key(self) -> tuple[str, str]:
        """The message the operation touches."""
        return self.message.direction.value, self.message.message_id

    def moved(self) -> StoredMessage:
        """The row as this move leaves it, when it happens: computed, since the compare-and-set guarantees the row
        was exactly ``message`` before (every change bumps its version)."""
        message = self.message
        code, detail = self.error if self.error is not None else (message.last_error_code, message.last_error_detail)
        return replace(
            message,
            state=self.target,
            version=message.version + 1,
            updated_at=utc(self.now),
            next_attempt_at=None if self.next_attempt_at is None else utc(self.next_attempt_at),
            lease_owner=self.lease_owner,
            lease_until=None if self.lease_until is None else utc(self.lease_until),
            attempts=message.attempts + self.attempts_add,
            last_error_code=code,
            last_error_detail=detail,
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """Take an outgoing message for sending if it is due at ``now`` (see ``MessageStore.claim``): attempts + 1,
    leased to the writer's instance until ``lease_until``. Answered with the claimed row or None."""

    message_id: str
    now: datetime
    lease_until: datetime

    @property
    def key(self) -> tuple[str, str]:
        """The message the operation touches."""
        return Direction.OUT.value, self.message_id


@dataclass(frozen=True, slots=True)
class Keep:
    """Keep evidence about a message, whatever its state (even when its row is gone). Answered with the records."""

    direction: Direction
    message_id: str
    now: datetime
    evidence: tuple[EvidenceRow, ...]

    @property
    def key(self) -> tuple[str, str]:
        """The message the operation touches."""
        return self.direction.value, self.message_id


Op = Insert | Move | Claim | Keep


@dataclass(frozen=True, slots=True)
class Inserted:
    """The message was stored."""

    message: StoredMessage


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A message with that (direction, MessageId) is stored already: the one found, or None when another
    instance's insert committed after this batch's snapshot was taken (read it again)."""

    existing: StoredMessage | None


Outcome = Inserted | Duplicate | StoredMessage | None | tuple[Evidence, ...]
