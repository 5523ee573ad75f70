"""The discovery client against real DNS (dnsmasq on a loopback port) and the project's SMP server over HTTP."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from accesspoint.testing.dnsserver import DnsServer, dns_server
from accesspoint.testing.smp import DOCUMENT, PARTICIPANT, PROCESS, ZONE, metadata, pki, publish, running_server
from smp.bdxl import BdxlError, BdxlScheme, apply_naptr_regexp
from smp.client import (
    DiscoveryClient,
    DiscoveryError,
    DiscoverySettings,
    EndpointRefused,
    NotRegistered,
    SmpSignatureError,
    choose_endpoint,
)
from smp.identifiers import Identifier, bdxl_naptr_name, peppol_cname_name, peppol_naptr_name
from smp.model import EndpointInfo, Flavour, ProcessInfo, Redirect, ServiceMetadata, TransportProfile

P = Identifier.parse(PARTICIPANT)
D = Identifier.parse(DOCUMENT)
AP_URL = "https://ap.example.se/as4"
Server = Callable[..., Awaitable[TestServer]]
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[DnsServer]:
    """A dnsmasq for ZONE, not yet started (tests add records, then start it)."""
    yield from dns_server(tmp_path, ZONE)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _settings(dns: DnsServer, **overrides: object) -> DiscoverySettings:
    options: dict[str, object] = {
        "zone": ZONE,
        "nameserver": dns.address,
        "smp_trust": (pki().ca.certificate,),
        "allowed_networks": LOOPBACK,  # the test's SMPs run on loopback, which production refuses
    }
    options.update(overrides)
    return DiscoverySettings(**options)  # type: ignore[arg-type]


async def test_naptr_smp_signature_endpoint(tmp_path: Path, dns: DnsServer) -> None:
    """Peppol U-NAPTR -> the Peppol SMP -> a verified signature -> the SDK endpoint with its certificate."""
    async with running_server(tmp_path) as base:
        await publish(base, metadata(AP_URL, profiles=(TransportProfile.PEPPOL_AS4, TransportProfile.SDK_AS4)))
        dns.add_naptr(peppol_naptr_name(P, ZONE), base + "/")
        dns.start()
        async with DiscoveryClient(_settings(dns)) as client:
            endpoint = await client.discover(PARTICIPANT, DOCUMENT, transport_profile=TransportProfile.SDK_AS4)
            assert endpoint.url == AP_URL
            assert endpoint.transport_profile == TransportProfile.SDK_AS4
            assert endpoint.certificate == pki().ap.certificate
            assert endpoint.signature_verified
            assert endpoint.signer == pki().smp.certificate
            assert endpoint.smp_url == f"{base}/{P.url_segment()}/services/{D.url_segment()}"
            assert endpoint.process == Identifier.parse(PROCESS)
            # The caller's order of profiles decides between two endpoints.
            first = await client.discover(PARTICIPANT, DOCUMENT, transport_profile=["peppol-transport-as4-v2_0"])
            assert first.transport_profile == TransportProfile.PEPPOL_AS4
            with pytest.raises(NotRegistered, match="no active endpoint"):
                await client.discover(PARTICIPANT, DOCUMENT, transport_profile=TransportProfile.EDELIVERY_AS4_2_0)
            with pytest.raises(NotRegistered, match="no active endpoint"):
                await client.discover(PARTICIPANT, DOCUMENT, process="cenbii-procid-ubl::other")


async def test_smp2_naptr_service_reads_the_smp2_binding(tmp_path: Path, dns: DnsServer) -> None:
    """A NAPTR with service oasis-bdxr-smp-2 makes the client read /bdxr-smp-2/... (OASIS SMP 2.0, C14N 1.1)."""
    async with running_server(tmp_path) as base:
        await publish(base, metadata(AP_URL, process=None), Flavour.OASIS2)
        dns.add_naptr(peppol_naptr_name(P, ZONE), base, service="oasis-bdxr-smp-2")
        dns.start()
        async with DiscoveryClient(_settings(dns)) as client:
            endpoint = await client.discover(PARTICIPANT, DOCUMENT, process=PROCESS)
        assert "/bdxr-smp-2/" in endpoint.smp_url
        assert endpoint.url == AP_URL
        assert endpoint.process is None


async def test_bdxl_scheme_reaches_the_oasis_smp(tmp_path: Path, dns: DnsServer) -> None:
    """eDelivery BDXL 1.6 naming (value hashed as given) leads to the OASIS 1.0 base path."""
    async with running_server(tmp_path) as base:
        await publish(base, metadata(AP_URL))
        dns.add_naptr(bdxl_naptr_name(P, ZONE), f"{base}/oasis")
        dns.start()
        async with DiscoveryClient(_settings(dns, scheme=BdxlScheme.BDXL)) as client:
            endpoint = await client.discover(PARTICIPANT, DOCUMENT)
        assert endpoint.smp_url.startswith(f"{base}/oasis/")
        assert endpoint.url == AP_URL


async def test_legacy_cname_when_there_is_no_naptr(tmp_path: Path, dns: DnsServer) -> None:
    """No NAPTR, but a B-<md5> CNAME: the SMP is http://<target>/ at the root (port set for the test)."""
    async with running_server(tmp_path) as base:
        await publish(base, metadata(AP_URL))
        dns.add_cname(peppol_cname_name(P, ZONE), "localhost")
        dns.start()
        port = int(base.rsplit(":", 1)[1])
        async with DiscoveryClient(_settings(dns, legacy_port=port)) as client:
            endpoint = await client.discover(PARTICIPANT, DOCUMENT)
        assert endpoint.smp_url.startswith(f"http://localhost:{port}/")
        assert endpoint.url == AP_URL


async def test_not_registered_in_dns_or_smp(tmp_path: Path, dns: DnsServer) -> None:
    """No DNS record, an SMP that knows no such participant, and one without the document type: NotRegistered."""
    unknown = Identifier.parse("iso6523-actorid-upis::0007:5555555555")
    async with running_server(tmp_path) as base:
        await publish(base, metadata(AP_URL))
        dns.add_naptr(peppol_naptr_name(unknown, ZONE), base)
        dns.add_naptr(peppol_naptr_name(P, ZONE), base)
        dns.start()
        async with DiscoveryClient(_settings(dns)) as client:
            with pytest.raises(NotRegistered, match="no CNAME"):
                await client.discover("iso6523-actorid-upis::0007:9999999999", DOCUMENT)
            with pytest.raises(NotRegistered, match="knows no such"):
                await client.discover(unknown, DOCUMENT)
            with pytest.raises(NotRegistered, match="knows no such"):
                await client.discover(PARTICIPANT, "busdox-docid-qns::urn:other::doc")


async def test_untrusted_or_missing_trust_is_refused(tmp_path: Path, dns: DnsServer) -> None:
    """An SMP signing with a certificate outside the truststore is refused; no truststore means no trust."""
    async with running_server(tmp_path, signer=pki().rogue) as base:
        await publish(base, metadata(AP_URL))
        dns.add_naptr(peppol_naptr_name(P, ZONE), base)
        dns.start()
        async with DiscoveryClient(_settings(dns)) as client:
            with pytest.raises(SmpSignatureError, match="not trusted"):
                await client.discover(PARTICIPANT, DOCUMENT)
        async with DiscoveryClient(_settings(dns, smp_trust=())) as client:
            with pytest.raises(SmpSignatureError, match="no SMP truststore"):
                await client.discover(PARTICIPANT, DOCUMENT)
        async with DiscoveryClient(_settings(dns, smp_trust=(), require_trust=False)) as client:
            endpoint = await client.discover(PARTICIPANT, DOCUMENT)
            assert not endpoint.signature_verified


async def test_one_redirect_is_followed_and_a_second_is_not(tmp_path: Path, dns: DnsServer) -> None:
    """A Redirect to another SMP signed by the named certificate is followed once; a redirect chain fails."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    other = pki().other_smp
    async with running_server(tmp_path / "a") as a, running_server(tmp_path / "b", signer=other) as b:
        target = f"{b}/{P.url_segment()}/services/{D.url_segment()}"
        redirect = Redirect(target, certificate_uid=other.certificate.subject.rfc4514_string())
        await publish(a, ServiceMetadata(P, D, redirect=redirect))
        await publish(b, metadata(AP_URL))
        dns.add_naptr(peppol_naptr_name(P, ZONE), a)
        dns.start()
        async with DiscoveryClient(_settings(dns)) as client:
            endpoint = await client.discover(PARTICIPANT, DOCUMENT)
            assert endpoint.redirected
            assert endpoint.smp_url == target
            assert endpoint.signer == other.certificate
        # The Redirect names another signer than the one that signs the target: refused.
        wrong = Redirect(target, certificate_uid="CN=Somebody Else")
        await publish(a, ServiceMetadata(P, D, redirect=wrong))
        async with DiscoveryClient(_settings(dns)) as client:
            with pytest.raises(SmpSignatureError, match="CertificateUID"):
                await client.discover(PARTICIPANT, DOCUMENT)
        # B redirects onwards: the client stops after one Redirect.
        await publish(a, ServiceMetadata(P, D, redirect=redirect))
        await publish(b, ServiceMetadata(P, D, redirect=Redirect(f"{a}/x", certificate_uid="CN=x")))
        async with DiscoveryClient(_settings(dns)) as client:
            with pytest.raises(DiscoveryError, match="only one Redirect"):
                await client.discover(PARTICIPANT, DOCUMENT)


async def test_cache_answers_without_dns_or_smp_until_the_ttl(tmp_path: Path, dns: DnsServer) -> None:
    """A repeated lookup is served from the cache while DNS and SMP are down, and fails after the TTL."""
    clock = Clock()
    async with running_server(tmp_path) as base:
        await publish(base, metadata(AP_URL))
        dns.add_naptr(peppol_naptr_name(P, ZONE), base)
        dns.start()
        client = DiscoveryClient(_settings(dns, timeout=0.3), clock=clock)
        first = await client.discover(PARTICIPANT, DOCUMENT)
    dns.stop()
    try:
        clock.now += 59  # the server's max-age is 60 s, the DNS TTL 60 s
        assert await client.discover(PARTICIPANT, DOCUMENT) is first
        clock.now += 2
        with pytest.raises(DiscoveryError):
            await client.discover(PARTICIPANT, DOCUMENT)
    finally:
        await client.close()


async def test_negative_answers_are_cached_briefly(tmp_path: Path, dns: DnsServer) -> None:
    """A participant registered after a failed lookup is found once the bounded negative TTL has passed."""
    clock = Clock()
    async with running_server(tmp_path) as base:
        dns.start()
        async with DiscoveryClient(_settings(dns, negative_ttl=5.0), clock=clock) as client:
            with pytest.raises(NotRegistered):
                await client.discover(PARTICIPANT, DOCUMENT)
            await publish(base, metadata(AP_URL))
            dns.add_naptr(peppol_naptr_name(P, ZONE), base)
            dns.restart()
            clock.now += 4
            with pytest.raises(NotRegistered):
                await client.discover(PARTICIPANT, DOCUMENT)
            clock.now += 2
            assert (await client.discover(PARTICIPANT, DOCUMENT)).url == AP_URL


async def test_malformed_naptr_is_a_failure_not_a_refusal(tmp_path: Path, dns: DnsServer) -> None:
    """A NAPTR whose regexp yields no http(s) URL is a DiscoveryError, not NotRegistered."""
    dns.add_naptr(peppol_naptr_name(P, ZONE), "ftp://smp.example/")
    dns.start()
    async with DiscoveryClient(_settings(dns)) as client:
        with pytest.raises(DiscoveryError, match="not an http"):
            await client.discover(PARTICIPANT, DOCUMENT)


async def test_expired_answers_are_revalidated_with_the_etag(tmp_path: Path, dns: DnsServer) -> None:
    """After max-age the client asks again with If-None-Match; a 304 reuses the verified document unparsed."""
    clock = Clock()
    async with running_server(tmp_path) as base:
        await publish(base, metadata(AP_URL))
        dns.add_naptr(peppol_naptr_name(P, ZONE), base)
        dns.start()
        async with DiscoveryClient(_settings(dns), clock=clock) as client:
            reads = []
            original = client.read_document

            def counting(body: bytes) -> Any:
                reads.append(len(body))
                return original(body)

            client.read_document = counting  # type: ignore[method-assign]
            await client.discover(PARTICIPANT, DOCUMENT)
            clock.now += 61
            endpoint = await client.discover(PARTICIPANT, DOCUMENT)
            assert endpoint.url == AP_URL
            assert len(reads) == 1
            await publish(base, metadata("https://new.example.se/as4"))
            clock.now += 61
            assert (await client.discover(PARTICIPANT, DOCUMENT)).url == "https://new.example.se/as4"
            assert len(reads) == 2


def test_naptr_regexp_substitution() -> None:
    """RFC 3402 regexps: delimiter of choice, backreferences, the i flag; malformed ones are BdxlError."""
    assert apply_naptr_regexp("!^.*$!https://smp.example/!", "abc.zone") == "https://smp.example/"
    assert apply_naptr_regexp("#^([a-z]+)\\.zone$#https://\\1.smp.example#", "abc.zone") == "https://abc.smp.example"
    assert apply_naptr_regexp("!^ABC!https://x!i", "abc") == "https://x"
    for bad in ("!x", "!^.*$!https://x!g", "!(!x!", "!^nomatch$!x!"):
        with pytest.raises(BdxlError):
            apply_naptr_regexp(bad, "abc.zone")


def test_endpoints_outside_their_activation_window_are_skipped() -> None:
    """An endpoint not yet active or already expired is never chosen; the next profile's endpoint is."""
    now = datetime(2026, 6, 1, tzinfo=UTC)
    der = b"x"
    late = EndpointInfo("a", "https://late", der, activation=now + timedelta(days=1))
    gone = EndpointInfo("a", "https://gone", der, expiration=now - timedelta(seconds=1))
    fine = EndpointInfo(
        "b", "https://fine", der, activation=now - timedelta(days=1), expiration=now + timedelta(days=1)
    )
    model = ServiceMetadata(P, D, (ProcessInfo(None, (late, gone, fine)),))
    chosen = choose_endpoint(model, None, ("a", "b"), now)
    assert chosen is not None
    assert chosen[1].url == "https://fine"
    assert choose_endpoint(model, None, ("a",), now) is None


# ---------------------------------------------------------------------------------- what discovery refuses


class Internal:
    """A server standing for an internal service (or a hostile SMP): it records every path asked of it."""

    def __init__(self, answer: web.StreamResponse | None = None) -> None:
        self.paths: list[str] = []
        self.answer = answer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        if self.answer is not None:
            return self.answer
        return web.Response(text="internal admin page")

    async def start(self, aiohttp_server: Server) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        server = await aiohttp_server(app, host="127.0.0.1")
        return f"http://127.0.0.1:{server.port}"


async def test_a_redirect_signed_by_an_untrusted_signer_is_never_followed(
    tmp_path: Path, dns: DnsServer, aiohttp_server: Server
) -> None:
    """An SMP signing with a certificate outside the truststore redirects to an internal URL: refused, never fetched."""
    internal = Internal()
    target = await internal.start(aiohttp_server) + "/internal-admin"
    async with running_server(tmp_path, signer=pki().rogue) as base:
        redirect = Redirect(target, certificate_uid=pki().rogue.certificate.subject.rfc4514_string())
        await publish(base, ServiceMetadata(P, D, redirect=redirect))
        dns.add_naptr(peppol_naptr_name(P, ZONE), base)
        dns.start()
        async with DiscoveryClient(_settings(dns)) as client:
            with pytest.raises(SmpSignatureError, match="not trusted"):
                await client.discover(PARTICIPANT, DOCUMENT)
    assert internal.paths == []


async def test_a_redirect_target_signed_by_its_named_but_untrusted_signer_is_refused(
    tmp_path: Path, dns: DnsServer
) -> None:
    """A trusted SMP may redirect only to documents whose signer is trusted too, whatever the Redirect names."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rogue = pki().rogue
    async with running_server(tmp_path / "a") as a, running_server(tmp_path / "b", signer=rogue) as b:
        target = f"{b}/{P.url_segment()}/services/{D.url_segment()}"
        await publish(a, ServiceMetadata(P, D, redirect=Redirect(target, rogue.certificate.subject.rfc4514_string())))
        await publish(b, metadata(AP_URL))
        dns.add_naptr(peppol_naptr_name(P, ZONE), a)
        dns.start()
        async with DiscoveryClient(_settings(dns)) as client:
            with pytest.raises(SmpSignatureError, match="not trusted"):
                await client.discover(PARTICIPANT, DOCUMENT)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://ap.example.se/as4", "is not https"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.20.30.40/as4", "private"),
        ("https://[fd00::1]/as4", "private"),
    ],
)
async def test_an_endpoint_url_over_http_or_at_a_non_public_address_is_refused(
    tmp_path: Path, dns: DnsServer, url: str, reason: str
) -> None:
    """A trusted SMP naming a plain-http endpoint, or one at a private or link-local address, gives EndpointRefused."""
    async with running_server(tmp_path) as base:
        await publish(base, metadata(url))
        dns.add_naptr(peppol_naptr_name(P, ZONE), base)
        dns.start()
        async with DiscoveryClient(_settings(dns)) as client:
            with pytest.raises(EndpointRefused, match=reason):
                await client.discover(PARTICIPANT, DOCUMENT)


async def test_an_http_or_loopback_endpoint_passes_only_where_configured(tmp_path: Path, dns: DnsServer) -> None:
    """allow_http and allowed_networks admit what a test network needs, and only that."""
    async with running_server(tmp_path) as base:
        await publish(base, metadata("http://127.0.0.1:8080/as4"))
        dns.add_naptr(peppol_naptr_name(P, ZONE), base)
        dns.start()
        async with DiscoveryClient(_settings(dns)) as client:
            with pytest.raises(EndpointRefused, match="is not https"):
                await client.discover(PARTICIPANT, DOCUMENT)
        async with DiscoveryClient(_settings(dns, allow_http=True)) as client:
            assert (await client.discover(PARTICIPANT, DOCUMENT)).url == "http://127.0.0.1:8080/as4"


async def test_an_smp_at_a_loopback_address_is_not_connected_to(tmp_path: Path, dns: DnsServer) -> None:
    """Without loopback in allowed_networks, neither the SMP at 127.0.0.1 nor one named localhost is asked."""
    async with running_server(tmp_path) as base:
        await publish(base, metadata(AP_URL))
        dns.add_naptr(peppol_naptr_name(P, ZONE), base)
        dns.start()
        async with DiscoveryClient(_settings(dns, allowed_networks=())) as client:
            with pytest.raises(DiscoveryError, match=r"127\.0\.0\.1 is a loopback address"):
                await client.discover(PARTICIPANT, DOCUMENT)
        # Behind a name it is refused as well: the address is checked when connecting, after DNS.
        dns.add_naptr(peppol_naptr_name(P, ZONE), base.replace("127.0.0.1", "localhost"))
        dns.restart()
        async with DiscoveryClient(_settings(dns, allowed_networks=())) as client:
            with pytest.raises(DiscoveryError, match=r"localhost.*127\.0\.0\.1 is a loopback address"):
                await client.discover(PARTICIPANT, DOCUMENT)


async def test_an_smp_answer_past_the_size_limit_is_refused(dns: DnsServer, aiohttp_server: Server) -> None:
    """An SMP streaming more than max_response bytes gives DiscoveryError naming the limit; the rest is not read."""
    answer = web.Response(body=b"<x>" + b" " * (3 * 1024 * 1024) + b"</x>", content_type="application/xml")
    smp = Internal(answer)
    dns.add_naptr(peppol_naptr_name(P, ZONE), await smp.start(aiohttp_server))
    dns.start()
    async with DiscoveryClient(_settings(dns)) as client:
        with pytest.raises(DiscoveryError, match="larger than 2097152 bytes"):
            await client.discover(PARTICIPANT, DOCUMENT)


async def test_an_http_redirect_from_an_smp_is_not_followed(dns: DnsServer, aiohttp_server: Server) -> None:
    """An SMP answering 302 to an internal path gives DiscoveryError; that path is never asked for."""
    smp = Internal(web.Response(status=302, headers={"Location": "/internal-admin"}))
    dns.add_naptr(peppol_naptr_name(P, ZONE), await smp.start(aiohttp_server))
    dns.start()
    async with DiscoveryClient(_settings(dns)) as client:
        with pytest.raises(DiscoveryError, match="redirect to '/internal-admin' not followed"):
            await client.discover(PARTICIPANT, DOCUMENT)
    assert len(smp.paths) == 1 and "/internal-admin" not in smp.paths
