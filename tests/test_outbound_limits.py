"""Every outbound call bounded: a partner's 1 GiB answer or 302 to the sender, FaR's.

The partners are real aiohttp servers in the test that record what they are asked and how much they manage to
send; the sender is a real ``accesspoint serve`` process whose memory is read from /proc.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from far.client import MAX_ANSWER, FarClient, FarUnavailable
from tests.test_msh_support import pair, running, submission

MIB = 1024 * 1024
T = TypeVar("T")
Server = Callable[..., Awaitable[TestServer]]


class Partner:
    """A partner that answers every POST as told and records the paths asked for and the bytes it got out."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.paths: list[str] = []
        self.sent = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * MIB)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        await request.read()
        if self.answer == "redirect":
            raise web.HTTPFound("/internal-admin")
        if self.answer == "ok":
            return web.Response(status=204)
        # 1 GiB of answer, generated as it goes, chunked (no Content-Length to refuse it by).
        response = web.StreamResponse(headers={"Content-Type": "application/soap+xml"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"<x>" + b" " * (MIB - 7) + b"</x>"
        try:
            for _ in range(1024):
                await response.write(chunk)
                self.sent += len(chunk)
        except (ConnectionError, RuntimeError):  # the sender hung up, as it should
            pass
        return response


async def _serve(partner: Partner, port: int) -> web.AppRunner:
    runner = web.AppRunner(partner.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _off_loop(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # The peers' helpers block; the partner in this loop must keep answering meanwhile.
    return await asyncio.to_thread(call, *args, **kwargs)


def _memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak since start) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


async def _send_to(partner: Partner, tmp_path: Path) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """Sweden's access point (one retry, 100 ms apart) sends a letter to the partner until it is final.

    Returns the message's final record and the sender's memory before submitting and after.
    """
    sweden, belgium = pair(tmp_path, retries=1, backoff="100ms")
    runner = await _serve(partner, belgium.port)  # where Sweden's P-Mode sends Belgium's messages
    try:
        with running(sweden):
            assert sweden.process is not None
            before = _memory(sweden.process.pid)
            status, _ = await _off_loop(sweden.api, "POST", "/api/v1/messages", submission("se-to-be", b"<a/>", "m@se"))
            assert status == 202
            final = await _off_loop(sweden.wait_state, "m@se", {"delivered", "failed"}, timeout=60)
            return final, before, _memory(sweden.process.pid)
    finally:
        await runner.cleanup()


async def test_a_partner_answering_1_gib_is_a_failed_attempt_and_the_sender_stays_small(tmp_path: Path) -> None:
    """Each attempt stops reading at the 4 MiB answer limit and is retried, then fails saying so; RSS stays flat."""
    partner = Partner("huge")
    failed, before, after = await _send_to(partner, tmp_path)
    print(  # the figures, for `pytest -s`
        f"sender RSS {before['VmRSS'] / MIB:.0f} -> {after['VmRSS'] / MIB:.0f} MiB, peak {before['VmHWM'] / MIB:.0f}"
        f" -> {after['VmHWM'] / MIB:.0f} MiB; the partner got {partner.sent / MIB:.0f} of its 2048 MiB out"
    )
    assert failed["state"] == "failed", failed
    assert failed["last_error"]["code"] == "EBMS:0301"
    assert "larger than 4194304 bytes" in failed["last_error"]["detail"]
    assert failed["attempts"] == 2  # a failed attempt, retried once (reception awareness), then failed
    assert partner.paths == ["/as4", "/as4"]  # the first attempt and its retry
    assert partner.sent < 2 * 64 * MIB  # of the 2 GiB it meant to send, only what the socket buffers took
    assert after["VmHWM"] - before["VmHWM"] < 64 * MIB, (before, after)


async def test_a_partner_answering_302_is_never_followed_to_the_location(tmp_path: Path) -> None:
    """A 302 to /internal-admin is a failed attempt naming the redirect; /internal-admin is never requested."""
    partner = Partner("redirect")
    failed, _, _ = await _send_to(partner, tmp_path)
    assert failed["state"] == "failed", failed
    assert "redirect to '/internal-admin' not followed" in failed["last_error"]["detail"]
    assert partner.paths == ["/as4", "/as4"]


async def test_far_redirects_and_oversized_answers_are_unavailable_not_followed(aiohttp_server: Server) -> None:
    """FaR answering 302 or more than MAX_ANSWER bytes: FarUnavailable saying why; the Location is never asked."""
    redirecting, huge = Partner("redirect"), Partner("huge")
    for partner, reason in ((redirecting, "redirect to '/internal-admin' not followed"), (huge, "larger than")):
        server = await aiohttp_server(partner.app(), host="127.0.0.1")
        async with FarClient(str(server.make_url("/"))) as far:
            with pytest.raises(FarUnavailable, match=reason):
                await far.is_reachable("2120000787", ["195001012384"])
        assert partner.paths == ["/api/v1/reachable"]
    assert huge.sent < MAX_ANSWER + 64 * MIB
