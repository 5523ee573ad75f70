"""Route targets: where the router (or a routed submission) decided an outgoing message goes, kept in the database.

A target is written in the transaction that stores the message it routes (``RouteHook``), so every attempt, every
instance and every restart sends it to the same place, and it is purged with its message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select

from accesspoint.store import schema
from accesspoint.store.db import Database
from accesspoint.store.ops import Also
from accesspoint.store.records import StoredMessage

R = schema.route_targets


@dataclass(frozen=True, slots=True)
class StoredRoute:
    """The target recorded for an outgoing message: the operator it goes to and that operator's endpoint."""

    message_id: str
    received_message_id: str
    operator_id: str
    operator_name: str
    party_id: str
    endpoint: str


class RouteHook:
    """A TransactionHook that records a route target with the message it routes."""

    def __init__(self, route: StoredRoute, *, now: datetime) -> None:
        self.route = route
        self._now = now

    def rows(self, message: StoredMessage) -> list[Also]:
        """The target's row (the message's MessageId must be the target's)."""
        if message.message_id != self.route.message_id:
            raise ValueError(f"route target for {self.route.message_id!r} written with {message.message_id!r}")
        return [Also("route_targets", {**_values(self.route), "created_at": self._now})]

    def committed(self) -> None:
        """Nothing waits for a target."""


class RouteTargets:
    """Reads route targets (they are written with their message, through ``RouteHook``)."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def get(self, message_id: str) -> StoredRoute | None:
        """The target recorded for an outgoing message, or None."""
        query = select(R).where(R.c.message_id == message_id)
        row = await self.db.run(lambda connection: connection.execute(query).one_or_none())
        if row is None:
            return None
        return StoredRoute(
            message_id=row.message_id,
            received_message_id=row.received_message_id,
            operator_id=row.operator_id,
            operator_name=row.operator_name,
            party_id=row.party_id,
            endpoint=row.endpoint,
        )


    async def adopt(self, routes: list[StoredRoute], *, now: datetime | None = None) -> int:
        """Insert the targets not recorded yet (taken over from an older version's files); how many were new."""
        if not routes:
            return 0
        created = now or datetime.now(UTC)

        def insert_new(connection: Connection) -> int:
            ids = [route.message_id for route in routes]
            known = set(connection.execute(select(R.c.message_id).where(R.c.message_id.in_(ids))).scalars())
            fresh = {route.message_id: route for route in routes if route.message_id not in known}
            if fresh:
                connection.execute(insert(R), [{**_values(r), "created_at": created} for r in fresh.values()])
            return len(fresh)

        return await self.db.run(insert_new)


def _values(route: StoredRoute) -> dict[str, str]:
    return {name: getattr(route, name) for name in StoredRoute.__slots__}
