"""Revocation looked up asynchronously: a slow OCSP or CRL server never holds the event loop.

The OCSP/CRL evaluation is pure (``accesspoint.security.revocation``: ``lookup`` is a generator of the
locations it needs read); here it is driven with aiohttp: every location gets ``FETCH_TIMEOUT`` for the whole
exchange (so a server that answers late, or trickles a byte every few seconds, is cut off), at most
``MAX_RESPONSE`` bytes, no redirects, http(s) only. Answers are cached (``RevocationCache``: until nextUpdate);
a location that failed rests for 30 s, so a message meeting a dead responder is decided at once instead of
waiting again, and the next lookup after the rest asks it afresh (a negative answer never sticks).

Trust validation stays synchronous and pure: it is run with a ``KnownStatus`` that answers from the cache and
notes what it did not know; ``Revocation.validate`` then looks those up (concurrent lookups of one certificate
share one fetch), waiting at most ``wait`` in all, and runs the validation again. What is still unknown after the
wait is UNKNOWN and ``transient``: soft-fail accepts the certificate with a warning, hard-fail refuses it for now
(the inbound pipeline answers "try again later", HTTP 503, and the sender retries), while the lookup goes on and
fills the cache for the next message.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from accesspoint.security.revocation import (
    NONCE_LENGTH,
    FetchError,
    LookupSteps,
    RevocationCache,
    RevocationResult,
    RevocationStatus,
    describe,
    lookup,
)
from accesspoint.security.trust import TrustError, TrustFailure
from accesspoint.servicekit.httpclient import AnswerTooLarge, open_request, read_bounded
from accesspoint.store.clock import Clock

log = logging.getLogger("accesspoint.msh.revocation")

FETCH_TIMEOUT = 5.0  # seconds for one location: connect, send, the whole answer
MAX_RESPONSE = 16 * 1024 * 1024  # large national CRLs run to a few MiB
WAIT = timedelta(seconds=5)  # the longest a message waits for lookups before it is decided without them
MAX_ROUNDS = 6  # validations per decision: each round learns every pair it asked about, or gives up on it
OFFLOAD_ABOVE = 256 * 1024  # a response larger than this (a CRL) is parsed and verified in a worker thread

T = TypeVar("T")
Pair = tuple[x509.Certificate, x509.Certificate]  # (certificate, its issuer)


class AsyncFetcher:
    """GET a CRL or POST an OCSP request with aiohttp; FetchError on anything but a bounded 200 answer."""

    def __init__(
        self, http: aiohttp.ClientSession, *, timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_RESPONSE
    ) -> None:
        self.http = http
        self.timeout = timeout
        self.max_bytes = max_bytes

    async def __call__(self, url: str, body: bytes | None) -> bytes:
        """The response body."""
        # Locations come from certificates an attacker may have made: no file://, ftp:// or data: URLs.
        if not url.lower().startswith(("http://", "https://")):
            raise FetchError(f"not an HTTP URL: {url[:200]!r}")
        headers = {"User-Agent": "accesspoint-revocation/1"}
        if body is not None:
            headers |= {"Content-Type": "application/ocsp-request", "Accept": "application/ocsp-response"}
        method = "GET" if body is None else "POST"
        try:
            # No redirect followed (it could lead anywhere; responders do not need one), the answer bounded.
            async with open_request(
                self.http, method, url, data=body, headers=headers, timeout=self.timeout
            ) as response:
                if response.status != 200:
                    raise FetchError(f"HTTP {response.status} from {url}")
                return await read_bounded(response, self.max_bytes)
        except AnswerTooLarge:
            raise FetchError(f"{url}: response larger than {self.max_bytes} bytes") from None
        except TimeoutError:
            raise FetchError(f"{url}: no complete answer within {self.timeout:g} s") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None


def _key(certificate: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, int]:
    return hashlib.sha256(issuer.public_bytes(Encoding.DER)).digest(), certificate.serial_number


@dataclass(slots=True)
class KnownStatus:
    """What ``trust.validate_certificate`` asks during one validation: cached or just-learnt answers only.

    A pair it has no answer for is noted in ``misses`` and answered UNKNOWN (transient) for now.
    """

    cache: RevocationCache
    now: datetime
    check_intermediates: bool = False
    learnt: dict[tuple[bytes, int], RevocationResult] = field(default_factory=dict)
    given_up: set[tuple[bytes, int]] = field(default_factory=set)
    misses: list[tuple[Pair, datetime]] = field(default_factory=list)

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate, *, at: datetime) -> RevocationResult:
        """The answer known now; UNKNOWN (noted as a miss unless given up on) otherwise."""
        cached = self.cache.answer(certificate, issuer, at=at, now=self.now)
        if cached is not None:
            return cached
        key = _key(certificate, issuer)
        if key in self.learnt:
            return self.learnt[key]
        if key not in self.given_up:
            self.misses.append(((certificate, issuer), at))
        detail = f"the revocation lookup for {describe(certificate)} has not finished"
        return RevocationResult(RevocationStatus.UNKNOWN, detail, transient=True)


class Revocation:
    """The shell's revocation service: a cache, an async fetcher, single-flight lookups, bounded waits."""

    def __init__(
        self,
        fetch: Callable[[str, bytes | None], Awaitable[bytes]],
        *,
        clock: Clock,
        wait: timedelta = WAIT,
        cache: RevocationCache | None = None,
        nonce: Callable[[], bytes] | None = lambda: os.urandom(NONCE_LENGTH),
        check_intermediates: bool = False,
    ) -> None:
        self.fetch = fetch
        self.clock = clock
        self.wait = wait
        self.cache = cache or RevocationCache()
        self.nonce = nonce
        self.check_intermediates = check_intermediates
        self._running: dict[tuple[bytes, int], asyncio.Task[RevocationResult]] = {}

    def known(self) -> KnownStatus:
        """A status source for one validation (safe to use in a worker thread)."""
        return KnownStatus(self.cache, self.clock.now(), self.check_intermediates)

    async def validate(self, run: Callable[[KnownStatus], Awaitable[T]]) -> T:
        """``run`` a trust validation until it no longer asks about pairs this service could still look up.

        TrustError from ``run`` is raised once the lookups it waited for are in (or given up on).
        """
        deadline = asyncio.get_running_loop().time() + self.wait.total_seconds()
        learnt: dict[tuple[bytes, int], RevocationResult] = {}
        given_up: set[tuple[bytes, int]] = set()
        for _ in range(MAX_ROUNDS):
            known = KnownStatus(self.cache, self.clock.now(), self.check_intermediates, learnt, given_up)
            try:
                result = await run(known)
            except TrustError as exc:
                if not known.misses:
                    raise
                failure: TrustError | None = exc
            else:
                if not known.misses:
                    return result
                failure = None
            await self._look_up(known.misses, deadline, learnt, given_up)
        if failure is not None:
            raise failure
        return result

    async def _look_up(
        self,
        misses: Iterable[tuple[Pair, datetime]],
        deadline: float,
        learnt: dict[tuple[bytes, int], RevocationResult],
        given_up: set[tuple[bytes, int]],
    ) -> None:
        tasks = {}
        for (certificate, issuer), at in misses:
            key = _key(certificate, issuer)
            task = self._running.get(key)
            if task is None:
                task = asyncio.create_task(self._drive(certificate, issuer, at), name=f"revocation {describe(issuer)}")
                self._running[key] = task
                task.add_done_callback(functools.partial(self._forget, key))
            tasks[key] = task
        timeout = max(deadline - asyncio.get_running_loop().time(), 0.0)
        # The lookups go on after the wait (shielded): their answers fill the cache for the next message.
        await asyncio.wait([asyncio.shield(t) for t in tasks.values()], timeout=timeout)
        for key, task in tasks.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                learnt[key] = task.result()
            else:
                given_up.add(key)

    def _forget(self, key: tuple[bytes, int], _task: asyncio.Task[RevocationResult]) -> None:
        self._running.pop(key, None)

    async def _drive(self, certificate: x509.Certificate, issuer: x509.Certificate, at: datetime) -> RevocationResult:
        """Run one lookup's steps, fetching each location it asks for."""
        steps: LookupSteps = lookup(
            certificate, issuer, at=at, now=self.clock.now(), cache=self.cache, nonce=self.nonce
        )
        try:
            wanted = next(steps)
            while True:
                try:
                    data = await self.fetch(wanted.url, wanted.body)
                except FetchError as exc:
                    log.warning("revocation of %s: %s", describe(certificate), exc)
                    wanted = steps.throw(exc)
                else:
                    # Evaluating is CPU work (a signature, a CRL of some MiB): off the loop when the answer is large.
                    wanted = (
                        await asyncio.to_thread(steps.send, data) if len(data) > OFFLOAD_ABOVE else steps.send(data)
                    )
        except StopIteration as done:
            result: RevocationResult = done.value
            return result

    async def status(
        self, certificate: x509.Certificate, issuer: x509.Certificate, *, at: datetime
    ) -> RevocationResult:
        """One pair's status within the bounded wait (UNKNOWN, transient, when the lookup is not done by then)."""
        cached = self.cache.answer(certificate, issuer, at=at, now=self.clock.now())
        if cached is not None:
            return cached
        learnt: dict[tuple[bytes, int], RevocationResult] = {}
        deadline = asyncio.get_running_loop().time() + self.wait.total_seconds()
        await self._look_up([((certificate, issuer), at)], deadline, learnt, set())
        return learnt.get(_key(certificate, issuer)) or KnownStatus(self.cache, self.clock.now()).check(
            certificate, issuer, at=at
        )

    def blocking(self, loop: asyncio.AbstractEventLoop) -> BlockingStatus:
        """A status source for validations that run in worker threads (routing's discovered certificates)."""
        return BlockingStatus(self, loop)

    async def close(self) -> None:
        """Stop the lookups still running."""
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)


@dataclass(frozen=True, slots=True)
class BlockingStatus:
    """``Revocation.status`` for code that runs in a worker thread and checks synchronously."""

    service: Revocation
    loop: asyncio.AbstractEventLoop

    @property
    def check_intermediates(self) -> bool:
        """As the service says."""
        return self.service.check_intermediates

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate, *, at: datetime) -> RevocationResult:
        """Wait (in this thread, never on the loop) for the service's answer."""
        future = asyncio.run_coroutine_threadsafe(self.service.status(certificate, issuer, at=at), self.loop)
        return future.result(self.service.wait.total_seconds() + FETCH_TIMEOUT)


def transient(error: Exception) -> bool:
    """True for a refusal only because a revocation status could not be learnt yet (worth trying again later)."""
    return (
        isinstance(error, TrustError)
        and error.failure is TrustFailure.REVOCATION_UNKNOWN
        and error.revocation is not None
        and error.revocation.transient
    )
