"""Reading the message store the way an operator does: filtered pages, capped counts, queues and partners.

Every search is bounded before it reaches the database: a time window on ``created_at`` (the console's default is
the last 24 hours), pages of at most ``MAX_PAGE`` rows in keyset order (newest first, no OFFSET), and counts that
stop at a cap (50,000 by default, as Domibus caps its message count): ``SELECT count(*) FROM (… LIMIT cap + 1)``
never reads more than ``cap + 1`` index entries, however many messages the window holds.

The indexes these queries use come with migration 0006: ``created_at`` (the window), ``(state, updated_at)``
(the error log, failures since a moment, counts per state), ``conversation_id``,
``(to_party, state, updated_at)`` (the last delivery per partner), and ``(state, created_at)``,
``(to_party, created_at)``, ``(from_party, created_at)`` so that a state or a partner filter within a window reads
only its own rows (the partner's two as one OR of two index ranges).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, bindparam, func, or_, select, tuple_

from accesspoint.store import schema
from accesspoint.store.db import Database
from accesspoint.store.messages import _message
from accesspoint.store.records import StoredMessage
from accesspoint.store.states import Direction, MessageState, states_of

M = schema.messages

COUNT_CAP = 50_000  # as Domibus: a count past this is shown as "50,000 or more"
MAX_PAGE = 500
# Outgoing states in which a message still waits to leave: what the status calls the send queue.
PENDING = (MessageState.SUBMITTED, MessageState.SENDING, MessageState.AWAITING_RECEIPT)
# States whose messages carry the error that put them there.
ERRORED = (MessageState.FAILED, MessageState.DEAD_LETTER, MessageState.AWAITING_RECEIPT)
_OUTGOING_ONLY = (*PENDING, MessageState.DEAD_LETTER)
if set(_OUTGOING_ONLY) & states_of(Direction.IN):  # the queue figures below count these states without a direction
    raise AssertionError("a pending state is also an incoming message's")


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """What an operator filters on; every field left None (or empty) does not filter."""

    direction: Direction | None = None
    states: tuple[MessageState, ...] = ()
    partner: str | None = None  # From or To, as stored (``type::value``)
    service: str | None = None
    action: str | None = None
    pmode_id: str | None = None
    message_id: str | None = None
    conversation_id: str | None = None
    ref_to_message_id: str | None = None
    error_code: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE clause, as a list of conditions all of which must hold."""
        found: list[ColumnElement[bool]] = []
        if self.message_id is not None:
            # Both directions named, so the unique (direction, message_id) index answers the lookup.
            directions = [self.direction.value] if self.direction else [d.value for d in Direction]
            found += [M.c.direction.in_(directions), M.c.message_id == self.message_id]
        elif self.direction is not None:
            found.append(M.c.direction == self.direction.value)
        if self.states:
            found.append(M.c.state.in_([state.value for state in self.states]))
        if self.partner is not None:
            found.append(or_(M.c.to_party == self.partner, M.c.from_party == self.partner))
        for column, value in (
            (M.c.service, self.service),
            (M.c.action, self.action),
            (M.c.pmode_id, self.pmode_id),
            (M.c.conversation_id, self.conversation_id),
            (M.c.ref_to_message_id, self.ref_to_message_id),
            (M.c.last_error_code, self.error_code),
        ):
            if value is not None:
                found.append(column == value)
        if self.since is not None:
            found.append(M.c.created_at >= self.since)
        if self.until is not None:
            found.append(M.c.created_at < self.until)
        return found


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: after the message created at ``created_at`` with primary key ``pk``."""

    created_at: datetime
    pk: int

    def __str__(self) -> str:
        return f"{self.created_at.isoformat()}~{self.pk}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """A cursor from its text form; ValueError for anything else."""
        when, _, pk = text.rpartition("~")
        parsed = datetime.fromisoformat(when)
        if parsed.tzinfo is None:
            raise ValueError("a cursor's time has its offset")
        return cls(parsed, int(pk))


@dataclass(frozen=True, slots=True)
class Page:
    """One page of messages, newest first, the count of all that match (capped) and where the next page starts."""

    messages: list[StoredMessage]
    count: int
    capped: bool  # the count stopped at the cap: there are at least that many
    next: Cursor | None


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """The outgoing messages waiting to leave, per state, and when the oldest of them was submitted."""

    by_state: dict[str, int]
    oldest_pending: datetime | None


class MessageSearch:
    """Read-only queries over the message store for operators (the console, the status)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(
        self, query: MessageQuery, *, limit: int = 50, after: Cursor | None = None, cap: int = COUNT_CAP
    ) -> Page:
        """A page of at most ``limit`` matching messages, newest first, starting after ``after``."""
        limit = max(1, min(limit, MAX_PAGE))
        conditions = query.conditions()
        listed = list(conditions)
        if after is not None:
            listed.append(tuple_(M.c.created_at, M.c.id) < tuple_(after.created_at, after.pk))
        rows_query = select(M).where(*listed).order_by(M.c.created_at.desc(), M.c.id.desc()).limit(limit + 1)
        counted = select(func.count()).select_from(select(M.c.id).where(*conditions).limit(cap + 1).subquery())

        def read(connection: Connection) -> tuple[Sequence[Any], int]:
            return connection.execute(rows_query).all(), int(connection.execute(counted).scalar_one())

        rows, count = await self.db.run(read)
        messages = [_message(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = messages[-1] if more and messages else None
        return Page(
            messages=messages,
            count=min(count, cap),
            capped=count > cap,
            next=None if last is None else Cursor(last.created_at, last.pk),
        )

    async def message_ids(self, query: MessageQuery, *, limit: int) -> list[tuple[Direction, str]]:
        """(direction, MessageId) of at most ``limit`` matching messages, newest first (for actions on a filter)."""
        statement = (
            select(M.c.direction, M.c.message_id)
            .where(*query.conditions())
            .order_by(M.c.created_at.desc(), M.c.id.desc())
            .limit(limit)
        )
        rows = await self._all(statement)
        return [(Direction(row.direction), row.message_id) for row in rows]

    async def errors(self, *, since: datetime, limit: int = 100, code: str | None = None) -> list[StoredMessage]:
        """Messages that carry an error and moved since ``since``, latest move first (the error log)."""

        def newest(state: MessageState) -> Select[Any]:
            # One state at a time: each reads at most ``limit`` entries of (state, updated_at) in order, where one
            # query over all three would walk the whole window of updated_at and look at every row's state. Only
            # keys first: the whole rows of the merged newest ``limit`` are read after.
            conditions = [M.c.state == state.value, M.c.updated_at >= since, M.c.last_error_code.is_not(None)]
            if code is not None:
                conditions.append(M.c.last_error_code == code)
            keys = select(M.c.id, M.c.updated_at).where(*conditions)
            return keys.order_by(M.c.updated_at.desc(), M.c.id.desc()).limit(limit)

        def read(connection: Connection) -> list[Any]:
            keys = [tuple(row) for state in ERRORED for row in connection.execute(newest(state)).all()]
            wanted = [pk for pk, _ in sorted(keys, key=lambda key: (key[1], key[0]), reverse=True)[:limit]]
            order = {pk: place for place, pk in enumerate(wanted)}
            rows = connection.execute(select(M).where(M.c.id.in_(wanted))).all() if wanted else []
            return sorted(rows, key=lambda row: order[row.id])

        return [_message(row) for row in await self.db.run(read)]

    async def failed_since(self, since: datetime, *, limit: int = 1000) -> list[StoredMessage]:
        """Outgoing messages that became ``failed`` at or after ``since``, in the order they did (alerting's feed)."""
        statement = (
            select(M)
            .where(
                M.c.state == MessageState.FAILED.value,
                M.c.updated_at >= since,
                M.c.direction == Direction.OUT.value,
            )
            .order_by(M.c.updated_at, M.c.id)
            .limit(limit)
        )
        return [_message(row) for row in await self._all(statement)]

    async def queues(self) -> QueueFigures:
        """How many outgoing messages wait in each pending state (and the dead-letter), and the oldest one."""
        # These states are outgoing messages' only, so the (state, created_at) index answers alone: no direction
        # to read from each row.
        waiting = [state.value for state in _OUTGOING_ONLY]
        counts = select(M.c.state, func.count()).where(M.c.state.in_(waiting)).group_by(M.c.state)
        oldest = select(func.min(M.c.created_at)).where(M.c.state.in_([state.value for state in PENDING]))

        def read(connection: Connection) -> QueueFigures:
            by_state = dict.fromkeys(waiting, 0)
            by_state.update({row[0]: int(row[1]) for row in connection.execute(counts)})
            # min() and max() take their column's type: the UTC datetime comes back aware.
            return QueueFigures(by_state, connection.execute(oldest).scalar_one_or_none())

        return await self.db.run(read)

    async def last_delivered(self, partners: Sequence[str]) -> dict[str, datetime | None]:
        """When the last message to each partner was delivered (None: never, or purged since)."""
        statement = select(func.max(M.c.updated_at)).where(
            M.c.to_party == bindparam("partner"), M.c.state == MessageState.DELIVERED.value
        )
        wanted = sorted(set(partners))

        def read(connection: Connection) -> dict[str, datetime | None]:
            found: dict[str, datetime | None] = {}
            for partner in wanted:
                found[partner] = connection.execute(statement, {"partner": partner}).scalar_one_or_none()
            return found

        return await self.db.run(read)

    async def _all(self, statement: Select[Any]) -> Sequence[Any]:
        return await self.db.run(lambda connection: connection.execute(statement).all())
