"""Erasure at the operator: a holder's mail deleted on their request, and a closed mailbox's mail deleted once the
retention period after closing has run out; both audited (who, how many) and both remove the files too.

``DELETE /api/v1/holders/{id}/mail`` carries ``agreement_text`` and ``signatures`` like every holder change: the
holder's own e-ID signature, or for a company the signature of someone FaR says may act for its account now
(``InitiateAccountAction``: its signatories). The job runs every ``retention.interval`` and erases the mail of
mailboxes closed longer than ``retention.closed_mailboxes``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy import select

from accesspoint.servicekit.problems import Problem
from operators.holders import is_company
from operators.mailbox import letters, mailboxes

if TYPE_CHECKING:
    from operators.service import Operator

log = logging.getLogger("operators.retention")


class Retention:
    """Erasure on request and the retention job of one operator."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator

    async def erase_on_request(self, request: web.Request) -> web.Response:
        """DELETE /api/v1/holders/{id}/mail."""
        holder = request.match_info["id"]
        desk = self.operator.desk
        _body, text, signatures = await desk._signed_body(request, set())
        signed = desk.verify(text, signatures, subject=None if is_company(holder) else holder)
        if await self.operator.store.state(holder) is None:
            raise Problem(404, f"{holder} has no mailbox here", kind="no-mailbox")
        if is_company(holder):
            far = desk._far()
            for assertion in signed:
                rights = await desk._at_far(far.access_rights(holder, assertion.subject))
                if "InitiateAccountAction" not in rights.get("activities", []):
                    raise Problem(403, f"{assertion.subject} may not erase the mail of {holder}", kind="forbidden")
        actor = "person:" + ",".join(sorted({a.subject for a in signed}))
        uids = await self.operator.store.erase(
            holder, actor=actor, action="erase", detail={"on": "request"}, now=self.operator.clock()
        )
        await asyncio.to_thread(self.operator.files.remove, uids)
        return web.json_response({"holder": holder, "erased_letters": len(uids)})

    async def sweep(self) -> list[str]:
        """Erase the mail of mailboxes closed longer than the retention period; the mailboxes erased."""
        now = self.operator.clock()
        cutoff = now - self.operator.settings.closed_retention
        store = self.operator.store
        async with store.engine.connect() as conn:
            closed = list(
                (
                    await conn.execute(
                        select(mailboxes.c.recipient).where(
                            mailboxes.c.state == "closed",
                            mailboxes.c.closed_at <= cutoff,
                            mailboxes.c.recipient.in_(select(letters.c.recipient)),
                        )
                    )
                ).scalars()
            )
        for mailbox in closed:
            uids = await store.erase(
                mailbox,
                actor="retention",
                action="retention-erase",
                detail={"closed_before": cutoff.isoformat()},
                now=now,
            )
            await asyncio.to_thread(self.operator.files.remove, uids)
            log.info("retention: erased %d letter(s) of %s, closed before %s", len(uids), mailbox, cutoff)
        return closed

    async def run(self) -> None:
        """The job: a sweep every ``retention.interval``."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("retention: the sweep failed; trying again next round")
            await asyncio.sleep(self.operator.settings.retention_interval.total_seconds())
