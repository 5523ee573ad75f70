"""Bulk import: CSV and JSON lines stored in batches; bad rows reported by line and nothing half-stored."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from far.importer import Progress, import_file
from far.model import audit, recipients, refusals
from far.service import FarService, Reason
from tests.test_far_support import BILLO, KIVRA, SENDER, make_service

GOOD_CSV = f"""recipient,status,pending,operator,last_registration,refused_senders
197802022389,secure,false,{KIVRA.id},2016-10-30T15:38:49.517+01:00,
198112189876,,,{BILLO.id},,{SENDER};2120000142
194004048569,anonymous,no,{KIVRA.id},2020-01-01,
195806142377,none,true,,,
ES/SE/99999142H,secure,0,{KIVRA.id},,
"""


@pytest.fixture
async def far(tmp_path: Path) -> AsyncIterator[FarService]:
    service = await make_service(tmp_path / "far.db")
    yield service
    await service.engine.dispose()


async def count(far: FarService, table: Any) -> int:
    """Rows in a table."""
    async with far.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def test_csv_is_imported_with_refusals_and_audit(far: FarService, tmp_path: Path) -> None:
    """Every column is read; refusals are stored; each imported recipient is audited."""
    path = tmp_path / "people.csv"
    path.write_text(GOOD_CSV)
    stream = io.StringIO()
    report = await import_file(far.engine, path, progress=Progress(path.stat().st_size, stream), batch_size=2)
    assert report.ok and (report.rows, report.refusals) == (5, 2)
    assert "100.0%" in stream.getvalue() and "5 rows" in stream.getvalue()
    answers = await far.is_reachable(SENDER, ["197802022389", "198112189876", "194004048569", "195806142377"])
    assert [a.reason for a in answers] == [None, Reason.SENDER_REFUSED, Reason.ANONYMOUS, Reason.PENDING]
    assert answers[0].last_registration is not None and answers[0].last_registration.hour == 14
    assert await count(far, audit) == 2 + 5  # two operators, five recipients
    trail = await far.audit_trail("198112189876")
    assert trail[0]["action"] == "import"
    assert trail[0]["detail"]["refused_senders"] == ["0007:2021005448", "0007:2120000142"]


async def test_jsonl_is_imported(far: FarService, tmp_path: Path) -> None:
    """JSON lines take the same keys, refused_senders as a list."""
    path = tmp_path / "people.jsonl"
    lines = [
        {"recipient": "197802022389", "operator": KIVRA.id, "refused_senders": [SENDER]},
        {"recipient": "165568402266", "status": "secure", "pending": False, "operator": BILLO.id},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    report = await import_file(far.engine, path)
    assert report.ok and report.rows == 2
    answers = await far.is_reachable(SENDER, ["197802022389", "165568402266"])
    assert [a.reason for a in answers] == [Reason.SENDER_REFUSED, None]


async def test_reimport_replaces_recipients_and_their_refusals(far: FarService, tmp_path: Path) -> None:
    """Importing a recipient again replaces it, and a present refused_senders column replaces its refusals."""
    path = tmp_path / "people.csv"
    path.write_text(GOOD_CSV)
    await import_file(far.engine, path)
    path.write_text(f"recipient,operator,refused_senders\n198112189876,{KIVRA.id},\n")
    assert (await import_file(far.engine, path)).ok
    [answer] = await far.is_reachable(SENDER, ["198112189876"])
    assert answer.reachable and answer.operator == KIVRA
    assert await count(far, refusals) == 0


async def test_bad_csv_rows_are_all_reported_and_nothing_is_stored(far: FarService, tmp_path: Path) -> None:
    """A file with bad rows stores nothing, not even the good rows already written in earlier batches."""
    path = tmp_path / "bad.csv"
    path.write_text(
        GOOD_CSV
        + "197802022388,secure,false,5568402266,,\n"  # line 7: check digit
        + "191001012382,secure,false,2021005448,,\n"  # line 8: unknown operator
        + "191001012382,gold,false,5568402266,,\n"  # line 9: status
        + "191001012382,secure\n"  # line 10: field count
        + "191001012382,secure,maybe,5568402266,,\n"  # line 11: pending
        + "191001012382,secure,false,5568402266,yesterday,\n"  # line 12: date
        + "191001012382,secure,false,5568402266,,123\n"  # line 13: refused sender
        + "191001012382,secure,false,,,\n"  # line 14: no operator
    )
    report = await import_file(far.engine, path, batch_size=2)
    assert not report.ok and report.bad_rows == 8 and report.rows == 5
    assert [e.line for e in report.errors] == list(range(7, 15))
    reasons = [e.reason for e in report.errors]
    for expected, reason in zip(
        ["check digit", "not in FaR", "status", "fields", "pending", "ISO 8601", "refused sender", "needs an operator"],
        reasons,
        strict=True,
    ):
        assert expected in reason
    assert await count(far, recipients) == 0
    assert await count(far, refusals) == 0
    assert await count(far, audit) == 2  # the operators only
    assert report.to_json()["stored"] == 0


async def test_bad_jsonl_rows_are_reported(far: FarService, tmp_path: Path) -> None:
    """Lines that are not JSON, not objects, or carry unknown fields are reported by line number."""
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"recipient": "197802022389", "operator": KIVRA.id})
        + "\n{oops\n[1]\n"
        + json.dumps({"recipient": "197802022389", "operator": KIVRA.id, "colour": "red"})
        + "\n"
        + json.dumps({"recipient": 197802022389, "status": 7})
        + "\n"
    )
    report = await import_file(far.engine, path)
    assert [e.line for e in report.errors] == [2, 3, 4, 5]
    assert await count(far, recipients) == 0


@pytest.mark.parametrize("header", ["", "id,status\n", "recipient,recipient\n", "status,operator\n"])
async def test_bad_header(far: FarService, tmp_path: Path, header: str) -> None:
    """A missing, unknown, repeated or recipient-less header is reported as line 1."""
    path = tmp_path / "bad.csv"
    path.write_text(header + "197802022389,secure\n")
    report = await import_file(far.engine, path)
    assert not report.ok and report.errors[0].line == 1
