"""Trust in a partner's certificate: pinned certificates, or a verified path to a trust anchor, plus revocation.

``validate_certificate`` returns a ``TrustResult`` (the path that held) or raises ``TrustError``: EBMS:0101 whose
wire detail names the certificate-path reason (expired, untrusted issuer, revoked, revocation status unknown) or
is generic, and the precise reason in ``reason`` / ``log_detail`` for the log and the CLI.

Why a small path builder of our own rather than ``cryptography.x509.verification`` (PolicyBuilder, Store,
ClientVerifier): that verifier implements the CA/Browser Forum web-PKI profile. Even with
``ExtensionPolicy.permit_all()`` it refuses Ed25519 and brainpoolP256r1 keys ("Forbidden public key algorithm"),
which are exactly eDelivery AS4 2.0's default and its ECC option; out of the box it also requires a
subjectAltName, which AS4 certificates (Peppol's included) lack. It reports failures as one string, where the CLI
and the logs need to say *which* certificate expired, whose signature failed, or which constraint was broken.
The checks here follow RFC 5280 section 6 where AS4 needs them (signatures, validity, basicConstraints, keyUsage,
pathLenConstraint, unknown critical extensions); certificate policies and name constraints are not processed, so
a certificate that marks either critical is refused rather than half-checked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.security.keys import load_certificates
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.revocation import RevocationResult, RevocationSource, RevocationStatus, describe

log = logging.getLogger(__name__)

# What goes on the wire for every trust failure: which check failed is for our log only.
WIRE_DETAIL = "the certificate is not trusted"
MAX_PATH_LENGTH = 8  # certificates from the end entity to the anchor; real AS4 PKIs use 2 or 3
MIN_RSA_BITS = 2048
_WEAK_HASHES = frozenset({"md5", "sha1"})

# Critical extensions this module understands (or may safely ignore: EKU is not part of the AS4 profiles,
# SAN/IAN and AIA/CRLDP only describe). Any other critical extension makes the certificate unusable
# (RFC 5280 4.2: "A certificate-using system MUST reject the certificate if it encounters a critical
# extension it does not recognize").
_UNDERSTOOD_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.OCSP_NO_CHECK,
    }
)


class CertificateUsage(StrEnum):
    """What the certificate is about to be trusted for."""

    SIGNATURE = "signature"  # keyUsage digitalSignature or nonRepudiation
    ENCRYPTION = "encryption"  # keyUsage keyEncipherment (RSA-OAEP) or keyAgreement (X25519, ECDH-ES)


class TrustFailure(StrEnum):
    """Why a certificate was refused (a stable name for callers; ``TrustError.reason`` has the details)."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    UNTRUSTED_ISSUER = "untrusted-issuer"  # no path to an anchor, or an issuer whose key did not sign it
    INVALID_PATH = "invalid-path"  # an issuer that may not issue, a path too long, a weak or unknown algorithm
    UNSUPPORTED_EXTENSION = "unsupported-extension"
    KEY_USAGE = "key-usage"
    PARTY_MISMATCH = "party-mismatch"
    POLICY = "policy"  # the certificate does not assert a certificate policy the trust settings require
    REVOKED = "revoked"
    REVOCATION_UNKNOWN = "revocation-unknown"  # hard-fail mode and no fresh "good"


# The certificate-path reasons the wire may name (eDelivery lets an EBMS:0101 say why the signer's certificate was
# refused): the sender can act on them (renew, fix its chain, ask its CA), and they are facts about a public
# certificate, so they tell a prober nothing it could not find itself. Every other refusal (key usage, party
# binding, policy, a path that is malformed) stays WIRE_DETAIL, and signature, digest and decryption failures are
# other errors with their own generic details: naming those would make the endpoint an oracle.
PATH_REASONS: Mapping[TrustFailure, str] = MappingProxyType({
    TrustFailure.EXPIRED: f"{WIRE_DETAIL}: expired",
    TrustFailure.UNTRUSTED_ISSUER: f"{WIRE_DETAIL}: untrusted issuer",
    TrustFailure.REVOKED: f"{WIRE_DETAIL}: revoked",
    TrustFailure.REVOCATION_UNKNOWN: f"{WIRE_DETAIL}: revocation status unknown",
})  # fmt: skip


class TrustError(EbmsError):
    """A refused certificate: EBMS:0101 whose wire detail names a certificate-path reason (``PATH_REASONS``) or
    says no more than ``WIRE_DETAIL``; ``failure`` and ``reason`` say exactly why, for the log."""

    def __init__(self, failure: TrustFailure, reason: str, *, revocation: RevocationResult | None = None) -> None:
        super().__init__(ErrorCode.FAILED_AUTHENTICATION, PATH_REASONS.get(failure, WIRE_DETAIL), log_detail=reason)
        self.failure = failure
        self.reason = reason
        self.revocation = revocation


@dataclass(frozen=True, slots=True)
class TrustResult:
    """A certificate found trustworthy, how, and what revocation checking said (warnings for soft-fail passes)."""

    certificate: x509.Certificate
    path: tuple[x509.Certificate, ...]  # the certificate first, the anchor last; just the certificate if pinned
    pinned: bool  # trusted as such (pinned, or itself in the anchors) rather than through a path
    revocation: tuple[RevocationResult, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def anchor(self) -> x509.Certificate | None:
        """The trust anchor the path ends in (None for a pinned certificate)."""
        return None if self.pinned else self.path[-1]


def load_truststore(
    paths: str | Path | Iterable[str | Path], password: bytes | str | None = None
) -> tuple[x509.Certificate, ...]:
    """Every certificate in one or more PEM (any number per file), DER or PKCS#12 files, without duplicates.

    Suits anchors, intermediates and pinned partner certificates alike; KeyLoadError names a bad file.
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    secret = password.encode() if isinstance(password, str) else password
    found: dict[bytes, x509.Certificate] = {}
    for path in items:
        for certificate in load_certificates(path, secret):
            found.setdefault(_der(certificate), certificate)
    return tuple(found.values())


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------------------- single checks


def _validity(certificate: x509.Certificate, at: datetime, role: str) -> TrustError | None:
    if at < certificate.not_valid_before_utc:
        start = certificate.not_valid_before_utc.isoformat()
        reason = f"{role} {describe(certificate)} is not valid before {start} (checked at {at.isoformat()})"
        return TrustError(TrustFailure.NOT_YET_VALID, reason)
    if at > certificate.not_valid_after_utc:
        end = certificate.not_valid_after_utc.isoformat()
        return TrustError(
            TrustFailure.EXPIRED, f"{role} {describe(certificate)} expired at {end} (checked at {at.isoformat()})"
        )
    return None


def _extensions(certificate: x509.Certificate, role: str) -> tuple[x509.Extensions | None, TrustError | None]:
    try:
        extensions = certificate.extensions
    # cryptography raises these two apart from ValueError: an extension present twice, a name form it lacks.
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        return None, TrustError(TrustFailure.INVALID_PATH, f"{role} {describe(certificate)}: bad extensions ({exc})")
    for extension in extensions:
        if extension.critical and extension.oid not in _UNDERSTOOD_CRITICAL:
            name = getattr(extension.oid, "_name", "") or extension.oid.dotted_string
            reason = f"{role} {describe(certificate)} has an unsupported critical extension {name}"
            return None, TrustError(TrustFailure.UNSUPPORTED_EXTENSION, reason)
    return extensions, None


def _key_strength(certificate: x509.Certificate, role: str) -> TrustError | None:
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return TrustError(TrustFailure.INVALID_PATH, f"{role} {describe(certificate)}: unusable public key ({exc})")
    if isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey) and key.key_size < MIN_RSA_BITS:
        reason = f"{role} {describe(certificate)} has a {key.key_size}-bit key (at least {MIN_RSA_BITS} required)"
        return TrustError(TrustFailure.INVALID_PATH, reason)
    return None


def _signature_hash(certificate: x509.Certificate) -> TrustError | None:
    # cryptography verifies no SHA-1 or MD5 certificate signature at all; saying so beats "unsupported".
    try:
        algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        return TrustError(TrustFailure.INVALID_PATH, f"{describe(certificate)}: unsupported signature ({exc})")
    name = algorithm.name if algorithm is not None else ""
    if name in _WEAK_HASHES:
        reason = f"{describe(certificate)} is signed with {name.upper()}, which is not accepted"
        return TrustError(TrustFailure.INVALID_PATH, reason)
    return None


def _key_usage(
    extensions: x509.Extensions, certificate: x509.Certificate, usage: CertificateUsage
) -> TrustError | None:
    try:
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None  # RFC 5280: without the extension the key may serve any purpose
    if usage is CertificateUsage.SIGNATURE:
        allowed = key_usage.digital_signature or key_usage.content_commitment
        needed = "digitalSignature or nonRepudiation"
    else:
        allowed = key_usage.key_encipherment or key_usage.key_agreement
        needed = "keyEncipherment or keyAgreement"
    if allowed:
        return None
    reason = f"{describe(certificate)} may not be used for {usage.value}: its keyUsage lacks {needed}"
    return TrustError(TrustFailure.KEY_USAGE, reason)


def _party_binding(certificate: x509.Certificate, party_id: str | None) -> TrustError | None:
    # Peppol: the AP certificate's CN is the seat id the sender puts in eb:From/PartyId. Seat ids are
    # upper-case letters and digits, but senders differ in case, so the comparison ignores it.
    if party_id is None:
        reason = f"the CN of {describe(certificate)} must match the sender's PartyId, but no PartyId was given"
        return TrustError(TrustFailure.PARTY_MISMATCH, reason)
    names = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(names) != 1 or names[0].strip().casefold() != party_id.strip().casefold():
        shown = names[0] if len(names) == 1 else f"{len(names)} CNs"
        reason = f"the certificate CN {shown!r} does not match the PartyId {party_id[:100]!r}"
        return TrustError(TrustFailure.PARTY_MISMATCH, reason)
    return None


def _required_policies(
    extensions: x509.Extensions, certificate: x509.Certificate, required: Sequence[str]
) -> TrustError | None:
    if not required:
        return None
    try:
        asserted = {
            p.policy_identifier.dotted_string
            for p in extensions.get_extension_for_class(x509.CertificatePolicies).value
        }
    except x509.ExtensionNotFound:
        asserted = set()
    missing = [oid for oid in required if oid not in asserted]
    if not missing:
        return None
    reason = f"{describe(certificate)} does not assert the certificate policy {', '.join(missing)}"
    return TrustError(TrustFailure.POLICY, reason)


def _issuer_problem(
    issuer: x509.Certificate,
    below: Sequence[x509.Certificate],
    at: datetime,
    is_anchor: bool,
) -> TrustError | None:
    """Whether ``issuer`` may sit above ``below`` (the path so far, end entity first)."""
    role = "trust anchor" if is_anchor else "intermediate"
    problem = _validity(issuer, at, role) or _key_strength(issuer, role)
    if problem:
        return problem
    extensions, problem = _extensions(issuer, role)
    if problem or extensions is None:
        return problem
    try:
        constraints: x509.BasicConstraints | None = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    # An anchor is trusted by configuration (old v1 roots have no extensions); an intermediate must say CA.
    if (constraints is None and not is_anchor) or (constraints is not None and not constraints.ca):
        reason = f"{role} {describe(issuer)} is not a CA (basicConstraints) but issued {describe(below[-1])}"
        return TrustError(TrustFailure.INVALID_PATH, reason)
    try:
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
        if not key_usage.key_cert_sign:
            reason = f"{role} {describe(issuer)} may not sign certificates (keyUsage lacks keyCertSign)"
            return TrustError(TrustFailure.INVALID_PATH, reason)
    except x509.ExtensionNotFound:
        pass
    if constraints is not None and constraints.path_length is not None:
        # RFC 5280 6.1.4 (l)-(m): count the non-self-issued intermediates between this CA and the end entity.
        intermediates = sum(1 for c in below[1:] if c.subject != c.issuer)
        if intermediates > constraints.path_length:
            reason = (
                f"{role} {describe(issuer)} allows {constraints.path_length} intermediate(s) below it, "
                f"the path has {intermediates}"
            )
            return TrustError(TrustFailure.INVALID_PATH, reason)
    return None


# -------------------------------------------------------------------------------------- path building


class _PathSearch:
    """Depth-first search from the end entity to an anchor, remembering the deepest failure for the reason."""

    def __init__(self, pool: Sequence[x509.Certificate], anchors: set[bytes], at: datetime):
        self.pool = pool
        self.anchors = anchors
        self.at = at
        self.failure: TrustError | None = None
        self.failure_depth = -1

    def note(self, depth: int, error: TrustError) -> None:
        if depth > self.failure_depth:
            self.failure, self.failure_depth = error, depth

    def _candidates(self, current: x509.Certificate, used: set[bytes]) -> list[x509.Certificate]:
        try:
            aki = current.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        except (x509.ExtensionNotFound, ValueError):
            aki = None

        def ski(certificate: x509.Certificate) -> bytes | None:
            try:
                return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except (x509.ExtensionNotFound, ValueError):
                return None

        named = [c for c in self.pool if c.subject == current.issuer and _der(c) not in used]
        # Anchors first (shortest path), then issuers whose SKI matches the AKI (key rollover under one name).
        return sorted(named, key=lambda c: (_der(c) not in self.anchors, aki is not None and ski(c) != aki))

    def extend(self, path: list[x509.Certificate], used: set[bytes]) -> list[x509.Certificate] | None:
        current = path[-1]
        depth = len(path)
        if depth >= MAX_PATH_LENGTH:
            self.note(depth, TrustError(TrustFailure.INVALID_PATH, f"no anchor within {MAX_PATH_LENGTH} certificates"))
            return None
        weak = _signature_hash(current)
        if weak:
            self.note(depth, weak)
            return None
        candidates = self._candidates(current, used)
        if not candidates:
            reason = (
                f"no trusted anchor or known intermediate '{current.issuer.rfc4514_string()}' "
                f"issued {describe(current)}"
            )
            self.note(depth, TrustError(TrustFailure.UNTRUSTED_ISSUER, reason))
            return None
        for issuer in candidates:
            try:
                current.verify_directly_issued_by(issuer)
            except InvalidSignature:
                reason = (
                    f"{describe(current)} is not signed by the key of {describe(issuer)} "
                    "(a certificate with the issuer's name but another key)"
                )
                self.note(depth, TrustError(TrustFailure.UNTRUSTED_ISSUER, reason))
                continue
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                reason = f"cannot check the signature on {describe(current)} by {describe(issuer)}: {exc}"
                self.note(depth, TrustError(TrustFailure.INVALID_PATH, reason))
                continue
            is_anchor = _der(issuer) in self.anchors
            problem = _issuer_problem(issuer, path, self.at, is_anchor)
            if problem:
                self.note(depth + 1, problem)
                continue
            if is_anchor:
                return [*path, issuer]
            found = self.extend([*path, issuer], used | {_der(issuer)})
            if found:
                return found
        return None


# ----------------------------------------------------------------------------------------- validation


def validate_certificate(
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    trust: TrustSettings,
    *,
    at: datetime,
    usage: CertificateUsage,
    revocation: RevocationSource | None = None,
    party_id: str | None = None,
) -> TrustResult:
    """Decide whether to trust ``certificate`` for ``usage`` at the moment ``at`` (timezone-aware).

    ``chain`` holds the other certificates that came with it (PKIPath or further BSTs), in any order; the
    path is built from them, ``trust.intermediates`` and ``trust.anchors``. A certificate that is pinned or
    is itself an anchor (exact DER) is trusted without a path, but its validity period, key usage and key
    size still count. With ``trust.bind_cn_to_party_id`` its CN must equal ``party_id``; it must assert each of
    ``trust.required_policies`` (certificatePolicies, end entity only). Revocation:
    ``trust.revocation`` decides; the end entity is checked (intermediates too if the checker says so). A
    pinned certificate is checked only when its issuer is at hand (unpinning is how one revokes a pin).
    Certificates signed with SHA-1 or MD5 are refused (below the anchor; an anchor's self-signature is moot).
    Raises TrustError (EBMS:0101) with the precise reason.
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    leaf_role = "certificate"
    problem = _validity(certificate, at, leaf_role) or _key_strength(certificate, leaf_role)
    if problem:
        raise problem
    extensions, problem = _extensions(certificate, leaf_role)
    if problem or extensions is None:
        raise problem or TrustError(TrustFailure.INVALID_PATH, "unreadable extensions")
    problem = _key_usage(extensions, certificate, usage) or _required_policies(
        extensions, certificate, trust.required_policies
    )
    if problem:
        raise problem
    if trust.bind_cn_to_party_id:
        problem = _party_binding(certificate, party_id)
        if problem:
            raise problem

    leaf_der = _der(certificate)
    anchors = {_der(c) for c in trust.anchors}
    pinned = leaf_der in anchors or any(_der(c) == leaf_der for c in trust.pinned)
    pool = _unique([*trust.anchors, *chain, *trust.intermediates])
    if pinned:
        path: tuple[x509.Certificate, ...] = (certificate,)
    else:
        if not trust.anchors:
            raise TrustError(
                TrustFailure.UNTRUSTED_ISSUER,
                f"{describe(certificate)} is not pinned and no trust anchors are configured",
            )
        search = _PathSearch(pool, anchors, at)
        found = search.extend([certificate], {leaf_der})
        if found is None:
            raise search.failure or TrustError(TrustFailure.UNTRUSTED_ISSUER, f"no path for {describe(certificate)}")
        path = tuple(found)

    results, warnings = _check_revocation(certificate, path, pinned, pool, trust.revocation, revocation, at)
    return TrustResult(certificate, path, pinned, results, warnings)


def _unique(certificates: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    seen: dict[bytes, x509.Certificate] = {}
    for certificate in certificates:
        seen.setdefault(_der(certificate), certificate)
    return list(seen.values())


def _issuer_of(certificate: x509.Certificate, pool: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for candidate in pool:
        if candidate.subject != certificate.issuer or _der(candidate) == _der(certificate):
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        return candidate
    return None


def _check_revocation(
    certificate: x509.Certificate,
    path: tuple[x509.Certificate, ...],
    pinned: bool,
    pool: Sequence[x509.Certificate],
    mode: RevocationMode,
    checker: RevocationSource | None,
    at: datetime,
) -> tuple[tuple[RevocationResult, ...], tuple[str, ...]]:
    if mode is RevocationMode.OFF:
        return (), ()
    if checker is None:
        reason = f"revocation of {describe(certificate)} could not be checked: no revocation checker configured"
        return (), (_unknown(mode, reason, None),)
    pairs: list[tuple[x509.Certificate, x509.Certificate]] = []
    if pinned:
        issuer = _issuer_of(certificate, pool)
        if issuer is None:
            return (), ()
        pairs.append((certificate, issuer))
    else:
        last = len(path) - 1 if checker.check_intermediates else 1  # never the anchor itself
        pairs.extend((path[i], path[i + 1]) for i in range(last))
    results: list[RevocationResult] = []
    warnings: list[str] = []
    for subject, issuer in pairs:
        result = checker.check(subject, issuer, at=at)
        results.append(result)
        if result.status is RevocationStatus.REVOKED:
            raise TrustError(TrustFailure.REVOKED, result.detail, revocation=result)
        if result.status is RevocationStatus.UNKNOWN:
            reason = f"revocation status of {describe(subject)} unknown: {result.detail}"
            warnings.append(_unknown(mode, reason, result))
    return tuple(results), tuple(warnings)


def _unknown(mode: RevocationMode, reason: str, result: RevocationResult | None) -> str:
    """Refuse in hard-fail mode; in soft-fail mode log the reason and hand it back as a warning."""
    if mode is RevocationMode.HARD_FAIL:
        raise TrustError(TrustFailure.REVOCATION_UNKNOWN, f"{reason} (hard-fail)", revocation=result)
    log.warning("accepted under soft-fail revocation: %s", reason)
    return reason
