"""eDelivery AS4 1.15 (Common profile): RSA-SHA256, AES-128-GCM, RSA-OAEP with MGF1-SHA256, BST X509v3."""

from __future__ import annotations

from accesspoint.security.policy import Profile, SecurityPolicy
from pmode.profiles import NetworkProfile

# The transport profile id eDelivery's SMP documents use for AS4 endpoints.
TRANSPORT_PROFILE = "bdxr-transport-ebms3-as4-v1p0"

PROFILE = NetworkProfile(
    name="edelivery-1.15",
    security_profile=Profile.EDELIVERY_1_15,
    transport_profile=TRANSPORT_PROFILE,
    security=SecurityPolicy.edelivery_1_15(),
)
