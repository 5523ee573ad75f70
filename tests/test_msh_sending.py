"""A large message's attempt is given time by its size (the pool's limits per partner: test_msh_send_pool)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from aiohttp import web

from accesspoint.msh import sending
from tests.inmemory import Pair, eventually
from tests.test_msh_support import submission


async def test_a_large_messages_attempt_may_outlast_send_timeout_by_its_size(
    pair_factory: Callable[..., Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """To a partner answering after send.timeout, a small message's attempt times out while a large one's waits for
    the answer (its timeout grows with its size)."""
    monkeypatch.setattr(sending, "LARGE_MESSAGE", 1024)
    monkeypatch.setattr(sending, "LARGE_SEND_RATE", 4096)  # the 16 KiB message: 4 s more than send.timeout
    pair = pair_factory(retries=1, backoff="5s")  # the manual clock never reaches it
    pair.configure(pair.se, send={"workers": 2, "timeout": "1s", "lease": "10s"})

    async def slow_partner(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(2)
        return web.Response(status=503, text="busy")

    app = web.Application()
    app.router.add_post("/as4", slow_partner)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", pair.be.port).start()
    sweden = pair.se
    try:
        await sweden.start()
        large = b"<letter>" + os.urandom(8 * 1024).hex().encode() + b"</letter>"
        for message_id, payload in (("large@se", large), ("small@se", b"<letter/>")):
            assert (await sweden.api("POST", "/api/v1/messages", submission("se-to-be", payload, message_id)))[0] == 202
        details = {}
        for message_id in ("large@se", "small@se"):
            sent = await eventually(lambda m=message_id: sweden.message(m), lambda d: d["state"] == "awaiting_receipt",
                                    f"the first attempt at {message_id}")  # fmt: skip
            details[message_id] = [step["detail"] for step in sent["history"]]
        assert details["large@se"][-2:] == ["lease renewed", "HTTP 503"], details
        small = details["small@se"]
        assert small[-1].startswith("TimeoutError") and "lease renewed" not in small, details
    finally:
        await runner.cleanup()
