"""A loaded set of P-Modes and how messages find theirs (ebMS 3 core D.3: P-Mode determination)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import AgreementRef, Party, PartyId, Service, UserMessage
from accesspoint.security.policy import SecurityPolicy
from pmode.model import Binding, Direction, Leg, PartyDefinition, PMode, PModeParty


@dataclass(frozen=True, slots=True)
class Route:
    """One leg of one P-Mode: everything the MSH needs to send or accept that leg's user message."""

    pmode: PMode
    leg: Leg

    @property
    def name(self) -> str:
        """``pmode-id/leg-number`` (1-based, as ebMS numbers legs)."""
        return f"{self.pmode.id}/{self.leg.index + 1}"

    @property
    def security(self) -> SecurityPolicy:
        """The security policy of the leg: what to do when sending, what to require when receiving."""
        return self.leg.security

    @property
    def sender(self) -> PModeParty:
        """The party that produces the user message."""
        return self.pmode.sender_of(self.leg)

    @property
    def receiver(self) -> PModeParty:
        """The party the user message is for."""
        return self.pmode.receiver_of(self.leg)

    @property
    def partner(self) -> PartyDefinition:
        """The other party from this access point's point of view."""
        return self.pmode.partner.party

    @property
    def from_party(self) -> Party:
        """eb:From for an outgoing message."""
        return self.sender.header_party()

    @property
    def to_party(self) -> Party:
        """eb:To for an outgoing message."""
        return self.receiver.header_party()

    @property
    def agreement_ref(self) -> AgreementRef | None:
        """eb:AgreementRef for an outgoing message (None when the P-Mode has no agreement); its ``pmode`` attribute
        names the P-Mode only when the id is shared with the partner."""
        agreement = self.pmode.agreement
        pmode = self.pmode.id if self.pmode.shared_id else None
        return None if agreement is None else AgreementRef(agreement.value, agreement.type, pmode)

    @property
    def endpoint(self) -> str | None:
        """Where this access point POSTs for the leg (None when discovery supplies it or we POST nothing)."""
        # We POST our pushed user message, or our PullRequest for a message the partner offers on pull.
        pulled = self.pmode.binding is Binding.PULL
        we_post = (self.leg.direction is Direction.OUTGOING) != pulled
        return self.partner.endpoint if we_post else None

    @property
    def dynamic(self) -> bool:
        """True when the partner's endpoint and certificates come from SMP discovery."""
        return self.partner.dynamic

    @property
    def partner_signing_certificate(self) -> x509.Certificate | None:
        """The partner's configured signing certificate (None when dynamic or not configured)."""
        return self.partner.signing_certificate

    @property
    def partner_encryption_certificate(self) -> x509.Certificate | None:
        """The certificate to encrypt to (the partner's encryption one, else its signing one for 1.15)."""
        return self.partner.certificate_for_encryption


class MatchStatus(StrEnum):
    """The outcome of looking up a P-Mode."""

    MATCHED = "matched"
    NONE = "none"
    AMBIGUOUS = "ambiguous"
    MISMATCH = "mismatch"  # the message names (AgreementRef/@pmode) another P-Mode than the shared-id one it fits


@dataclass(frozen=True, slots=True)
class Match:
    """The result of a lookup: one route, none (with the criterion that failed), or several."""

    status: MatchStatus
    route: Route | None = None
    reason: str = ""
    candidates: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()  # the candidates themselves, when ambiguous

    @property
    def error_code(self) -> ErrorCode | None:
        """The ebMS error an incoming message gets: EBMS:0001 when nothing matches, EBMS:0004 when ambiguous,
        EBMS:0010 when it names another P-Mode than the one it fits."""
        if self.status is MatchStatus.NONE:
            return ErrorCode.VALUE_NOT_RECOGNIZED
        if self.status is MatchStatus.MISMATCH:
            return ErrorCode.PROCESSING_MODE_MISMATCH
        if self.status is MatchStatus.AMBIGUOUS:
            # The sender did nothing wrong: our agreements overlap, so the error is ours ("Other").
            return ErrorCode.OTHER
        return None

    def ebms_error(self, ref_to_message_id: str | None = None) -> EbmsError | None:
        """The EbmsError to answer an unmatched incoming message with (None when matched)."""
        code = self.error_code
        if code is None:
            return None
        detail = {
            ErrorCode.VALUE_NOT_RECOGNIZED: "no P-Mode agrees with the message",
            ErrorCode.PROCESSING_MODE_MISMATCH: "AgreementRef/@pmode names another P-Mode than the one agreed",
        }.get(code, "P-Mode ambiguous")
        return EbmsError(code, detail, ref_to_message_id=ref_to_message_id, log_detail=self.reason)


Filter = tuple[str, Callable[[Route], bool]]


def _narrow(routes: Sequence[Route], filters: Sequence[Filter]) -> Match:
    # Criteria apply in order (collaboration, parties, agreement, MPC), so "none" names the first one that
    # no P-Mode satisfies; parties come before the agreement because they identify the partner best.
    for description, keep in filters:
        kept = [route for route in routes if keep(route)]
        if not kept:
            return Match(MatchStatus.NONE, reason=f"no P-Mode leg matches {description}")
        routes = kept
    if len(routes) > 1:
        names = tuple(route.name for route in routes)
        reason = f"several P-Mode legs match: {', '.join(names)}"
        return Match(MatchStatus.AMBIGUOUS, reason=reason, candidates=names, routes=tuple(routes))
    return Match(MatchStatus.MATCHED, route=routes[0])


def _by_pmode_attribute(match: Match, named: str | None) -> Match:
    """ebMS 3 5.2.2.7: AgreementRef/@pmode names the P-Mode. Only an id the P-Mode says is shared with the partner
    means anything (phase4 sends its own ids): it picks among legs that fit equally well, and a message fitting
    a shared-id P-Mode while naming another is refused (EBMS:0010). Other P-Modes ignore the attribute."""
    if named is None:
        return match
    if match.status is MatchStatus.AMBIGUOUS:
        named_routes = [r for r in match.routes if r.pmode.shared_id and r.pmode.id == named]
        return Match(MatchStatus.MATCHED, route=named_routes[0]) if len(named_routes) == 1 else match
    route = match.route
    if route is not None and route.pmode.shared_id and route.pmode.id != named:
        reason = f"AgreementRef/@pmode {named[:80]!r} is not {route.pmode.id!r}, whose id is shared"
        return Match(MatchStatus.MISMATCH, reason=reason, candidates=(route.name,))
    return match


def _ids(party_ids: Sequence[PartyId]) -> str:
    return ", ".join(f"{p.value!r}" + (f" ({p.type})" if p.type else "") for p in party_ids) or "none"


def _party_id(value: PartyId | str) -> PartyId:
    return value if isinstance(value, PartyId) else PartyId(value)


def _names_party(party: PartyDefinition, wanted: PartyId) -> bool:
    # A submission may give a PartyId without its type; then the value alone decides.
    if wanted.type is None:
        return not party.party_ids or any(pid.value == wanted.value for pid in party.party_ids)
    return party.matches((wanted,))


@dataclass(frozen=True, slots=True)
class PModeSet:
    """The P-Modes of one file, with lookups for incoming messages and outgoing submissions."""

    pmodes: tuple[PMode, ...]
    parties: tuple[PartyDefinition, ...]
    local_parties: tuple[str, ...]
    source: Path | None = None
    # (path, sha256) of the file and every file it names, so a watcher notices a rotated certificate too.
    snapshot: tuple[tuple[str, str], ...] = ()

    def __iter__(self) -> Iterator[PMode]:
        return iter(self.pmodes)

    def __len__(self) -> int:
        return len(self.pmodes)

    def get(self, pmode_id: str) -> PMode | None:
        """The P-Mode with that id, or None."""
        return next((p for p in self.pmodes if p.id == pmode_id), None)

    def party(self, name: str) -> PartyDefinition | None:
        """The party with that name, or None."""
        return next((p for p in self.parties if p.name == name), None)

    def routes(self, direction: Direction | None = None) -> list[Route]:
        """Every leg of every P-Mode, optionally only those this access point sends or receives."""
        return [
            Route(pmode, leg)
            for pmode in self.pmodes
            for leg in pmode.legs
            if direction is None or leg.direction is direction
        ]

    def match_incoming(self, message: UserMessage) -> Match:
        """The P-Mode leg of a received user message: AgreementRef, Service, Action, From and To with roles, MPC."""
        collab = message.collaboration_info
        sender, receiver = message.party_info.sender, message.party_info.receiver
        routes = self.routes(Direction.INCOMING)
        agreement = collab.agreement_ref
        wanted_agreement = None if agreement is None else (agreement.value, agreement.type)
        filters: list[Filter] = [
            (
                f"service {collab.service.value!r} (type {collab.service.type!r}) and action {collab.action!r}",
                lambda r: r.leg.service == collab.service and r.leg.action == collab.action,
            ),
            (
                f"From {_ids(sender.party_ids)} in role {sender.role!r}",
                lambda r: r.sender.party.matches(sender.party_ids) and r.sender.role == sender.role,
            ),
            (
                f"To {_ids(receiver.party_ids)} in role {receiver.role!r}",
                lambda r: r.receiver.party.matches(receiver.party_ids) and r.receiver.role == receiver.role,
            ),
            (
                f"agreement {wanted_agreement!r}",
                lambda r: (
                    wanted_agreement
                    == (None if r.pmode.agreement is None else (r.pmode.agreement.value, r.pmode.agreement.type))
                ),
            ),
            (f"MPC {message.effective_mpc!r}", lambda r: r.leg.mpc == message.effective_mpc),
        ]
        return _by_pmode_attribute(_narrow(routes, filters), None if agreement is None else agreement.pmode)

    def match_submission(
        self,
        *,
        pmode_id: str | None = None,
        service: Service | str | None = None,
        action: str | None = None,
        to_party: PartyId | str | None = None,
        from_party: PartyId | str | None = None,
        agreement: str | None = None,
    ) -> Match:
        """The outgoing leg for a backend submission; every criterion given must hold, absent ones match all."""
        filters: list[Filter] = []
        if pmode_id is not None:
            filters.append((f"P-Mode id {pmode_id!r}", lambda r: r.pmode.id == pmode_id))
        if service is not None:
            wanted = service if isinstance(service, Service) else Service(service)
            filters.append(
                (
                    f"service {wanted.value!r}",
                    lambda r: (
                        r.leg.service.value == wanted.value
                        and (wanted.type is None or r.leg.service.type == wanted.type)
                    ),
                )
            )
        if action is not None:
            filters.append((f"action {action!r}", lambda r: r.leg.action == action))
        if agreement is not None:
            filters.append(
                (
                    f"agreement {agreement!r}",
                    lambda r: r.pmode.agreement is not None and r.pmode.agreement.value == agreement,
                )
            )
        if to_party is not None:
            to_id = _party_id(to_party)
            filters.append((f"To {_ids((to_id,))}", lambda r: _names_party(r.receiver.party, to_id)))
        if from_party is not None:
            from_id = _party_id(from_party)
            filters.append((f"From {_ids((from_id,))}", lambda r: _names_party(r.sender.party, from_id)))
        return _narrow(self.routes(Direction.OUTGOING), filters)

    def pull_requests_to_serve(self, mpc: str) -> list[Route]:
        """Legs whose messages partners pull from us on this MPC (the MSH authorises the puller among them)."""
        return [r for r in self.routes(Direction.OUTGOING) if r.pmode.binding is Binding.PULL and r.leg.mpc == mpc]

    def pull_requests_to_send(self) -> list[Route]:
        """Legs whose messages we pull from partners (their endpoint receives our PullRequest for the MPC)."""
        return [r for r in self.routes(Direction.INCOMING) if r.pmode.binding is Binding.PULL]
