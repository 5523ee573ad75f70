"""Revocation status of a certificate: OCSP first, the CRL as fallback, both cached.

The checking is sans-I/O apart from one injected callable, the ``Fetcher`` (``fetch.UrlFetcher`` in the shell,
a dictionary in tests), and the clock is a parameter too. The pure steps are public on their own:
``build_ocsp_request`` / ``evaluate_ocsp_response`` and ``load_crl`` / ``crl_status``.

Why OCSP with a CRL fallback: Peppol's OCSP responders have buckled under load and access points without a
fallback then refused every message (oxalis#460, OA#102). A result says only GOOD, REVOKED or UNKNOWN; what
UNKNOWN means for a message (refuse or pass with a warning) is the caller's ``RevocationMode`` (``trust``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    ExtensionOID,
    SignatureAlgorithmOID,
)

# An OCSP nonce of 16 bytes is what RFC 8954 asks for (at least 1, at most 32).
NONCE_LENGTH = 16


class FetchError(Exception):
    """A revocation location could not be read (refused, timed out, HTTP error, too large)."""


class Fetcher(Protocol):
    """Reads a revocation location: GET ``url`` when ``body`` is None (CRL), else POST it as an OCSP request."""

    def __call__(self, url: str, body: bytes | None, /) -> bytes:
        """The response body; raises FetchError when there is none."""
        ...


class RevocationSource(Protocol):
    """What trust validation asks for a certificate's revocation status (``RevocationChecker`` is one; the access
    point's shell has its own, answering from what its asynchronous lookups learnt)."""

    @property
    def check_intermediates(self) -> bool:
        """Whether intermediates are checked too, not only the end-entity certificate."""
        ...

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate, *, at: datetime) -> RevocationResult:
        """The status of ``certificate`` (issued by ``issuer``) as of ``at``."""
        ...


class RevocationStatus(StrEnum):
    """What a revocation check concluded."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"  # no answer, an unusable answer, or a responder that does not know the certificate


@dataclass(frozen=True, slots=True)
class RevocationResult:
    """The outcome for one certificate; ``detail`` is the precise, human-readable account for logs and the CLI."""

    status: RevocationStatus
    detail: str
    source: str = ""  # "ocsp <url>" or "crl <url>" for an answer that came from somewhere
    this_update: datetime | None = None
    next_update: datetime | None = None
    revoked_at: datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None
    cached: bool = False
    # UNKNOWN only because a location could not be read now (down, slow, rested after a failure): asking later may
    # give an answer, so a receiver in hard-fail mode may say "try again later" rather than refuse for good.
    transient: bool = False


def describe(certificate: x509.Certificate) -> str:
    """A certificate as logs name it: subject and serial."""
    return f"'{certificate.subject.rfc4514_string()}' (serial {certificate.serial_number:x})"


def _http_uris(names: Sequence[x509.GeneralName]) -> list[str]:
    # LDAP and other schemes are left out: the fetcher speaks HTTP only.
    return [
        name.value
        for name in names
        if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(("http://", "https://"))
    ]


def ocsp_urls(certificate: x509.Certificate) -> tuple[str, ...]:
    """The OCSP responder locations in the certificate's Authority Information Access (HTTP only)."""
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    locations = [d.access_location for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP]
    return tuple(_http_uris(locations))


def crl_urls(certificate: x509.Certificate) -> tuple[str, ...]:
    """The CRL locations in the certificate's CRL Distribution Points (HTTP only, full names only)."""
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    urls: list[str] = []
    for point in points:
        # A point limited to some reasons, or whose CRL another authority issues, is not a complete answer.
        if point.full_name and point.reasons is None and point.crl_issuer is None:
            urls.extend(_http_uris(point.full_name))
    return tuple(dict.fromkeys(urls))


# --------------------------------------------------------------------------------------------------- OCSP


def build_ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None = None) -> bytes:
    """A DER OCSP request for one certificate (SHA-1 CertID, which RFC 5019 responders require), with a nonce."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())  # noqa: S303
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def _cert_id(
    certificate: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes]:
    # The CertID hashes (issuer name, issuer key bits) under the response's own algorithm.
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, algorithm).build()
    return request.issuer_name_hash, request.issuer_key_hash


def _key_sha1(certificate: x509.Certificate) -> bytes:
    # ResponderID byKey: SHA-1 of the subjectPublicKey bits, exactly what SKI method 1 computes.
    return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest


def _verify_with_key(
    public_key: object,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm | None,
    oid: x509.ObjectIdentifier,
) -> None:
    """Verify a signature made by an OCSP responder; InvalidSignature or UnsupportedAlgorithm when it fails."""
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public_key.verify(signature, data)
        return
    if algorithm is None:
        raise UnsupportedAlgorithm(f"signature algorithm {oid.dotted_string} needs a hash")
    if isinstance(public_key, rsa.RSAPublicKey):
        if oid == SignatureAlgorithmOID.RSASSA_PSS:
            # The response does not expose the PSS parameters; the usual MGF1 with the same hash is assumed.
            pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
            public_key.verify(signature, data, pss, algorithm)
        else:
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(algorithm))
        return
    raise UnsupportedAlgorithm(f"unsupported responder key type {type(public_key).__name__}")


def _valid_at(certificate: x509.Certificate, at: datetime, skew: timedelta) -> bool:
    return certificate.not_valid_before_utc - skew <= at <= certificate.not_valid_after_utc + skew


def _responder_certificate(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, at: datetime, skew: timedelta
) -> tuple[x509.Certificate | None, str]:
    """The certificate entitled to sign this response: the issuer itself or a responder it delegated to."""

    def is_responder(candidate: x509.Certificate) -> bool:
        if response.responder_name is not None:
            return candidate.subject == response.responder_name
        return _key_sha1(candidate) == response.responder_key_hash

    if is_responder(issuer):
        return issuer, ""
    # RFC 6960 4.2.2.2: a delegated responder is issued directly by the CA and carries id-kp-OCSPSigning.
    problem = "the response is signed by neither the issuer nor a responder certificate it includes"
    for candidate in response.certificates:
        if not is_responder(candidate):
            continue
        try:
            candidate.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            problem = f"responder certificate {describe(candidate)} is not issued by the certificate's issuer"
            continue
        try:
            usages = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (x509.ExtensionNotFound, ValueError):
            usages = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
            problem = f"responder certificate {describe(candidate)} lacks id-kp-OCSPSigning"
            continue
        if not _valid_at(candidate, at, skew):
            problem = f"responder certificate {describe(candidate)} is not valid at {at.isoformat()}"
            continue
        return candidate, ""
    return None, problem


def evaluate_ocsp_response(
    data: bytes,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    at: datetime,
    nonce: bytes | None = None,
    source: str = "ocsp",
    clock_skew: timedelta = timedelta(minutes=5),
    max_age_without_next_update: timedelta = timedelta(hours=1),
) -> RevocationResult:
    """Judge a DER OCSP response about ``certificate``; anything unusable is UNKNOWN with the reason why.

    Checks: successful response status; a SingleResponse for exactly this CertID; the signature by the issuer
    or a delegated responder (issued by the issuer, id-kp-OCSPSigning, valid at ``at``); the nonce, when the
    response carries one (RFC 5019 responders answer from a cache without one); thisUpdate not in the future
    and nextUpdate not past at ``at`` (within ``clock_skew``).
    """

    def unknown(reason: str) -> RevocationResult:
        return RevocationResult(RevocationStatus.UNKNOWN, f"{source}: {reason}", source)

    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError as exc:
        return unknown(f"unreadable OCSP response ({exc})")
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return unknown(f"responder answered {response.response_status.name}")
    try:
        singles = list(response.responses)
        single = None
        for candidate in singles:
            if candidate.serial_number != certificate.serial_number:
                continue
            name_hash, key_hash = _cert_id(certificate, issuer, candidate.hash_algorithm)
            if (candidate.issuer_name_hash, candidate.issuer_key_hash) == (name_hash, key_hash):
                single = candidate
                break
        if single is None:
            return unknown("the response does not cover this certificate")
        signer, problem = _responder_certificate(response, issuer, at, clock_skew)
        if signer is None:
            return unknown(problem)
        _verify_with_key(
            signer.public_key(),
            response.signature,
            response.tbs_response_bytes,
            response.signature_hash_algorithm,
            response.signature_algorithm_oid,
        )
    except InvalidSignature:
        return unknown("the response signature does not verify")
    except (ValueError, UnsupportedAlgorithm) as exc:
        return unknown(f"unusable OCSP response ({exc})")
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        echoed = None
    except ValueError as exc:
        return unknown(f"unreadable OCSP response extensions ({exc})")
    if echoed is not None and nonce is not None and echoed != nonce:
        return unknown("the response nonce does not match the request (replayed?)")

    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > at + clock_skew:
        return unknown(f"the response is not yet valid at {at.isoformat()} (thisUpdate {this_update.isoformat()})")
    if next_update is not None and next_update < at - clock_skew:
        return unknown(f"the response is stale at {at.isoformat()} (nextUpdate {next_update.isoformat()})")
    if next_update is None and this_update < at - max_age_without_next_update:
        return unknown(f"the response from {this_update.isoformat()} has no nextUpdate and is too old")

    status = single.certificate_status
    if status is ocsp.OCSPCertStatus.GOOD:
        return RevocationResult(RevocationStatus.GOOD, f"{source}: good", source, this_update, next_update)
    if status is ocsp.OCSPCertStatus.REVOKED:
        revoked = RevocationResult(RevocationStatus.REVOKED, "", source, this_update, next_update)
        return _revoked(revoked, certificate, single.revocation_time_utc, single.revocation_reason)
    return unknown("the responder does not know the certificate")


def _revoked(
    base: RevocationResult,
    certificate: x509.Certificate,
    revoked_at: datetime | None,
    reason: x509.ReasonFlags | None,
) -> RevocationResult:
    when = revoked_at.isoformat() if revoked_at is not None else "an unknown time"
    why = f", reason {reason.value}" if reason is not None else ""
    detail = f"{describe(certificate)} was revoked at {when}{why} ({base.source})"
    return replace(base, detail=detail, revoked_at=revoked_at, revocation_reason=reason)


# ---------------------------------------------------------------------------------------------------- CRL


@dataclass(frozen=True, slots=True)
class VerifiedCrl:
    """A CRL whose signature by the issuer was checked, with where it came from."""

    crl: x509.CertificateRevocationList
    source: str


class CrlError(ValueError):
    """A CRL that cannot be used (unreadable, wrong issuer, bad signature, stale, partial)."""


def load_crl(
    data: bytes,
    issuer: x509.Certificate,
    *,
    at: datetime,
    source: str = "crl",
    clock_skew: timedelta = timedelta(minutes=5),
) -> VerifiedCrl:
    """Parse (DER or PEM) and verify a CRL the issuer signed, complete and current at ``at``; CrlError if not."""
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlError(f"{source}: unreadable CRL ({exc})") from None
    if crl.issuer != issuer.subject:
        # Indirect CRLs (another authority signing) are not supported.
        raise CrlError(f"{source}: CRL issued by '{crl.issuer.rfc4514_string()}', not by the certificate's issuer")
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.crl_sign:
            raise CrlError(f"{source}: the issuer's keyUsage does not allow cRLSign")
    except x509.ExtensionNotFound:
        pass
    try:
        signed = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise CrlError(f"{source}: cannot check the CRL signature ({exc})") from None
    if not signed:
        raise CrlError(f"{source}: the CRL signature does not verify with the issuer's key")
    try:
        extensions = crl.extensions
        if any(e.oid == ExtensionOID.DELTA_CRL_INDICATOR for e in extensions):
            raise CrlError(f"{source}: a delta CRL is not a complete list")
        for extension in extensions:
            value = extension.value
            if isinstance(value, x509.IssuingDistributionPoint) and (value.only_some_reasons or value.indirect_crl):
                raise CrlError(f"{source}: a partial or indirect CRL is not a complete list")
    except ValueError as exc:
        raise CrlError(f"{source}: unreadable CRL extensions ({exc})") from None
    if crl.last_update_utc > at + clock_skew:
        raise CrlError(f"{source}: the CRL is not yet valid at {at.isoformat()}")
    next_update = crl.next_update_utc
    if next_update is not None and next_update < at - clock_skew:
        raise CrlError(f"{source}: the CRL is stale at {at.isoformat()} (nextUpdate {next_update.isoformat()})")
    return VerifiedCrl(crl, source)


def crl_status(verified: VerifiedCrl, certificate: x509.Certificate) -> RevocationResult:
    """GOOD or REVOKED for a certificate by a verified CRL of its issuer."""
    crl = verified.crl
    base = RevocationResult(RevocationStatus.GOOD, "", verified.source, crl.last_update_utc, crl.next_update_utc)
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except (x509.ExtensionNotFound, ValueError):
        idp = None
    if idp is not None:
        is_ca = _is_ca(certificate)
        excluded = (idp.only_contains_ca_certs and not is_ca) or (idp.only_contains_user_certs and is_ca)
        if excluded or idp.only_contains_attribute_certs:
            detail = f"{verified.source}: the CRL's scope does not cover the certificate"
            return replace(base, status=RevocationStatus.UNKNOWN, detail=detail)
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
    if entry is None:
        return replace(base, detail=f"{verified.source}: not listed")
    reason: x509.ReasonFlags | None = None
    with contextlib.suppress(x509.ExtensionNotFound, ValueError):
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    if reason is x509.ReasonFlags.remove_from_crl:
        # Only meaningful in delta CRLs, which load_crl refuses; an entry with it is not a revocation.
        return replace(base, detail=f"{verified.source}: removed from the CRL")
    revoked = replace(base, status=RevocationStatus.REVOKED)
    return _revoked(revoked, certificate, entry.revocation_date_utc, reason)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ lookups


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Cached:
    result: RevocationResult
    expires: datetime  # on the cache's clock


@dataclass(frozen=True, slots=True)
class _CachedCrl:
    crl: VerifiedCrl
    expires: datetime


class RevocationCache:
    """What lookups learnt: answers per certificate, CRLs per location and issuer, locations that failed.

    OCSP answers are kept until their nextUpdate or ``ocsp_max_age``, whichever is earlier; CRLs until their
    nextUpdate or ``crl_max_age``. A location that failed is not asked again for ``retry_after_failure`` (an
    overloaded responder is not hammered; the CRL answers meanwhile, and a lookup that meets only rested
    locations ends at once). Expiry runs on the caller's ``now``; an answer's freshness is judged at the ``at``
    of each lookup. Safe to share between threads.
    """

    def __init__(
        self,
        *,
        ocsp_max_age: timedelta = timedelta(hours=1),
        crl_max_age: timedelta = timedelta(hours=24),
        retry_after_failure: timedelta = timedelta(seconds=30),
        clock_skew: timedelta = timedelta(minutes=5),
    ) -> None:
        self.ocsp_max_age = ocsp_max_age
        self.crl_max_age = crl_max_age
        self.retry_after_failure = retry_after_failure
        self.skew = clock_skew
        self._lock = threading.Lock()
        self._results: dict[tuple[bytes, int], _Cached] = {}
        self._crls: dict[tuple[str, bytes], _CachedCrl] = {}
        self._failed: dict[str, datetime] = {}

    def clear(self) -> None:
        """Forget every answer and failure."""
        with self._lock:
            self._results.clear()
            self._crls.clear()
            self._failed.clear()

    def answer(
        self, certificate: x509.Certificate, issuer: x509.Certificate, *, at: datetime, now: datetime
    ) -> RevocationResult | None:
        """The kept answer about ``certificate``, if it is still kept and fresh at ``at``."""
        with self._lock:
            cached = self._results.get((_key_sha1(issuer), certificate.serial_number))
        if cached is None or now >= cached.expires or not self._fresh(cached.result, at):
            return None
        return replace(cached.result, cached=True)

    def _fresh(self, result: RevocationResult, at: datetime) -> bool:
        if result.this_update is not None and result.this_update > at + self.skew:
            return False
        return result.next_update is None or at - self.skew <= result.next_update

    def remember(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        result: RevocationResult,
        *,
        now: datetime,
        max_age: timedelta,
    ) -> None:
        """Keep a GOOD or REVOKED answer until its nextUpdate or ``max_age``."""
        expires = now + max_age
        if result.next_update is not None:
            expires = min(expires, result.next_update)
        with self._lock:
            self._results[(_key_sha1(issuer), certificate.serial_number)] = _Cached(result, expires)

    def crl(self, url: str, issuer: x509.Certificate, *, at: datetime, now: datetime) -> VerifiedCrl | None:
        """The CRL kept from ``url`` for ``issuer``, if still kept and current at ``at``."""
        with self._lock:
            cached = self._crls.get((url, _key_sha1(issuer)))
        if cached is None or now >= cached.expires:
            return None
        crl = cached.crl.crl
        current = crl.last_update_utc <= at + self.skew and (
            crl.next_update_utc is None or at - self.skew <= crl.next_update_utc
        )
        return cached.crl if current else None

    def remember_crl(self, url: str, issuer: x509.Certificate, verified: VerifiedCrl, *, now: datetime) -> None:
        """Keep a verified CRL until its nextUpdate or ``crl_max_age``."""
        expires = now + self.crl_max_age
        if verified.crl.next_update_utc is not None:
            expires = min(expires, verified.crl.next_update_utc)
        with self._lock:
            self._crls[(url, _key_sha1(issuer))] = _CachedCrl(verified, expires)

    def failed_recently(self, url: str, now: datetime) -> bool:
        """True while ``url`` rests after a failure."""
        with self._lock:
            until = self._failed.get(url)
        return until is not None and now < until

    def failed(self, url: str, now: datetime) -> None:
        """Rest ``url`` for ``retry_after_failure``."""
        with self._lock:
            self._failed[url] = now + self.retry_after_failure


@dataclass(frozen=True, slots=True)
class Fetch:
    """A location a lookup needs read: GET ``url`` (a CRL, ``body`` None) or POST the OCSP request ``body``."""

    url: str
    body: bytes | None


# A lookup as steps (sans-I/O): it yields each Fetch it needs, is sent the response body (or thrown the
# FetchError) and returns the result. ``run_lookup`` drives it with a blocking Fetcher; the access point's
# shell drives it with an async one, so a slow responder never holds its event loop.
LookupSteps = Generator[Fetch, bytes, RevocationResult]


def lookup(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    at: datetime,
    now: datetime,
    cache: RevocationCache,
    nonce: Callable[[], bytes] | None = lambda: os.urandom(NONCE_LENGTH),
) -> LookupSteps:
    """OCSP first, then the CRL; what is learnt goes into ``cache`` (kept answers are used first)."""
    cached = cache.answer(certificate, issuer, at=at, now=now)
    if cached is not None:
        return cached
    notes: list[str] = []
    unreachable = False
    for url in ocsp_urls(certificate):
        source = f"ocsp {url}"
        if cache.failed_recently(url, now):
            notes.append(f"{source}: failed recently, not asked again yet")
            unreachable = True
            continue
        sent = nonce() if nonce is not None else None
        try:
            data = yield Fetch(url, build_ocsp_request(certificate, issuer, sent))
        except FetchError as exc:
            cache.failed(url, now)  # only an unreachable responder is rested; one that answered is working
            notes.append(f"{source}: unreachable ({exc})")
            unreachable = True
            continue
        result = evaluate_ocsp_response(
            data,
            certificate,
            issuer,
            at=at,
            nonce=sent,
            source=source,
            clock_skew=cache.skew,
            max_age_without_next_update=cache.ocsp_max_age,
        )
        if result.status is not RevocationStatus.UNKNOWN:
            cache.remember(certificate, issuer, result, now=now, max_age=cache.ocsp_max_age)
            return result
        notes.append(result.detail)
    for url in crl_urls(certificate):
        source = f"crl {url}"
        verified = cache.crl(url, issuer, at=at, now=now)
        if verified is None and cache.failed_recently(url, now):
            notes.append(f"{source}: failed recently, not fetched again yet")
            unreachable = True
            continue
        if verified is None:
            try:
                verified = load_crl((yield Fetch(url, None)), issuer, at=at, source=source, clock_skew=cache.skew)
            except FetchError as exc:
                cache.failed(url, now)
                notes.append(f"{source}: unreachable ({exc})")
                unreachable = True
                continue
            except CrlError as exc:
                cache.failed(url, now)
                notes.append(str(exc))
                continue
            cache.remember_crl(url, issuer, verified, now=now)
        result = crl_status(verified, certificate)
        if result.status is not RevocationStatus.UNKNOWN:
            cache.remember(certificate, issuer, result, now=now, max_age=cache.crl_max_age)
            return result
        notes.append(result.detail)
    if not notes:
        notes.append("the certificate names no OCSP responder and no CRL distribution point")
    return RevocationResult(RevocationStatus.UNKNOWN, "; ".join(notes), transient=unreachable)


def run_lookup(steps: LookupSteps, fetch: Fetcher) -> RevocationResult:
    """Drive a lookup with a blocking fetcher."""
    try:
        wanted = next(steps)
        while True:
            try:
                data = fetch(wanted.url, wanted.body)
            except FetchError as exc:
                wanted = steps.throw(exc)
            else:
                wanted = steps.send(data)
    except StopIteration as done:
        result: RevocationResult = done.value
        return result


class RevocationChecker:
    """Looks up revocation status through a blocking Fetcher (the CLI's ``verify``): ``lookup`` over a cache.

    The cache runs on ``clock`` (injectable); see ``RevocationCache`` for what is kept how long. Safe to share
    between threads; the fetcher is called without holding a lock.
    """

    def __init__(
        self,
        fetcher: Fetcher,
        *,
        clock: Callable[[], datetime] = _utc_now,
        nonce: Callable[[], bytes] | None = lambda: os.urandom(NONCE_LENGTH),
        ocsp_max_age: timedelta = timedelta(hours=1),
        crl_max_age: timedelta = timedelta(hours=24),
        retry_after_failure: timedelta = timedelta(seconds=30),
        clock_skew: timedelta = timedelta(minutes=5),
        check_intermediates: bool = False,
    ) -> None:
        self._fetch = fetcher
        self._clock = clock
        self._nonce = nonce
        self.cache = RevocationCache(
            ocsp_max_age=ocsp_max_age,
            crl_max_age=crl_max_age,
            retry_after_failure=retry_after_failure,
            clock_skew=clock_skew,
        )
        # Whether trust.validate_certificate asks about intermediates too, not only the end-entity certificate.
        self.check_intermediates = check_intermediates

    def clear(self) -> None:
        """Forget every cached answer and failure."""
        self.cache.clear()

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate, *, at: datetime) -> RevocationResult:
        """The revocation status of ``certificate`` (issued by ``issuer``) as of ``at``."""
        steps = lookup(certificate, issuer, at=at, now=self._clock(), cache=self.cache, nonce=self._nonce)
        return run_lookup(steps, self._fetch)
