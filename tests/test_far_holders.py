"""Operators write FaR for their own holders only: registration with the holder's e-ID signature, switches between
operators, preferences, dormancy, minors, company signatories and eIDAS holders, over REST and the Recipient
contract's SOAP operations; every refusal changes nothing and is audited with who tried."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from accesspoint.servicekit.tokens import BearerToken, scopes
from far.holders import HolderService
from far.model import AccountStatus
from far.registers import CompanyRecord, Person, interpret_rule
from tests.test_far_holders_support import (
    ADMIN,
    ADULT,
    CHILD,
    COMPANY,
    EID,
    EIDAS,
    GUARDIAN,
    OP_A,
    OP_B,
    ORGNR,
    OTHER_ADULT,
    SIGNER_1,
    SIGNER_2,
    TEEN,
    TEXT,
    Far,
    body_child,
    contract_schema,
    envelope,
    running_far,
    settings,
    signed,
    v4_schema,
)
from tests.test_far_support import BILLO, KIVRA, NOW

Client = Callable[..., Awaitable[TestClient[Any, Any]]]
Server = Callable[..., Awaitable[TestServer]]
V2 = "http://minameddelanden.gov.se/schema/Recipient/v2"
V3 = "http://minameddelanden.gov.se/schema/Recipient/v3"
R1 = "http://minameddelanden.gov.se/schema/Recipient"
C1 = "http://minameddelanden.gov.se/schema/Common"
AUTH_NS = "{http://minameddelanden.gov.se/schema/Authority}"


@pytest.fixture
async def far(aiohttp_client: Client, aiohttp_server: Server, tmp_path: Path) -> AsyncIterator[Far]:
    """FaR with Kivra's and Billo's tokens and the reference registers."""
    async for running in running_far(aiohttp_client, aiohttp_server, tmp_path):
        yield running


async def _registered_at_kivra(far: Far, recipient: str = ADULT) -> None:
    status, body = await far.register(recipient)
    assert status == 201, body


# ------------------------------------------------------------------------------------ operator scoping


async def test_an_operator_token_cannot_change_another_operators_record(far: Far) -> None:
    """Billo's token changing Kivra's endpoint is refused with 403, nothing changes, and the attempt is audited."""
    before = await far.service.get_operator(KIVRA.id)
    body = {"name": "Kivra", "party_id": KIVRA.party_id, "endpoint": "https://evil.example/as4"}
    status, problem = await far.call("PUT", f"/api/v1/operators/{KIVRA.id}", OP_B, body)
    assert status == 403 and problem["type"] == "urn:accesspoint:problem:forbidden"
    assert await far.service.get_operator(KIVRA.id) == before
    refused = (await far.audit(KIVRA.id))[0]
    assert (refused["action"], refused["actor"]) == ("refused", "billo")
    own = {"name": "Billo AB", "party_id": BILLO.party_id, "endpoint": "https://as4.billo.example/as4"}
    status, changed = await far.call("PUT", f"/api/v1/operators/{BILLO.id}", OP_B, own)
    assert status == 200 and changed["endpoint"] == own["endpoint"]


async def test_an_operator_cannot_change_another_operators_holders(far: Far) -> None:
    """Billo may not move, delete, refuse senders for or close Kivra's holder: 403 each, the holder unchanged."""
    await _registered_at_kivra(far)
    before = await far.service.get_recipient(ADULT)
    attempts = [
        ("PUT", f"/api/v1/recipients/{ADULT}", {"status": "secure", "operator": BILLO.id}),
        ("DELETE", f"/api/v1/recipients/{ADULT}", None),
        ("PUT", f"/api/v1/recipients/{ADULT}/refusals/2021005448", None),
        (
            "POST",
            "/api/v1/deregistrations",
            {"recipient": ADULT, "agreement_text": TEXT, "signatures": signed(TEXT, ADULT)},
        ),
        ("POST", "/api/v1/activity", {"recipients": [ADULT]}),
    ]
    for method, path, body in attempts:
        status, problem = await far.call(method, path, OP_B, body)
        assert status == 403, (path, problem)
    assert await far.service.get_recipient(ADULT) == before
    assert await far.service.list_refusals(ADULT) == []
    trail = await far.audit(ADULT)
    assert [c["actor"] for c in trail if c["action"] == "refused"] == ["billo"] * 4
    assert [c["action"] for c in await far.audit(f"{ADULT}/0007:2021005448")] == ["refused"]
    # Kivra itself may not hand its holder to Billo by a plain PUT either: that is what a switch is for.
    status, _problem = await far.call(
        "PUT", f"/api/v1/recipients/{ADULT}", OP_A, {"status": "secure", "operator": BILLO.id}
    )
    assert status == 403
    assert (await far.service.get_recipient(ADULT)).operator_id == KIVRA.id


async def test_a_token_without_write_scope_changes_nothing(
    aiohttp_client: Client, aiohttp_server: Server, tmp_path: Path
) -> None:
    """A read-only caller gets 403 on a registration with a valid e-ID signature, and nothing is stored."""
    reader = "reader-token-0123456789"
    tokens = (*settings().tokens, BearerToken("reader", reader, scopes("read")))
    async for far in running_far(aiohttp_client, aiohttp_server, tmp_path, tokens=tokens):
        status, problem = await far.register(ADULT, token=reader)
        assert status == 403 and problem["type"] == "urn:accesspoint:problem:forbidden"
        assert (await far.reachable(ADULT))["reason"] == "no-mailbox"


# -------------------------------------------------------------------------------------- registration


async def test_register_with_the_holders_signature(far: Far) -> None:
    """A holder's valid e-ID signature registers them at the calling operator, audited with who signed."""
    status, result = await far.register(ADULT)
    assert status == 201
    assert result["status"] == "Complete" and [s["id"] for s in result["signed_by"]] == [ADULT]
    reach = await far.reachable(ADULT)
    assert reach["reachable"] and reach["operator"]["id"] == KIVRA.id
    change = (await far.audit(ADULT))[0]
    assert change["action"] == "register" and change["actor"] == "kivra"
    assert change["detail"]["signers"][0]["id"] == ADULT


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("garbage-signature", "malformed"),
        ("not-a-certificate", "malformed"),
        ("no-nonce", "malformed"),
        ("old-nonce", "expired"),
        ("expired-certificate", "expired"),
        ("someone-else", "identity"),
        ("other-text", "signature"),
        ("untrusted-ca", "untrusted"),
    ],
)
async def test_a_bad_identity_assertion_is_refused_and_nothing_stored(far: Far, case: str, code: str) -> None:
    """Each bad e-ID assertion is refused with 422 and its reason, and the holder is not registered."""
    good = EID.sign(TEXT, ADULT, at=NOW).to_json()
    signature: dict[str, Any] = {
        "garbage-signature": {**good, "signature": "not base64 !"},
        "not-a-certificate": {**good, "certificate": "AAAA"},
        "no-nonce": {**good, "nonce": None},
        "old-nonce": EID.sign(TEXT, ADULT, at=NOW, age=timedelta(hours=1)).to_json(),
        "expired-certificate": EID.sign(TEXT, ADULT, at=NOW, expired=True).to_json(),
        "someone-else": EID.sign(TEXT, OTHER_ADULT, at=NOW).to_json(),
        "other-text": EID.sign("Något annat", ADULT, at=NOW).to_json(),
        "untrusted-ca": _stranger_signature(),
    }[case]
    body = {"recipient": ADULT, "agreement_text": TEXT, "signatures": [signature]}
    status, problem = await far.call("POST", "/api/v1/registrations", OP_A, body)
    assert status == 422, problem
    assert problem["code"] == code and problem["detail"]
    assert (await far.reachable(ADULT))["reason"] == "no-mailbox"


def _stranger_signature() -> dict[str, Any]:
    from accesspoint.testing.eid import EidCa

    return EidCa("Stranger e-ID CA").sign(TEXT, ADULT, at=NOW).to_json()


async def test_a_wrong_check_digit_and_a_replayed_assertion_are_refused(far: Far) -> None:
    """An identifier with a wrong check digit is a 400 naming the recipient; an assertion counts once."""
    wrong = ADULT[:-1] + str((int(ADULT[-1]) + 1) % 10)
    status, problem = await far.register(wrong, ADULT)
    assert status == 400 and problem["field"] == "recipient" and "check digit" in problem["detail"]
    signature = signed(TEXT, ADULT)
    body = {"recipient": ADULT, "agreement_text": TEXT, "signatures": signature}
    assert (await far.call("POST", "/api/v1/registrations", OP_A, body))[0] == 201
    status, problem = await far.call("POST", "/api/v1/deregistrations", OP_A, {**body})
    assert status == 422 and problem["code"] == "replayed"
    assert (await far.reachable(ADULT))["reachable"]


async def test_register_at_a_second_operator_is_a_conflict(far: Far) -> None:
    """A holder registered at Kivra cannot simply be registered at Billo: that is a switch."""
    await _registered_at_kivra(far)
    status, problem = await far.register(ADULT, token=OP_B)
    assert status == 409 and "changeServiceSupplier" in problem["detail"]


async def test_deregister_closes_the_account(far: Far) -> None:
    """The holding operator closes the account with the holder's signature; FaR then says no-mailbox."""
    await _registered_at_kivra(far)
    body = {"recipient": ADULT, "agreement_text": TEXT, "signatures": signed(TEXT, ADULT)}
    status, result = await far.call("POST", "/api/v1/deregistrations", OP_A, body)
    assert status == 200 and result["status"] == "Complete"
    assert (await far.reachable(ADULT))["reason"] == "no-mailbox"


# ----------------------------------------------------------------------------------------- switches


async def test_a_switch_is_pending_until_the_current_operator_completes_it(far: Far) -> None:
    """Billo asks with the holder's signature: pending (still reachable at Kivra); Kivra completes: at Billo."""
    await _registered_at_kivra(far)
    body = {"recipient": ADULT, "agreement_text": TEXT, "signatures": signed(TEXT, ADULT)}
    status, asked = await far.call("POST", "/api/v1/switches", OP_B, body)
    assert status == 201 and asked["switch"]["state"] == "pending"
    assert asked["switch"]["from_operator"] == KIVRA.id and asked["switch"]["to_operator"] == BILLO.id
    reach = await far.reachable(ADULT)
    assert reach["reachable"] and reach["operator"]["id"] == KIVRA.id and reach["pending"]
    assert (await far.call("POST", f"/api/v1/switches/{ADULT}/complete", OP_B))[0] == 403
    status, done = await far.call("POST", f"/api/v1/switches/{ADULT}/complete", OP_A)
    assert status == 200 and done["state"] == "switched" and done["switched_at"]
    reach = await far.reachable(ADULT)
    assert reach["operator"]["id"] == BILLO.id and not reach["pending"]
    status, problem = await far.call("DELETE", f"/api/v1/switches/{ADULT}", OP_B)
    assert status == 409 and "no longer be cancelled" in problem["detail"]
    actions = [(c["action"], c["actor"], (c["detail"] or {}).get("state")) for c in await far.audit(ADULT)]
    assert actions[:3] == [("switch", "kivra", "switched"), ("refused", "billo", None), ("switch", "billo", "pending")]


async def test_a_pending_switch_can_be_cancelled(far: Far) -> None:
    """Cancelled before the switch time, the holder stays at Kivra and Kivra cannot complete it any more."""
    await _registered_at_kivra(far)
    body = {"recipient": ADULT, "agreement_text": TEXT, "signatures": signed(TEXT, ADULT)}
    assert (await far.call("POST", "/api/v1/switches", OP_B, body))[0] == 201
    status, cancelled = await far.call("DELETE", f"/api/v1/switches/{ADULT}", OP_B)
    assert status == 200 and cancelled["state"] == "cancelled"
    assert (await far.call("POST", f"/api/v1/switches/{ADULT}/complete", OP_A))[0] == 404
    reach = await far.reachable(ADULT)
    assert reach["operator"]["id"] == KIVRA.id and not reach["pending"]


async def test_a_switch_to_the_same_operator_is_refused(far: Far) -> None:
    """Kivra asking to take over its own holder is a 409 with the reason, and no switch is recorded."""
    await _registered_at_kivra(far)
    body = {"recipient": ADULT, "agreement_text": TEXT, "signatures": signed(TEXT, ADULT)}
    status, problem = await far.call("POST", "/api/v1/switches", OP_A, body)
    assert status == 409 and "already" in problem["detail"]
    assert (await far.call("GET", f"/api/v1/switches/{ADULT}", OP_A))[0] == 404
    assert not (await far.reachable(ADULT))["pending"]


async def test_a_scheduled_switch_waits_for_its_time(far: Far) -> None:
    """A switch asked for a later time cannot be completed before it."""
    await _registered_at_kivra(far)
    later = (NOW + timedelta(days=1)).isoformat()
    body = {"recipient": ADULT, "agreement_text": TEXT, "signatures": signed(TEXT, ADULT), "switch_at": later}
    assert (await far.call("POST", "/api/v1/switches", OP_B, body))[0] == 201
    status, problem = await far.call("POST", f"/api/v1/switches/{ADULT}/complete", OP_A)
    assert status == 409 and "not due" in problem["detail"]


# -------------------------------------------------------------------------------------- preferences


async def test_preferences_are_stored_by_the_holding_operator_only(far: Far) -> None:
    """Accepted and refused senders come back as stored; a refused sender is told sender-refused; Billo is 403."""
    await _registered_at_kivra(far)
    body = {
        "accepted": [{"id": "162021005448", "name": "Skatteverket"}],
        "refused": ["2120000142"],
        "agreement_text": TEXT,
        "signatures": signed(TEXT, ADULT),
    }
    assert (await far.call("PUT", f"/api/v1/recipients/{ADULT}/preferences", OP_B, body))[0] == 403
    status, _result = await far.call("PUT", f"/api/v1/recipients/{ADULT}/preferences", OP_A, body)
    assert status == 200
    status, stored = await far.call("GET", f"/api/v1/recipients/{ADULT}/preferences", OP_A)
    assert stored["accepted"] == [{"id": "0007:2021005448", "name": "Skatteverket"}]
    assert stored["refused"] == ["0007:2120000142"]
    refused = (await far.service.is_reachable("2120000142", [ADULT]))[0]
    assert refused.reason is not None and refused.reason.value == "sender-refused"


# -------------------------------------------------------------------------------------- dormancy


async def test_dormant_after_the_period_and_reactivated_by_activity(far: Far, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without activity for the period the job marks the holder dormant (reason dormant); activity wakes them."""
    await _registered_at_kivra(far)
    holders = _holders(far)
    assert await holders.mark_dormant(after=timedelta(days=30)) == []
    monkeypatch.setattr(far.service, "now", lambda: NOW + timedelta(days=31))
    assert await holders.mark_dormant(after=timedelta(days=30)) == [ADULT]
    assert (await far.reachable(ADULT))["reason"] == "dormant"
    assert (await far.call("POST", "/api/v1/activity", OP_B, {"recipients": [ADULT]}))[0] == 403
    assert (await far.reachable(ADULT))["reason"] == "dormant"
    status, done = await far.call("POST", "/api/v1/activity", OP_A, {"recipients": [ADULT]})
    assert status == 200 and done["reactivated"] == [ADULT]
    assert (await far.reachable(ADULT))["reachable"]
    actions = [(c["action"], c["actor"]) for c in await far.audit(ADULT)][:3]
    assert actions == [("reactivate", "kivra"), ("refused", "billo"), ("dormant", "dormancy-job")]


def _holders(far: Far) -> HolderService:
    from far.holder_api import HOLDERS

    return far.client.app[HOLDERS]


# ----------------------------------------------------------------------------------------- minors


async def test_a_minor_is_refused_or_accepted_by_policy(far: Far) -> None:
    """Ten is too young; fourteen needs a guardian, who is offered as possible signer and whose consent is kept."""
    status, problem = await far.register(CHILD)
    assert status == 422 and problem["code"] == "minor" and "13" in problem["detail"]
    assert (await far.reachable(CHILD))["reason"] == "minor"  # the policy tells senders
    status, waiting = await far.register(TEEN)
    assert status == 202 and waiting["status"] == "Incomplete"
    assert [p["id"] for p in waiting["possible_signers"]] == [GUARDIAN]
    assert (await far.call("GET", f"/api/v1/registrations/{TEEN}", OP_A))[1]["signed_by"][0]["id"] == TEEN
    status, problem = await far.register(TEEN, TEEN, OTHER_ADULT)
    assert status == 422 and problem["code"] == "not-a-guardian"
    status, done = await far.register(TEEN, GUARDIAN)  # the guardian's signature completes the waiting request
    assert status == 201 and done["status"] == "Complete"
    assert {s["id"] for s in done["signed_by"]} == {TEEN, GUARDIAN}
    status, consent = await far.call("GET", f"/api/v1/recipients/{TEEN}/consent", OP_A)
    assert status == 200 and consent["guardians"][0]["id"] == GUARDIAN and consent["age"] == 14
    assert (await far.reachable(TEEN))["reachable"]


# -------------------------------------------------------------------------------------- companies


async def test_a_company_registers_when_its_signatory_rule_is_met(far: Far) -> None:
    """Two in joint signing: one signature waits (Incomplete), the second completes; a stranger is refused."""
    status, problem = await far.register(COMPANY, ADULT)
    assert status == 422 and problem["code"] == "not-a-signatory"
    status, waiting = await far.register(COMPANY, SIGNER_1)
    assert status == 202 and waiting["status"] == "Incomplete"
    assert {p["id"] for p in waiting["possible_signers"]} == {SIGNER_1, SIGNER_2}
    status, done = await far.register(COMPANY, SIGNER_2)
    assert status == 201 and {s["id"] for s in done["signed_by"]} == {SIGNER_1, SIGNER_2}
    assert (await far.reachable(COMPANY))["reachable"]


@pytest.mark.parametrize(
    ("form", "rule", "count"),
    [
        ("AB", "Firman tecknas var för sig av ledamöterna", 1),
        ("AB", "Firman tecknas två i förening av ledamöterna", 2),
        ("HB", "Firman tecknas tre i förening", 3),
        ("AB", "Firman tecknas av styrelsen", 4),
        ("EF", "Firman tecknas av innehavaren", 1),
        ("AB", "Firman tecknas av VD och en ledamot i förening", None),
        ("AB", "Styrelsen bestämmer", None),
    ],
)
def test_signatory_rules_are_read_or_reported_unsupported(form: str, rule: str, count: int | None) -> None:
    """The common firmateckning texts become a count of signatories; anything else is RulesNotSupported (None)."""
    people = tuple(Person(f"19700101000{i}", f"P{i}") for i in range(4))
    found = interpret_rule(CompanyRecord("5566778899", "X", form, rule, people))
    assert (None if found is None else found.count) == count
    if form == "EF":
        assert found is not None and found.persons == people[:1]


async def test_access_rights_follow_the_business_register_at_once(far: Far) -> None:
    """A signatory may do everything, a role holder what the role gives; a change of signatory counts at once."""
    status, rights = await far.call("GET", f"/api/v1/access-rights/{COMPANY}/{SIGNER_1}", OP_A)
    assert (
        status == 200
        and rights["grant_type"] == "AuthorizedSignatory"
        and "EditSettingsContact" in rights["activities"]
    )
    rights = (await far.call("GET", f"/api/v1/access-rights/{COMPANY}/{ADULT}", OP_A))[1]
    assert (rights["grant_type"], rights["activities"]) == ("AuthorizedRole", ["View"])
    status, signer = await far.call(
        "POST", "/api/v1/authorized-signers", OP_A, {"company": COMPANY, "person": SIGNER_1}
    )
    assert status == 200 and signer["authorized"] and signer["rule_supported"]
    await far.change_company(
        ORGNR,
        {
            "name": "Exempel AB",
            "form": "AB",
            "signatory_rule": "Firman tecknas var för sig av ledamöterna",
            "signatories": [{"id": SIGNER_2, "name": "Sven Styrelse"}, {"id": OTHER_ADULT, "name": "Nya Nisse"}],
        },
    )
    gone = (await far.call("GET", f"/api/v1/access-rights/{COMPANY}/{SIGNER_1}", OP_A))[1]
    assert gone["grant_type"] is None and gone["activities"] == []
    new = (await far.call("GET", f"/api/v1/access-rights/{COMPANY}/{OTHER_ADULT}", OP_A))[1]
    assert new["grant_type"] == "AuthorizedSignatory"


async def test_an_unreadable_signatory_rule_is_rules_not_supported(far: Far) -> None:
    """A rule FaR cannot read answers RulesNotSupported and registers nothing."""
    await far.change_company(
        ORGNR,
        {
            "name": "Exempel AB",
            "form": "AB",
            "signatory_rule": "Firman tecknas av VD och en ledamot i förening",
            "signatories": [{"id": SIGNER_1, "name": "Stina Styrelse"}, {"id": SIGNER_2, "name": "Sven Styrelse"}],
        },
    )
    status, result = await far.register(COMPANY, SIGNER_1, SIGNER_2)
    assert status == 202 and result["status"] == "RulesNotSupported"
    assert (await far.reachable(COMPANY))["reason"] == "no-mailbox"


# ---------------------------------------------------------------------------------------- eIDAS


async def test_an_eidas_holder_registers_and_is_reachable_but_recipient_v3_refuses_the_id(far: Far) -> None:
    """An eIDAS holder registers with REST and is reachable; v3 faults (1003) pointing to v4, which answers."""
    status, result = await far.register(EIDAS)
    assert status == 201, result
    assert (await far.reachable(EIDAS))["reachable"]
    v3 = envelope(
        f"<v3:isReachable><v3:senderOrgNr>162021005448</v3:senderOrgNr><v3:recipientId>{EIDAS}"
        "</v3:recipientId></v3:isReachable>",
        v3=V3,
    )
    response = await far.client.post("/Recipient/v3", data=v3)
    fault = body_child(await response.read())
    assert response.status == 500
    code = fault.findtext(".//{http://minameddelanden.gov.se/schema/Common/v3}ErrorCode")
    description = fault.findtext(".//{http://minameddelanden.gov.se/schema/Common/v3}Description") or ""
    assert code == "1003" and "eIDAS" in description and "v4" in description
    v4 = envelope(
        f"<v4:isReachable><v4:senderOrgNr>162021005448</v4:senderOrgNr><v4:recipientId>{EIDAS}"
        "</v4:recipientId></v4:isReachable>",
        v4="urn:accesspoint:far:schema:Recipient:v4",
    )
    response = await far.client.post("/Recipient/v4", data=v4, headers={"Authorization": f"Bearer {ADMIN}"})
    answer = body_child(await response.read())
    assert response.status == 200
    v4_schema().assertValid(answer)
    ns = "{urn:accesspoint:far:schema:Recipient:v4}"
    assert answer.findtext(f"{ns}return/{ns}AccountStatus/{ns}RecipientId") == EIDAS
    assert answer.findtext(f"{ns}return/{ns}AccountStatus/{ns}Type") == "Secure"


# ---------------------------------------------------------------------------------------- SOAP


def _signature_xml(text: str, identity: str) -> str:
    data = EID.sign(text, identity, at=NOW)
    return (
        f"<c:Signature>{data.signature}</c:Signature><c:Certificate>{data.certificate}</c:Certificate>"
        f"<c:Nonce>{data.nonce}</c:Nonce>"
    )


async def _soap(far: Far, body: str, token: str) -> tuple[int, Any]:
    request = envelope(body, v3=V3, v2=V2, r=R1, c=C1)
    response = await far.client.post("/Recipient/v3", data=request, headers={"Authorization": f"Bearer {token}"})
    child = body_child(await response.read())
    if response.status == 200:
        contract_schema().assertValid(child)
    return response.status, child


async def test_soap_register_switch_and_cancel_validate_against_the_contract(far: Far) -> None:
    """register, changeServiceSupplier, getPendingChangeServiceSupplier and its delete answer as the schema says."""
    register = (
        f"<v3:register><v3:accountRequest><r:Id>{ADULT}</r:Id><r:Type>Create</r:Type>"
        f"<r:AgreementText>{TEXT}</r:AgreementText><r:Timestamp>2026-11-30</r:Timestamp>"
        f"<r:ServiceSupplier>16{KIVRA.id}</r:ServiceSupplier></v3:accountRequest><v3:accountType>Secure</v3:accountType>"
        f"<v3:signature>{_signature_xml(TEXT, ADULT)}</v3:signature></v3:register>"
    )
    status, answer = await _soap(far, register, OP_B)
    assert status == 500 and answer.findtext(".//{*}ErrorCode") == "1005"
    status, answer = await _soap(far, register, OP_A)
    assert status == 200 and answer.findtext(f"{{{V3}}}return/{AUTH_NS}Status") == "Complete"
    assert (await far.reachable(ADULT))["operator"]["id"] == KIVRA.id
    change = (
        f"<v2:changeServiceSupplier><v2:Id>{ADULT}</v2:Id><v2:UserIdentity>{ADULT}</v2:UserIdentity>"
        f"<v2:ServiceSupplier>{BILLO.id}</v2:ServiceSupplier><v2:AgreementText>{TEXT}</v2:AgreementText>"
        f"<v2:SignatureData>{_signature_xml(TEXT, ADULT)}</v2:SignatureData></v2:changeServiceSupplier>"
    )
    status, answer = await _soap(far, change, OP_B)
    assert status == 200 and answer.findtext(f"{{{V2}}}signatureAuthorizationResult/{AUTH_NS}Status") == "Complete"
    who = f"<v2:Id>{ADULT}</v2:Id><v2:UserIdentity>{ADULT}</v2:UserIdentity>"
    get = f"<v2:getPendingChangeServiceSupplier>{who}</v2:getPendingChangeServiceSupplier>"
    status, answer = await _soap(far, get, OP_A)
    assert status == 200 and answer.findtext(f".//{{{R1}}}Id") == f"16{BILLO.id}"
    delete = (
        f"<v2:deletePendingChangeServiceSupplier><v2:organizationIdentity><v2:Id>{ADULT}</v2:Id>"
        f"<v2:UserIdentity>{ADULT}</v2:UserIdentity></v2:organizationIdentity></v2:deletePendingChangeServiceSupplier>"
    )
    status, answer = await _soap(far, delete, OP_A)
    assert status == 200
    assert (await far.reachable(ADULT))["operator"]["id"] == KIVRA.id


async def test_soap_preferences_and_authorized_signer(far: Far) -> None:
    """storeAccountPreferences and getAccountPreferences agree; isAuthorizedSigner reads the business register."""
    await _registered_at_kivra(far)
    store = (
        f"<v2:storeAccountPreferences><v2:Id>{ADULT}</v2:Id><v2:UserIdentity>{ADULT}</v2:UserIdentity>"
        f'<v2:preferences><r:Id>{ADULT}</r:Id><r:AcceptedSenders xmlns:s="http://minameddelanden.gov.se/schema/Sender">'
        "<s:Id>162021005448</s:Id><s:Name>Skatteverket</s:Name></r:AcceptedSenders></v2:preferences>"
        f"<v2:AgreementText>{TEXT}</v2:AgreementText><v2:SignatureData>{_signature_xml(TEXT, ADULT)}</v2:SignatureData>"
        "</v2:storeAccountPreferences>"
    )
    status, _answer = await _soap(far, store, OP_A)
    assert status == 200
    who = f"<v3:RecipientId>{ADULT}</v3:RecipientId><v3:UserIdentity>{ADULT}</v3:UserIdentity>"
    get = f"<v3:getAccountPreferences>{who}</v3:getAccountPreferences>"
    status, answer = await _soap(far, get, OP_A)
    assert status == 200 and answer.findtext(".//{http://minameddelanden.gov.se/schema/Sender}Name") == "Skatteverket"
    who = f"<v2:CompanyId>{COMPANY}</v2:CompanyId><v2:UserIdentity>{SIGNER_2}</v2:UserIdentity>"
    ask = f"<v2:isAuthorizedSigner>{who}</v2:isAuthorizedSigner>"
    status, answer = await _soap(far, ask, OP_A)
    assert status == 200 and answer.findtext(f"{{{V2}}}return/{{{V2}}}isAccountAuthorizedSigner") == "true"
    assert answer.findtext(f"{{{V2}}}return/{{{V2}}}CompanyName") == "Exempel AB"


async def test_account_status_of_a_registered_holder(far: Far) -> None:
    """A registered holder is a secure account at its operator with its registration time."""
    await _registered_at_kivra(far)
    stored = await far.service.get_recipient(ADULT)
    assert stored.status is AccountStatus.SECURE and stored.last_registration == NOW


# ----------------------------------------------------------------------------- TLS client certificates


async def test_a_tls_client_certificate_identifies_its_operator(tmp_path: Path) -> None:
    """Over mutual TLS, Kivra's client certificate changes Kivra's record and is refused (403) on Billo's."""
    import ssl

    import aiohttp
    from cryptography.hazmat.primitives.serialization import Encoding

    from accesspoint.servicekit import server
    from accesspoint.servicekit.tls import TlsSettings, client_context, server_context
    from accesspoint.testing.pki import make_ca, tls_certificate
    from accesspoint.testing.services import free_port
    from far.access import ClientCertificate
    from far.app import create_app
    from tests.test_far_support import make_service

    ca = make_ca("FaR TLS CA")
    served = tls_certificate(ca, "far", tmp_path / "server")
    kivra = tls_certificate(ca, "kivra-client", tmp_path / "kivra")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.certificate.public_bytes(Encoding.PEM))
    tls = TlsSettings(Path(served["certificate"]), Path(served["key"]), client_ca=ca_file)
    client = ClientCertificate.load("kivra", Path(kivra["certificate"]), scopes("read", f"write:operator={KIVRA.id}"))
    service = await make_service(tmp_path / "far.db")
    app = create_app(settings(clients=(client,)), service=service)
    port = free_port()
    running = await server.start([server.Listener(app, "127.0.0.1", port, server_context(tls))])
    try:
        context = client_context(ca_file, TlsSettings(Path(kivra["certificate"]), Path(kivra["key"])))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            base = f"https://127.0.0.1:{port}/api/v1/operators"
            own = {"name": "Kivra AB", "party_id": KIVRA.party_id, "endpoint": "https://as4.kivra.example/new"}
            async with session.put(f"{base}/{KIVRA.id}", json=own) as response:
                assert response.status == 200
            other = {"name": "Billo", "party_id": BILLO.party_id, "endpoint": "https://evil.example/as4"}
            async with session.put(f"{base}/{BILLO.id}", json=other) as response:
                assert response.status == 403
        assert (await service.get_operator(KIVRA.id)).endpoint == own["endpoint"]
        assert (await service.get_operator(BILLO.id)).endpoint is None
        assert (await service.audit_trail(BILLO.id))[0]["actor"] == "tls:kivra"
        plain = client_context(ca_file)
        plain.check_hostname = True
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=plain)) as session:
            with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
                async with session.put(f"https://127.0.0.1:{port}/api/v1/operators/{KIVRA.id}", json=own) as response:
                    await response.read()
    finally:
        await running.stop()
        await service.engine.dispose()


def test_holder_settings_are_read_and_every_mistake_named(tmp_path: Path) -> None:
    """Operator tokens, client certificates, e-ID anchors, registers, minors and dormancy load; mistakes are named."""
    from accesspoint.servicekit.settings import SettingsError
    from far.settings import load_settings

    (tmp_path / "eid-ca.pem").write_bytes(EID.pem)
    good = tmp_path / "far.toml"
    good.write_text(
        '[far]\n[[far.tokens]]\nname = "kivra"\ntoken = "kivra-token-0123456789"\n'
        f'scopes = ["read", "write:operator={KIVRA.id}"]\n'
        '[far.eid]\nanchors = ["eid-ca.pem"]\nmax_age = "5m"\n'
        '[far.registers]\nurl = "http://127.0.0.1:8490"\n'
        '[far.minors]\nown_mailbox_age = 15\nconsent_age = 12\nsenders_told = "minor"\n'
        '[far.dormancy]\nafter = "365d"\ninterval = "10m"\n'
    )
    loaded = load_settings(good)
    assert loaded.tokens[0].allows("write", operator=KIVRA.id) and not loaded.tokens[0].allows("write")
    assert loaded.eid_anchors == (EID.certificate,) and loaded.eid_max_age == timedelta(minutes=5)
    assert loaded.minors.consent_age == 12 and loaded.dormancy is not None
    assert loaded.dormancy.after == timedelta(days=365)
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[far]\n[far.eid]\nanchors = ["missing.pem"]\n[far.minors]\nown_mailbox_age = 12\nconsent_age = 14\n'
        'senders_told = "everyone"\n[[far.clients]]\nname = "x"\ncertificate = "nowhere.pem"\nscopes = ["delete"]\n'
    )
    with pytest.raises(SettingsError) as caught:
        load_settings(bad)
    fields = {problem.split(": ")[1] for problem in caught.value.problems}
    assert {"far.eid.anchors[0]", "far.minors.consent_age", "far.minors.senders_told"} <= fields
    assert any(field.startswith("far.clients[0]") for field in fields)
