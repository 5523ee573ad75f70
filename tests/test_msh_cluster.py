"""Several sending instances over one PostgreSQL and one Redis, as real processes; the basic delivery on PostgreSQL.

The instances share the database, the Redis send queue and the file storage (payloads and the submitted headers
are files that whichever instance sends must read), and differ in their instance names. The receiver sits
behind ``CountingProxy``, which counts the requests per MessageId on the wire: a double send would show there
even though the receiver answers a repeated MessageId with the stored receipt and keeps one row.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
import redis

from accesspoint.testing import services
from tests.test_msh_crash import (
    CountingProxy,
    assert_delivered_exactly_once,
    restart_once_killed,
    submit_batch,
    wait_until,
)
from tests.test_msh_support import BE_KEY, SE_KEY, Peer, agreements, pair, running, submission

# A lease longer than the send timeout: a live sender never loses its claim mid-send.
SEND = {"workers": 4, "timeout": "2s", "lease": "3s"}


@pytest.fixture
async def postgres_databases(postgres_server: services.PostgresServer) -> AsyncIterator[list[str]]:
    """Two new databases on the session's PostgreSQL: their SQLAlchemy URLs."""
    names = [await services.create_postgres_database(postgres_server) for _ in range(2)]
    try:
        yield [postgres_server.url(name) for name in names]
    finally:
        for name in names:
            await services.drop_postgres_database(postgres_server, name)


def test_basic_delivery_between_two_processes_on_postgresql(tmp_path: Path, postgres_databases: list[str]) -> None:
    """Two ``accesspoint serve`` processes, each on a PostgreSQL database: delivered, receipt kept, downloadable."""
    sweden, belgium = pair(tmp_path, se={"database": postgres_databases[0]}, be={"database": postgres_databases[1]})
    payload = b"<letter>" + os.urandom(2000).hex().encode() + b"</letter>"
    with running(belgium, sweden):
        assert sweden.api("POST", "/api/v1/messages", submission("se-to-be", payload, "m1@se"))[0] == 202
        sent = sweden.wait_state("m1@se", {"delivered", "failed"})
        assert sent["state"] == "delivered" and "partner-receipt" in {e["kind"] for e in sent["evidence"]}
        received = belgium.wait_state("m1@se", {"received"}, direction="in")
        assert received["payloads"][0]["sha256"] == hashlib.sha256(payload).hexdigest()
        status, body = belgium.api("GET", "/api/v1/messages/m1@se/payloads/letter@se?direction=in")
        assert status == 200 and body == payload


def _claims(url: str) -> list[tuple[str, str, str | None]]:
    """(MessageId, instance, detail) of every move to ``sending`` in the shared database, oldest first."""

    async def fetch() -> list[tuple[str, str, str | None]]:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            rows = await connection.fetch(
                "SELECT m.message_id, t.actor, t.detail FROM transitions t JOIN messages m ON m.id = t.message"
                " WHERE t.to_state = 'sending' ORDER BY t.id"
            )
        finally:
            await connection.close()
        return [(row["message_id"], row["actor"], row["detail"]) for row in rows]

    return asyncio.run(fetch())


def _pending(redis_url: str, consumer: str) -> int:
    """How many entries of the send stream the consumer holds unacknowledged."""
    client = redis.Redis.from_url(redis_url)
    try:
        stuck = client.xpending_range("accesspoint:send:stream", "senders", "-", "+", 1000, consumername=consumer)
        return len(stuck)
    finally:
        client.close()


def _submit_through_both(one: Peer, two: Peer, numbers: range, prefix: str) -> dict[str, bytes]:
    """Submit the even numbers through one and the odd through two, at the same time."""
    with ThreadPoolExecutor(2) as pool:
        evens = pool.submit(submit_batch, one, numbers[::2], prefix)
        odds = pool.submit(submit_batch, two, numbers[1::2], prefix)
        return evens.result() | odds.result()


def test_two_instances_share_the_work_without_double_send_and_one_finishes_what_a_killed_one_held(
    tmp_path: Path, postgres_databases: list[str], redis_url: str
) -> None:
    """Two senders on one PostgreSQL and Redis send 100 messages once each; killed mid-batch, one leaves the rest."""
    database = postgres_databases[0]
    port_one, port_two, port_be = services.free_port(), services.free_port(), services.free_port()
    proxy = CountingProxy(port_be)
    se_url = f"http://127.0.0.1:{port_one}/as4"
    shared = {"database": database, "redis": redis_url, "storage": str(tmp_path / "shared-storage"), "send": SEND}
    # The same agreements, but each instance reaches the receiver through its own proxy path.
    one, two = (
        Peer(
            tmp_path / name,
            "ap-sweden",
            SE_KEY,
            port,
            agreements("ap-sweden", se_url, f"{proxy.url}/{name}", retries=10, backoff="200ms"),
            settings={**shared, "instance": name},
        )
        for name, port in (("se-1", port_one), ("se-2", port_two))
    )
    theirs = agreements("partner-115", se_url, proxy.url)
    receiver = Peer(tmp_path / "be", "partner-115", BE_KEY, port_be, theirs)
    proxy.start()
    try:
        with running(receiver, one, two):
            # 1. A batch of 100 submitted through both instances' APIs: each message is sent once, by either.
            sent = _submit_through_both(one, two, range(100), "batch")
            assert_delivered_exactly_once(one, receiver, sent)
            assert all(count == 1 for count in proxy.posted.values()), "a message was sent twice"
            assert {m["attempts"] for m in two.messages(direction="out", limit="1000")} == {1}
            claims = _claims(database)
            assert Counter(message_id for message_id, _, _ in claims) == Counter(dict.fromkeys(sent, 1))
            assert {actor for _, actor, _ in claims} == {"se-1", "se-2"}, "one instance did all the work"

            # 2. se-1 dies while its workers wait for receipts; se-2 takes its claims over once their lease ran out.
            proxy.kill_holding(one, after=110, count=3, via="se-1")
            more = submit_batch(two, range(100, 160), "more")  # se-1 takes its share from the stream
            restart_once_killed(one, start=False)
            assert_delivered_exactly_once(two, receiver, sent | more)
            wait_until(lambda: _pending(redis_url, "se-1") == 0, "the stream entries se-1 held taken over", 10)
            assert _pending(redis_url, "se-2") == 0
    finally:
        proxy.stop()
    resent = {message_id for message_id, count in proxy.posted.items() if count > 1}
    # What se-1 had in flight when it died (at least the three held answers) went out twice, each time because
    # se-2 took over se-1's expired lease, and the receiver kept it once (asserted above); nothing else did.
    assert len(proxy.ever_held) >= 3 and proxy.ever_held <= resent, (resent, proxy.ever_held)
    takeovers = {m: actor for m, actor, detail in _claims(database) if detail and "lease of se-1 expired" in detail}
    assert resent <= set(takeovers) and set(takeovers.values()) == {"se-2"}, (resent, takeovers)
