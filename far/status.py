"""FaR's ``GET /status`` on its admin listener (scope ``status``; ``accesspoint.servicekit.status``): whether the
database answers, how many recipients (by status, and pending), operators (by approval; each with its recipients
and its approval: status, since, who decided) and senders (by status) the register holds, when it was last written,
and the TLS certificate's dates.

The counts read whole tables: meant for a monitoring system's minute, not for every request; past the probe's
time limit the status says the database did not answer rather than wait.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from accesspoint.servicekit.status import certificate_dates, counts, iso, probe, tls_certificate
from accesspoint.servicekit.tls import TlsSettings
from far.model import audit, operators, recipients, senders
from far.service import FarService


async def far_status(service: FarService, tls: TlsSettings | None) -> dict[str, Any]:
    """The status document of one FaR instance."""
    now = service.now()
    database, figures = await probe(service.engine, _figures)
    held = await asyncio.to_thread(tls_certificate, None if tls is None else tls.certificate)
    return {
        "service": "far",
        "at": now.isoformat(),
        "ok": database == "ok",
        "database": database,
        **(figures or {"recipients": None, "operators": None, "senders": None, "last_write": None}),
        "certificates": certificate_dates(held, now),
    }


async def _figures(conn: AsyncConnection) -> dict[str, Any]:
    by_status = await counts(conn, recipients.c.status)
    waiting = await conn.scalar(select(func.count()).select_from(recipients).where(recipients.c.pending.is_(True)))
    served = await counts(conn, recipients.c.operator_id)
    listed = select(
        operators.c.id, operators.c.name, operators.c.updated_at, operators.c.status, operators.c.status_since,
        operators.c.status_decided_by,
    ).order_by(operators.c.id)  # fmt: skip
    rows = (await conn.execute(listed)).all()
    register = await counts(conn, senders.c.status)
    last: datetime | None = await conn.scalar(select(audit.c.at).order_by(audit.c.id.desc()).limit(1))
    return {
        "recipients": {"count": sum(by_status.values()), "by_status": by_status, "pending": int(waiting or 0)},
        "operators": {
            "count": len(rows),
            "by_status": dict(Counter(row.status for row in rows)),
            "items": [
                {
                    "id": row.id,
                    "name": row.name,
                    "recipients": served.get(row.id, 0),
                    "updated_at": iso(row.updated_at),
                    "status": row.status,
                    "status_since": iso(row.status_since),
                    "status_decided_by": row.status_decided_by,
                }
                for row in rows
            ],
        },
        "senders": {"count": sum(register.values()), "by_status": register},
        "last_write": iso(last),
    }
