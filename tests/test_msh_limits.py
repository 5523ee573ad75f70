"""Request bodies bounded per endpoint and server-wide: refused before they are read, accounted as they stream,
given back however the request ends, and spool files closed on every path."""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from accesspoint.msh.limits import BodyBudget, BodyLimits, BodyRefused, declared_length

MiB = 1024 * 1024


def open_files() -> set[str]:
    """What this process's file descriptors point at (deleted temporary files show as '... (deleted)')."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            found.add(str(fd.readlink()))
        except OSError:
            continue
    return found


def test_a_declared_length_over_the_endpoint_limit_is_refused_before_reading() -> None:
    """413 for a Content-Length above the limit; the budget is left untouched."""
    budget = BodyBudget(BodyLimits())
    with pytest.raises(BodyRefused) as refused:
        budget.admit(5 * MiB, limit=4 * MiB, what="the AS4 message")
    assert (refused.value.status, refused.value.kind) == (413, "too-large")
    assert (budget.reserved, budget.large) == (0, 0)


def test_large_requests_past_their_slots_or_bytes_past_the_budget_get_503_with_retry_after() -> None:
    """A large body needs a slot and room in the byte budget; when either is gone it is 503 until one is back."""
    budget = BodyBudget(BodyLimits(max_bytes=10 * MiB, max_large=2, large=MiB, retry_after=timedelta(seconds=7)))
    first = budget.admit(6 * MiB, limit=100 * MiB)
    with pytest.raises(BodyRefused) as bytes_gone:
        budget.admit(6 * MiB, limit=100 * MiB)
    second = budget.admit(3 * MiB, limit=100 * MiB)
    with pytest.raises(BodyRefused) as slots_gone:
        budget.admit(2 * MiB, limit=100 * MiB)
    small = budget.admit(512 * 1024, limit=100 * MiB)  # small bodies need no slot, only bytes
    for refusal in (bytes_gone.value, slots_gone.value):
        assert (refusal.status, refusal.headers()) == (503, {"Retry-After": "7"})
    with first, second, small:
        assert (budget.reserved, budget.large) == (9 * MiB + 512 * 1024, 2)
    assert (budget.reserved, budget.large) == (0, 0)
    budget.admit(6 * MiB, limit=100 * MiB).release()


def test_a_chunked_body_takes_a_slot_when_it_grows_large_and_is_cut_off_past_the_limit() -> None:
    """A body of unknown size is accounted as it grows: a large slot past the threshold, 413 past the limit."""
    budget = BodyBudget(BodyLimits(max_large=1, large=MiB))
    admission = budget.admit(None, limit=4 * MiB)
    admission.take(MiB)
    assert budget.large == 0
    admission.take(MiB + 1)
    assert budget.large == 1
    with pytest.raises(BodyRefused) as refused:
        budget.admit(None, limit=4 * MiB).take(2 * MiB)
    assert refused.value.status == 503
    with pytest.raises(BodyRefused) as too_large:
        admission.take(4 * MiB + 1)
    assert too_large.value.status == 413
    admission.release()
    admission.release()
    assert (budget.reserved, budget.large) == (0, 0), "a refused growth took nothing"


def test_content_length_is_read_as_a_number_or_refused() -> None:
    """A chunked request has no declared length; a Content-Length that is not a number is a 400."""
    assert declared_length({"Content-Length": "12"}) == 12
    assert declared_length({"Content-Length": "12", "Transfer-Encoding": "chunked"}) is None
    assert declared_length({}) is None
    with pytest.raises(BodyRefused) as refused:
        declared_length({"Content-Length": "-1"})
    assert refused.value.status == 400


@dataclass
class Served:
    """The test server, its budget, and events to hold a request inside the handler."""

    http: TestClient
    budget: BodyBudget
    entered: asyncio.Event
    hold: asyncio.Event


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[TestClient]]) -> AsyncIterator[Served]:
    """A server with one endpoint that spools its body through the budget (limit 4 MiB, one large request)."""
    budget = BodyBudget(BodyLimits(max_bytes=64 * MiB, max_large=1, large=MiB, idle_timeout=timedelta(seconds=0.5)))
    entered = asyncio.Event()
    hold = asyncio.Event()

    async def spool_body(request: web.Request) -> web.Response:
        try:
            with (
                budget.admit(declared_length(request.headers), limit=4 * MiB) as admission,
                tempfile.SpooledTemporaryFile(max_size=MiB) as sink,
            ):
                async for chunk in admission.chunks(request.content):
                    sink.write(chunk)
                entered.set()
                if request.query.get("hold"):
                    await hold.wait()
                return web.Response(text=str(admission.read))
        except BodyRefused as refused:
            return web.Response(status=refused.status, text=refused.kind, headers=refused.headers())

    app = web.Application()
    app.router.add_post("/spool", spool_body)
    yield Served(await aiohttp_client(app), budget, entered, hold)


async def test_bodies_stream_through_the_budget_and_give_it_back_on_every_path(client: Served) -> None:
    """Over HTTP: a body within limits streams, a large one while another holds the slot gets 503, too large 413,
    a stalled one 408; afterwards nothing is reserved and no spool file is open."""
    http, budget, entered, hold = client.http, client.budget, client.entered, client.hold
    before = open_files()
    response = await http.post("/spool", data=io.BytesIO(b"a" * (3 * MiB)))
    assert (response.status, await response.text()) == (200, str(3 * MiB))

    entered.clear()
    holding = asyncio.create_task(http.post("/spool?hold=1", data=io.BytesIO(b"b" * (2 * MiB))))
    await entered.wait()
    busy = await http.post("/spool", data=io.BytesIO(b"c" * (2 * MiB)))
    assert (busy.status, busy.headers["Retry-After"]) == (503, "10")
    small = await http.post("/spool", data=b"d" * 1000)  # no slot needed
    assert small.status == 200
    hold.set()
    assert (await holding).status == 200

    async def chunked(size: int) -> AsyncIterator[bytes]:
        for _ in range(size // (256 * 1024)):
            yield b"e" * (256 * 1024)

    too_large = await http.post("/spool", data=chunked(8 * MiB))
    assert too_large.status == 413

    async def stalling() -> AsyncIterator[bytes]:
        yield b"f" * 1000
        await asyncio.sleep(2)
        yield b"g"

    stalled = await http.post("/spool", data=stalling())
    assert stalled.status == 408
    assert (budget.reserved, budget.large) == (0, 0)
    assert not [path for path in open_files() - before if "(deleted)" in path or Path(path).name.startswith("tmp")]
