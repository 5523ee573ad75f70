"""The operator's two-way tables (migration ``t001``) and the queries on them, SQLAlchemy 2 Core.

- ``twoway_letters``: per letter in a mailbox (a ``mail`` row), what it asks (its terms as JSON, the reply option
  and deadline, the receipt request, the delgivning deadline, the invoice's due date) and what became of it
  (opened, served or not, paid);
- ``twoway_case_events``: every case event a sender sent, for the holder's timeline per sender and case;
- ``twoway_replies``: the holders' answers sent, one row each;
- ``twoway_payments``: one row per paid invoice (its key is the letter: a second payment cannot be stored);
- ``twoway_outbox``: what the operator submits to its access point (answers, receipts, kvitton, confirmations),
  written before it is submitted and marked when the access point took it, so a crash or an outage loses none
  and a retry sends none twice (the MessageIds are derived, the access point refuses a repeated one).

A mailbox that is moving out (``moving-out``, then ``moved``) is frozen for the holder's two-way doings: every write
that records one (an answer, an opening, a served letter, a payment claimed, a letter not served) first takes the
mailbox's row (an UPDATE: PostgreSQL's row lock, SQLite's write lock) and raises ``MailboxMoving`` when the move has
begun, so each either committed before the mailbox became ``moving-out`` or stores nothing. Only a payment claimed
before may still complete (``paid``): the move waits for it (``twoway_transfer.unsettled``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accesspoint.envelopes.letter import LetterTerms, terms_from_json
from operators.mailbox import handled, mail, mailboxes
from operators.mailbox import metadata as metadata  # re-exported: the mailbox's tables with these beside them

Moment = DateTime(timezone=True)

letters = Table(
    "twoway_letters",
    metadata,
    Column("mail_id", Integer, ForeignKey("mail.id"), primary_key=True),
    Column("recipient", String(256), nullable=False),
    Column("as4_message_id", String(255), nullable=False),
    Column("conversation_id", String(255)),
    Column("network", String(32), nullable=False),
    Column("business_id", String(255), nullable=False),
    Column("sender", String(255), nullable=False),
    Column("sender_name", String(256)),
    Column("holder_party", String(256), nullable=False),
    Column("subject", Text, nullable=False),
    Column("federation", String(255)),
    Column("terms", Text, nullable=False),
    Column("reply_option", String(16)),
    Column("reply_deadline", Moment),
    Column("receipt_request", String(8)),
    Column("opened_at", Moment),
    Column("delgivning_deadline", Moment),
    Column("delgivning_state", String(16)),
    Column("served_at", Moment),
    Column("invoice", Boolean, nullable=False),
    Column("due_date", Date),
    Column("paid_at", Moment),
    Column("received_at", Moment, nullable=False),
    Index("ix_twoway_letters_recipient", "recipient", "invoice", "due_date"),
    Index("ix_twoway_letters_delgivning", "delgivning_state", "delgivning_deadline"),
)

case_events = Table(
    "twoway_case_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recipient", String(256), nullable=False),
    Column("sender", String(255), nullable=False),
    Column("sender_name", String(256)),
    Column("case_id", String(255), nullable=False),
    Column("status", Text, nullable=False),
    Column("time", Moment, nullable=False),
    Column("link", Text),
    Column("matter_status", String(32)),
    Column("event_id", String(255)),
    Column("subject", Text),
    Column("mail_id", Integer),
    Column("as4_message_id", String(255), nullable=False),
    Column("position", Integer, nullable=False),
    Column("received_at", Moment, nullable=False),
    UniqueConstraint("as4_message_id", "position", name="uq_twoway_case_event"),
    Index("ix_twoway_case_events_case", "recipient", "sender", "case_id", "time"),
)

replies = Table(
    "twoway_replies",
    metadata,
    Column("reply_id", String(64), primary_key=True),
    Column("mail_id", Integer, ForeignKey("mail.id"), nullable=False),
    Column("recipient", String(256), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("created_at", Moment, nullable=False),
    Index("ix_twoway_replies_mail", "mail_id"),
)

payments = Table(
    "twoway_payments",
    metadata,
    Column("mail_id", Integer, ForeignKey("mail.id"), primary_key=True),
    Column("payment_id", String(64), nullable=False, unique=True),
    Column("recipient", String(256), nullable=False),
    Column("payer", String(256), nullable=False),
    Column("state", String(16), nullable=False),  # pending (the provider is asked) | paid
    Column("provider", String(64)),
    Column("provider_reference", String(255)),
    Column("amount", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("paid_at", Moment),
    Column("message_id", String(255)),
)

outbox = Table(
    "twoway_outbox",
    metadata,
    Column("message_id", String(255), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("mail_id", Integer),
    Column("document", Text, nullable=False),
    Column("created_at", Moment, nullable=False),
    Column("sent_at", Moment),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Index("ix_twoway_outbox_unsent", "sent_at"),
)


FROZEN = frozenset({"moving-out", "moved"})  # the mailbox's letters belong to a move: nothing more is done here


class MailboxMoving(Exception):
    """The holder acted on a letter of a mailbox that is moving to another operator: nothing was stored."""

    def __init__(self, recipient: str, state: str) -> None:
        self.recipient, self.state = recipient, state
        super().__init__(f"the mailbox of {recipient} is {state}: its letters are handled by the new operator")


async def _hold(conn: AsyncConnection, *, recipient: str | None = None, mail_id: int | None = None) -> None:
    """Take the mailbox's row for this transaction (the mailbox of ``recipient``, or of letter ``mail_id``) and
    raise MailboxMoving when a move has begun. The UPDATE comes first: it waits for a move's state change in flight
    and is waited for by it, so the state read after it is the one the transaction commits against."""
    owner: Any = (
        recipient
        if recipient is not None
        else select(letters.c.recipient).where(letters.c.mail_id == mail_id).scalar_subquery()
    )
    await conn.execute(update(mailboxes).where(mailboxes.c.recipient == owner).values(state=mailboxes.c.state))
    found = (
        await conn.execute(select(mailboxes.c.recipient, mailboxes.c.state).where(mailboxes.c.recipient == owner))
    ).first()
    if found is not None and found.state in FROZEN:
        raise MailboxMoving(found.recipient, found.state)


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


async def forget(conn: AsyncConnection, recipient: str, origins: Sequence[str] | None = None) -> None:
    """Delete the two-way records (terms, answers, payments, case events) of a mailbox's letters that arrived as
    ``origins`` (None: of all its letters) on ``conn``, before the mail rows they name are deleted (a move, an
    erasure); the outbox still sends what waits in it."""
    ids = select(mail.c.id).where(mail.c.recipient == recipient)
    events = delete(case_events).where(case_events.c.recipient == recipient)
    if origins is not None:
        ids = ids.where(mail.c.as4_message_id.in_(origins))
        events = events.where(case_events.c.as4_message_id.in_(origins))
    for table in (replies, payments, letters):
        await conn.execute(delete(table).where(table.c.mail_id.in_(ids)))
    await conn.execute(events)


@dataclass(frozen=True, slots=True)
class LetterRow:
    """A letter's two-way record."""

    mail_id: int
    recipient: str
    as4_message_id: str
    conversation_id: str | None
    network: str
    business_id: str
    sender: str
    sender_name: str | None
    holder_party: str
    subject: str
    federation: str | None
    terms: LetterTerms
    opened_at: datetime | None
    delgivning_state: str | None
    served_at: datetime | None
    paid_at: datetime | None
    received_at: datetime

    @classmethod
    def of(cls, row: Any) -> LetterRow:
        values = {k: _aware(v) for k, v in row._mapping.items()}
        return cls(
            mail_id=values["mail_id"],
            recipient=values["recipient"],
            as4_message_id=values["as4_message_id"],
            conversation_id=values["conversation_id"],
            network=values["network"],
            business_id=values["business_id"],
            sender=values["sender"],
            sender_name=values["sender_name"],
            holder_party=values["holder_party"],
            subject=values["subject"],
            federation=values["federation"],
            terms=terms_from_json(json.loads(values["terms"])),
            opened_at=values["opened_at"],
            delgivning_state=values["delgivning_state"],
            served_at=values["served_at"],
            paid_at=values["paid_at"],
            received_at=values["received_at"],
        )


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One submission waiting to be taken by the access point."""

    message_id: str
    kind: str
    document: dict[str, Any]
    attempts: int


class TwoWayStore:
    """The queries (every write one transaction)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @staticmethod
    def record(conn: Connection, rows: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> None:
        """Letters' records and case events of one delivery, once, on ``conn`` (the delivery's transaction): what
        is already there is left as it is. Synchronous: an async caller runs it with ``AsyncConnection.run_sync``."""
        if rows:
            found = conn.execute(select(letters.c.mail_id).where(letters.c.mail_id.in_([r["mail_id"] for r in rows])))
            known = set(found.scalars())
            fresh = [r for r in rows if r["mail_id"] not in known]
            if fresh:
                conn.execute(insert(letters), fresh)
        if events:
            ids = events[0]["as4_message_id"]
            known_events = conn.execute(select(case_events.c.position).where(case_events.c.as4_message_id == ids))
            seen = set(known_events.scalars())
            fresh = [e for e in events if e["position"] not in seen]
            if fresh:
                conn.execute(insert(case_events), fresh)

    async def letter(self, recipient: str, mail_id: int) -> LetterRow | None:
        """A letter's record, when it is in that mailbox."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(letters).where(letters.c.mail_id == mail_id, letters.c.recipient == recipient)
                )
            ).first()
        return None if row is None else LetterRow.of(row)

    async def mark_opened(
        self, mail_id: int, at: datetime, message_id: str | None = None, document: dict[str, Any] | None = None
    ) -> bool:
        """Record the first opening with its read receipt's submission (``message_id``, ``document``; None when none
        was asked for) in one transaction; True only for the call that recorded it, MailboxMoving when the mailbox
        is moving out."""
        async with self.engine.begin() as conn:
            await _hold(conn, mail_id=mail_id)
            done = await conn.execute(
                update(letters).where(letters.c.mail_id == mail_id, letters.c.opened_at.is_(None)).values(opened_at=at)
            )
            if done.rowcount and message_id is not None and document is not None:
                await self._queue(conn, message_id, "opened", mail_id, document, at)
            return bool(done.rowcount)

    async def invoices(
        self, recipient: str, *, due_after: date | None, due_before: date | None, limit: int = 500
    ) -> list[LetterRow]:
        """The mailbox's invoices, by due date."""
        query = select(letters).where(letters.c.recipient == recipient, letters.c.invoice.is_(True))
        if due_after is not None:
            query = query.where(letters.c.due_date >= due_after)
        if due_before is not None:
            query = query.where(letters.c.due_date <= due_before)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query.order_by(letters.c.due_date, letters.c.mail_id).limit(limit))
            return [LetterRow.of(row) for row in rows]

    async def timeline(self, recipient: str, sender: str | None = None, case_id: str | None = None) -> list[Any]:
        """Case events of a mailbox (of one sender, of one case), oldest first."""
        query = select(case_events).where(case_events.c.recipient == recipient)
        if sender is not None:
            query = query.where(case_events.c.sender == sender)
        if case_id is not None:
            query = query.where(case_events.c.case_id == case_id)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query.order_by(case_events.c.time, case_events.c.id).limit(10_000))
            return [{k: _aware(v) for k, v in row._mapping.items()} for row in rows]

    async def replies_of(self, mail_id: int) -> list[dict[str, Any]]:
        """The answers sent to a letter."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(replies).where(replies.c.mail_id == mail_id).order_by(replies.c.created_at)
            )
            return [{k: _aware(v) for k, v in row._mapping.items()} for row in rows]

    async def payment_of(self, mail_id: int) -> dict[str, Any] | None:
        """The payment of an invoice, if any."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(payments).where(payments.c.mail_id == mail_id))).first()
            return None if row is None else {k: _aware(v) for k, v in row._mapping.items()}

    # --- writes that send something: the row and its outbox entry in one transaction ---

    @staticmethod
    async def _queue(
        conn: AsyncConnection, message_id: str, kind: str, mail_id: int | None, document: dict[str, Any], at: datetime
    ) -> None:
        await conn.execute(
            insert(outbox).values(
                message_id=message_id,
                kind=kind,
                mail_id=mail_id,
                document=json.dumps(document),
                created_at=at,
                attempts=0,
            )
        )

    async def send(
        self, message_id: str, kind: str, mail_id: int | None, document: dict[str, Any], at: datetime
    ) -> bool:
        """Queue a submission; False when one with that MessageId is queued already."""
        try:
            async with self.engine.begin() as conn:
                await self._queue(conn, message_id, kind, mail_id, document, at)
            return True
        except IntegrityError:
            return False

    async def reply(self, row: dict[str, Any], document: dict[str, Any], *, at: datetime) -> None:
        """A holder's answer and its submission (IntegrityError when that answer id was sent already, MailboxMoving
        when the mailbox is moving out)."""
        async with self.engine.begin() as conn:
            await _hold(conn, recipient=row["recipient"])
            await conn.execute(insert(replies).values(**row))
            await self._queue(conn, row["message_id"], "reply", row["mail_id"], document, at)

    async def serve(self, mail_id: int, at: datetime, message_id: str, document: dict[str, Any]) -> bool:
        """Mark a letter served (only while pending) and queue its kvitto; False when it was not pending,
        MailboxMoving when the mailbox is moving out."""
        async with self.engine.begin() as conn:
            await _hold(conn, mail_id=mail_id)
            done = await conn.execute(
                update(letters)
                .where(letters.c.mail_id == mail_id, letters.c.delgivning_state == "pending")
                .values(delgivning_state="served", served_at=at)
            )
            if not done.rowcount:
                return False
            await self._queue(conn, message_id, "delgivningskvitto", mail_id, document, at)
            return True

    async def overdue_services(self, now: datetime, limit: int = 500) -> list[LetterRow]:
        """Served letters still pending past their deadline."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(letters)
                .where(letters.c.delgivning_state == "pending", letters.c.delgivning_deadline < now)
                .limit(limit)
            )
            return [LetterRow.of(row) for row in rows]

    async def not_served(self, mail_id: int, at: datetime, message_id: str, document: dict[str, Any]) -> bool:
        """Mark a letter not served (only while pending) and queue the notice; False when it was not pending,
        MailboxMoving when the mailbox is moving out (its new operator's sweep sends the notice)."""
        async with self.engine.begin() as conn:
            await _hold(conn, mail_id=mail_id)
            done = await conn.execute(
                update(letters)
                .where(letters.c.mail_id == mail_id, letters.c.delgivning_state == "pending")
                .values(delgivning_state="not-served")
            )
            if not done.rowcount:
                return False
            await self._queue(conn, message_id, "not-served", mail_id, document, at)
            return True

    async def reserve_payment(self, row: dict[str, Any]) -> bool:
        """Claim an invoice for one payment; False when it is paid or being paid, MailboxMoving when the mailbox is
        moving out."""
        try:
            async with self.engine.begin() as conn:
                await _hold(conn, recipient=row["recipient"])
                await conn.execute(insert(payments).values(**row, state="pending"))
            return True
        except IntegrityError:
            return False

    async def release_payment(self, mail_id: int) -> None:
        """Give back a claim whose payment the provider refused."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(payments).where(payments.c.mail_id == mail_id, payments.c.state == "pending"))

    async def paid(self, mail_id: int, values: dict[str, Any], message_id: str, document: dict[str, Any]) -> None:
        """The payment carried out: recorded with its confirmation's submission (also in a mailbox moving out: the
        claim was made before, and the move waits for it)."""
        async with self.engine.begin() as conn:
            await conn.execute(update(payments).where(payments.c.mail_id == mail_id).values(**values, state="paid"))
            await conn.execute(update(letters).where(letters.c.mail_id == mail_id).values(paid_at=values["paid_at"]))
            await self._queue(conn, message_id, "payment-confirmation", mail_id, document, values["paid_at"])

    # --- operator broadcasts ---

    async def mailbox_keys(self) -> list[str]:
        """Every mailbox here (open ones, where mailboxes have a state)."""
        state = getattr(mailboxes.c, "state", None)
        query = select(mailboxes.c.recipient)
        if state is not None:
            query = query.where(state == "active")
        async with self.engine.connect() as conn:
            return list((await conn.execute(query.order_by(mailboxes.c.recipient))).scalars())

    async def broadcast(self, message_id: str, rows: Sequence[dict[str, Any]], detail: str, at: datetime) -> bool:
        """A broadcast's mail, one row per mailbox, and the delivery handled, in one transaction; False when the
        broadcast was stored before."""
        try:
            async with self.engine.begin() as conn:
                if rows:
                    await conn.execute(insert(mail), list(rows))
                await conn.execute(
                    insert(handled).values(as4_message_id=message_id, outcome="delivered", detail=detail, handled_at=at)
                )
            return True
        except IntegrityError:
            return False

    # --- the outbox ---

    async def unsent(self, limit: int = 100) -> list[OutboxItem]:
        """Submissions not yet taken, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(outbox).where(outbox.c.sent_at.is_(None)).order_by(outbox.c.created_at).limit(limit)
            )
            return [OutboxItem(r.message_id, r.kind, json.loads(r.document), r.attempts) for r in rows]

    async def sent(self, message_id: str, at: datetime) -> None:
        """The access point took it."""
        async with self.engine.begin() as conn:
            await conn.execute(update(outbox).where(outbox.c.message_id == message_id).values(sent_at=at))

    async def failed(self, message_id: str, error: str) -> None:
        """An attempt that did not go through (tried again at the next sweep)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.message_id == message_id)
                .values(attempts=outbox.c.attempts + 1, last_error=error[:2000])
            )

    async def outbox_of(self, mail_id: int) -> list[dict[str, Any]]:
        """What was sent (or is waiting) about a letter, newest last (without the documents)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(outbox.c.message_id, outbox.c.kind, outbox.c.created_at, outbox.c.sent_at)
                .where(outbox.c.mail_id == mail_id)
                .order_by(outbox.c.created_at)
            )
            return [{k: _aware(v) for k, v in row._mapping.items()} for row in rows]
