"""The incident register of a trusted service (eIDAS, Regulation (EU) No 910/2014, Art. 19(2)).

An incident is detected (by an alert, or reported by hand), becomes known to the provider (``aware_at``: the
clock of the deadlines starts here), is classified, has affected parties, actions taken and notifications sent, and
is closed. Art. 19(2): the provider notifies "the supervisory body and, where applicable, other relevant bodies …
without undue delay but in any event within 24 hours after having become aware of it", and "the natural or legal
person to whom the trusted service has been provided … without undue delay". Each incident carries both deadlines
(``console.incidents`` sets their defaults; "without undue delay" defaults to the same 24 hours) and when each
notification went. Every change is an event on its timeline, which exports as JSON or CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select, update

from accesspoint.console import model
from accesspoint.console.db import ConsoleDb
from accesspoint.console.settings import Deadlines
from accesspoint.store.clock import Clock


class Classification(StrEnum):
    """What kind of incident (Art. 19(2): a breach of security or a loss of integrity)."""

    SECURITY_BREACH = "security-breach"
    LOSS_OF_INTEGRITY = "loss-of-integrity"
    AVAILABILITY = "availability"
    CONFIDENTIALITY = "confidentiality"
    UNCLASSIFIED = "unclassified"


class Severity(StrEnum):
    """How much the trusted service is affected."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    SIGNIFICANT = "significant"  # a significant impact in the sense of Art. 19(2): notification is due


class Notified(StrEnum):
    """Who was notified."""

    SUPERVISORY_BODY = "supervisory-body"
    AFFECTED_PARTIES = "affected-parties"


@dataclass(frozen=True, slots=True)
class Event:
    """One step on an incident's timeline."""

    at: datetime
    actor: str
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Incident:
    """An incident as registered."""

    id: int
    title: str
    classification: str
    severity: str
    description: str
    affected: list[str]
    detected_at: datetime
    aware_at: datetime
    supervisory_due: datetime
    parties_due: datetime
    supervisory_notified_at: datetime | None
    parties_notified_at: datetime | None
    status: str
    closed_at: datetime | None
    opened_by: str

    def overdue(self, now: datetime) -> list[str]:
        """The notifications whose deadline passed without them (while the incident is open or not)."""
        late = []
        if self.supervisory_notified_at is None and now > self.supervisory_due:
            late.append(Notified.SUPERVISORY_BODY.value)
        if self.parties_notified_at is None and self.affected and now > self.parties_due:
            late.append(Notified.AFFECTED_PARTIES.value)
        return late


def _incident(row: Any) -> Incident:
    values = dict(row._mapping)
    values["affected"] = list(values["affected"])
    return Incident(**values)


class Incidents:
    """The register."""

    def __init__(self, db: ConsoleDb, deadlines: Deadlines, clock: Clock) -> None:
        self.db = db
        self.deadlines = deadlines
        self.clock = clock

    async def open(
        self,
        *,
        title: str,
        actor: str,
        description: str = "",
        classification: Classification = Classification.UNCLASSIFIED,
        severity: Severity = Severity.MEDIUM,
        affected: Sequence[str] = (),
        detected_at: datetime | None = None,
        aware_at: datetime | None = None,
        source: str | None = None,
    ) -> int:
        """Register an incident; its deadlines count from ``aware_at`` (now when not given). Its id."""
        now = self.clock.now()
        aware = aware_at or now
        detected = detected_at or aware
        values = {
            "title": title[:512] or "incident",
            "classification": classification.value,
            "severity": severity.value,
            "description": description,
            "affected": [party for party in affected if party],
            "detected_at": detected,
            "aware_at": aware,
            "supervisory_due": aware + self.deadlines.supervisory_body,
            "parties_due": aware + self.deadlines.affected_parties,
            "status": "open",
            "opened_by": actor[:64],
        }

        def write(connection: Connection) -> int:
            incident_id = int(connection.execute(insert(model.incidents).values(**values)).inserted_primary_key[0])  # type: ignore[index]
            text = f"detected {detected.isoformat()}; known {aware.isoformat()}" + (
                f"; from {source}" if source else ""
            )
            self._event(connection, incident_id, actor, "opened", text, now)
            return incident_id

        return await self.db.run(write)

    async def get(self, incident_id: int) -> tuple[Incident, list[Event]] | None:
        """An incident and its timeline, oldest event first."""
        incidents, events = model.incidents, model.incident_events

        def read(connection: Connection) -> tuple[Incident, list[Event]] | None:
            row = connection.execute(select(incidents).where(incidents.c.id == incident_id)).one_or_none()
            if row is None:
                return None
            rows = connection.execute(
                select(events).where(events.c.incident_id == incident_id).order_by(events.c.at, events.c.id)
            ).all()
            return _incident(row), [Event(r.at, r.actor, r.kind, r.text) for r in rows]

        return await self.db.run(read)

    async def latest(self, *, limit: int = 200) -> list[Incident]:
        """Open incidents first, then the newest."""
        table = model.incidents
        query = select(table).order_by((table.c.status == "open").desc(), table.c.id.desc()).limit(limit)
        return [_incident(row) for row in await self.db.run(lambda c: c.execute(query).all())]

    async def note(self, incident_id: int, actor: str, kind: str, text: str) -> bool:
        """Add an action or a note to the timeline; False when the incident is unknown or closed."""
        return await self._change(incident_id, actor, kind, text, {})

    async def classify(
        self, incident_id: int, actor: str, classification: Classification, severity: Severity, affected: Sequence[str]
    ) -> bool:
        """Classify an incident and name the parties it affects."""
        parties = [party for party in affected if party]
        text = f"{classification.value}, {severity.value}; affected: {', '.join(parties) or 'none named'}"
        values = {"classification": classification.value, "severity": severity.value, "affected": parties}
        return await self._change(incident_id, actor, "classified", text, values)

    async def notified(self, incident_id: int, actor: str, who: Notified, text: str) -> bool:
        """Record that the supervisory body or the affected parties were notified."""
        column = "supervisory_notified_at" if who is Notified.SUPERVISORY_BODY else "parties_notified_at"
        return await self._change(
            incident_id, actor, f"notified-{who.value}", text or who.value, {column: self.clock.now()}
        )

    async def close(self, incident_id: int, actor: str, text: str) -> bool:
        """Close an incident."""
        values = {"status": "closed", "closed_at": self.clock.now()}
        return await self._change(incident_id, actor, "closed", text or "closed", values)

    async def _change(self, incident_id: int, actor: str, kind: str, text: str, values: dict[str, Any]) -> bool:
        now = self.clock.now()
        table = model.incidents

        def write(connection: Connection) -> bool:
            statement = update(table).where(table.c.id == incident_id, table.c.status == "open")
            if not connection.execute(
                statement.values(**values) if values else statement.values(status="open")
            ).rowcount:
                return False
            self._event(connection, incident_id, actor, kind, text, now)
            return True

        return await self.db.run(write)

    @staticmethod
    def _event(connection: Connection, incident_id: int, actor: str, kind: str, text: str, at: datetime) -> None:
        connection.execute(
            insert(model.incident_events).values(incident_id=incident_id, at=at, actor=actor[:64], kind=kind, text=text)
        )


def timeline_json(incident: Incident, events: Sequence[Event]) -> dict[str, Any]:
    """An incident and its timeline as one JSON document (the export)."""

    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    fields = {
        key: iso(value) if isinstance(value, datetime) or value is None else value
        for key, value in asdict(incident).items()
    }
    return {"incident": fields, "timeline": [{**asdict(e), "at": e.at.isoformat()} for e in events]}


def timeline_csv(incident: Incident, events: Sequence[Event]) -> str:
    """The timeline as CSV: incident, at, actor, kind, text (one row per event)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["incident", "at", "actor", "kind", "text"])
    for event in events:
        writer.writerow([incident.id, event.at.isoformat(), event.actor, event.kind, event.text])
    return out.getvalue()
