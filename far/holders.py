"""Mailbox holders in FaR: what the operators write for their holders, each change signed by the holder.

The operations of the Mina meddelanden Recipient contract (``far/holder_soap.py``) and the REST API
(``far/holder_api.py``) are thin shells over :class:`HolderService`:

- ``register`` / ``deregister``: open or close an account at the calling operator. The holder signs the
  agreement text with their e-ID (:mod:`accesspoint.envelopes.identity`); a company's signatories sign as its
  signatory rule asks (``far/registers.py``), a minor's guardian consents as the minors policy asks. Until
  enough have signed, the request waits (``Incomplete``, with the possible signers) and later signatures add up.
- ``change_service_supplier``: the new operator asks, with the holder's signature, to take over a holder whose
  mailbox is at another operator: a *switch*, pending until the current operator completes it
  (``complete_switch``: from then on FaR names the new operator) or anyone of the two cancels it.
- ``store_preferences`` / ``preferences``: the senders the holder accepts and refuses.
- ``report_activity``: operators report that holders used their mailbox; ``mark_dormant`` (a job) marks those
  without activity for a configured period dormant, and the next activity reactivates them.
- ``is_authorized_signer`` and ``access_rights``: who may sign for a company and what a person may do with its
  mailbox (signatories everything; roles given in the representation register what they say).

Every change is audited with who made it; a change a caller may not make is refused with 403 and audited too.
Identity assertions count once: their nonces are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from accesspoint.envelopes.identity import AssertionRefused, SignatureData, VerifiedAssertion, verify_assertion
from far.access import Writer
from far.identifiers import Kind, age_on
from far.model import (
    AccountStatus,
    accepted_senders,
    account_requests,
    consents,
    nonces,
    operators,
    recipients,
    refusals,
    switches,
)
from far.registers import (
    CompanyRecord,
    Person,
    Registers,
    RegisterUnavailable,
    SignatoryRule,
    interpret_rule,
)
from far.service import Conflict, FarError, FarService, Forbidden, InvalidInput, NotFound, OperatorStatus, utc
from far.settings import MinorsPolicy

DORMANCY_ACTOR = "dormancy-job"
MAX_SIGNATURES = 10
_Found = TypeVar("_Found")


class Refused(FarError):
    """A change refused on its merits (an identity assertion that does not hold, a policy): 422 with ``code``."""

    status = 422

    def __init__(self, code: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.code = code


async def _approved_operator(conn: AsyncConnection, operator_id: str) -> None:
    """InvalidInput when FaR does not know the operator; Refused (``operator-not-approved``) when its approval is
    suspended or revoked: no new holder goes to an operator that cannot receive (far/service.py)."""
    status = await conn.scalar(select(operators.c.status).where(operators.c.id == operator_id))
    if status is None:
        raise InvalidInput(f"no operator {operator_id}", field="operator")
    if status != OperatorStatus.APPROVED.value:
        raise Refused("operator-not-approved", f"operator {operator_id} is {status}: it takes no new holders",
                      field="operator")  # fmt: skip


class Unavailable(FarError):
    """A register FaR depends on did not answer: 503."""

    status = 503


class AuthorizationStatus(StrEnum):
    """Authority ``AuthorizationStatus``: whether the signatures suffice."""

    COMPLETE = "Complete"
    INCOMPLETE = "Incomplete"
    RULES_NOT_SUPPORTED = "RulesNotSupported"


@dataclass(frozen=True, slots=True)
class AuthorizationResult:
    """Authority ``SignatureAuthorizationResult``: who signed, whether it suffices, who else could sign."""

    recipient: str
    status: AuthorizationStatus
    signed_by: tuple[Person, ...]
    timestamp: datetime
    text: str
    possible_signers: tuple[Person, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The REST form."""
        return {
            "recipient": self.recipient,
            "status": self.status.value,
            "signed_by": [p.to_json() for p in self.signed_by],
            "timestamp": self.timestamp.isoformat(),
            "text": self.text,
            "possible_signers": [p.to_json() for p in self.possible_signers],
        }


class SwitchState(StrEnum):
    """A switch's life: pending until completed (switched) or cancelled."""

    PENDING = "pending"
    SWITCHED = "switched"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Switch:
    """A holder's move from one operator to another."""

    id: str
    recipient: str
    from_operator: str
    to_operator: str
    state: SwitchState
    requested_at: datetime
    requested_by: str
    switch_at: datetime | None = None
    switched_at: datetime | None = None
    cancelled_at: datetime | None = None
    closed_by: str | None = None
    agreement: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The REST form."""
        iso = _iso
        return {
            "id": self.id,
            "recipient": self.recipient,
            "from_operator": self.from_operator,
            "to_operator": self.to_operator,
            "state": self.state.value,
            "requested_at": iso(self.requested_at),
            "requested_by": self.requested_by,
            "switch_at": iso(self.switch_at),
            "switched_at": iso(self.switched_at),
            "cancelled_at": iso(self.cancelled_at),
            "closed_by": self.closed_by,
            "agreement": self.agreement,
        }


@dataclass(frozen=True, slots=True)
class Preferences:
    """The senders a holder has decided about: accepted (party id with a name) and refused (party ids)."""

    recipient: str
    accepted: tuple[Person, ...]
    refused: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The REST form."""
        return {
            "recipient": self.recipient,
            "accepted": [p.to_json() for p in self.accepted],
            "refused": list(self.refused),
        }


@dataclass(frozen=True, slots=True)
class AuthorizedAccount:
    """Recipient v2 ``AuthorizedAccount``: whether a person may sign for a company, and about its account."""

    company: str
    person: str
    authorized: bool
    company_name: str
    rule_text: str
    possible_signers: tuple[Person, ...]
    rule_supported: bool
    account_status: str | None = None  # Active, Pending, or None without an account
    operator_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The REST form."""
        return {
            "company": self.company,
            "person": self.person,
            "authorized": self.authorized,
            "company_name": self.company_name,
            "rule_text": self.rule_text,
            "rule_supported": self.rule_supported,
            "possible_signers": [p.to_json() for p in self.possible_signers],
            "account": None
            if self.account_status is None
            else {"status": self.account_status, "operator": self.operator_name},
        }


# Authority UserActivities a grant type gives (what the operator lets the person do with the company mailbox).
ALL_ACTIVITIES = (
    "View",
    "ForwardMessage",
    "InitiateAccountAction",
    "EditSettings",
    "EditSettingsFrom",
    "EditSettingsForward",
    "EditSettingsContact",
    "EditSettingsConsent",
    "EditSettingsAddressbook",
    "EditSettingsInactivate",
)
ROLE_ACTIVITIES = {
    "read": ("View",),
    "manage": ("View", "ForwardMessage", "EditSettings", "EditSettingsContact", "EditSettingsFrom"),
}


@dataclass(frozen=True, slots=True)
class AccessRights:
    """Authority ``UserAccessRights``: what one person may do with a company's mailbox, and why."""

    company: str
    company_name: str | None
    person: str
    grant_type: str | None  # AuthorizedSignatory, AuthorizedRole, or None: nothing
    activities: tuple[str, ...]
    roles: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The REST form."""
        return {
            "company": self.company,
            "company_name": self.company_name,
            "person": self.person,
            "grant_type": self.grant_type,
            "activities": list(self.activities),
            "roles": list(self.roles),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class HolderService:
    """The holder operations over FaR's engine (see the module docstring)."""

    def __init__(
        self,
        far: FarService,
        *,
        eid_anchors: tuple[x509.Certificate, ...] = (),
        eid_max_age: timedelta = timedelta(minutes=10),
        registers: Registers | None = None,
        minors: MinorsPolicy | None = None,
    ) -> None:
        self.far = far
        self.engine = far.engine
        self.eid_anchors = eid_anchors
        self.eid_max_age = eid_max_age
        self.registers = registers
        self.minors = minors or MinorsPolicy()
        if self.minors.senders_told == "minor":
            far.minor = self.too_young_alone

    @contextlib.asynccontextmanager
    async def _change(self, actor: str, _entity: str, entity_id: str, attempted: str) -> AsyncIterator[AsyncConnection]:
        """A write transaction on a recipient whose Forbidden is audited as a refusal (who tried what)."""
        async with self.far.refusal_audited(actor, "recipient", entity_id, attempted), self.engine.begin() as conn:
            yield conn

    # ------------------------------------------------------------------------------------ identities

    def verify(self, text: str, signatures: Sequence[SignatureData]) -> list[VerifiedAssertion]:
        """Every signature verified over ``text`` (Refused with the reason of the first that does not hold)."""
        if not signatures:
            raise Refused("malformed", "at least one signature is required", field="signatures")
        if len(signatures) > MAX_SIGNATURES:
            raise Refused("malformed", f"at most {MAX_SIGNATURES} signatures", field="signatures")
        if not text.strip():
            raise Refused("malformed", "the agreement text is empty", field="agreement_text")
        verified = []
        for index, data in enumerate(signatures):
            try:
                verified.append(
                    verify_assertion(text, data, self.eid_anchors, at=self.far.now(), max_age=self.eid_max_age)
                )
            except AssertionRefused as exc:
                raise Refused(exc.code.value, f"signature {index}: {exc.reason}", field="signatures") from None
        return verified

    async def _use_nonces(self, conn: AsyncConnection, signed: Iterable[VerifiedAssertion]) -> None:
        now = self.far.now()
        # Nonces older than twice the accepted age can never be presented again: forgotten.
        await conn.execute(delete(nonces).where(nonces.c.used_at < now - 2 * self.eid_max_age))
        for assertion in signed:
            try:
                async with conn.begin_nested():
                    await conn.execute(nonces.insert().values(nonce=assertion.nonce[:200], used_at=now))
            except IntegrityError:
                raise Refused("replayed", f"the assertion signed by {assertion.subject} was used before") from None

    def too_young_alone(self, recipient: str) -> bool:
        """Whether ``recipient`` is a person younger than the age for a mailbox of their own."""
        age = age_on(recipient, self.far.now().date())
        return age is not None and age < self.minors.own_mailbox_age

    # ----------------------------------------------------------------------------- who must sign

    async def _look_up(
        self, register: str, key: str, ask: Callable[[Registers], Awaitable[_Found | None]], unknown: str
    ) -> _Found:
        """What the ``register`` (business or population) says of ``key``: Unavailable when there is none or it
        cannot answer, Refused(``unknown``) when it does not know the key."""
        if self.registers is None:
            raise Unavailable(f"no {register} register is configured")
        try:
            found = await ask(self.registers)
        except RegisterUnavailable as exc:
            raise Unavailable(f"the {register} register cannot answer: {exc}") from None
        if found is None:
            raise Refused(unknown, f"the {register} register does not know {key}")
        return found

    async def _company(self, orgnr: str) -> CompanyRecord:
        return await self._look_up("business", orgnr, lambda r: r.company(orgnr), "unknown-company")

    async def _guardians(self, person: str) -> tuple[Person, ...]:
        found = await self._look_up("population", person, lambda r: r.person(person), "unknown-person")
        return found.guardians

    async def authorization(
        self, recipient: str, kind: Kind, signed: Sequence[VerifiedAssertion], *, text: str, minors: bool = True
    ) -> tuple[AuthorizationResult, dict[str, Any]]:
        """Whether ``signed`` suffice for ``recipient``'s account, and what to record (a guardian's consent)."""
        signers = {a.subject: a for a in signed}
        persons = tuple(Person(a.subject, a.name) for a in signers.values())
        now = self.far.now()

        def result(status: AuthorizationStatus, possible: tuple[Person, ...] = ()) -> AuthorizationResult:
            return AuthorizationResult(recipient, status, persons, now, text, possible)

        if kind is Kind.ORGANISATION:
            company = await self._company(recipient[2:])
            rule: SignatoryRule | None = interpret_rule(company)
            if rule is None:
                return result(AuthorizationStatus.RULES_NOT_SUPPORTED, company.signatories), {}
            strangers = set(signers) - {p.id for p in rule.persons}
            if strangers:
                raise Refused("not-a-signatory", f"{sorted(strangers)[0]} may not sign for {company.name}")
            if not rule.satisfied_by(set(signers)):
                return result(AuthorizationStatus.INCOMPLETE, rule.persons), {}
            return result(AuthorizationStatus.COMPLETE, rule.persons), {}
        if recipient not in signers:
            raise Refused("identity", f"the holder {recipient} has not signed", field="signatures")
        others = set(signers) - {recipient}
        age = age_on(recipient, now.date()) if kind in (Kind.PERSONNUMMER, Kind.SAMORDNINGSNUMMER) else None
        if age is None or not minors or age >= self.minors.own_mailbox_age:
            if others:
                raise Refused("identity", f"{sorted(others)[0]} may not sign for {recipient}", field="signatures")
            return result(AuthorizationStatus.COMPLETE), {}
        if age < self.minors.consent_age:
            raise Refused(
                "minor",
                f"{recipient} is {age}: a mailbox needs the holder to be {self.minors.consent_age} or older "
                f"({self.minors.own_mailbox_age} without a guardian's consent)",
            )
        guardians = await self._guardians(recipient)
        consenting = [signers[g.id] for g in guardians if g.id in signers]
        strangers = others - {g.id for g in guardians}
        if strangers:
            raise Refused("not-a-guardian", f"{sorted(strangers)[0]} is not a guardian of {recipient}")
        if not consenting:
            return result(AuthorizationStatus.INCOMPLETE, guardians), {}
        consent = {
            "guardians": [a.to_json() for a in consenting],
            "age": age,
            "policy": {"own_mailbox_age": self.minors.own_mailbox_age, "consent_age": self.minors.consent_age},
        }
        return result(AuthorizationStatus.COMPLETE, guardians), consent

    # ------------------------------------------------------------------------------- registration

    async def register(
        self,
        writer: Writer,
        recipient: str,
        *,
        account_type: AccountStatus,
        text: str,
        signatures: Sequence[SignatureData],
        operator: str | None = None,
    ) -> AuthorizationResult:
        """Open an account at the caller's operator once enough have signed; until then the request waits."""
        rid = self.far._recipient(recipient)
        if account_type is AccountStatus.NONE:
            raise InvalidInput("account_type is Secure or Anonymous", field="account_type")
        oid = writer.operator(operator)
        signed = self.verify(text, signatures)
        async with self.engine.connect() as conn:
            waiting = (
                await conn.execute(select(account_requests).where(account_requests.c.recipient_id == rid.value))
            ).first()
        earlier: list[VerifiedAssertion] = []
        if waiting is not None and waiting.operator_id == oid and waiting.agreement_text == text:
            earlier = [_assertion(item) for item in json.loads(waiting.signers)]
        fresh = {a.subject for a in signed}
        combined = [*signed, *(a for a in earlier if a.subject not in fresh)]
        result, consent = await self.authorization(rid.value, rid.kind, combined, text=text)
        now = self.far.now()
        detail = {
            "operator": oid,
            "account_type": account_type.value,
            "agreement_sha256": _sha256(text),
            "signers": [a.to_json() for a in combined],
            "status": result.status.value,
        }
        async with self._change(writer.name, "recipient", rid.value, f"register at {oid}") as conn:
            await self._use_nonces(conn, signed)
            current = (await conn.execute(select(recipients).where(recipients.c.id == rid.value))).first()
            if current is not None and current.status != AccountStatus.NONE.value and current.operator_id != oid:
                raise Conflict(
                    f"{rid.value} has a mailbox at operator {current.operator_id}: a holder moves with "
                    "changeServiceSupplier (POST /api/v1/switches)"
                )
            await conn.execute(delete(account_requests).where(account_requests.c.recipient_id == rid.value))
            if result.status is not AuthorizationStatus.COMPLETE:
                if result.status is AuthorizationStatus.INCOMPLETE:
                    await conn.execute(
                        account_requests.insert().values(
                            recipient_id=rid.value,
                            operator_id=oid,
                            account_type=account_type.value,
                            agreement_text=text,
                            signers=json.dumps([a.to_json() for a in combined]),
                            created_at=now,
                            created_by=writer.name,
                        )
                    )
                await self.far._audit(conn, writer.name, "register", "recipient", rid.value, detail)
                return result
            await _approved_operator(conn, oid)
            values = {
                "kind": rid.kind.value,
                "status": account_type.value,
                "pending": False,
                "operator_id": oid,
                "last_registration": now,
                "updated_at": now,
                "last_activity": now,
                "dormant_since": None,
            }
            if current is None:
                await conn.execute(recipients.insert().values(id=rid.value, **values))
            else:
                await conn.execute(update(recipients).where(recipients.c.id == rid.value).values(**values))
            if consent:
                await self._consent(conn, writer.name, rid.value, consent, now)
            await self.far._audit(conn, writer.name, "register", "recipient", rid.value, detail)
        return result

    async def _consent(
        self, conn: AsyncConnection, actor: str, recipient: str, consent: dict[str, Any], now: datetime
    ) -> None:
        await conn.execute(delete(consents).where(consents.c.recipient_id == recipient))
        await conn.execute(consents.insert().values(recipient_id=recipient, detail=json.dumps(consent), given_at=now))
        await self.far._audit(conn, actor, "consent", "recipient", recipient, consent)

    async def consent(self, recipient: str) -> dict[str, Any] | None:
        """The guardian's consent recorded for a minor's account (who gave it, when), if any."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(consents).where(consents.c.recipient_id == recipient))).first()
        return None if row is None else {"given_at": utc(row.given_at).isoformat(), **json.loads(row.detail)}  # type: ignore[union-attr]

    async def pending_registration(self, recipient: str) -> dict[str, Any] | None:
        """A registration waiting for signatures (getPendingAccountRequest)."""
        rid = self.far._recipient(recipient)
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(account_requests).where(account_requests.c.recipient_id == rid.value))
            ).first()
        if row is None:
            return None
        return {
            "recipient": row.recipient_id,
            "operator": row.operator_id,
            "account_type": row.account_type,
            "agreement_text": row.agreement_text,
            "signed_by": [{"id": s["id"], "name": s["name"]} for s in json.loads(row.signers)],
            "created_at": _iso(utc(row.created_at)),
        }

    async def delete_pending_registration(self, writer: Writer, recipient: str) -> None:
        """Drop a registration waiting for signatures (its operator or the administrator)."""
        rid = self.far._recipient(recipient)
        async with self._change(writer.name, "recipient", rid.value, "delete pending registration") as conn:
            oid = await conn.scalar(
                select(account_requests.c.operator_id).where(account_requests.c.recipient_id == rid.value)
            )
            if oid is None:
                raise NotFound(f"no registration of {rid.value} is waiting")
            if not writer.speaks_for(oid):
                raise Forbidden(f"{writer.name} did not ask for this registration")
            await conn.execute(delete(account_requests).where(account_requests.c.recipient_id == rid.value))
            await self.far._audit(conn, writer.name, "delete", "registration", rid.value, None)

    async def deregister(
        self, writer: Writer, recipient: str, *, text: str, signatures: Sequence[SignatureData]
    ) -> AuthorizationResult:
        """Close the holder's account (the operator that holds it, with the holder's signature)."""
        rid = self.far._recipient(recipient)
        signed = self.verify(text, signatures)
        result, _consent = await self.authorization(rid.value, rid.kind, signed, text=text, minors=False)
        if result.status is not AuthorizationStatus.COMPLETE:
            raise Refused(
                "incomplete", f"the signatures do not suffice to close {rid.value}'s account ({result.status})"
            )
        now = self.far.now()
        async with self._change(writer.name, "recipient", rid.value, "deregister") as conn:
            current = (await conn.execute(select(recipients).where(recipients.c.id == rid.value))).first()
            if current is None or current.status == AccountStatus.NONE.value:
                raise NotFound(f"{rid.value} has no account")
            if not writer.speaks_for(current.operator_id):
                raise Forbidden(f"{writer.name} does not hold {rid.value}'s mailbox")
            await self._use_nonces(conn, signed)
            await conn.execute(
                update(recipients)
                .where(recipients.c.id == rid.value)
                .values(
                    status=AccountStatus.NONE.value, pending=False, operator_id=None, updated_at=now, dormant_since=None
                )
            )
            await conn.execute(
                update(switches)
                .where(switches.c.recipient_id == rid.value, switches.c.state == SwitchState.PENDING.value)
                .values(state=SwitchState.CANCELLED.value, cancelled_at=now, closed_by=writer.name)
            )
            await conn.execute(delete(consents).where(consents.c.recipient_id == rid.value))
            detail = {
                "operator": current.operator_id,
                "agreement_sha256": _sha256(text),
                "signers": [a.to_json() for a in signed],
            }
            await self.far._audit(conn, writer.name, "deregister", "recipient", rid.value, detail)
        return result

    # ------------------------------------------------------------------------------------ switches

    async def operator_by_supplier(self, supplier: str) -> str:
        """The operator a ``ServiceSupplier`` names: its organisationsnummer (10 digits or 16 + 10), or the host of
        one of its addresses (the contract calls it "the internet domain of the chosen service supplier")."""
        value = supplier.strip()
        if value.isdigit():
            return self.far._orgnr(value, "operator")
        host = (urlsplit(value).hostname if "//" in value else value).lower()  # type: ignore[union-attr]
        for candidate in await self.far.list_operators():
            for address in (candidate.ui_address, candidate.service_address, candidate.endpoint):
                found = None if address is None else urlsplit(address).hostname
                if found and (found == host or found.endswith("." + host)):
                    return candidate.id
        raise NotFound(f"no operator has the domain {value[:100]!r}", field="operator")

    async def change_service_supplier(
        self,
        writer: Writer,
        recipient: str,
        *,
        text: str,
        signatures: Sequence[SignatureData],
        to_operator: str | None = None,
        switch_at: datetime | None = None,
    ) -> tuple[AuthorizationResult, Switch]:
        """Ask to move the holder's mailbox to the caller's operator: a pending switch (see the module docstring)."""
        rid = self.far._recipient(recipient)
        target = writer.operator(to_operator)
        signed = self.verify(text, signatures)
        result, _consent = await self.authorization(rid.value, rid.kind, signed, text=text, minors=False)
        if result.status is not AuthorizationStatus.COMPLETE:
            raise Refused("incomplete", f"the signatures do not suffice to move {rid.value} ({result.status.value})")
        now = self.far.now()
        agreement = {"agreement_sha256": _sha256(text), "signers": [a.to_json() for a in signed]}
        async with self._change(writer.name, "recipient", rid.value, f"switch to {target}") as conn:
            current = (await conn.execute(select(recipients).where(recipients.c.id == rid.value))).first()
            if current is None or current.status == AccountStatus.NONE.value or current.operator_id is None:
                raise NotFound(f"{rid.value} has no mailbox to move: register it instead")
            if current.operator_id == target:
                raise Conflict(f"{rid.value}'s mailbox is at operator {target} already: nothing to switch")
            await _approved_operator(conn, target)
            open_ = await conn.scalar(
                select(switches.c.id).where(
                    switches.c.recipient_id == rid.value, switches.c.state == SwitchState.PENDING.value
                )
            )
            if open_ is not None:
                raise Conflict(f"{rid.value} has a pending switch {open_}: cancel it first")
            await self._use_nonces(conn, signed)
            switch = Switch(
                str(uuid.uuid4()),
                rid.value,
                current.operator_id,
                target,
                SwitchState.PENDING,
                now,
                writer.name,
                utc(switch_at),
                agreement=agreement,
            )
            await conn.execute(
                switches.insert().values(
                    id=switch.id,
                    recipient_id=rid.value,
                    from_operator=switch.from_operator,
                    to_operator=target,
                    state=switch.state.value,
                    requested_at=now,
                    requested_by=writer.name,
                    switch_at=switch.switch_at,
                    agreement=json.dumps(agreement),
                )
            )
            await conn.execute(
                update(recipients)
                .where(recipients.c.id == rid.value)
                .values(pending=True, updated_at=now, last_activity=now, dormant_since=None)
            )
            await self.far._audit(conn, writer.name, "switch", "recipient", rid.value, switch.to_json())
        return result, switch

    async def switch(self, recipient: str, *, switch_id: str | None = None) -> Switch:
        """The pending switch of a recipient (or the switch ``switch_id`` in any state); NotFound otherwise."""
        rid = self.far._recipient(recipient)
        query = select(switches).where(switches.c.recipient_id == rid.value)
        query = (
            query.where(switches.c.id == switch_id)
            if switch_id
            else query.where(switches.c.state == SwitchState.PENDING.value)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query.order_by(switches.c.requested_at.desc()).limit(1))).first()
        if row is None:
            raise NotFound(f"no {'such' if switch_id else 'pending'} switch of {rid.value}")
        return _switch(row)

    async def switches_of(self, operator: str, *, state: SwitchState | None = None) -> list[Switch]:
        """The switches to or from an operator, newest first (at most 1,000)."""
        query = select(switches).where(or_(switches.c.from_operator == operator, switches.c.to_operator == operator))
        if state is not None:
            query = query.where(switches.c.state == state.value)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(switches.c.requested_at.desc()).limit(1000))).all()
        return [_switch(row) for row in rows]

    async def complete_switch(self, writer: Writer, recipient: str) -> Switch:
        """The current operator hands the holder over: FaR names the new operator from now (the switch time)."""
        rid = self.far._recipient(recipient)
        now = self.far.now()
        async with self._change(writer.name, "recipient", rid.value, "complete switch") as conn:
            row = (
                await conn.execute(
                    select(switches).where(
                        switches.c.recipient_id == rid.value, switches.c.state == SwitchState.PENDING.value
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"no pending switch of {rid.value}")
            if not writer.speaks_for(row.from_operator):
                raise Forbidden(f"only operator {row.from_operator}, which holds the mailbox, completes the switch")
            if row.switch_at is not None and utc(row.switch_at) > now:  # type: ignore[operator]
                raise Conflict(f"the switch is not due before {utc(row.switch_at).isoformat()}")  # type: ignore[union-attr]
            held = await conn.scalar(select(recipients.c.operator_id).where(recipients.c.id == rid.value))
            if held != row.from_operator:
                raise Conflict(f"{rid.value} is no longer at operator {row.from_operator}")
            await conn.execute(
                update(switches)
                .where(switches.c.id == row.id)
                .values(state=SwitchState.SWITCHED.value, switched_at=now, closed_by=writer.name)
            )
            await conn.execute(
                update(recipients)
                .where(recipients.c.id == rid.value)
                .values(operator_id=row.to_operator, pending=False, last_registration=now, updated_at=now)
            )
            done = replace(_switch(row), state=SwitchState.SWITCHED, switched_at=now, closed_by=writer.name)
            await self.far._audit(conn, writer.name, "switch", "recipient", rid.value, done.to_json())
        return done

    async def cancel_switch(self, writer: Writer, recipient: str) -> Switch:
        """Cancel a pending switch (either operator, or the administrator); Conflict once it has happened."""
        rid = self.far._recipient(recipient)
        now = self.far.now()
        async with self._change(writer.name, "recipient", rid.value, "cancel switch") as conn:
            row = (
                await conn.execute(
                    select(switches)
                    .where(switches.c.recipient_id == rid.value)
                    .order_by(switches.c.requested_at.desc())
                    .limit(1)
                )
            ).first()
            if row is None:
                raise NotFound(f"no switch of {rid.value}")
            if not (writer.speaks_for(row.from_operator) or writer.speaks_for(row.to_operator)):
                raise Forbidden(f"{writer.name} is neither operator of this switch")
            if row.state != SwitchState.PENDING.value:
                when = utc(row.switched_at or row.cancelled_at)
                raise Conflict(f"the switch is {row.state} (at {_iso(when)}): it can no longer be cancelled")
            await conn.execute(
                update(switches)
                .where(switches.c.id == row.id)
                .values(state=SwitchState.CANCELLED.value, cancelled_at=now, closed_by=writer.name)
            )
            await conn.execute(
                update(recipients).where(recipients.c.id == rid.value).values(pending=False, updated_at=now)
            )
            done = replace(_switch(row), state=SwitchState.CANCELLED, cancelled_at=now, closed_by=writer.name)
            await self.far._audit(conn, writer.name, "switch", "recipient", rid.value, done.to_json())
        return done

    # --------------------------------------------------------------------------------- preferences

    async def preferences(self, recipient: str) -> Preferences:
        """getAccountPreferences: the senders accepted explicitly, and those refused."""
        rid = self.far._recipient(recipient)
        async with self.engine.connect() as conn:
            if await conn.scalar(select(recipients.c.id).where(recipients.c.id == rid.value)) is None:
                raise NotFound(f"no recipient {rid.value}")
            accepted = (
                await conn.execute(
                    select(accepted_senders)
                    .where(accepted_senders.c.recipient_id == rid.value, accepted_senders.c.accepted.is_(True))
                    .order_by(accepted_senders.c.sender_id)
                )
            ).all()
        refused = await self.far.list_refusals(rid.value)
        return Preferences(
            rid.value, tuple(Person(r.sender_id, r.name) for r in accepted), tuple(r["sender"] for r in refused)
        )

    async def store_preferences(
        self,
        writer: Writer,
        recipient: str,
        *,
        accepted: Sequence[Person],
        refused: Sequence[str] | None,
        text: str,
        signatures: Sequence[SignatureData],
    ) -> AuthorizationResult:
        """storeAccountPreferences: ``accepted`` senders are accepted, ``refused`` ones refused (any party id form
        far/parties.py reads: ``16`` + orgnr, 10 digits, ``0007:…``, ``0192:…``). With ``refused`` None (the SOAP
        form, which lists accepted senders only), a sender accepted before and not listed now becomes refused."""
        rid = self.far._recipient(recipient)
        signed = self.verify(text, signatures)
        result, _consent = await self.authorization(rid.value, rid.kind, signed, text=text, minors=False)
        if result.status is not AuthorizationStatus.COMPLETE:
            raise Refused("incomplete", f"the signatures do not suffice ({result.status.value})")
        wanted = {self.far.party(p.id, "accepted"): p for p in accepted}
        refuse = None if refused is None else {self.far.party(s, "refused") for s in refused}
        if refuse is not None and refuse & set(wanted):
            raise InvalidInput("a sender cannot be both accepted and refused", field="refused")
        now = self.far.now()
        async with self._change(writer.name, "recipient", rid.value, "store preferences") as conn:
            held = (await conn.execute(select(recipients.c.operator_id).where(recipients.c.id == rid.value))).first()
            if held is None:
                raise NotFound(f"no recipient {rid.value}")
            if not writer.speaks_for(held[0]):
                raise Forbidden(f"{writer.name} does not hold {rid.value}'s mailbox")
            await self._use_nonces(conn, signed)
            known = set(
                (
                    await conn.execute(
                        select(accepted_senders.c.sender_id).where(accepted_senders.c.recipient_id == rid.value)
                    )
                ).scalars()
            )
            if refuse is None:
                refuse = set(known) - set(wanted)
            for orgnr, person in wanted.items():
                await self._decide(conn, rid.value, orgnr, person.name, True, now)
            for orgnr in refuse:
                await self._decide(conn, rid.value, orgnr, orgnr, False, now)
            await conn.execute(update(recipients).where(recipients.c.id == rid.value).values(last_activity=now))
            detail = {
                "accepted": sorted(wanted),
                "refused": sorted(refuse),
                "agreement_sha256": _sha256(text),
                "signers": [a.to_json() for a in signed],
            }
            await self.far._audit(conn, writer.name, "preferences", "recipient", rid.value, detail)
        return result

    async def _decide(
        self, conn: AsyncConnection, recipient: str, party: str, name: str, accepted: bool, now: datetime
    ) -> None:
        """One sender's decision (``party``: its canonical party id, far/parties.py) and the refusal it implies."""
        key = and_(accepted_senders.c.recipient_id == recipient, accepted_senders.c.sender_id == party)
        await conn.execute(delete(accepted_senders).where(key))
        await conn.execute(
            accepted_senders.insert().values(
                recipient_id=recipient, sender_id=party, name=name, accepted=accepted, updated_at=now
            )
        )
        refusal = and_(refusals.c.recipient_id == recipient, refusals.c.sender_id == party)
        exists = await conn.scalar(select(func.count()).select_from(refusals).where(refusal))
        if accepted and exists:
            await conn.execute(delete(refusals).where(refusal))
        elif not accepted and not exists:
            await conn.execute(refusals.insert().values(recipient_id=recipient, sender_id=party, created_at=now))

    # ------------------------------------------------------------------------------ activity, dormancy

    async def report_activity(
        self, writer: Writer, ids: Sequence[str], *, at: datetime | None = None
    ) -> dict[str, Any]:
        """Holders used their mailbox: activity recorded, dormant ones reactivated (each audited). Every id must be
        a holder of the caller (else 403 and nothing recorded)."""
        if not ids or len(ids) > 1000:
            raise InvalidInput("1 to 1,000 recipients", field="recipients")
        wanted = sorted({self.far._recipient(value).value for value in ids})
        moment = utc(at) or self.far.now()
        assert moment is not None
        async with self._change(writer.name, "recipient", ",".join(wanted)[:300], "report activity") as conn:
            rows = (
                await conn.execute(
                    select(recipients.c.id, recipients.c.operator_id, recipients.c.dormant_since).where(
                        recipients.c.id.in_(wanted)
                    )
                )
            ).all()
            found = {row.id: row for row in rows}
            missing = [r for r in wanted if r not in found]
            if missing:
                raise NotFound(f"no recipient {missing[0]}", field="recipients")
            strangers = [r for r in wanted if not writer.speaks_for(found[r].operator_id)]
            if strangers:
                raise Forbidden(f"{writer.name} does not hold {strangers[0]}'s mailbox")
            await conn.execute(
                update(recipients).where(recipients.c.id.in_(wanted)).values(last_activity=moment, dormant_since=None)
            )
            woken = [r for r in wanted if found[r].dormant_since is not None]
            for recipient in woken:
                since = _iso(utc(found[recipient].dormant_since))
                await self.far._audit(
                    conn,
                    writer.name,
                    "reactivate",
                    "recipient",
                    recipient,
                    {"dormant_since": since, "activity_at": moment.isoformat()},
                )
        return {"recorded": len(wanted), "reactivated": woken}

    async def mark_dormant(
        self, *, after: timedelta, limit: int = 10_000, only: Sequence[str] | None = None, actor: str = DORMANCY_ACTOR
    ) -> list[str]:
        """Mark secure recipients without activity for ``after`` dormant (at most ``limit`` a run; ``only``: among
        these), audited."""
        now = self.far.now()
        cutoff = now - after
        last = func.coalesce(recipients.c.last_activity, recipients.c.last_registration, recipients.c.updated_at)
        query = select(recipients.c.id).where(
            recipients.c.status == AccountStatus.SECURE.value, recipients.c.dormant_since.is_(None), last <= cutoff
        )
        if only is not None:
            query = query.where(recipients.c.id.in_([self.far._recipient(r).value for r in only]))
        async with self.engine.begin() as conn:
            quiet = list((await conn.execute(query.limit(limit))).scalars())
            if quiet:
                await conn.execute(update(recipients).where(recipients.c.id.in_(quiet)).values(dormant_since=now))
                for recipient in quiet:
                    await self.far._audit(
                        conn,
                        actor,
                        "dormant",
                        "recipient",
                        recipient,
                        {"no_activity_since_before": cutoff.isoformat()},
                    )
        return quiet

    # ----------------------------------------------------------------------------------- companies

    async def is_authorized_signer(self, company: str, person: str) -> AuthorizedAccount:
        """isAuthorizedSigner: may ``person`` sign for ``company`` (16 + orgnr), and its account's state."""
        rid = self.far._recipient(company)
        if rid.kind is not Kind.ORGANISATION:
            raise InvalidInput("CompanyId is 16 + an organisationsnummer", field="company")
        record = await self._company(rid.value[2:])
        rule = interpret_rule(record)
        possible = record.signatories if rule is None else rule.persons
        status = name = None
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(recipients.c.status, operators.c.name)
                    .select_from(recipients.outerjoin(operators, operators.c.id == recipients.c.operator_id))
                    .where(recipients.c.id == rid.value)
                )
            ).first()
            waiting = await conn.scalar(
                select(account_requests.c.recipient_id).where(account_requests.c.recipient_id == rid.value)
            )
        if row is not None and row.status != AccountStatus.NONE.value:
            status, name = "Active", row.name
        elif waiting is not None:
            status = "Pending"
        return AuthorizedAccount(
            rid.value,
            person,
            person in {p.id for p in possible},
            record.name,
            record.signatory_rule,
            possible,
            rule is not None,
            status,
            name,
        )

    async def access_rights(self, company: str, person: str) -> AccessRights:
        """What ``person`` may do with ``company``'s mailbox, asked of the registers now (never cached: a change of
        signatory counts at once)."""
        rid = self.far._recipient(company)
        if rid.kind is not Kind.ORGANISATION:
            raise InvalidInput("the company is 16 + an organisationsnummer", field="company")
        record = await self._company(rid.value[2:])
        if person in {p.id for p in record.signatories}:
            return AccessRights(rid.value, record.name, person, "AuthorizedSignatory", ALL_ACTIVITIES)
        assert self.registers is not None
        try:
            roles = await self.registers.roles(rid.value[2:], person)
        except RegisterUnavailable as exc:
            raise Unavailable(f"the representation register cannot answer: {exc}") from None
        activities = sorted({a for role in roles for a in ROLE_ACTIVITIES.get(role, ())}, key=ALL_ACTIVITIES.index)
        grant = "AuthorizedRole" if activities else None
        return AccessRights(rid.value, record.name, person, grant, tuple(activities), tuple(roles))


def _assertion(item: dict[str, Any]) -> VerifiedAssertion:
    return VerifiedAssertion(
        item["id"],
        item["name"],
        item["certificate_sha256"],
        item["nonce"],
        datetime.fromisoformat(item["signed_at"]),
        item["text_sha256"],
    )


def _switch(row: Any) -> Switch:
    return Switch(
        id=row.id,
        recipient=row.recipient_id,
        from_operator=row.from_operator,
        to_operator=row.to_operator,
        state=SwitchState(row.state),
        requested_at=utc(row.requested_at),  # type: ignore[arg-type]
        requested_by=row.requested_by,
        switch_at=utc(row.switch_at),
        switched_at=utc(row.switched_at),
        cancelled_at=utc(row.cancelled_at),
        closed_by=row.closed_by,
        agreement=json.loads(row.agreement),
    )
