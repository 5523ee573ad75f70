"""Throw-away PKI for tests: a CA and access-point certificates for every key type the profiles use."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from accesspoint.security.issuing import certificate_builder, end_entity_key_usage, signing_hash
from accesspoint.security.keys import KeyPair, PrivateKey

KeyType = Literal["rsa", "ed25519", "x25519", "p256", "p384", "p521", "brainpool"]
NOT_BEFORE = datetime(2020, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2045, 1, 1, tzinfo=UTC)

_CURVES: dict[str, ec.EllipticCurve] = {
    "p256": ec.SECP256R1(),
    "p384": ec.SECP384R1(),
    "p521": ec.SECP521R1(),
    "brainpool": ec.BrainpoolP256R1(),
}


def new_key(kind: KeyType) -> PrivateKey:
    """A fresh private key of that kind."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "x25519":
        return x25519.X25519PrivateKey.generate()
    return ec.generate_private_key(_CURVES[kind])


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(common_name: str = "Test CA", kind: KeyType = "rsa") -> KeyPair:
    """A self-signed CA."""
    key = new_key(kind)
    name = _name(common_name)
    certificate = (
        certificate_builder(name, name, key.public_key(), not_before=NOT_BEFORE, not_after=NOT_AFTER, ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, signing_hash(key))  # type: ignore[arg-type]
    )
    return KeyPair(key, certificate)


def issue(
    ca: KeyPair,
    common_name: str,
    kind: KeyType = "rsa",
    *,
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_AFTER,
    ski: bool = True,
    policies: tuple[str, ...] = (),
) -> KeyPair:
    """An end-entity certificate signed by ``ca`` (digitalSignature, key encipherment or agreement), asserting
    the certificate ``policies`` (dotted OIDs) when given."""
    key = new_key(kind)
    agreement = kind in ("x25519",) or kind in _CURVES
    builder = certificate_builder(
        _name(common_name), ca.certificate.subject, key.public_key(), not_before=not_before, not_after=not_after
    ).add_extension(end_entity_key_usage(sign=kind != "x25519", encipher=kind == "rsa", agree=agreement), critical=True)
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
    if policies:
        builder = builder.add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(p), None) for p in policies]),
            critical=False,
        )
    certificate = builder.sign(ca.private_key, signing_hash(ca.private_key))  # type: ignore[arg-type]
    return KeyPair(key, certificate, (ca.certificate,))


def later(days: int) -> datetime:
    """A moment ``days`` after the fixed validity start (for ``at=`` arguments)."""
    return NOT_BEFORE + timedelta(days=days)


def tls_certificate(ca: KeyPair, name: str, folder: Path) -> dict[str, str]:
    """A TLS server and client certificate for 127.0.0.1 issued by ca, written as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        certificate_builder(
            subject, ca.certificate.subject, key.public_key(), not_before=NOT_BEFORE, not_after=NOT_AFTER
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName(name)]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return {"certificate": str(folder / f"{name}.pem"), "key": str(folder / f"{name}.key")}
