"""Access points in the test's own event loop: ``create_app`` on aiohttp test servers, with a manual clock.

``Node`` is one access point (its settings, P-Modes, SQLite store and files in a folder, its server on a loopback
port); ``nodes`` makes Sweden and Belgium with the agreements of ``tests.test_msh_support`` (one-way push,
two-way push-and-push, pull) sharing one ``ManualClock``: a retry, a pull round or a purge happens when the test
advances the clock, never after a real wait, so exchange logic runs in milliseconds and the same way every time.
Waiting for a state polls the store (not the API) until it holds, with a deadline; nothing sleeps a fixed time.
Real processes stay for what needs them: the CLI, TLS, kill -9 and several instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.trace import TracerProvider

from accesspoint.msh import config as config_module
from accesspoint.msh.app import CONTEXT, create_app
from accesspoint.msh.config import load_config
from accesspoint.msh.context import Context
from accesspoint.security.keys import KeyPair
from accesspoint.store import Database, Direction, ManualClock, MessageState, MessageStore, StoredMessage
from accesspoint.store.writer import SqliteWriter
from accesspoint.testing import services
from tests.test_msh import CERTS, TOKEN
from tests.test_msh_support import BE_KEY, SE_KEY, agreements

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = "application/json"


class Node:
    """One access point served from this event loop; ``start`` and ``stop`` may be repeated (a restart)."""

    def __init__(self, folder: Path, port: int, settings: dict[str, Any], clock: ManualClock) -> None:
        self.folder = folder
        self.port = port
        self.clock = clock
        self.base = f"http://127.0.0.1:{port}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "server.yaml").write_text(json.dumps(settings))
        self.server: TestServer | None = None
        self.app: web.Application | None = None
        self.http: aiohttp.ClientSession | None = None
        self.tracer_provider: TracerProvider | None = None  # where its spans go (a test's own SDK provider)

    @property
    def ctx(self) -> Context:
        """What the running access point runs on."""
        assert self.app is not None, "start() first"
        return self.app[CONTEXT]

    @property
    def store(self) -> MessageStore:
        """Its message store."""
        return self.ctx.store

    def write_pmodes(self, pmodes: dict[str, Any]) -> None:
        """Write the P-Mode file (read at the next start)."""
        (self.folder / "pmodes.yaml").write_text(json.dumps(pmodes))

    async def start(self) -> None:
        """Serve on its port."""
        with _keys_loaded_once():
            settings = load_config(self.folder / "server.yaml")
        self.app = create_app(settings, clock=self.clock, tracer_provider=self.tracer_provider)
        self.server = TestServer(self.app, host="127.0.0.1", port=self.port)
        await self.server.start_server()
        self.http = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Stop serving (its supervised tasks end, its store closes)."""
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def call(self, method: str, path: str, data: bytes | None, content_type: str) -> tuple[int, Any]:
        """Call the API with any body; (status, JSON or bytes)."""
        assert self.http is not None
        headers = {**AUTH, "Content-Type": content_type}
        body = None if data is None else io.BytesIO(data)  # aiohttp warns of a large body given as bytes
        async with self.http.request(method, self.base + path, data=body, headers=headers) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if "json" in response.content_type else raw

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Call the API with a JSON body; (status, JSON or bytes)."""
        return await self.call(method, path, None if body is None else json.dumps(body).encode(), JSON)

    async def post_as4(self, body: bytes, content_type: str) -> tuple[int, str, bytes]:
        """POST raw bytes to /as4: (status, Content-Type, body)."""
        assert self.http is not None
        headers = {"Content-Type": content_type}
        async with self.http.post(self.base + "/as4", data=io.BytesIO(body), headers=headers) as response:
            return response.status, response.headers.get("Content-Type", ""), await response.read()

    async def messages(self, **query: str) -> list[dict[str, Any]]:
        """GET /api/v1/messages with the query."""
        status, document = await self.api("GET", "/api/v1/messages?" + "&".join(f"{k}={v}" for k, v in query.items()))
        assert status == 200, document
        return list(document["messages"])

    async def message(self, message_id: str, direction: str = "out") -> dict[str, Any]:
        """GET /api/v1/messages/{id} (200 expected)."""
        status, document = await self.api("GET", f"/api/v1/messages/{message_id}?direction={direction}")
        assert status == 200, document
        return dict(document)

    async def until(
        self, message_id: str, states: set[str], direction: str = "out", timeout: float = 10
    ) -> dict[str, Any]:
        """The message as the API shows it once the store has it in one of ``states``."""
        wanted = {MessageState(s) for s in states}
        found = await eventually(
            lambda: self.store.get(Direction(direction), message_id),
            lambda m: m is not None and m.state in wanted,
            f"{message_id} in {sorted(states)}",
            timeout,
        )
        assert found is not None
        return await self.message(message_id, direction)


_KEYS: dict[tuple[object, ...], KeyPair] = {}


@contextlib.contextmanager
def _keys_loaded_once() -> Iterator[None]:
    """Load each key file once per test session: an RSA key is checked on every load, ~0.1 s of CPU each time.

    (The access point loads its keys once at start; only the tests start access points hundreds of times.)
    """
    original = config_module.load_key_pair

    def cached(path: Path, password: bytes | None, *, certificate: Path | None = None) -> KeyPair:
        key = (path, password, certificate)
        if key not in _KEYS:
            _KEYS[key] = original(path, password, certificate=certificate)
        return _KEYS[key]

    config_module.load_key_pair = cached  # type: ignore[assignment]
    try:
        yield
    finally:
        config_module.load_key_pair = original


async def eventually(read: Callable[[], Any], holds: Callable[[Any], bool], what: str, timeout: float = 10) -> Any:
    """Read until ``holds`` says yes; AssertionError naming ``what`` after ``timeout`` seconds of real time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if holds(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {value}")
        await asyncio.sleep(0.005)  # poll: let the access points' tasks run


def settings(name: str, key: str, port: int, **extra: Any) -> dict[str, Any]:
    """An access point's settings: SQLite (process-crash durability), two workers, revocation off."""
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "pmodes": "pmodes.yaml",
        "storage": "data",
        "instance": name,
        "revocation": False,
        "durability": "process-crash",  # no fsync: nothing here survives the test anyway
        "api_tokens": [TOKEN],
        "tls_trust": str(CERTS / "ca.pem"),  # a small bundle: loading the system's CAs costs ~0.1 s per start
        "send": {"workers": 2, "timeout": "5s", "lease": "10s"},
        "keys": {"signing": {"key": str(CERTS / f"{key}.key.pem"), "certificate": str(CERTS / f"{key}.pem")}},
        **extra,
    }


class Pair:
    """Sweden (``se``) and Belgium (``be``) with their agreements, on one manual clock."""

    def __init__(self, folder: Path, template: Path, **agreed: Any) -> None:
        self.clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        port_se, port_be = services.free_port(), services.free_port()
        self.se_url, self.be_url = f"http://127.0.0.1:{port_se}/as4", f"http://127.0.0.1:{port_be}/as4"
        self.se = Node(folder / "se", port_se, settings("ap-sweden", SE_KEY, port_se), self.clock)
        self.be = Node(folder / "be", port_be, settings("partner-115", BE_KEY, port_be), self.clock)
        for node, name in ((self.se, "ap-sweden"), (self.be, "partner-115")):
            node.write_pmodes(agreements(name, self.se_url, self.be_url, **agreed))
            (node.folder / "data").mkdir()
            shutil.copy(template, node.folder / "data" / "accesspoint.db")

    def configure(self, node: Node, **extra: Any) -> None:
        """Change a node's settings (before it starts)."""
        current = json.loads((node.folder / "server.yaml").read_text())
        (node.folder / "server.yaml").write_text(json.dumps({**current, **extra}))

    async def advance(self, delta: timedelta) -> None:
        """Move the shared clock and let whatever was waiting for it run."""
        await self.clock.advance(delta)
        for _ in range(5):
            await asyncio.sleep(0)

    async def advance_until(
        self, step: timedelta, read: Callable[[], Any], holds: Callable[[Any], bool], what: str
    ) -> Any:
        """Advance the clock by ``step`` until ``holds`` says yes (a periodic task may not be asleep yet when
        the clock first moves; it is the next time)."""

        async def moved() -> Any:
            value = await read()
            if not holds(value):
                await self.advance(step)
            return value

        return await eventually(moved, holds, what)

    async def stop(self) -> None:
        """Stop both."""
        await self.se.stop()
        await self.be.stop()


def stored(message: StoredMessage | None) -> StoredMessage:
    """A message that must be there."""
    assert message is not None
    return message


@contextlib.asynccontextmanager
async def database_away(store: MessageStore, folder: Path) -> AsyncIterator[None]:
    """The store's database unreachable for reads and writes (a server that refuses connections, a SQLite file that
    cannot be opened), then back as it was."""
    reads, writes = store.db, store.writer
    store.db = Database(f"postgresql://nobody@127.0.0.1:{services.free_port()}/none")
    store.writer = SqliteWriter(folder / "no-such-folder" / "store.db", instance=store.instance)
    await store.writer.start()
    try:
        yield
    finally:
        await store.writer.close()
        await store.db.dispose()
        store.db, store.writer = reads, writes
