"""Every certificate the access point depends on, with its not-after date and how near it is to expiry.

Ours (the signing and decryption keys, the TLS certificate), the partners' (each P-Mode party's signing and
encryption certificates) and the trust anchors of the P-Modes' legs. A certificate within ``warn_before`` of its
not-after (60 days by default, as Domibus warns) is ``expiring``; past it, ``expired``.
"""

from __future__ import annotations

from collections.abc import Iterator

from cryptography import x509

from accesspoint.msh.config import ServerConfig
from accesspoint.servicekit.status import Held, held, tls_certificate
from pmode import PModeSet


def inventory(settings: ServerConfig, pmodes: PModeSet) -> list[Held]:
    """Every certificate of the access point and its agreements, each once per use, soonest expiry first."""
    found: dict[tuple[str, str], Held] = {}
    for item in tls_certificate(None if settings.tls is None else settings.tls.certificate):
        found[(item.use, item.sha256)] = item
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
    for pmode in pmodes:
        for side in (pmode.initiator, pmode.responder):
            party = side.party
            if party.signing_certificate is not None:
                yield f"party {party.name}: signing", party.signing_certificate
            if party.encryption_certificate is not None:
                yield f"party {party.name}: encryption", party.encryption_certificate
