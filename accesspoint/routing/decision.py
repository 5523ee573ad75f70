"""The router's decision, without I/O: header facts and FaR's answer in, a RoutingDecision out.

Which network a received user message belongs to is read from its ``finalRecipient`` (and ``originalSender``)
message properties and from the P-Mode it arrived on:

========================================  =====================================================================
finalRecipient                            route
========================================  =====================================================================
absent                                    ``local``: for this access point's own backend
12 digits (personnummer,                  ``operator``: digital post; FaR says whether the recipient has a
samordningsnummer, 16 + orgnr) or an      mailbox, at which operator, and whether they accept the sender
eIDAS identifier                          (``originalSender``, an organisationsnummer)
``iso6523-actorid-upis::0007:…`` or       ``sdk``: an SDK message (XHE envelope or an SDK P-Mode) to a Swedish
``…::0203:…``                             organisation, found through SDK's SMP
any other ``scheme::value``               ``participant``: a foreign participant, found through BDXL + SMP
========================================  =====================================================================

A message that cannot be routed is refused before the AS4 receipt is returned, with EBMS:0004 and a reason
the sender can act on: FaR's own reasons (``no-mailbox``, ``pending``, ``anonymous``, ``sender-refused``,
``no-operator``, ``invalid-identifier``), ``invalid-sender`` (originalSender is not an organisationsnummer),
``unknown-recipient`` (finalRecipient fits no route), ``far-unavailable`` (FaR could not answer: the sender may
try again later) and ``no-agreement`` (no P-Mode to forward on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import PartyId, UserMessage
from far.identifiers import InvalidIdentifier, parse_orgnr
from far.service import DISCOVERY, Operator, Reachability
from pmode import PModeSet, Route
from pmode.model import Direction

FINAL_RECIPIENT = "finalRecipient"
ORIGINAL_SENDER = "originalSender"
ISO6523 = "iso6523-actorid-upis"
# ISO 6523 ICDs of Swedish organisations in SDK: 0007 (organisationsnummer), 0203 (SDK's own register).
SDK_ICDS = frozenset({"0007", "0203"})
_TWELVE_DIGITS = re.compile(r"\d{12}")
_EIDAS = re.compile(r"[A-Z]{2}/[A-Z]{2}/\S+")


class RouteKind(StrEnum):
    """Where a received message goes."""

    LOCAL = "local"
    OPERATOR = "operator"
    SDK = "sdk"
    PARTICIPANT = "participant"
    REFUSED = "refused"


class Refusal(StrEnum):
    """Why the router refuses a message, besides FaR's own reasons (see the module docstring)."""

    INVALID_SENDER = "invalid-sender"
    UNKNOWN_RECIPIENT = "unknown-recipient"
    FAR_UNAVAILABLE = "far-unavailable"
    NO_AGREEMENT = "no-agreement"


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the router reads from a received user message and the P-Mode it arrived on."""

    message_id: str
    final_recipient: str | None
    final_recipient_type: str | None = None
    original_sender: str | None = None
    original_sender_type: str | None = None
    sdk: bool = False  # arrived on an SDK P-Mode or carries an XHE envelope

    @classmethod
    def of(cls, user: UserMessage, *, sdk: bool) -> MessageFacts:
        """The facts of a header."""
        properties = {p.name: p for p in user.message_properties}
        final, sender = properties.get(FINAL_RECIPIENT), properties.get(ORIGINAL_SENDER)
        return cls(
            message_id=user.message_id,
            final_recipient=None if final is None else final.value.strip(),
            final_recipient_type=None if final is None else final.type,
            original_sender=None if sender is None else sender.value.strip(),
            original_sender_type=None if sender is None else sender.type,
            sdk=sdk,
        )


@dataclass(frozen=True, slots=True)
class Destination:
    """The network a message is for and the identifiers to look it up by (the first step of a decision)."""

    kind: RouteKind
    recipient: str | None = None  # 12 digits or eIDAS (operator); scheme::value (sdk, participant)
    sender_orgnr: str | None = None  # 10 digits (operator)
    reason: str | None = None  # when refused
    detail: str = ""

    @property
    def needs_far(self) -> bool:
        """True when FaR must be asked before deciding."""
        return self.kind is RouteKind.OPERATOR


@dataclass(frozen=True, slots=True)
class FarFailure:
    """FaR gave no answer (``unavailable``) or refused the question (``refused``, e.g. a bad sender)."""

    unavailable: bool
    detail: str


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Where a received message goes, or why it is refused."""

    kind: RouteKind
    message_id: str
    recipient: str | None = None
    reason: str | None = None
    detail: str = ""
    operator: Operator | None = None
    endpoint: str | None = None  # the operator's AS4 URL, or "discovery"
    participant: str | None = None  # scheme::value to discover (sdk, participant)

    @property
    def refused(self) -> bool:
        """True when the message must be refused."""
        return self.kind is RouteKind.REFUSED

    def error(self) -> EbmsError:
        """The EBMS:0004 a refused message is answered with: the reason first, then what it means."""
        return EbmsError(
            ErrorCode.OTHER, f"{self.reason}: {self.detail}" if self.detail else str(self.reason),
            ref_to_message_id=self.message_id,
        )  # fmt: skip

    def describe(self) -> str:
        """One line for the logs and the message's history."""
        if self.kind is RouteKind.OPERATOR and self.operator is not None:
            where = "found through SMP" if self.endpoint == DISCOVERY else f"at {self.endpoint}"
            return f"{self.recipient}: operator {self.operator.name} ({self.operator.party_id}) {where}"
        if self.kind in (RouteKind.SDK, RouteKind.PARTICIPANT):
            return f"{self.participant}: {self.kind.value} discovery"
        if self.refused:
            return f"refused ({self.reason}): {self.detail}"
        return "for this access point's backend"


def _split(value: str, kind: str | None) -> tuple[str | None, str]:
    """(scheme, value) of an identifier given as a typed property or as ``scheme::value``."""
    if kind:
        return kind, value
    scheme, separator, rest = value.partition("::")
    return (scheme, rest) if separator and scheme and rest else (None, value)


def sender_orgnr(value: str | None, kind: str | None) -> str | None:
    """The 10-digit organisationsnummer in an originalSender (``2021005448``, ``16…``, ``0007:…``), or None."""
    if not value:
        return None
    _scheme, text = _split(value, kind)
    icd, separator, rest = text.partition(":")
    if separator:  # an ISO 6523 value: only 0007 (organisationsnummer) names a Swedish organisation
        if icd != "0007":
            return None
        text = rest
    try:
        return parse_orgnr(text)
    except InvalidIdentifier:
        return None


def classify(facts: MessageFacts) -> Destination:
    """The network of a received message (see the module docstring); refused when it fits none."""
    if not facts.final_recipient:
        return Destination(RouteKind.LOCAL)
    scheme, value = _split(facts.final_recipient, facts.final_recipient_type)
    if (scheme is None or scheme != ISO6523) and (_TWELVE_DIGITS.fullmatch(value) or _EIDAS.fullmatch(value)):
        orgnr = sender_orgnr(facts.original_sender, facts.original_sender_type)
        if orgnr is None:
            detail = f"originalSender {facts.original_sender!r} is not a Swedish organisationsnummer"
            return Destination(RouteKind.REFUSED, value, reason=Refusal.INVALID_SENDER, detail=detail)
        return Destination(RouteKind.OPERATOR, value, sender_orgnr=orgnr)
    if scheme is None:
        detail = f"finalRecipient {value!r} is neither a Swedish recipient nor a scheme::value participant"
        return Destination(RouteKind.REFUSED, value, reason=Refusal.UNKNOWN_RECIPIENT, detail=detail)
    participant = f"{scheme}::{value}"
    icd = value.partition(":")[0]
    if scheme == ISO6523 and icd in SDK_ICDS and facts.sdk:
        return Destination(RouteKind.SDK, participant)
    return Destination(RouteKind.PARTICIPANT, participant)


def decide(facts: MessageFacts, far: Reachability | FarFailure | None = None) -> RoutingDecision:
    """The routing decision for a message, given FaR's answer about its recipient (when it needs one)."""
    destination = classify(facts)
    message_id = facts.message_id
    if destination.kind is RouteKind.REFUSED:
        return RoutingDecision(
            RouteKind.REFUSED, message_id, destination.recipient, destination.reason, destination.detail
        )
    if destination.kind in (RouteKind.SDK, RouteKind.PARTICIPANT):
        return RoutingDecision(destination.kind, message_id, destination.recipient, participant=destination.recipient)
    if destination.kind is RouteKind.LOCAL:
        return RoutingDecision(RouteKind.LOCAL, message_id)
    recipient = destination.recipient
    if far is None or isinstance(far, FarFailure):
        if far is not None and not far.unavailable:
            return RoutingDecision(RouteKind.REFUSED, message_id, recipient, Refusal.INVALID_SENDER, far.detail)
        detail = "the routing register (FaR) cannot answer now; try again later"
        return RoutingDecision(RouteKind.REFUSED, message_id, recipient, Refusal.FAR_UNAVAILABLE, detail)
    if not far.reachable or far.operator is None or far.endpoint is None:
        reason = far.reason.value if far.reason is not None else "no-operator"
        detail = _FAR_REASONS.get(reason, "the recipient cannot receive digital post")
        return RoutingDecision(RouteKind.REFUSED, message_id, recipient, reason, f"{recipient} {detail}")
    return RoutingDecision(RouteKind.OPERATOR, message_id, recipient, operator=far.operator, endpoint=far.endpoint)


_FAR_REASONS = {
    "invalid-identifier": "is not a valid personnummer, samordningsnummer, organisation or eIDAS identifier",
    "no-mailbox": "has no digital mailbox",
    "pending": "has a mailbox registration pending and cannot receive yet",
    "anonymous": "has an anonymous account, which cannot receive secure digital post",
    "sender-refused": "does not accept digital post from this sender",
    "no-operator": "has no mailbox operator on record",
    "dormant": "has a dormant mailbox (no activity for a long time): send on paper",
    "minor": "is a minor without a mailbox of their own: write to the guardians",
}


def _names(party_ids: tuple[PartyId, ...], wanted: str) -> bool:
    return any(wanted in (p.value, f"{p.type}::{p.value}") for p in party_ids)


def forward_route(
    decision: RoutingDecision, pmodes: PModeSet, *, action: str, pmode_id: str | None = None
) -> Route | None:
    """The outgoing leg a routed message is forwarded on, or None when no P-Mode agrees.

    To an operator: ``pmode_id`` when the settings name one, else the first outgoing P-Mode whose receiver names
    the operator's party id (its party should be ``endpoint: dynamic``, so that FaR's endpoint is used). To an
    SDK organisation or a foreign participant: an outgoing P-Mode with a dynamic partner for the same action (the
    document type), an SDK one for SDK messages and any other for foreign participants, preferring a partner
    without PartyIds of its own (the network, rather than an operator found through discovery).
    """
    routes = pmodes.routes(Direction.OUTGOING)
    if decision.kind is RouteKind.OPERATOR and decision.operator is not None:
        if pmode_id is not None:
            return next((r for r in routes if r.pmode.id == pmode_id), None)
        party_id = decision.operator.party_id
        return next((r for r in routes if _names(r.receiver.party.party_ids, party_id)), None)
    if decision.kind in (RouteKind.SDK, RouteKind.PARTICIPANT):
        sdk = decision.kind is RouteKind.SDK
        fitting = [r for r in routes if r.dynamic and r.leg.action == action and (r.pmode.network == "sdk") == sdk]
        # A network party (no PartyIds of its own) before an operator's dynamic party.
        return min(fitting, key=lambda r: bool(r.partner.party_ids), default=None)
    return None


def no_agreement(decision: RoutingDecision) -> RoutingDecision:
    """The refusal when no P-Mode agrees to forward a routable message."""
    target = decision.operator.name if decision.operator is not None else decision.participant
    detail = f"this access point has no agreement to forward to {target}"
    return RoutingDecision(RouteKind.REFUSED, decision.message_id, decision.recipient, Refusal.NO_AGREEMENT, detail)
