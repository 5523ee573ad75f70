"""The thin I/O layer the access point calls: dynamic partners for sending, the router for receiving.

``Routing`` is built by the AccessPoint from its settings (no globals) and closed when it stops. The decisions
themselves are pure (:mod:`accesspoint.routing.decision`); this module only asks FaR, reads the stored header,
records route targets and submits forwarded messages.
"""

from __future__ import annotations

from datetime import datetime

from accesspoint.core.envelope import parse_envelope
from accesspoint.core.model import UserMessage
from accesspoint.routing.outbound import PartnerResolver, RouteRecords
from accesspoint.security.revocation import RevocationChecker
from accesspoint.store import Direction, EvidenceKind, MessageStore, StoredMessage
from pmode import Route
from smp.client import DiscoverySettings


async def stored_header(store: MessageStore, message: StoredMessage) -> UserMessage:
    """The header of an outgoing message as submitted (the first raw-message evidence)."""
    kept = await store.evidence(Direction.OUT, message.message_id, EvidenceKind.RAW_MESSAGE)
    header = b"".join([c async for c in store.read(kept[0])])
    user = parse_envelope(header).messaging.message
    assert isinstance(user, UserMessage)
    return user


class Routing:
    """Dynamic partners for the send workers and, with ``routing`` settings, the router for incoming messages."""

    def __init__(
        self,
        discovery: DiscoverySettings | None,
        records: RouteRecords,
        *,
        revocation: RevocationChecker | None = None,
    ) -> None:
        self.records = records
        self.resolver = PartnerResolver(discovery, records, revocation=revocation)

    async def close(self) -> None:
        """Close the discovery client (and FaR's)."""
        await self.resolver.close()

    async def resolve(self, store: MessageStore, message: StoredMessage, route: Route, *, at: datetime) -> Route:
        """The leg with a dynamic partner filled in (see :meth:`PartnerResolver.resolve`); others unchanged."""
        if not route.dynamic:
            return route
        user = await stored_header(store, message)
        return await self.resolver.resolve(message.message_id, user, route, at=at)
