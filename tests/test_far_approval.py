"""Operator approval in FaR: status with dates and the deciding audit row, the approve scope, reachability and
writes of operators that are not approved, /status and the migration of operators already registered."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from alembic import command
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, text

from accesspoint.core.xml import string_value
from accesspoint.servicekit.tokens import BearerToken, scopes
from accesspoint.testing.holders import holder_key
from accesspoint.testing.pki import make_ca
from far import soap
from far.app import create_app
from far.client import FarClient
from far.model import MIGRATIONS, create_engine, upgrade_schema
from far.service import Conflict, FarService, InvalidInput, NotFound, OperatorStatus, Reason
from far.settings import FarSettings, load_settings
from far.status import far_status
from tests.test_far_holders_support import ADULT, OP_A, OP_B, TEXT, running_far, signed
from tests.test_far_rest import auth, problem
from tests.test_far_support import BILLO, KIVRA, NOW, SENDER, make_service, seed_people, soap_body_child

ADMIN = "admin-token-0123456789"
APPROVER = "approver-token-0123456789"
KIVRA_TOKEN = "kivra-token-0123456789"
NEWCOMER = "2120000142"  # a valid organisationsnummer FaR does not know yet
NEWCOMER_TOKEN = "newcomer-token-0123456789"
SETTINGS = FarSettings(
    tokens=(
        BearerToken("admin", ADMIN, scopes("read", "write")),
        BearerToken("pts", APPROVER, scopes("read", "approve")),
        BearerToken("kivra", KIVRA_TOKEN, scopes("read", f"write:operator={KIVRA.id}")),
        BearerToken("newcomer", NEWCOMER_TOKEN, scopes("read", f"write:operator={NEWCOMER}")),
    )
)
AT_KIVRA = "197802022389"  # seed_people: a secure account at Kivra
AT_BILLO = "198112189876"
Client = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def far(tmp_path: Path) -> AsyncIterator[FarService]:
    """FaR seeded with a recipient for every reason (test_far_support.seed_people)."""
    service = await make_service(tmp_path / "far.db")
    await seed_people(service)
    yield service
    await service.engine.dispose()


@pytest.fixture
async def client(aiohttp_client: Client, far: FarService) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(SETTINGS, service=far))


async def _reasons(far: FarService) -> dict[str, Reason | None]:
    return {r.recipient: r.reason for r in await far.is_reachable(SENDER, [AT_KIVRA, AT_BILLO])}


async def test_a_suspended_operators_holders_are_not_reachable_until_approved_again(far: FarService) -> None:
    """Suspending Kivra makes its holders operator-suspended (not accepted, no endpoint); approving restores them."""
    approval, changed = await far.decide_operator(KIVRA.id, OperatorStatus.SUSPENDED, reason="audit", actor="pts")
    assert changed and (approval.status, approval.since, approval.decided_by) == (OperatorStatus.SUSPENDED, NOW, "pts")
    assert await _reasons(far) == {AT_KIVRA: Reason.OPERATOR_SUSPENDED, AT_BILLO: None}
    (answer,) = await far.is_reachable(SENDER, [AT_KIVRA])
    assert not answer.reachable and answer.endpoint is None and not answer.sender_accepted
    assert answer.operator is not None and answer.operator.status is OperatorStatus.SUSPENDED
    await far.decide_operator(KIVRA.id, OperatorStatus.APPROVED, reason=None, actor="pts")
    assert await _reasons(far) == {AT_KIVRA: None, AT_BILLO: None}


async def test_a_revoked_operator_is_final_and_each_decision_is_audited(far: FarService) -> None:
    """Revoked answers operator-revoked and cannot be undone; every decision is an audit row the operator names."""
    suspended, _ = await far.decide_operator(KIVRA.id, OperatorStatus.SUSPENDED, reason="late audit", actor="pts")
    revoked, _ = await far.decide_operator(KIVRA.id, OperatorStatus.REVOKED, reason="failed audit", actor="pts")
    assert (await _reasons(far))[AT_KIVRA] is Reason.OPERATOR_REVOKED
    with pytest.raises(Conflict, match="final"):
        await far.decide_operator(KIVRA.id, OperatorStatus.APPROVED, reason=None, actor="pts")
    assert (await far.decide_operator(KIVRA.id, OperatorStatus.REVOKED, reason="again", actor="pts"))[1] is False
    with pytest.raises(InvalidInput, match="needs a reason"):
        await far.decide_operator(BILLO.id, OperatorStatus.SUSPENDED, reason=None, actor="pts")
    trail = await far.audit_trail(KIVRA.id)
    decisions = [(c["action"], c["detail"]["reason"]) for c in trail if c["action"] in ("suspend", "revoke")]
    assert decisions == [("revoke", "failed audit"), ("suspend", "late audit")]
    stored = await far.get_approval(KIVRA.id)
    assert stored == revoked and stored.audit_id is not None and stored.audit_id > (suspended.audit_id or 0)


async def test_soap_is_reachable_tells_a_sender_not_to_send_to_a_suspended_operators_holder(far: FarService) -> None:
    """Recipient v3 has no reason element: SenderAccepted is false for a holder at a suspended operator."""
    await far.decide_operator(KIVRA.id, OperatorStatus.SUSPENDED, reason="audit", actor="pts")
    answer = soap_body_child(soap.is_reachable_response(await far.is_reachable(SENDER, [AT_KIVRA, AT_BILLO])))
    accepted = [string_value(e) for e in answer.iter(f"{{{soap.RECIPIENT_V1}}}SenderAccepted")]
    assert accepted == ["false", "true"]


async def test_only_the_approve_scope_decides_never_an_operators_own_token(client: TestClient[Any, Any]) -> None:
    """Kivra's write token and the administrator's write get 403 (audited); the approve scope suspends, and the
    listing, the approval and /status show it."""
    path = f"/api/v1/operators/{KIVRA.id}/approval"
    for token in (KIVRA_TOKEN, ADMIN):
        body = await problem(await client.put(path, json={"status": "approved"}, headers=auth(token)), 403, "forbidden")
        assert "approve" in body["detail"]
    trail = await (await client.get(f"/api/v1/audit/{KIVRA.id}", headers=auth(ADMIN))).json()
    assert [c["actor"] for c in trail["changes"] if c["action"] == "refused"] == ["admin", "kivra"]
    await problem(await client.put(path, json={"status": "paused"}, headers=auth(APPROVER)), 400)
    await problem(await client.put(path, json={"status": "suspended"}, headers=auth(APPROVER)), 400)
    decided = await client.put(path, json={"status": "suspended", "reason": "audit"}, headers=auth(APPROVER))
    assert decided.status == 200
    body = await decided.json()
    assert (body["status"], body["decided_by"], body["reason"]) == ("suspended", "pts", "audit")
    assert (await (await client.get(path, headers=auth(KIVRA_TOKEN))).json()) == body
    listed = {o["id"]: o for o in (await (await client.get("/api/v1/operators", headers=auth())).json())["operators"]}
    assert listed[KIVRA.id]["status"] == "suspended" and listed[KIVRA.id]["approval"]["audit_id"] == body["audit_id"]
    assert listed[BILLO.id]["approval"]["status"] == "approved"
    reach = await client.post("/api/v1/reachable", json={"sender": SENDER, "recipients": [AT_KIVRA]}, headers=auth())
    assert (await reach.json())["results"][0]["reason"] == "operator-suspended"


async def test_a_revoked_operators_token_no_longer_writes(client: TestClient[Any, Any], far: FarService) -> None:
    """Kivra writes its holder; once revoked the same token gets 403 (audited) and nothing changes; suspended still
    writes (so that holders can leave)."""
    holder = f"/api/v1/recipients/{AT_KIVRA}/refusals/{SENDER}"
    assert (await client.put(holder, headers=auth(KIVRA_TOKEN))).status == 201
    await far.decide_operator(KIVRA.id, OperatorStatus.SUSPENDED, reason="audit", actor="pts")
    assert (await client.delete(holder, headers=auth(KIVRA_TOKEN))).status == 204
    await far.decide_operator(KIVRA.id, OperatorStatus.REVOKED, reason="failed audit", actor="pts")
    body = await problem(await client.put(holder, headers=auth(KIVRA_TOKEN)), 403, "forbidden")
    assert "revoked" in body["detail"]
    assert await far.list_refusals(AT_KIVRA) == []
    record = {"name": "Kivra", "party_id": KIVRA.party_id, "endpoint": "https://evil.example/as4"}
    moved = await client.put(f"/api/v1/operators/{KIVRA.id}", json=record, headers=auth(KIVRA_TOKEN))
    await problem(moved, 403, "forbidden")
    assert (await far.get_operator(KIVRA.id)).endpoint == KIVRA.endpoint
    assert [c["actor"] for c in await far.audit_trail(KIVRA.id) if c["action"] == "refused"] == ["kivra", "kivra"]
    assert (await client.put(holder, headers=auth(ADMIN))).status == 201  # the register's administrators still do


async def test_an_operator_that_registers_itself_waits_for_approval(client: TestClient[Any, Any]) -> None:
    """An operator record created with the operator's own token starts suspended (awaiting approval)."""
    own = NEWCOMER
    record = {"name": "Newcomer", "party_id": "urn:test:newcomer", "endpoint": "https://new.example/as4"}
    created = await client.put(f"/api/v1/operators/{own}", json=record, headers=auth(NEWCOMER_TOKEN))
    assert created.status == 201 and (await created.json())["status"] == "suspended"
    approval = await (await client.get(f"/api/v1/operators/{own}/approval", headers=auth())).json()
    assert (approval["status"], approval["reason"], approval["decided_by"]) == ("suspended", "awaiting approval",
                                                                                 "newcomer")  # fmt: skip


async def test_far_status_shows_each_operators_approval(far: FarService) -> None:
    """/status counts operators by approval and gives each one's status, since and decider."""
    far.now = lambda: NOW + timedelta(days=1)
    await far.decide_operator(BILLO.id, OperatorStatus.SUSPENDED, reason="audit", actor="pts")
    document = await far_status(far, None)
    assert document["operators"]["by_status"] == {"approved": 1, "suspended": 1}
    items = {i["id"]: i for i in document["operators"]["items"]}
    assert (items[BILLO.id]["status"], items[BILLO.id]["status_decided_by"]) == ("suspended", "pts")
    assert items[BILLO.id]["status_since"] == (NOW + timedelta(days=1)).isoformat()
    assert (items[KIVRA.id]["status"], items[KIVRA.id]["status_decided_by"]) == ("approved", "test")


async def test_operators_registered_before_approval_migrate_as_approved(tmp_path: Path) -> None:
    """An operator stored at revision h001 is approved after the upgrade, since its last change."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")

    def to_h001(connection: Connection) -> None:
        command.upgrade(MIGRATIONS.config(connection), "h001")
        connection.execute(
            text("INSERT INTO far_operators (id, name, party_id, updated_at) VALUES (:id, 'Old', 'urn:x', :at)"),
            {"id": KIVRA.id, "at": NOW.isoformat(timespec="microseconds")},
        )

    try:
        async with engine.begin() as connection:
            await connection.run_sync(to_h001)
        await upgrade_schema(engine)
        approval = await FarService(engine).get_approval(KIVRA.id)
        assert (approval.status, approval.since) == (OperatorStatus.APPROVED, NOW)
        assert approval.decided_by == "migration o001"
    finally:
        await engine.dispose()


async def test_no_new_holder_goes_to_an_operator_that_is_not_approved(
    aiohttp_client: Client, aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    """A registration at, or a switch to, a suspended operator is refused (422 operator-not-approved)."""
    async for running in running_far(aiohttp_client, aiohttp_server, tmp_path):
        await running.service.decide_operator(KIVRA.id, OperatorStatus.SUSPENDED, reason="audit", actor="pts")
        status, refused = await running.register(ADULT, token=OP_A)
        assert (status, refused["code"]) == (422, "operator-not-approved")
        assert (await running.reachable(ADULT))["reason"] == "no-mailbox"
        assert (await running.register(ADULT, token=OP_B))[0] == 201
        body = {"recipient": ADULT, "agreement_text": TEXT, "signatures": signed(TEXT, ADULT)}
        status, refused = await running.call("POST", "/api/v1/switches", OP_A, body)
        assert (status, refused["code"]) == (422, "operator-not-approved")
        assert (await running.reachable(ADULT))["operator"]["id"] == BILLO.id


async def test_the_far_client_reads_an_operators_status(client: TestClient[Any, Any], far: FarService) -> None:
    """FarClient.operator gives the operator with its approval (what the router asks before forwarding)."""
    await far.decide_operator(BILLO.id, OperatorStatus.SUSPENDED, reason="audit", actor="pts")
    async with FarClient(str(client.make_url("")).rstrip("/"), KIVRA_TOKEN) as remote:
        assert (await remote.operator(BILLO.id)).status is OperatorStatus.SUSPENDED
        assert (await remote.operator(KIVRA.id)).status is OperatorStatus.APPROVED
        with pytest.raises(NotFound):
            await remote.operator(NEWCOMER)


def test_the_approve_scope_is_a_setting_of_its_own(tmp_path: Path) -> None:
    """A token configured with the approve scope may decide approvals and write nothing; write grants no approval."""
    config = tmp_path / "far.toml"
    config.write_text(
        '[far]\n[[far.tokens]]\nname = "pts"\ntoken = "approver-token-0123456789"\nscopes = ["read", "approve"]\n'
        '[[far.tokens]]\nname = "admin"\ntoken = "admin-token-0123456789"\nscopes = ["read", "write"]\n'
    )
    supervisor, admin = load_settings(config).tokens
    assert supervisor.allows("approve") and not supervisor.allows("write")
    assert admin.allows("write") and not admin.allows("approve")


async def test_a_revoked_operator_registers_no_holder_key(client: TestClient[Any, Any], far: FarService) -> None:
    """The holder key routes refuse a revoked operator's token too (403, audited), though they authorise apart."""
    ca = make_ca("Holder key CA")
    path = f"/api/v1/holder-keys/{AT_KIVRA}"

    def body() -> dict[str, str]:
        key = holder_key(ca, AT_KIVRA, "x25519")
        return {"certificate": key.certificate.public_bytes(serialization.Encoding.PEM).decode()}

    assert (await client.put(path, json=body(), headers=auth(KIVRA_TOKEN))).status == 201
    await far.decide_operator(KIVRA.id, OperatorStatus.REVOKED, reason="failed audit", actor="pts")
    await problem(await client.put(path, json=body(), headers=auth(KIVRA_TOKEN)), 403, "forbidden")
    refused = [c for c in await far.audit_trail(AT_KIVRA) if c["action"] == "refuse"]
    assert refused and "revoked" in refused[0]["detail"]["refused"]


async def test_an_operator_record_read_and_written_back_keeps_its_approval(client: TestClient[Any, Any]) -> None:
    """PUT accepts the status GET shows (a round trip), refuses another one (409), and never changes it."""
    path = f"/api/v1/operators/{KIVRA.id}"
    record = {k: v for k, v in (await (await client.get(path, headers=auth())).json()).items() if k != "id"}
    assert (await client.put(path, json=record, headers=auth(KIVRA_TOKEN))).status == 200
    body = await problem(await client.put(path, json={**record, "status": "revoked"}, headers=auth(ADMIN)), 409)
    assert body["field"] == "status"
    assert (await (await client.get(path, headers=auth())).json())["status"] == "approved"
