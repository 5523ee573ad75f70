"""Crash test over real processes: kill -9 the receiving and the sending access point while messages are in flight.

The sender reaches the receiver through ``CountingProxy``, which counts every POST per MessageId on the wire and
can hold the receiver's answers back: a sender killed while answers are held has had its messages stored by
the receiver without ever seeing the receipts, so after its restart it must send them again, and the receiver
must answer with the stored receipt instead of storing them twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from accesspoint.testing import services
from tests.test_msh_support import BE_KEY, SE_KEY, Peer, agreements, submission

# Short leases and backoff: a message whose sender died is taken over within seconds.
SEND = {"workers": 4, "timeout": "1s", "lease": "2s"}
# Messages of the batch the kills hit; AP_CRASH_BATCH=1000 runs the same kills with a thousand in flight (minutes).
BATCH = int(os.environ.get("AP_CRASH_BATCH", "40"))

Databases = dict[str, dict[str, Any]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def databases(request: pytest.FixtureRequest) -> AsyncIterator[Databases]:
    """Each access point's database: its default SQLite file, or a database of its own on a real PostgreSQL."""
    if request.param == "sqlite":
        yield {"se": {}, "be": {}}
        return
    server: services.PostgresServer = request.getfixturevalue("postgres_server")
    names = {side: await services.create_postgres_database(server) for side in ("se", "be")}
    try:
        yield {side: {"database": server.url(name)} for side, name in names.items()}
    finally:
        for name in names.values():
            await services.drop_postgres_database(server, name)


class CountingProxy:
    """A reverse proxy for POST /as4 in a thread of its own: counts requests per MessageId, can hold answers.

    ``/as4/{via}`` goes to the same receiver: senders given different URLs can be told apart (``via``).
    """

    def __init__(self, target_port: int) -> None:
        self.port = services.free_port()
        self.url = f"http://127.0.0.1:{self.port}/as4"
        self._target = f"http://127.0.0.1:{target_port}/as4"
        self.posted: Counter[str] = Counter()  # requests that reached the proxy, per MessageId
        self.answered: Counter[str] = Counter()  # HTTP 200 answers from the receiver, per MessageId
        self.in_flight = 0  # requests forwarded and not yet answered by the receiver
        self.held = 0  # answers the receiver gave that the sender has not got yet
        self.ever_held: set[str] = set()  # MessageIds whose answer was held back at some point
        self._lock = threading.Lock()
        self._armed: tuple[int, Peer] | None = None
        self._released = threading.Event()
        self._released.set()
        self._holding: tuple[int, int, str | None, Peer] | None = None  # see kill_holding
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        """Listen on self.port."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    def stop(self) -> None:
        """Release held answers, stop serving and end the thread."""
        self._released.set()
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def kill_holding(self, peer: Peer, *, after: int, count: int, via: str | None = None) -> None:
        """Once the receiver gave ``after`` answers, hold its answers back (only those to ``via``, if given) until
        ``count`` are held, then SIGKILL peer and pass them on.

        The receiver has stored those messages; the killed sender never saw their receipts.
        """
        with self._lock:
            self._released.clear()
            self._holding = (after, count, via, peer)

    def kill_on_request(self, after: int, peer: Peer) -> None:
        """SIGKILL peer 5 ms into the first request that comes once the receiver gave ``after`` answers.

        Both ends are then busy with it: the receiver reads, decrypts and stores it, the sender waits for its
        receipt.
        """
        with self._lock:
            self._armed = (after, peer)

    def answers(self) -> int:
        """How many HTTP 200 answers the receiver gave so far."""
        with self._lock:
            return sum(self.answered.values())

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/as4", self._forward)
        app.router.add_post("/as4/{via}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        via = request.match_info.get("via")
        found = re.search(rb"MessageId>([^<]+)<", body)
        message_id = found.group(1).decode() if found else "?"
        with self._lock:
            self.posted[message_id] += 1
            self.in_flight += 1
            if self._armed is not None and sum(self.answered.values()) >= self._armed[0]:
                process = self._armed[1].process
                assert process is not None
                self._loop.call_later(0.005, process.kill)
                self._armed = None
        try:
            assert self._session is not None
            headers = {"Content-Type": request.headers.get("Content-Type", "")}
            async with self._session.post(self._target, data=body, headers=headers) as response:
                answer, status = await response.read(), response.status
                kind = response.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError):
            return web.Response(status=502)  # the receiver is down: the sender retries
        finally:
            with self._lock:
                self.in_flight -= 1
        with self._lock:
            self.answered[message_id] += status == 200
            plan, hold = self._holding, False
            if plan is not None and sum(self.answered.values()) >= plan[0] and plan[2] in (None, via):
                hold = True
                self.held += 1
                self.ever_held.add(message_id)
                if self.held >= plan[1]:
                    assert plan[3].process is not None
                    plan[3].process.kill()
                    self._holding = None
                    self._released.set()
        if hold:
            while not self._released.is_set():
                await asyncio.sleep(0.02)
            with self._lock:
                self.held -= 1
        return web.Response(status=status, body=answer, headers={"Content-Type": kind})


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll condition until it holds; AssertionError naming what was awaited after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def kill9(peer: Peer) -> None:
    """SIGKILL the access point process: no shutdown, no cleanup, whatever it was doing stops mid-way."""
    assert peer.process is not None and peer.process.poll() is None, "the access point is not running"
    peer.process.kill()
    restart_once_killed(peer, start=False)


def restart_once_killed(peer: Peer, *, start: bool = True) -> None:
    """Wait for the killed process to end, then start the access point again on the same database and files."""
    process = peer.process
    assert process is not None
    # The kill comes when the batch reaches its mark: with AP_CRASH_BATCH=1000 on a loaded machine that is minutes.
    wait_until(lambda: process.poll() is not None, "the kill", timeout=max(30, BATCH / 5))
    assert process.returncode == -9, process.returncode
    peer.stop()  # closes the log file
    if start:
        peer.start()


def sender_and_receiver(
    tmp_path: Path, proxy_for: Callable[[int], CountingProxy], *, se: dict[str, Any], be: dict[str, Any]
) -> tuple[Peer, Peer, CountingProxy]:
    """Sweden sending to Belgium through a counting proxy (nothing started)."""
    port_se, port_be = services.free_port(), services.free_port()
    proxy = proxy_for(port_be)
    se_url = f"http://127.0.0.1:{port_se}/as4"
    settings = {"send": SEND}

    def peer(side: str, name: str, key: str, port: int, extra: dict[str, Any]) -> Peer:
        pmodes = agreements(name, se_url, proxy.url, retries=30, backoff="100ms")
        for pmode in pmodes["pmodes"]:
            for leg in pmode["legs"]:
                leg["reception_awareness"]["backoff_max"] = "500ms"  # a restarted receiver is found at once
        return Peer(tmp_path / side, name, key, port, pmodes, settings={**settings, **extra})

    return peer("se", "ap-sweden", SE_KEY, port_se, se), peer("be", "partner-115", BE_KEY, port_be, be), proxy


def payload(number: int) -> bytes:
    """A distinct 2 KB payload for message number."""
    return b"<letter n='%d'>" % number + hashlib.sha512(b"%d" % number).hexdigest().encode() * 16 + b"</letter>"


def submit_batch(sender: Peer, numbers: range, prefix: str) -> dict[str, bytes]:
    """Submit one message per number; MessageId -> payload."""
    sent: dict[str, bytes] = {}
    for number in numbers:
        message_id = f"{prefix}-{number}@se"
        status, document = sender.api("POST", "/api/v1/messages", submission("se-to-be", payload(number), message_id))
        assert status == 202, document
        sent[message_id] = payload(number)
    return sent


def assert_delivered_exactly_once(sender: Peer, receiver: Peer, sent: dict[str, bytes], timeout: float = 40) -> None:
    """Every message delivered at the sender and received once, intact, at the receiver; nothing else there."""

    def all_delivered() -> bool:
        return len(sender.messages(direction="out", state="delivered", limit="1000")) == len(sent)

    try:
        wait_until(all_delivered, f"{len(sent)} deliveries", timeout)
    except AssertionError:
        states = Counter(m["state"] for m in sender.messages(direction="out", limit="1000"))
        raise AssertionError(f"not all delivered: {dict(states)}") from None
    outgoing = sender.messages(direction="out", limit="1000")
    assert sorted(m["message_id"] for m in outgoing) == sorted(sent)
    assert {m["state"] for m in outgoing} == {"delivered"}
    incoming = receiver.messages(direction="in", limit="1000")
    assert sorted(m["message_id"] for m in incoming) == sorted(sent), "a message lost or stored twice"
    for message_id, data in sent.items():
        status, document = receiver.api("GET", f"/api/v1/messages/{message_id}?direction=in")
        assert status == 200 and document["state"] == "received", document
        (part,) = document["payloads"]
        assert (part["size"], part["sha256"]) == (len(data), hashlib.sha256(data).hexdigest()), message_id
        kinds = Counter(e["kind"] for e in document["evidence"])
        assert kinds["raw-message"] == 1 and kinds["our-receipt"] == 1, (message_id, kinds)


@pytest.fixture
def proxies() -> Any:
    """Make counting proxies that are stopped after the test."""
    made: list[CountingProxy] = []

    def make(target_port: int) -> CountingProxy:
        made.append(CountingProxy(target_port))
        return made[-1]

    yield make
    for proxy in made:
        proxy.stop()


# Four kills and restarts of real processes: 50-110 s on a loaded 2-core machine; minutes more per thousand.
@pytest.mark.timeout(max(300, BATCH))
def test_kill_9_of_receiver_and_sender_in_flight_leaves_every_message_delivered_exactly_once(
    tmp_path: Path, databases: Databases, proxies: Any
) -> None:
    """Receiver and sender are each killed twice mid-batch and restarted; every message arrives once, intact."""
    sender, receiver, proxy = sender_and_receiver(tmp_path, proxies, se=databases["se"], be=databases["be"])
    proxy.start()
    try:
        receiver.start()
        sender.start()
        # 1. The receiver dies while it is storing a message; the sender retries until it is back.
        proxy.kill_on_request(BATCH // 8, receiver)
        sent = submit_batch(sender, range(BATCH), "crash")
        restart_once_killed(receiver)

        # 2. The sender dies after the receiver stored messages whose receipts it never saw (held by the proxy).
        proxy.kill_holding(sender, after=BATCH * 3 // 10, count=2)
        restart_once_killed(sender)

        # 3. The receiver again, later in the batch.
        proxy.kill_on_request(BATCH // 2, receiver)
        restart_once_killed(receiver)

        # 4. The sender again, while it waits for a receipt.
        proxy.kill_on_request(BATCH * 7 // 10, sender)
        restart_once_killed(sender)

        assert_delivered_exactly_once(sender, receiver, sent, timeout=max(40, BATCH / 4))
    finally:
        sender.stop()
        receiver.stop()
    resent = {m for m, n in proxy.posted.items() if n > 1}
    # The messages whose receipts were held back when the sender died were sent again: duplicates on the wire
    # that the receiver answered with the stored receipt, as the assertions above show (one row, one receipt).
    assert proxy.ever_held and proxy.ever_held <= resent, (proxy.ever_held, resent)
