"""e-ID proofs, sans-I/O: the holder's client signs a fresh challenge with its e-ID; the archive checks it.

The signed text binds the purpose (``release``, ``deposit``, ``delete``), the holder, the archive's single-use
challenge and, for a release, the SHA-256 of the one-time key the client generated: a proof cannot be replayed,
used for another holder or purpose, or redirected to another key. The e-ID certificate must chain to a configured
e-ID CA, be valid now, allow signing, and carry the holder's personal number as the subject's serialNumber (how
Swedish e-ID certificates name the person).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from accesspoint.core.errors import EbmsError
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.trust import CertificateUsage, validate_certificate

PURPOSES = frozenset({"release", "deposit", "delete"})


class EidRefused(Exception):
    """The proof does not authenticate the holder; the message says why (for the audit log, not the caller)."""


@dataclass(frozen=True, slots=True)
class EidProof:
    """A proof as sent: the e-ID certificate and its chain, and the signature over ``proof_text``."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        """The JSON form a client sends."""
        pem = serialization.Encoding.PEM
        return {
            "certificate": self.certificate.public_bytes(pem).decode(),
            "chain": [c.public_bytes(pem).decode() for c in self.chain],
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, value: object) -> EidProof:
        """Read a proof; ValueError for anything malformed."""
        if not isinstance(value, dict):
            raise ValueError("eid: expected {certificate, chain, signature}")
        try:
            certificate = x509.load_pem_x509_certificate(str(value["certificate"]).encode())
            chain = tuple(x509.load_pem_x509_certificate(str(c).encode()) for c in value.get("chain", []))
            signature = base64.b64decode(str(value["signature"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"eid: {exc}") from None
        return cls(certificate, chain, signature)


def proof_text(purpose: str, holder: str, challenge: str, binding: str = "") -> bytes:
    """What the e-ID signs."""
    return f"accesspoint-keyarchive:{purpose}\n{holder}\n{challenge}\n{binding}".encode()


def sign_proof(eid: KeyPair, purpose: str, holder: str, challenge: str, binding: str = "") -> EidProof:
    """The client's side: sign the proof text with the e-ID key."""
    data = proof_text(purpose, holder, challenge, binding)
    key = eid.private_key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(data)
    else:
        raise TypeError(f"an e-ID key cannot be a {type(key).__name__}")
    return EidProof(eid.certificate, eid.chain, signature)


def person(certificate: x509.Certificate) -> str:
    """The personal number in the certificate's subject serialNumber ('' when there is none)."""
    found = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(found[0].value) if found else ""


def verify_proof(
    proof: EidProof,
    *,
    purpose: str,
    holder: str,
    challenge: str,
    binding: str = "",
    anchors: Sequence[x509.Certificate],
    now: datetime,
) -> str:
    """The authenticated holder's number, or EidRefused naming the failed check."""
    if purpose not in PURPOSES:
        raise EidRefused(f"unknown purpose {purpose!r}")
    trust = TrustSettings(anchors=tuple(anchors), revocation=RevocationMode.OFF)
    try:
        validate_certificate(proof.certificate, proof.chain, trust, at=now, usage=CertificateUsage.SIGNATURE)
    except EbmsError as exc:
        raise EidRefused(f"the e-ID certificate is not trusted: {getattr(exc, 'reason', exc)}") from None
    if person(proof.certificate) != holder:
        raise EidRefused(f"the e-ID is {person(proof.certificate) or 'nobody'}'s, not {holder}'s")
    data = proof_text(purpose, holder, challenge, binding)
    public = proof.certificate.public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(proof.signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(proof.signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(proof.signature, data)
        else:
            raise EidRefused("the e-ID key type cannot sign")
    except InvalidSignature:
        raise EidRefused("the e-ID signature does not verify (another challenge, purpose or key?)") from None
    return holder
