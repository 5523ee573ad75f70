"""A holder's e-ID signature over an agreement text (Mina meddelanden ``Common/SignatureData``), sans-I/O.

The Recipient contract's ``register``, ``deregister``, ``changeServiceSupplier`` and ``storeAccountPreferences``
carry the text the holder agreed to (``AgreementText``) and one ``SignatureData`` per signer: ``Signature``
(base64), ``Certificate`` (the signer's e-ID certificate, base64 DER or PEM), ``Nonce`` and
``EncodingOfSignedText`` (default UTF-8). What is signed, here, is ``Nonce + "\\n" + AgreementText`` in that
encoding, with the certificate's key: RSA PKCS#1 v1.5 or ECDSA with SHA-256, or Ed25519.

The nonce is ``<UTC time, ISO 8601>/<at least 16 random characters>``: the time bounds how old an assertion may
be (``max_age``), the random part makes each one single-use (the caller keeps the nonces it has seen). Who
signed is the certificate's subject ``serialNumber`` (2.5.4.5), as Swedish e-ID certificates carry the
personnummer (an eIDAS node's certificate the eIDAS identifier ``XX/YY/…``), and its CN is the name.

``verify_assertion`` returns only what it verified (``VerifiedAssertion``) or raises ``AssertionRefused`` whose
``code`` is one of :class:`RefusalCode` with a reason a holder can read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.trust import CertificateUsage, TrustError, TrustFailure, validate_certificate

DEFAULT_MAX_AGE = timedelta(minutes=10)
# An agreement text is a paragraph or a page; a megabyte is far past any real one and bounds the work.
MAX_TEXT = 1024 * 1024
_NONCE = re.compile(r"(?P<at>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2}))/(?P<random>[A-Za-z0-9_-]{16,128})")
_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "iso-8859-1": "iso-8859-1", "latin-1": "iso-8859-1"}
# Clocks differ: an assertion dated up to this far in the future is taken as made now.
CLOCK_SKEW = timedelta(minutes=2)


class RefusalCode(StrEnum):
    """Why an assertion is refused."""

    MALFORMED = "malformed"  # unreadable base64, certificate, nonce or encoding
    EXPIRED = "expired"  # the certificate is outside its validity, or the nonce is older than max_age
    UNTRUSTED = "untrusted"  # the certificate does not chain to an e-ID anchor
    SIGNATURE = "signature"  # the signature does not verify over the nonce and the text
    IDENTITY = "identity"  # the certificate names no identity, or another than the one claimed


class AssertionRefused(ValueError):
    """An identity assertion that does not hold; ``code`` says which check failed, ``reason`` in words."""

    def __init__(self, code: RefusalCode, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


@dataclass(frozen=True, slots=True)
class SignatureData:
    """``Common/SignatureData`` as the contract carries it."""

    signature: str  # base64
    certificate: str  # base64 DER, or PEM
    nonce: str | None = None
    encoding: str = "UTF-8"

    def to_json(self) -> dict[str, str | None]:
        """The REST form (same names, lower case)."""
        return {"signature": self.signature, "certificate": self.certificate, "nonce": self.nonce,
                "encoding": self.encoding}  # fmt: skip

    @classmethod
    def from_json(cls, item: object) -> SignatureData:
        """Read the REST form; AssertionRefused (malformed) when it is not one."""
        if not isinstance(item, dict):
            raise AssertionRefused(RefusalCode.MALFORMED, "a signature is an object {signature, certificate, nonce}")
        values = {key: item.get(key) for key in ("signature", "certificate", "nonce", "encoding")}
        if not isinstance(values["signature"], str) or not isinstance(values["certificate"], str):
            raise AssertionRefused(RefusalCode.MALFORMED, "a signature needs signature and certificate strings")
        for key in ("nonce", "encoding"):
            if values[key] is not None and not isinstance(values[key], str):
                raise AssertionRefused(RefusalCode.MALFORMED, f"{key} must be a string")
        return cls(values["signature"], values["certificate"], values["nonce"], values["encoding"] or "UTF-8")


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    """What a verified signature proves: who (identity and name), with which certificate, when, over what."""

    subject: str  # personnummer, samordningsnummer or eIDAS identifier (the certificate's serialNumber)
    name: str
    certificate_sha256: str
    nonce: str
    signed_at: datetime
    text_sha256: str

    def to_json(self) -> dict[str, str]:
        """As FaR and the operator record it (never the text itself, only its digest)."""
        return {
            "id": self.subject,
            "name": self.name,
            "certificate_sha256": self.certificate_sha256,
            "nonce": self.nonce,
            "signed_at": self.signed_at.isoformat(),
            "text_sha256": self.text_sha256,
        }


def new_nonce(at: datetime) -> str:
    """A fresh nonce dated ``at``."""
    return f"{at.astimezone(UTC).isoformat(timespec='seconds')}/{secrets.token_urlsafe(18)}"


def signed_bytes(text: str, nonce: str, encoding: str = "UTF-8") -> bytes:
    """The bytes a signature covers."""
    codec = _ENCODINGS.get(encoding.strip().lower())
    if codec is None:
        raise AssertionRefused(RefusalCode.MALFORMED, f"EncodingOfSignedText {encoding[:32]!r} is not supported")
    try:
        return f"{nonce}\n{text}".encode(codec)
    except UnicodeEncodeError:
        raise AssertionRefused(RefusalCode.MALFORMED, f"the text cannot be written in {encoding}") from None


def sign_assertion(text: str, keys: KeyPair, *, at: datetime, nonce: str | None = None) -> SignatureData:
    """What the holder's e-ID client makes: a signature over a fresh nonce and ``text`` (tests and demos)."""
    nonce = nonce or new_nonce(at)
    data = signed_bytes(text, nonce)
    key = keys.private_key
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(data)
    else:
        raise ValueError("an e-ID key is RSA, EC or Ed25519")
    der = keys.certificate.public_bytes(Encoding.DER)
    return SignatureData(base64.b64encode(signature).decode(), base64.b64encode(der).decode(), nonce)


def _certificate(text: str) -> x509.Certificate:
    try:
        if "-----BEGIN" in text:
            return x509.load_pem_x509_certificate(text.encode("ascii"))
        return x509.load_der_x509_certificate(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise AssertionRefused(RefusalCode.MALFORMED, "the certificate cannot be read (base64 DER or PEM)") from None


def certificate_identity(certificate: x509.Certificate) -> tuple[str, str]:
    """(identity, name) from the subject's serialNumber and CN; AssertionRefused (identity) without them."""
    serials = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(serials) != 1 or not str(serials[0].value).strip():
        raise AssertionRefused(RefusalCode.IDENTITY, "the certificate names no identity (subject serialNumber)")
    name = str(names[0].value) if names else str(serials[0].value)
    return str(serials[0].value).strip(), name


def _verify_signature(certificate: x509.Certificate, signature: bytes, data: bytes) -> None:
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            raise AssertionRefused(RefusalCode.MALFORMED, "the certificate's key is not RSA, EC or Ed25519")
    except InvalidSignature:
        raise AssertionRefused(RefusalCode.SIGNATURE, "the signature does not verify over the text") from None


def nonce_time(nonce: str) -> datetime:
    """The moment a nonce is dated; AssertionRefused (malformed) when it is no nonce."""
    match = _NONCE.fullmatch(nonce.strip())
    if match is None:
        raise AssertionRefused(RefusalCode.MALFORMED, "the nonce is not <ISO 8601 UTC time>/<16+ random characters>")
    try:
        moment = datetime.fromisoformat(match.group("at").replace("Z", "+00:00"))
    except ValueError:
        raise AssertionRefused(RefusalCode.MALFORMED, "the nonce's time is not a date-time") from None
    return moment.astimezone(UTC)


def verify_assertion(
    text: str,
    data: SignatureData,
    anchors: tuple[x509.Certificate, ...],
    *,
    at: datetime,
    max_age: timedelta = DEFAULT_MAX_AGE,
    subject: str | None = None,
) -> VerifiedAssertion:
    """Verify one signature over ``text``: nonce fresh, certificate valid at ``at`` under ``anchors``, signature
    correct, and (when given) the signer is ``subject``. Raises AssertionRefused saying which check failed."""
    if len(text) > MAX_TEXT:
        raise AssertionRefused(RefusalCode.MALFORMED, f"the agreement text is longer than {MAX_TEXT} characters")
    if not data.nonce:
        raise AssertionRefused(RefusalCode.MALFORMED, "the signature has no nonce")
    signed_at = nonce_time(data.nonce)
    if signed_at - at > CLOCK_SKEW:
        raise AssertionRefused(RefusalCode.MALFORMED, f"the assertion is dated in the future ({signed_at.isoformat()})")
    if at - signed_at > max_age:
        raise AssertionRefused(
            RefusalCode.EXPIRED, f"the assertion was made at {signed_at.isoformat()}, more than {max_age} ago"
        )
    try:
        signature = base64.b64decode("".join(data.signature.split()), validate=True)
    except (binascii.Error, ValueError):
        raise AssertionRefused(RefusalCode.MALFORMED, "the signature is not base64") from None
    certificate = _certificate(data.certificate)
    if not anchors:
        raise AssertionRefused(RefusalCode.UNTRUSTED, "no e-ID issuer is trusted here")
    try:
        validate_certificate(
            certificate,
            (),
            TrustSettings(anchors=anchors, revocation=RevocationMode.OFF),
            at=at,
            usage=CertificateUsage.SIGNATURE,
        )
    except TrustError as exc:
        code = RefusalCode.EXPIRED if exc.failure is TrustFailure.EXPIRED else RefusalCode.UNTRUSTED
        raise AssertionRefused(code, f"the e-ID certificate is not accepted: {exc.reason}") from None
    _verify_signature(certificate, signature, signed_bytes(text, data.nonce, data.encoding))
    identity, name = certificate_identity(certificate)
    if subject is not None and identity != subject:
        raise AssertionRefused(RefusalCode.IDENTITY, f"signed by {identity}, not by {subject}")
    return VerifiedAssertion(
        subject=identity,
        name=name,
        certificate_sha256=hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest(),
        nonce=data.nonce,
        signed_at=signed_at,
        text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )
