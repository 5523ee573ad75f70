"""SDK (Säker digital kommunikation), transport profile ``digg-transport-as4-v1_0``: a subset of eDelivery AS4 1.15.

The rules below follow DIGG's C3.2.1: one-way push, gzip, the default MPC, Service ``bdx:noprocess`` of type
``urn:fdc:digg.se:edelivery:process``, Action ``busdox-docid-qns::<document id>``, PartyId = the AP certificate's CN
of type ``urn:fdc:digg.se:edelivery:transportprofile:as4:partytype:ap``, originalSender and finalRecipient mandatory,
XHE envelopes, and messages of at least 100 MB accepted.
"""

from __future__ import annotations

from accesspoint.security.policy import RevocationMode
from pmode.model import PayloadFormat, PayloadLimits, PMode
from pmode.profiles import Finding, each_leg
from pmode.profiles.four_corner import four_corner_profile, require_four_corner

NAME = "sdk"
TRANSPORT_PROFILE = "digg-transport-as4-v1_0"
PARTY_ID_TYPE = "urn:fdc:digg.se:edelivery:transportprofile:as4:partytype:ap"
SERVICE = "bdx:noprocess"
SERVICE_TYPE = "urn:fdc:digg.se:edelivery:process"
ACTION_PREFIX = "busdox-docid-qns::"
MIN_MESSAGE_SIZE = 100 * 1000 * 1000


def validate(pmode: PMode) -> list[Finding]:
    """SDK's rules on top of the four-corner ones: its transport profile, service, action form and 100 MB."""
    found = require_four_corner(pmode, PROFILE)
    if pmode.transport_profile != TRANSPORT_PROFILE:
        found.append(("transport_profile", f"profile {NAME} uses {TRANSPORT_PROFILE!r}"))
    for path, leg in each_leg(pmode):
        if (leg.service.value, leg.service.type) != (SERVICE, SERVICE_TYPE):
            message = f"profile {NAME} uses service {SERVICE!r} of type {SERVICE_TYPE!r}"
            found.append((f"{path}.service", f"{message}, found {leg.service.value!r} of type {leg.service.type!r}"))
        if not leg.action.startswith(ACTION_PREFIX):
            message = f"profile {NAME} actions start with {ACTION_PREFIX!r}, found {leg.action!r}"
            found.append((f"{path}.action", message))
        if leg.payload.max_size < MIN_MESSAGE_SIZE:
            found.append((f"{path}.payload.max_size", f"profile {NAME} requires accepting at least 100 MB"))
    return found


PROFILE = four_corner_profile(
    NAME,
    transport_profile=TRANSPORT_PROFILE,
    party_id_type=PARTY_ID_TYPE,
    # The SDK federation PKI publishes CRLs and OCSP (C3.4.3); unreachable status services do not stop traffic.
    revocation=RevocationMode.SOFT_FAIL,
    payload=PayloadLimits(max_size=MIN_MESSAGE_SIZE, format=PayloadFormat.XHE),
    validator=validate,
)
