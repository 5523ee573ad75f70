"""The discovery client: BDXL -> SMP -> verified signature -> the endpoint for a transport profile.

``DiscoveryClient.discover`` is what the access point calls for a partner no static P-Mode names. It:

1. locates the SMP through DNS (``smp.bdxl``), cached for the answer's TTL;
2. fetches the ServiceMetadata (SMP 1.0 or 2.0 REST binding, as the NAPTR service says), honouring HTTP caching
   (``Cache-Control: max-age`` and ``ETag`` revalidation);
3. verifies the enveloped signature and trusts the signer only if it is in, or chains to, the SMP truststore,
   before acting on anything the document says, its Redirect included;
4. follows at most one SMP Redirect, whose target must be signed by the certificate the Redirect names and be
   trusted in its own right; checks that the document is about the participant and document type asked for (a
   validly signed answer about someone else is a substitution);
5. picks the first endpoint, in the caller's order of transport profiles, that is active now, and refuses it
   unless its URL passes the endpoint policy (https; no loopback, private or link-local address unless allowed).

Every HTTP call goes through ``servicekit.httpclient``: answers bounded (``max_response``), HTTP redirects never
followed, a timeout on each, and connections made only to addresses the policy allows, checked at connect time
after DNS (an SMP, or a name an SMP gives, that resolves to an internal address is not connected to).

Negative answers (no DNS record, 404 from the SMP) are cached too, but never longer than ``negative_ttl``, so
that a participant registered a moment ago becomes reachable quickly.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from accesspoint.core.errors import EbmsError
from accesspoint.core.xml import parse_xml
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.trust import CertificateUsage, TrustError, validate_certificate
from accesspoint.servicekit.httpclient import AddressPolicy, IpNetwork, UrlRefused, fetch, new_session
from smp.bdxl import BdxlError, BdxlResolver, BdxlScheme, SmpApi, SmpLocation
from smp.bdxl import NotRegistered as _DnsNotRegistered
from smp.documents import DocumentError, parse_service_metadata
from smp.identifiers import NO_PROCESS, Identifier, IdentifierError
from smp.model import CertPubUsage, EndpointInfo, Redirect, ServiceMetadata, TransportProfile
from smp.signature import ALLOWED, SignatureError, VerifiedDocument, verify_document

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_RESPONSE = 2 * 1024 * 1024
DEFAULT_PROFILES: tuple[str, ...] = (
    TransportProfile.EDELIVERY_AS4_2_0,
    TransportProfile.EDELIVERY_AS4_1_15,
    TransportProfile.SDK_AS4,
    TransportProfile.PEPPOL_AS4,
)
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


class DiscoveryError(Exception):
    """Discovery failed; ``kind`` is a stable name for the CLI and the logs."""

    kind = "discovery-failed"


class NotRegistered(DiscoveryError):
    """No DNS record, or the SMP knows no such participant, document type or fitting endpoint."""

    kind = "not-registered"


class SmpSignatureError(DiscoveryError):
    """The SMP's signature is missing, broken, or by a certificate the SMP truststore does not trust."""

    kind = "smp-signature"


class EndpointRefused(DiscoveryError):
    """The trusted SMP names an endpoint URL the endpoint policy refuses (plain http, a non-public address)."""

    kind = "endpoint-refused"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to send to a participant for a document type, as a verified SMP said."""

    url: str
    transport_profile: str
    certificate: x509.Certificate
    participant: Identifier
    document_type: Identifier
    process: Identifier | None
    smp_url: str
    signer: x509.Certificate
    signature_verified: bool  # signature valid and the signer trusted by the SMP truststore
    redirected: bool = False
    expiration: datetime | None = None
    certpub: tuple[tuple[CertPubUsage, x509.Certificate], ...] = ()

    @property
    def certificate_pem(self) -> str:
        """The endpoint (access point) certificate, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def certificate_sha256(self) -> str:
        """SHA-256 of the endpoint certificate's DER, hex."""
        return hashlib.sha256(self.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """How to discover: DNS zone and scheme, resolver, SMP truststore, algorithms and cache bounds."""

    zone: str
    scheme: BdxlScheme = BdxlScheme.PEPPOL
    nameserver: tuple[str, int] | None = None
    smp_trust: tuple[x509.Certificate, ...] = ()
    # Production callers keep this on: an SMP answer whose signer is not trusted is refused.
    require_trust: bool = True
    allowed_algorithms: frozenset[str] = ALLOWED
    timeout: float = 5.0
    negative_ttl: float = 30.0  # upper bound for caching "not registered"
    max_ttl: float = 3600.0  # upper bound for caching anything
    legacy_cname: bool = True
    legacy_port: int = 80
    max_entries: int = 10_000
    # Where an SMP may send this access point. Endpoint URLs must be https unless allow_http (test networks);
    # an address that is not public (loopback, private, link-local, shared, reserved) is refused unless it lies
    # in allowed_networks, for the SMPs themselves (http is theirs by Peppol's rules) as for the endpoints.
    allow_http: bool = False
    allowed_networks: tuple[IpNetwork, ...] = ()
    max_response: int = MAX_RESPONSE

    @property
    def endpoint_policy(self) -> AddressPolicy:
        """What an endpoint URL found through discovery must be, and where its connections may go."""
        return AddressPolicy(self.allowed_networks, allow_http=self.allow_http)

    @property
    def smp_policy(self) -> AddressPolicy:
        """Where SMP requests may go: http or https, to the addresses the endpoint policy allows."""
        return AddressPolicy(self.allowed_networks, allow_http=True)


@dataclass(slots=True)
class _HttpEntry:
    expires: float
    etag: str | None
    verified: VerifiedDocument
    metadata: ServiceMetadata


class _Cache(Generic[T]):
    """Answers and "not registered" outcomes until they expire; a full cache drops the entry closest to expiry."""

    def __init__(self, limit: int) -> None:
        self.entries: dict[object, tuple[float, T | NotRegistered]] = {}
        self.limit = limit

    def get(self, key: object, now: float) -> T | None:
        """The live answer, None when absent or expired; a cached negative outcome is raised again."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self.entries[key]
            return None
        if isinstance(entry[1], NotRegistered):
            raise entry[1]
        return entry[1]

    def put(self, key: object, value: T | NotRegistered, expires: float) -> None:
        """Remember ``value`` until ``expires``."""
        if len(self.entries) >= self.limit:
            del self.entries[min(self.entries, key=lambda k: self.entries[k][0])]
        self.entries[key] = (expires, value)


def _max_age(headers: Mapping[str, str]) -> float:
    cache_control = headers.get("Cache-Control", "")
    if "no-store" in cache_control or "no-cache" in cache_control:
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else 0.0


def _signer_matches_uid(signer: x509.Certificate, uid: str) -> bool:
    """SMP 1.0 CertificateUID: the subject (RFC 4514), its CN, or the certificate's SHA-256 (hex)."""
    if not uid:
        return False
    names = {
        signer.subject.rfc4514_string(),
        hashlib.sha256(signer.public_bytes(serialization.Encoding.DER)).hexdigest(),
    }
    names.update(str(a.value) for a in signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return uid.strip() in names


class DiscoveryClient:
    """Discovers endpoints; holds the DNS resolver, an HTTP session and the caches (close it when done)."""

    def __init__(
        self,
        settings: DiscoverySettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.resolver = BdxlResolver(
            settings.zone,
            scheme=settings.scheme,
            nameserver=settings.nameserver,
            legacy_cname=settings.legacy_cname,
            legacy_port=settings.legacy_port,
            timeout=settings.timeout,
            negative_ttl=settings.negative_ttl,
        )
        self._clock = clock
        self._now = now
        self._session: aiohttp.ClientSession | None = None
        self._dns: _Cache[SmpLocation] = _Cache(settings.max_entries)
        self._results: _Cache[Endpoint] = _Cache(settings.max_entries)
        self._http: dict[str, _HttpEntry] = {}

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> DiscoveryClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def clear(self) -> None:
        """Forget every cached answer."""
        self._dns.entries.clear()
        self._results.entries.clear()
        self._http.clear()

    async def discover(
        self,
        participant: str | Identifier,
        document_type: str | Identifier,
        *,
        process: str | Identifier | None = None,
        transport_profile: str | Sequence[str] = DEFAULT_PROFILES,
    ) -> Endpoint:
        """The endpoint for ``participant`` and ``document_type``; NotRegistered or another DiscoveryError if none."""
        try:
            who = (
                participant if isinstance(participant, Identifier) else Identifier.parse(participant, allow_ebcore=True)
            )
            what = document_type if isinstance(document_type, Identifier) else Identifier.parse(document_type)
            how = process if isinstance(process, Identifier) or process is None else Identifier.parse(process)
        except IdentifierError as exc:
            raise DiscoveryError(str(exc)) from None
        profiles = (transport_profile,) if isinstance(transport_profile, str) else tuple(transport_profile)
        key = (who.key(), str(what), None if how is None else str(how), profiles)
        now = self._clock()
        cached = self._results.get(key, now)
        if cached is not None:
            return cached
        try:
            endpoint, ttl = await self._discover(who, what, how, profiles)
        except NotRegistered as exc:
            self._results.put(key, exc, now + self.settings.negative_ttl)
            raise
        self._results.put(key, endpoint, now + min(ttl, self.settings.max_ttl))
        return endpoint

    async def _locate(self, participant: Identifier) -> SmpLocation:
        now = self._clock()
        cached = self._dns.get(participant.key(), now)
        if cached is not None:
            return cached
        try:
            location = await self.resolver.locate(participant)
        except _DnsNotRegistered as exc:
            error = NotRegistered(str(exc))
            self._dns.put(participant.key(), error, now + min(exc.ttl, self.settings.negative_ttl))
            raise error from None
        except BdxlError as exc:
            raise DiscoveryError(str(exc)) from None
        self._dns.put(participant.key(), location, now + min(location.ttl, self.settings.max_ttl))
        return location

    async def _discover(
        self, who: Identifier, what: Identifier, how: Identifier | None, profiles: tuple[str, ...]
    ) -> tuple[Endpoint, float]:
        location = await self._locate(who)
        url = metadata_url(location.url, location.api, who, what)
        verified, metadata, ttl = await self._fetch_metadata(url)
        ttl = min(ttl, location.ttl)
        # Trust first: nothing an untrusted document says is acted on, least of all where to fetch next.
        trusted = self._trusted(verified)
        redirected = False
        if metadata.redirect is not None:
            redirect = metadata.redirect
            verified, metadata, redirect_ttl = await self._fetch_metadata(redirect.href)
            ttl = min(ttl, redirect_ttl)
            _check_redirect_signer(redirect, verified)
            trusted = self._trusted(verified)
            if metadata.redirect is not None:
                # Peppol SMP spec: a client should not follow a second redirect.
                raise DiscoveryError(f"{redirect.href} redirects again; only one Redirect is followed")
            redirected = True
            url = redirect.href
        if metadata.participant.key() != who.key() or metadata.document != what:
            raise SmpSignatureError(
                f"the SMP answered about {metadata.participant} / {metadata.document}, not {who} / {what}"
            )
        chosen = choose_endpoint(metadata, how, profiles, self._now())
        if chosen is None:
            raise NotRegistered(f"{who} has no active endpoint for {what} with transport profile {', '.join(profiles)}")
        process, info = chosen
        try:
            self.settings.endpoint_policy.check_url(info.url, "the endpoint URL")
        except UrlRefused as exc:
            raise EndpointRefused(f"{who} / {what}: {exc}") from None
        try:
            certificate = x509.load_der_x509_certificate(info.certificate)
        except ValueError:
            raise DiscoveryError("the endpoint certificate in the SMP answer is not a DER X.509 certificate") from None
        certpub = []
        for published in metadata.certpub:
            try:
                certpub.append((published.usage, x509.load_der_x509_certificate(published.der)))
            except ValueError:
                log.warning("CertPub certificate for %s / %s is unreadable; skipped", who, what)
        endpoint = Endpoint(
            url=info.url,
            transport_profile=info.transport_profile,
            certificate=certificate,
            participant=who,
            document_type=what,
            process=process,
            smp_url=url,
            signer=verified.signer,
            signature_verified=trusted,
            redirected=redirected,
            expiration=info.expiration,
            certpub=tuple(certpub),
        )
        return endpoint, ttl

    def _trusted(self, verified: VerifiedDocument) -> bool:
        if not self.settings.smp_trust:
            if self.settings.require_trust:
                raise SmpSignatureError("no SMP truststore is configured, so no SMP signer can be trusted")
            return False
        trust = TrustSettings(anchors=self.settings.smp_trust, revocation=RevocationMode.OFF)
        try:
            validate_certificate(verified.signer, (), trust, at=self._now(), usage=CertificateUsage.SIGNATURE)
        except TrustError as exc:
            raise SmpSignatureError(f"the SMP signer is not trusted: {exc.reason}") from None
        return True

    def _session_for(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session(timeout=self.settings.timeout, addresses=self.settings.smp_policy)
        return self._session

    async def _fetch_metadata(self, url: str) -> tuple[VerifiedDocument, ServiceMetadata, float]:
        now = self._clock()
        cached = self._http.get(url)
        if cached is not None and cached.expires > now:
            return cached.verified, cached.metadata, cached.expires - now
        headers = {"Accept": "application/xml, text/xml"}
        if cached is not None and cached.etag:
            headers["If-None-Match"] = cached.etag
        try:
            self.settings.smp_policy.check_url(url, "the SMP URL")
            # The SMP is usually another organisation's (BDXL names it): our trace ids stay here.
            session, limit = self._session_for(), self.settings.max_response
            answer = await fetch(session, "GET", url, headers=headers, max_bytes=limit, trace=False)
        except UrlRefused as exc:
            raise DiscoveryError(str(exc)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DiscoveryError(f"cannot fetch {url}: {exc.__class__.__name__} {exc}") from None
        if answer.status == 304 and cached is not None:
            cached.expires = now + min(_max_age(answer.headers), self.settings.max_ttl)
            return cached.verified, cached.metadata, cached.expires - now
        if answer.status == 404:
            raise NotRegistered(f"the SMP knows no such participant or document type ({url})")
        if answer.status != 200:
            raise DiscoveryError(f"the SMP answered HTTP {answer.status} for {url}")
        max_age = _max_age(answer.headers)
        etag = answer.headers.get("ETag")
        verified, metadata = self.read_document(answer.body)
        if max_age > 0:
            if len(self._http) >= self.settings.max_entries:
                self._http.clear()
            self._http[url] = _HttpEntry(now + min(max_age, self.settings.max_ttl), etag, verified, metadata)
        return verified, metadata, max_age

    def read_document(self, body: bytes) -> tuple[VerifiedDocument, ServiceMetadata]:
        """Parse and verify one signed ServiceMetadata (any flavour) with this client's algorithm policy."""
        try:
            root = parse_xml(body, max_bytes=self.settings.max_response, what="SMP answer")
        except EbmsError as exc:
            raise DiscoveryError(exc.detail) from None
        try:
            verified = verify_document(root, allowed=self.settings.allowed_algorithms)
        except SignatureError as exc:
            raise SmpSignatureError(str(exc)) from None
        try:
            return verified, parse_service_metadata(verified.root)
        except DocumentError as exc:
            raise DiscoveryError(f"unusable SMP answer: {exc}") from None


def metadata_url(base: str, api: SmpApi, participant: Identifier, document: Identifier) -> str:
    """The ServiceMetadata URL under an SMP base URL (SMP 2.0 inserts ``bdxr-smp-2``)."""
    root = base.rstrip("/")
    if api is SmpApi.SMP2:
        root += "/bdxr-smp-2"
    return f"{root}/{participant.url_segment()}/services/{document.url_segment()}"


def _check_redirect_signer(redirect: Redirect, verified: VerifiedDocument) -> None:
    der = verified.signer.public_bytes(serialization.Encoding.DER)
    if redirect.certificates:
        if der not in redirect.certificates:
            raise SmpSignatureError("the redirected SMP's signer is not the certificate the Redirect names")
    elif not _signer_matches_uid(verified.signer, redirect.certificate_uid):
        raise SmpSignatureError("the redirected SMP's signer does not match the Redirect's CertificateUID")


def choose_endpoint(
    metadata: ServiceMetadata, process: Identifier | None, profiles: Sequence[str], now: datetime
) -> tuple[Identifier | None, EndpointInfo] | None:
    """The first endpoint, in order of ``profiles``, of a matching process that is active at ``now``."""
    candidates = []
    for entry in metadata.processes:
        # A process-less entry (SMP 2.0) or bdx:noprocess (SDK, Peppol) serves any process.
        wildcard = entry.process is None or entry.process.value == NO_PROCESS
        if process is not None and not wildcard and entry.process != process:
            continue
        for endpoint in entry.endpoints:
            if endpoint.activation is not None and endpoint.activation > now:
                continue
            if endpoint.expiration is not None and endpoint.expiration <= now:
                continue
            candidates.append((entry.process, endpoint))
    for profile in profiles:
        for chosen in candidates:
            if chosen[1].transport_profile == profile:
                return chosen
    return None


async def discover_once(
    settings: DiscoverySettings,
    participant: str,
    document_type: str,
    *,
    process: str | None = None,
    transport_profile: str | Sequence[str] = DEFAULT_PROFILES,
) -> Endpoint:
    """One lookup with a short-lived client (the CLI's path)."""
    async with DiscoveryClient(settings) as client:
        return await client.discover(participant, document_type, process=process, transport_profile=transport_profile)


__all__ = [
    "DEFAULT_PROFILES",
    "DiscoveryClient",
    "DiscoveryError",
    "DiscoverySettings",
    "Endpoint",
    "EndpointRefused",
    "NotRegistered",
    "SmpSignatureError",
    "discover_once",
    "metadata_url",
]
