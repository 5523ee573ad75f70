"""The typed, frozen P-Mode model: parties, agreements, legs and what governs each leg (ebMS 3 core, appendix D)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from cryptography import x509

from accesspoint.core.compression import DEFAULT_DECOMPRESSION_FLOOR, DEFAULT_DECOMPRESSION_RATIO, DecompressionLimits
from accesspoint.core.conformance import WireRule
from accesspoint.core.model import Party, PartyId, Service
from accesspoint.core.namespaces import MEP, MEPBinding
from accesspoint.security.policy import SecurityPolicy

INITIATOR_ROLE = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"
RESPONDER_ROLE = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"


class Mep(StrEnum):
    """P-Mode.MEP, as written in the file."""

    ONE_WAY = "one-way"
    TWO_WAY = "two-way"

    @property
    def uri(self) -> MEP:
        """The ebMS URI of this MEP."""
        return MEP.ONE_WAY if self is Mep.ONE_WAY else MEP.TWO_WAY


class Binding(StrEnum):
    """P-Mode.MEPbinding, as written in the file (the bindings this MSH implements)."""

    PUSH = "push"
    PULL = "pull"
    PUSH_AND_PUSH = "push-and-push"

    @property
    def uri(self) -> MEPBinding:
        """The ebMS URI of this binding."""
        return {"push": MEPBinding.PUSH, "pull": MEPBinding.PULL}.get(self.value, MEPBinding.PUSH_AND_PUSH)

    @property
    def legs(self) -> int:
        """How many legs (user messages) the binding has."""
        return 2 if self is Binding.PUSH_AND_PUSH else 1


class Side(StrEnum):
    """One end of a P-Mode: the MSH that starts the MEP, or the other."""

    INITIATOR = "initiator"
    RESPONDER = "responder"

    @property
    def other(self) -> Side:
        """The opposite side."""
        return Side.RESPONDER if self is Side.INITIATOR else Side.INITIATOR


class Direction(StrEnum):
    """Whether this access point sends or receives a leg's user message."""

    OUTGOING = "outgoing"
    INCOMING = "incoming"


class PayloadFormat(StrEnum):
    """What the business payload must be: anything, a Peppol SBDH or an OASIS XHE envelope."""

    ANY = "any"
    SBDH = "sbdh"
    XHE = "xhe"


@dataclass(frozen=True, slots=True)
class PartyDefinition:
    """A party of the agreements: its PartyIds, default role, certificates and where its MSH listens."""

    name: str
    party_ids: tuple[PartyId, ...]
    role: str | None = None
    signing_certificate: x509.Certificate | None = None
    encryption_certificate: x509.Certificate | None = None
    endpoint: str | None = None  # None with dynamic discovery
    dynamic: bool = False

    def matches(self, party_ids: Sequence[PartyId]) -> bool:
        """True when a header's PartyIds name this party (one shared id suffices; no ids matches anyone)."""
        if not self.party_ids:
            return True
        return any(pid in self.party_ids for pid in party_ids)

    @property
    def certificate_for_encryption(self) -> x509.Certificate | None:
        """The certificate to encrypt to: the encryption one, else the signing one (1.15 uses one for both)."""
        return self.encryption_certificate or self.signing_certificate


@dataclass(frozen=True, slots=True)
class PModeParty:
    """P-Mode.Initiator or P-Mode.Responder: a party and the role it plays in this P-Mode."""

    party: PartyDefinition
    role: str

    def header_party(self) -> Party:
        """The eb:From / eb:To element for this side."""
        return Party(party_ids=self.party.party_ids, role=self.role)


@dataclass(frozen=True, slots=True)
class Agreement:
    """P-Mode.Agreement: eb:AgreementRef's value and type."""

    value: str
    type: str | None = None


@dataclass(frozen=True, slots=True)
class ReceptionAwareness:
    """AS4 reception awareness: retries with exponential backoff and jitter, duplicate detection, MissingReceipt."""

    enabled: bool = True
    retries: int = 5
    backoff_base: timedelta = timedelta(seconds=30)
    backoff_max: timedelta = timedelta(minutes=30)
    jitter: float = 0.2  # each delay is scaled by a factor drawn from [1 - jitter, 1 + jitter]
    duplicate_detection: bool = True
    duplicate_window: timedelta = timedelta(days=7)
    missing_receipt: bool = True  # EBMS:0301 after the last retry

    def retry_delay(self, attempt: int, unit_random: float = 0.5) -> timedelta:
        """The wait before retry ``attempt`` (0-based); ``unit_random`` in [0, 1) is passed in for tests."""
        base: timedelta = min(self.backoff_base * (2**attempt), self.backoff_max)
        return base * (1 + self.jitter * (2 * unit_random - 1))


@dataclass(frozen=True, slots=True)
class ErrorHandling:
    """P-Mode[].ErrorHandling: who hears about a processing error besides the sender of the message in error."""

    # ProcessErrorNotifyConsumer: a refused incoming message is announced to the backend (webhook message-refused).
    notify_consumer: bool = False
    # Report.SenderErrorsTo: an address for errors other than the back-channel. eDelivery AS4 reports errors on
    # the HTTP response only, so every network profile refuses it (AS4_CP_TA11); it is read to be refused.
    sender_errors_to: str | None = None


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """Bounds on what a leg's user message may carry."""

    max_size: int = 100 * 1024 * 1024
    max_parts: int = 100
    decompression_limit: int = 1024 * 1024 * 1024
    format: PayloadFormat = PayloadFormat.ANY
    # Past ``decompression_floor`` bytes a part may not inflate more than this many times its compressed bytes.
    decompression_ratio: int = DEFAULT_DECOMPRESSION_RATIO
    decompression_floor: int = DEFAULT_DECOMPRESSION_FLOOR

    @property
    def decompression(self) -> DecompressionLimits:
        """The limits ``compression.decompress_with`` applies to each part."""
        return DecompressionLimits(self.decompression_limit, self.decompression_ratio, self.decompression_floor)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long to keep message records, payloads and non-repudiation evidence (None keeps forever)."""

    messages: timedelta | None = timedelta(days=90)
    payloads: timedelta | None = timedelta(days=30)
    evidence: timedelta | None = timedelta(days=3650)


@dataclass(frozen=True, slots=True)
class Leg:
    """One user message of a P-Mode (P-Mode[1] or P-Mode[2]) and everything that governs it."""

    index: int  # 0 for the first leg
    sender: Side  # the side whose MSH produces the user message
    direction: Direction  # seen from this access point
    service: Service
    action: str
    mpc: str
    security: SecurityPolicy
    reception_awareness: ReceptionAwareness
    compression: bool
    payload: PayloadLimits
    required_properties: tuple[str, ...] = ()
    error_handling: ErrorHandling = field(default_factory=ErrorHandling)


@dataclass(frozen=True, slots=True)
class PMode:
    """One P-Mode: the agreement between two parties for one MEP, with its one or two legs."""

    id: str
    network: str  # the network profile it follows (edelivery-1.15, edelivery-2.0, peppol, sdk)
    transport_profile: str  # the SMP transport profile id used to discover the partner
    mep: Mep
    binding: Binding
    initiator: PModeParty
    responder: PModeParty
    local: Side  # the side this access point plays
    legs: tuple[Leg, ...]
    retention: Retention
    agreement: Agreement | None = None
    # The id is agreed with the partner: sent in eb:AgreementRef/@pmode, and a message naming another is refused.
    shared_id: bool = False
    # Wire-format rules (``accesspoint.core.conformance``) relaxed for this partner: only RELAXABLE ones.
    leniency: frozenset[WireRule] = frozenset()

    def side(self, side: Side) -> PModeParty:
        """The initiator or the responder."""
        return self.initiator if side is Side.INITIATOR else self.responder

    @property
    def partner(self) -> PModeParty:
        """The other side from this access point's point of view."""
        return self.side(self.local.other)

    @property
    def ourselves(self) -> PModeParty:
        """This access point's side."""
        return self.side(self.local)

    def sender_of(self, leg: Leg) -> PModeParty:
        """The party that sends the leg's user message (eb:From)."""
        return self.side(leg.sender)

    def receiver_of(self, leg: Leg) -> PModeParty:
        """The party that receives the leg's user message (eb:To)."""
        return self.side(leg.sender.other)
