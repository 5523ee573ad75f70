"""Certificate hierarchies for the trust and revocation tests, made with ``cryptography`` on the spot.

Unlike ``accesspoint.testing.pki`` (one CA, leaves for signing tests) this builds root -> intermediate -> leaf
chains with the extensions trust decisions look at: basicConstraints with path lengths, keyUsage, EKU, AIA (OCSP)
and CRL distribution points, and RSA-PSS as well as PKCS#1 v1.5 signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from accesspoint.security.keys import KeyPair, PrivateKey
from accesspoint.testing.pki import NOT_AFTER, NOT_BEFORE, KeyType, new_key

CA_USAGE = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
SIGN_AND_ENCRYPT = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
AGREEMENT_ONLY = x509.KeyUsage(False, False, False, False, True, False, False, False, False)
ENCIPHER_ONLY = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
SIGN_ONLY = x509.KeyUsage(True, False, False, False, False, False, False, False, False)


def name(common_name: str) -> x509.Name:
    """A subject name in the test federation."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Trust Test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _sign(builder: x509.CertificateBuilder, key: PrivateKey, pss: bool) -> x509.Certificate:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return builder.sign(key, None)
    if pss and isinstance(key, rsa.RSAPrivateKey):
        scheme = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
        return builder.sign(key, hashes.SHA256(), rsa_padding=scheme)
    return builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]


def certificate(
    common_name: str,
    kind: KeyType = "p256",
    *,
    issuer: KeyPair | None = None,
    ca: bool | None = False,
    path_length: int | None = None,
    key_usage: x509.KeyUsage | None = SIGN_AND_ENCRYPT,
    eku: Sequence[x509.ObjectIdentifier] = (),
    ocsp_url: str | None = None,
    crl_url: str | None = None,
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_AFTER,
    pss: bool = False,
    key: PrivateKey | None = None,
    serial: int | None = None,
    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> KeyPair:
    """One certificate: self-signed when ``issuer`` is None; ``ca=None`` leaves basicConstraints out."""
    key = key if key is not None else new_key(kind)
    subject = name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)  # type: ignore[arg-type]
    )
    signer = issuer.private_key if issuer else key
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),  # type: ignore[arg-type]
        critical=False,
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if ocsp_url:
        access = x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    if crl_url:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    chain = (issuer.certificate, *issuer.chain) if issuer else ()
    return KeyPair(key, _sign(builder, signer, pss), chain)


def root(common_name: str = "Trust Test Root", kind: KeyType = "p256", **options: object) -> KeyPair:
    """A self-signed root CA."""
    options.setdefault("key_usage", CA_USAGE)
    options.setdefault("ca", True)
    return certificate(common_name, kind, **options)  # type: ignore[arg-type]


def intermediate(
    issuer: KeyPair, common_name: str = "Trust Test Issuing CA", kind: KeyType = "p256", **options: object
) -> KeyPair:
    """A CA certificate below ``issuer``."""
    options.setdefault("key_usage", CA_USAGE)
    options.setdefault("ca", True)
    return certificate(common_name, kind, issuer=issuer, **options)  # type: ignore[arg-type]


def ocsp_responder(issuer: KeyPair, common_name: str = "Trust Test OCSP") -> KeyPair:
    """A delegated OCSP responder certificate (id-kp-OCSPSigning) issued by ``issuer``."""
    return certificate(common_name, "p256", issuer=issuer, key_usage=SIGN_ONLY, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])


def crl(
    issuer: KeyPair,
    revoked: Sequence[tuple[int, datetime, x509.ReasonFlags | None]] = (),
    *,
    last_update: datetime,
    next_update: datetime | None = None,
    signer: PrivateKey | None = None,
) -> x509.CertificateRevocationList:
    """A CRL of ``issuer`` listing ``(serial, revocation date, reason)`` entries."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(last_update)
        .next_update(next_update or last_update + timedelta(days=1))
    )
    for serial, when, reason in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    key = signer or issuer.private_key
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)  # type: ignore[arg-type]
