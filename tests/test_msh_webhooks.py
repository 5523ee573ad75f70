"""Webhooks from real access point processes to a small receiver in the test: signed events, retried until 2xx."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from accesspoint.core.errors import ErrorCode
from accesspoint.msh.webhooks import EVENT_HEADER, ID_HEADER, SIGNATURE_HEADER, signature
from tests.test_msh import _free_port
from tests.test_msh_exchange import SOAP12, _error_signal, _keys, _pull
from tests.test_msh_support import pair, running, submission

SECRET = "webhook-secret-0123456789"
T = TypeVar("T")


class Receiver:
    """An aiohttp app that refuses each URL's first delivery with 503 and records the rest after checking them."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.refused: set[str] = set()

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

    async def wait(self, name: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        for _ in range(int(timeout * 10)):
            if len(self.events.get(name, [])) >= count:
                return self.events[name]
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name}: {self.events.get(name)}")


async def _off_loop(call: Callable[..., T], *args: Any) -> T:
    # The peers' helpers block; the receiver must keep answering meanwhile.
    return await asyncio.to_thread(call, *args)


async def test_webhooks_get_signed_events_for_received_delivered_and_failed_messages(tmp_path: Path) -> None:
    """message-received at the receiver, receipt and error at the sender; each first try refused, then retried."""
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{name}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    def hook(name: str, *events: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{port}/hooks/{name}"
        return {"url": url, "events": list(events), "secret": SECRET, "backoff": "100ms"}

    sweden, belgium = pair(
        tmp_path,
        se={"webhooks": [hook("se", "receipt", "error")]},
        be={"webhooks": [hook("be", "message-received")]},
    )
    try:
        with running(sweden):
            with running(belgium):
                body = submission("se-to-be", b"<a/>", "w1@se")
                assert (await _off_loop(sweden.api, "POST", "/api/v1/messages", body))[0] == 202
                (received,) = await receiver.wait("be", 1)
                assert (received["event"], received["data"]["message_id"]) == ("message-received", "w1@se")
                assert received["data"]["state"] == "received" and received["data"]["direction"] == "in"
                (delivered,) = await receiver.wait("se", 1)
                assert (delivered["event"], delivered["data"]["state"]) == ("receipt", "delivered")
            # Belgium is down (it would pull the next message itself): the test pulls it and sends an error.
            body = submission("be-pulls-from-se", b"<b/>", "w2@se")
            assert (await _off_loop(sweden.api, "POST", "/api/v1/messages", body))[0] == 202
            assert (await _off_loop(_pull, sweden, _keys("partner-115")))[0] == 200
            error = _error_signal(_keys("partner-115"), "w2@se", ErrorCode.DELIVERY_FAILURE)
            assert (await _off_loop(sweden.post_as4, error, SOAP12))[0] == 200
            _, failed = await receiver.wait("se", 2)
            assert (failed["event"], failed["data"]["message_id"]) == ("error", "w2@se")
            assert failed["data"]["last_error"]["code"] == ErrorCode.DELIVERY_FAILURE.code
            assert receiver.refused == {"se", "be"}
            assert len(receiver.events["be"]) == 1
    finally:
        await runner.cleanup()


def _outbox(database: Path) -> list[tuple[str, str | None]]:
    """(event id, outcome) of every row of an access point's outbox, oldest first."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return [(str(i), o) for i, o in connection.execute("SELECT event_id, outcome FROM outbox ORDER BY id")]


async def test_undelivered_events_wait_in_the_outbox_across_a_restart(tmp_path: Path) -> None:
    """The backend is down while a message is delivered: its event waits in the database's outbox, and after a
    restart of the sender it arrives, with an event an earlier version left as a file in storage/webhooks."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/hooks/se"
    hook = {"url": url, "events": ["receipt"], "secret": SECRET, "backoff": "10s"}
    sweden, belgium = pair(tmp_path, se={"webhooks": [hook]})
    database = sweden.folder / "data" / "accesspoint.db"
    with running(belgium):
        with running(sweden):
            body = submission("se-to-be", b"<a/>", "o1@se")
            assert (await _off_loop(sweden.api, "POST", "/api/v1/messages", body))[0] == 202
            assert (await _off_loop(sweden.wait_state, "o1@se", {"delivered", "failed"}))["state"] == "delivered"
            ((pending, outcome),) = _outbox(database)
            assert outcome is None
        legacy = sweden.folder / "data" / "webhooks" / hashlib.sha256(url.encode()).hexdigest()[:16]
        legacy.mkdir(parents=True)
        older = {"id": "legacy-1", "event": "receipt", "at": "2026-01-01T00:00:00+00:00", "data": {"message_id": "x"}}
        (legacy / "00000000000000000001-legacy-1.json").write_text(json.dumps(older))
        receiver = Receiver()
        receiver.refused.add("se")  # take the first delivery
        app = web.Application()
        app.router.add_post("/hooks/{name}", receiver.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await _off_loop(sweden.start)  # in a thread: the receiver must answer while the sender starts
            first, second = await receiver.wait("se", 2)
            assert (first["id"], first["event"], first["data"]["message_id"]) == (pending, "receipt", "o1@se")
            assert second == older
            for _ in range(50):
                if [outcome for _id, outcome in _outbox(database)] == ["delivered", "delivered"]:
                    break
                await asyncio.sleep(0.1)
            assert _outbox(database) == [(pending, "delivered"), ("legacy-1", "delivered")]
            assert list(legacy.iterdir()) == []
        finally:
            await _off_loop(sweden.stop)
            await runner.cleanup()
