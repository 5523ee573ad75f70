"""The console's periodic checks, each raising alerts: certificates, failed sends, partners' connections, outages.

- **Certificates** (every ``certificates.interval``): each one within ``warn_before`` of its not-after is alerted
  (reminded every 14 days), each expired one too (every 7 days).
- **Permanent send failures** (every few seconds): outgoing messages that became ``failed`` since the last look,
  one alert per partner (the count grows on it within the dedup window). Where the last look stood is kept in the
  database, so a restart neither misses nor repeats any.
- **Connection monitoring**: for each P-Mode chosen on the monitoring page (a leg on the ebMS test service), an
  ebMS test message every ``monitoring.interval``; delivered (its receipt verified) is ``ok``, failed or not
  delivered within ``monitoring.timeout`` is ``failed``; ``monitoring.failures`` failures in a row are alerted.
- **Outages** (``watch``): a GET of each watched URL must answer below 500 within its timeout; ``failures`` in a row
  are alerted (FaR, the SMP).
- **P-Mode versions**: the P-Mode file's text is kept whenever it changes, for the history and its diffs.

Each check is a method the tests call directly; ``run`` calls them as they fall due (the clock is the access
point's, so a manual clock moves them in tests).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import Connection, insert, select, update

from accesspoint.console import model
from accesspoint.console.alerts import Alerts, Kind, Level
from accesspoint.console.db import ConsoleDb
from accesspoint.console.settings import ConsoleSettings, Watch
from accesspoint.msh.certificates import inventory
from accesspoint.msh.context import Context
from accesspoint.msh.operations import Operations
from accesspoint.store import Direction, MessageState
from accesspoint.store.search import MessageSearch

log = logging.getLogger("accesspoint.console")

FAILED_EVERY = timedelta(seconds=5)
PMODES_EVERY = timedelta(seconds=5)
REMIND_EXPIRING = timedelta(days=14)
REMIND_EXPIRED = timedelta(days=7)
FAILED_CURSOR = "failed-messages"
FAILED_LAG = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Check:
    """One connection check: a ping of a P-Mode's partner and how it went."""

    pmode_id: str
    message_id: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str  # pending, ok, failed
    detail: str | None


class Checks:
    """The periodic checks over one access point's context."""

    def __init__(
        self,
        db: ConsoleDb,
        settings: ConsoleSettings,
        ctx: Context,
        operations: Operations,
        alerts: Alerts,
        http: aiohttp.ClientSession,
    ) -> None:
        self.db = db
        self.settings = settings
        self.ctx = ctx
        self.operations = operations
        self.alerts = alerts
        self.http = http
        self.search = MessageSearch(ctx.store.db)
        self._due: dict[str, datetime] = {}
        self._watch_failures: dict[str, int] = defaultdict(int)

    async def run(self) -> None:
        """Run each check when it falls due (a supervised task)."""
        schedule: list[tuple[str, timedelta, Any]] = [
            ("pmodes", PMODES_EVERY, self.record_pmodes),
            ("certificates", self.settings.certificate_interval, self.certificates),
            ("failed", FAILED_EVERY, self.failed_messages),
            ("settle", timedelta(seconds=2), self.settle_checks),
            ("monitor", timedelta(seconds=30), self.ping_due),
        ]
        schedule += [(f"watch:{w.name}", w.interval, _bind(self.watch, w)) for w in self.settings.watch]
        while True:
            now = self.ctx.clock.now()
            for name, every, check in schedule:
                if self._due.get(name, now) <= now:
                    self._due[name] = now + every
                    try:
                        await check()
                    except Exception:  # one check failing must not stop the others; the next round tries again
                        log.exception("console check %s failed", name)
            await asyncio.sleep(1.0)

    # --- certificates --------------------------------------------------------------------------------------

    async def certificates(self) -> int:
        """Alert every certificate near or past its not-after; the number alerted anew."""
        now, raised = self.ctx.clock.now(), 0
        for item in await asyncio.to_thread(inventory, self.ctx.settings, self.ctx.agreements.current):
            status = item.status(now, self.settings.warn_before)
            if status == "ok":
                continue
            days = item.days_left(now)
            if status == "expired":
                kind, level, remind = Kind.CERTIFICATE_EXPIRED, Level.HIGH, REMIND_EXPIRED
                subject = f"certificate expired {-days} days ago: {item.subject} ({item.use})"
            else:
                kind, level, remind = Kind.CERTIFICATE_EXPIRING, Level.HIGH, REMIND_EXPIRING
                subject = f"certificate expires in {days} days: {item.subject} ({item.use})"
            body = (
                f"{item.use}\nsubject: {item.subject}\nissuer: {item.issuer}\nserial: {item.serial}\n"
                f"SHA-256: {item.sha256}\nnot after: {item.not_after.isoformat()}"
            )
            _, new = await self.alerts.raise_alert(kind, item.sha256, level, subject, body, dedup=remind)
            raised += new
        return raised

    # --- failed messages -----------------------------------------------------------------------------------

    async def failed_messages(self) -> int:
        """Alert the outgoing messages that failed since the last look, one alert per partner; how many failed.

        A move's time is taken before its transaction commits, so one can commit a little after a later one: each
        look reaches ``FAILED_LAG`` back, and the messages alerted within that reach are kept so none is alerted
        twice.
        """
        stored = await self.db.cursor(FAILED_CURSOR)
        if stored is None:
            # The first look starts now: what failed before the console ran was nobody's to alert.
            await self.db.set_cursor(FAILED_CURSOR, {"at": self.ctx.clock.now().isoformat(), "seen": []})
            return 0
        at = datetime.fromisoformat(stored["at"])
        seen = {int(pk): datetime.fromisoformat(when) for pk, when in stored["seen"]}
        failed = [m for m in await self.search.failed_since(at - FAILED_LAG) if m.pk not in seen]
        by_partner: dict[str, list[str]] = defaultdict(list)
        for message in failed:
            line = f"{message.message_id}: {message.last_error_code or ''} {message.last_error_detail or ''}".strip()
            by_partner[message.to_party or "unknown partner"].append(line)
        for partner, lines in by_partner.items():
            subject = f"{len(lines)} message(s) to {partner} failed permanently"
            body = "\n".join(lines[:50]) + (f"\n… and {len(lines) - 50} more" if len(lines) > 50 else "")
            await self.alerts.raise_alert(Kind.SEND_FAILED, partner, Level.HIGH, subject, body)
        seen.update({message.pk: message.updated_at for message in failed})
        newest = max([at, *seen.values()])
        kept = [[pk, when.isoformat()] for pk, when in seen.items() if when >= newest - FAILED_LAG]
        await self.db.set_cursor(FAILED_CURSOR, {"at": newest.isoformat(), "seen": kept})
        return len(failed)

    # --- connection monitoring -----------------------------------------------------------------------------

    async def monitored(self) -> list[str]:
        """The P-Modes whose partners are pinged."""
        table = model.monitored
        return list(
            await self.db.run(lambda c: c.execute(select(table.c.pmode_id).order_by(table.c.pmode_id)).scalars())
        )

    async def monitor(self, pmode_id: str, actor: str, enabled: bool) -> None:
        """Start or stop pinging a P-Mode's partner."""
        table, now = model.monitored, self.ctx.clock.now()

        def write(connection: Connection) -> None:
            connection.execute(table.delete().where(table.c.pmode_id == pmode_id))
            if enabled:
                connection.execute(insert(table).values(pmode_id=pmode_id, added_by=actor[:64], added_at=now))

        await self.db.run(write)

    async def ping(self, pmode_id: str) -> Check:
        """Send a test message over a P-Mode now and record the check (pending until it settles)."""
        now = self.ctx.clock.now()
        try:
            message = await self.operations.ping(pmode_id)
        except ValueError as exc:
            values = {
                "pmode_id": pmode_id,
                "started_at": now,
                "finished_at": now,
                "outcome": "failed",
                "detail": str(exc),
            }
            await self.db.run(lambda c: c.execute(insert(model.checks).values(**values)))
            return Check(pmode_id, None, now, now, "failed", str(exc))
        values = {"pmode_id": pmode_id, "message_id": message.message_id, "started_at": now, "outcome": "pending"}
        await self.db.run(lambda c: c.execute(insert(model.checks).values(**values)))
        return Check(pmode_id, message.message_id, now, None, "pending", None)

    async def ping_due(self) -> int:
        """Ping every monitored partner whose last check is ``monitoring.interval`` old; how many were pinged."""
        now, pinged = self.ctx.clock.now(), 0
        for pmode_id in await self.monitored():
            history = await self.history(pmode_id, limit=1)
            if history and (
                history[0].outcome == "pending" or history[0].started_at + self.settings.monitoring.interval > now
            ):
                continue
            await self.ping(pmode_id)
            pinged += 1
        return pinged

    async def settle_checks(self) -> int:
        """Settle pending checks whose message was delivered, failed, or is overdue; alert partners failing in a
        row. The number settled."""
        table, now = model.checks, self.ctx.clock.now()
        pending = await self.db.run(lambda c: c.execute(select(table).where(table.c.outcome == "pending")).all())
        settled = 0
        for row in pending:
            message = await self.ctx.store.get(Direction.OUT, row.message_id)
            if message is not None and message.state is MessageState.DELIVERED:
                outcome, detail = "ok", "delivered: the partner's receipt verified"
            elif message is not None and message.state in (MessageState.FAILED, MessageState.DEAD_LETTER):
                outcome, detail = "failed", f"{message.last_error_code or ''} {message.last_error_detail or ''}".strip()
            elif row.started_at + self.settings.monitoring.timeout <= now:
                outcome, detail = "failed", f"not delivered within {self.settings.monitoring.timeout}"
            else:
                continue
            values = {"outcome": outcome, "detail": detail or outcome, "finished_at": now}
            statement = update(table).where(table.c.id == row.id).values(**values)
            await self.db.run(functools.partial(_execute, statement))
            settled += 1
            if outcome == "failed":
                await self._alert_connection(row.pmode_id)
        return settled

    async def _alert_connection(self, pmode_id: str) -> None:
        wanted = self.settings.monitoring.failures
        recent = [check for check in await self.history(pmode_id, limit=wanted) if check.outcome != "pending"]
        if len(recent) < wanted or any(check.outcome != "failed" for check in recent):
            return
        pmode = self.ctx.agreements.current.get(pmode_id)
        partner = pmode.partner.party.name if pmode is not None else pmode_id
        subject = f"partner {partner} failed {wanted} connection check(s) in a row ({pmode_id})"
        body = "\n".join(f"{c.started_at.isoformat()}: {c.detail}" for c in recent)
        await self.alerts.raise_alert(Kind.CONNECTION_FAILED, pmode_id, Level.MEDIUM, subject, body)

    async def history(self, pmode_id: str, *, limit: int = 20) -> list[Check]:
        """A P-Mode's checks, newest first."""
        table = model.checks
        query = select(table).where(table.c.pmode_id == pmode_id).order_by(table.c.started_at.desc(), table.c.id.desc())
        rows = await self.db.run(lambda c: c.execute(query.limit(limit)).all())
        return [Check(r.pmode_id, r.message_id, r.started_at, r.finished_at, r.outcome, r.detail) for r in rows]

    # --- outages -------------------------------------------------------------------------------------------

    async def watch(self, watched: Watch) -> bool:
        """Look at a watched service once; whether it answered. Alerted after ``failures`` failures in a row."""
        try:
            timeout = aiohttp.ClientTimeout(total=watched.timeout.total_seconds())
            async with self.http.get(watched.url, timeout=timeout, allow_redirects=False) as answer:
                up, why = answer.status < 500, f"HTTP {answer.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            up, why = False, f"{type(exc).__name__}: {exc}"
        if up:
            self._watch_failures.pop(watched.name, None)
            return True
        self._watch_failures[watched.name] += 1
        failures = self._watch_failures[watched.name]
        if failures >= watched.failures:
            subject = f"{watched.name} is not answering ({failures} checks in a row)"
            await self.alerts.raise_alert(Kind.OUTAGE, watched.name, Level.HIGH, subject, f"{watched.url}: {why}")
        return False

    # --- P-Mode versions -----------------------------------------------------------------------------------

    async def record_pmodes(self, actor: str = "file") -> bool:
        """Keep the P-Mode file's text if it is a version not seen before; whether it was new."""
        path = self.ctx.agreements.path
        try:
            text = await asyncio.to_thread(path.read_text, "utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read the P-Mode file %s: %s", path, exc)
            return False
        digest = hashlib.sha256(text.encode()).hexdigest()
        table, now = model.pmode_versions, self.ctx.clock.now()

        def write(connection: Connection) -> bool:
            if connection.execute(select(table.c.id).where(table.c.sha256 == digest)).first() is not None:
                return False
            connection.execute(insert(table).values(sha256=digest, text=text, seen_at=now, actor=actor[:64]))
            return True

        return await self.db.run(write)


def _execute(statement: Any, connection: Connection) -> None:
    connection.execute(statement)


def _bind(check: Any, watched: Watch) -> Any:
    async def run() -> bool:
        return bool(await check(watched))

    return run
