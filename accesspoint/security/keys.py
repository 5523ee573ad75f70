"""Keys behind a small provider interface: files today, an HSM or PKCS#11 later; rollover with two keys."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.serialization import pkcs12

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | x25519.X25519PublicKey


class KeyLoadError(ValueError):
    """A key or certificate file could not be read; the message names the file."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A private key with its certificate and the chain up to (not necessarily including) the anchor."""

    private_key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate (hex)."""
        return certificate_sha256(self.certificate)


def certificate_sha256(certificate: x509.Certificate) -> str:
    """SHA-256 fingerprint of a certificate's DER, hex."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


class KeyProvider(Protocol):
    """Where the access point's own keys come from."""

    def signing_key(self) -> KeyPair:
        """The key pair to sign with now."""
        ...

    def decryption_keys(self) -> Sequence[KeyPair]:
        """Every key pair that may decrypt (the current one first; old ones during rollover)."""
        ...


@dataclass(frozen=True, slots=True)
class StaticKeyProvider:
    """Keys held in memory (loaded from files). 2.0 uses separate signing and decryption certificates."""

    signing: KeyPair
    decryption: tuple[KeyPair, ...] = ()

    def signing_key(self) -> KeyPair:
        """The signing key pair."""
        return self.signing

    def decryption_keys(self) -> Sequence[KeyPair]:
        """Decryption key pairs; the signing pair too when it is an RSA key (1.15 uses one key for both)."""
        if self.decryption:
            return self.decryption
        return (self.signing,)


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"{path}: cannot read ({exc.strerror})") from None


def load_der_certificate(data: bytes) -> x509.Certificate:
    """An untrusted DER certificate, its names and public key parsed now: ValueError for anything unusable.

    cryptography parses lazily: up to 48 a name attribute with an unknown ASN.1 string tag raised a bare KeyError
    on ``.subject`` (pyca/cryptography#15076), and a key of an unknown type raises UnsupportedAlgorithm from
    ``public_key()``; a version other than 1 or 3 raises InvalidVersion on load, and a BIT STRING name attribute
    other than x500UniqueIdentifier a TypeError. Here each is a malformed certificate like any other.
    """
    try:
        certificate = x509.load_der_x509_certificate(data)
    except x509.InvalidVersion as exc:  # not a ValueError either
        raise ValueError(f"unusable certificate ({exc})") from None
    try:
        certificate.subject  # noqa: B018 - parsed for the exception, see above
        certificate.issuer  # noqa: B018
        certificate.public_key()
    except (KeyError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"unusable certificate ({type(exc).__name__}: {exc})") from None
    return certificate


def load_certificates(path: str | Path, password: bytes | None = None) -> list[x509.Certificate]:
    """Every certificate in a PEM (one or more), DER or PKCS#12 file."""
    data = _read(path)
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificates(data)
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    try:
        _key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError as exc:
        raise KeyLoadError(f"{path}: not a PEM, DER or PKCS#12 certificate file ({exc})") from None
    return ([cert] if cert is not None else []) + list(extra)


def load_private_key(path: str | Path, password: bytes | None = None) -> PrivateKey:
    """A private key from a PEM or DER (PKCS#8 or traditional) file."""
    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password)
        else:
            key = serialization.load_der_private_key(data, password)
    except (ValueError, TypeError) as exc:
        raise KeyLoadError(f"{path}: cannot load the private key ({exc})") from None
    if not isinstance(key, PrivateKey):
        raise KeyLoadError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def load_key_pair(path: str | Path, password: bytes | None = None, *, certificate: str | Path | None = None) -> KeyPair:
    """A key pair from a PKCS#12 file, or from a PEM key plus a PEM certificate (chain) file."""
    data = _read(path)
    if certificate is None and b"-----BEGIN" not in data:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(data, password)
        except ValueError as exc:
            raise KeyLoadError(f"{path}: cannot open the PKCS#12 file ({exc})") from None
        if key is None or cert is None:
            raise KeyLoadError(f"{path}: the PKCS#12 file holds no private key with a certificate")
        if not isinstance(key, PrivateKey):
            raise KeyLoadError(f"{path}: unsupported key type {type(key).__name__}")
        return KeyPair(key, cert, tuple(extra))
    key = load_private_key(path, password)
    certs = load_certificates(certificate if certificate is not None else path)
    if not certs:
        raise KeyLoadError(f"{certificate or path}: no certificate found")
    public = key.public_key()
    leaf = next((c for c in certs if _same_public_key(c.public_key(), public)), None)
    if leaf is None:
        raise KeyLoadError(f"{certificate or path}: no certificate matches the private key in {path}")
    return KeyPair(key, leaf, tuple(c for c in certs if c is not leaf))


def _same_public_key(a: object, b: object) -> bool:
    encode = serialization.Encoding.DER
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return bool(a.public_bytes(encode, fmt) == b.public_bytes(encode, fmt))  # type: ignore[attr-defined]
    except AttributeError:
        return False
