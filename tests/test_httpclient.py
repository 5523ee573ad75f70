"""The outbound HTTP helper against a real aiohttp server: bounded answers, no redirects, addresses checked."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from accesspoint.servicekit.httpclient import (
    ALLOW_ALL,
    AddressPolicy,
    AnswerTooLarge,
    RedirectRefused,
    UrlRefused,
    fetch,
    new_session,
    open_request,
    read_bounded,
    stall_timeout,
)

Server = Callable[..., Awaitable[TestServer]]
LOOPBACK = AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")))
MIB = 1024 * 1024


class Partner:
    """A server that records every path asked for and how many body bytes it managed to send."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.sent = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound("/internal-admin")
        if request.path == "/huge-declared":
            response = web.StreamResponse(headers={"Content-Length": str(1024 * MIB)})
            await response.prepare(request)
            await response.write(b"x" * 1024)
            return response
        if request.path == "/huge-chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            chunk = b"x" * MIB
            try:
                for _ in range(1024):  # 1 GiB, generated as it goes
                    await response.write(chunk)
                    self.sent += len(chunk)
            except (ConnectionResetError, ConnectionError):
                pass
            return response
        if request.path == "/silent":
            await asyncio.Event().wait()  # never answers: only a timeout ends the call
        if request.path == "/steady":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(6):  # 0.6 s in all, never 0.2 s without a byte
                await response.write(b"x")
                await asyncio.sleep(0.1)
            return response
        if request.path == "/bomb":
            body = gzip.compress(b"\0" * (64 * MIB))
            return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})
        return web.Response(text="fine")


async def _started(aiohttp_server: Server, partner: Partner, host: str = "127.0.0.1") -> TestServer:
    return await aiohttp_server(partner.app(), host=host)


async def test_an_answer_declared_larger_than_the_limit_is_refused_before_reading(aiohttp_server: Server) -> None:
    """A Content-Length past the limit gives AnswerTooLarge naming the URL and the limit."""
    partner = Partner()
    server = await _started(aiohttp_server, partner)
    async with new_session(timeout=10) as session:
        with pytest.raises(AnswerTooLarge, match=r"/huge-declared is larger than 1048576 bytes"):
            await fetch(session, "GET", str(server.make_url("/huge-declared")), max_bytes=MIB)


async def test_a_streamed_1_gib_answer_is_dropped_at_the_limit(aiohttp_server: Server) -> None:
    """A chunked answer with no length stops at the limit: the partner gets to send only a few MiB of its GiB."""
    partner = Partner()
    server = await _started(aiohttp_server, partner)
    async with new_session(timeout=30) as session:
        with pytest.raises(AnswerTooLarge):
            await fetch(session, "GET", str(server.make_url("/huge-chunked")), max_bytes=MIB)
    await server.close()
    assert partner.sent < 64 * MIB


async def test_a_gzip_bomb_is_bounded_after_decompression(aiohttp_server: Server) -> None:
    """64 KiB of gzip that inflates to 64 MiB is refused at the limit counted after Content-Encoding."""
    partner = Partner()
    server = await _started(aiohttp_server, partner)
    async with new_session(timeout=10) as session:
        with pytest.raises(AnswerTooLarge):
            await fetch(session, "GET", str(server.make_url("/bomb")), max_bytes=MIB)


async def test_a_redirect_is_not_followed_and_its_target_never_fetched(aiohttp_server: Server) -> None:
    """A 302 to /internal-admin raises RedirectRefused naming it; the server never sees a request for it."""
    partner = Partner()
    server = await _started(aiohttp_server, partner)
    async with new_session(timeout=10) as session:
        for method in ("GET", "POST"):
            with pytest.raises(RedirectRefused, match="HTTP 302 redirect to '/internal-admin' not followed"):
                await fetch(session, method, str(server.make_url("/redirect")), max_bytes=MIB, data=b"x")
    assert partner.paths == ["/redirect", "/redirect"]


async def test_an_answer_within_the_limit_is_read_whole(aiohttp_server: Server) -> None:
    """A small answer comes back with its status, headers and body; a streamed read gives the same bytes."""
    partner = Partner()
    server = await _started(aiohttp_server, partner)
    async with new_session(timeout=10) as session:
        answer = await fetch(session, "GET", str(server.make_url("/small")), max_bytes=4)
        assert (answer.status, answer.body, answer.content_type) == (200, b"fine", "text/plain; charset=utf-8")
        async with open_request(session, "GET", str(server.make_url("/small"))) as response:
            assert await read_bounded(response, 4) == b"fine"


async def test_a_loopback_address_is_refused_at_connect_time_even_behind_a_name(aiohttp_server: Server) -> None:
    """Under the default policy 127.0.0.1, and the name localhost resolving to it, are refused before connecting."""
    partner = Partner()
    server = await _started(aiohttp_server, partner)
    async with new_session(timeout=10, addresses=AddressPolicy()) as session:
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(aiohttp.ClientConnectorError, match=r"127\.0\.0\.1 is a loopback address"):
                await fetch(session, "GET", f"http://{host}:{server.port}/secret", max_bytes=MIB)
    async with new_session(timeout=10, addresses=LOOPBACK) as session:
        assert (await fetch(session, "GET", f"http://localhost:{server.port}/open", max_bytes=MIB)).body == b"fine"
    assert partner.paths == ["/open"]


async def test_a_request_may_narrow_the_session_policy(aiohttp_server: Server) -> None:
    """On a session that allows everything, a request under a stricter policy is refused; the next one is not."""
    partner = Partner()
    server = await _started(aiohttp_server, partner)
    url = str(server.make_url("/x"))
    async with new_session(timeout=10, addresses=ALLOW_ALL) as session:
        with pytest.raises(aiohttp.ClientConnectorError, match="loopback"):
            await fetch(session, "GET", url, max_bytes=MIB, addresses=AddressPolicy())
        assert (await fetch(session, "GET", url, max_bytes=MIB)).status == 200
    assert partner.paths == ["/x"]


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://ap.example/as4", "is not https"),
        ("ftp://ap.example/as4", "is not https"),
        ("https://127.0.0.1/as4", "loopback"),
        ("https://[::1]/as4", "loopback"),
        ("https://[::ffff:127.0.0.1]/as4", "loopback"),
        ("https://10.1.2.3/as4", "private"),
        ("https://192.168.0.10/as4", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[fe80::1]/as4", "link-local"),
        ("https://[fd00::1]/as4", "private"),
        ("https://100.64.0.1/as4", "reserved"),
        ("https://0.0.0.0/as4", "unspecified"),
        ("https:///as4", "no host"),
    ],
)
def test_endpoint_urls_that_are_not_https_or_name_a_non_public_address_are_refused(url: str, refused: str) -> None:
    """check_url refuses other schemes and non-public addresses written in the URL, saying which rule."""
    with pytest.raises(UrlRefused, match=refused):
        AddressPolicy().check_url(url, "endpoint")


def test_public_https_urls_pass_and_configured_ranges_are_allowed() -> None:
    """A public https URL passes; http and a loopback address pass only where the policy allows them."""
    AddressPolicy().check_url("https://ap.example.se/as4")
    AddressPolicy().check_url("https://193.10.1.1/as4")
    allowed = AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),), allow_http=True)
    allowed.check_url("http://127.0.0.1:8080/as4")
    with pytest.raises(UrlRefused, match="private"):
        allowed.check_url("http://10.0.0.1/as4")


async def _ends_in_time(call: Awaitable[object]) -> BaseException | None:
    """What ``call`` raised; fails the test should it still run after 20 s (so a missing limit fails, not hangs)."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=20)
    if task not in done:
        task.cancel()
        pytest.fail("the call was not bounded by its timeout")
    return task.exception()


async def test_a_call_without_its_own_timeout_is_bounded_by_the_sessions(aiohttp_server: Server) -> None:
    """A partner that never answers is given up after the session's time when the call names none (aiohttp would
    take an explicit None as no limit at all)."""
    partner = Partner()
    server = await _started(aiohttp_server, partner)
    url = str(server.make_url("/silent"))

    async def streamed() -> bytes:
        async with new_session(timeout=0.3) as session, open_request(session, "GET", url) as response:
            return await read_bounded(response, MIB)

    async def whole() -> object:
        async with new_session(timeout=0.3) as session:
            return await fetch(session, "GET", url, max_bytes=MIB)

    assert isinstance(await _ends_in_time(whole()), TimeoutError)
    assert isinstance(await _ends_in_time(streamed()), TimeoutError)


async def test_a_stall_timeout_ends_a_silent_partner_but_not_a_slow_steady_one(aiohttp_server: Server) -> None:
    """With a stall limit there is no whole-call limit: an answer trickling in for longer than the session's limit
    is read whole, while one that sends nothing for the stall limit fails."""
    partner = Partner()
    server = await _started(aiohttp_server, partner)
    async with new_session(timeout=0.3) as session:
        steady = await fetch(session, "GET", str(server.make_url("/steady")), max_bytes=MIB, timeout=stall_timeout(2))
        assert steady.body == b"x" * 6
        silent = fetch(session, "GET", str(server.make_url("/silent")), max_bytes=MIB, timeout=stall_timeout(0.3))
        assert isinstance(await _ends_in_time(silent), TimeoutError)
