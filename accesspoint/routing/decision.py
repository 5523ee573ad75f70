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
``operator-suspended``, ``operator-revoked``, ``no-operator``, ``invalid-identifier``), ``invalid-sender``
(originalSender is no party id), ``unknown-recipient`` (finalRecipient fits no route), ``far-unavailable`` (FaR
could not answer: the sender may try again later) and ``no-agreement`` (no P-Mode to forward on). A letter accepted
before its operator was suspended is not forwarded either (:func:`operator_standing`, before every attempt).

Digital post is accepted only from a registered sender through one of its access points (:func:`check_sender`,
the sender register of ``far/senders.py``): ``unknown-sender`` (originalSender is not in the register),
``sender-suspended``, ``sender-not-connected-here`` (the access point that signed the message, by the SHA-256 of
the certificate the security layer verified and its PartyId, is none of the sender's or its dispatchers', or the
sender is not registered for the letter's network). A letter of an SDK sender is refused in SDK's terms: the
errorDetail is ``NOT_SERVICED`` (SDK's transport profile) and the description gives the reason.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import PartyId, UserMessage
from far.identifiers import InvalidIdentifier
from far.parties import parse_party_id
from far.senders import SenderNetwork, SenderView
from far.service import DISCOVERY, Operator, OperatorStatus, Reachability
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
    UNKNOWN_SENDER = "unknown-sender"
    SENDER_SUSPENDED = "sender-suspended"
    SENDER_NOT_CONNECTED = "sender-not-connected-here"


# SDK's transport profile: a recipient the access point does not serve is EBMS:0004 with this errorDetail.
NOT_SERVICED = "NOT_SERVICED"


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
    sender: str | None = None  # the sender's canonical party id (operator)
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
    sdk: bool = False  # the letter came from SDK: refusals in SDK's terms

    @property
    def refused(self) -> bool:
        """True when the message must be refused."""
        return self.kind is RouteKind.REFUSED

    def error(self) -> EbmsError:
        """The EBMS:0004 a refused message is answered with: the reason first, then what it means.

        To an SDK sender the errorDetail is SDK's own ``NOT_SERVICED`` and the reason goes in the description.
        """
        explained = f"{self.reason}: {self.detail}" if self.detail else str(self.reason)
        if self.sdk:
            return EbmsError(
                ErrorCode.OTHER, NOT_SERVICED, ref_to_message_id=self.message_id, description=explained,
                log_detail=explained,
            )  # fmt: skip
        return EbmsError(ErrorCode.OTHER, explained, ref_to_message_id=self.message_id)

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


@functools.lru_cache(maxsize=4096)  # a mailing asks about one sender a million times; parsing it is the cost
def sender_party(value: str | None, kind: str | None) -> str | None:
    """The canonical party id in an originalSender (``0192:974760673``, ``iso6523-actorid-upis::0216:…``, a
    Swedish ``2021005448`` or ``16…``), or None when it is none (far/parties.py)."""
    if not value:
        return None
    scheme, text = _split(value, kind)
    try:
        return parse_party_id(text, kind=scheme)
    except InvalidIdentifier:
        return None


def classify(facts: MessageFacts) -> Destination:
    """The network of a received message (see the module docstring); refused when it fits none."""
    if not facts.final_recipient:
        return Destination(RouteKind.LOCAL)
    scheme, value = _split(facts.final_recipient, facts.final_recipient_type)
    if (scheme is None or scheme != ISO6523) and (_TWELVE_DIGITS.fullmatch(value) or _EIDAS.fullmatch(value)):
        sender = sender_party(facts.original_sender, facts.original_sender_type)
        if sender is None:
            detail = f"originalSender {facts.original_sender!r} is not a party id this router knows"
            return Destination(RouteKind.REFUSED, value, reason=Refusal.INVALID_SENDER, detail=detail)
        return Destination(RouteKind.OPERATOR, value, sender=sender)
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
        return refuse(facts, destination.recipient, destination.reason or "", destination.detail)
    if destination.kind in (RouteKind.SDK, RouteKind.PARTICIPANT):
        return RoutingDecision(destination.kind, message_id, destination.recipient, participant=destination.recipient)
    if destination.kind is RouteKind.LOCAL:
        return RoutingDecision(RouteKind.LOCAL, message_id)
    recipient = destination.recipient
    if far is None or isinstance(far, FarFailure):
        if far is not None and not far.unavailable:
            return refuse(facts, recipient, Refusal.INVALID_SENDER, far.detail)
        return refuse(facts, recipient, Refusal.FAR_UNAVAILABLE, UNAVAILABLE)
    if not far.reachable or far.operator is None or far.endpoint is None:
        reason = far.reason.value if far.reason is not None else "no-operator"
        detail = _FAR_REASONS.get(reason, "the recipient cannot receive digital post")
        return refuse(facts, recipient, reason, f"{recipient} {detail}")
    return RoutingDecision(
        RouteKind.OPERATOR, message_id, recipient, operator=far.operator, endpoint=far.endpoint, sdk=facts.sdk
    )


UNAVAILABLE = "the routing register (FaR) cannot answer now; try again later"


def refuse(facts: MessageFacts, recipient: str | None, reason: str, detail: str) -> RoutingDecision:
    """The refusal of a message for ``reason``."""
    return RoutingDecision(RouteKind.REFUSED, facts.message_id, recipient, reason, detail, sdk=facts.sdk)


def _names_party(wanted: str, party_ids: tuple[PartyId, ...]) -> bool:
    return any(wanted in (p.value, f"{p.type}::{p.value}", f"{p.type}:{p.value}") for p in party_ids)


class NotForwarded(EbmsError):
    """EBMS:0004 for a letter the router accepted (receipt given) but will not forward: its operator is no longer
    approved or no longer in FaR. ``reason`` is the code the sender gets in the router's signed answer."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(ErrorCode.OTHER, f"{reason}: {detail}")
        self.reason = reason
        self.explanation = detail


def operator_standing(target_operator: str, found: Operator | None) -> NotForwarded | None:
    """Whether a letter already accepted may still be forwarded to ``target_operator`` (its route record), given
    FaR's record of the operator now (None: FaR has none): None when it may; the permanent EBMS:0004 when the
    operator is no longer approved (``operator-suspended``, ``operator-revoked``) or no longer in FaR
    (``no-operator``)."""
    if found is None:
        return NotForwarded("no-operator", f"operator {target_operator} is no longer in FaR")
    if found.status is OperatorStatus.APPROVED:
        return None
    status = found.status.value
    detail = f"operator {found.name} ({found.id}) is {status}; the letter is not forwarded: send it on paper"
    return NotForwarded(f"operator-{found.status.value}", detail)


def check_sender(
    facts: MessageFacts,
    sender: str,
    found: SenderView | None,
    *,
    certificate_sha256: str | frozenset[str] | None,
    party_ids: tuple[PartyId, ...] | None,
    network: SenderNetwork | None,
) -> RoutingDecision | None:
    """The refusal when ``sender`` may not send this letter through the access point that signed it, else None.

    ``found`` is the register's record (None: not registered); ``certificate_sha256`` the SHA-256 of the certificate
    the security layer verified the message with (None: the message was not signed, which proves nothing; a set:
    this access point's own signing certificates, for what its backend sends);
    ``party_ids`` the PartyIds of eb:From (None: this access point submitted it itself, the certificate is enough);
    ``network`` the letter's network by its business envelope (None: not known, not checked).
    """
    recipient = facts.final_recipient
    if found is None:
        return refuse(facts, recipient, Refusal.UNKNOWN_SENDER, f"{sender} is not a registered sender of digital post")
    if not found.sender.active:
        return refuse(facts, recipient, Refusal.SENDER_SUSPENDED, f"{sender} is suspended from sending digital post")
    if not certificate_sha256:
        return refuse(facts, recipient, Refusal.SENDER_NOT_CONNECTED, "the message is not signed by an access point")
    signers = {certificate_sha256} if isinstance(certificate_sha256, str) else certificate_sha256
    connected = [
        owner
        for owner, ap in found.connected()
        if ap.certificate_sha256 in signers and (party_ids is None or _names_party(ap.party_id, party_ids))
    ]
    if not connected:
        return refuse(
            facts, recipient, Refusal.SENDER_NOT_CONNECTED,
            f"{sender} is not connected through the access point that signed this message",
        )  # fmt: skip
    if network is not None and found.sender.networks and network not in found.sender.networks:
        return refuse(
            facts, recipient, Refusal.SENDER_NOT_CONNECTED, f"{sender} is not registered to send through {network}"
        )
    return None


_FAR_REASONS = {
    "invalid-identifier": "is not a valid personnummer, samordningsnummer, organisation or eIDAS identifier",
    "no-mailbox": "has no digital mailbox",
    "pending": "has a mailbox registration pending and cannot receive yet",
    "anonymous": "has an anonymous account, which cannot receive secure digital post",
    "sender-refused": "does not accept digital post from this sender",
    "no-operator": "has no mailbox operator on record",
    "operator-suspended": "has a mailbox at an operator whose approval is suspended: send on paper",
    "operator-revoked": "has a mailbox at an operator whose approval is revoked: send on paper",
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
