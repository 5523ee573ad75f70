"""Webhooks from access points in this event loop to a small receiver: signed events, retried until 2xx."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from accesspoint.core.errors import ErrorCode
from accesspoint.msh.webhooks import ID_HEADER
from accesspoint.servicekit.webhooks import EVENT_HEADER, SIGNATURE_HEADER, signature
from accesspoint.testing import services
from tests.inmemory import Pair, eventually
from tests.test_msh_exchange import SOAP12, _error_signal, _keys, _pull
from tests.test_msh_support import submission

SECRET = "webhook-secret-0123456789"


class Receiver:
    """An aiohttp app that refuses each URL's first delivery with 503 and records the rest after checking them."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.refused: set[str] = set()
        self.port = services.free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on its port."""
        app = web.Application()
        app.router.add_post("/hooks/{name}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    def hook(self, name: str, *events: str, backoff: str = "1s") -> dict[str, Any]:
        """A webhook setting pointing here."""
        url = f"http://127.0.0.1:{self.port}/hooks/{name}"
        return {"url": url, "events": list(events), "secret": SECRET, "backoff": backoff}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        name = request.match_info["name"]
        if name not in self.refused:
            self.refused.add(name)
            return web.Response(status=503)
        assert request.headers[SIGNATURE_HEADER] == signature(SECRET, body)
        event = json.loads(body)
        assert request.headers[EVENT_HEADER] == event["event"]
        assert request.headers[ID_HEADER] == event["id"]
        self.events.setdefault(name, []).append(event)
        return web.Response(status=204)

    async def wait(self, name: str, count: int) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            return self.events.get(name, [])

        events: list[dict[str, Any]] = await eventually(read, lambda e: len(e) >= count, f"{count} events at {name}")
        return events

    async def refusal(self, name: str) -> None:
        async def read() -> set[str]:
            return self.refused

        await eventually(read, lambda refused: name in refused, f"the first delivery to {name}")


@pytest.fixture
async def hooks() -> AsyncIterator[Receiver]:
    """A webhook receiver (not yet listening); stopped after the test."""
    made = Receiver()
    yield made
    await made.stop()


async def test_webhooks_get_signed_events_for_received_delivered_and_failed_messages(
    pair_factory: Callable[..., Pair], hooks: Receiver
) -> None:
    """message-received at the receiver, receipt and error at the sender; each first try refused, then retried."""
    await hooks.start()
    pair = pair_factory()
    sweden, belgium = pair.se, pair.be
    pair.configure(sweden, webhooks=[hooks.hook("se", "receipt", "error")])
    pair.configure(belgium, webhooks=[hooks.hook("be", "message-received")])
    await sweden.start()
    await belgium.start()
    assert (await sweden.api("POST", "/api/v1/messages", submission("se-to-be", b"<a/>", "w1@se")))[0] == 202
    await hooks.refusal("be")
    await hooks.refusal("se")

    async def events() -> dict[str, list[dict[str, Any]]]:
        return hooks.events

    # The clock runs past each webhook's backoff (1 s) until both retried.
    await pair.advance_until(timedelta(seconds=1), events, lambda found: len(found) == 2, "both retries")
    (received,) = await hooks.wait("be", 1)
    assert (received["event"], received["data"]["message_id"]) == ("message-received", "w1@se")
    assert received["data"]["state"] == "received" and received["data"]["direction"] == "in"
    (delivered,) = await hooks.wait("se", 1)
    assert (delivered["event"], delivered["data"]["state"]) == ("receipt", "delivered")

    # A pull-leg message is pulled by the test (as Belgium would) and answered with an error signal.
    await belgium.stop()
    assert (await sweden.api("POST", "/api/v1/messages", submission("be-pulls-from-se", b"<b/>", "w2@se")))[0] == 202
    assert (await _pull(sweden, _keys("partner-115")))[0] == 200
    error = _error_signal(_keys("partner-115"), "w2@se", ErrorCode.DELIVERY_FAILURE)
    assert (await sweden.post_as4(error, SOAP12))[0] == 200
    _, failed = await hooks.wait("se", 2)
    assert (failed["event"], failed["data"]["message_id"]) == ("error", "w2@se")
    assert failed["data"]["last_error"]["code"] == ErrorCode.DELIVERY_FAILURE.code
    assert hooks.refused == {"se", "be"}
    assert len(hooks.events["be"]) == 1


def _outbox(database: Path) -> list[tuple[str, str | None]]:
    """(event id, outcome) of every row of an access point's outbox, oldest first."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return [(str(i), o) for i, o in connection.execute("SELECT event_id, outcome FROM outbox ORDER BY id")]


async def test_undelivered_events_wait_in_the_outbox_across_a_restart(
    pair_factory: Callable[..., Pair], hooks: Receiver
) -> None:
    """The backend is down while a message is delivered: its event waits in the database's outbox, and after a
    restart of the sender it arrives, with an event an earlier version left as a file in storage/webhooks."""
    pair = pair_factory()
    sweden, belgium = pair.se, pair.be
    hook = hooks.hook("se", "receipt", backoff="5m")
    pair.configure(sweden, webhooks=[hook])
    database = sweden.folder / "data" / "accesspoint.db"
    await belgium.start()
    await sweden.start()
    assert (await sweden.api("POST", "/api/v1/messages", submission("se-to-be", b"<a/>", "o1@se")))[0] == 202
    assert (await sweden.until("o1@se", {"delivered", "failed"}))["state"] == "delivered"
    ((pending, outcome),) = _outbox(database)
    assert outcome is None
    await sweden.stop()

    legacy = sweden.folder / "data" / "webhooks" / hashlib.sha256(hook["url"].encode()).hexdigest()[:16]
    legacy.mkdir(parents=True)
    older = {"id": "legacy-1", "event": "receipt", "at": "2026-01-01T00:00:00+00:00", "data": {"message_id": "x"}}
    (legacy / "00000000000000000001-legacy-1.json").write_text(json.dumps(older))
    hooks.refused.add("se")  # take the first delivery
    await hooks.start()
    await sweden.start()
    first, second = await hooks.wait("se", 2)
    assert (first["id"], first["event"], first["data"]["message_id"]) == (pending, "receipt", "o1@se")
    assert second == older

    async def rows() -> list[tuple[str, str | None]]:
        return _outbox(database)

    delivered = [(pending, "delivered"), ("legacy-1", "delivered")]
    await eventually(rows, lambda found: found == delivered, "both events settled as delivered")
    assert list(legacy.iterdir()) == []
