"""The send queues: due-time scheduling on an injected clock, and Redis Streams shared by two consumers."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from accesspoint.store import (
    ManualClock,
    MemorySendQueue,
    MessageInfo,
    MessageState,
    MessageStore,
    QueueItem,
    SendQueue,
    claim_next,
)
from accesspoint.store.queue import Claims, QueueUnavailable
from accesspoint.store.redis_queue import RedisSendQueue
from accesspoint.testing import services
from tests.inmemory import database_away

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
# Short enough that the tests wait milliseconds, long enough not to reclaim from a consumer still at work.
FAST = {"poll": timedelta(milliseconds=20)}


async def nothing_within(queue: SendQueue, seconds: float = 0.1) -> bool:
    """Whether get() stays empty-handed for that long (the waiting get is cancelled)."""
    try:
        async with asyncio.timeout(seconds):
            await queue.get()
    except TimeoutError:
        return True
    return False


# --- in-process -------------------------------------------------------------------------------------------


async def test_memory_queue_hands_out_entries_by_due_time_on_the_injected_clock() -> None:
    """Entries come out in due order, and a future entry only once the clock is advanced past its time."""
    clock = ManualClock(T0)
    queue = MemorySendQueue(clock)
    await queue.put("later", due=T0 + timedelta(minutes=5))
    await queue.put("now")
    await queue.put("soon", due=T0 + timedelta(minutes=1))
    assert (await queue.get()).message_id == "now"
    assert await nothing_within(queue)

    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    await clock.advance(timedelta(minutes=1))
    assert (await asyncio.wait_for(waiting, 1)).message_id == "soon"
    await clock.advance(timedelta(minutes=10))
    assert (await queue.get()).message_id == "later"
    assert len(queue) == 0


async def test_memory_queue_keeps_the_earlier_time_of_a_message_put_twice() -> None:
    """Putting a waiting message again moves it earlier, never later, and it comes out once."""
    clock = ManualClock(T0)
    queue = MemorySendQueue(clock)
    await queue.put("m", due=T0 + timedelta(minutes=5))
    await queue.put("m", due=T0 + timedelta(minutes=10))
    await queue.put("m", due=T0 + timedelta(minutes=1))
    assert len(queue) == 1
    await clock.advance(timedelta(minutes=1))
    assert (await queue.get()).message_id == "m"
    await clock.advance(timedelta(minutes=10))
    assert await nothing_within(queue)


async def test_a_new_entry_wakes_a_consumer_waiting_for_a_later_one() -> None:
    """A consumer sleeping until a scheduled entry is due takes a newly put due entry at once."""
    queue = MemorySendQueue(ManualClock(T0))
    await queue.put("later", due=T0 + timedelta(hours=1))
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    await queue.put("urgent")
    assert (await asyncio.wait_for(waiting, 1)).message_id == "urgent"


@pytest.fixture
async def store(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[MessageStore]:
    """A store on a migrated database of each backend."""
    opened = await MessageStore.open(migrated_database_url, tmp_path / "files", instance="a", migrate=False)
    yield opened
    await opened.close()


async def test_claim_next_skips_entries_whose_message_is_not_due(store: MessageStore) -> None:
    """claim_next acks and passes over stale entries (already delivered, unknown) and returns the claimable one."""
    clock = ManualClock(T0)
    queue = MemorySendQueue(clock)
    for message_id in ("done@ap", "todo@ap"):
        await store.submit(MessageInfo(message_id), [], now=T0)
    done = await store.claim("done@ap", now=T0, lease=LEASE)
    assert done is not None and await store.transition(done, MessageState.DELIVERED, now=T0)
    for message_id in ("done@ap", "unknown@ap", "todo@ap"):
        await queue.put(message_id)
    item, message = await claim_next(queue, store, clock=clock, lease=LEASE)
    assert (item.message_id, message.state, message.attempts) == ("todo@ap", MessageState.SENDING, 1)


# --- Redis ------------------------------------------------------------------------------------------------


@pytest.fixture
async def consumers(redis_url: str) -> AsyncIterator[list[RedisSendQueue]]:
    """Two consumers (two instances) of one queue on the session's Redis, on one manual clock."""
    clock = ManualClock(T0)
    queues = [
        RedisSendQueue.from_url(redis_url, clock=clock, consumer=name, claim_idle=timedelta(seconds=5), **FAST)
        for name in ("a", "b")
    ]
    yield queues
    for queue in queues:
        await queue.close()


async def test_two_instances_share_a_batch_and_send_each_message_once(
    consumers: list[RedisSendQueue], store: MessageStore, migrated_database_url: str
) -> None:
    """Two instances working one Redis queue over 40 messages, each queued twice: every message is sent once."""
    other = await MessageStore.open(migrated_database_url, store.files.root, instance="b", migrate=False)
    ids = [f"batch-{n}@ap" for n in range(40)]
    for message_id in ids:
        await store.submit(MessageInfo(message_id), [], now=T0)
        # The duplicate stands for a redelivery or a recovery sweep: the database claim must absorb it.
        await consumers[0].put(message_id)
        await consumers[1].put(message_id)
    sent: list[tuple[str, str]] = []

    async def work(queue: RedisSendQueue, node: MessageStore) -> None:
        while True:
            item, message = await claim_next(queue, node, clock=ManualClock(T0), lease=LEASE)
            sent.append((node.instance, item.message_id))
            assert await node.transition(message, MessageState.DELIVERED, now=T0) is not None
            await queue.ack(item)

    workers = [asyncio.create_task(work(queue, node)) for queue, node in zip(consumers, (store, other), strict=True)]
    try:
        async with asyncio.timeout(30):
            while len(sent) < len(ids) or await consumers[0].pending():
                for worker in workers:
                    if worker.done():
                        worker.result()  # a worker that died says why
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # room for a double send to show up
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await other.close()
    assert Counter(message_id for _node, message_id in sent) == Counter(ids)
    assert [message.state for message in await store.search()] == [MessageState.DELIVERED] * len(ids)
    assert await consumers[0].pending() == 0


async def test_an_entry_held_by_a_dead_consumer_is_reclaimed_after_the_idle_time(redis_url: str) -> None:
    """An entry taken and never acked goes to another consumer once it has idled past claim_idle, not before."""
    clock = ManualClock(T0)
    idle = timedelta(milliseconds=300)
    dead, alive = (
        RedisSendQueue.from_url(redis_url, clock=clock, consumer=name, claim_idle=idle, **FAST) for name in "ab"
    )
    try:
        await dead.put("stuck@ap")
        taken = await dead.get()
        assert await nothing_within(alive, 0.1)
        await asyncio.sleep(idle.total_seconds())
        reclaimed = await asyncio.wait_for(alive.get(), 2)
        assert reclaimed == QueueItem("stuck@ap", taken.token)
        await alive.ack(reclaimed)
        assert await alive.pending() == 0
        assert await nothing_within(alive, 0.1)
    finally:
        await dead.close()
        await alive.close()


async def test_a_scheduled_retry_reaches_the_stream_once_when_due(consumers: list[RedisSendQueue]) -> None:
    """A retry put for later waits in the sorted set until the clock reaches it, and only one consumer gets it."""
    first, second = consumers
    clock = first._clock
    assert isinstance(clock, ManualClock)
    await first.put("retry@ap", due=T0 + timedelta(minutes=2))
    await first.put("retry@ap", due=T0 + timedelta(minutes=1))  # a second schedule keeps the earlier time
    assert await first.redis.zcard(first.scheduled) == 1
    assert await nothing_within(first, 0.1)
    await clock.advance(timedelta(minutes=1))
    results = await asyncio.gather(first.get(), nothing_within(second, 0.3))
    assert results[0].message_id == "retry@ap" and results[1] is True
    assert await first.redis.zcard(first.scheduled) == 0


async def test_a_consumer_cancelled_mid_command_stops_and_the_queue_goes_on(redis_url: str) -> None:
    """Cancelling a consumer while it blocks in Redis ends it promptly; every entry is still handed out."""
    chooser = random.Random(3)
    queue = RedisSendQueue.from_url(redis_url, clock=ManualClock(T0), consumer="a", **FAST)
    seen: list[str] = []

    async def work() -> None:
        while True:
            item = await queue.get()
            seen.append(item.message_id)
            await queue.ack(item)

    try:
        for n in range(40):
            await queue.put(f"m{n}")
            worker = asyncio.create_task(work())
            await asyncio.sleep(chooser.random() * 0.03)
            worker.cancel()
            done, _ = await asyncio.wait([worker], timeout=3)
            assert done, f"round {n}: the cancelled consumer is still running"
        rest = RedisSendQueue.from_url(redis_url, clock=ManualClock(T0), consumer="b", claim_idle=timedelta(0), **FAST)
        try:
            while len(set(seen)) < 40:
                item = await asyncio.wait_for(rest.get(), 2)
                seen.append(item.message_id)
                await rest.ack(item)
        finally:
            await rest.close()
    finally:
        await queue.close()
    assert set(seen) == {f"m{n}" for n in range(40)}


# --- outages ----------------------------------------------------------------------------------------------


async def test_claims_take_due_messages_from_the_database_while_the_queue_is_away(store: MessageStore) -> None:
    """With Redis unreachable, a worker still gets every due message, from the database, skipping pulled ones."""
    clock = ManualClock(T0)
    away = RedisSendQueue.from_url(f"redis://127.0.0.1:{services.free_port()}/0", clock=clock, consumer="a")
    for message_id in ("pulled@ap", "pushed@ap"):
        await store.submit(MessageInfo(message_id, pmode_id=message_id.split("@")[0]), [], now=T0)
    claims = Claims(away, store, clock=clock, lease=LEASE, skip=lambda message: message.pmode_id == "pulled")
    try:
        with pytest.raises(QueueUnavailable):
            await away.put("pushed@ap")
        claim = await asyncio.wait_for(claims.next(), 5)
        assert claim.item is None and claim.message.message_id == "pushed@ap"
        assert claim.message.state is MessageState.SENDING
        await claims.done(claim)
        waiting = asyncio.create_task(claims.next())
        await asyncio.sleep(0.2)
        assert not waiting.done(), "the pulled message is not a push worker's"
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    finally:
        await away.close()


async def test_claims_keep_the_entry_in_hand_while_the_database_is_away(store: MessageStore, tmp_path: Path) -> None:
    """An entry taken while the database cannot be reached is claimed once it is back, not lost."""
    clock = ManualClock(T0)
    queue = MemorySendQueue(clock)
    await store.submit(MessageInfo("kept@ap"), [], now=T0)
    await queue.put("kept@ap")
    claims = Claims(queue, store, clock=clock, lease=LEASE)
    async with database_away(store, tmp_path):
        waiting = asyncio.create_task(claims.next())
        await asyncio.sleep(0.3)
        assert not waiting.done() and len(queue) == 0, "the entry is taken and held"
    try:
        for _ in range(50):
            await clock.advance(timedelta(seconds=2))
            await asyncio.sleep(0.02)
            if waiting.done():
                break
        claim = waiting.result()
        assert claim.item is not None and claim.message.message_id == "kept@ap" and claim.message.attempts == 1
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)


async def test_a_redis_that_restarted_empty_gets_its_group_back_and_the_queue_goes_on(redis_url: str) -> None:
    """After Redis lost everything and dropped its connections, the queue says so once and then works again."""
    import redis

    queue = RedisSendQueue.from_url(redis_url, clock=ManualClock(T0), consumer="a", **FAST)
    try:
        await queue.put("before@ap")
        assert (await queue.get()).message_id == "before@ap"
        admin = redis.Redis.from_url(redis_url)
        try:
            admin.flushall()  # what a restart without persistence leaves: no stream, no group
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        finally:
            admin.close()
        with pytest.raises(QueueUnavailable):
            await queue.get()
        await queue.put("after@ap")
        item = await asyncio.wait_for(queue.get(), 2)
        assert item.message_id == "after@ap"
        await queue.ack(item)
        assert await queue.pending() == 0
    finally:
        await queue.close()
