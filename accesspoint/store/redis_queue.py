"""The send queue shared by several instances: a Redis Stream read through one consumer group.

- ``put`` adds a due entry to the stream, or a later one to a sorted set (score: due time, epoch seconds).
- ``get``, once per ``poll`` interval, moves the due members of the sorted set to the stream (one Lua
  script, so two instances never both move the same member) and takes over entries another consumer has
  held unacknowledged for longer than ``claim_idle`` (XAUTOCLAIM: that consumer died); otherwise it reads
  new entries (XREADGROUP, blocking for at most ``poll``).
- ``ack`` acknowledges and deletes the entry in one MULTI, so the stream does not grow.

Redis only spreads the work. Whether a message is sent is still decided by ``MessageStore.claim``, a
compare-and-set in the database: an entry handed out twice is sent at most once. Redis may also forget: a
restart without persistence loses the stream, the group and the schedule. The group is then made again on the
first command that misses it, and what the lost entries stood for is still due in the database, which the
recovery sweep re-queues (``MessageStore.recoverable``). While Redis cannot be reached every operation raises
``QueueUnavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from accesspoint.store.clock import Clock
from accesspoint.store.queue import QueueItem, QueueUnavailable
from accesspoint.store.shield import Shield

# KEYS[1] scheduled set, KEYS[2] stream; ARGV[1] now (epoch seconds), ARGV[2] how many at most.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('XADD', KEYS[2], '*', 'm', id)
end
return #due
"""

FIELD = "m"
_Result = TypeVar("_Result")


class RedisSendQueue:
    """One consumer of the shared send queue; every instance creates its own with a distinct name."""

    def __init__(
        self,
        redis: Redis,
        *,
        clock: Clock,
        consumer: str,
        prefix: str = "accesspoint:send",
        group: str = "senders",
        claim_idle: timedelta = timedelta(minutes=5),
        poll: timedelta = timedelta(seconds=1),
        promote_batch: int = 100,
    ) -> None:
        self.redis = redis
        self.stream = f"{prefix}:stream"
        self.scheduled = f"{prefix}:scheduled"
        self.group = group
        self.consumer = consumer
        self._clock = clock
        self._claim_idle_ms = int(claim_idle.total_seconds() * 1000)
        # A scheduled entry waits at most this long past its due time (XREADGROUP wakes only on new entries).
        self._poll_ms = max(int(poll.total_seconds() * 1000), 1)
        self._promote_batch = promote_batch
        self._promote = redis.register_script(_PROMOTE)
        self._claim_cursor = "0-0"
        self._ready = False
        self._next_sweep = 0.0
        self._shield = Shield()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisSendQueue:
        """A consumer over a new connection pool to url (``redis://host:port/db``)."""
        return cls(Redis.from_url(url), **options)

    async def _ensure_group(self) -> None:
        if self._ready:
            return
        try:
            await self._command(self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True))
        except ResponseError as error:
            # Another instance created it first: exactly what we wanted.
            if "BUSYGROUP" not in str(error):
                raise
        self._ready = True

    async def _command(self, operation: Awaitable[_Result]) -> _Result:
        """Run a Redis command: QueueUnavailable when Redis cannot answer, the group made again when it forgot it."""
        try:
            return await self._shield.run(operation)
        except ResponseError as error:
            if "NOGROUP" in str(error):
                # Redis restarted without persistence: the next call makes the group (and the stream) again.
                self._ready = False
                self._claim_cursor = "0-0"
                raise QueueUnavailable("the consumer group is gone (Redis restarted empty?)") from error
            raise
        except (RedisError, OSError) as error:
            self._ready = False
            raise QueueUnavailable(f"{type(error).__name__}: {error}") from error

    async def put(self, message_id: str, *, due: datetime | None = None) -> None:
        """Stream message_id now, or schedule it; a member scheduled twice keeps the earlier time."""
        if due is None or due <= self._clock.now():
            await self._ensure_group()
            await self._command(self.redis.xadd(self.stream, {FIELD: message_id}))
        else:
            await self._command(self.redis.zadd(self.scheduled, {message_id: due.timestamp()}, lt=True))

    async def get(self) -> QueueItem:
        """The next entry for this consumer: a reclaimed stuck one first, else a new one (waits for it)."""
        await self._ensure_group()
        loop = asyncio.get_running_loop()
        while True:
            # The sorted set and the pending list are looked at once per poll interval, not before every
            # read: under load that saves two round trips per entry.
            if loop.time() >= self._next_sweep:
                await self.promote_due()
                item = await self._reclaim()
                if item is not None:
                    return item  # more may be stuck: the next get() looks again at once
                self._next_sweep = loop.time() + self._poll_ms / 1000
            # redis-py types replies loosely; this one is [[stream, [(entry id, {field: value})]]] or None.
            # An entry read by a get() whose caller was cancelled stays pending and is reclaimed after claim_idle.
            answer: Any = await self._command(
                self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=1, block=self._poll_ms)
            )
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    return _item(entry_id, fields)

    async def promote_due(self) -> int:
        """Move the scheduled entries that are due to the stream; how many were moved."""
        moved = await self._command(
            self._promote(keys=[self.scheduled, self.stream], args=[self._clock.now().timestamp(), self._promote_batch])
        )
        return int(moved)

    async def _reclaim(self) -> QueueItem | None:
        cursor, entries, *_deleted = await self._command(
            self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self._claim_idle_ms, start_id=self._claim_cursor, count=1
            )
        )
        # XAUTOCLAIM walks the pending list in pages; the cursor comes back to 0-0 after the last one.
        self._claim_cursor = _text(cursor)
        for entry_id, fields in entries:
            if fields:
                return _item(entry_id, fields)
        return None

    async def ack(self, item: QueueItem) -> None:
        """Acknowledge and delete the entry."""
        await self._command(self._ack(item.token))

    async def _ack(self, token: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, token)
            pipe.xdel(self.stream, token)
            await pipe.execute()

    async def pending(self) -> int:
        """How many entries were handed out and not yet acknowledged (all consumers)."""
        summary = await self._command(self.redis.xpending(self.stream, self.group))
        return int(summary["pending"])

    async def close(self) -> None:
        """Wait for the commands of cancelled callers, then close the connection pool."""
        await self._shield.drain()
        await self.redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _item(entry_id: bytes | str, fields: dict[Any, Any]) -> QueueItem:
    message_id = fields.get(FIELD.encode(), fields.get(FIELD))
    if message_id is None:
        raise ValueError(f"stream entry {entry_id!r} has no {FIELD!r} field")
    return QueueItem(message_id=_text(message_id), token=_text(entry_id))
