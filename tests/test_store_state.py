"""State a restart must find, in the store on SQLite and PostgreSQL: the transactional outbox and its dispatcher,
route targets and idempotency keys written in the message's transaction, and the database reported unavailable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from accesspoint.store import (
    Database,
    Direction,
    DuplicateMessage,
    MessageInfo,
    MessageState,
    MessageStore,
    NewPayload,
    Retention,
    StoredMessage,
    StoreUnavailable,
)
from accesspoint.store import outbox as outbox_module
from accesspoint.store.clock import ManualClock
from accesspoint.store.idempotency import (
    HEADER,
    MESSAGE_ID,
    IdempotencyHook,
    IdempotencyKeys,
    fingerprint,
    stored_key,
)
from accesspoint.store.outbox import (
    DELIVERED,
    DROPPED,
    DeliveryFailed,
    Dispatcher,
    EventHook,
    NewEvent,
    Outbox,
    OutboxEvent,
)
from accesspoint.store.routes import RouteHook, RouteTargets, StoredRoute
from accesspoint.testing import services

S = MessageState
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
HOOK = "webhook:0123456789abcdef"


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    """One chunk."""
    yield data


def payload(data: bytes = b"<doc/>") -> NewPayload:
    """One XML payload."""
    return NewPayload("cid:part-1", "application/xml", chunks(data))


@pytest.fixture
async def store(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[MessageStore]:
    """A store on a migrated database of each backend, as instance a."""
    opened = await MessageStore.open(migrated_database_url, tmp_path / "files", instance="a", migrate=False)
    yield opened
    await opened.close()


@pytest.fixture
async def other_db(store: MessageStore, migrated_database_url: str) -> AsyncIterator[Database]:
    """A second instance's connections to the same database."""
    database = Database(migrated_database_url)
    yield database
    await database.dispose()


def state_event(kind: str, sinks: tuple[str, ...] = (HOOK,)) -> Callable[[StoredMessage], list[NewEvent]]:
    """Events carrying the message's id and state as the move left it."""
    return lambda message: [NewEvent(kind, {"message_id": message.message_id, "state": str(message.state)}, sinks)]


class Boom(Exception):
    """A hook that fails."""


class FailingHook:
    """A TransactionHook whose rows cannot be made."""

    def rows(self, message: StoredMessage) -> list[Any]:
        raise Boom(message.message_id)

    def committed(self) -> None:
        raise AssertionError("never committed")


# --- the outbox ------------------------------------------------------------------------------------------


async def test_events_are_written_with_the_move_that_causes_them_and_never_without_it(store: MessageStore) -> None:
    """A move writes its events in its transaction; a move that loses its race or rolls back writes none."""
    outbox = Outbox(store.db, instance="a")
    woken: list[list[str]] = []
    await store.submit(
        MessageInfo("m1@ap"),
        [payload()],
        now=T0,
        hooks=[EventHook(state_event("submitted"), now=T0, wake=woken.append)],
    )
    claimed = await store.claim("m1@ap", now=T0, lease=LEASE)
    assert claimed is not None
    delivered = await store.transition(
        claimed, S.DELIVERED, now=T0, hooks=[EventHook(state_event("receipt"), now=T0, wake=woken.append)]
    )
    assert delivered is not None
    # A stale snapshot loses the compare-and-set: no move, no event, nobody woken.
    stale = await store.transition(claimed, S.FAILED, now=T0, hooks=[EventHook(state_event("error"), now=T0)])
    assert stale is None
    # A hook that fails stores nothing: neither the message nor the events of the hooks before it.
    with pytest.raises(Boom):
        await store.submit(
            MessageInfo("m2@ap"),
            [payload()],
            now=T0,
            hooks=[EventHook(state_event("submitted"), now=T0), FailingHook()],
        )
    assert await store.get(Direction.OUT, "m2@ap") is None
    rows = await outbox.events(HOOK)
    assert [(json.loads(e.body)["event"], json.loads(e.body)["data"]) for e, _ in rows] == [
        ("submitted", {"message_id": "m1@ap", "state": "submitted"}),
        ("receipt", {"message_id": "m1@ap", "state": "delivered"}),
    ]
    assert all(json.loads(e.body)["id"] == e.event_id for e, _ in rows)
    assert woken == [[HOOK], [HOOK]]


async def test_one_instance_at_a_time_holds_a_sink_and_an_expired_lease_passes_on(
    store: MessageStore, other_db: Database
) -> None:
    """The head's lease keeps a second instance off the sink until it runs out; then it takes the same events."""
    one, two = Outbox(store.db, instance="a"), Outbox(other_db, instance="b")
    ids = await one.add([NewEvent("e", {"n": n}, (HOOK, "other-sink")) for n in range(3)], now=T0)
    first = await one.claim(HOOK, now=T0, lease=LEASE)
    assert [e.event_id for e in first] == ids and {e.lease_owner for e in first} == {"a"}
    assert await two.claim(HOOK, now=T0 + LEASE - timedelta(seconds=1), lease=LEASE) == []
    assert [e.event_id for e in await two.claim("other-sink", now=T0, lease=LEASE)] == ids  # sinks are independent
    assert await one.delivered(first[0], now=T0)
    # a dies holding the other two; after the lease b delivers them again, with the same event ids.
    later = T0 + LEASE + timedelta(seconds=1)
    taken = await two.claim(HOOK, now=later, lease=LEASE)
    assert [e.event_id for e in taken] == ids[1:]
    assert not await one.delivered(first[1], now=later), "a's lease was taken over: it settles nothing"
    assert await two.delivered(taken[0], now=later) and await two.delivered(taken[1], now=later)
    assert await one.pending(HOOK) == 0 and await one.pending() == 3


async def test_two_instances_claiming_one_sink_at_once_never_both_win(store: MessageStore, other_db: Database) -> None:
    """Concurrent claims of a sink's head give it to exactly one instance (FOR UPDATE on PostgreSQL)."""
    one, two = Outbox(store.db, instance="a"), Outbox(other_db, instance="b")
    await one.add([NewEvent("e", {"n": n}, (HOOK,)) for n in range(5)], now=T0)
    for round_ in range(5):
        now = T0 + (LEASE + timedelta(seconds=1)) * round_  # every earlier lease has run out
        got = await asyncio.gather(one.claim(HOOK, now=now, lease=LEASE), two.claim(HOOK, now=now, lease=LEASE))
        assert sorted(len(batch) for batch in got) == [0, 5], got


async def test_a_failed_head_waits_its_backoff_blocks_the_rest_and_is_dropped_after_the_last_try(
    store: MessageStore,
) -> None:
    """Order holds: nothing behind a failed event goes out before it; the last failure settles it as dropped."""
    outbox = Outbox(store.db, instance="a")
    await outbox.add([NewEvent("e", {"n": n}, (HOOK,)) for n in range(2)], now=T0)
    head, _second = await outbox.claim(HOOK, now=T0, lease=LEASE)
    assert await outbox.failed(head, now=T0, retry_at=T0 + timedelta(minutes=1), error="HTTP 503")
    await outbox.release(HOOK)
    assert await outbox.claim(HOOK, now=T0 + timedelta(seconds=59), lease=LEASE) == []
    again = await outbox.claim(HOOK, now=T0 + timedelta(minutes=1), lease=LEASE)
    assert [e.pk for e in again] == [head.pk, _second.pk] and again[0].attempts == 1
    assert await outbox.failed(again[0], now=T0, retry_at=None, error="HTTP 410")
    rows = await outbox.events(HOOK)
    assert [(e.attempts, outcome) for e, outcome in rows] == [(2, DROPPED), (0, None)]


async def test_settled_events_are_purged_after_their_retention_and_pending_ones_never(
    store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """purge deletes delivered and dropped events older than keep, batch after batch, and no pending one."""
    monkeypatch.setattr(outbox_module, "PURGE_BATCH", 4)
    outbox = Outbox(store.db, instance="a")
    await outbox.add([NewEvent("e", {"n": n}, (HOOK,)) for n in range(11)], now=T0)
    claimed = await outbox.claim(HOOK, now=T0, lease=LEASE, limit=10)
    for event in claimed[:-1]:
        await outbox.delivered(event, now=T0)
    await outbox.failed(claimed[-1], now=T0, retry_at=None, error="gone")
    assert await outbox.purge(now=T0 + timedelta(days=6), keep=timedelta(days=7)) == 0
    assert await outbox.purge(now=T0 + timedelta(days=7), keep=timedelta(days=7)) == 10
    assert [outcome for _, outcome in await outbox.events(HOOK)] == [None]


async def test_the_dispatcher_delivers_in_order_retries_with_backoff_and_survives_the_database_going_away(
    store: MessageStore,
) -> None:
    """Events reach the handler in order, a refusal is retried after its backoff, a database error is waited out."""
    clock = ManualClock(T0)
    outbox = Outbox(store.db, instance="a")
    seen: list[tuple[str, int]] = []
    refuse = {"e-1": 1}

    async def deliver(event: OutboxEvent) -> None:
        name = json.loads(event.body)["data"]["name"]
        seen.append((name, event.attempts))
        if refuse.get(name, 0) > 0:
            refuse[name] -= 1
            raise DeliveryFailed("HTTP 503")

    dispatcher = Dispatcher(
        outbox, HOOK, deliver, clock=clock, lease=LEASE, timeout=timedelta(seconds=5),
        retry=lambda attempts: timedelta(seconds=10 * attempts), poll=timedelta(seconds=1),
    )  # fmt: skip
    await outbox.add([NewEvent("e", {"name": f"e-{n}"}, (HOOK,)) for n in range(3)], now=T0)
    assert await dispatcher.round() == 2  # e-0 delivered, e-1 refused
    assert await dispatcher.round() == 0  # e-1 waits its backoff, e-2 behind it
    await clock.advance(timedelta(seconds=10))
    assert await dispatcher.round() == 2
    assert seen == [("e-0", 0), ("e-1", 0), ("e-1", 1), ("e-2", 0)]
    # The loop outlives a database that refuses connections, and goes on once it is back.
    real = outbox.db
    outbox.db = Database(f"postgresql://nobody@127.0.0.1:{services.free_port()}/none")
    task = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.sleep(0.3)
        assert not task.done()
        await outbox.db.dispose()
        outbox.db = real
        await Outbox(real, instance="x").add([NewEvent("e", {"name": "e-3"}, (HOOK,))], now=clock.now())
        for _ in range(40):
            await clock.advance(timedelta(seconds=5))
            await asyncio.sleep(0.02)
            if seen[-1][0] == "e-3":
                break
        assert seen[-1] == ("e-3", 0)
        assert [outcome for _, outcome in await outbox.events(HOOK)] == [DELIVERED] * 4
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_dispatcher_gives_back_what_it_did_not_deliver_when_cancelled(store: MessageStore) -> None:
    """A delivery cancelled mid-way (a stop) leaves its events pending and unleased for the next start."""
    outbox = Outbox(store.db, instance="a")
    started = asyncio.Event()

    async def deliver(_event: OutboxEvent) -> None:
        started.set()
        await asyncio.sleep(3600)

    dispatcher = Dispatcher(
        outbox, HOOK, deliver, clock=ManualClock(T0), lease=LEASE, timeout=timedelta(seconds=5),
        retry=lambda _: None,
    )  # fmt: skip
    await outbox.add([NewEvent("e", {}, (HOOK,)) for _ in range(2)], now=T0)
    task = asyncio.create_task(dispatcher.round())
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    rows = await outbox.events(HOOK)
    assert [(e.lease_owner, outcome) for e, outcome in rows] == [(None, None), (None, None)]


async def test_a_dispatcher_of_independent_jobs_runs_them_at_once_and_a_failure_holds_back_only_its_own(
    store: MessageStore,
) -> None:
    """With concurrency 2 a job starts while another is still running, and a failed job waits its backoff alone."""
    clock = ManualClock(T0)
    outbox = Outbox(store.db, instance="a")
    jobs = "job:checks"
    both_running = asyncio.Event()
    running: list[str] = []
    peak = 0
    seen: list[tuple[str, int]] = []
    refuse = {"e-0": 1}

    async def deliver(event: OutboxEvent) -> None:
        nonlocal peak
        name = json.loads(event.body)["data"]["name"]
        seen.append((name, event.attempts))
        if refuse.get(name, 0) > 0:
            refuse[name] -= 1
            raise DeliveryFailed("the database of the answer is away")
        running.append(name)
        peak = max(peak, len(running))
        if len(running) == 2:
            both_running.set()
        try:
            await both_running.wait()  # one at a time, this never returns: the delivery times out instead
        finally:
            running.remove(name)

    dispatcher = Dispatcher(
        outbox, jobs, deliver, clock=clock, lease=LEASE, timeout=timedelta(seconds=2),
        retry=lambda attempts: timedelta(seconds=10 * attempts), concurrency=2,
    )  # fmt: skip
    await outbox.add([NewEvent("e", {"name": f"e-{n}"}, (jobs,)) for n in range(3)], now=T0)
    assert await dispatcher.round() == 3
    assert peak == 2, "the second job did not start while the first was running"
    outcomes = [(json.loads(e.body)["data"]["name"], outcome) for e, outcome in await outbox.events(jobs)]
    assert outcomes == [("e-0", None), ("e-1", DELIVERED), ("e-2", DELIVERED)]
    # The failed e-0 waits its backoff; a job written after it goes now.
    both_running.clear()
    await outbox.add([NewEvent("e", {"name": "e-3"}, (jobs,))], now=T0)
    refuse["e-3"] = 1
    assert await dispatcher.round() == 1 and seen[-1] == ("e-3", 0)
    await clock.advance(timedelta(seconds=10))
    assert await dispatcher.round() == 2  # e-0 (its second try) and e-3 again, together
    assert sorted(seen[-2:]) == [("e-0", 1), ("e-3", 1)]
    assert [outcome for _, outcome in await outbox.events(jobs)] == [DELIVERED] * 4


# --- route targets ---------------------------------------------------------------------------------------


async def test_a_route_target_is_kept_with_its_message_and_purged_with_it(store: MessageStore) -> None:
    """A target is written in the message's transaction (not at all when it fails) and goes when the message goes."""
    routes = RouteTargets(store.db)
    target = StoredRoute("fwd-1@x", "1@x", "op-1", "Operator One", "0192:5566778899", "https://op1.example/as4")
    await store.submit(MessageInfo("fwd-1@x", pmode_id="p"), [payload()], now=T0, hooks=[RouteHook(target, now=T0)])
    assert await routes.get("fwd-1@x") == target
    with pytest.raises(DuplicateMessage):  # the message exists: the second target is not kept either
        await store.submit(MessageInfo("fwd-1@x"), [payload()], now=T0, hooks=[RouteHook(target, now=T0)])
    with pytest.raises(ValueError, match="written with"):
        await store.submit(MessageInfo("fwd-2@x"), [payload()], now=T0, hooks=[RouteHook(target, now=T0)])
    assert await store.get(Direction.OUT, "fwd-2@x") is None
    claimed = await store.claim("fwd-1@x", now=T0, lease=LEASE)
    assert claimed is not None and await store.transition(claimed, S.DELIVERED, now=T0)
    await store.purge(now=T0 + timedelta(days=2), retention={"p": Retention(messages=timedelta(days=1))})
    assert await routes.get("fwd-1@x") is None


# --- idempotency -----------------------------------------------------------------------------------------


def answer(message: StoredMessage) -> tuple[int, str]:
    """The 202 answer the API would give."""
    return 202, json.dumps({"message_id": message.message_id, "state": str(message.state)})


async def test_an_idempotency_key_keeps_the_answer_with_the_message_and_refuses_a_second_message(
    store: MessageStore,
) -> None:
    """The answer is kept under every key in the message's transaction; a second message under a key is refused."""
    keys = IdempotencyKeys(store.db)
    request = fingerprint({"pmode": "p", "message_id": "m1@ap"}, [("file", "application/pdf", "ab" * 32)])
    under = [stored_key(HEADER, "retry-1"), stored_key(MESSAGE_ID, "m1@ap")]
    hook = IdempotencyHook("backend-1", under, request, answer, now=T0, keep=timedelta(days=1))
    await store.submit(MessageInfo("m1@ap"), [payload()], now=T0, hooks=[hook])
    kept = await keys.get("backend-1", [stored_key(HEADER, "retry-1")])
    assert kept is not None and kept.same_request(request) and kept.message_id == "m1@ap"
    assert (kept.status, json.loads(kept.response)) == (202, {"message_id": "m1@ap", "state": "submitted"})
    assert await keys.get("backend-2", under) is None, "keys are per backend"
    # Another message under the same key collides: nothing of it is stored.
    other = IdempotencyHook("backend-1", under[:1], "00" * 32, answer, now=T0, keep=timedelta(days=1))
    with pytest.raises(DuplicateMessage):
        await store.submit(MessageInfo("m2@ap"), [payload()], now=T0, hooks=[other])
    assert await store.get(Direction.OUT, "m2@ap") is None
    assert await keys.purge(now=T0 + timedelta(hours=23)) == 0
    assert await keys.purge(now=T0 + timedelta(days=1)) == 2
    assert await keys.get("backend-1", under) is None


def test_the_fingerprint_ignores_layout_and_sees_content() -> None:
    """Key order and whitespace leave the fingerprint alone; a changed value or part digest changes it."""
    one = fingerprint(json.loads('{"a": 1, "b": {"c": [1, 2]}}'), [("f", "text/plain", "00")])
    assert one == fingerprint(json.loads('{"b":{"c":[1,2]},"a":1}'), [("f", "text/plain", "00")])
    assert one != fingerprint({"a": 1, "b": {"c": [2, 1]}}, [("f", "text/plain", "00")])
    assert one != fingerprint({"a": 1, "b": {"c": [1, 2]}}, [("f", "text/plain", "01")])
    assert len(stored_key(HEADER, "x" * 1000)) <= 255 and stored_key(HEADER, "x") == "key:x"


# --- the database away -----------------------------------------------------------------------------------


async def test_a_database_that_cannot_be_reached_is_reported_unavailable_and_a_refused_statement_is_not(
    store: MessageStore,
) -> None:
    """Connection refused is StoreUnavailable (try later); a constraint violation stays what it is."""
    away = Database(f"postgresql://nobody@127.0.0.1:{services.free_port()}/none")
    try:
        with pytest.raises(StoreUnavailable):
            await away.run(lambda connection: connection.exec_driver_sql("SELECT 1"))
    finally:
        await away.dispose()
    await store.submit(MessageInfo("dup@ap"), [payload()], now=T0)
    with pytest.raises(DuplicateMessage):
        await store.submit(MessageInfo("dup@ap"), [payload()], now=T0)


# --- scoped reading --------------------------------------------------------------------------------------


async def test_a_search_narrowed_to_pmodes_or_parties_shows_only_those_messages(store: MessageStore) -> None:
    """only={pmode: …} or {party: …} (From or To) narrows a search; an unknown kind or no kind shows nothing."""
    for message_id, pmode, sender, receiver in (
        ("a@x", "p1", "0007:111", "0007:222"),
        ("b@x", "p2", "0007:333", "0007:111"),
        ("c@x", "p2", "0007:333", "0007:444"),
    ):
        await store.submit(
            MessageInfo(message_id, pmode_id=pmode, from_party=sender, to_party=receiver), [payload()], now=T0
        )

    async def ids(only: dict[str, set[str]] | None) -> list[str]:
        return [m.message_id for m in await store.search(only=only)]

    assert await ids(None) == ["a@x", "b@x", "c@x"]
    assert await ids({"pmode": {"p1"}}) == ["a@x"]
    assert await ids({"party": {"0007:111"}}) == ["a@x", "b@x"]
    assert await ids({"pmode": {"p1"}, "party": {"0007:444"}}) == ["a@x", "c@x"]
    assert await ids({"recipient": {"0007:111"}}) == []
    assert await ids({}) == []


async def test_events_made_elsewhere_are_adopted_once_in_their_order(store: MessageStore, other_db: Database) -> None:
    """adopt keeps the given ids and bodies in order and skips ids the sink has (two instances importing)."""
    one, two = Outbox(store.db, instance="a"), Outbox(other_db, instance="b")
    old = [(f"id-{n}", "receipt", json.dumps({"id": f"id-{n}", "event": "receipt"})) for n in range(3)]
    assert await one.adopt(HOOK, old[:2], now=T0) == 2
    assert await two.adopt(HOOK, old, now=T0) == 1
    claimed = await one.claim(HOOK, now=T0, lease=LEASE)
    assert [(e.event_id, e.body) for e in claimed] == [(i, b) for i, _k, b in old]
