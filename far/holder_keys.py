"""Holders' encryption keys in FaR: registered by the holder's operator, published with reachability.

A sender encrypts a letter's content to the holder's *current* key (CMS, accesspoint/security/cms.py), so routers
and operators carry ciphertext only. The holder's operator registers the certificate (its client made the key
pair and deposited the private key in the key archive); a newer key makes the earlier one *previous*: still
listed (old mail was encrypted to it), never published for new mail. Only the operator FaR has on record for the
holder may change the holder's keys (``write:operator=<orgnr>`` tokens, or ``write`` for an administrator);
every change is audited as ``holder-key``.

Certificates are checked with the shared rule set (accesspoint/security/holder_keys.py): RSA of 2048 bits or
more with keyEncipherment, or X25519 with keyAgreement, no signing usage, valid now.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from accesspoint.security.holder_keys import HolderKeyRefused, check_holder_certificate
from far.identifiers import InvalidIdentifier, Policy, parse_recipient
from far.model import audit, holder_keys, recipients
from far.service import InvalidInput, NotFound


class KeyState(StrEnum):
    """Where a holder key is in its life."""

    CURRENT = "current"  # published: new mail is encrypted to it
    PREVIOUS = "previous"  # replaced by a newer key; old mail still needs it
    REVOKED = "revoked"  # withdrawn by the operator: never published again


class ForeignHolder(Exception):
    """The caller's operator is not the holder's operator on record (a 403 with an audited refusal)."""

    def __init__(self, recipient: str, operator: str | None) -> None:
        self.recipient, self.operator = recipient, operator
        super().__init__(f"{recipient} is not a holder of operator {operator or '(none)'}")


@dataclass(frozen=True, slots=True)
class HolderKey:
    """One registered key: its id (certificate SHA-256), type, state, certificate and who registered it when."""

    recipient: str
    key_id: str
    key_type: str
    state: KeyState
    certificate: x509.Certificate
    operator: str
    registered_at: datetime
    not_after: datetime

    def to_json(self) -> dict[str, Any]:
        """The REST form; the certificate as PEM."""
        return {
            "recipient": self.recipient,
            "key_id": self.key_id,
            "key_type": self.key_type,
            "state": self.state.value,
            "certificate": self.certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "operator": self.operator,
            "registered_at": self.registered_at.isoformat(),
            "not_after": self.not_after.isoformat(),
        }

    def published(self) -> dict[str, Any]:
        """What reachability answers carry: key id, type, certificate, validity end."""
        document = self.to_json()
        return {k: document[k] for k in ("key_id", "key_type", "certificate", "not_after")}


def parse_certificate(text: object) -> x509.Certificate:
    """A PEM (or base64 DER) certificate from a request; InvalidInput naming ``certificate`` otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("certificate is required (PEM)", field="certificate")
    try:
        if "-----BEGIN CERTIFICATE-----" in text:
            return x509.load_pem_x509_certificate(text.encode())
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise InvalidInput("certificate is not a PEM or base64 DER X.509 certificate", field="certificate") from None


def _row_key(row: Any) -> HolderKey:
    return HolderKey(
        recipient=row.recipient_id,
        key_id=row.key_id,
        key_type=row.key_type,
        state=KeyState(row.state),
        certificate=x509.load_pem_x509_certificate(row.certificate.encode()),
        operator=row.operator_id,
        registered_at=_aware(row.registered_at),
        not_after=_aware(row.not_after),
    )


def _aware(moment: Any) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class HolderKeyRegister:
    """Register, list, withdraw and publish holders' encryption keys over FaR's engine."""

    def __init__(self, engine: AsyncEngine, *, policy: Policy, now: Callable[[], datetime]) -> None:
        self.engine, self.policy, self.now = engine, policy, now

    def recipient(self, value: str) -> str:
        """The recipient id as FaR keys it; InvalidInput otherwise."""
        try:
            parse_recipient(value, self.policy)
        except InvalidIdentifier as exc:
            raise InvalidInput(f"recipient: {exc.reason}", field="recipient") from None
        return value

    async def operator_of(self, recipient: str) -> str | None:
        """The holder's operator on record; NotFound for a recipient FaR does not know."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(recipients.c.operator_id).where(recipients.c.id == recipient))).first()
        if row is None:
            raise NotFound(f"recipient {recipient} is not in FaR")
        return None if row[0] is None else str(row[0])

    async def register(self, recipient: str, certificate: x509.Certificate, *, operator: str, actor: str) -> HolderKey:
        """Make ``certificate`` the holder's current key (the current one becomes previous); audited.

        ``operator`` is the operator on whose behalf the caller writes; ForeignHolder when FaR has another.
        """
        on_record = await self.operator_of(recipient)
        if on_record != operator:
            await self.refusal(recipient, actor, f"not the holder's operator ({operator})")
            raise ForeignHolder(recipient, operator)
        now = self.now()
        try:
            info = check_holder_certificate(certificate, now=now)
        except HolderKeyRefused as exc:
            raise InvalidInput(f"certificate: {exc} ({exc.rule})", field="certificate") from None
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        async with self.engine.begin() as conn:
            existing = (
                await conn.execute(
                    select(holder_keys.c.state).where(
                        holder_keys.c.recipient_id == recipient, holder_keys.c.key_id == info.key_id
                    )
                )
            ).first()
            if existing is not None and existing[0] == KeyState.REVOKED:
                raise InvalidInput("certificate: this key was revoked and cannot come back", field="certificate")
            await conn.execute(
                update(holder_keys)
                .where(holder_keys.c.recipient_id == recipient, holder_keys.c.state == KeyState.CURRENT)
                .values(state=KeyState.PREVIOUS)
            )
            values = {
                "key_type": info.key_type.value,
                "state": KeyState.CURRENT.value,
                "certificate": pem,
                "operator_id": operator,
                "registered_at": now,
                "not_after": info.not_after,
            }
            if existing is None:
                await conn.execute(holder_keys.insert().values(recipient_id=recipient, key_id=info.key_id, **values))
            else:
                await conn.execute(
                    update(holder_keys)
                    .where(holder_keys.c.recipient_id == recipient, holder_keys.c.key_id == info.key_id)
                    .values(**values)
                )
            await self._audit(conn, actor, "create", recipient, {"key_id": info.key_id, "key_type": info.key_type})
        return (await self.keys(recipient))[0]

    async def revoke(self, recipient: str, key_id: str, *, operator: str, actor: str) -> None:
        """Withdraw a key: never published again (a previous key, if any, does not become current)."""
        on_record = await self.operator_of(recipient)
        if on_record != operator:
            await self.refusal(recipient, actor, f"not the holder's operator ({operator})")
            raise ForeignHolder(recipient, operator)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(holder_keys)
                .where(holder_keys.c.recipient_id == recipient, holder_keys.c.key_id == key_id)
                .values(state=KeyState.REVOKED)
            )
            if not result.rowcount:
                raise NotFound(f"{recipient} has no key {key_id}")
            await self._audit(conn, actor, "delete", recipient, {"key_id": key_id, "state": "revoked"})

    async def keys(self, recipient: str) -> list[HolderKey]:
        """Every key of the holder: the current one first, then by registration, newest first."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(holder_keys)
                    .where(holder_keys.c.recipient_id == recipient)
                    .order_by(holder_keys.c.registered_at.desc())
                )
            ).all()
        found = [_row_key(row) for row in rows]
        return sorted(found, key=lambda k: k.state is not KeyState.CURRENT)

    async def current(self, recipients_: Sequence[str]) -> dict[str, HolderKey]:
        """The current, unexpired key of each holder that has one (at most 1,000 holders, one query)."""
        if not recipients_:
            return {}
        now = self.now()
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(holder_keys).where(
                        holder_keys.c.recipient_id.in_(sorted(set(recipients_))),
                        holder_keys.c.state == KeyState.CURRENT,
                    )
                )
            ).all()
        keys = (_row_key(row) for row in rows)
        return {key.recipient: key for key in keys if key.not_after >= now}

    async def refusal(self, recipient: str, actor: str, why: str) -> None:
        """Audit a refused write (who tried to change whose keys)."""
        async with self.engine.begin() as conn:
            await self._audit(conn, actor, "refuse", recipient, {"refused": why})

    async def _audit(self, conn: Any, actor: str, action: str, recipient: str, detail: Any) -> None:
        await conn.execute(
            audit.insert().values(
                at=self.now(),
                actor=actor[:128],
                action=action,
                entity="holder-key",
                entity_id=recipient,
                detail=json.dumps(detail, sort_keys=True, default=str),
            )
        )
