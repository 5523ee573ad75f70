"""Peppol AS4: one-way push of an SBDH, PartyIds of type ``urn:fdc:peppol.eu:2017:identifiers:ap`` bound to the CN."""

from __future__ import annotations

from accesspoint.core.namespaces import PartyIdType
from accesspoint.security.policy import RevocationMode
from pmode.model import Agreement, PayloadFormat, PayloadLimits, PMode
from pmode.profiles import Finding
from pmode.profiles.four_corner import REQUIRED_PROPERTIES, four_corner_profile, require_four_corner

NAME = "peppol"
TRANSPORT_PROFILE = "peppol-transport-as4-v2_0"


def validate(pmode: PMode) -> list[Finding]:
    """Peppol's rules: one-way push, AP PartyIds, SBDH payloads, the four-corner properties, CN binding."""
    return require_four_corner(pmode, PROFILE)


PROFILE = four_corner_profile(
    NAME,
    transport_profile=TRANSPORT_PROFILE,
    party_id_type=PartyIdType.PEPPOL_AP.value,
    # Peppol certificates are checked against OpenPeppol's CA and OCSP; an unknown status refuses.
    revocation=RevocationMode.HARD_FAIL,
    payload=PayloadLimits(format=PayloadFormat.SBDH),
    validator=validate,
    # Peppol AS4 2.x: every message carries the Transport Infrastructure Agreement as its AgreementRef.
    agreement=Agreement("urn:fdc:peppol.eu:2017:agreements:tia:ap_provider"),
    # Peppol AS4 profile 2.0: originalSender and finalRecipient carry the participant identifier scheme in their
    # type attribute (iso6523-actorid-upis); a submission without it would make a message the receiving access
    # point refuses.
    typed_properties=REQUIRED_PROPERTIES,
)
