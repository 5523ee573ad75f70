"""Every certificate the access point depends on, with its not-after date and how near it is to expiry.

Ours (the signing and decryption keys, the TLS certificate), the partners' (each P-Mode party's signing and
encryption certificates) and the trust anchors of the P-Modes' legs. A certificate within ``warn_before`` of its
not-after (60 days by default, as Domibus warns) is ``expiring``; past it, ``expired``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from accesspoint.msh.config import ServerConfig
from pmode import PModeSet


@dataclass(frozen=True, slots=True)
class Held:
    """A certificate and where it is used."""

    use: str  # "our signing key", "party partner-115: signing", "trust anchor of se-to-be" …
    subject: str
    issuer: str
    serial: str
    sha256: str
    not_before: datetime
    not_after: datetime

    def status(self, now: datetime, warn_before: timedelta) -> str:
        """``expired``, ``expiring`` (within warn_before of its not-after) or ``ok``."""
        if now > self.not_after:
            return "expired"
        return "expiring" if now + warn_before >= self.not_after else "ok"

    def days_left(self, now: datetime) -> int:
        """Whole days until its not-after (negative once past)."""
        return (self.not_after - now).days


def held(use: str, certificate: x509.Certificate) -> Held:
    """A certificate as the inventory lists it."""
    return Held(
        use=use,
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        serial=format(certificate.serial_number, "x"),
        sha256=hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def inventory(settings: ServerConfig, pmodes: PModeSet) -> list[Held]:
    """Every certificate of the access point and its agreements, each once per use, soonest expiry first."""
    found: dict[tuple[str, str], Held] = {}
    for use, certificate in _uses(settings, pmodes):
        item = held(use, certificate)
        found.setdefault((use, item.sha256), item)
    anchors: dict[x509.Certificate, list[str]] = {}
    for pmode in pmodes:
        for leg in pmode.legs:
            for anchor in leg.security.trust.anchors:
                users = anchors.setdefault(anchor, [])
                if pmode.id not in users:
                    users.append(pmode.id)
    for anchor, users in anchors.items():
        item = held(f"trust anchor ({', '.join(users)})", anchor)
        found.setdefault(("anchor", item.sha256), item)
    return sorted(found.values(), key=lambda item: (item.not_after, item.use))


def _uses(settings: ServerConfig, pmodes: PModeSet) -> Iterator[tuple[str, x509.Certificate]]:
    for pair in settings.keys.signing:
        yield "our signing key", pair.certificate
    for pair in settings.keys.decryption:
        yield "our decryption key", pair.certificate
    if settings.tls is not None:
        for certificate in _pem(settings.tls.certificate)[:1]:
            yield "our TLS certificate", certificate
    for pmode in pmodes:
        for side in (pmode.initiator, pmode.responder):
            party = side.party
            if party.signing_certificate is not None:
                yield f"party {party.name}: signing", party.signing_certificate
            if party.encryption_certificate is not None:
                yield f"party {party.name}: encryption", party.encryption_certificate


def _pem(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return []
