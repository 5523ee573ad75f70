"""Holders' e-ID for tests and benchmarks: a development e-ID CA, holders' key pairs, signed agreement texts.

Built on the product's development issuer (``accesspoint.keys_cli.EidIssuer``), which the demo uses too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cached_property

from cryptography import x509

from accesspoint.envelopes.identity import SignatureData, new_nonce, sign_assertion
from accesspoint.keys_cli import EidIssuer
from accesspoint.security.keys import KeyPair


class EidCa:
    """An e-ID CA whose holders are made on demand and remembered by identity."""

    def __init__(self, name: str = "Test e-ID CA") -> None:
        self.issuer = EidIssuer.create(name, now=datetime(2020, 1, 1, tzinfo=UTC), days=365 * 30)
        self._holders: dict[str, KeyPair] = {}

    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate (the e-ID anchor to trust)."""
        return self.issuer.certificate

    @cached_property
    def pem(self) -> bytes:
        """The CA certificate as PEM."""
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.issuer.certificate.public_bytes(Encoding.PEM)

    def holder(self, identity: str, name: str | None = None, *, expired: bool = False) -> KeyPair:
        """The holder's key pair (an expired certificate when asked: valid in 2021 only)."""
        key = f"{identity}/expired" if expired else identity
        if key not in self._holders:
            window = (
                (datetime(2021, 1, 1, tzinfo=UTC), datetime(2021, 12, 31, tzinfo=UTC))
                if expired
                else (datetime(2020, 1, 2, tzinfo=UTC), datetime(2049, 1, 1, tzinfo=UTC))
            )
            private, certificate = self.issuer.holder(
                identity, name or f"Holder {identity}", not_before=window[0], not_after=window[1]
            )
            self._holders[key] = KeyPair(private, certificate, (self.issuer.certificate,))
        return self._holders[key]

    def sign(
        self,
        text: str,
        identity: str,
        *,
        at: datetime | None = None,
        expired: bool = False,
        age: timedelta | None = None,
    ) -> SignatureData:
        """``identity``'s signature over ``text`` with a nonce dated ``at`` (now) minus ``age``."""
        moment = at or datetime.now(UTC)
        nonce = new_nonce(moment - (age or timedelta(0)))
        return sign_assertion(text, self.holder(identity, expired=expired), at=moment, nonce=nonce)

    def signed(self, text: str, *identities: str, at: datetime | None = None) -> list[dict[str, str | None]]:
        """The REST form of each identity's signature over ``text``."""
        return [self.sign(text, identity, at=at).to_json() for identity in identities]
