"""The mailboxes: SQLAlchemy 2 Core over an async engine (SQLite through aiosqlite by default, PostgreSQL by URL).

The delivery path (``handled``, ``state``, ``deliver``, ``reject``, ``replied``) runs each transaction as one
synchronous function through ``servicekit.database.Database``: one worker thread hop per transaction, where
aiosqlite hops to its thread for every cursor, execute, fetch and commit (two thirds of a delivery's CPU).

Tables: ``mailboxes`` (one row per recipient with a mailbox here), ``mail`` (one row per message in a mailbox,
unique per AS4 MessageId and position, so a delivery handled twice is stored once), ``attachments``, and
``handled`` (per AS4 MessageId: the outcome, the reply sent back, so a restart neither loses nor repeats one).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
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

from accesspoint.servicekit.database import Database, Migrations
from accesspoint.servicekit.database import create_engine as servicekit_engine
from operators.deliveries import CheckedDelivery, MailAttachment, payload_sha256
from operators.letters import FileStore, Letter, LetterPart

metadata = MetaData()

# A mailbox key is FaR's recipient id: 12 digits, or an eIDAS identifier of up to 256 characters.
KEY_LENGTH = 256

mailboxes = Table(
    "mailboxes",
    metadata,
    Column("recipient", String(KEY_LENGTH), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # active; pending (waiting for signatures at FaR); moving-in / moving-out (a switch under way), moved (handed
    # over: whatever still arrives is passed on); closed (deregistered: kept until the retention rule erases it)
    Column("state", String(16), nullable=False, server_default="active"),
    Column("holder_name", String(256)),
    Column("closed_at", DateTime(timezone=True)),
)

mail = Table(
    "mail",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recipient", String(KEY_LENGTH), ForeignKey("mailboxes.recipient"), nullable=False, index=True),
    Column("as4_message_id", String(255), nullable=False),
    Column("position", Integer, nullable=False),
    Column("network", String(32), nullable=False),
    Column("reference", String(255), nullable=False),
    Column("sender", String(255), nullable=False),
    Column("sender_name", String(255)),
    Column("subject", Text, nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("signed_by", Text),  # the sender certificate's subject, when the delivery was signed
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("as4_message_id", "position", name="uq_mail_delivery"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("mail_id", Integer, ForeignKey("mail.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("body", LargeBinary, nullable=False),
)

handled = Table(
    "handled",
    metadata,
    Column("as4_message_id", String(255), primary_key=True),
    Column("outcome", String(32), nullable=False),  # delivered / rejected
    Column("detail", Text),
    Column("reply_message_id", String(255)),
    Column("handled_at", DateTime(timezone=True), nullable=False),
    Column("answer", Text),  # JSON: the reply's payloads (content id, mime type), kept to resend after a crash
)


# A letter exactly as it arrived: the business envelope and every other payload as files (``storage``), the
# signed answer sent back, and the access point's record of the AS4 message (its evidence digests), so that a
# move to another operator can hand it over as received (operators/letters.py, operators/portability.py).
letters = Table(
    "letters",
    metadata,
    Column("uid", String(36), primary_key=True),
    Column("recipient", String(KEY_LENGTH), ForeignKey("mailboxes.recipient"), nullable=False),
    # Where the letter first arrived: the AS4 MessageId (or soap:<business id>); unique per mailbox, so a letter
    # handed over twice (a retried transfer) is stored once.
    Column("origin", String(255), nullable=False),
    Column("network", String(32), nullable=False),
    Column("business_id", String(255), nullable=False),
    Column("sender", String(255), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("parts", Text, nullable=False),  # JSON: [{name, content_id, mime_type, role, size, sha256}]
    Column("size", Integer, nullable=False),  # of every part together
    Column("metadata", Text, nullable=False),  # JSON: the AS4 record (parties, service, action, evidence digests)
    Column("answered_by", String(64)),  # the operator whose signed answer the letter carries
    Column("imported_from", String(64)),
    Column("imported_at", DateTime(timezone=True)),
    UniqueConstraint("recipient", "origin", name="uq_letter_origin"),
)

# Who did what with a mailbox: reads of company mailboxes (with the person), holder changes, erasure, switches.
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(32), nullable=False),
    Column("mailbox", String(KEY_LENGTH), nullable=False, index=True),
    Column("detail", Text),
)

# Holders' sessions after an e-ID login: the SHA-256 of the bearer secret, whose, until when.
sessions = Table(
    "sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("person", String(KEY_LENGTH), nullable=False),
    Column("name", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Nonces of identity assertions this operator accepted: each counts once.
used_nonces = Table(
    "used_nonces",
    metadata,
    Column("nonce", String(200), primary_key=True),
    Column("used_at", DateTime(timezone=True), nullable=False),
)

# Where to notify: per mailbox and person ("" for the holder of a personal mailbox) and channel.
contacts = Table(
    "contacts",
    metadata,
    Column("mailbox", String(KEY_LENGTH), primary_key=True),
    Column("person", String(KEY_LENGTH), primary_key=True),
    Column("channel", String(16), primary_key=True),  # email, sms, push
    Column("address", String(512), nullable=False),
    Column("enabled", Boolean, nullable=False),
)

# The operator's side of a holder's move (FaR's switch id): as the old operator (exporting) or the new one.
moves = Table(
    "moves",
    metadata,
    Column("switch_id", String(64), primary_key=True),
    Column("recipient", String(KEY_LENGTH), nullable=False),
    Column("role", String(8), nullable=False),  # from | to
    Column("peer", String(64), nullable=False),  # the other operator's id (16 + orgnr)
    Column("state", String(16), nullable=False),  # requested, switched, done, cancelled, failed
    Column("detail", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Export batches of a move (the old operator) and imports of them (the new one): what was in each, its AS4
# message, and its state (prepared, sent, confirmed; imported, refused).
batches = Table(
    "batches",
    metadata,
    Column("switch_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("side", String(8), primary_key=True),  # export | import
    Column("letters", Text, nullable=False),  # JSON list of letter uids
    Column("message_id", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("manifest_sha256", String(64)),
    Column("detail", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# WAL lets the API read while a delivery is stored; NORMAL sync survives a crash of the process (WAL mode).
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000")

MIGRATIONS = Migrations(
    Path(__file__).resolve().parent / "migrations",
    version_table="operator_alembic_version",
    adopt_tables={"mailboxes", "mail", "attachments", "handled"},
)


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL and foreign keys."""
    return servicekit_engine(url, pragmas=SQLITE_PRAGMAS)


@dataclass(frozen=True, slots=True)
class StoredMail:
    """A message in a mailbox."""

    id: int
    recipient: str
    as4_message_id: str
    network: str
    reference: str
    sender: str
    sender_name: str | None
    subject: str
    content_type: str
    sha256: str
    signed_by: str | None
    received_at: datetime
    body: bytes = b""
    attachments: tuple[MailAttachment, ...] = ()


@dataclass(frozen=True, slots=True)
class Delivered:
    """A delivery in the mailbox: its mail ids, and whether this call stored it (else it was stored before)."""

    ids: list[int]
    new: bool


@dataclass(frozen=True, slots=True)
class Handled:
    """What was done with an AS4 message."""

    as4_message_id: str
    outcome: str
    detail: str | None
    reply_message_id: str | None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class MailboxStore:
    """The operator's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # The same database for the delivery path, one thread hop per transaction, with the engine's SQLITE_PRAGMAS.
        self.database = Database(engine.url, pragmas=SQLITE_PRAGMAS)

    async def dispose(self) -> None:
        """Close every pooled connection of both engines."""
        await self.database.dispose()
        await self.engine.dispose()

    async def create(self, recipients: Iterable[str] = (), *, now: datetime) -> None:
        """Bring the tables to the newest migration and open a mailbox for each recipient not yet known."""
        await MIGRATIONS.upgrade(self.engine)
        async with self.engine.begin() as conn:
            known = set((await conn.execute(select(mailboxes.c.recipient))).scalars())
            new = [{"recipient": r, "created_at": now} for r in dict.fromkeys(recipients) if r not in known]
            if new:
                await conn.execute(insert(mailboxes), new)

    async def has_mailbox(self, recipient: str) -> bool:
        """Whether the recipient has a mailbox here that takes mail (not closed, not waiting for signatures)."""
        return await self.state(recipient) in RECEIVING

    async def state(self, recipient: str) -> str | None:
        """The mailbox's state (None: no mailbox here)."""

        def read(conn: Connection) -> str | None:
            return conn.scalar(select(mailboxes.c.state).where(mailboxes.c.recipient == recipient))

        return await self.database.run(read)

    async def handled(self, as4_message_id: str) -> Handled | None:
        """What was done with that AS4 message, if anything."""

        def read(conn: Connection) -> Handled | None:
            row = conn.execute(select(handled).where(handled.c.as4_message_id == as4_message_id)).first()
            return None if row is None else Handled(row.as4_message_id, row.outcome, row.detail, row.reply_message_id)

        return await self.database.run(read)

    async def deliver(
        self,
        as4_message_id: str,
        delivery: CheckedDelivery,
        *,
        now: datetime,
        letter: Letter | None = None,
        files: FileStore | None = None,
        staged: Path | None = None,
        also: Callable[[Connection, list[int]], None] | None = None,
    ) -> Delivered:
        """Put the delivery's messages in the recipient's mailbox and record it handled, in one transaction; with
        ``letter``, its files (``staged``) are moved into place and its row written in the same transaction;
        ``also`` writes what else goes with the new mail ids (the two-way records) in it too, so no reader sees
        the mail without them. A delivery already stored is not stored again (its mail ids are returned, not
        ``new``, the staged files left)."""

        def store(conn: Connection) -> Delivered:
            ids = insert_mail(conn, as4_message_id, delivery, received_at=now)
            if also is not None:
                also(conn, ids)
            if letter is not None:
                conn.execute(insert(letters).values(**letter.row()))
            conn.execute(
                insert(handled).values(as4_message_id=as4_message_id, outcome="delivered", detail=None, handled_at=now)
            )
            return Delivered(ids, new=True)

        def stored(conn: Connection) -> Delivered:
            rows = conn.execute(select(mail.c.id).where(mail.c.as4_message_id == as4_message_id))
            return Delivered([int(i) for i in rows.scalars()], new=False)

        if letter is not None and files is not None and staged is not None:
            files.place(staged, letter.uid)
        try:
            return await self.database.run(store)
        except IntegrityError:
            if letter is not None and files is not None:
                files.remove([letter.uid])
            return await self.database.run(stored)
        except BaseException:
            if letter is not None and files is not None:
                files.remove([letter.uid])
            raise

    async def letter(self, recipient: str, origin: str) -> Letter | None:
        """The letter that arrived as ``origin`` in ``recipient``'s mailbox."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(letters).where(letters.c.recipient == recipient, letters.c.origin == origin))
            ).first()
        return None if row is None else Letter.from_row(row)

    async def letter_of_mail(self, recipient: str, mail_id: int) -> Letter | None:
        """The letter that brought mail ``mail_id`` into ``recipient``'s mailbox (None: not there)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(letters)
                    .join(mail, (mail.c.as4_message_id == letters.c.origin) & (mail.c.recipient == letters.c.recipient))
                    .where(mail.c.id == mail_id, mail.c.recipient == recipient)
                )
            ).first()
        return None if row is None else Letter.from_row(row)

    async def letters_of(
        self, recipient: str, *, limit: int = 100_000, uids: Sequence[str] | None = None
    ) -> list[Letter]:
        """A mailbox's letters (those of ``uids`` only, when given), oldest first."""
        query = select(letters).where(letters.c.recipient == recipient)
        if uids is not None:
            query = query.where(letters.c.uid.in_(list(uids)))
        async with self.engine.connect() as conn:
            rows = await conn.execute(query.order_by(letters.c.received_at, letters.c.uid).limit(limit))
            return [Letter.from_row(row) for row in rows]

    async def add_answer(self, uid: str, parts: Sequence[LetterPart], answered_by: str) -> None:
        """Record the answer files written into a letter's folder."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(letters.c.parts).where(letters.c.uid == uid))).first()
            if row is None:
                return
            kept = [p for p in json.loads(row.parts) if p["role"] != "answer"]
            await conn.execute(
                update(letters)
                .where(letters.c.uid == uid)
                .values(
                    parts=json.dumps(kept + [p.to_json() for p in parts]),
                    size=sum(p["size"] for p in kept) + sum(p.size for p in parts),
                    answered_by=answered_by,
                )
            )

    async def erase(self, mailbox: str, *, actor: str, action: str, detail: dict[str, Any], now: datetime) -> list[str]:
        """Delete every letter and mail of a mailbox with their two-way records (not the mailbox), audited in the
        same transaction; the uids whose files the caller removes."""
        from operators.twoway_store import forget  # the two-way tables build on these (a cycle at import time)

        async with self.engine.begin() as conn:
            await forget(conn, mailbox)  # first: their rows name the mail rows
            uids = list((await conn.execute(select(letters.c.uid).where(letters.c.recipient == mailbox))).scalars())
            ids = select(mail.c.id).where(mail.c.recipient == mailbox)
            count = len(list((await conn.execute(ids)).scalars()))
            await conn.execute(delete(attachments).where(attachments.c.mail_id.in_(ids)))
            await conn.execute(delete(mail).where(mail.c.recipient == mailbox))
            await conn.execute(delete(letters).where(letters.c.recipient == mailbox))
            await write_audit(conn, actor, action, mailbox, {**detail, "letters": len(uids), "mail": count}, now=now)
        return uids

    async def audit(self, actor: str, action: str, mailbox: str, detail: Any, *, now: datetime) -> None:
        """One row of the audit trail."""
        async with self.engine.begin() as conn:
            await write_audit(conn, actor, action, mailbox, detail, now=now)

    async def audit_trail(self, mailbox: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The latest audit rows of a mailbox, newest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(audit).where(audit.c.mailbox == mailbox).order_by(audit.c.id.desc()).limit(limit)
            )
            return [
                {
                    "at": _aware(r.at).isoformat(),
                    "actor": r.actor,
                    "action": r.action,
                    "mailbox": r.mailbox,
                    "detail": None if r.detail is None else json.loads(r.detail),
                }
                for r in rows
            ]

    async def reject(self, as4_message_id: str, detail: str, *, now: datetime) -> None:
        """Record a delivery that went into no mailbox (a second call keeps the first record)."""
        row = {"as4_message_id": as4_message_id, "outcome": "rejected", "detail": detail[:2000], "handled_at": now}
        with contextlib.suppress(IntegrityError):
            await self.database.run(partial(_execute, insert(handled).values(**row)))

    async def replied(self, as4_message_id: str, reply_message_id: str, answer: list[dict[str, str]]) -> None:
        """Record the reply sent back for a handled AS4 message."""
        statement = (
            update(handled)
            .where(handled.c.as4_message_id == as4_message_id)
            .values(reply_message_id=reply_message_id, answer=json.dumps(answer))
        )
        await self.database.run(partial(_execute, statement))

    async def list(self, recipient: str, *, limit: int = 100) -> list[StoredMail]:
        """The messages in a mailbox, newest first (without bodies)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(*[c for c in mail.c if c.name != "body"])
                .where(mail.c.recipient == recipient)
                .order_by(mail.c.id.desc())
                .limit(limit)
            )
            return [_mail(row._mapping) for row in rows]

    async def read(self, recipient: str, mail_id: int) -> StoredMail | None:
        """One message with its body and attachments (None when it is not in that mailbox)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(mail).where(mail.c.id == mail_id, mail.c.recipient == recipient))).first()
            if row is None:
                return None
            files = await conn.execute(
                select(attachments).where(attachments.c.mail_id == mail_id).order_by(attachments.c.position)
            )
            found = tuple(MailAttachment(f.filename, f.content_type, f.body) for f in files)
        return _mail(row._mapping, found)


def _mail(row: Any, files: tuple[MailAttachment, ...] = ()) -> StoredMail:
    return StoredMail(
        id=row["id"],
        recipient=row["recipient"],
        as4_message_id=row["as4_message_id"],
        network=row["network"],
        reference=row["reference"],
        sender=row["sender"],
        sender_name=row["sender_name"],
        subject=row["subject"],
        content_type=row["content_type"],
        sha256=row["sha256"],
        signed_by=row["signed_by"],
        received_at=_aware(row["received_at"]),
        body=row.get("body", b""),
        attachments=files,
    )


# Mailbox states in which deliveries are taken (a closed mailbox, or one waiting for signatures, takes none).
RECEIVING = frozenset({"active", "moving-in", "moving-out", "moved"})


def insert_mail(
    conn: Connection, as4_message_id: str, delivery: CheckedDelivery, *, received_at: datetime
) -> list[int]:
    """The delivery's messages as mail rows (and their attachments); the mail ids. Synchronous: an async caller
    runs it with ``AsyncConnection.run_sync``."""
    signed_by = None if delivery.sender_certificate is None else delivery.sender_certificate.subject.rfc4514_string()
    ids: list[int] = []
    for position, item in enumerate(delivery.items):
        result = conn.execute(
            insert(mail).values(
                recipient=delivery.recipient,
                as4_message_id=as4_message_id,
                position=position,
                network=str(delivery.network),
                reference=item.reference,
                sender=delivery.sender,
                sender_name=delivery.sender_name,
                subject=item.subject,
                content_type=item.content_type,
                body=item.body,
                sha256=payload_sha256(item.body),
                signed_by=signed_by,
                received_at=received_at,
            )
        )
        mail_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        ids.append(mail_id)
        if item.attachments:
            conn.execute(
                insert(attachments),
                [
                    {
                        "mail_id": mail_id,
                        "position": index,
                        "filename": attachment.filename,
                        "content_type": attachment.content_type,
                        "body": attachment.body,
                    }
                    for index, attachment in enumerate(item.attachments)
                ],
            )
    return ids


def _execute(statement: Any, conn: Connection) -> None:
    conn.execute(statement)


async def write_audit(
    conn: AsyncConnection, actor: str, action: str, mailbox: str, detail: Any, *, now: datetime
) -> None:
    """One audit row in the caller's transaction."""
    await conn.execute(
        insert(audit).values(
            at=now,
            actor=actor[:256],
            action=action,
            mailbox=mailbox,
            detail=None if detail is None else json.dumps(detail, sort_keys=True),
        )
    )
