"""What every service's ``GET /status`` (its admin listener, scope ``status``) is built from: certificate dates
with a warning from 60 days before expiry, a database probe with a time limit, and times as ISO 8601.

Each service composes its own document from these (the access point in ``accesspoint.msh.status``, FaR in
``far.status``, the SMP in ``smp.server``, the operator in ``operators.status``), so a certificate, a database
outage or an oldest waiting item reads the same whichever service reports it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

EXPIRY_WARNING = timedelta(days=60)  # a certificate this close to its not-after is flagged (as Domibus does)
PROBE_TIMEOUT = 5.0  # seconds a status's database reads may take before the database counts as unreachable

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Held:
    """A certificate and where it is used."""

    use: str  # "our signing key", "party partner-115: signing", "trust anchor of se-to-be" …
    subject: str
    issuer: str
    serial: str
    sha256: str
    not_before: datetime
    not_after: datetime

    def status(self, now: datetime, warn_before: timedelta = EXPIRY_WARNING) -> str:
        """``expired``, ``expiring`` (within warn_before of its not-after) or ``ok``."""
        if now > self.not_after:
            return "expired"
        return "expiring" if now + warn_before >= self.not_after else "ok"

    def days_left(self, now: datetime) -> int:
        """Whole days until its not-after (negative once past)."""
        return (self.not_after - now).days


def held(use: str, certificate: x509.Certificate) -> Held:
    """A certificate as an inventory lists it."""
    return Held(
        use=use,
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        serial=format(certificate.serial_number, "x"),
        sha256=hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def tls_certificate(path: Path | None) -> list[Held]:
    """The certificate a TLS listener presents (the first of its PEM file), as ``our TLS certificate``; none when
    there is no TLS or the file cannot be read (the listener would not have started). Reads a file: call it off the
    event loop."""
    if path is None:
        return []
    try:
        found = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return []
    return [held("our TLS certificate", found[0])]


def certificate_dates(
    items: Iterable[Held], now: datetime, warn_before: timedelta = EXPIRY_WARNING
) -> list[dict[str, Any]]:
    """The certificates as a status lists them: use, subject, fingerprint, not-after, days left, status."""
    return [
        {
            "use": item.use, "subject": item.subject, "sha256": item.sha256, "not_after": item.not_after.isoformat(),
            "days_left": item.days_left(now), "status": item.status(now, warn_before),
        }
        for item in items
    ]  # fmt: skip


async def probe(
    engine: AsyncEngine, read: Callable[[AsyncConnection], Awaitable[T]], timeout: float = PROBE_TIMEOUT
) -> tuple[str, T | None]:
    """``("ok", what read found)``, or ``("unavailable: <why>", None)`` when the database fails or is too slow."""

    async def run() -> T:
        async with engine.connect() as connection:
            return await read(connection)

    try:
        return "ok", await asyncio.wait_for(run(), timeout)
    except Exception as exc:  # whatever the driver raises, the status says the database is not reachable
        return f"unavailable: {type(exc).__name__}: {exc}"[:300], None


async def counts(connection: AsyncConnection, column: ColumnElement[Any]) -> dict[str, int]:
    """How many rows have each value of a column (a status's figures by state)."""
    rows = await connection.execute(select(column, func.count()).group_by(column))
    return {str(value): int(count) for value, count in rows}


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 (None stays None); a naive one is UTC (SQLite's min() and max() drop the zone of the
    UTC times every service stores)."""
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()
