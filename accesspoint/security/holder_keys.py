"""What a mailbox holder's encryption certificate must be before anyone encrypts to it or registers it.

One check for FaR (registration), the sender's access point (before encrypting) and the key archive: an RSA key
of 2048 bits or more for RSA-OAEP (key usage keyEncipherment), or an X25519 key for key agreement (keyAgreement);
a key usage extension that allows that and nothing to sign with; valid at the time given; an extended key usage, if
present, that allows e-mail protection (CMS). Each refusal names the rule, so the operator that registers a
certificate learns what to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from accesspoint.security.cms import key_id


class HolderKeyType(StrEnum):
    """How content is encrypted to a holder key."""

    RSA_OAEP = "rsa-oaep"
    X25519 = "x25519"


class HolderKeyRefused(ValueError):
    """A certificate that cannot be a holder's encryption key; ``rule`` is a short stable name, the text says why."""

    def __init__(self, rule: str, detail: str) -> None:
        self.rule = rule
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class HolderKeyInfo:
    """What the checks found: the key's id (certificate SHA-256), type and validity."""

    key_id: str
    key_type: HolderKeyType
    not_before: datetime
    not_after: datetime


def check_holder_certificate(certificate: x509.Certificate, *, now: datetime) -> HolderKeyInfo:
    """The certificate's key facts when it may carry content encryption to a holder at ``now``; else refused."""
    public = certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise HolderKeyRefused("key-size", f"an RSA key of {public.key_size} bits; 2048 bits at least")
        key_type, usage = HolderKeyType.RSA_OAEP, "key_encipherment"
    elif isinstance(public, x25519.X25519PublicKey):
        key_type, usage = HolderKeyType.X25519, "key_agreement"
    else:
        kind = type(public).__name__.lstrip("_")
        raise HolderKeyRefused("key-type", f"a {kind}: a holder key is RSA (RSA-OAEP) or X25519")
    try:
        key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise HolderKeyRefused("key-usage", f"no key usage extension; it must allow {usage} only") from None
    if not getattr(key_usage, usage):
        raise HolderKeyRefused("key-usage", f"the key usage does not allow {usage}")
    if key_usage.digital_signature or key_usage.content_commitment or key_usage.key_cert_sign:
        raise HolderKeyRefused("key-usage", "the key usage allows signing; an encryption key must not sign")
    try:
        purposes = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        purposes = None
    allowed = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if purposes is not None and not allowed & set(purposes):
        raise HolderKeyRefused("extended-key-usage", "the extended key usage does not allow e-mail protection")
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if now < not_before:
        raise HolderKeyRefused("not-yet-valid", f"not valid before {not_before.isoformat()}")
    if now > not_after:
        raise HolderKeyRefused("expired", f"expired at {not_after.isoformat()}")
    return HolderKeyInfo(key_id(certificate), key_type, not_before, not_after)
