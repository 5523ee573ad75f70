"""Request bodies, bounded: a limit per endpoint, a budget shared by all of them, spool files that always go away.

Anyone may POST to ``/as4``; nothing about the sender is known until the message has been read and verified. So
before a byte of the body is read:

- a declared ``Content-Length`` above the endpoint's limit is refused (413);
- the body must fit the server-wide budget of bytes being taken in (``BodyBudget.max_bytes``), and a large one
  (above ``large``, or a chunked one that grows past it) needs one of ``max_large`` slots. Past either, the answer
  is 503 with ``Retry-After``: the sender tries again later (an AS4 sender treats 5xx as transient), and memory,
  disk and file handles stay bounded whatever arrives at once.

A chunked body is accounted as it streams (``Admission.take``): past the limit 413, past the budget 503. A body
that stalls longer than the idle timeout is cut off (408). What was reserved is given back when the request
ends, however it ends (``Admission`` is a context manager); the spool files themselves are closed by
``wire.read_message_body`` and ``wire.discard`` on every path.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

from aiohttp import StreamReader

READ_CHUNK = 64 * 1024
IN_MEMORY = 1024 * 1024  # a body up to this size stays in memory (wire.SPOOL_IN_MEMORY); larger ones are "large"


class BodyRefused(Exception):
    """A request body this server will not take: ``status`` 413 (too large), 503 (busy, see ``retry_after``), 408
    (stalled). ``kind`` and ``detail`` make the problem document (or the ebMS error's log detail)."""

    def __init__(self, status: int, kind: str, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """The response headers the refusal needs (``Retry-After`` on 503)."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The server-wide budget: bytes taken in at once, large requests at once, and what counts as large."""

    max_bytes: int = 4 * 1024**3
    max_large: int = 4
    large: int = IN_MEMORY
    retry_after: timedelta = timedelta(seconds=10)
    idle_timeout: timedelta = timedelta(seconds=60)  # the longest wait for the next bytes of a body


class BodyBudget:
    """What every endpoint's bodies may take together; one per server (event loop: no locks needed)."""

    def __init__(self, limits: BodyLimits) -> None:
        self.limits = limits
        self.reserved = 0  # bytes admitted and not yet given back
        self.large = 0  # large requests in progress

    def admit(self, declared: int | None, *, limit: int, what: str = "the request body") -> Admission:
        """Admit a body of declared bytes (None: chunked, size unknown) for an endpoint that takes up to limit.

        BodyRefused (413 or 503) before anything is read when it cannot be taken.
        """
        if declared is not None and declared > limit:
            raise BodyRefused(413, "too-large", f"{what} is {declared} bytes; this endpoint takes at most {limit}")
        admission = Admission(self, limit, what)
        admission.take(declared or 0)
        return admission

    def busy(self, why: str) -> BodyRefused:
        """A 503 refusal saying why, with Retry-After."""
        seconds = max(1, math.ceil(self.limits.retry_after.total_seconds()))
        return BodyRefused(503, "busy", f"{why}; try again later", retry_after=seconds)


class Admission:
    """One request's share of the budget: grows as its body streams in, given back on ``release`` (or exit)."""

    def __init__(self, budget: BodyBudget, limit: int, what: str) -> None:
        self.budget = budget
        self.limit = limit
        self.what = what
        self.taken = 0  # bytes accounted to this request
        self.read = 0  # bytes of the body read so far
        self._large = False
        self._released = False

    def take(self, size: int) -> None:
        """Account for the body being size bytes long (at least): BodyRefused past the limit or the budget."""
        if size <= self.taken:
            return
        if size > self.limit:
            raise BodyRefused(413, "too-large", f"{self.what} is larger than this endpoint takes ({self.limit} bytes)")
        budget = self.budget
        slot = not self._large and size > budget.limits.large
        if slot and budget.large >= budget.limits.max_large:
            raise budget.busy(f"{budget.limits.max_large} large requests are being taken in already")
        grow = size - self.taken
        if budget.reserved + grow > budget.limits.max_bytes:
            raise budget.busy("the server is taking in as much as it may at once")
        budget.reserved += grow
        if slot:
            budget.large += 1
            self._large = True
        self.taken = size

    async def chunks(self, content: StreamReader, *, chunk: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """The body's chunks, each accounted before it is handed on; 408 when the sender stalls."""
        idle = self.budget.limits.idle_timeout.total_seconds()
        while True:
            try:
                data = await asyncio.wait_for(content.read(chunk), idle)
            except TimeoutError:
                raise BodyRefused(408, "timeout", f"no bytes of {self.what} for {idle:g} s") from None
            if not data:
                return
            self.read += len(data)
            self.take(self.read)
            yield data

    async def read_all(self, content: StreamReader) -> bytes:
        """The whole body in memory, for endpoints whose limit is small."""
        return b"".join([data async for data in self.chunks(content)])

    def release(self) -> None:
        """Give the request's share back (once)."""
        if self._released:
            return
        self._released = True
        budget = self.budget
        budget.reserved -= self.taken
        if self._large:
            budget.large -= 1

    def __enter__(self) -> Admission:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def declared_length(headers: Any) -> int | None:
    """The request's Content-Length as a number (None when absent or chunked); BodyRefused(400) when malformed."""
    value = headers.get("Content-Length")
    if value is None or headers.get("Transfer-Encoding"):
        return None
    if not value.isdigit():
        raise BodyRefused(400, "invalid-length", f"Content-Length {value[:40]!r} is not a number")
    return int(value)
