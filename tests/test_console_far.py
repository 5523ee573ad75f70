"""The console's FaR pages over FaR's API (FaR served in this event loop, no browser): each operator's approval,
an admin's decision sent with the console's approve-scoped token and audited in both places, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from far.service import OperatorStatus
from tests.console_support import (
    ADMIN,
    VIEWER,
    ConsoleClient,
    RunningConsole,
    RunningFar,
    start_console,
    start_far,
    write_settings,
)
from tests.inmemory import Pair
from tests.test_far_support import BILLO, KIVRA

pytestmark = pytest.mark.timeout(90)

Running = tuple[RunningFar, RunningConsole, ConsoleClient]
KIVRA_PAGE = f"/far/operators/{KIVRA.id}"
DECIDE = f"{KIVRA_PAGE}/approval"


async def _running(pair: Pair, folder: Path, *, approve: bool) -> AsyncIterator[Running]:
    far = await start_far(folder)
    await pair.se.start()
    console = await start_console(pair.se, write_settings(folder, far=far.console_settings(approve=approve)))
    client = ConsoleClient(console.base)
    try:
        yield far, console, client
    finally:
        await client.close()
        await console.server.close()
        await far.close()


@pytest.fixture
async def running(pair_factory: Callable[..., Pair], tmp_path: Path) -> AsyncIterator[Running]:
    """Sweden with a console whose FaR settings carry a token with the approve scope."""
    async for running in _running(pair_factory(), tmp_path, approve=True):
        yield running


@pytest.fixture
async def read_only(pair_factory: Callable[..., Pair], tmp_path: Path) -> AsyncIterator[Running]:
    """The same console with FaR's read token only."""
    async for running in _running(pair_factory(), tmp_path, approve=False):
        yield running


async def test_an_admin_suspends_an_operator_with_a_reason_audited_in_the_console_and_in_far(
    running: Running,
) -> None:
    """The FaR page lists each operator's approval; an admin's suspension reaches FaR as the console for that admin,
    with its reason, and both audits record it."""
    far, console, client = running
    await client.login(ADMIN)
    status, page = await client.get("/far")
    assert status == 200 and f'id="operator-{KIVRA.id}"' in page and f'id="operator-{BILLO.id}"' in page
    assert page.count('class="approval-approved"') == 2

    status, page = await client.get(KIVRA_PAGE)
    assert status == 200 and 'id="approval-form"' in page and ">approved</span>" in page
    status, _, location = await client.post(DECIDE, {"status": "suspended", "reason": "annual audit overdue"})
    assert status == 303 and "note=operator+suspended" in location

    approval = await far.service.get_approval(KIVRA.id)
    assert approval.status is OperatorStatus.SUSPENDED and approval.reason == "annual audit overdue"
    assert approval.decided_by == "console-approver for ada"
    (decision, *_) = await far.service.audit_trail(KIVRA.id)
    assert decision["action"] == "suspend" and decision["actor"] == "console-approver for ada"
    (entry,) = await console.console.audit.latest(action="operator-approval")
    assert (entry.actor, entry.outcome, entry.target) == (ADMIN[0], "done", f"operator {KIVRA.id}")
    assert entry.detail["status"] == "suspended" and entry.detail["far_audit_id"] == approval.audit_id

    status, page = await client.get(KIVRA_PAGE)
    assert 'id="approval-status">suspended<' in page and "console-approver for ada" in page
    assert "annual audit overdue" in page and 'id="operator-audit"' in page


async def test_a_refused_decision_changes_nothing_and_says_why(running: Running) -> None:
    """A suspension without a reason is refused by FaR: nothing changes, the admin reads FaR's reason, the console
    audits the refusal; a viewer's decision and one without the session's CSRF token are refused before FaR."""
    far, console, client = running
    await client.login(ADMIN)
    await client.get(KIVRA_PAGE)
    status, _, location = await client.post(DECIDE, {"status": "suspended", "reason": ""})
    assert status == 303 and "note=refused" in location and "needs+a+reason" in location
    status, page = await client.get(location.removeprefix(console.base))
    assert 'id="refusal"' in page and "needs a reason" in page
    (entry,) = await console.console.audit.latest(action="operator-approval")
    assert entry.outcome == "refused" and "FaR answered 400" in entry.detail["why"]

    assert (await client.post(DECIDE, {"status": "revoked", "reason": "x"}, csrf="forged"))[0] == 403
    viewer = ConsoleClient(console.base)
    try:
        await viewer.login(VIEWER)
        status, page = await viewer.get(KIVRA_PAGE)
        assert status == 200 and ">approved</span>" in page and 'id="approval-form"' not in page
        assert (await viewer.post(DECIDE, {"status": "revoked", "reason": "not mine to decide"}))[0] == 403
    finally:
        await viewer.close()
    assert (await far.service.get_approval(KIVRA.id)).status is OperatorStatus.APPROVED
    assert [e.actor for e in await console.console.audit.latest(action="forbidden")] == [VIEWER[0]]


async def test_without_an_approval_token_the_console_shows_the_approval_read_only(read_only: Running) -> None:
    """A console holding only FaR's read token shows the approval without a form and refuses a decision, audited."""
    far, console, client = read_only
    await far.service.decide_operator(KIVRA.id, OperatorStatus.SUSPENDED, reason="under review", actor="pts")
    await client.login(ADMIN)
    status, page = await client.get(KIVRA_PAGE)
    assert status == 200 and 'id="approval-status">suspended<' in page and "under review" in page
    assert 'id="approval-read-only"' in page and 'id="approval-form"' not in page
    status, _, _ = await client.post(f"/far/operators/{quote(KIVRA.id)}/approval", {"status": "approved"})
    assert status == 403
    assert (await far.service.get_approval(KIVRA.id)).status is OperatorStatus.SUSPENDED
    (entry,) = await console.console.audit.latest(action="operator-approval")
    assert entry.outcome == "refused" and "approve scope" in entry.detail["why"]
