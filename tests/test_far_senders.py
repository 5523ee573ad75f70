"""The sender register: general party ids, REST with scopes and audit, bulk import, refusals keyed on party ids."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from alembic import command
from sqlalchemy import text

from accesspoint.servicekit.tokens import BearerToken, scopes
from far.app import create_app
from far.identifiers import InvalidIdentifier
from far.model import MIGRATIONS, AccountStatus, create_engine, upgrade_schema
from far.parties import PartyPolicy, parse_party_id
from far.sender_import import import_senders
from far.senders import SenderRegister, SenderView
from far.service import FarService, Reason
from far.settings import FarSettings
from tests.test_far_support import KIVRA, SENDER, make_service

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"
FINNISH_WRITER = "finnish-writer-0123456789"
FINNISH = "0216:003701120389"  # OVT code of a Y-tunnus with a valid check digit
NORWEGIAN = "0192:974760673"
INTERMEDIARY = "0007:5567212344"
SETTINGS = FarSettings(
    tokens=(
        BearerToken("admin", ADMIN, scopes("read", "write")),
        BearerToken("reader", READER, scopes("read")),
        BearerToken("finland", FINNISH_WRITER, scopes("read", f"write:sender={FINNISH}")),
    )
)
AP_FI = {"party_id": "AP-FI-0001", "certificate_sha256": "ab" * 32}
AP_SE = {"party_id": "AP-SE-0001", "certificate_sha256": "cd" * 32}
Client = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("2021005448", "0007:2021005448"),
        ("162021005448", "0007:2021005448"),
        ("iso6523-actorid-upis::0192:974760673", NORWEGIAN),
        ("urn:oasis:names:tc:ebcore:partyid-type:iso6523:0192::974760673", NORWEGIAN),
        ("0212:0112038-9", FINNISH),
        ("0037:01120389", FINNISH),
        ("0213:FI01120389", FINNISH),
        ("0216:003701120389ABC", "0216:003701120389ABC"),
        ("0184:DK13585628", "0184:13585628"),
        ("0191:10137319", "0191:10137319"),
        ("0218:40003245752", "0218:40003245752"),
        ("0200:110053842", "0200:110053842"),
        ("0203:kommun.example.se", "0203:kommun.example.se"),
        ("NO/SE/974760673", "NO/SE/974760673"),
    ],
)
def test_party_ids_are_read_in_every_accepted_form_to_one_canonical_text(given: str, canonical: str) -> None:
    """Each accepted spelling of a sender's id gives the one text FaR keys senders and refusals on."""
    assert parse_party_id(given) == canonical


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("0192:974760674", "check digit"),
        ("0212:0112038-8", "check digit"),
        ("0184:13585627", "CVR"),
        ("0191:10137318", "check digit"),
        ("0007:2021005449", "check digit"),
        ("0088:5798000000009", "not one this register accepts"),
        ("12:34", "4-digit ICD"),
        ("SE/12345", "eIDAS"),
        ("0218:4000324575", "11 digits"),
    ],
)
def test_party_ids_that_fail_their_scheme_are_refused_with_the_reason(given: str, why: str) -> None:
    """A wrong check digit, an unknown ICD or a malformed value is refused, saying which."""
    with pytest.raises(InvalidIdentifier, match=why):
        parse_party_id(given)


def test_other_icds_are_accepted_when_configured() -> None:
    """An ICD the register does not know is accepted once the settings name it."""
    assert parse_party_id("0088:5798000000009", PartyPolicy(extra_icds=frozenset({"0088"}))) == "0088:5798000000009"


@pytest.fixture
async def far(tmp_path: Path) -> AsyncIterator[FarService]:
    service = await make_service(tmp_path / "far.db")
    yield service
    await service.engine.dispose()


@pytest.fixture
async def client(aiohttp_client: Client, far: FarService) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(SETTINGS, service=far))


def auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _finnish(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Verohallinto",
        "networks": ["cross-border"],
        "access_points": [AP_FI],
        "support": {"text": "Ring oss", "url": "https://vero.example.fi"},
        **extra,
    }


async def test_a_sender_is_registered_read_suspended_and_deleted_with_every_change_audited(
    client: TestClient[Any, Any],
) -> None:
    """PUT creates (201) then replaces (200), PATCH suspends, DELETE removes; each change has its audit row."""
    path = f"/api/v1/senders/{FINNISH}"
    created = await client.put(path, json=_finnish(), headers=auth())
    assert created.status == 201, await created.text()
    record = await created.json()
    assert record["id"] == FINNISH and record["status"] == "active" and record["access_points"] == [AP_FI]
    assert (await client.put("/api/v1/senders/0212:0112038-9", json=_finnish(), headers=auth())).status == 200
    suspended = await client.patch(path, json={"status": "suspended"}, headers=auth())
    assert (await suspended.json())["status"] == "suspended"
    found = await (await client.get("/api/v1/senders?status=suspended", headers=auth(READER))).json()
    assert [s["id"] for s in found["senders"]] == [FINNISH]
    trail = await (await client.get(f"/api/v1/audit/{FINNISH}", headers=auth(READER))).json()
    assert [c["action"] for c in trail["changes"]] == ["update", "update", "create"]
    assert trail["changes"][0]["detail"] == {"status": "suspended"} and trail["changes"][0]["actor"] == "admin"
    assert (await client.delete(path, headers=auth())).status == 204
    assert (await client.get(path, headers=auth())).status == 404
    trail = await (await client.get(f"/api/v1/audit/{FINNISH}", headers=auth())).json()
    assert trail["changes"][0]["action"] == "delete"


async def test_a_dispatchers_access_points_count_for_the_senders_it_sends_for(client: TestClient[Any, Any]) -> None:
    """GET of a sender shows the dispatchers that send for it (the contracts' Dispatcher.Senders)."""
    await client.put(f"/api/v1/senders/{NORWEGIAN}", json={"name": "Skatteetaten"}, headers=auth())
    body = {"name": "Förmedlaren AB", "access_points": [AP_SE], "dispatches_for": [NORWEGIAN, "2021005448"]}
    assert (await client.put(f"/api/v1/senders/{INTERMEDIARY}", json=body, headers=auth())).status == 201
    view = SenderView.from_json(await (await client.get(f"/api/v1/senders/{NORWEGIAN}", headers=auth())).json())
    assert [d.id for d in view.dispatchers] == [INTERMEDIARY]
    assert [(owner, ap.party_id) for owner, ap in view.connected()] == [(INTERMEDIARY, "AP-SE-0001")]
    by_ap = await (await client.get(f"/api/v1/senders?access_point={'cd' * 32}", headers=auth())).json()
    assert [s["id"] for s in by_ap["senders"]] == [INTERMEDIARY]


async def test_writes_need_the_write_scope_narrowed_to_the_sender_they_change(client: TestClient[Any, Any]) -> None:
    """A reader may not write (403); a token for one sender changes that sender only."""
    denied = await client.put(f"/api/v1/senders/{FINNISH}", json=_finnish(), headers=auth(READER))
    assert denied.status == 403 and 'scope="write"' in denied.headers["WWW-Authenticate"]
    assert (await client.put(f"/api/v1/senders/{FINNISH}", json=_finnish(), headers=auth(FINNISH_WRITER))).status == 201
    other = await client.put(
        f"/api/v1/senders/{NORWEGIAN}", json={"name": "Skatteetaten"}, headers=auth(FINNISH_WRITER)
    )
    assert other.status == 403
    assert (await client.get(f"/api/v1/senders/{FINNISH}")).status == 401


async def test_bad_sender_records_are_refused_naming_the_field(client: TestClient[Any, Any]) -> None:
    """A bad id, fingerprint, network or an id in the body naming another sender: 400 problem with the field."""
    cases = [
        ("/api/v1/senders/0192:974760674", _finnish(), "id"),
        (
            f"/api/v1/senders/{FINNISH}",
            _finnish(access_points=[{"party_id": "AP", "certificate_sha256": "xy"}]),
            "access_points[0]",
        ),
        (f"/api/v1/senders/{FINNISH}", _finnish(networks=["carrier-pigeon"]), "networks"),
        (f"/api/v1/senders/{FINNISH}", _finnish(id=NORWEGIAN), "id"),
        (f"/api/v1/senders/{FINNISH}", _finnish(name="X"), "name"),
    ]
    for path, body, field in cases:
        response = await client.put(path, json=body, headers=auth())
        assert response.status == 400 and response.content_type == "application/problem+json", path
        assert (await response.json())["field"] == field


async def test_an_import_with_a_bad_id_names_its_line_and_stores_nothing(client: TestClient[Any, Any]) -> None:
    """Bulk import over REST: every bad row named by its line, nothing stored; a good file is stored and audited."""
    rows = [
        json.dumps({"id": FINNISH, "name": "Verohallinto", "access_points": [AP_FI]}),
        "",
        json.dumps({"id": "0192:974760674", "name": "Skatteetaten"}),
        "{not json",
    ]
    headers = {**auth(), "Content-Type": "application/x-ndjson"}
    refused = await client.post("/api/v1/senders/import", data="\n".join(rows), headers=headers)
    assert refused.status == 400
    report = await refused.json(content_type=None)
    assert report["stored"] == 0 and report["bad_rows"] == 2
    assert [e["line"] for e in report["errors"]] == [3, 4]
    assert "0192:974760674" in report["errors"][0]["reason"] and "check digit" in report["errors"][0]["reason"]
    assert (await client.get(f"/api/v1/senders/{FINNISH}", headers=auth())).status == 404

    csv = (
        "id,name,networks,access_points,support_text\n"
        f"{FINNISH},Verohallinto,cross-border,AP-FI-0001={'ab' * 32},Soita meille\n"
        f"{NORWEGIAN},Skatteetaten,cross-border;minameddelanden,,\n"
    )
    stored = await client.post("/api/v1/senders/import", data=csv, headers={**auth(), "Content-Type": "text/csv"})
    assert (await stored.json()) == {"ok": True, "stored": 2, "bad_rows": 0, "errors": []}
    record = await (await client.get(f"/api/v1/senders/{NORWEGIAN}", headers=auth())).json()
    assert record["networks"] == ["cross-border", "minameddelanden"]
    trail = await (await client.get(f"/api/v1/audit/{FINNISH}", headers=auth())).json()
    assert trail["changes"][0]["action"] == "import"


async def test_import_from_a_file_names_the_csv_line_of_a_bad_id(far: FarService, tmp_path: Path) -> None:
    """The CLI's import reads CSV lines as the file numbers them (header line 1)."""
    lines = ["id,name", f"{FINNISH},Verohallinto", "0999:1,Okänd", f"{NORWEGIAN},N"]
    report = await import_senders(far.engine, iter(line + "\n" for line in lines), jsonl=False)
    assert not report.ok and [(e.line, e.reason) for e in report.errors] == [
        (3, "id '0999:1': ICD 0999 is not one this register accepts"),
        (4, "name is 2 to 256 printable characters"),
    ]


async def test_refusals_of_foreign_senders_are_kept_and_answered_by_party_id(far: FarService) -> None:
    """A recipient refuses a Norwegian sender (by any spelling); FaR answers sender-refused to it and not to others."""
    await far.put_recipient("197802022389", status=AccountStatus.SECURE, operator_id=KIVRA.id, actor="test")
    assert await far.refuse_sender("197802022389", "iso6523-actorid-upis::0192:974760673", actor="test")
    [refused] = await far.is_reachable(NORWEGIAN, ["197802022389"])
    [accepted] = await far.is_reachable(SENDER, ["197802022389"])
    assert (refused.reason, accepted.reason) == (Reason.SENDER_REFUSED, None)
    assert refused.sender_refused_at is not None
    since = refused.sender_refused_at.isoformat()
    assert await far.list_refusals("197802022389") == [{"sender": NORWEGIAN, "since": since}]


async def test_refusals_stored_before_the_register_become_swedish_party_ids(tmp_path: Path) -> None:
    """Migration 0002 turns a refusal of a 10-digit organisationsnummer into 0007:<orgnr>; it still refuses."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'far.db'}")

    def first_revision(connection: Any) -> None:
        command.upgrade(MIGRATIONS.config(connection), "0001")

    async with engine.begin() as conn:
        await conn.run_sync(first_revision)
        await conn.execute(
            text("INSERT INTO far_refusals (recipient_id, sender_orgnr, created_at) VALUES (:r, :s, :t)"),
            {"r": "197802022389", "s": SENDER, "t": "2020-01-01T00:00:00.000000+00:00"},
        )
    await upgrade_schema(engine)
    far = FarService(engine)
    await far.put_operator(KIVRA, actor="test")
    await far.put_recipient("197802022389", status=AccountStatus.SECURE, operator_id=KIVRA.id, actor="test")
    [answer] = await far.is_reachable(f"16{SENDER}", ["197802022389"])
    assert answer.reason is Reason.SENDER_REFUSED
    assert [r["sender"] for r in await far.list_refusals("197802022389")] == [f"0007:{SENDER}"]
    assert (await SenderRegister(engine).search()) == []
    await engine.dispose()
