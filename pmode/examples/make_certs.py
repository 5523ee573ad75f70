"""Regenerate the example's development PKI: a CA, and access point certificates for 1.15 (RSA) and 2.0.

Development only: the keys are published with the project. Run ``python -m pmode.examples.make_certs [FOLDER]``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa, x25519
from cryptography.x509.oid import NameOID

from accesspoint.security.keys import PrivateKey

NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2046, 1, 1, tzinfo=UTC)
# file stem -> (CN, key type); the CN equals the party's PartyId so Peppol-style CN binding works too.
CERTIFICATES = {
    "ap-sweden-sign": ("AP-SE-0001", "rsa"),
    "ap-sweden-sign-2.0": ("AP-SE-0001", "ed25519"),
    "ap-sweden-enc-2.0": ("AP-SE-0001", "x25519"),
    "partner-115": ("AP-BE-0115", "rsa"),
    "partner-20-sign": ("AP-NO-0200", "ed25519"),
    "partner-20-enc": ("AP-NO-0200", "x25519"),
}


def _name(common_name: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Federation (development only)")]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else x25519.X25519PrivateKey.generate()


def _usage(kind: str) -> x509.KeyUsage:
    agreement = kind == "x25519"
    return x509.KeyUsage(not agreement, False, kind == "rsa", False, agreement, False, False, False, False)


def _write(folder: Path, stem: str, key: PrivateKey, certificate: x509.Certificate) -> None:
    pem = serialization.Encoding.PEM
    key_bytes = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (folder / f"{stem}.key.pem").write_bytes(key_bytes)
    (folder / f"{stem}.pem").write_bytes(certificate.public_bytes(pem))


def generate(folder: Path) -> None:
    """Write ca.pem / ca.key.pem and every access point certificate and key into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = _name("Example Development CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder, "ca", ca_key, ca)
    for stem, (common_name, kind) in CERTIFICATES.items():
        key = _key(kind)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(kind), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(folder, stem, key, certificate)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "certs")
