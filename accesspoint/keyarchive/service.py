"""The key archive's rules: who may deposit, receive and delete holder keys, and how administrators act.

- **Deposit** (the holder's client, after e-ID authentication): the holder's private key and its certificate;
  the key is checked against the certificate and the holder key rules, wrapped in the token under the current
  master key (the plaintext is dropped at once) and kept with every earlier key: a rotation keeps old keys for
  old mail.
- **Release** only to the authenticated holder: the client sends a one-time X25519 public key it generated, bound
  into the e-ID proof; each of the holder's keys is unwrapped in the token and at once encrypted (CMS) to that
  client key. Neither an operator nor an administrator sees a holder's private key.
- **Deletion** on the holder's request (e-ID): the wrapped keys are erased, the rows kept as a record.
- **Administration** (rotate the master key, export the wrapped keys for backup, force a deletion) needs two
  people: one proposes, another approves; the proposer's own approval is refused. Acts expire unapproved.
- **Rate limits**: releases per holder, failed authentications per holder and acts per administrator, each
  within a window, counted from the audit log (so a restart forgets nothing).
- **Audit**: every deposit, release, deletion, refusal, proposal and approval is appended to the hash-chained
  log (auditlog.py); ``verify`` walks the chain.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accesspoint.keyarchive import eid
from accesspoint.keyarchive.auditlog import GENESIS, AuditEntry, ChainReport, entry_hash, verify_chain
from accesspoint.keyarchive.master import MasterKeyError, MasterKeys
from accesspoint.keyarchive.model import acts, audit, challenges, keys, masters
from accesspoint.security import cms
from accesspoint.security.holder_keys import HolderKeyRefused, check_holder_certificate

ADMIN_ACTIONS = frozenset({"rotate-master-key", "export", "force-delete"})


class ArchiveError(Exception):
    """A refusal with its HTTP status; ``detail`` is what the caller is told."""

    status = 400

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        self.detail, self.retry_after = detail, retry_after
        super().__init__(detail)


class Invalid(ArchiveError):
    """Malformed or unusable input."""


class Refused(ArchiveError):
    """Not allowed: authentication failed, or the two-person rule."""

    status = 403


class NotFound(ArchiveError):
    """No such holder key or act."""

    status = 404


class Conflict(ArchiveError):
    """The act is no longer pending."""

    status = 409


class RateLimited(ArchiveError):
    """Too many attempts in the window."""

    status = 429


@dataclass(frozen=True, slots=True)
class Limits:
    """How much may happen within ``window``: releases and failed authentications per holder, acts per admin."""

    releases: int = 5
    failures: int = 10
    admin_acts: int = 20
    window: timedelta = timedelta(hours=1)
    challenge_ttl: timedelta = timedelta(minutes=5)
    act_ttl: timedelta = timedelta(hours=1)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def client_key_binding(public: bytes) -> str:
    """What a release proof binds: the SHA-256 (hex) of the client's raw X25519 public key."""
    return hashlib.sha256(public).hexdigest()


@dataclass
class KeyArchive:
    """The archive over one database and one token of master keys."""

    engine: AsyncEngine
    masters_: MasterKeys
    anchors: Sequence[x509.Certificate]
    limits: Limits = field(default_factory=Limits)
    master_base: str = "archive-master"
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _append_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # ------------------------------------------------------------------------------------------------ setup

    async def start(self) -> str:
        """The current master key's label; the first start makes one in the token (audited)."""
        current = await self._current_master()
        if current is not None:
            return current
        label = f"{self.master_base}-1"
        if not await asyncio.to_thread(self.masters_.exists, label):
            await asyncio.to_thread(self.masters_.generate, label)
        async with self.engine.begin() as conn:
            await conn.execute(masters.insert().values(label=label, created_at=_iso(self.now()), state="current"))
            await self._append(conn, "setup", "master-key-created", "archive", {"label": label})
        return label

    async def _current_master(self) -> str | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(masters.c.label).where(masters.c.state == "current"))).first()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------------------------------- holders

    async def challenge(self) -> tuple[str, datetime]:
        """A fresh single-use challenge for an e-ID proof, and when it expires."""
        value = secrets.token_urlsafe(32)
        expires = self.now() + self.limits.challenge_ttl
        async with self.engine.begin() as conn:
            await conn.execute(challenges.insert().values(challenge=value, expires_at=_iso(expires), used=0))
        return value, expires

    async def _authenticate(
        self, purpose: str, holder: str, challenge: str, proof: eid.EidProof, binding: str = ""
    ) -> str:
        """The e-ID certificate's SHA-256 when the proof authenticates ``holder``; refusals audited."""
        await self._limit(holder, ("auth-refused",), self.limits.failures, "failed authentications")
        async with self.engine.begin() as conn:
            used = await conn.execute(
                update(challenges)
                .where(
                    challenges.c.challenge == challenge,
                    challenges.c.used == 0,
                    challenges.c.expires_at >= _iso(self.now()),
                )
                .values(used=1)
            )
        fingerprint = hashlib.sha256(proof.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        try:
            if not used.rowcount:
                raise eid.EidRefused("the challenge is unknown, used or expired")
            eid.verify_proof(
                proof,
                purpose=purpose,
                holder=holder,
                challenge=challenge,
                binding=binding,
                anchors=self.anchors,
                now=self.now(),
            )
        except eid.EidRefused as exc:
            async with self.engine.begin() as conn:
                detail = {
                    "purpose": purpose,
                    "why": str(exc),
                    "eid": fingerprint,
                    "person": eid.person(proof.certificate),
                }
                await self._append(conn, f"eid:{eid.person(proof.certificate) or '?'}", "auth-refused", holder, detail)
            raise Refused("e-ID authentication failed") from None
        return fingerprint

    async def deposit(
        self, holder: str, challenge: str, proof: eid.EidProof, private_key: bytes, certificate: x509.Certificate
    ) -> dict[str, Any]:
        """Keep the holder's key (PKCS#8 DER) wrapped under the current master key; what was kept."""
        fingerprint = await self._authenticate("deposit", holder, challenge, proof)
        try:
            info = check_holder_certificate(certificate, now=self.now())
        except HolderKeyRefused as exc:
            raise Invalid(f"certificate: {exc} ({exc.rule})") from None
        try:
            key = serialization.load_der_private_key(private_key, None)
        except (ValueError, TypeError):
            raise Invalid("private_key: not an unencrypted PKCS#8 DER key") from None
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        public_der = key.public_key().public_bytes(serialization.Encoding.DER, spki)
        if public_der != certificate.public_key().public_bytes(serialization.Encoding.DER, spki):
            raise Invalid("private_key: does not belong to the certificate")
        label = await self.start()
        wrapped = await asyncio.to_thread(self.masters_.wrap, label, private_key, _aad(holder, info.key_id))
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        async with self.engine.begin() as conn:
            found = (
                await conn.execute(select(keys.c.state).where(keys.c.holder == holder, keys.c.key_id == info.key_id))
            ).first()
            values = {"key_type": info.key_type.value, "certificate": pem, "wrapped": wrapped, "master": label,
                      "state": "active", "deposited_at": _iso(self.now())}  # fmt: skip
            if found is None:
                await conn.execute(keys.insert().values(holder=holder, key_id=info.key_id, **values))
            else:
                await conn.execute(
                    update(keys).where(keys.c.holder == holder, keys.c.key_id == info.key_id).values(**values)
                )
            detail = {"key_id": info.key_id, "key_type": info.key_type.value, "eid": fingerprint}
            await self._append(conn, f"eid:{holder}", "deposit", holder, detail)
        return {"holder": holder, "key_id": info.key_id, "key_type": info.key_type.value}

    async def release(
        self, holder: str, challenge: str, proof: eid.EidProof, client_key: bytes
    ) -> list[dict[str, Any]]:
        """Every active key of the holder, each as a CMS message to the client's one-time X25519 key."""
        try:
            client = x25519.X25519PublicKey.from_public_bytes(client_key)
        except ValueError:
            raise Invalid("client_key: a raw X25519 public key (32 bytes, base64)") from None
        binding = client_key_binding(client_key)
        await self._limit(holder, ("release",), self.limits.releases, "releases")
        fingerprint = await self._authenticate("release", holder, challenge, proof, binding)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(keys)
                    .where(keys.c.holder == holder, keys.c.state == "active")
                    .order_by(keys.c.deposited_at.desc())
                )
            ).all()
        recipient = cms.Recipient.from_public_key(client, bytes.fromhex(binding)[:20])
        packages = []
        for row in rows:
            try:
                plain = await asyncio.to_thread(self.masters_.unwrap, row.master, row.wrapped, _aad(holder, row.key_id))
            except MasterKeyError as exc:
                raise ArchiveError(f"key {row.key_id} cannot be unwrapped: {exc}") from None
            package = await asyncio.to_thread(cms.encrypt, plain, [recipient])
            del plain
            packages.append(
                {"key_id": row.key_id, "key_type": row.key_type, "certificate": row.certificate,
                 "deposited_at": row.deposited_at, "package": base64.b64encode(package).decode()}
            )  # fmt: skip
        async with self.engine.begin() as conn:
            detail = {"keys": [p["key_id"] for p in packages], "eid": fingerprint, "client_key": binding}
            await self._append(conn, f"eid:{holder}", "release", holder, detail)
        return packages

    async def delete(self, holder: str, challenge: str, proof: eid.EidProof) -> int:
        """Erase the holder's wrapped keys at their request; how many there were."""
        fingerprint = await self._authenticate("delete", holder, challenge, proof)
        async with self.engine.begin() as conn:
            return await self._erase(conn, holder, f"eid:{holder}", {"eid": fingerprint})

    async def _erase(self, conn: AsyncConnection, holder: str, actor: str, detail: dict[str, Any]) -> int:
        result = await conn.execute(
            update(keys).where(keys.c.holder == holder, keys.c.state == "active").values(state="deleted", wrapped=None)
        )
        await self._append(conn, actor, "delete", holder, {**detail, "keys": result.rowcount})
        return int(result.rowcount)

    # --------------------------------------------------------------------------------------- administrators

    async def propose(self, admin: str, action: str, subject: str = "archive") -> dict[str, Any]:
        """An administrative act waiting for a second administrator."""
        if action not in ADMIN_ACTIONS:
            raise Invalid(f"action: one of {', '.join(sorted(ADMIN_ACTIONS))}")
        if action == "force-delete" and subject == "archive":
            raise Invalid("subject: the holder whose keys are to be deleted")
        await self._limit(f"admin:{admin}", ("propose", "approve"), self.limits.admin_acts, "administrative acts")
        act_id = secrets.token_hex(16)
        async with self.engine.begin() as conn:
            await conn.execute(
                acts.insert().values(
                    id=act_id, action=action, subject=subject, proposer=admin, proposed_at=_iso(self.now()),
                    state="pending",
                )
            )  # fmt: skip
            await self._append(conn, f"admin:{admin}", "propose", f"admin:{admin}", {"act": act_id, "action": action,
                                                                                    "subject": subject})  # fmt: skip
        return {"id": act_id, "action": action, "subject": subject, "state": "pending", "proposer": admin}

    async def approve(self, admin: str, act_id: str) -> dict[str, Any]:
        """Carry out a pending act approved by a second administrator; the proposer's approval is refused."""
        await self._limit(f"admin:{admin}", ("propose", "approve"), self.limits.admin_acts, "administrative acts")
        async with self.engine.connect() as conn:
            act = (await conn.execute(select(acts).where(acts.c.id == act_id))).first()
        if act is None:
            raise NotFound(f"no act {act_id}")
        if act.state != "pending":
            raise Conflict(f"act {act_id} is {act.state}")
        if datetime.fromisoformat(act.proposed_at) + self.limits.act_ttl < self.now():
            async with self.engine.begin() as conn:
                await conn.execute(update(acts).where(acts.c.id == act_id).values(state="expired"))
            raise Conflict(f"act {act_id} expired unapproved")
        if admin == act.proposer:
            async with self.engine.begin() as conn:
                detail = {"act": act_id, "action": act.action, "why": "the proposer cannot approve (two-person rule)"}
                await self._append(conn, f"admin:{admin}", "approve-refused", f"admin:{admin}", detail)
            raise Refused("two-person rule: another administrator must approve this act")
        result = await self._carry_out(act.action, act.subject, f"admin:{admin}+{act.proposer}")
        async with self.engine.begin() as conn:
            await conn.execute(
                update(acts)
                .where(acts.c.id == act_id, acts.c.state == "pending")
                .values(state="done", approver=admin, decided_at=_iso(self.now()))
            )
            detail = {"act": act_id, "action": act.action, "subject": act.subject, "proposer": act.proposer}
            await self._append(conn, f"admin:{admin}", "approve", f"admin:{admin}", detail)
        return {"id": act_id, "action": act.action, "state": "done", "result": result}

    async def _carry_out(self, action: str, subject: str, actors: str) -> Any:
        if action == "force-delete":
            async with self.engine.begin() as conn:
                return {"deleted": await self._erase(conn, subject, actors, {"forced": True})}
        if action == "export":
            async with self.engine.connect() as conn:
                rows = (await conn.execute(select(keys).where(keys.c.state == "active"))).all()
            async with self.engine.begin() as conn:
                await self._append(conn, actors, "export", "archive", {"keys": len(rows)})
            # Wrapped keys only: without the token's master key they are ciphertext.
            return [
                {"holder": r.holder, "key_id": r.key_id, "master": r.master, "certificate": r.certificate,
                 "wrapped": base64.b64encode(r.wrapped).decode()}
                for r in rows
            ]  # fmt: skip
        return await self._rotate_master(actors)

    async def _rotate_master(self, actors: str) -> dict[str, Any]:
        old = await self.start()
        number = int(old.rsplit("-", 1)[1]) + 1 if old.rsplit("-", 1)[-1].isdigit() else 2
        new = f"{self.master_base}-{number}"
        await asyncio.to_thread(self.masters_.generate, new)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(keys).where(keys.c.state == "active"))).all()
        rewrapped = []
        for row in rows:
            aad = _aad(row.holder, row.key_id)
            plain = await asyncio.to_thread(self.masters_.unwrap, row.master, row.wrapped, aad)
            rewrapped.append((row.holder, row.key_id, await asyncio.to_thread(self.masters_.wrap, new, plain, aad)))
            del plain
        async with self.engine.begin() as conn:
            for holder, key_id, blob in rewrapped:
                await conn.execute(
                    update(keys)
                    .where(keys.c.holder == holder, keys.c.key_id == key_id)
                    .values(wrapped=blob, master=new)
                )
            await conn.execute(update(masters).where(masters.c.label == old).values(state="retired"))
            await conn.execute(masters.insert().values(label=new, created_at=_iso(self.now()), state="current"))
            await self._append(conn, actors, "rotate-master-key", "archive", {"from": old, "to": new,
                                                                            "keys": len(rewrapped)})  # fmt: skip
        return {"from": old, "to": new, "rewrapped": len(rewrapped)}

    # ------------------------------------------------------------------------------------------------ audit

    async def _limit(self, subject: str, actions: tuple[str, ...], limit: int, what: str) -> None:
        since = _iso(self.now() - self.limits.window)
        async with self.engine.connect() as conn:
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(audit)
                    .where(audit.c.subject == subject, audit.c.action.in_(actions), audit.c.at >= since)
                )
            ).scalar_one()
        if count >= limit:
            seconds = int(self.limits.window.total_seconds())
            raise RateLimited(f"too many {what} for {subject} (at most {limit} in {seconds} s)", retry_after=seconds)

    async def _append(self, conn: AsyncConnection, actor: str, action: str, subject: str, detail: Any) -> None:
        """Append to the chain inside the caller's transaction (one writer at a time in this process)."""
        async with self._append_lock:
            last = (await conn.execute(select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1))).first()
            seq, previous = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
            at = _iso(self.now())
            detail = json.loads(json.dumps(detail, default=str))
            digest = entry_hash(previous, seq, at, actor, action, subject, detail)
            await conn.execute(
                audit.insert().values(
                    seq=seq, at=at, actor=actor, action=action, subject=subject,
                    detail=json.dumps(detail, sort_keys=True), prev_hash=previous, hash=digest,
                )
            )  # fmt: skip

    async def entries(self) -> list[AuditEntry]:
        """The whole log in sequence order."""
        return await read_entries(self.engine)

    async def verify(self, expect_head: str | None = None) -> ChainReport:
        """Walk the chain."""
        return verify_chain(await self.entries(), expect_head=expect_head)


def _aad(holder: str, key_id: str) -> bytes:
    return f"keyarchive:{holder}:{key_id}".encode()


async def read_entries(engine: AsyncEngine) -> list[AuditEntry]:
    """The audit log from a database, in sequence order (what ``keyarchive verify-log`` checks)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(audit).order_by(audit.c.seq))).all()
    return [
        AuditEntry(r.seq, r.at, r.actor, r.action, r.subject, json.loads(r.detail), r.prev_hash, r.hash) for r in rows
    ]
