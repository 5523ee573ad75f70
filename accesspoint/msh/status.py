"""The access point's status: one document, computed here, for the admin listener's ``GET /status`` and the
console's status page (``accesspoint.console``), never on the public AS4 listener.

What an operator looks at first: the messages waiting in each state and the oldest of them, the dead letters,
webhook events waiting, every certificate in use with its not-after and a warning from ``warn_before`` ahead, and
the last delivery to each partner (from the database, so every instance tells the same; a partner found by
discovery has no PartyId to look it up by, and shows this instance's last delivery since its start).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from accesspoint.core.model import Party
from accesspoint.msh.certificates import inventory
from accesspoint.msh.context import Context
from accesspoint.msh.views import party_text
from accesspoint.servicekit.status import EXPIRY_WARNING, PROBE_TIMEOUT, Held, certificate_dates, iso
from accesspoint.store import MessageState
from accesspoint.store.search import MessageSearch
from pmode import PModeSet
from pmode.model import PartyDefinition


class Status:
    """Computes the status document of one access point instance and keeps its certificate inventory."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # The inventory of the P-Mode set it was read for: reading and parsing the PEM files each time would block
        # the event loop, and a reload brings a new set, hence a new read.
        self._held: tuple[PModeSet, list[Held]] | None = None

    def held(self) -> list[Held] | None:
        """The certificate inventory if it is current (None: the P-Modes changed since it was read)."""
        held = self._held
        return held[1] if held is not None and held[0] is self.ctx.agreements.current else None

    async def certificates(self) -> list[Held]:
        """Every certificate in use (keys, TLS, parties, trust anchors), soonest expiry first; read off the event
        loop once per P-Mode set."""
        current = self.ctx.agreements.current
        found = self.held()
        if found is None:
            found = await asyncio.to_thread(inventory, self.ctx.settings, current)
            self._held = (current, found)
        return found

    async def document(self, warn_before: timedelta = EXPIRY_WARNING) -> dict[str, Any]:
        """The status: queues, the oldest pending outgoing message, certificate dates, the last delivery per
        partner; ``database`` says whether the figures could be read (None where they could not)."""
        ctx = self.ctx
        now = ctx.clock.now()
        try:
            queues, partners = await asyncio.wait_for(self._figures(now), PROBE_TIMEOUT)
            database = "ok"
        except Exception as exc:  # whatever the driver raises: the rest of the status still answers
            queues, partners, database = None, None, f"unavailable: {type(exc).__name__}: {exc}"[:300]
        return {
            "service": "accesspoint",
            "instance": ctx.settings.instance,
            "at": now.isoformat(),
            "ok": database == "ok",
            "database": database,
            "queues": queues,
            "certificates": certificate_dates(await self.certificates(), now, warn_before),
            "partners": partners,
        }

    async def _figures(self, now: datetime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        ctx = self.ctx
        pending = await ctx.store.pending()
        outgoing = await MessageSearch(ctx.store.db).queues()  # the dead-letter count and the oldest waiting to leave
        oldest = outgoing.oldest_pending
        queues = {
            "by_state": {state.value: {"count": w.count, "oldest": iso(w.oldest)} for state, w in pending.items()},
            "dead_letter": outgoing.by_state.get(MessageState.DEAD_LETTER.value, 0),
            "oldest_pending": iso(oldest),
            "oldest_pending_age_seconds": None if oldest is None else round((now - oldest).total_seconds(), 3),
            "webhook_events_pending": await ctx.outbox.pending(),
        }
        return queues, await self._partners()

    async def _partners(self) -> list[dict[str, Any]]:
        """Each partner of the P-Modes in force: its PartyId, its P-Modes and when a message to it was last
        delivered."""
        parties: dict[str, tuple[PartyDefinition, list[str]]] = {}
        for pmode in self.ctx.agreements.current:
            party = pmode.partner.party
            parties.setdefault(party.name, (party, []))[1].append(pmode.id)
        ids = {name: _party_id(party) for name, (party, _) in parties.items()}
        known = [party_id for party_id in ids.values() if party_id is not None]
        delivered = await MessageSearch(self.ctx.store.db).last_delivered(known)
        here = self.ctx.metrics.last_deliveries  # by party name, this instance since its start
        found = []
        for name, (_, pmodes) in sorted(parties.items()):
            party_id = ids[name]
            last = here.get(name) if party_id is None else delivered.get(party_id)
            found.append({"partner": name, "party": party_id, "pmodes": sorted(pmodes), "last_delivered": iso(last)})
        return found


def _party_id(party: PartyDefinition) -> str | None:
    """The PartyId messages to the party are stored under; None for a party found by discovery."""
    return party_text(Party(party_ids=party.party_ids, role="")) if party.party_ids else None
