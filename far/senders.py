"""The sender register: every organisation allowed to send digital post, and how it is connected.

Shaped on the contracts' ``Dispatcher`` (``Id``, ``Name``, ``Senders``: an intermediary or service provider and the
senders it sends for; ``schema/Dispatcher.xsd``), widened from ``16`` + organisationsnummer to general party ids
(:mod:`far.parties`). A sender record says:

- ``id`` (canonical party id), ``name`` (2 to 256 characters, as ``Dispatcher/Name``) and ``support`` (what the
  recipient is told where to get help: ``text``, ``url``, ``phone``, ``email``, as ``SupportInfo``);
- ``status``: ``active`` or ``suspended`` (a suspended sender's letters are refused, its record kept);
- ``access_points``: the AS4 access points allowed to submit on its behalf, each its PartyId and the SHA-256 of
  the certificate it signs AS4 messages with (what the router's security layer verified);
- ``signing_certificates``: SHA-256 of the certificates the sender signs its own deliveries with (the
  SignedDelivery of Mina meddelanden, a signed XHE of SDK): the router seals only what one of these signed;
- ``networks``: ``minameddelanden``, ``sdk``, ``cross-border`` — the networks it sends through;
- ``dispatches_for``: the senders this one sends for as an intermediary or service provider (``Senders``); its
  access points then count as theirs.

The router reads a sender with its dispatchers (:meth:`SenderRegister.get`, REST ``GET /api/v1/senders/{id}``)
and decides on that (``accesspoint/routing/decision.py``). Every change is audited (entity ``sender``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from far.identifiers import InvalidIdentifier
from far.model import audit, dispatched_senders, sender_access_points, senders
from far.parties import STRICT_PARTIES, PartyPolicy, parse_party_id
from far.service import Conflict, InvalidInput, NotFound

_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_ACCESS_POINTS = 100
MAX_DISPATCHED = 10_000


class SenderStatus(StrEnum):
    """Whether a sender may send now."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


class SenderNetwork(StrEnum):
    """The networks a sender's letters travel: Mina meddelanden style (SignedDelivery), SDK (XHE), cross-border."""

    MINA_MEDDELANDEN = "minameddelanden"
    SDK = "sdk"
    CROSS_BORDER = "cross-border"


@dataclass(frozen=True, slots=True)
class AccessPoint:
    """An access point allowed to submit for a sender: its AS4 PartyId and its signing certificate's SHA-256."""

    party_id: str
    certificate_sha256: str

    def to_json(self) -> dict[str, str]:
        """As the REST API shows it."""
        return {"party_id": self.party_id, "certificate_sha256": self.certificate_sha256}


@dataclass(frozen=True, slots=True)
class Support:
    """Where a recipient gets help with the sender's letters (Mina meddelanden's SupportInfo)."""

    text: str
    url: str | None = None
    phone: str | None = None
    email: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """As the REST API shows it."""
        return {"text": self.text, "url": self.url, "phone": self.phone, "email": self.email}


@dataclass(frozen=True, slots=True)
class Sender:
    """A sender record as stored (see the module docstring)."""

    id: str
    name: str
    status: SenderStatus = SenderStatus.ACTIVE
    networks: tuple[SenderNetwork, ...] = ()
    access_points: tuple[AccessPoint, ...] = ()
    signing_certificates: tuple[str, ...] = ()
    support: Support | None = None
    dispatches_for: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        """Whether its letters are accepted."""
        return self.status is SenderStatus.ACTIVE

    def to_json(self) -> dict[str, Any]:
        """As the REST API shows it (and the import takes it)."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "networks": [n.value for n in self.networks],
            "access_points": [a.to_json() for a in self.access_points],
            "signing_certificates": list(self.signing_certificates),
            "support": None if self.support is None else self.support.to_json(),
            "dispatches_for": list(self.dispatches_for),
        }


@dataclass(frozen=True, slots=True)
class SenderView:
    """A sender with the dispatchers that send for it: what the router decides on."""

    sender: Sender
    dispatchers: tuple[Sender, ...] = ()

    def connected(self) -> tuple[tuple[str, AccessPoint], ...]:
        """Every access point that may submit for the sender, with whose it is: its own, and those of each active
        dispatcher that sends for it."""
        own = tuple((self.sender.id, ap) for ap in self.sender.access_points)
        return own + tuple((d.id, ap) for d in self.dispatchers if d.active for ap in d.access_points)

    def to_json(self) -> dict[str, Any]:
        """The sender's record plus ``dispatchers`` (each the dispatcher's record)."""
        return {**self.sender.to_json(), "dispatchers": [d.to_json() for d in self.dispatchers]}

    @classmethod
    def from_json(cls, document: dict[str, Any], policy: PartyPolicy = STRICT_PARTIES) -> SenderView:
        """Read the REST form back (InvalidInput when malformed)."""
        dispatchers = document.get("dispatchers") or []
        if not isinstance(dispatchers, list):
            raise InvalidInput("dispatchers: a list", field="dispatchers")
        return cls(
            parse_sender(document, policy=policy),
            tuple(parse_sender(item, policy=policy) for item in dispatchers if isinstance(item, dict)),
        )


# ------------------------------------------------------------------------------------------------- parsing

_FIELDS = frozenset(
    {"id", "name", "status", "networks", "access_points", "signing_certificates", "support", "dispatches_for"}
)


def _text(value: Any, name: str, *, low: int = 1, high: int = 256, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidInput(f"{name} is required", field=name)
        return None
    if not isinstance(value, str) or not low <= len(value) <= high or not value.isprintable():
        raise InvalidInput(f"{name} is {low} to {high} printable characters", field=name)
    return value


def _list(value: Any, name: str, limit: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{name} is a list", field=name)
    if len(value) > limit:
        raise InvalidInput(f"{name}: at most {limit}", field=name)
    return value


def fingerprint(value: Any, name: str) -> str:
    """A certificate's SHA-256 as 64 lower-case hex digits (colons and upper case accepted on input)."""
    text = value.replace(":", "").lower() if isinstance(value, str) else ""
    if not _SHA256.fullmatch(text):
        raise InvalidInput(f"{name}: a SHA-256 fingerprint, 64 hex digits", field=name)
    return text


def _party(value: Any, name: str, policy: PartyPolicy) -> str:
    try:
        return parse_party_id(value, policy)
    except InvalidIdentifier as exc:
        raise InvalidInput(f"{name} {exc.value[:64]!r}: {exc.reason}", field=name) from None


def parse_sender(document: Any, *, sender_id: str | None = None, policy: PartyPolicy = STRICT_PARTIES) -> Sender:
    """A sender record from its JSON form (the REST body, a JSON lines row); InvalidInput naming the field.

    ``sender_id`` is the id the path names (then the body's ``id``, if any, must be the same sender).
    """
    if not isinstance(document, dict):
        raise InvalidInput("a sender is a JSON object")
    unknown = set(document) - _FIELDS - {"dispatchers"}
    if unknown:
        name = sorted(map(str, unknown))[0]
        raise InvalidInput(f"unknown field {name}", field=name)
    given = document.get("id")
    identifier = _party(sender_id if sender_id is not None else given, "id", policy)
    if sender_id is not None and given is not None and _party(given, "id", policy) != identifier:
        raise InvalidInput("id: the body names another sender than the path", field="id")
    try:
        status = SenderStatus(document.get("status") or SenderStatus.ACTIVE.value)
    except ValueError:
        raise InvalidInput("status is active or suspended", field="status") from None
    networks = []
    for item in _list(document.get("networks"), "networks", 10):
        try:
            networks.append(SenderNetwork(item))
        except ValueError:
            known = ", ".join(n.value for n in SenderNetwork)
            raise InvalidInput(f"networks: {str(item)[:32]!r} is none of {known}", field="networks") from None
    access_points = []
    for index, item in enumerate(_list(document.get("access_points"), "access_points", MAX_ACCESS_POINTS)):
        where = f"access_points[{index}]"
        if not isinstance(item, dict) or set(item) - {"party_id", "certificate_sha256"}:
            raise InvalidInput(f"{where}: {{party_id, certificate_sha256}}", field="access_points")
        party_id = _text(item.get("party_id"), f"{where}.party_id", high=512)
        assert party_id is not None
        access_points.append(AccessPoint(party_id, fingerprint(item.get("certificate_sha256"), where)))
    signing = [
        fingerprint(item, f"signing_certificates[{index}]")
        for index, item in enumerate(_list(document.get("signing_certificates"), "signing_certificates", 100))
    ]
    dispatched = [
        _party(item, f"dispatches_for[{index}]", policy)
        for index, item in enumerate(_list(document.get("dispatches_for"), "dispatches_for", MAX_DISPATCHED))
    ]
    display = _text(document.get("name"), "name", low=2)
    assert display is not None
    return Sender(
        id=identifier,
        name=display,
        status=status,
        networks=tuple(dict.fromkeys(networks)),
        access_points=tuple({ap.certificate_sha256: ap for ap in access_points}.values()),
        signing_certificates=tuple(dict.fromkeys(signing)),
        support=_support(document.get("support")),
        dispatches_for=tuple(sorted(set(dispatched) - {identifier})),
    )


def _support(value: Any) -> Support | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"text", "url", "phone", "email"}:
        raise InvalidInput("support: {text, url, phone, email}", field="support")
    text = _text(value.get("text"), "support.text", high=1024)
    assert text is not None
    return Support(
        text,
        _text(value.get("url"), "support.url", high=2048, required=False),
        _text(value.get("phone"), "support.phone", high=64, required=False),
        _text(value.get("email"), "support.email", high=256, required=False),
    )


# ------------------------------------------------------------------------------------------------ storage


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Rows:
    """A sender's rows in the three tables."""

    sender: dict[str, Any]
    access_points: list[dict[str, Any]] = field(default_factory=list)
    dispatched: list[dict[str, Any]] = field(default_factory=list)


def sender_rows(sender: Sender, at: datetime) -> _Rows:
    """The rows that store ``sender``."""
    return _Rows(
        {
            "id": sender.id,
            "name": sender.name,
            "status": sender.status.value,
            "networks": json.dumps([n.value for n in sender.networks]),
            "support": None if sender.support is None else json.dumps(sender.support.to_json()),
            "signing_certificates": json.dumps(list(sender.signing_certificates)),
            "updated_at": at,
        },
        [{"sender_id": sender.id, **ap.to_json()} for ap in sender.access_points],
        [{"dispatcher_id": sender.id, "sender_id": s} for s in sender.dispatches_for],
    )


async def store_senders(conn: AsyncConnection, batch: Sequence[Sender], at: datetime) -> None:
    """Create or replace the senders of ``batch`` (their access points and dispatch lists with them)."""
    if not batch:
        return
    ids = [s.id for s in batch]
    rows = [sender_rows(s, at) for s in batch]
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        await conn.execute(delete(sender_access_points).where(sender_access_points.c.sender_id.in_(chunk)))
        await conn.execute(delete(dispatched_senders).where(dispatched_senders.c.dispatcher_id.in_(chunk)))
        await conn.execute(delete(senders).where(senders.c.id.in_(chunk)))
    await conn.execute(insert(senders), [r.sender for r in rows])
    access_points = [ap for r in rows for ap in r.access_points]
    if access_points:
        await conn.execute(insert(sender_access_points), access_points)
    dispatched = [d for r in rows for d in r.dispatched]
    if dispatched:
        await conn.execute(insert(dispatched_senders), dispatched)


def _sender(row: Any, access_points: Iterable[Any], dispatched: Iterable[Any]) -> Sender:
    support = None if row.support is None else json.loads(row.support)
    return Sender(
        id=row.id,
        name=row.name,
        status=SenderStatus(row.status),
        networks=tuple(SenderNetwork(n) for n in json.loads(row.networks)),
        access_points=tuple(AccessPoint(a.party_id, a.certificate_sha256) for a in access_points),
        signing_certificates=tuple(json.loads(row.signing_certificates)),
        support=None if support is None else Support(**support),
        dispatches_for=tuple(sorted(d.sender_id for d in dispatched)),
    )


async def _load(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Sender]:
    if not ids:
        return {}
    rows = (await conn.execute(select(senders).where(senders.c.id.in_(ids)))).all()
    points = (
        await conn.execute(
            select(sender_access_points)
            .where(sender_access_points.c.sender_id.in_(ids))
            .order_by(sender_access_points.c.party_id)
        )
    ).all()
    dispatched = (
        await conn.execute(select(dispatched_senders).where(dispatched_senders.c.dispatcher_id.in_(ids)))
    ).all()
    return {
        row.id: _sender(
            row, [p for p in points if p.sender_id == row.id], [d for d in dispatched if d.dispatcher_id == row.id]
        )
        for row in rows
    }


class SenderRegister:
    """Reads and audited changes of the sender register over FaR's engine."""

    def __init__(
        self, engine: AsyncEngine, *, policy: PartyPolicy = STRICT_PARTIES, now: Callable[[], datetime] = _now
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.now = now

    def party(self, value: str, name: str = "id") -> str:
        """The canonical party id; InvalidInput naming ``name`` when it is none."""
        return _party(value, name, self.policy)

    async def get(self, sender_id: str) -> SenderView:
        """The sender and the dispatchers that send for it; NotFound when it is not registered."""
        identifier = self.party(sender_id)
        async with self.engine.connect() as conn:
            found = await _load(conn, [identifier])
            if identifier not in found:
                raise NotFound(f"no sender {identifier}")
            query = select(dispatched_senders.c.dispatcher_id).where(dispatched_senders.c.sender_id == identifier)
            dispatcher_ids = sorted((await conn.execute(query)).scalars())
            dispatchers = await _load(conn, dispatcher_ids)
        return SenderView(found[identifier], tuple(dispatchers[d] for d in dispatcher_ids if d in dispatchers))

    async def search(
        self,
        *,
        status: SenderStatus | None = None,
        certificate_sha256: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Sender]:
        """Senders by id (from ``after`` on), of a status, or connected through the access point with that
        certificate."""
        query = select(senders.c.id).order_by(senders.c.id).limit(limit)
        if status is not None:
            query = query.where(senders.c.status == status.value)
        if after is not None:
            query = query.where(senders.c.id > after)
        if certificate_sha256 is not None:
            owners = select(sender_access_points.c.sender_id).where(
                sender_access_points.c.certificate_sha256 == certificate_sha256
            )
            query = query.where(senders.c.id.in_(owners))
        async with self.engine.connect() as conn:
            ids = list((await conn.execute(query)).scalars())
            found = await _load(conn, ids)
        return [found[i] for i in ids]

    async def put(self, sender: Sender, *, actor: str) -> bool:
        """Create or replace a sender record; True when it was created."""
        async with self.engine.begin() as conn:
            exists = await conn.scalar(select(senders.c.id).where(senders.c.id == sender.id))
            try:
                await store_senders(conn, [sender], self.now())
            except IntegrityError:
                raise Conflict(f"sender {sender.id} was changed concurrently; retry") from None
            await self._audit(conn, actor, "update" if exists else "create", sender.id, sender.to_json())
        return exists is None

    async def set_status(self, sender_id: str, status: SenderStatus, *, actor: str) -> Sender:
        """Suspend a sender or make it active again."""
        identifier = self.party(sender_id)
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(senders).where(senders.c.id == identifier).values(status=status.value, updated_at=self.now())
            )
            if done.rowcount == 0:
                raise NotFound(f"no sender {identifier}")
            await self._audit(conn, actor, "update", identifier, {"status": status.value})
            return (await _load(conn, [identifier]))[identifier]

    async def delete(self, sender_id: str, *, actor: str) -> None:
        """Remove a sender from the register (its access points and dispatch list with it)."""
        identifier = self.party(sender_id)
        async with self.engine.begin() as conn:
            await conn.execute(delete(sender_access_points).where(sender_access_points.c.sender_id == identifier))
            await conn.execute(delete(dispatched_senders).where(dispatched_senders.c.dispatcher_id == identifier))
            done = await conn.execute(delete(senders).where(senders.c.id == identifier))
            if done.rowcount == 0:
                raise NotFound(f"no sender {identifier}")
            await self._audit(conn, actor, "delete", identifier, None)

    async def _audit(self, conn: AsyncConnection, actor: str, action: str, sender_id: str, detail: Any) -> None:
        await conn.execute(
            audit.insert().values(
                at=self.now(),
                actor=actor[:128],
                action=action,
                entity="sender",
                entity_id=sender_id,
                detail=None if detail is None else json.dumps(detail, sort_keys=True),
            )
        )
