"""Alerts: raised by the console's checks, kept, deduplicated, and delivered by e-mail and webhook, rate limited.

**Deduplication.** An alert is known by its kind and key (``certificate-expiring`` + the certificate's SHA-256,
``send-failed`` + the partner). Raised again within ``dedup`` of the first time (a kind may ask for longer:
certificates are reminded every 14 days), it is counted on the same alert and sent nowhere again.

**Delivery.** Each new alert gets one delivery row per channel (the SMTP server, each webhook), written in the
transaction that keeps the alert, so a crash loses none. The delivery loop sends what is due, in order; a failed
send is tried again with a backoff (30 s doubling to 1 h, at most ``MAX_ATTEMPTS`` times). **Rate limit**: a
channel is sent at most ``rate`` alerts per ``per``; the rest wait, in order, for the window to move on — held
back, never dropped.

Webhook bodies are JSON, signed like the access point's events (``X-Accesspoint-Signature: sha256=<HMAC>``,
``X-Accesspoint-Event: alert``, ``Webhook-Id: alert-<id>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from enum import StrEnum
from typing import Any

import aiohttp
from sqlalchemy import Connection, func, insert, select, update

from accesspoint.console import model
from accesspoint.console.db import ConsoleDb
from accesspoint.console.settings import AlertPolicy, Smtp
from accesspoint.servicekit.webhooks import EVENT_HEADER, SIGNATURE_HEADER, signature
from accesspoint.store.clock import Clock

log = logging.getLogger("accesspoint.console")

MAX_ATTEMPTS = 20
BACKOFF = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
SMTP_TIMEOUT = 15.0


class Level(StrEnum):
    """How urgent an alert is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Kind(StrEnum):
    """What an alert is about."""

    CERTIFICATE_EXPIRING = "certificate-expiring"
    CERTIFICATE_EXPIRED = "certificate-expired"
    SEND_FAILED = "send-failed"
    CONNECTION_FAILED = "connection-failed"
    OUTAGE = "service-outage"
    LOGIN_FAILURES = "login-failures"


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert as kept."""

    id: int
    kind: str
    key: str
    level: str
    subject: str
    body: str
    first_at: datetime
    last_at: datetime
    count: int
    status: str
    incident_id: int | None

    def json(self) -> dict[str, Any]:
        """The alert as webhooks and the status carry it."""
        return {
            "id": f"alert-{self.id}",
            "kind": self.kind,
            "key": self.key,
            "level": self.level,
            "subject": self.subject,
            "body": self.body,
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            "count": self.count,
        }


def _alert(row: Any) -> Alert:
    return Alert(
        row.id, row.kind, row.key, row.level, row.subject, row.body, row.first_at, row.last_at, row.count,
        row.status, row.incident_id,
    )  # fmt: skip


class Alerts:
    """Raising, listing and delivering alerts."""

    def __init__(self, db: ConsoleDb, policy: AlertPolicy, clock: Clock, http: aiohttp.ClientSession) -> None:
        self.db = db
        self.policy = policy
        self.clock = clock
        self.http = http
        self.wake = asyncio.Event()
        self.channels = (["smtp"] if policy.smtp else []) + [f"webhook:{hook.url}" for hook in policy.webhooks]

    async def raise_alert(
        self, kind: Kind, key: str, level: Level, subject: str, body: str, *, dedup: timedelta | None = None
    ) -> tuple[Alert, bool]:
        """Keep an alert and queue its deliveries, or count it on the same alert raised within the dedup window.

        Returns the alert and whether it is new (to be delivered).
        """
        now, window = self.clock.now(), dedup or self.policy.dedup
        table = model.alerts

        def write(connection: Connection) -> tuple[Alert, bool]:
            latest = connection.execute(
                select(table).where(table.c.kind == kind.value, table.c.key == key).order_by(table.c.id.desc()).limit(1)
            ).one_or_none()
            if latest is not None and latest.first_at + window > now:
                connection.execute(
                    update(table).where(table.c.id == latest.id).values(count=table.c.count + 1, last_at=now)
                )
                row = connection.execute(select(table).where(table.c.id == latest.id)).one()
                return _alert(row), False
            values = {
                "kind": kind.value, "key": key[:512], "level": level.value, "subject": subject[:512], "body": body,
                "first_at": now, "last_at": now, "count": 1, "status": "open",
            }  # fmt: skip
            alert_id = connection.execute(insert(table).values(**values)).inserted_primary_key[0]  # type: ignore[index]
            for channel in self.channels:
                connection.execute(
                    insert(model.deliveries).values(
                        alert_id=alert_id, channel=channel, state="pending", attempts=0, not_before=now
                    )
                )
            return _alert(connection.execute(select(table).where(table.c.id == alert_id)).one()), True

        alert, new = await self.db.run(write)
        if new:
            log.warning("alert %s (%s): %s", alert.kind, alert.level, alert.subject)
            self.wake.set()
        return alert, new

    async def latest(self, *, limit: int = 200, status: str | None = None) -> list[Alert]:
        """The newest alerts first."""
        table = model.alerts
        query = select(table).order_by(table.c.last_at.desc(), table.c.id.desc()).limit(limit)
        if status:
            query = query.where(table.c.status == status)
        return [_alert(row) for row in await self.db.run(lambda c: c.execute(query).all())]

    async def get(self, alert_id: int) -> Alert | None:
        """One alert."""
        query = select(model.alerts).where(model.alerts.c.id == alert_id)
        row = await self.db.run(lambda c: c.execute(query).one_or_none())
        return None if row is None else _alert(row)

    async def deliveries(self, alert_id: int) -> list[dict[str, Any]]:
        """How an alert's deliveries went."""
        table = model.deliveries
        query = select(table).where(table.c.alert_id == alert_id).order_by(table.c.id)
        return [dict(row._mapping) for row in await self.db.run(lambda c: c.execute(query).all())]

    async def acknowledge(self, alert_id: int) -> bool:
        """Mark an alert as seen; False when unknown or already acknowledged."""
        table = model.alerts
        statement = update(table).where(table.c.id == alert_id, table.c.status == "open").values(status="acknowledged")
        return bool(await self.db.run(lambda c: c.execute(statement).rowcount))

    async def link(self, alert_id: int, incident_id: int) -> None:
        """Record that an incident was opened from (or fed by) an alert."""
        table = model.alerts
        statement = update(table).where(table.c.id == alert_id).values(incident_id=incident_id)
        await self.db.run(lambda c: c.execute(statement))

    # --- delivery ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver what is due, then wait for a new alert or a second (a supervised task)."""
        while True:
            await self.deliver_due()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 1.0)

    async def deliver_due(self) -> int:
        """Send every delivery that is due and within its channel's rate; the number sent."""
        sent = 0
        for channel in self.channels:
            sent += await self._deliver_channel(channel)
        return sent

    async def _deliver_channel(self, channel: str) -> int:
        sent = 0
        while True:
            row, used = await self.db.run(functools.partial(self._next_due, channel=channel, now=self.clock.now()))
            if row is None:
                return sent
            if used >= self.policy.rate:
                # Held back until the oldest send of the window leaves it; the loop looks again each second.
                log.info("alerts to %s held back by the rate limit (%d per %s)", channel, used, self.policy.per)
                return sent
            alert = Alert(
                row.alert_id, row.kind, row.key, row.level, row.subject, row.body, row.first_at, row.last_at,
                row.count, row.status, row.incident_id,
            )  # fmt: skip
            error = await self._send(channel, alert)
            await self.db.run(functools.partial(self._settle, row=row, error=error))
            if error is not None:
                log.warning("alert %d not delivered to %s: %s", alert.id, channel, error)
                return sent
            sent += 1

    def _next_due(self, connection: Connection, *, channel: str, now: datetime) -> tuple[Any, int]:
        """The channel's first pending delivery that is due, and how many it was sent in the rate window."""
        deliveries, alerts = model.deliveries, model.alerts
        used = connection.execute(
            select(func.count()).where(deliveries.c.channel == channel, deliveries.c.sent_at > now - self.policy.per)
        ).scalar_one()
        row = connection.execute(
            select(deliveries, alerts)
            .join(alerts, alerts.c.id == deliveries.c.alert_id)
            .where(deliveries.c.channel == channel, deliveries.c.state == "pending", deliveries.c.not_before <= now)
            .order_by(deliveries.c.id)
            .limit(1)
        ).one_or_none()
        return row, int(used)

    def _settle(self, connection: Connection, *, row: Any, error: str | None) -> None:
        now = self.clock.now()
        table = model.deliveries
        if error is None:
            values: dict[str, Any] = {"state": "sent", "sent_at": now, "attempts": row.attempts + 1}
        else:
            attempts = row.attempts + 1
            wait = min(BACKOFF * 2 ** min(attempts - 1, 20), BACKOFF_MAX)
            values = {
                "attempts": attempts,
                "last_error": error[:1000],
                "not_before": now + wait,
                "state": "failed" if attempts >= MAX_ATTEMPTS else "pending",
            }
        connection.execute(update(table).where(table.c.id == row.id).values(**values))

    async def _send(self, channel: str, alert: Alert) -> str | None:
        """Send one alert on one channel; the error as text, None when it went."""
        try:
            if channel == "smtp":
                assert self.policy.smtp is not None
                await asyncio.to_thread(send_mail, self.policy.smtp, alert)
            else:
                await self._post(channel.removeprefix("webhook:"), alert)
        except (OSError, smtplib.SMTPException, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _post(self, url: str, alert: Alert) -> None:
        hook = next(hook for hook in self.policy.webhooks if hook.url == url)
        body = json.dumps({"event": "alert", "data": alert.json()}).encode()
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: "alert",
            "Webhook-Id": f"alert-{alert.id}",
            SIGNATURE_HEADER: signature(hook.secret, body),
        }
        async with self.http.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=15)) as answer:
            if answer.status >= 300:
                raise ValueError(f"HTTP {answer.status}")


def send_mail(smtp: Smtp, alert: Alert, recipients: Sequence[str] | None = None) -> None:
    """Mail one alert (blocking: run it in a thread)."""
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = ", ".join(recipients or smtp.recipients)
    message["Subject"] = f"[accesspoint {alert.level}] {alert.subject}"
    message["Message-ID"] = f"<alert-{alert.id}-{int(alert.first_at.timestamp())}@accesspoint.console>"
    message.set_content(
        f"{alert.subject}\n\n{alert.body}\n\nkind: {alert.kind}\nkey: {alert.key}\n"
        f"first: {alert.first_at.isoformat()}\ntimes raised: {alert.count}\n"
    )
    with smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT) as client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.username is not None:
            client.login(smtp.username, smtp.password or "")
        client.send_message(message)
