"""Revocation looked up asynchronously by the access point: bounded waits, one fetch per certificate, no redirects.

A responder the test controls runs in the test's event loop: it answers OCSP with a good or revoked status
when the test says so, or never. The clock of the cache is a ManualClock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from accesspoint.msh.revocation import AsyncFetcher, KnownStatus, Revocation, transient
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.revocation import FetchError
from accesspoint.security.trust import CertificateUsage, TrustError, TrustFailure, TrustResult, validate_certificate
from accesspoint.store import ManualClock
from accesspoint.testing import services
from tests.trustpki import certificate, root

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Responder:
    """An OCSP responder and CRL location on loopback whose answers the test releases."""

    ca: KeyPair
    port: int = field(default_factory=services.free_port)
    status: ocsp.OCSPCertStatus | None = None  # None: hold every request until ``release``
    released: asyncio.Event = field(default_factory=asyncio.Event)
    requests: int = 0
    issued: dict[int, x509.Certificate] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def ocsp(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        await self.released.wait()
        wanted = ocsp.load_der_ocsp_request(body)
        leaf = self.issued[wanted.serial_number]
        revoked = self.status is ocsp.OCSPCertStatus.REVOKED
        answer = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=leaf,
                issuer=self.ca.certificate,
                algorithm=hashes.SHA1(),  # noqa: S303 (the CertID hash every responder uses)
                cert_status=self.status or ocsp.OCSPCertStatus.GOOD,
                this_update=NOW - timedelta(minutes=5),
                next_update=NOW + timedelta(hours=1),
                revocation_time=NOW - timedelta(days=1) if revoked else None,
                revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.ca.certificate)
            .sign(self.ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        return web.Response(body=answer.public_bytes(Encoding.DER), content_type="application/ocsp-response")

    async def held(self, request: web.Request) -> web.Response:
        self.requests += 1
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        for _ in range(1000):
            await response.write(b"x")
            await asyncio.sleep(0.05)
        return response

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(self.url("/ocsp"))

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 4096)

    def leaf(self, name: str, *, ocsp_path: str = "/ocsp", crl_path: str | None = "/never.crl") -> KeyPair:
        crl_url = None if crl_path is None else self.url(crl_path)
        made = certificate(name, issuer=self.ca, ocsp_url=self.url(ocsp_path), crl_url=crl_url)
        self.issued[made.certificate.serial_number] = made.certificate
        return made


@pytest.fixture
async def responder() -> AsyncIterator[Responder]:
    """The responder, listening."""
    made = Responder(root("Revocation Test Root"))
    app = web.Application()
    app.router.add_post("/ocsp", made.ocsp)
    app.router.add_get("/never.crl", made.held)
    app.router.add_get("/trickle", made.trickle)
    app.router.add_post("/moved", made.moved)
    app.router.add_get("/big", made.big)
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # a request still held is not waited for
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", made.port).start()
    yield made
    made.released.set()
    await runner.cleanup()


@pytest.fixture
async def service() -> AsyncIterator[Revocation]:
    """The shell's revocation service, waiting at most 0.3 s (real time) per decision, its cache on a ManualClock."""
    http = aiohttp.ClientSession()
    made = Revocation(AsyncFetcher(http, timeout=1.0), clock=ManualClock(NOW), wait=timedelta(seconds=0.3))
    yield made
    await made.close()
    await http.close()


async def _validate(service: Revocation, responder: Responder, leaf: KeyPair, mode: RevocationMode) -> TrustResult:
    trust = TrustSettings(anchors=(responder.ca.certificate,), revocation=mode)

    async def run(known: KnownStatus) -> TrustResult:
        return validate_certificate(
            leaf.certificate, (), trust, at=NOW, usage=CertificateUsage.SIGNATURE, revocation=known
        )

    return await service.validate(run)


async def test_a_good_answer_is_looked_up_cached_and_reused_without_asking_again(
    responder: Responder, service: Revocation
) -> None:
    """Hard-fail passes once the responder says good; the next validation answers from the cache."""
    responder.status = ocsp.OCSPCertStatus.GOOD
    responder.released.set()
    leaf = responder.leaf("GOOD-1")
    result = await _validate(service, responder, leaf, RevocationMode.HARD_FAIL)
    assert result.revocation[0].status.value == "good"
    again = await _validate(service, responder, leaf, RevocationMode.HARD_FAIL)
    assert again.revocation[0].cached and responder.requests == 1


async def test_a_revoked_certificate_is_refused_even_in_soft_fail(responder: Responder, service: Revocation) -> None:
    """A known revocation always refuses; soft-fail only forgives an unknown status."""
    responder.status = ocsp.OCSPCertStatus.REVOKED
    responder.released.set()
    with pytest.raises(TrustError) as refused:
        await _validate(service, responder, responder.leaf("REVOKED-1"), RevocationMode.SOFT_FAIL)
    assert refused.value.failure is TrustFailure.REVOKED and not transient(refused.value)


async def test_a_responder_that_does_not_answer_is_waited_for_a_bounded_time_only(
    responder: Responder, service: Revocation
) -> None:
    """Soft-fail accepts with a warning and hard-fail refuses for now (transient) once the wait ran out, while the
    loop keeps serving; the lookup goes on and its answer serves the next message at once."""
    leaf = responder.leaf("SLOW-1")
    served: list[str] = []

    async def meanwhile() -> None:
        while not served:
            await asyncio.sleep(0)
        served.append("loop answered")

    ticker = asyncio.create_task(meanwhile())
    served.append("started")
    soft = await _validate(service, responder, leaf, RevocationMode.SOFT_FAIL)
    await ticker
    assert served == ["started", "loop answered"]
    assert soft.warnings and "has not finished" in soft.warnings[0]
    with pytest.raises(TrustError) as refused:
        await _validate(service, responder, leaf, RevocationMode.HARD_FAIL)
    assert refused.value.failure is TrustFailure.REVOCATION_UNKNOWN and transient(refused.value)
    assert responder.requests == 1  # the second decision joined the lookup still running

    responder.status = ocsp.OCSPCertStatus.GOOD
    responder.released.set()
    for _ in range(100):  # the running lookup finishes in the background and fills the cache
        if not service._running:
            break
        await asyncio.sleep(0.01)
    result = await _validate(service, responder, leaf, RevocationMode.HARD_FAIL)
    assert result.revocation[0].status.value == "good" and responder.requests == 1


async def test_a_responder_that_failed_rests_so_a_decision_meeting_it_is_made_at_once(
    responder: Responder, service: Revocation
) -> None:
    """A location that failed is not asked again for 30 s of the cache's clock: hard-fail refuses for now at once;
    after the rest it is asked afresh (the negative answer never sticks)."""
    leaf = certificate("DEAD-1", issuer=responder.ca, ocsp_url="http://127.0.0.1:9/ocsp", crl_url=None)
    with pytest.raises(TrustError) as first:
        await _validate(service, responder, leaf, RevocationMode.HARD_FAIL)
    assert transient(first.value) and "unreachable" in first.value.reason
    with pytest.raises(TrustError) as rested:
        await _validate(service, responder, leaf, RevocationMode.HARD_FAIL)
    assert "failed recently" in rested.value.reason
    assert isinstance(service.clock, ManualClock)
    await service.clock.advance(timedelta(seconds=31))
    with pytest.raises(TrustError) as afresh:
        await _validate(service, responder, leaf, RevocationMode.HARD_FAIL)
    assert "unreachable" in afresh.value.reason


async def test_the_fetcher_cuts_off_trickles_refuses_redirects_and_large_answers(responder: Responder) -> None:
    """A server trickling bytes is cut off by the whole-exchange timeout; a redirect is not followed; a cap holds."""
    async with aiohttp.ClientSession() as http:
        fetch = AsyncFetcher(http, timeout=0.3, max_bytes=1024)
        with pytest.raises(FetchError, match="no complete answer within"):
            await fetch(responder.url("/trickle"), None)
        with pytest.raises(FetchError, match="HTTP 302"):
            await fetch(responder.url("/moved"), b"request")
        with pytest.raises(FetchError, match="larger than 1024"):
            await fetch(responder.url("/big"), None)
        with pytest.raises(FetchError, match="not an HTTP URL"):
            await fetch("file:///etc/passwd", None)
        assert await AsyncFetcher(http, max_bytes=4096)(responder.url("/big"), None) == b"x" * 4096
