"""The mailing tables on SQLite: rows claimed once, a stop's claims found again, outcomes settled, completion once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from accesspoint.store.db import sqlite_url, upgrade_to_head
from accesspoint.store.mailings import DuplicateMailing, MailingStore, Outcome, RowState, letter_id

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SENDER = "0007:2021005448"


@pytest.fixture
async def url(tmp_path: Path) -> str:
    """A store's database with the message tables (the mailing counts read them) and no mailing yet."""
    url = sqlite_url(tmp_path / "ap.db")
    await upgrade_to_head(url)
    return url


@pytest.fixture
async def store(url: str) -> AsyncIterator[MailingStore]:
    store = await MailingStore.open(url)
    yield store
    await store.close()


async def _mailing(store: MailingStore, mailing_id: str, states: list[RowState]) -> None:
    await store.create(mailing_id, SENDER, {"action": "a", "rate": 10}, now=NOW)
    rows = [
        {"seq": seq, "line": seq + 2, "recipient": f"19780202{seq:04d}", "state": state.value}
        for seq, state in enumerate(states)
    ]
    await store.add_rows(mailing_id, rows)
    await store.start(mailing_id, len(rows), now=NOW)


async def test_reachable_rows_are_claimed_once_and_a_stops_claims_are_found_after_a_restart(
    store: MailingStore, url: str
) -> None:
    """Claims take reachable rows in order and never again; reopened, the store still lists them as sending."""
    states = [RowState.REACHABLE] * 5 + [RowState.REFUSED, RowState.INVALID]
    await _mailing(store, "m1", states)
    first = await store.claim("m1", 3)
    second = await store.claim("m1", 3)
    assert [r.seq for r in first] == [0, 1, 2] and [r.seq for r in second] == [3, 4]
    assert await store.claim("m1", 3) == []
    await store.close()  # the process stops between the claim and the letters

    again = await MailingStore.open(url)
    try:
        assert [r.seq for r in await again.rows("m1", state=RowState.SENDING)] == [0, 1, 2, 3, 4]
        assert await again.claim("m1", 10) == []  # still not claimable: the start settles them by lookup
        counts = await again.counts("m1")
        assert counts["recipients"] == {"sending": 5, "refused": 1, "invalid": 1}
        assert await again.running() == ["m1"]
    finally:
        await again.close()


async def test_settled_rows_keep_their_outcome_and_a_mailing_completes_once(store: MailingStore) -> None:
    """Queued rows name their letter, refused ones FaR's reason; completed once, then no longer running."""
    await _mailing(store, "m2", [RowState.PENDING, RowState.PENDING])
    await store.settle(
        "m2",
        [
            Outcome(0, RowState.QUEUED, message_id=letter_id("m2", 0)),
            Outcome(1, RowState.REFUSED, reason="no-mailbox", detail="has no digital mailbox"),
        ],
        now=NOW,
    )
    rows = {r.seq: r for r in await store.rows("m2")}
    assert (rows[0].state, rows[0].message_id) == (RowState.QUEUED, letter_id("m2", 0))
    assert (rows[1].state, rows[1].reason, rows[1].message_id) == (RowState.REFUSED, "no-mailbox", None)
    assert await store.complete("m2", now=NOW) is True
    assert await store.complete("m2", now=NOW) is False
    assert await store.running() == []
    with pytest.raises(DuplicateMailing):
        await store.create("m2", SENDER, {}, now=NOW)


async def test_a_mailings_rows_are_its_own(store: MailingStore) -> None:
    """Two mailings, one a prefix of the other's id: claims and counts never cross."""
    await _mailing(store, "m1", [RowState.REACHABLE])
    await _mailing(store, "m10", [RowState.REACHABLE, RowState.REACHABLE])
    assert [r.seq for r in await store.claim("m1", 10)] == [0]
    assert (await store.counts("m10"))["recipients"] == {"reachable": 2}


async def test_an_outcome_without_an_operator_keeps_the_one_the_check_noted(store: MailingStore) -> None:
    """FaR's check notes a row's operator; claiming and queueing without one keep it, and a refusal has none."""
    target = {"id": "5567212431", "endpoint": "https://kivra.example/as4"}
    await _mailing(store, "m3", [RowState.PENDING, RowState.PENDING])
    await store.settle(
        "m3", [Outcome(0, RowState.REACHABLE, operator=target), Outcome(1, RowState.REFUSED, reason="dormant")], now=NOW
    )
    assert [r.operator for r in await store.claim("m3", 10)] == [target]
    await store.settle("m3", [Outcome(0, RowState.QUEUED, message_id=letter_id("m3", 0))], now=NOW)
    rows = await store.rows("m3")
    assert [(r.state, r.operator, r.payloads, r.properties) for r in rows] == [
        (RowState.QUEUED, target, None, None),
        (RowState.REFUSED, None, None, None),
    ]
