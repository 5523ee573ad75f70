"""Operators' searches over the store (accesspoint/store/search.py) on SQLite and PostgreSQL: pages newest first in
keyset order, counts stopped at the cap, filters; on SQLite, the common filters read through their indexes."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Select, select
from sqlalchemy.dialects import sqlite

from accesspoint.store import MessageInfo, MessageState, MessageStore, NewPayload, sqlite_url, upgrade_to_head
from accesspoint.store.search import M, MessageQuery, MessageSearch

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PARTNERS = ("0007:111", "0007:222")
S = MessageState


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
async def store(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[MessageStore]:
    """A store on a migrated database of each backend, with eight outgoing messages a minute apart, to the two
    partners in turn."""
    opened = await MessageStore.open(migrated_database_url, tmp_path / "files", instance="a", migrate=False)
    for number in range(8):
        info = MessageInfo(f"m{number}@ap", from_party="0007:000", to_party=PARTNERS[number % 2])
        payload = NewPayload("cid:part-1", "application/xml", _chunks(b"<doc/>"))
        await opened.submit(info, [payload], now=T0 + timedelta(minutes=number))
    yield opened
    await opened.close()


async def test_pages_come_newest_first_and_the_cursor_walks_every_match_once(store: MessageStore) -> None:
    """Pages of three, newest first, joined by their cursors, list each of the eight messages exactly once."""
    search = MessageSearch(store.db)
    seen: list[str] = []
    page = await search.page(MessageQuery(), limit=3)
    while True:
        seen += [message.message_id for message in page.messages]
        if page.next is None:
            break
        page = await search.page(MessageQuery(), limit=3, after=page.next)
    assert seen == [f"m{number}@ap" for number in reversed(range(8))]


async def test_the_count_stops_at_the_cap_and_says_so(store: MessageStore) -> None:
    """Eight matches counted with a cap of five is five and capped; with a cap of fifty, eight and exact."""
    search = MessageSearch(store.db)
    capped = await search.page(MessageQuery(), cap=5)
    assert (capped.count, capped.capped) == (5, True)
    exact = await search.page(MessageQuery(), cap=50)
    assert (exact.count, exact.capped) == (8, False)


async def test_a_partner_and_a_window_narrow_the_search(store: MessageStore) -> None:
    """A partner (From or To) within a window finds its messages of that window only."""
    search = MessageSearch(store.db)
    window = MessageQuery(partner=PARTNERS[1], since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=6))
    page = await search.page(window)
    assert [message.message_id for message in page.messages] == ["m5@ap", "m3@ap"]
    assert (await search.page(MessageQuery(partner="0007:000"))).count == 8


async def test_the_error_log_merges_the_errored_states_latest_move_first_and_the_queues_count_each_state(
    store: MessageStore,
) -> None:
    """Failed, parked and retrying messages come latest move first up to the limit, filtered by code; the queue
    figures count each waiting state and name the oldest pending message."""
    moves = [("m0@ap", S.FAILED, "EBMS:0301"), ("m1@ap", S.AWAITING_RECEIPT, "EBMS:0005"),
             ("m2@ap", S.FAILED, "EBMS:0004"), ("m3@ap", S.DEAD_LETTER, "EBMS:0301")]  # fmt: skip
    for minute, (message_id, target, code) in enumerate(moves, start=10):
        sending = await store.claim(message_id, now=T0 + timedelta(minutes=minute), lease=timedelta(seconds=30))
        assert sending is not None
        later = T0 + timedelta(minutes=minute)
        first = S.FAILED if target is S.DEAD_LETTER else target
        moved = await store.transition(sending, first, now=later, error=(code, "why"), next_attempt_at=later)
        if target is S.DEAD_LETTER:
            assert moved is not None
            moved = await store.transition(moved, target, now=later)
        assert moved is not None and moved.state is target
    search = MessageSearch(store.db)
    found = await search.errors(since=T0, limit=3)
    assert [message.message_id for message in found] == ["m3@ap", "m2@ap", "m1@ap"]
    assert [m.message_id for m in await search.errors(since=T0, code="EBMS:0301")] == ["m3@ap", "m0@ap"]
    queues = await search.queues()
    assert queues.by_state == {"submitted": 4, "sending": 0, "awaiting_receipt": 1, "dead_letter": 1}
    assert queues.oldest_pending == T0 + timedelta(minutes=1)  # m1, awaiting its receipt


def _plan(database: Path, statement: Select[tuple[int]]) -> str:
    text = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with sqlite3.connect(database) as connection:
        return " | ".join(row[-1] for row in connection.execute("EXPLAIN QUERY PLAN " + text))


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (MessageQuery(since=T0), "ix_messages_created_at"),
        (MessageQuery(since=T0, states=(MessageState.FAILED,)), "ix_messages_state_created_at"),
        (MessageQuery(since=T0, partner=PARTNERS[0]), "ix_messages_from_party_created_at"),
        (MessageQuery(since=T0, partner=PARTNERS[0]), "ix_messages_to_party_created_at"),
    ],
)
async def test_a_window_a_state_or_a_partner_is_read_through_its_index_on_sqlite(
    tmp_path: Path, query: MessageQuery, index: str
) -> None:
    """On a migrated SQLite store (no statistics, as in production) a search in a window, by state or by partner
    reads through its index, never a scan of all messages."""
    database = tmp_path / "store.db"
    await upgrade_to_head(sqlite_url(database))
    statement = select(M.c.id).where(*query.conditions()).order_by(M.c.created_at.desc(), M.c.id.desc()).limit(51)
    plan = _plan(database, statement)
    assert index in plan and "SCAN messages" not in plan, plan
