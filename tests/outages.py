"""Outage scenarios over real processes, sized by the caller: a few dozen messages in the tests, 1,000 in the bench.

Each runs a sending and a receiving ``accesspoint serve`` on loopback while a backend submits a steady stream
of messages through the REST API, breaks something mid-stream and checks what the issue asks for:

- ``postgres_outage``: the one PostgreSQL both access points use is stopped for ``outage`` seconds a quarter into
  the stream and started again. Every submission is answered 202 (stored: it must arrive exactly once) or 503 with
  ``Retry-After`` (nothing stored, checked after the restart, then submitted again by the backend as told).
- ``redis_restart``: the sender's Redis queue is stopped and started empty. Submissions keep being answered 202
  (the database is the record), and every message arrives exactly once.
- ``instance_killed``: two sending instances on one PostgreSQL and Redis with a webhook; the instance holding the
  webhook's events is SIGKILLed while one is on the wire. Every message's receipt event reaches the backend, with
  one event id per event, and an event comes twice only if it was in flight at the kill.

The receiver sits behind ``CountingProxy``, which counts the POSTs per MessageId on the wire.

``python -m tests.outages`` runs the three at full size (1,000 messages, PostgreSQL stopped for 10 s, Redis for
10 s) on a PostgreSQL and a Redis of their own and prints what each saw; ``--quick`` runs 120 messages and 3 s.
(It lives beside the tests it shares its harness with: the bench may not import tests.)
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from accesspoint.testing import services
from tests.test_msh import TOKEN
from tests.test_msh_crash import CountingProxy, assert_delivered_exactly_once, payload, restart_once_killed, wait_until
from tests.test_msh_support import BE_KEY, SE_KEY, Peer, agreements, submission

# Short leases: a claim a dead worker or instance held is taken over within seconds.
SEND = {"workers": 4, "timeout": "2s", "lease": "3s"}


@dataclass
class Report:
    """What a scenario saw, for the test's assertions and the bench's table."""

    submitted: int = 0
    accepted: int = 0  # answered 202 during the stream
    accepted_after_restart: int = 0  # of those, answered after the outage ended
    refused: int = 0  # answered 503 with Retry-After during the stream (nothing stored)
    resubmitted: int = 0  # the refused ones, submitted again once the outage was over: 202
    delivered: int = 0  # delivered exactly once, intact, at the receiver
    resent_on_wire: int = 0  # messages POSTed more than once (the receiver kept each once)
    events: int = 0  # webhook events received (instance_killed)
    duplicate_events: int = 0  # events received more than once, each with the same event id
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for a table."""
        return ", ".join(f"{name} {value}" for name, value in vars(self).items() if name != "notes" and value)


def _patience(messages: int, outage: float) -> float:
    """How long to wait for every delivery: a minute, the outage thrice, and 4 messages/s on a loaded machine."""
    return 60 + outage * 3 + messages / 4


def submit(peer: Peer, message_id: str, number: int) -> tuple[int, dict[str, str]]:
    """POST one submission; (HTTP status, response headers). Connection errors count as status 0."""
    body = json.dumps(submission("se-to-be", payload(number), message_id)).encode()
    request = urllib.request.Request(f"{peer.base}/api/v1/messages", data=body, method="POST")  # noqa: S310
    request.add_header("Authorization", f"Bearer {TOKEN}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 (loopback)
            response.read()
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, dict(error.headers)
    except OSError:
        return 0, {}


class Stream:
    """Submits messages at ``rate`` per second in a thread, through the given peers in turn, until ``finish``."""

    def __init__(self, peers: list[Peer], rate: float, prefix: str) -> None:
        self.peers, self.rate, self.prefix = peers, rate, prefix
        self.answers: dict[str, tuple[int, dict[str, str]]] = {}
        self.answered_at: dict[str, float] = {}  # time.monotonic() of each answer
        self.total: int | None = None  # how many to submit in all; None: until told
        self._started = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Begin submitting."""
        self._thread.start()

    def finish(self, total: int, *, at_least_more: int = 0) -> None:
        """Stop after ``total`` submissions, and no fewer than ``at_least_more`` beyond those started so far."""
        with self._lock:
            self.total = max(total, self._started + at_least_more)

    def join(self) -> None:
        """Wait until every submission was answered."""
        self._thread.join()

    def started(self) -> int:
        """How many submissions were started so far."""
        with self._lock:
            return self._started

    def ids(self, status: int) -> dict[str, bytes]:
        """MessageId -> payload of the submissions answered with status."""
        with self._lock:
            return {m: payload(self.number(m)) for m, (code, _h) in self.answers.items() if code == status}

    def number(self, message_id: str) -> int:
        """The number a MessageId of this stream was made from."""
        return int(message_id.removeprefix(f"{self.prefix}-").split("@")[0])

    def _run(self) -> None:
        start = time.monotonic()
        with ThreadPoolExecutor(4) as pool:  # a few in flight: a slow answer does not hold the stream up
            while True:
                with self._lock:
                    if self.total is not None and self._started >= self.total:
                        break
                    number = self._started
                    self._started += 1
                # Evenly spaced; after a stall (an outage's slow answers) it catches up, as a backlog would.
                time.sleep(max(0.0, start + number / self.rate - time.monotonic()))
                pool.submit(self._one, number)

    def _one(self, number: int) -> None:
        message_id = f"{self.prefix}-{number}@se"
        answer = submit(self.peers[number % len(self.peers)], message_id, number)
        with self._lock:
            self.answers[message_id] = answer
            self.answered_at[message_id] = time.monotonic()

    def accepted_since(self, moment: float) -> int:
        """How many submissions were answered 202 after moment (time.monotonic())."""
        with self._lock:
            return sum(1 for m, (code, _h) in self.answers.items() if code == 202 and self.answered_at[m] > moment)


def _settle_refusals(stream: Stream, sender: Peer, report: Report) -> dict[str, bytes]:
    """Check that no refused submission was stored, then submit each again as the backend would: all 202."""
    statuses = Counter(code for code, _headers in stream.answers.values())
    assert set(statuses) <= {202, 503}, f"answers other than 202 and 503: {dict(statuses)}\n{_errors_logged(sender)}"
    refused = stream.ids(503)
    for message_id in refused:
        assert "Retry-After" in stream.answers[message_id][1], message_id
        status, _document = sender.api("GET", f"/api/v1/messages/{message_id}")
        assert status == 404, f"{message_id} was answered 503 but stored"
    for message_id in refused:
        status, _headers = submit(sender, message_id, stream.number(message_id))
        assert status == 202, (message_id, status)
    report.accepted, report.refused, report.resubmitted = statuses[202], statuses[503], len(refused)
    return stream.ids(202) | refused


def _errors_logged(peer: Peer, limit: int = 80) -> str:
    """The server's logged errors with their tracebacks (what a 500 came from), for a failure report."""
    log = peer.folder / "server.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    found = [n for n, line in enumerate(lines) if "error" in line.lower() or "traceback" in line.lower()]
    if not found:
        return "(no error logged)"
    return "\n".join(lines[found[0] : found[0] + limit])


def pair_on(folder: Path, *, se: dict[str, Any], be: dict[str, Any], retries: int) -> tuple[Peer, Peer, CountingProxy]:
    """Sweden sending to Belgium through a counting proxy (nothing started)."""
    port_se, port_be = services.free_port(), services.free_port()
    proxy = CountingProxy(port_be)
    se_url = f"http://127.0.0.1:{port_se}/as4"

    def peer(side: str, name: str, key: str, port: int, extra: dict[str, Any]) -> Peer:
        pmodes = agreements(name, se_url, proxy.url, retries=retries, backoff="200ms")
        for pmode in pmodes["pmodes"]:
            for leg in pmode["legs"]:
                leg["reception_awareness"]["backoff_max"] = "1s"  # a receiver back from an outage is found soon
        return Peer(folder / side, name, key, port, pmodes, settings={"send": SEND, **extra})

    return peer("se", "ap-sweden", SE_KEY, port_se, se), peer("be", "partner-115", BE_KEY, port_be, be), proxy


@contextmanager
def _running(proxy: CountingProxy, *peers: Peer) -> Iterator[None]:
    proxy.start()
    try:
        with ThreadPoolExecutor(len(peers)) as starting:  # they start at once: seconds saved per scenario
            list(starting.map(Peer.start, peers))
        yield
    finally:
        for peer in peers:
            peer.stop()
        proxy.stop()


def _databases(server: services.PostgresServer, count: int) -> list[str]:
    return [server.url(asyncio.run(services.create_postgres_database(server))) for _ in range(count)]


def postgres_outage(
    folder: Path, server: services.PostgresServer, *, messages: int, rate: float, outage: float
) -> Report:
    """Stop the PostgreSQL both access points use for ``outage`` seconds a quarter into the stream (see the module);
    it is started again whatever happens, so a caller may share the server."""
    report = Report(submitted=messages)
    started = time.monotonic()
    se_db, be_db = _databases(server, 2)
    retries = int(outage * 3) + 20  # 1 s apart at most: the receiver is back before the sender gives up
    sender, receiver, proxy = pair_on(folder, se={"database": se_db}, be={"database": be_db}, retries=retries)
    with _running(proxy, receiver, sender):
        stream = Stream([sender], rate, "pg")
        stream.start()
        wait_until(lambda: stream.started() >= messages // 4, "a quarter of the stream", 60)
        server.stop()
        try:
            time.sleep(outage)
        finally:
            server.start()
        restarted = time.monotonic()
        # Submissions go on after the restart: a quarter of the stream at least, whatever the outage took.
        stream.finish(messages, at_least_more=messages // 4)
        stream.join()
        report.submitted = len(stream.answers)
        report.accepted_after_restart = stream.accepted_since(restarted)
        expected = _settle_refusals(stream, sender, report)
        assert_delivered_exactly_once(sender, receiver, expected, timeout=_patience(messages, outage))
    report.delivered = len(expected)
    report.resent_on_wire = sum(1 for count in proxy.posted.values() if count > 1)
    report.seconds = time.monotonic() - started
    return report


def redis_restart(
    folder: Path, server: services.PostgresServer, *, messages: int, rate: float, outage: float
) -> Report:
    """Stop the sender's Redis for ``outage`` seconds and start it empty, a third into the stream."""
    report = Report(submitted=messages)
    started = time.monotonic()
    with services.redis_server() as redis:
        se_db, be_db = _databases(server, 2)
        sender, receiver, proxy = pair_on(
            folder,
            se={"database": se_db, "redis": redis.url(), "instance": "se-1"},
            be={"database": be_db},
            retries=20,
        )
        with _running(proxy, receiver, sender):
            stream = Stream([sender], rate, "redis")
            stream.start()
            wait_until(lambda: stream.started() >= messages // 4, "a quarter of the stream", 60)
            redis.stop()
            time.sleep(outage)
            redis.start()
            restarted = time.monotonic()
            stream.finish(messages, at_least_more=messages // 4)
            stream.join()
            report.submitted = len(stream.answers)
            report.accepted_after_restart = stream.accepted_since(restarted)
            expected = _settle_refusals(stream, sender, report)
            assert report.refused == 0, "the database is up: a Redis outage refuses no submission"
            assert_delivered_exactly_once(sender, receiver, expected, timeout=_patience(messages, outage))
        report.delivered = len(expected)
        report.resent_on_wire = sum(1 for count in proxy.posted.values() if count > 1)
    report.seconds = time.monotonic() - started
    return report


class WebhookBackend:
    """The backend's webhook endpoint in a thread: records every event (id, kind, MessageId, arrival), can hold."""

    def __init__(self) -> None:
        self.port = services.free_port()
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.arrivals: list[tuple[str, str, str, float, str]] = []  # event id, kind, MessageId, time, header id
        self.holding = threading.Event()  # set: answers wait until released
        self.held = 0
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        """Listen."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    def stop(self) -> None:
        """Release what is held and stop."""
        self._released.set()
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def hold(self) -> None:
        """Hold every answer from now on until release."""
        self._released.clear()
        self.holding.set()

    def release(self) -> None:
        """Answer what is held, and everything after at once."""
        self.holding.clear()
        self._released.set()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._event)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _event(self, request: web.Request) -> web.Response:
        document = json.loads(await request.read())
        data = document.get("data") or {}
        with self._lock:
            self.arrivals.append(
                (document["id"], document["event"], str(data.get("message_id")), time.monotonic(),
                 request.headers.get("Webhook-Id", ""))
            )  # fmt: skip
            hold = self.holding.is_set()
            self.held += hold
        if hold:
            while not self._released.is_set():
                await asyncio.sleep(0.02)
            with self._lock:
                self.held -= 1
        return web.Response(status=204)


def _outbox_holder(url: str) -> str | None:
    """The instance that leases the webhook's pending events now, if any."""

    async def fetch() -> str | None:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            row = await connection.fetchrow(
                "SELECT lease_owner FROM outbox WHERE settled_at IS NULL AND lease_owner IS NOT NULL"
                " ORDER BY id LIMIT 1"
            )
        finally:
            await connection.close()
        return None if row is None else str(row["lease_owner"])

    return asyncio.run(fetch())


def instance_killed(folder: Path, server: services.PostgresServer, redis_url: str, *, messages: int) -> Report:
    """Two senders share one PostgreSQL, Redis and storage; the one delivering webhooks is killed mid-run."""
    report = Report(submitted=messages)
    started = time.monotonic()
    backend = WebhookBackend()
    shared_db, be_db = _databases(server, 2)
    port_one, port_two, port_be = services.free_port(), services.free_port(), services.free_port()
    proxy = CountingProxy(port_be)
    se_url = f"http://127.0.0.1:{port_one}/as4"
    hook = {"url": backend.url, "secret": "a-webhook-secret-of-16+", "events": ["receipt"], "backoff": "200ms"}
    shared = {
        "database": shared_db, "redis": redis_url, "storage": str(folder / "shared-storage"), "send": SEND,
        "webhooks": [hook],
    }  # fmt: skip
    one, two = (
        Peer(
            folder / name,
            "ap-sweden",
            SE_KEY,
            port,
            agreements("ap-sweden", se_url, proxy.url, retries=20, backoff="200ms"),
            settings={**shared, "instance": name},
        )
        for name, port in (("se-1", port_one), ("se-2", port_two))
    )
    receiver = Peer(folder / "be", "partner-115", BE_KEY, port_be, agreements("partner-115", se_url, proxy.url),
                    settings={"database": be_db})  # fmt: skip
    instances = {"se-1": one, "se-2": two}
    backend.start()
    try:
        with _running(proxy, receiver, one, two):
            stream = Stream([one, two], messages / 3, "hook")  # the stream takes 3 s
            stream.finish(messages)
            stream.start()
            wait_until(lambda: len(backend.arrivals) >= messages // 3, "a third of the events", _patience(messages, 0))
            backend.hold()
            wait_until(lambda: backend.held > 0, "an event on the wire", 30)
            holder = _outbox_holder(shared_db)
            assert holder in instances, f"nobody holds the webhook's events: {holder!r}"
            killed_at, held = time.monotonic(), backend.held
            victim = instances[holder]
            assert victim.process is not None
            victim.process.kill()
            restart_once_killed(victim, start=False)
            backend.release()
            stream.join()
            survivor = two if victim is one else one
            # Submissions the killed instance never answered are sent again to the survivor, as a backend retries:
            # stored before the kill, the original answer comes back; not stored, they are stored now. Never twice.
            unanswered = stream.ids(0)
            for message_id in unanswered:
                status, _headers = submit(survivor, message_id, stream.number(message_id))
                assert status == 202, (message_id, status)
            expected = stream.ids(202) | unanswered
            assert len(expected) == messages, Counter(code for code, _h in stream.answers.values())
            wait_until(
                lambda: {m for _i, kind, m, _t, _h in backend.arrivals if kind == "receipt"} >= set(expected),
                "a receipt event per message", _patience(messages, 0),
            )  # fmt: skip
            assert_delivered_exactly_once(survivor, receiver, expected, timeout=_patience(messages, 0))
    finally:
        backend.stop()
    ids_per_message: dict[str, set[str]] = {}
    for event_id, _kind, message_id, _at, header in backend.arrivals:
        assert header == event_id, "the Webhook-Id header is the event's id"
        ids_per_message.setdefault(message_id, set()).add(event_id)
    assert all(len(ids) == 1 for ids in ids_per_message.values()), "an event was made twice, with another id"
    counts = Counter(event_id for event_id, *_rest in backend.arrivals)
    twice = {event_id for event_id, count in counts.items() if count > 1}
    first_arrival = {}
    for event_id, _kind, _m, at, _h in backend.arrivals:
        first_arrival.setdefault(event_id, at)
    late = {event_id for event_id in twice if first_arrival[event_id] > killed_at}
    assert not late, f"events repeated that were not in flight at the kill: {late}"
    report.events, report.duplicate_events = len(backend.arrivals), len(twice)
    report.delivered = len(expected)
    report.notes.append(f"killed {holder} while {held} of its events were on the wire")
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> None:
    """python -m tests.outages [--quick]: the three scenarios at full size, a line each."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m tests.outages", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="120 messages and 3 s outages")
    parser.add_argument("--messages", type=int, help="messages per scenario (default 1000)")
    parser.add_argument("--outage", type=float, help="seconds PostgreSQL and Redis stay down (default 10)")
    parser.add_argument("--only", choices=("postgresql", "redis", "killed"), help="run one scenario only")
    parser.add_argument("--keep", action="store_true", help="keep the processes' folders and logs (path printed)")
    args = parser.parse_args(argv)
    messages = args.messages or (120 if args.quick else 1000)
    outage = args.outage or (3.0 if args.quick else 10.0)
    print(f"outages: {messages} messages each, outages of {outage:g} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="outages-") as folder:
        root = Path(tempfile.mkdtemp(prefix="outages-kept-")) if args.keep else Path(folder)
        if args.keep:
            print(f"  folders and logs under {root}", flush=True)
        with services.postgres_server() as server, services.redis_server() as redis:
            if args.only in (None, "postgresql"):
                report = postgres_outage(root / "pg", server, messages=messages, rate=20, outage=outage)
                print(f"  postgresql  {report.line()}", flush=True)
            if args.only in (None, "redis"):
                report = redis_restart(root / "redis", server, messages=messages, rate=20, outage=outage)
                print(f"  redis       {report.line()}", flush=True)
            if args.only in (None, "killed"):
                report = instance_killed(root / "killed", server, redis.url(), messages=messages)
                print(f"  killed      {report.line()}; {'; '.join(report.notes)}", flush=True)


if __name__ == "__main__":
    main()
