"""eDelivery AS4 2.0: Ed25519 (or ECDSA) signatures, X25519 (or ECDH-ES) key agreement, separate encryption key."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, x25519

from accesspoint.security.algorithms import KeyAgreement
from accesspoint.security.policy import Profile, SecurityPolicy
from pmode.model import Direction, PMode
from pmode.profiles import Finding, NetworkProfile, each_leg

# Unconfirmed: no stored source names 2.0's SMP transport profile id; a P-Mode's transport_profile overrides it.
TRANSPORT_PROFILE = "eDelivery-AS4-v2.0"


def validate(pmode: PMode) -> list[Finding]:
    """An outgoing encrypted leg needs the partner's key-agreement certificate of the matching key type."""
    found: list[Finding] = []
    for path, leg in each_leg(pmode):
        receiver = pmode.receiver_of(leg).party
        if leg.direction is not Direction.OUTGOING or not leg.security.encrypt or receiver.dynamic:
            continue
        certificate = receiver.encryption_certificate
        if certificate is None:
            continue  # the loader reports a missing certificate for every profile
        x25519_wanted = leg.security.key_agreement is KeyAgreement.X25519
        wanted = x25519.X25519PublicKey if x25519_wanted else ec.EllipticCurvePublicKey
        key = certificate.public_key()
        if not isinstance(key, wanted):
            message = (
                f"party {receiver.name!r} has an encryption certificate with a {type(key).__name__} key, "
                f"which {leg.security.key_agreement.name} key agreement cannot use"
            )
            found.append((f"{path}.security.key_agreement", message))
    return found


PROFILE = NetworkProfile(
    name="edelivery-2.0",
    security_profile=Profile.EDELIVERY_2_0,
    transport_profile=TRANSPORT_PROFILE,
    security=SecurityPolicy.edelivery_2_0(),
    validator=validate,
)
