"""The reference operator's holder API against a real FaR over HTTP: opening a mailbox with the holder's e-ID
signature writes FaR, bad assertions never reach it, minors and companies follow FaR's policy and the business
register, and a company mailbox is read by whoever may sign for the company now (every read audited)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from operators.holders import login_text
from operators.service import Operator
from tests.test_far_holders_support import (
    ADULT,
    CHILD,
    COMPANY,
    EID,
    GUARDIAN,
    ORGNR,
    OTHER_ADULT,
    SIGNER_1,
    SIGNER_2,
    TEEN,
    TEXT,
    running_far,
)
from tests.test_far_support import KIVRA, NOW
from tests.test_operators_holders_support import NAME, OPERATOR_ID, Desk, operator_settings

Client = Callable[..., Awaitable[TestClient[Any, Any]]]
Server = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def desk(aiohttp_client: Client, aiohttp_server: Server, tmp_path: Path) -> AsyncIterator[Desk]:
    """FaR (Kivra's token for the operator) and Kivra's operator with the test e-ID CA, clock at FaR's now."""
    async for far in running_far(aiohttp_client, aiohttp_server, tmp_path):
        operator = Operator(operator_settings(far, tmp_path), clock=lambda: NOW)
        yield Desk(far, await aiohttp_client(operator.application()), operator)


async def test_opening_a_mailbox_registers_the_holder_in_far(desk: Desk) -> None:
    """A holder's signed agreement opens the mailbox here and registers them at this operator in FaR."""
    status, body = await desk.open(ADULT)
    assert status == 201 and body["state"] == "active"
    assert (await desk.far.reachable(ADULT))["operator"]["id"] == KIVRA.id
    assert await desk.operator.store.has_mailbox(ADULT)
    trail = (await desk.call("GET", f"/api/v1/holders/{ADULT}/audit", token=await desk.login(ADULT)))[1]
    assert [a["action"] for a in trail["audit"]][-1] == "open"


@pytest.mark.parametrize(("sign", "code"), [({"expired": True}, "expired"), ({"age": timedelta(hours=2)}, "expired")])
async def test_a_bad_assertion_is_refused_before_far_hears_of_it(desk: Desk, sign: dict[str, Any], code: str) -> None:
    """An expired certificate or an old assertion is 422 with its code; FaR and the operator store nothing."""
    status, body = await desk.open(ADULT, **sign)
    assert status == 422 and body["code"] == code
    assert (await desk.far.reachable(ADULT))["reason"] == "no-mailbox"
    assert await desk.operator.store.state(ADULT) is None
    malformed = {"holder": ADULT, "agreement_text": TEXT, "signatures": [{"signature": "x", "certificate": "y"}]}
    status, body = await desk.call("POST", "/api/v1/holders", malformed)
    assert status == 422 and body["code"] == "malformed"


async def test_far_refusals_are_passed_on_unchanged(desk: Desk) -> None:
    """A wrong check digit is FaR's 400, a ten-year-old FaR's 422 minor: passed on, no mailbox opened."""
    wrong = ADULT[:-1] + str((int(ADULT[-1]) + 1) % 10)
    status, body = await desk.open(wrong, ADULT)
    assert status == 400 and "check digit" in body["detail"]
    status, body = await desk.open(CHILD)
    assert status == 422 and body["code"] == "minor"
    assert await desk.operator.store.state(CHILD) is None


async def test_a_minor_opens_with_a_guardians_consent(desk: Desk) -> None:
    """Fourteen: pending until the guardian signs, then active."""
    status, body = await desk.open(TEEN)
    assert status == 202 and body["state"] == "pending"
    assert not await desk.operator.store.has_mailbox(TEEN)
    status, body = await desk.open(TEEN, TEEN, GUARDIAN)
    assert status == 201 and body["state"] == "active"


async def test_a_holder_reads_only_their_own_mailbox(desk: Desk) -> None:
    """A session reads its person's mailbox; another person's is 403."""
    assert (await desk.open(ADULT))[0] == 201
    assert (await desk.open(OTHER_ADULT))[0] == 201
    token = await desk.login(ADULT)
    assert (await desk.call("GET", f"/api/v1/mailboxes/{ADULT}/messages", token=token))[0] == 200
    assert (await desk.call("GET", f"/api/v1/mailboxes/{OTHER_ADULT}/messages", token=token))[0] == 403
    text = login_text(OPERATOR_ID, NAME)
    replay = EID.sign(text, ADULT, at=NOW).to_json()
    assert (await desk.call("POST", "/api/v1/sessions", {"agreement_text": text, "signatures": [replay]}))[0] == 201
    status, body = await desk.call("POST", "/api/v1/sessions", {"agreement_text": text, "signatures": [replay]})
    assert status == 422 and body["code"] == "replayed"


async def test_a_signatory_change_moves_access_to_the_company_mailbox(desk: Desk) -> None:
    """The signatories open the company mailbox; a signatory reads it (audited with the person); after a change
    of signatory the former one is refused at once and the new one reads and edits the contact details."""
    status, body = await desk.open(COMPANY, SIGNER_1, SIGNER_2)
    assert status == 201, body
    former, newcomer = await desk.login(SIGNER_1), await desk.login(OTHER_ADULT)
    assert (await desk.call("GET", f"/api/v1/mailboxes/{COMPANY}/messages", token=former))[0] == 200
    assert (await desk.call("GET", f"/api/v1/mailboxes/{COMPANY}/messages", token=newcomer))[0] == 403
    contact = {"email": "stina@exempel.se"}
    assert (await desk.call("PUT", f"/api/v1/holders/{COMPANY}/contacts", contact, former))[0] == 200
    await desk.far.change_company(
        ORGNR,
        {
            "name": "Exempel AB",
            "form": "AB",
            "signatory_rule": "Firman tecknas var för sig av ledamöterna",
            "signatories": [{"id": SIGNER_2, "name": "Sven Styrelse"}, {"id": OTHER_ADULT, "name": "Nya Nisse"}],
        },
    )
    assert (await desk.call("GET", f"/api/v1/mailboxes/{COMPANY}/messages", token=former))[0] == 403
    assert (await desk.call("PUT", f"/api/v1/holders/{COMPANY}/contacts", contact, former))[0] == 403
    assert (await desk.call("GET", f"/api/v1/mailboxes/{COMPANY}/messages", token=newcomer))[0] == 200
    status, _body = await desk.call(
        "PUT", f"/api/v1/holders/{COMPANY}/contacts", {"email": "nisse@exempel.se"}, newcomer
    )
    assert status == 200
    reads = [(a["actor"], a["action"]) for a in await desk.operator.store.audit_trail(COMPANY) if a["action"] == "read"]
    assert reads == [(f"person:{OTHER_ADULT}", "read"), (f"person:{SIGNER_1}", "read")]


async def test_closing_a_mailbox_deregisters_the_holder(desk: Desk) -> None:
    """Closing with the holder's signature deregisters them in FaR and the mailbox takes no more mail."""
    assert (await desk.open(ADULT))[0] == 201
    signatures = [EID.sign(TEXT, ADULT, at=NOW).to_json()]
    status, body = await desk.call(
        "DELETE", f"/api/v1/holders/{ADULT}", {"agreement_text": TEXT, "signatures": signatures}
    )
    assert status == 200 and body["state"] == "closed"
    assert (await desk.far.reachable(ADULT))["reason"] == "no-mailbox"
    assert not await desk.operator.store.has_mailbox(ADULT)


async def test_sender_preferences_go_to_far(desk: Desk) -> None:
    """A refused sender set at the operator is refused in FaR's answer to that sender."""
    assert (await desk.open(ADULT))[0] == 201
    body = {
        "accepted": [],
        "refused": ["2120000142"],
        "agreement_text": TEXT,
        "signatures": [EID.sign(TEXT, ADULT, at=NOW).to_json()],
    }
    assert (await desk.call("PUT", f"/api/v1/holders/{ADULT}/preferences", body))[0] == 200
    refused = (await desk.far.service.is_reachable("2120000142", [ADULT]))[0]
    assert refused.reason is not None and refused.reason.value == "sender-refused"
