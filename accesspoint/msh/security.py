"""The access point's security state as two objects made by ``create_app``: a ``Signer`` and a ``Verifier``.

Each holds its keys and its caches (the signer's token templates; the verifier's decoded tokens, trust
decisions and revocation lookups), so nothing is shared by the process: two access points in one process (the
tests' pair) keep apart, and dropping an application drops its caches. The cryptography itself is the pure
recipes of ``accesspoint.security``; these objects only pass their caches in and keep revocation off the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from cryptography import x509

from accesspoint.core.errors import EbmsError
from accesspoint.core.message import ReceivedMessage
from accesspoint.core.model import ReferenceEcho, SignalMessage, UserMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.msh.config import ConfigError, KeyRing
from accesspoint.msh.receiving import error_response, signed_signal, verify_signal
from accesspoint.msh.revocation import KnownStatus, Revocation
from accesspoint.security.encryption import SpoolFactory
from accesspoint.security.inbound import TrustCache
from accesspoint.security.keys import KeyPair
from accesspoint.security.outbound import Payload, SecuredMessage, secure_message
from accesspoint.security.policy import SecurityPolicy, TrustSettings
from accesspoint.security.receipts import VerifiedReceipt, verify_receipt
from accesspoint.security.signing import TokenCache, TokenTemplates, VerifiedSignature
from accesspoint.security.trust import CertificateUsage, TrustResult, validate_certificate
from pmode import Route

_T = TypeVar("_T")


class Signer:
    """Signs what this access point sends: its signing keys, each token written once (``TokenTemplates``)."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys
        self.templates = TokenTemplates()

    def key_for(self, policy: SecurityPolicy | None = None) -> KeyPair:
        """The signing key that suits the policy (the first key without one); ConfigError when none does."""
        return self.keys.signing_key(policy)

    def signal(self, signal: SignalMessage, policy: SecurityPolicy, soap_version: SoapVersion) -> bytes:
        """A receipt, error or PullRequest signed under the policy."""
        return signed_signal(signal, self.key_for(policy), policy, soap_version, templates=self.templates)

    def error(
        self, error: EbmsError, policy: SecurityPolicy | None, soap_version: SoapVersion, *, at: datetime
    ) -> bytes:
        """The signed error signal for a refused message, signed as its leg's profile signs where one is known
        (Ed25519 on a 2.0 leg), else with the first key."""
        try:
            keys = self.key_for(policy)
        except ConfigError:
            keys, policy = self.key_for(), None
        return error_response(
            error, keys=keys, policy=policy, soap_version=soap_version, at=at, templates=self.templates
        )

    def secure(
        self,
        user: UserMessage,
        payloads: Sequence[Payload],
        route: Route,
        soap_version: SoapVersion,
        spool: SpoolFactory | None = None,
    ) -> SecuredMessage:
        """``secure_message`` for the route: compressed (once, into ``spool``'s files when given), signed,
        encrypted to the partner, packed."""
        return secure_message(
            user,
            payloads,
            route.security,
            signing_key=self.key_for(route.security),
            recipient_certificate=route.partner_encryption_certificate,
            soap_version=soap_version,
            templates=self.templates,
            spool=spool,
        )


class Verifier:
    """Checks what partners send: decryption keys, decoded tokens, trust decisions, revocation lookups."""

    def __init__(self, keys: KeyRing, revocation: Revocation | None) -> None:
        self.decryption_keys = keys.decryption_keys()
        self.revocation = revocation
        self.tokens = TokenCache()
        self.trust = TrustCache()

    async def validated(self, check: Callable[[KnownStatus | None], _T]) -> _T:
        """Run a synchronous check that may ask about revocation: with the lookups it needs made first (bounded
        wait, see ``msh.revocation``), or without revocation when checking is off."""
        if self.revocation is None:
            return check(None)

        async def run(known: KnownStatus) -> _T:
            return check(known)

        return await self.revocation.validate(run)

    async def signal(self, received: ReceivedMessage, route: Route, *, at: datetime) -> VerifiedSignature | None:
        """A signal's signature, by the route's partner and trusted (``receiving.verify_signal``)."""
        return await self.validated(
            lambda known: verify_signal(
                received, route, at=at, revocation=known, tokens=self.tokens, trust_cache=self.trust
            )
        )

    def receipt(
        self, received: ReceivedMessage, route: Route, *, message_id: str, references: Sequence[ReferenceEcho]
    ) -> VerifiedReceipt:
        """A receipt that proves delivery of what was sent (``security.receipts.verify_receipt``)."""
        partner = [c for c in (route.partner_signing_certificate,) if c is not None]
        return verify_receipt(
            received.parsed,
            route.security,
            sent_message_id=message_id,
            sent_references=references,
            partner_certificates=partner,
            tokens=self.tokens,
        )

    async def certificate(
        self,
        certificate: x509.Certificate,
        trust: TrustSettings,
        *,
        usage: CertificateUsage,
        party_id: str | None,
        at: datetime,
    ) -> TrustResult:
        """Trust in a partner's configured or discovered certificate (TrustError when there is none)."""

        def check(known: KnownStatus | None) -> TrustResult:
            return validate_certificate(certificate, (), trust, at=at, usage=usage, revocation=known, party_id=party_id)

        if self.revocation is None:
            return check(None)

        async def run(known: KnownStatus) -> TrustResult:
            # Path building checks signatures on certificates: in a thread, like the rest of the crypto.
            return await asyncio.to_thread(check, known)

        return await self.revocation.validate(run)
