"""The operator's ``GET /status`` on its admin listener (scope ``status``; ``accesspoint.servicekit.status``).

What the people running a mailbox operator look at first: whether the mailbox database answers, the mailboxes by
state, the deliveries being handled now, the deliveries handled whose signed answer has not gone to the access
point yet (and the oldest of them: a number that grows means answers are stuck), when the last answer was sent
for, and the dates of the certificates it signs answers with, serves TLS with and trusts peers and senders by.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from accesspoint.servicekit.status import Held, certificate_dates, counts, held, iso, probe, tls_certificate
from operators.mailbox import handled, mailboxes

if TYPE_CHECKING:
    from operators.service import Operator
    from operators.settings import OperatorSettings


async def operator_status(operator: Operator) -> dict[str, Any]:
    """The status document of one operator instance."""
    now = operator.clock()
    database, figures = await probe(operator.store.engine, _figures)
    certificates = await asyncio.to_thread(_certificates, operator.settings)
    return {
        "service": "operator",
        "operator": operator.settings.id,
        "at": now.isoformat(),
        "ok": database == "ok",
        "database": database,
        "deliveries_in_progress": len(operator.pending),  # announced to this instance, not yet handled
        **(figures or {"mailboxes": None, "answers_pending": None, "last_answer_sent": None}),
        "certificates": certificate_dates(certificates, now),
    }


async def _figures(conn: AsyncConnection) -> dict[str, Any]:
    by_state = await counts(conn, mailboxes.c.state)
    unanswered = handled.c.reply_message_id.is_(None)
    waiting = (await conn.execute(select(func.count(), func.min(handled.c.handled_at)).where(unanswered))).one()
    # The answer is submitted right after the delivery is handled: the newest answered delivery says when.
    last: datetime | None = await conn.scalar(select(func.max(handled.c.handled_at)).where(~unanswered))
    return {
        "mailboxes": {"count": sum(by_state.values()), "by_state": by_state},
        "answers_pending": {"count": int(waiting[0]), "oldest": iso(waiting[1])},
        "last_answer_sent": iso(last),
    }


def _certificates(settings: OperatorSettings) -> list[Held]:
    """Ours (answer signing, TLS), the peers' and the anchors senders are trusted by, soonest expiry first."""
    found = [held("our answer-signing key", settings.keys.certificate)]
    found += tls_certificate(None if settings.tls is None else settings.tls.certificate)
    found += [held(f"peer {peer.id}", peer.certificate) for peer in settings.peers]
    found += [held("sender anchor", anchor) for anchor in settings.sender_anchors]
    found += [held("intermediary", certificate) for certificate in settings.intermediaries]
    return sorted(found, key=lambda item: (item.not_after, item.use))
