"""End to end: messages/s and latency between two ``accesspoint serve`` processes on this machine.

Two access points (Sweden sends, Norway receives) run as real processes on loopback with the demo's P-Modes
and a development PKI (``accesspoint keys generate``'s recipe): one eDelivery AS4 1.15 agreement (RSA) and
one 2.0 agreement (Ed25519 + X25519), SQLite (or each its database on one throw-away PostgreSQL with fsync on:
``--database postgresql``), a 4 KB XML payload. A separate load-generator process
(``python -m bench.e2e --generate``, pooled aiohttp client) submits through the backend REST API (JSON,
base64 payload), so neither the generator nor the measuring process competes with the servers' event loops
beyond what it must. Per profile:

- max: a closed loop keeps ``window`` submitted-but-not-yet-delivered messages in flight for ``seconds``
  (60 s for 1.15 by default); messages/s = messages whose receipt was verified (state ``delivered``) in the
  window, per second; steady = the last 10 s against the first 10 s.
- 70 %: an open loop submits at 70 % of that rate, evenly spaced; latency = submit (the generator's clock,
  before the POST) -> delivered (the sender's ``updated_at`` of the ``delivered`` row, same machine clock).
- CPU: user + system time of both servers (from /proc) per delivered message, since the machine is shared;
  the load average alongside; and what both burn idle (ms per second, measured after the warm-up), with its
  share of each max run's CPU per message (large when a loaded machine lets a run deliver few messages).
- ceiling: ``bench.security``'s CPU cost of one message's sending (sign + encrypt + pack) and receiving
  (read, decrypt, verify, signed receipt) in this process: the security + core path alone, each side
  single-threaded, the two sides on two cores at most. Ratio = end-to-end messages/s / ceiling; CPU x = both
  servers' CPU per message / that cost (target: at most 2).
- sizes (``--size N``, repeatable): the 1.15 max run again with payloads of N bytes, fewer in flight as they grow.
- memory: VmRSS of both servers after start, after the warm-up and at the end.
- /metrics: at the end both servers' admin listeners are scraped; the sender's delivered and the receiver's
  received counters must equal the deliveries the sender's database shows.

``python -m bench.e2e [--quick] [--seconds 60] [--workers 8] [--durability power-loss] [--database sqlite]
[--size 204800] [--py-spy DIR]`` runs it alone and prints the table; ``python -m bench --only e2e`` runs it within
``make bench`` (4 KB, 200 KB and 2 MB on SQLite; ``--only e2e-postgresql`` on PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from accesspoint.demo import PARTIES, RECEIVER, SENDER, pmode_document
from accesspoint.demo_common import free_port, key_files
from accesspoint.keys_cli import DevelopmentPki, generate_keys
from accesspoint.security.policy import Profile
from bench import security as security_bench
from bench.ledger import open_ledger

ROOT = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, "-m", "accesspoint", "serve", "--config"]
PAYLOAD_BYTES = 4096
PMODES = {Profile.EDELIVERY_1_15: "letters-1.15", Profile.EDELIVERY_2_0: "letters-2.0"}
LABELS = {Profile.EDELIVERY_1_15: "1.15", Profile.EDELIVERY_2_0: "2.0"}
TARGET_MSG_S = {"1.15": 400.0, "2.0": 500.0}
TARGET_CPU_RATIO = 2.0  # both servers' CPU per message over the security + core cost of one
TARGET_STEADY = 0.90
TARGET_P99_MS = 50.0
LOAD_FRACTION = 0.7
DRAIN_TIMEOUT = 180.0
_TICKS = os.sysconf("SC_CLK_TCK")


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mib(pid: int) -> float:
    """VmRSS of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process, of its children that exited and were reaped, and of its live children (PostgreSQL's
    postmaster and its backends: a backend's time moves to the postmaster's children fields when it ends)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(v) for v in fields[11:15]) / _TICKS  # utime, stime, cutime, cstime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            child = stat.read_text().rsplit(")", 1)[1].split()
            if int(child[1]) == pid:
                total += (int(child[11]) + int(child[12])) / _TICKS
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICKS, sum(values) / _TICKS


# ------------------------------------------------------------------------------------------ servers


@dataclass
class DatabaseServer:
    """The PostgreSQL cluster both access points use: its CPU and its transactions, which the servers' own
    /proc figures do not include."""

    postmaster: int
    admin_dsn: str

    def cpu_seconds(self) -> float:
        """The postmaster's and every backend's CPU so far."""
        return tree_cpu_seconds(self.postmaster)

    def transactions(self) -> dict[str, int]:
        """Committed + rolled back transactions so far, per database (the statistics lag up to about 1 s)."""
        return asyncio.run(self._query(
            "SELECT datname, xact_commit + xact_rollback FROM pg_stat_database WHERE datname LIKE 'test_%'"
        ))  # fmt: skip

    def last_statements(self) -> dict[str, int]:
        """Each client connection's current or last statement (its first 80 characters), counted."""
        return asyncio.run(self._query(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 80), count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1"
        ))  # fmt: skip

    async def _query(self, sql: str) -> dict[str, int]:
        import asyncpg  # type: ignore[import-untyped]  # an optional driver without type information

        connection = await asyncpg.connect(self.admin_dsn)
        try:
            await connection.execute("SELECT pg_stat_clear_snapshot()")
            return {str(name): int(value) for name, value in await connection.fetch(sql)}
        finally:
            await connection.close()


class Server:
    """One ``accesspoint serve`` process with its settings, P-Modes, database and files in a folder."""

    def __init__(self, name: str, folder: Path, pki: DevelopmentPki, ports: dict[str, int], settings: dict[str, Any]):
        self.name = name
        self.folder = folder
        self.port = ports[name]
        self.token = secrets.token_urlsafe(24)
        self.admin_port, self.admin_token = free_port(), secrets.token_urlsafe(24)  # GET /metrics
        folder.mkdir(parents=True)
        endpoints = {party: f"http://127.0.0.1:{port}/as4" for party, port in ports.items()}
        (folder / "pmodes.yaml").write_text(json.dumps(pmode_document(name, pki, endpoints)))  # JSON is YAML
        keys = pki.parties[name]
        document = {
            "listen": {"host": "127.0.0.1", "port": self.port},
            "pmodes": "pmodes.yaml",
            "storage": "data",
            "instance": name,
            "revocation": False,
            "api_tokens": [self.token],
            "admin": {"host": "127.0.0.1", "port": self.admin_port, "tokens": [self.admin_token]},
            "keys": {"signing": [key_files(keys.rsa), key_files(keys.ed25519)], "decryption": [key_files(keys.x25519)]},
            **settings,
        }
        (folder / "server.yaml").write_text(json.dumps(document))
        self.process: subprocess.Popen[bytes] | None = None
        self.spy: subprocess.Popen[bytes] | None = None
        self.arguments: list[str] = []  # more for ``accesspoint serve`` (bench.console's --console)

    @property
    def ledger(self) -> str:
        """Where its messages table is read from: its settings' database, else its default SQLite file."""
        configured = json.loads((self.folder / "server.yaml").read_text()).get("database")
        return str(configured or f"sqlite:///{self.folder / 'data' / 'accesspoint.db'}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start the process and wait until /health answers."""
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*SERVE, str(self.folder / "server.yaml"), *self.arguments],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}")

    def record(self, output: Path, seconds: float) -> None:
        """Sample the process with py-spy for ``seconds`` (native frames included) into a speedscope file."""
        command = ["py-spy", "record", "--pid", str(self.pid), "--duration", str(int(seconds)), "--rate", "200"]
        spy = Path(sys.executable).parent / "py-spy"
        command[0] = str(spy) if spy.exists() else command[0]
        command += ["--format", "raw", "--output", str(output), "--nonblocking"]
        self.spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL after 20 s."""
        if self.spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.spy.wait(timeout=30)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def counted(self, series: str, **labels: str) -> float:
        """The sum of a counter's samples with ``labels`` on the admin listener's /metrics (scraped now)."""
        from prometheus_client.parser import text_string_to_metric_families

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}/metrics", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (a fixed loopback URL)
            text = answer.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == series and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def log_tail(self, lines: int = 20) -> str:
        text = (self.folder / "server.log").read_text("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def access_points(
    folder: Path, *, workers: int, durability: str, databases: dict[str, str] | None = None
) -> Iterator[tuple[Server, Server]]:
    """Sweden's and Norway's access points, running; both stopped on the way out. ``databases``: a database URL
    per party (else each has its SQLite file)."""
    pki = generate_keys(folder / "keys", PARTIES)
    ports = {name: free_port() for name in PARTIES}
    settings: dict[str, Any] = {"send": {"workers": workers, "timeout": "30s", "lease": "2m"}, "durability": durability}

    def of(name: str) -> dict[str, Any]:
        return settings if databases is None else {**settings, "database": databases[name]}

    sender = Server(SENDER, folder / SENDER, pki, ports, of(SENDER))
    receiver = Server(RECEIVER, folder / RECEIVER, pki, ports, of(RECEIVER))
    try:
        receiver.start()
        sender.start()
        yield sender, receiver
    finally:
        sender.stop()
        receiver.stop()


# ------------------------------------------------------------------------------- the load generator


@dataclass(frozen=True, slots=True)
class Load:
    """What one generator run does: a closed loop of ``window`` in flight, or an open loop at ``rate``/s."""

    url: str
    token: str
    pmode: str
    prefix: str
    seconds: float
    ledger: str  # the sender's database URL, read to see how many of this run's messages are settled
    window: int = 0
    rate: float = 0.0
    connections: int = 32
    payload_bytes: int = PAYLOAD_BYTES


async def generate(load: Load) -> dict[str, Any]:
    """Submit for ``load.seconds``; the (message id, submit time) of each accepted submission."""
    size = load.payload_bytes
    text = os.urandom(size // 2 + 1).hex().encode()[: size - len(b"<letter></letter>")]
    payload = base64.b64encode(b"<letter>" + text + b"</letter>")  # exactly size bytes of XML
    template = json.dumps(
        {
            "pmode": load.pmode,
            "message_id": "\x00",
            "properties": {"originalSender": "urn:se:bench", "finalRecipient": "urn:no:bench"},
            "payloads": [{"content_id": "letter@bench", "mime_type": "application/xml", "data": payload.decode()}],
        }
    )
    before, after = template.split('"\\u0000"')
    submitted: list[tuple[str, float]] = []
    errors: list[str] = []
    ledger = await open_ledger(load.ledger)
    first_id = await ledger.last_id()
    headers = {"Authorization": f"Bearer {load.token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=load.connections)
    cpu_start = time.process_time()
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        tasks: set[asyncio.Task[None]] = set()

        async def submit(number: int) -> None:
            message_id = f"{load.prefix}-{number}@bench"
            at = time.time()
            try:
                async with session.post(load.url, data=f'{before}"{message_id}"{after}') as response:
                    await response.read()
                    if response.status == 202:
                        submitted.append((message_id, at))
                    else:
                        errors.append(f"HTTP {response.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(type(exc).__name__)

        def launch(number: int) -> None:
            task = asyncio.create_task(submit(number))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        start = time.time()
        end = start + load.seconds
        launched = 0
        while (now := time.time()) < end:
            if load.rate > 0:
                due = start + launched / load.rate
                if due > now:
                    await asyncio.sleep(min(due - now, end - now))
                    continue
                launch(launched)
                launched += 1
            else:
                in_flight = launched - len(errors) - await ledger.settled(first_id)
                for _ in range(max(0, load.window - in_flight)):
                    launch(launched)
                    launched += 1
                await asyncio.sleep(0.01)
        ended = time.time()
        if tasks:
            await asyncio.gather(*tasks)
    await ledger.close()
    return {
        "started": start,
        "ended": ended,
        "first_id": first_id,
        "submitted": submitted,
        "errors": errors,
        "cpu_seconds": time.process_time() - cpu_start,
    }


def run_generator(load: Load) -> dict[str, Any]:
    """The generator in its own process (``python -m bench.e2e --generate``): its JSON result."""
    command = [sys.executable, "-m", "bench.e2e", "--generate", json.dumps(_asdict(load))]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _asdict(load: Load) -> dict[str, Any]:
    return {name: getattr(load, name) for name in Load.__slots__}


# -------------------------------------------------------------------------------------- one phase


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def settled_rows(
    ledger_url: str, first_id: int, expected: int, timeout: float = DRAIN_TIMEOUT
) -> list[tuple[str, str, float]]:
    """Once every message of the run is delivered or failed: (MessageId, state, epoch of its last move) of each."""
    ledger = await open_ledger(ledger_url)
    try:
        deadline = time.monotonic() + timeout
        while await ledger.settled(first_id) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every message was settled within {timeout:.0f} s")
            await asyncio.sleep(0.2)
        return await ledger.rows(first_id)
    finally:
        await ledger.close()


def phase(sender: Server, receiver: Server, load: Load, database: DatabaseServer | None = None) -> dict[str, Any]:
    """Run the generator, wait until its messages are settled, and measure: rates, latencies, CPU, memory."""
    database_before = _database_use(database)
    cpu_before = cpu_seconds(sender.pid), cpu_seconds(receiver.pid)
    clock_before = time.monotonic()
    busy_before = machine_busy()
    load_average = os.getloadavg()
    generated = run_generator(load)
    submitted: dict[str, float] = dict(generated["submitted"])
    rows = asyncio.run(settled_rows(load.ledger, generated["first_id"], len(submitted)))
    cpu_after = cpu_seconds(sender.pid), cpu_seconds(receiver.pid)
    cpu_window = time.monotonic() - clock_before
    database_after = _database_use(database)
    busy_after = machine_busy()
    start, end = generated["started"], generated["ended"]
    delivered = {mid: at for mid, state, at in rows if state == "delivered" and mid in submitted}
    failed = sum(1 for _mid, state, _at in rows if state == "failed")
    latencies = [(delivered[mid] - at) * 1000 for mid, at in submitted.items() if mid in delivered]
    times = sorted(delivered.values())
    seconds = end - start
    in_window = [t for t in times if start <= t < end]
    edge = min(10.0, seconds / 3)
    first = sum(1 for t in in_window if t < start + edge) / edge
    last = sum(1 for t in in_window if t >= end - edge) / edge
    cpu = sum(cpu_after) - sum(cpu_before)
    busy = (busy_after[0] - busy_before[0]) / max(busy_after[1] - busy_before[1], 1e-9)
    return {
        "window": load.window,
        "rate": load.rate,
        "payload_bytes": load.payload_bytes,
        "seconds": seconds,
        "submitted": len(submitted),
        "submit_errors": len(generated["errors"]),
        "delivered": len(delivered),
        "failed": failed,
        "msg_per_s": len(in_window) / seconds,
        "submitted_per_s": len(submitted) / seconds,
        "first_msg_per_s": first,
        "last_msg_per_s": last,
        "edge_seconds": edge,
        "steady": last / first if first else float("nan"),
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
        "sender_cpu_s": cpu_after[0] - cpu_before[0],
        "receiver_cpu_s": cpu_after[1] - cpu_before[1],
        "cpu_ms_per_msg": cpu * 1000 / max(len(delivered), 1),
        "cpu_window_s": cpu_window,  # the wall time the CPU figures span (the generator's run and the drain)
        "generator_cpu_s": generated["cpu_seconds"],
        "machine_busy": busy * (os.cpu_count() or 1),  # cores busy on average (everyone's)
        "load_average": load_average,
        "rss_mib": [rss_mib(sender.pid), rss_mib(receiver.pid)],
        **_database_figures(database_before, database_after, max(len(delivered), 1)),
    }


def _database_use(database: DatabaseServer | None) -> tuple[float, int] | None:
    if database is None:
        return None
    return database.cpu_seconds(), sum(database.transactions().values())


def _database_figures(
    before: tuple[float, int] | None, after: tuple[float, int] | None, delivered: int
) -> dict[str, float]:
    """PostgreSQL's own CPU and transactions (both access points' databases) per delivered message."""
    if before is None or after is None:
        return {}
    return {
        "database_cpu_ms_per_msg": (after[0] - before[0]) * 1000 / delivered,
        "database_transactions_per_msg": (after[1] - before[1]) / delivered,
    }


def idle_cpu(
    sender: Server, receiver: Server, seconds: float, database: DatabaseServer | None = None
) -> dict[str, Any]:
    """Both servers' CPU with nothing to do (timers, pollers, the P-Mode watcher), milliseconds per second; on
    PostgreSQL also its CPU, transactions per second and what the connections ran last."""
    database_before = _database_use(database)
    before, started = cpu_seconds(sender.pid) + cpu_seconds(receiver.pid), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    idle: dict[str, Any] = {"servers": (cpu_seconds(sender.pid) + cpu_seconds(receiver.pid) - before) * 1000 / elapsed}
    database_after = _database_use(database)
    if database is not None and database_before is not None and database_after is not None:
        idle["database"] = (database_after[0] - database_before[0]) * 1000 / elapsed
        idle["database_transactions_per_s"] = (database_after[1] - database_before[1]) / elapsed
        idle["database_statements"] = database.last_statements()
    return idle


# ---------------------------------------------------------------------------------------- the whole


def ceiling(profile: Profile, *, quick: bool) -> dict[str, Any]:
    """Per-message CPU cost of the security + core path on each side (``bench.security``), as messages/s."""
    measured = security_bench.run_profile(profile, seconds=0.3 if quick else 1.0, repeats=1 if quick else 3)
    send_us = 1e6 / measured["send_per_s"]
    receive_us = 1e6 / measured["receive_per_s"]
    cores = min(os.cpu_count() or 1, 2)
    # Each side is one event loop (one core at most); both together share the machine's cores.
    msg_s = min(1e6 / send_us, 1e6 / receive_us, cores * 1e6 / (send_us + receive_us))
    return {"send_us": send_us, "receive_us": receive_us, "msg_per_s": msg_s}


@contextlib.contextmanager
def _databases(database: str) -> Iterator[tuple[dict[str, str] | None, DatabaseServer | None]]:
    """Each party's database URL: None on SQLite (their default files); on PostgreSQL a database each on one
    throw-away server with fsync and synchronous commits on (what ``durability: power-loss`` promises)."""
    if database == "sqlite":
        yield None, None
        return
    from accesspoint.testing import services  # PostgreSQL started the way the tests start it

    reason = services.missing_postgres()
    if reason is not None:
        raise RuntimeError(f"PostgreSQL: {reason}")
    with services.postgres_server(durable=True) as server:
        names = {party: asyncio.run(services.create_postgres_database(server)) for party in PARTIES}
        assert server.data is not None, "a server started here"
        postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
        yield {party: server.dsn(name) for party, name in names.items()}, DatabaseServer(postmaster, server.dsn())


def run(
    *,
    quick: bool = False,
    seconds: float | None = None,
    workers: int = 8,
    window: int = 64,
    durability: str = "power-loss",
    database: str = "sqlite",
    profiles: tuple[Profile, ...] = tuple(Profile),
    sizes: tuple[int, ...] = (),
    py_spy: Path | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Both profiles through one pair of access points (1.15 gets the long steady run), then the 1.15 max run
    again for each payload size in ``sizes``."""
    steady_seconds = seconds or (10.0 if quick else 60.0)
    other_seconds = 5.0 if quick else 20.0
    latency_seconds = 5.0 if quick else 15.0
    result: dict[str, Any] = {
        "durability": durability,
        "database": database,
        "workers": workers,
        "window": window,
        "payload_bytes": PAYLOAD_BYTES,
        "load_average_start": os.getloadavg(),
        "ceilings": {LABELS[p]: ceiling(p, quick=quick) for p in profiles},
        "profiles": {},
        "sizes": {},
    }
    folder = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        with (
            _databases(database) as (urls, database_server),
            access_points(folder, workers=workers, durability=durability, databases=urls) as (sender, receiver),
        ):
            url = f"http://127.0.0.1:{sender.port}/api/v1/messages"
            result["rss_start_mib"] = [rss_mib(sender.pid), rss_mib(receiver.pid)]

            def load(profile: Profile, name: str, length: float, **how: Any) -> Load:
                prefix = f"{LABELS[profile]}-{name}"
                return Load(url, sender.token, PMODES[profile], prefix, length, sender.ledger, **how)

            phases: list[dict[str, Any]] = []
            for profile in profiles:
                warm = load(profile, "warm", 2.0 if quick else 5.0, window=window)
                phases.append(phase(sender, receiver, warm, database_server))
            result["rss_warm_mib"] = [rss_mib(sender.pid), rss_mib(receiver.pid)]
            # On a loaded machine a run delivers few messages, and what the servers burn idle weighs on each.
            idle = idle_cpu(sender, receiver, 2.0 if quick else 5.0, database_server)
            result["idle_cpu_ms_per_s"] = idle.pop("servers")
            result["idle_database"] = idle
            for profile in profiles:
                length = steady_seconds if profile is Profile.EDELIVERY_1_15 else other_seconds
                if py_spy is not None and profile is profiles[0]:
                    py_spy.mkdir(parents=True, exist_ok=True)
                    for server in (sender, receiver):
                        server.record(py_spy / f"{server.name}-{LABELS[profile]}.txt", min(length, 30))
                top = phase(sender, receiver, load(profile, "max", length, window=window), database_server)
                rate = LOAD_FRACTION * top["msg_per_s"]
                at_70 = phase(sender, receiver, load(profile, "70", latency_seconds, rate=rate), database_server)
                result["profiles"][LABELS[profile]] = {"max": top, "load_70": at_70}
            for size in sizes:
                # Fewer in flight as payloads grow: 64 messages of 2 MB are 128 MB in flight on each side.
                fewer = max(4, min(window, window * PAYLOAD_BYTES * 16 // size))
                sized = load(Profile.EDELIVERY_1_15, f"size{size}", other_seconds, window=fewer, payload_bytes=size)
                result["sizes"][str(size)] = phase(sender, receiver, sized, database_server)
            result["rss_end_mib"] = [rss_mib(sender.pid), rss_mib(receiver.pid)]
            phases += [run_ for runs in result["profiles"].values() for run_ in runs.values()]
            phases += list(result["sizes"].values())
            # /metrics against the ledger: every delivery counted once on each side.
            result["metrics"] = {
                "ledger_delivered": sum(run_["delivered"] for run_ in phases),
                "sender_delivered": sender.counted("as4_messages_sent_total", result="delivered"),
                "receiver_received": receiver.counted("as4_messages_received_total", result="received"),
            }
            result["log_bytes"] = [(s.folder / "server.log").stat().st_size for s in (sender, receiver)]
    finally:
        if keep:
            result["folder"] = str(folder)
        else:
            subprocess.run(["rm", "-rf", str(folder)], check=False)
    result["load_average_end"] = os.getloadavg()
    return result


def cpu_ratio(run_: dict[str, Any], limit: dict[str, Any]) -> float:
    """Both servers' CPU per delivered message over the security + core cost of one message (send + receive)."""
    return float(run_["cpu_ms_per_msg"] * 1000 / (limit["send_us"] + limit["receive_us"]))


def print_result(result: dict[str, Any], say: Callable[[str], None] = _say) -> None:
    """The table ``python -m bench`` prints."""
    load_start, load_end = result["load_average_start"], result["load_average_end"]
    backend = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[result.get("database", "sqlite")]
    say(
        f"End to end between two `accesspoint serve` processes ({backend}, durability {result['durability']},"
        f" {result['workers']} send workers), {result['payload_bytes']} B XML payload submitted as JSON by a"
        f" separate aiohttp load generator; load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at"
        f" the end ({os.cpu_count()} CPUs; msg/s and latencies stretch with the machine's load, CPU per message"
        " much less)"
    )
    say(
        f"  {'profile':7} {'load':>11} {'secs':>5} {'msg/s':>7} {'first':>6} {'last':>6} {'steady':>6}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/msg':>10} {'CPU x':>6} {'busy':>5} {'ceiling':>8} {'ratio':>6}"
    )
    for label, runs in result["profiles"].items():
        limit = result["ceilings"][label]
        for name, run_ in runs.items():
            how = f"{run_['window']} in flight" if name == "max" else f"{run_['rate']:.0f}/s (70 %)"
            ratio = run_["msg_per_s"] / limit["msg_per_s"]
            say(
                f"  {label:7} {how:>11} {run_['seconds']:>5.0f} {run_['msg_per_s']:>7.1f}"
                f" {run_['first_msg_per_s']:>6.0f} {run_['last_msg_per_s']:>6.0f} {run_['steady']:>6.2f}"
                f" {run_['p50_ms']:>7.1f} {run_['p99_ms']:>7.1f} {run_['cpu_ms_per_msg']:>10.2f}"
                f" {cpu_ratio(run_, limit):>6.2f} {run_['machine_busy']:>5.2f} {limit['msg_per_s']:>8.0f}"
                f" {ratio:>6.3f}"
            )
            if run_["failed"] or run_["submit_errors"]:
                say(f"          {run_['failed']} failed, {run_['submit_errors']} submissions refused")
    say(
        "  first/last = msg/s in the first and last 10 s; CPU ms/msg = both servers' user + system time per"
        " delivered message; CPU x = that over the security + core CPU cost of one message (send + receive,"
        " bench.security, measured in this run); busy = cores busy on average (everyone's); ceiling = the"
        " security + core cost as msg/s"
    )
    for label, limit in result["ceilings"].items():
        say(
            f"  ceiling {label}: send {limit['send_us']:.0f} us + receive {limit['receive_us']:.0f} us CPU per"
            f" message = {(limit['send_us'] + limit['receive_us']) / 1000:.2f} ms -> {limit['msg_per_s']:.0f} msg/s"
        )
    idle = result.get("idle_cpu_ms_per_s")
    if idle is not None:
        shares = ", ".join(
            f"{label} max {idle * runs['max']['cpu_window_s'] / max(runs['max']['delivered'], 1):.2f}"
            for label, runs in result["profiles"].items()
            if "cpu_window_s" in runs["max"]
        )
        say(
            f"  idle: both servers use {idle:.1f} ms of CPU per second with nothing to do (timers, pollers); of the"
            f" CPU ms/msg above that is ({shares}) ms at this run's rates"
        )
    database = result.get("idle_database") or {}
    if database:
        say(
            f"  idle PostgreSQL: {database['database']:.1f} ms of CPU and"
            f" {database['database_transactions_per_s']:.1f} transactions per second; connections last ran"
            f" {json.dumps(database['database_statements'])}"
        )
    for label, runs in result["profiles"].items():
        for name, run_ in runs.items():
            if "database_cpu_ms_per_msg" in run_:
                say(
                    f"  PostgreSQL {label} {name}: {run_['database_cpu_ms_per_msg']:.2f} ms of its CPU and"
                    f" {run_['database_transactions_per_msg']:.2f} transactions per delivered message (both"
                    " databases; not in CPU ms/msg above)"
                )
    for size, run_ in result.get("sizes", {}).items():
        megabytes = run_["msg_per_s"] * int(size) / 1e6
        say(
            f"  1.15, {int(size):,} B payloads, {run_['window']} in flight: {run_['msg_per_s']:.1f} msg/s"
            f" ({megabytes:.1f} MB/s of payload), p50 {run_['p50_ms']:.0f} ms, p99 {run_['p99_ms']:.0f} ms,"
            f" CPU {run_['cpu_ms_per_msg']:.2f} ms/msg"
            + (
                f"; {run_['failed']} failed, {run_['submit_errors']} refused"
                if run_["failed"] or run_["submit_errors"]
                else ""
            )
        )
    rss = [result["rss_start_mib"], result["rss_warm_mib"], result["rss_end_mib"]]
    say(
        f"  RSS sender / receiver: {rss[0][0]:.0f} / {rss[0][1]:.0f} MiB after start, {rss[1][0]:.0f} /"
        f" {rss[1][1]:.0f} after the warm-up, {rss[2][0]:.0f} / {rss[2][1]:.0f} at the end"
    )
    checks = []
    for label, runs in result["profiles"].items():
        top, at_70 = runs["max"], runs["load_70"]
        checks += [
            (f">= {TARGET_MSG_S[label]:.0f} msg/s ({label})", top["msg_per_s"] >= TARGET_MSG_S[label]),
            (
                f"CPU <= {TARGET_CPU_RATIO:.0f}x security + core ({label})",
                cpu_ratio(top, result["ceilings"][label]) <= TARGET_CPU_RATIO,
            ),
        ]
        if label == "1.15":
            checks += [
                (f"last 10 s >= {TARGET_STEADY:.0%} of the first", top["steady"] >= TARGET_STEADY),
                (f"p99 < {TARGET_P99_MS:.0f} ms at 70 %", at_70["p99_ms"] < TARGET_P99_MS),
            ]
    metrics = result.get("metrics")
    if metrics is not None:
        say(
            f"  /metrics: sender as4_messages_sent_total{{result=delivered}} {metrics['sender_delivered']:.0f},"
            f" receiver as4_messages_received_total{{result=received}} {metrics['receiver_received']:.0f};"
            f" delivered per the sender's database {metrics['ledger_delivered']}"
        )
        agree = metrics["sender_delivered"] == metrics["receiver_received"] == metrics["ledger_delivered"]
        checks.append(("/metrics counts = the database's", agree))
    growth = max(rss[2][0] - rss[1][0], rss[2][1] - rss[1][1])
    checks.append(("memory flat (< 20 MiB growth after the warm-up)", growth < 20))
    say("  targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks))


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.e2e``: run and print; ``--generate JSON`` is the load generator's own entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="10 s steady run, 5 s others")
    parser.add_argument("--seconds", type=float, help="the 1.15 steady run (default 60 s)")
    parser.add_argument("--workers", type=int, default=8, help="send workers of each access point")
    parser.add_argument("--window", type=int, default=64, help="messages in flight in the max runs")
    parser.add_argument(
        "--durability", choices=("power-loss", "process-crash"), default="power-loss", help="the servers' setting"
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite", help="the servers' store")
    parser.add_argument("--profile", choices=("1.15", "2.0"), action="append", help="only these profiles")
    parser.add_argument("--size", type=int, action="append", default=[], help="also 1.15 with payloads of N bytes")
    parser.add_argument("--py-spy", type=Path, help="record both servers during the first max run into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the servers' folder (logs, databases)")
    args = parser.parse_args(argv)
    if args.generate:
        sys.stdout.write(json.dumps(asyncio.run(generate(Load(**json.loads(args.generate))))) + "\n")
        return
    chosen = tuple(p for p in Profile if args.profile is None or LABELS[p] in args.profile)
    result = run(
        quick=args.quick,
        seconds=args.seconds,
        workers=args.workers,
        window=args.window,
        durability=args.durability,
        database=args.database,
        profiles=chosen,
        sizes=tuple(args.size),
        py_spy=args.py_spy,
        keep=args.keep,
    )
    print_result(result)


if __name__ == "__main__":
    main()
