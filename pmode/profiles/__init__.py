"""Network profiles: the P-Mode defaults and validator of each network (one module per profile, as phase4 does)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from accesspoint.core.model import Property
from accesspoint.core.namespaces import CONFORMANCE_TEST_SERVICE, DEFAULT_MPC
from accesspoint.security.policy import Profile, SecurityPolicy
from pmode.model import Agreement, Binding, Leg, Mep, PayloadLimits, PMode, ReceptionAwareness, Retention

# (dotted field relative to the P-Mode, message)
Finding = tuple[str, str]
Validator = Callable[[PMode], list[Finding]]


def _no_checks(_pmode: PMode) -> list[Finding]:
    return []


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """A network's defaults for whatever a P-Mode file leaves out, and the rules its P-Modes must keep."""

    name: str
    security_profile: Profile
    transport_profile: str
    security: SecurityPolicy
    mep: Mep = Mep.ONE_WAY
    binding: Binding = Binding.PUSH
    mpc: str = DEFAULT_MPC
    compression: bool = True
    payload: PayloadLimits = field(default_factory=PayloadLimits)
    reception_awareness: ReceptionAwareness = field(default_factory=ReceptionAwareness)
    retention: Retention = field(default_factory=Retention)
    required_properties: tuple[str, ...] = ()
    # Message properties a submission must give with their type attribute (Peppol's originalSender and
    # finalRecipient carry their identifier scheme); one given without it, or missing, is refused before storing.
    typed_properties: tuple[str, ...] = ()
    party_id_type: str | None = None  # the PartyId type the network prescribes, if any
    agreement: Agreement | None = None  # the AgreementRef every P-Mode of the network carries, if any
    validator: Validator = _no_checks

    def validate(self, pmode: PMode) -> list[Finding]:
        """Every way the P-Mode breaks this profile's rules (those every network shares, then its own)."""
        return common_rules(pmode, self.name) + self.validator(pmode)

    def untyped_properties(self, properties: Iterable[Property]) -> list[Finding]:
        """(``properties.<name>``, why) for each property this network wants typed that a submission lacks or
        gives without its type."""
        given = {item.name: item for item in properties}
        found: list[Finding] = []
        for name in self.typed_properties:
            item = given.get(name)
            if item is None:
                found.append((f"properties.{name}", f"required by the {self.name} profile, with its type"))
            elif not item.type:
                found.append((f"properties.{name}", f"the {self.name} profile requires its type: {{value, type}}"))
        return found


def common_rules(pmode: PMode, profile: str) -> list[Finding]:
    """What no network allows: errors reported elsewhere than on the back-channel, the conformance test service."""
    found: list[Finding] = []
    for path, leg in each_leg(pmode):
        if leg.error_handling.sender_errors_to is not None:
            # eDelivery AS4 (AS4_CP_TA11): PMode[1].ErrorHandling.Report.SenderErrorsTo is not set; an error goes
            # back on the HTTP response to the message in error, signed, and nowhere else.
            message = f"profile {profile} reports errors on the back-channel only: SenderErrorsTo must not be set"
            found.append((f"{path}.error_handling.sender_errors_to", message))
        if leg.service.value == CONFORMANCE_TEST_SERVICE:
            message = (
                f"{CONFORMANCE_TEST_SERVICE} is the EC conformance test bed's unsigned backend service: it runs on "
                "`accesspoint conformance serve`'s own listener, never on an access point's P-Modes"
            )
            found.append((f"{path}.service", message))
    return found


def each_leg(pmode: PMode) -> list[tuple[str, Leg]]:
    """The legs with their field paths."""
    return [(f"legs[{leg.index}]", leg) for leg in pmode.legs]


def require_one_way_push(pmode: PMode, profile: str) -> list[Finding]:
    """Peppol and SDK exchange one-way push only."""
    found: list[Finding] = []
    if pmode.mep is not Mep.ONE_WAY:
        found.append(("mep", f"profile {profile} allows one-way only, found {pmode.mep.value!r}"))
    if pmode.binding is not Binding.PUSH:
        found.append(("binding", f"profile {profile} allows push only, found {pmode.binding.value!r}"))
    return found


def require_party_id_type(pmode: PMode, profile: str, wanted: str) -> list[Finding]:
    """Both parties' PartyIds must carry the network's PartyId type (dynamic parties learn theirs later)."""
    found: list[Finding] = []
    for side in (pmode.initiator, pmode.responder):
        name = "initiator" if side is pmode.initiator else "responder"
        wrong = [pid for pid in side.party.party_ids if pid.type != wanted]
        if wrong:
            message = (
                f"party {side.party.name!r} has PartyId {wrong[0].value!r} of type {wrong[0].type!r}, "
                f"but profile {profile} requires type {wanted!r}"
            )
            found.append((f"{name}.party", message))
    return found


def require_leg_settings(pmode: PMode, profile: str) -> list[Finding]:
    """What Peppol and SDK share: signed and encrypted, BST X509v3, the CN bound to the PartyId, gzip, revocation."""
    found: list[Finding] = []
    for path, leg in each_leg(pmode):
        security = leg.security
        if not (security.sign and security.encrypt):
            found.append((f"{path}.security", f"profile {profile} requires messages to be signed and encrypted"))
        if security.token_reference.value != "bst-x509v3":
            found.append(
                (
                    f"{path}.security.token_reference",
                    f"profile {profile} requires 'bst-x509v3', found {security.token_reference.value!r}",
                )
            )
        if not security.trust.bind_cn_to_party_id:
            message = f"profile {profile} binds the certificate CN to the PartyId"
            found.append((f"{path}.security.trust.bind_cn_to_party_id", message))
        if security.trust.revocation.value == "off":
            found.append((f"{path}.security.trust.revocation", f"profile {profile} requires revocation checks"))
        if not leg.compression:
            found.append((f"{path}.compression", f"profile {profile} requires gzip compression"))
        if leg.mpc != DEFAULT_MPC:
            found.append((f"{path}.mpc", f"profile {profile} uses the default MPC only, found {leg.mpc!r}"))
    return found


def all_profiles() -> dict[str, NetworkProfile]:
    """Every network profile by name."""
    from pmode.profiles import edelivery_1_15, edelivery_2_0, peppol, sdk

    profiles = (edelivery_1_15.PROFILE, edelivery_2_0.PROFILE, peppol.PROFILE, sdk.PROFILE)
    return {profile.name: profile for profile in profiles}
