"""What every certificate this project issues has in common (development CAs, the development time-stamp
authority, test fixtures): the builder up to the extensions that make each kind what it is."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from accesspoint.security.keys import PrivateKey

# keyCertSign and cRLSign only.
CA_KEY_USAGE = x509.KeyUsage(False, False, False, False, False, True, True, False, False)


def end_entity_key_usage(*, sign: bool, encipher: bool, agree: bool) -> x509.KeyUsage:
    """An end entity's key usage: digitalSignature, keyEncipherment and keyAgreement as asked, nothing else."""
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=agree,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    *,
    not_before: datetime,
    not_after: datetime,
    ca: bool = False,
) -> x509.CertificateBuilder:
    """Subject, issuer, public key, a random serial number, the validity and a critical basicConstraints; a CA's
    (``ca``) also its critical keyCertSign + cRLSign key usage. The caller adds the rest and signs."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.add_extension(CA_KEY_USAGE, critical=True) if ca else builder


def signing_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    """The digest a certificate is signed with by ``key``: SHA-256, or none for Ed25519 (which hashes itself)."""
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
