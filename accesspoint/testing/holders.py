"""Throw-away holder keys and e-ID certificates for tests and benchmarks (never imported by the product)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from accesspoint.security.issuing import certificate_builder, end_entity_key_usage, signing_hash
from accesspoint.security.keys import KeyPair
from accesspoint.testing.pki import NOT_AFTER, NOT_BEFORE, KeyType, new_key


def holder_key(
    ca: KeyPair,
    holder: str,
    kind: KeyType = "rsa",
    *,
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_AFTER,
    usage: x509.KeyUsage | None = None,
) -> KeyPair:
    """A holder's encryption key with its certificate: RSA for key encipherment, X25519 for key agreement."""
    key = new_key(kind)
    if usage is None:
        usage = end_entity_key_usage(sign=False, encipher=kind == "rsa", agree=kind != "rsa")
    subject = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, holder)])
    certificate = (
        certificate_builder(
            subject, ca.certificate.subject, key.public_key(), not_before=not_before, not_after=not_after
        )
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca.private_key, signing_hash(ca.private_key))  # type: ignore[arg-type]
    )
    return KeyPair(key, certificate, (ca.certificate,))


def signing_holder_key(ca: KeyPair, holder: str) -> KeyPair:
    """An RSA certificate whose key usage is signing only: a holder key FaR must refuse."""
    return holder_key(ca, holder, "rsa", usage=end_entity_key_usage(sign=True, encipher=False, agree=False))


def eid_certificate(ca: KeyPair, personal_number: str, *, kind: KeyType = "p256") -> KeyPair:
    """A test e-ID: the person's number in the subject's serialNumber, a signing key for authentication."""
    key = new_key(kind)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, personal_number),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Test Person {personal_number}"),
        ]
    )
    certificate = (
        certificate_builder(
            subject, ca.certificate.subject, key.public_key(), not_before=NOT_BEFORE, not_after=NOT_AFTER
        )
        .add_extension(end_entity_key_usage(sign=True, encipher=False, agree=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(key, certificate, (ca.certificate,))


def write_key_pair(pair: KeyPair, folder: Path, stem: str) -> tuple[Path, Path]:
    """The key (PKCS#8 PEM, unencrypted) and certificate (PEM) as files; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / f"{stem}.key.pem", folder / f"{stem}.pem"
    key_path.write_bytes(
        pair.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(pair.certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
