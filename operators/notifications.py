"""Telling holders that mail arrived (*aviseringar*) — never what it says.

When a letter reaches a mailbox the operator notifies the contacts kept for it (``PUT /api/v1/holders/{id}/contacts``):
the holder of a personal mailbox, and for a company each person who registered a contact *and* may view the
company's mailbox now (FaR is asked at the moment of sending: a former signatory is no longer told). A contact
can be switched off (``enabled`` false); a channel the operator has not configured is skipped.

The message names the operator and the mailbox, never the sender, subject or body of the letter: a notification
travels over channels (e-mail, SMS, push) that digital post must not trust with content.

Channels are a narrow Protocol: ``SmtpChannel`` (e-mail through an SMTP server; the tests run a local aiosmtpd),
and ``RecordingChannel`` for SMS and push (each message a JSON line in a file: tests and development; a real
gateway implements the same ``send``). A failing channel is logged; the delivery is never held up by it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select

from operators.far_link import FarRefused, FarUnreachable
from operators.holders import is_company
from operators.letters import Letter
from operators.mailbox import contacts, write_audit

if TYPE_CHECKING:
    from operators.service import Operator

log = logging.getLogger("operators.notifications")
SEND_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Notice:
    """What a holder is told: no sender, no subject, no body."""

    mailbox: str
    operator: str
    at: datetime

    @property
    def subject(self) -> str:
        """The e-mail subject / push title."""
        return f"Ny digital post hos {self.operator}"

    @property
    def text(self) -> str:
        """The message itself."""
        return (
            f"Du har fått ny digital post i brevlådan {self.mailbox} hos {self.operator} "
            f"({self.at.strftime('%Y-%m-%d %H:%M')} UTC). Logga in för att läsa den."
        )


class Channel(Protocol):
    """One way to reach a holder."""

    async def send(self, address: str, notice: Notice) -> None:
        """Deliver the notice to the address (raise on failure)."""
        ...


class SmtpChannel:
    """E-mail through an SMTP server (plain SMTP on a trusted relay; the call runs in a worker thread)."""

    def __init__(self, host: str, port: int, sender: str) -> None:
        self.host, self.port, self.sender = host, port, sender

    def _send(self, address: str, notice: Notice) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = address
        message["Subject"] = notice.subject
        message.set_content(notice.text)
        with smtplib.SMTP(self.host, self.port, timeout=SEND_TIMEOUT) as client:
            client.send_message(message)

    async def send(self, address: str, notice: Notice) -> None:
        """Send the e-mail."""
        await asyncio.to_thread(self._send, address, notice)


class RecordingChannel:
    """Appends each notice as a JSON line to a file (SMS and push in tests and development)."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    async def send(self, address: str, notice: Notice) -> None:
        """Record it."""
        line = json.dumps(
            {
                "channel": self.name,
                "to": address,
                "mailbox": notice.mailbox,
                "text": notice.text,
                "at": notice.at.isoformat(),
            },
            ensure_ascii=False,
        )
        await asyncio.to_thread(self._append, line)


def channels(operator: Operator) -> dict[str, Channel]:
    """The channels the operator's settings configure."""
    settings = operator.settings.notifications
    found: dict[str, Channel] = {}
    if settings.smtp_host is not None:
        found["email"] = SmtpChannel(settings.smtp_host, settings.smtp_port, settings.smtp_sender)
    if settings.sms_record is not None:
        found["sms"] = RecordingChannel("sms", settings.sms_record)
    if settings.push_record is not None:
        found["push"] = RecordingChannel("push", settings.push_record)
    return found


class Notifier:
    """Notifies a mailbox's contacts that a letter arrived (see the module docstring)."""

    def __init__(self, operator: Operator, channels_: dict[str, Channel]) -> None:
        self.operator = operator
        self.channels = channels_

    async def mail_arrived(self, letter: Letter) -> None:
        """Tell whoever should be told; failures are logged, never raised."""
        try:
            await asyncio.wait_for(self._notify(letter), SEND_TIMEOUT * 2)
        except Exception:
            log.exception("notifying about %s failed", letter.uid)

    async def _notify(self, letter: Letter) -> None:
        mailbox = letter.recipient
        async with self.operator.store.engine.connect() as conn:
            rows = (
                await conn.execute(select(contacts).where(contacts.c.mailbox == mailbox, contacts.c.enabled.is_(True)))
            ).all()
        notice = Notice(mailbox, self.operator.settings.name, letter.received_at)
        sent = []
        for row in rows:
            channel = self.channels.get(row.channel)
            if channel is None:
                continue
            if row.person and is_company(mailbox) and not await self._may_view(mailbox, row.person):
                continue
            try:
                await channel.send(row.address, notice)
                sent.append({"person": row.person or mailbox, "channel": row.channel})
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("notifying %s by %s failed: %s", row.person or mailbox, row.channel, exc)
        if sent:
            async with self.operator.store.engine.begin() as conn:
                await write_audit(
                    conn, "system", "notified", mailbox, {"letter": letter.uid, "to": sent}, now=self.operator.clock()
                )

    async def _may_view(self, company: str, person: str) -> bool:
        far = self.operator.desk.far
        if far is None:
            return False
        try:
            rights = await far.access_rights(company, person)
        except (FarRefused, FarUnreachable) as exc:
            log.warning("FaR cannot say whether %s may view %s (%s): not notified", person, company, exc)
            return False
        return "View" in rights.get("activities", [])
