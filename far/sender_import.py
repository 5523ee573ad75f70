"""Bulk import of sender records from JSON lines (the REST form, one object a line) or CSV with a header row.

CSV columns (``id`` and ``name`` required; lists separated by spaces or ``;``):

=========================  ================================================================================
``id``                     the sender's party id (far/parties.py: ``0007:…``, ``0192:…``, ``0216:…``, ``XX/YY/…``)
``name``                   2 to 256 characters
``status``                 ``active`` (default) or ``suspended``
``networks``               ``minameddelanden``, ``sdk``, ``cross-border``
``access_points``          ``PARTYID=SHA256`` per access point (the AS4 PartyId, the certificate's SHA-256)
``signing_certificates``   SHA-256 of the sender's own signing certificates
``dispatches_for``         party ids of the senders it sends for
``support_text``, ``support_url``, ``support_phone``, ``support_email``
=========================  ================================================================================

One transaction: when any row is bad, every bad row is reported with its line and why (up to 100 listed, all
counted) and nothing is stored. A sender listed twice keeps its last row; each stored sender gets an audit row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from far.importer import BadRows, csv_records, header_names
from far.importer import RowError as BadLine
from far.model import audit
from far.parties import STRICT_PARTIES, PartyPolicy
from far.senders import Sender, parse_sender, store_senders
from far.service import FarError

COLUMNS = (
    "id",
    "name",
    "status",
    "networks",
    "access_points",
    "signing_certificates",
    "dispatches_for",
    "support_text",
    "support_url",
    "support_phone",
    "support_email",
)
BATCH = 1000
_LISTS = ("networks", "signing_certificates", "dispatches_for")


@dataclass
class SenderImportReport(BadRows):
    """What an import did: senders stored (0 when any row was bad) and the bad rows."""

    stored: int = 0

    def to_json(self) -> dict[str, Any]:
        """As the CLI prints it and the REST API answers."""
        return {
            "ok": self.ok,
            "stored": self.stored if self.ok else 0,
            "bad_rows": self.bad_rows,
            "errors": self.errors_json(),
        }


def _split(text: str) -> list[str]:
    return text.replace(";", " ").split()


def _from_csv_row(record: dict[str, str]) -> dict[str, Any]:
    """The JSON form of a CSV row."""
    document: dict[str, Any] = {"id": record.get("id") or None, "name": record.get("name") or None}
    if record.get("status"):
        document["status"] = record["status"].strip()
    for name in _LISTS:
        if record.get(name):
            document[name] = _split(record[name])
    if record.get("access_points"):
        points = []
        for item in _split(record["access_points"]):
            party_id, separator, digest = item.rpartition("=")
            if not separator:
                raise FarError(f"access_points: {item[:64]!r} is not PARTYID=SHA256", field="access_points")
            points.append({"party_id": party_id, "certificate_sha256": digest})
        document["access_points"] = points
    support = {
        key: record[f"support_{key}"] for key in ("text", "url", "phone", "email") if record.get(f"support_{key}")
    }
    if support:
        document["support"] = support
    return document


def read_rows(lines: Iterable[str], *, jsonl: bool, policy: PartyPolicy) -> Iterator[Sender | BadLine]:
    """Each row of the file as a Sender, or the BadLine that says why it is not one."""
    if jsonl:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield parse_sender(json.loads(line), policy=policy)
            except json.JSONDecodeError as exc:
                yield BadLine(number, f"not JSON: {exc.msg}")
            except FarError as exc:
                yield BadLine(number, exc.detail)
        return
    reader = csv.reader(lines)
    names = header_names(next(reader, []))
    if not names or set(names) - set(COLUMNS) or not {"id", "name"} <= set(names) or len(set(names)) != len(names):
        yield BadLine(1, f"the header names columns among {', '.join(COLUMNS)} (id and name required), once each")
        return
    for item in csv_records(reader, names):
        if isinstance(item, BadLine):
            yield item
            continue
        number, record = item
        try:
            yield parse_sender(_from_csv_row(record), policy=policy)
        except FarError as exc:
            yield BadLine(number, exc.detail)


async def import_senders(
    engine: AsyncEngine,
    text: Iterable[str],
    *,
    jsonl: bool,
    policy: PartyPolicy = STRICT_PARTIES,
    actor: str = "import",
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SenderImportReport:
    """Import sender records in one transaction (see the module docstring)."""
    report = SenderImportReport()
    records: dict[str, Sender] = {}
    for item in read_rows(text, jsonl=jsonl, policy=policy):
        if isinstance(item, BadLine):
            report.add(item)
        else:
            records.pop(item.id, None)
            records[item.id] = item  # the last row wins
    if report.bad_rows or not records:
        return report
    at = now()
    batch = list(records.values())
    async with engine.begin() as conn:
        for start in range(0, len(batch), BATCH):
            chunk = batch[start : start + BATCH]
            await store_senders(conn, chunk, at)
            await conn.execute(
                audit.insert(),
                [
                    {
                        "at": at,
                        "actor": actor[:128],
                        "action": "import",
                        "entity": "sender",
                        "entity_id": s.id,
                        "detail": json.dumps(s.to_json(), sort_keys=True),
                    }
                    for s in chunk
                ],
            )
    report.stored = len(batch)
    return report


def lines_of(data: bytes) -> Iterator[str]:
    """The lines of an uploaded file (UTF-8, a byte order mark dropped); UnicodeDecodeError when it is not UTF-8."""
    return iter(io.StringIO(data.decode("utf-8-sig"), newline=""))
