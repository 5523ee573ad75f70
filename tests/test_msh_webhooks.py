"""Webhooks from real access point processes to a small receiver in the test: signed events, retried until 2xx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from accesspoint.core.errors import ErrorCode
from accesspoint.servicekit.webhooks import EVENT_HEADER, SIGNATURE_HEADER, signature
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


async def test_undelivered_events_wait_in_the_outbox_across_a_restart(tmp_path: Path) -> None:
    """The backend is down while a message is delivered; after a restart of the sender its event still arrives."""
    port = _free_port()
    hook = {"url": f"http://127.0.0.1:{port}/hooks/se", "events": ["receipt"], "secret": SECRET, "backoff": "10s"}
    sweden, belgium = pair(tmp_path, se={"webhooks": [hook]})
    outbox = sweden.folder / "data" / "webhooks"
    with running(belgium):
        with running(sweden):
            body = submission("se-to-be", b"<a/>", "o1@se")
            assert (await _off_loop(sweden.api, "POST", "/api/v1/messages", body))[0] == 202
            assert (await _off_loop(sweden.wait_state, "o1@se", {"delivered", "failed"}))["state"] == "delivered"
            (pending,) = list(outbox.rglob("*.json"))
            assert json.loads(pending.read_bytes())["data"]["message_id"] == "o1@se"
        receiver = Receiver()
        receiver.refused.add("se")  # take the first delivery
        app = web.Application()
        app.router.add_post("/hooks/{name}", receiver.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await _off_loop(sweden.start)  # in a thread: the receiver must answer while the sender starts
            (event,) = await receiver.wait("se", 1)
            assert (event["event"], event["data"]["message_id"]) == ("receipt", "o1@se")
            for _ in range(50):
                if not pending.exists():
                    break
                await asyncio.sleep(0.1)
            assert not pending.exists()
        finally:
            await _off_loop(sweden.stop)
            await runner.cleanup()
