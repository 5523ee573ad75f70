"""Where an outgoing message goes when its P-Mode partner is dynamic: a forwarding record, else BDXL + SMP.

A P-Mode party written ``endpoint: dynamic`` has no fixed endpoint (and often no certificate or PartyId). Just
before each attempt the send worker calls :meth:`PartnerResolver.resolve`, which returns the same leg with the
partner filled in:

- a message the router forwards to a mailbox operator carries a *route record* (written before it was queued):
  the operator's endpoint from FaR, with the operator party's configured certificates, or ``discovery`` to find
  the operator's access point through SMP by the operator's party id;
- any other message is discovered: the participant is the ``finalRecipient`` property (``type::value``) or the
  To PartyId given at submission, the document type the leg's action, the transport profile the P-Mode's.

A discovered certificate is what the message is encrypted to and what the receipt must be signed with; it is
trusted only if it passes the leg's trust settings (anchors, validity, key usage, revocation as the leg says),
as a partner's own signature would. Its CN becomes the eb:To PartyId (the receiving access point, as Peppol and
SDK address it). Caching is the discovery client's (DNS TTL, HTTP max-age, bounded negative caching).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import Party, PartyId, PartyInfo, UserMessage
from accesspoint.routing.settings import NetworkDiscovery
from accesspoint.security.revocation import RevocationSource
from accesspoint.security.trust import CertificateUsage, TrustError, validate_certificate
from pmode import Route
from pmode.model import Side
from smp.client import DiscoveryClient, DiscoveryError, DiscoverySettings, NotRegistered, SmpSignatureError
from smp.model import CertPubUsage

log = logging.getLogger("accesspoint.routing")

FINAL_RECIPIENT = "finalRecipient"
ORIGINAL_SENDER = "originalSender"
DISCOVERY = "discovery"  # a route record's endpoint when the operator is found through SMP


class RouteUnavailable(Exception):
    """Discovery could not answer now (DNS or SMP down, timeout): the attempt is retried."""


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """Where a forwarded message goes: recorded when the router accepted the original, read on every attempt."""

    message_id: str  # the forwarded (outgoing) message
    original_message_id: str  # the message the router received
    operator_id: str
    operator_name: str
    party_id: str
    endpoint: str  # the operator's AS4 URL, or DISCOVERY

    def describe(self) -> str:
        """One line for the history and the logs."""
        where = "found through SMP" if self.endpoint == DISCOVERY else f"at {self.endpoint}"
        return f"forwarded to operator {self.operator_name} ({self.party_id}) {where} as {self.message_id}"


class RouteRecords:
    """Route targets of forwarded messages, one JSON file each under the server's storage folder.

    Written before the forwarded message is queued, so a restart sends it to the same place.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, message_id: str) -> Path:
        return self.folder / (hashlib.sha256(message_id.encode()).hexdigest() + ".json")

    def put(self, target: RouteTarget) -> None:
        """Keep ``target`` (atomically: written aside, then renamed)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(target.message_id)
        aside = path.with_suffix(".tmp")
        aside.write_text(json.dumps(_target_json(target)), encoding="utf-8")
        aside.replace(path)

    def get(self, message_id: str) -> RouteTarget | None:
        """The target recorded for ``message_id``, or None."""
        try:
            document = json.loads(self._path(message_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return RouteTarget(**{k: str(v) for k, v in document.items()})


def _target_json(target: RouteTarget) -> dict[str, Any]:
    return {name: getattr(target, name) for name in RouteTarget.__slots__}


def participant_of(user: UserMessage) -> str | None:
    """The participant to discover: ``finalRecipient`` as ``type::value``, else the To PartyId given."""
    for prop in user.message_properties:
        if prop.name == FINAL_RECIPIENT and prop.value:
            if prop.type:
                return f"{prop.type}::{prop.value}"
            return prop.value
    for party_id in user.party_info.receiver.party_ids:
        return party_id.value if party_id.type is None else f"{party_id.type}::{party_id.value}"
    return None


def submission_receiver(route: Route, to: object, properties: object) -> Party:
    """eb:To for a submission: the P-Mode's, or for a dynamic partner without PartyIds a stand-in.

    The stand-in names the participant (``finalRecipient``, else the submission's ``to``) so the stored header
    is valid; the send worker replaces it with the discovered access point (see :func:`addressed`).
    """
    party = route.to_party
    if party.party_ids or not route.dynamic:
        return party
    wanted: PartyId | None = None
    final = properties.get(FINAL_RECIPIENT) if isinstance(properties, dict) else None
    if isinstance(final, dict) and isinstance(final.get("value"), str):
        wanted = PartyId(final["value"], final.get("type") if isinstance(final.get("type"), str) else None)
    elif isinstance(final, str) and final:
        scheme, sep, value = final.partition("::")
        wanted = PartyId(value, scheme) if sep else PartyId(final)
    elif isinstance(to, str) and to:
        scheme, sep, value = to.partition("::")
        wanted = PartyId(value, scheme) if sep else PartyId(to)
    if wanted is None:
        raise ValueError("properties.finalRecipient: required to discover a dynamic partner (or give 'to')")
    return Party(party_ids=(wanted,), role=party.role)


def addressed(user: UserMessage, route: Route) -> UserMessage:
    """The stored header with eb:To set to the resolved partner (dynamic routes only; others are unchanged)."""
    if not route.dynamic or not route.to_party.party_ids:
        return user
    return replace(user, party_info=PartyInfo(sender=user.party_info.sender, receiver=route.to_party))


def _common_name(certificate: x509.Certificate) -> str | None:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def concrete_route(
    route: Route,
    *,
    endpoint: str,
    signing: x509.Certificate | None,
    encryption: x509.Certificate | None,
    party_ids: tuple[PartyId, ...],
) -> Route:
    """The same leg with the dynamic partner's endpoint, certificates and PartyIds filled in."""
    party = replace(
        route.partner,
        endpoint=endpoint,
        signing_certificate=signing,
        encryption_certificate=encryption,
        party_ids=party_ids or route.partner.party_ids,
    )
    partner_side = replace(route.pmode.partner, party=party)
    if route.pmode.local is Side.INITIATOR:
        pmode = replace(route.pmode, responder=partner_side)
    else:
        pmode = replace(route.pmode, initiator=partner_side)
    return Route(pmode, route.leg)


class PartnerResolver:
    """Resolves dynamic partners for the send workers; one per access point (it owns the discovery client)."""

    def __init__(
        self,
        settings: DiscoverySettings | None,
        records: RouteRecords,
        *,
        revocation: RevocationSource | None = None,
    ) -> None:
        self.settings = settings
        self.records = records
        self.revocation = revocation
        self._clients: dict[str, DiscoveryClient] = {}

    def client(self, network: str) -> DiscoveryClient | None:
        """The discovery client for a P-Mode network (made on first use); None without ``discovery`` settings."""
        if self.settings is None:
            return None
        settings = self.settings
        if isinstance(settings, NetworkDiscovery) and network in dict(settings.networks):
            settings = settings.for_network(network)
        else:
            network = ""  # every network without its own settings shares one client (and its caches)
        if network not in self._clients:
            self._clients[network] = DiscoveryClient(settings)
        return self._clients[network]

    async def close(self) -> None:
        """Close the discovery clients' HTTP sessions."""
        for client in self._clients.values():
            await client.close()

    async def resolve(self, message_id: str, user: UserMessage, route: Route, *, at: datetime) -> Route:
        """The route with the partner filled in; EbmsError when the message cannot go, RouteUnavailable for now."""
        if not route.dynamic:
            return route
        target = await asyncio.to_thread(self.records.get, message_id)
        if target is not None and target.endpoint != DISCOVERY:
            partner = route.partner
            if partner.signing_certificate is None:
                # FaR gives the operator's endpoint, not its certificate: that is agreed in the P-Mode.
                raise EbmsError(
                    ErrorCode.PROCESSING_MODE_MISMATCH,
                    f"party {partner.name!r} has no signing_certificate for operator {target.operator_name}",
                )
            party_ids = partner.party_ids or (PartyId(target.party_id),)
            return concrete_route(
                route,
                endpoint=target.endpoint,
                signing=partner.signing_certificate,
                encryption=partner.certificate_for_encryption,
                party_ids=party_ids,
            )
        participant = target.party_id if target is not None else participant_of(user)
        if participant is None:
            missing = "no finalRecipient or To PartyId to discover the partner by"
            raise EbmsError(ErrorCode.VALUE_NOT_RECOGNIZED, missing)
        return await self._discover(route, participant, at=at)

    async def _discover(self, route: Route, participant: str, *, at: datetime) -> Route:
        client = self.client(route.pmode.network)
        if client is None:
            raise EbmsError(
                ErrorCode.PROCESSING_MODE_MISMATCH,
                f"{route.partner.name} is dynamic but this access point has no discovery settings",
            )
        document = route.leg.action
        profile = route.pmode.transport_profile
        try:
            endpoint = await client.discover(participant, document, transport_profile=profile)
        except NotRegistered as exc:
            raise EbmsError(
                ErrorCode.VALUE_NOT_RECOGNIZED,
                f"{participant} is not registered in SMP for {document} ({profile})",
                log_detail=f"{participant} is not registered in SMP for {document} ({profile}): {exc}",
            ) from None
        except SmpSignatureError as exc:
            raise EbmsError(ErrorCode.OTHER, f"the SMP answer for {participant} is not trusted: {exc}") from None
        except DiscoveryError as exc:
            raise RouteUnavailable(f"discovery of {participant} failed: {exc}") from None
        published = dict(endpoint.certpub)
        signing = published.get(CertPubUsage.SIGNING, endpoint.certificate)
        encryption = published.get(CertPubUsage.ENCRYPTION, endpoint.certificate)
        name = _common_name(signing)
        if name is None:
            raise EbmsError(ErrorCode.OTHER, f"the certificate {participant}'s SMP names has no CN to address it by")
        await self._check_trust(route, signing, encryption, name, at=at)
        kind = next((p.type for p in route.partner.party_ids), None)
        if kind is None:
            kind = next((p.type for p in route.pmode.ourselves.party.party_ids), None)
        log.info("%s discovered: %s (%s), certificate %s", participant, endpoint.url, endpoint.transport_profile, name)
        return concrete_route(
            route, endpoint=endpoint.url, signing=signing, encryption=encryption, party_ids=(PartyId(name, kind),)
        )

    async def _check_trust(
        self,
        route: Route,
        signing: x509.Certificate,
        encryption: x509.Certificate,
        party_id: str,
        *,
        at: datetime,
    ) -> None:
        """The SMP's certificates must pass the leg's trust settings, as the partner's own signatures would."""
        checks = [(signing, CertificateUsage.SIGNATURE)]
        if route.security.encrypt:
            checks.append((encryption, CertificateUsage.ENCRYPTION))
        for certificate, usage in checks:
            try:
                # In a thread: CRL and OCSP fetches block.
                await asyncio.to_thread(
                    validate_certificate,
                    certificate,
                    (),
                    route.security.trust,
                    at=at,
                    usage=usage,
                    revocation=self.revocation,
                    party_id=party_id,
                )
            except TrustError as exc:
                raise EbmsError(
                    ErrorCode.FAILED_AUTHENTICATION,
                    f"the certificate the SMP publishes for the partner is not trusted: {exc.reason}",
                ) from None
