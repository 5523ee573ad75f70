"""The mailboxes: SQLAlchemy 2 Core over an async engine (SQLite through aiosqlite by default, PostgreSQL by URL).

Tables: ``mailboxes`` (one row per recipient with a mailbox here), ``mail`` (one row per message in a mailbox,
unique per AS4 MessageId and position, so a delivery handled twice is stored once), ``attachments``, and
``handled`` (per AS4 MessageId: the outcome, the reply sent back, so a restart neither loses nor repeats one).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from accesspoint.servicekit.database import Migrations
from accesspoint.servicekit.database import create_engine as servicekit_engine
from operators.deliveries import CheckedDelivery, MailAttachment, payload_sha256

metadata = MetaData()

mailboxes = Table(
    "mailboxes",
    metadata,
    Column("recipient", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

mail = Table(
    "mail",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recipient", String(64), ForeignKey("mailboxes.recipient"), nullable=False, index=True),
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

    async def create(self, recipients: Iterable[str] = (), *, now: datetime) -> None:
        """Bring the tables to the newest migration and open a mailbox for each recipient not yet known."""
        await MIGRATIONS.upgrade(self.engine)
        async with self.engine.begin() as conn:
            known = set((await conn.execute(select(mailboxes.c.recipient))).scalars())
            new = [{"recipient": r, "created_at": now} for r in dict.fromkeys(recipients) if r not in known]
            if new:
                await conn.execute(insert(mailboxes), new)

    async def has_mailbox(self, recipient: str) -> bool:
        """Whether the recipient has a mailbox here."""
        async with self.engine.connect() as conn:
            found = await conn.execute(select(mailboxes.c.recipient).where(mailboxes.c.recipient == recipient))
            return found.first() is not None

    async def handled(self, as4_message_id: str) -> Handled | None:
        """What was done with that AS4 message, if anything."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(handled).where(handled.c.as4_message_id == as4_message_id))).first()
        return None if row is None else Handled(row.as4_message_id, row.outcome, row.detail, row.reply_message_id)

    async def deliver(self, as4_message_id: str, delivery: CheckedDelivery, *, now: datetime) -> list[int]:
        """Put the delivery's messages in the recipient's mailbox and record it handled, in one transaction.
        A delivery already stored is not stored again (its mail ids are returned)."""
        signed_by = (
            None if delivery.sender_certificate is None else delivery.sender_certificate.subject.rfc4514_string()
        )
        try:
            async with self.engine.begin() as conn:
                ids: list[int] = []
                for position, item in enumerate(delivery.items):
                    result = await conn.execute(
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
                            received_at=now,
                        )
                    )
                    mail_id = int(result.inserted_primary_key[0])  # type: ignore[index]
                    ids.append(mail_id)
                    for index, attachment in enumerate(item.attachments):
                        await conn.execute(
                            insert(attachments).values(
                                mail_id=mail_id,
                                position=index,
                                filename=attachment.filename,
                                content_type=attachment.content_type,
                                body=attachment.body,
                            )
                        )
                await conn.execute(
                    insert(handled).values(
                        as4_message_id=as4_message_id, outcome="delivered", detail=None, handled_at=now
                    )
                )
                return ids
        except IntegrityError:
            async with self.engine.connect() as conn:
                rows = await conn.execute(select(mail.c.id).where(mail.c.as4_message_id == as4_message_id))
                return [int(i) for i in rows.scalars()]

    async def reject(self, as4_message_id: str, detail: str, *, now: datetime) -> None:
        """Record a delivery that went into no mailbox (a second call keeps the first record)."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(handled).values(
                        as4_message_id=as4_message_id, outcome="rejected", detail=detail[:2000], handled_at=now
                    )
                )
        except IntegrityError:
            pass

    async def replied(self, as4_message_id: str, reply_message_id: str, answer: list[dict[str, str]]) -> None:
        """Record the reply sent back for a handled AS4 message."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(handled)
                .where(handled.c.as4_message_id == as4_message_id)
                .values(reply_message_id=reply_message_id, answer=json.dumps(answer))
            )

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
