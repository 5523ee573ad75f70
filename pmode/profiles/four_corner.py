"""What Peppol and SDK share: four-corner one-way push over 1.15 with AP PartyIds bound to certificate CNs."""

from __future__ import annotations

from dataclasses import replace

from accesspoint.core.namespaces import MessageProperty
from accesspoint.security.policy import Profile, RevocationMode, SecurityPolicy, TrustSettings
from pmode.model import Agreement, PayloadLimits, PMode
from pmode.profiles import (
    Finding,
    NetworkProfile,
    Validator,
    each_leg,
    require_leg_settings,
    require_one_way_push,
    require_party_id_type,
)

REQUIRED_PROPERTIES = (MessageProperty.ORIGINAL_SENDER.value, MessageProperty.FINAL_RECIPIENT.value)


def require_four_corner(pmode: PMode, profile: NetworkProfile) -> list[Finding]:
    """One-way push, the network's PartyId type, signed + encrypted + CN binding, C1/C4 properties, its envelope."""
    name = profile.name
    found = require_one_way_push(pmode, name) + require_party_id_type(pmode, name, profile.party_id_type or "")
    found += require_leg_settings(pmode, name)
    if profile.agreement is not None and pmode.agreement != profile.agreement:
        found.append(("agreement", f"profile {name} uses the agreement {profile.agreement.value!r}"))
    for path, leg in each_leg(pmode):
        missing = [key for key in REQUIRED_PROPERTIES if key not in leg.required_properties]
        if missing:
            found.append((f"{path}.properties", f"profile {name} requires the message properties {missing}"))
        if leg.payload.format is not profile.payload.format:
            wanted, given = profile.payload.format.value, leg.payload.format.value
            found.append((f"{path}.payload.format", f"profile {name} carries {wanted!r}, found {given!r}"))
    return found


def four_corner_profile(
    name: str,
    *,
    transport_profile: str,
    party_id_type: str,
    revocation: RevocationMode,
    payload: PayloadLimits,
    validator: Validator,
    agreement: Agreement | None = None,
    typed_properties: tuple[str, ...] = (),
) -> NetworkProfile:
    """A four-corner network profile on eDelivery AS4 1.15 whose AP certificate CN is the PartyId."""
    return NetworkProfile(
        name=name,
        security_profile=Profile.EDELIVERY_1_15,
        transport_profile=transport_profile,
        security=replace(
            SecurityPolicy.edelivery_1_15(),
            trust=TrustSettings(revocation=revocation, bind_cn_to_party_id=True),
        ),
        payload=payload,
        required_properties=REQUIRED_PROPERTIES,
        typed_properties=typed_properties,
        party_id_type=party_id_type,
        validator=validator,
        agreement=agreement,
    )
