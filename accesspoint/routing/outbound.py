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
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import Party, PartyId, PartyInfo, UserMessage
from accesspoint.routing.settings import NetworkDiscovery
from accesspoint.security.revocation import RevocationSource
from accesspoint.security.trust import CertificateUsage, TrustError, validate_certificate
from accesspoint.servicekit.httpclient import AddressPolicy
from accesspoint.store.hooks import TransactionHook
from accesspoint.store.ops import Also
from accesspoint.store.records import StoredMessage
from accesspoint.store.routes import RouteHook, RouteTargets, StoredRoute
from pmode import Route
from pmode.model import Side
from smp.client import (
    DiscoveryClient,
    DiscoveryError,
    DiscoverySettings,
    EndpointRefused,
    NotRegistered,
    SmpSignatureError,
)
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
    """Route targets of forwarded messages, kept in the message store (``accesspoint.store.routes``).

    A target is written in the transaction that stores the message it routes (``hook``), so every attempt, every
    instance and a restart send it to the same place, and it is purged with its message. A recorded target never
    changes, so the targets this process wrote or read are also kept in memory (bounded): the checks before each
    forwarding attempt do not read the database again.
    """

    def __init__(self, targets: RouteTargets, *, remember: int = 20_000) -> None:
        self.targets = targets
        self._remember = remember
        self._known: OrderedDict[str, RouteTarget] = OrderedDict()

    def hook(self, target: RouteTarget, *, now: datetime) -> TransactionHook:
        """What records ``target`` in the transaction that stores its message (remembered once it committed)."""
        return _Remembered(RouteHook(_stored(target), now=now), self, target)

    def _keep(self, target: RouteTarget) -> None:
        known = self._known
        known[target.message_id] = target
        known.move_to_end(target.message_id)
        while len(known) > self._remember:
            known.popitem(last=False)

    async def get(self, message_id: str) -> RouteTarget | None:
        """The target recorded for ``message_id``, or None."""
        known = self._known.get(message_id)
        if known is not None:
            return known
        stored = await self.targets.get(message_id)
        if stored is None:
            return None
        target = RouteTarget(
            stored.message_id,
            stored.received_message_id,
            stored.operator_id,
            stored.operator_name,
            stored.party_id,
            stored.endpoint,
        )
        self._keep(target)
        return target

    async def adopt_folder(self, folder: Path) -> int:
        """Take in the targets an earlier version kept as JSON files in ``folder`` (then delete them); how many."""
        paths = await asyncio.to_thread(lambda: sorted(folder.glob("*.json")) if folder.is_dir() else [])
        found = []
        for path in paths:
            try:
                document = json.loads(await asyncio.to_thread(path.read_text, "utf-8"))
                found.append(RouteTarget(**{k: str(v) for k, v in document.items()}))
            except (OSError, ValueError, TypeError) as exc:
                log.error("route record %s not taken in: %s", path.name, exc)
        adopted = await self.targets.adopt([_stored(target) for target in found])
        for path in paths:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return adopted


class _Remembered:
    """A RouteHook that, once its row committed with the message, keeps the target in ``RouteRecords``' memory
    (never for a duplicate, whose stored target stands: the store neither writes nor commits its rows)."""

    def __init__(self, hook: RouteHook, records: RouteRecords, target: RouteTarget) -> None:
        self.hook, self.records, self.target = hook, records, target
        self._written = False

    def rows(self, message: StoredMessage) -> list[Also]:
        rows = self.hook.rows(message)
        self._written = True
        return rows

    def committed(self) -> None:
        self.hook.committed()
        if self._written:
            self.records._keep(self.target)


def _stored(target: RouteTarget) -> StoredRoute:
    return StoredRoute(
        target.message_id,
        target.original_message_id,
        target.operator_id,
        target.operator_name,
        target.party_id,
        target.endpoint,
    )


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

    def _settings(self, network: str) -> tuple[str, DiscoverySettings] | None:
        settings = self.settings
        if settings is None:
            return None
        if isinstance(settings, NetworkDiscovery) and network in dict(settings.networks):
            return network, settings.for_network(network)
        return "", settings  # every network without its own settings shares one client (and its caches)

    def client(self, network: str) -> DiscoveryClient | None:
        """The discovery client for a P-Mode network (made on first use); None without ``discovery`` settings."""
        found = self._settings(network)
        if found is None:
            return None
        key, settings = found
        if key not in self._clients:
            self._clients[key] = DiscoveryClient(settings)
        return self._clients[key]

    def addresses(self, network: str) -> AddressPolicy | None:
        """Where a dynamic partner's endpoint on this P-Mode network may be connected to (None: no discovery)."""
        found = self._settings(network)
        return None if found is None else found[1].endpoint_policy

    async def close(self) -> None:
        """Close the discovery clients' HTTP sessions."""
        for client in self._clients.values():
            await client.close()

    async def resolve(
        self, message_id: str, user: UserMessage | Callable[[], Awaitable[UserMessage]], route: Route, *, at: datetime
    ) -> Route:
        """The route with the partner filled in; EbmsError when the message cannot go, RouteUnavailable for now.

        ``user`` is the stored header, or how to read it: it is read only when the participant must be discovered
        (a route record naming the operator's endpoint needs no header)."""
        if not route.dynamic:
            return route
        target = await self.records.get(message_id)
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
        if target is not None:
            participant: str | None = target.party_id
        else:
            participant = participant_of(user if isinstance(user, UserMessage) else await user())
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
        except EndpointRefused as exc:
            refused = f"the endpoint the SMP names for {participant} is refused: {exc}"
            raise EbmsError(ErrorCode.OTHER, refused) from None
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
