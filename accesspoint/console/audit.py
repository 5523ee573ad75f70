"""The console's audit log: every action (and every login, failed or not) with who, what, on what, from where.

Rows are only ever inserted; the console has no action that changes or deletes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from accesspoint.console import model
from accesspoint.console.db import ConsoleDb
from accesspoint.store.clock import Clock


@dataclass(frozen=True, slots=True)
class Entry:
    """One audited action."""

    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: str
    detail: dict[str, Any]
    address: str | None


class Audit:
    """Append-only record of what console users did."""

    def __init__(self, db: ConsoleDb, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def record(
        self,
        actor: str,
        action: str,
        *,
        target: str | None = None,
        outcome: str = "done",
        address: str | None = None,
        **detail: Any,
    ) -> None:
        """Keep one entry."""
        values = {
            "at": self.clock.now(),
            "actor": actor[:64],
            "action": action,
            "target": None if target is None else target[:512],
            "outcome": outcome,
            "detail": detail,
            "address": None if address is None else address[:64],
        }
        await self.db.run(lambda c: c.execute(insert(model.audit).values(**values)))

    async def latest(self, *, limit: int = 200, actor: str | None = None, action: str | None = None) -> list[Entry]:
        """The newest entries first, optionally of one actor or action."""
        table = model.audit
        query = select(table).order_by(table.c.id.desc()).limit(limit)
        if actor:
            query = query.where(table.c.actor == actor)
        if action:
            query = query.where(table.c.action == action)
        rows = await self.db.run(lambda c: c.execute(query).all())
        return [
            Entry(row.at, row.actor, row.action, row.target, row.outcome, dict(row.detail), row.address) for row in rows
        ]
