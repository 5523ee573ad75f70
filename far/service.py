"""FaR's service layer: reachability in one set-based query, registration lookups, audited changes.

The access point's router calls :meth:`FarService.is_reachable` (or the same method of
:class:`far.client.FarClient` when FaR runs elsewhere); the REST and SOAP handlers are thin shells over it.

Reachability reasons (``Reachability.reason``; ``None`` when reachable), first match wins:

========================  =========================================================================
``invalid-identifier``    not a valid personnummer, samordningsnummer, 16 + organisationsnummer or
                          eIDAS identifier (check digit, date, length)
``no-mailbox``            unknown to FaR, or known with account status ``none`` and nothing pending
``pending``               status ``none`` with a registration pending: not yet able to receive
``anonymous``             an anonymous account, which cannot receive secure digital post
``dormant``               a secure account an operator has not reported active for the configured period
                          (far/holders.py): the sender should use paper; the holder's next activity ends it
``sender-refused``        a secure account whose holder refuses this sender
``operator-suspended``    a secure account at an operator whose approval is suspended (the sender uses paper
                          until it is approved again); the Recipient contract answers ``SenderAccepted`` false
``operator-revoked``      the same for an operator whose approval is revoked
``no-operator``           a secure account with no operator on record (inconsistent data)
``minor``                 not registered, and a minor too young for a mailbox of their own, when the minors
                          policy says senders are told so (instead of ``no-mailbox``)
========================  =========================================================================

A secure account with a *pending* change (say, to another operator) stays reachable at its current operator.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import types
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, NamedTuple

from sqlalchemy import String, bindparam, cast, delete, func, literal_column, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accesspoint.servicekit.metrics import timed
from far.identifiers import (
    STRICT,
    InvalidIdentifier,
    Kind,
    Policy,
    RecipientId,
    parse_orgnr,
    parse_recipient,
    valid_recipients,
)
from far.metrics import FarMetrics
from far.model import AccountStatus, audit, operators, recipients, refusals
from far.parties import PartyPolicy, parse_party_id

MAX_RECIPIENTS = 1000
# The endpoint of an operator whose AS4 endpoint is found through SMP discovery by its party id.
DISCOVERY = "discovery"


class Reason(enum.Enum):
    """Why a recipient cannot be reached (see the module docstring)."""

    INVALID_IDENTIFIER = "invalid-identifier"
    NO_MAILBOX = "no-mailbox"
    PENDING = "pending"
    ANONYMOUS = "anonymous"
    DORMANT = "dormant"
    SENDER_REFUSED = "sender-refused"
    OPERATOR_SUSPENDED = "operator-suspended"
    OPERATOR_REVOKED = "operator-revoked"
    NO_OPERATOR = "no-operator"
    MINOR = "minor"


class OperatorStatus(enum.Enum):
    """An operator's approval: ``approved`` (its holders are reachable), ``suspended`` (not reachable until approved
    again; the operator still writes, so that holders can leave), ``revoked`` (final: not reachable, and the
    operator's credentials no longer write)."""

    APPROVED = "approved"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


# Why a holder at an operator that is not approved cannot be reached.
_NOT_APPROVED = {"suspended": Reason.OPERATOR_SUSPENDED, "revoked": Reason.OPERATOR_REVOKED}
# The audit action of each decision.
DECISIONS = {OperatorStatus.APPROVED: "approve", OperatorStatus.SUSPENDED: "suspend", OperatorStatus.REVOKED: "revoke"}


class FarError(Exception):
    """A request FaR refuses; ``status`` is the HTTP status the REST API answers with."""

    status = 400

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        self.detail = detail
        self.field = field
        super().__init__(detail)


class InvalidInput(FarError):
    """Malformed input (400)."""


class NotFound(FarError):
    """No such recipient, operator or refusal (404)."""

    status = 404


class Conflict(FarError):
    """The change contradicts what is stored, e.g. deleting an operator that still has recipients (409)."""

    status = 409


class Forbidden(FarError):
    """The caller may not make this change: another operator's record or holder (403)."""

    status = 403


# Called inside a change's transaction with the recipient's operator before and after it (None: none), or an
# operator record's id twice; raises Forbidden when the caller may not make the change (far/access.py).
Guard = Callable[[str | None, str | None], None]


@dataclass(frozen=True)
class Operator:
    """A mailbox operator: organisationsnummer, name, AS4 party id, endpoint URL (``None``: discovery)."""

    id: str
    name: str
    party_id: str
    endpoint: str | None = None
    service_address: str | None = None
    ui_address: str | None = None
    status: OperatorStatus = OperatorStatus.APPROVED

    def to_json(self) -> dict[str, Any]:
        """The operator as the REST API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "party_id": self.party_id,
            "endpoint": self.endpoint or DISCOVERY,
            "service_address": self.service_address,
            "ui_address": self.ui_address,
            "status": self.status.value,
        }

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Operator:
        """Read the REST API's form back."""
        endpoint = item.get("endpoint")
        return cls(
            id=str(item["id"]),
            name=str(item["name"]),
            party_id=str(item["party_id"]),
            endpoint=None if endpoint in (None, DISCOVERY) else str(endpoint),
            service_address=item.get("service_address"),
            ui_address=item.get("ui_address"),
            # A FaR from before operator approval names no status: its operators are all approved.
            status=OperatorStatus(item.get("status", "approved")),
        )


@dataclass(frozen=True)
class Approval:
    """An operator's approval as decided: the status, since when, who decided it, why, and the audit row."""

    operator_id: str
    status: OperatorStatus
    since: datetime | None
    decided_by: str | None
    reason: str | None
    audit_id: int | None

    def to_json(self) -> dict[str, Any]:
        """The approval as the REST API and /status show it."""
        return {
            "operator": self.operator_id,
            "status": self.status.value,
            "since": _iso(self.since),
            "decided_by": self.decided_by,
            "reason": self.reason,
            "audit_id": self.audit_id,
        }


@dataclass(frozen=True)
class Recipient:
    """A recipient as stored."""

    id: str
    kind: Kind
    status: AccountStatus
    pending: bool = False
    operator_id: str | None = None
    last_registration: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The recipient as the REST API shows it."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "status": self.status.value,
            "pending": self.pending,
            "operator": self.operator_id,
            "last_registration": _iso(self.last_registration),
        }


class Reachability(NamedTuple):
    """Whether the sender can send digital post to ``recipient``, and where it goes.

    ``endpoint`` is the operator's AS4 endpoint URL, or ``"discovery"`` (:data:`DISCOVERY`) when it is found
    through SMP by ``operator.party_id``; ``None`` when the recipient is not reachable. ``status``, ``pending``,
    ``last_registration`` and ``sender_refused_at`` are what the Recipient v3 answer carries besides.
    A NamedTuple rather than a frozen dataclass: an answer builds 1,000 of them, at a third of the cost.
    """

    recipient: str
    reachable: bool
    reason: Reason | None
    operator: Operator | None
    endpoint: str | None
    sender_accepted: bool
    status: AccountStatus = AccountStatus.NONE
    pending: bool = False
    last_registration: datetime | None = None
    sender_refused_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """One element of the REST API's answer (the CLI prints the first six keys)."""
        return {
            "recipient": self.recipient,
            "reachable": self.reachable,
            "reason": None if self.reason is None else self.reason.value,
            "operator": None if self.operator is None else self.operator.to_json(),
            "endpoint": self.endpoint,
            "sender_accepted": self.sender_accepted,
            "status": self.status.value,
            "pending": self.pending,
            "last_registration": _iso(self.last_registration),
            "sender_refused_at": _iso(self.sender_refused_at),
        }

    @classmethod
    def from_json(
        cls, item: dict[str, Any], operators: dict[tuple[Any, ...], Operator] | None = None
    ) -> Reachability:
        """Read one element of the REST API's answer back (raises KeyError, TypeError or ValueError when malformed).

        ``operators`` keeps the operators read so far: an answer about 1,000 recipients names a few operators, each
        read once (and shared) instead of once per recipient."""
        operator = item["operator"]
        found = None
        if operator is not None:
            if operators is None:
                found = Operator.from_json(operator)
            else:
                key = tuple(operator.items())
                found = operators.get(key)
                if found is None:
                    found = operators[key] = Operator.from_json(operator)
        reason = item["reason"]
        return cls(
            str(item["recipient"]),
            bool(item["reachable"]),
            None if reason is None else _REASONS[reason],
            found,
            item["endpoint"],
            bool(item["sender_accepted"]),
            _STATUS[item.get("status", "none")],
            bool(item.get("pending", False)),
            _moment(item.get("last_registration")),
            _moment(item.get("sender_refused_at")),
        )


class Routes(NamedTuple):
    """FaR's answer where only routing is asked (a router checking a mailing): per recipient, in request order, the
    index of the operator it is reachable at or the reason it is not.

    ``operators`` lists each operator an answer uses once, with the endpoint its recipients are reached at;
    ``results`` one element per recipient asked about: an ``int`` (an index into ``operators``) or a ``Reason``'s
    value. :meth:`to_json` is the REST API's ``"answer": "routes"`` form: a batch of 1,000 is a few kilobytes
    instead of a few hundred, written and read without an object per recipient.
    """

    operators: list[tuple[Operator, str]]
    results: list[int | str]

    def to_json(self) -> dict[str, Any]:
        """The REST API's ``"answer": "routes"`` document."""
        return {
            "operators": [{**operator.to_json(), "endpoint": endpoint} for operator, endpoint in self.operators],
            "results": self.results,
        }

    def answer(self, recipient: str, index: int) -> Reachability:
        """The Reachability of the ``index``-th recipient, ``recipient``."""
        result = self.results[index]
        if isinstance(result, int):
            operator, endpoint = self.operators[result]
            return Reachability(recipient, True, None, operator, endpoint, True)
        return Reachability(recipient, False, _REASONS[result], None, None, False)

    def answers(self, recipients: Sequence[str]) -> list[Reachability]:
        """One Reachability per recipient (the account's status, pending change and times are not in this form:
        ``status`` stays NONE, the times None)."""
        if len(recipients) != len(self.results):
            raise ValueError("one result per recipient")
        # A batch holds a handful of distinct results: each is read once, then each answer is one tuple.
        distinct = {result: index for index, result in enumerate(self.results)}
        fields = {result: self.answer("", index)[1:6] for result, index in distinct.items()}
        return [Reachability(r, *fields[result]) for r, result in zip(recipients, self.results, strict=True)]


_RESULT_TYPES = (int, str)


def read_routes(document: Any, count: int) -> Routes:
    """``Routes.to_json`` read back, checked: ``count`` results, each an index of one of its operators or a reason
    (raises KeyError, TypeError, ValueError, IndexError when malformed)."""
    operators = [(Operator.from_json(item), str(item["endpoint"])) for item in document["operators"]]
    results = document["results"]
    if not isinstance(results, list) or len(results) != count:
        raise ValueError("one result per recipient")
    allowed = {*range(len(operators)), *_REASONS}
    # The class itself, not isinstance: a JSON true is no index.
    bad = next((r for r in results if r.__class__ not in _RESULT_TYPES or r not in allowed), allowed)
    if bad is not allowed:
        raise IndexError(bad) if bad.__class__ is int else KeyError(bad)
    return Routes(operators, results)


def read_routes_answer(recipients: Sequence[str], document: Any) -> list[Reachability]:
    """``Routes.to_json`` read back as Reachability, one per recipient (raises KeyError, TypeError, ValueError,
    IndexError when malformed)."""
    return read_routes(document, len(recipients)).answers(recipients)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _moment(text: Any) -> datetime | None:
    return None if text is None else datetime.fromisoformat(str(text))


def utc(moment: datetime | None) -> datetime | None:
    """``moment`` in UTC; a naive one (as SQLite hands them back) is taken as UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


_OPERATOR_COLUMNS = (
    operators.c.id,
    operators.c.name,
    operators.c.party_id,
    operators.c.endpoint,
    operators.c.service_address,
    operators.c.ui_address,
    operators.c.status,
)
_OPERATOR_STATUS = {status.value: status for status in OperatorStatus}
_APPROVAL_COLUMNS = (
    operators.c.id,
    operators.c.status,
    operators.c.status_since,
    operators.c.status_decided_by,
    operators.c.status_reason,
    operators.c.status_audit_id,
)


def _operator(row: Sequence[Any]) -> Operator:
    return Operator(row[0], row[1], row[2], row[3], row[4], row[5], _OPERATOR_STATUS[row[6]])


def _approval(row: Sequence[Any]) -> Approval:
    return Approval(row[0], _OPERATOR_STATUS[row[1]], utc(_time(row[2])), row[3], row[4], row[5])


_STATUS = {status.value: status for status in AccountStatus}
_REASONS = {reason.value: reason for reason in Reason}
_REASON_TEXT = {reason: reason.value for reason in Reason}


def decide(recipient: str, row: Sequence[Any] | None, operator: Operator | None) -> Reachability:
    """The reachability of one recipient from its joined row (the columns of ``_reach_query``)."""
    if row is None:
        return Reachability(recipient, False, Reason.NO_MAILBOX, None, None, False)
    status = _STATUS[row[1]]
    pending = bool(row[2])
    refused = row[11] is not None
    reason: Reason | None = None
    if status is AccountStatus.NONE:
        reason = Reason.PENDING if pending else Reason.NO_MAILBOX
    elif status is AccountStatus.ANONYMOUS:
        reason = Reason.ANONYMOUS
    elif row[12] is not None:
        reason = Reason.DORMANT
    elif refused:
        reason = Reason.SENDER_REFUSED
    elif operator is None:
        reason = Reason.NO_OPERATOR
    elif operator.status is not OperatorStatus.APPROVED:
        reason = _NOT_APPROVED[operator.status.value]
    # Recipient v3 answers SenderAccepted=false for a recipient without an account (the recorded samples do). The
    # contract has no element for a reason: a holder at an operator that is not approved is not accepted either,
    # which tells a sender reading only the contract to use paper.
    accepted = status is not AccountStatus.NONE and not refused and reason not in _NOT_APPROVED.values()
    endpoint = None if reason is not None or operator is None else operator.endpoint or DISCOVERY
    # Positional: an answer builds 1,000 of these, and keywords cost a third more.
    return Reachability(
        recipient, reason is None, reason, operator, endpoint, accepted, status, pending, _time(row[3]), _time(row[11])
    )


def _wanted(dialect: str) -> Any:
    """``recipients.id`` among the ids, which travel as one parameter, a JSON array (unpacked by ``json_each`` on
    SQLite, ``jsonb_array_elements_text`` on PostgreSQL), so that a statement is compiled once and cached instead of
    being re-rendered with 1,000 placeholders per call. One string, not a PostgreSQL array: asyncpg encodes an array
    element by element, with two ABC isinstance checks each, which cost more than the rest of a recipient's answer."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        ids = func.jsonb_array_elements_text(cast(bindparam("ids", type_=String), JSONB)).table_valued("value")
    else:
        ids = func.json_each(bindparam("ids", type_=String)).table_valued("value")
    return recipients.c.id.in_(select(ids.c.value))


def _refused() -> Any:
    """This sender's refusal of each recipient (``refusals`` outer-joined on its primary key)."""
    sender = bindparam("sender", type_=String)
    return (refusals.c.recipient_id == recipients.c.id) & (refusals.c.sender_id == sender)


@functools.cache
def _reach_query(dialect: str) -> Any:
    """The one reachability query: recipients by primary key, their operator, this sender's refusal."""
    joined = recipients.outerjoin(operators, operators.c.id == recipients.c.operator_id).outerjoin(refusals, _refused())
    columns = (recipients.c.id, recipients.c.status, recipients.c.pending, recipients.c.last_registration)
    query = select(*columns, *_OPERATOR_COLUMNS, refusals.c.created_at, recipients.c.dormant_since)
    return query.select_from(joined).where(_wanted(dialect))


# Between the ids of a routes row: no valid recipient has a space (twelve digits, or eIDAS: printable ASCII).
_ID_SEPARATOR = " "


@functools.cache
def _routes_query(dialect: str) -> Any:
    """What routing needs of each recipient and nothing more (account status, pending, operator id, refused,
    dormant), one row per distinct state with the ids in that state joined by ``_ID_SEPARATOR``: a batch of 1,000
    comes back as a handful of rows instead of 1,000. The driver hands over each row in a step of its own that
    releases and takes back the GIL, and builds a tuple of six per row; with the event loop busy on the other core
    that cost twice the lookups themselves. No operator columns (``_operators_query`` reads the few operators once
    per answer) and no times to parse."""
    joined = recipients.outerjoin(refusals, _refused())
    refused = refusals.c.recipient_id.is_not(None)
    dormant = recipients.c.dormant_since.is_not(None)
    state = (recipients.c.status, recipients.c.pending, recipients.c.operator_id, refused, dormant)
    aggregate = func.string_agg if dialect == "postgresql" else func.group_concat
    ids = aggregate(recipients.c.id, literal_column(f"'{_ID_SEPARATOR}'"))
    return select(*state, ids).select_from(joined).where(_wanted(dialect)).group_by(*state)


@functools.cache
def _operators_query(dialect: str) -> Any:
    """Every operator (a register has a handful): what a routes answer names."""
    return select(*_OPERATOR_COLUMNS)


@functools.cache
def _compiled(dialect: Dialect, query: Callable[[str], Any]) -> tuple[str, tuple[str, ...]]:
    """A query as the driver's SQL text and the order of its positional parameters."""
    compiled = query(dialect.name).compile(dialect=dialect)
    return str(compiled), tuple(compiled.positiontup or ())


async def _fetch(conn: AsyncConnection, query: Callable[[str], Any], values: dict[str, Any]) -> list[Sequence[Any]]:
    """The rows of one of the queries above, through the driver itself: no SQLAlchemy row or result processing per
    row, one round trip (aiosqlite runs each cursor call in its own thread hop; ``execute_fetchall`` does it in one,
    which halves the latency when the machine is busy)."""
    dialect = conn.dialect
    sql, order = _compiled(dialect, query)
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None, "a checked-out connection has its driver connection"
    parameters = tuple(_json_array(values[k]) if k == "ids" else values[k] for k in order)
    if dialect.name == "sqlite":
        return list(await driver.execute_fetchall(sql, parameters))
    return list(await driver.fetch(sql, *parameters))


def _json_array(ids: list[str]) -> str:
    """``ids`` as a JSON array: joined as they are unless one needs escaping (only an eIDAS identifier can), a
    tenth of what ``json.dumps`` costs."""
    joined = '","'.join(ids)
    if joined.count('"') != 2 * (len(ids) - 1) or "\\" in joined:
        return json.dumps(ids)
    return f'["{joined}"]' if ids else "[]"


def _time(value: Any) -> datetime | None:
    # The raw SQLite path hands back the stored ISO 8601 text (see model.UtcDateTime).
    return value if value is None or isinstance(value, datetime) else datetime.fromisoformat(value)


class _RouteTable:
    """Routing outcomes of one answer, each distinct account state decided once (as :func:`decide` decides it)."""

    def __init__(self, operators_: dict[str, Operator]) -> None:
        self.operators = operators_
        self.used: list[tuple[Operator, str]] = []
        self.index: dict[str, int] = {}  # operator id -> its index in ``used``
        self.decided: dict[tuple[Any, ...], int | str] = {}

    def outcome(self, state: tuple[Any, ...]) -> int | str:
        """The result of a recipient in ``state`` (status, pending, operator id, refused, dormant)."""
        decided = self.decided.get(state)
        if decided is None:
            decided = self.decided[state] = self._decide(*state)
        return decided

    def _decide(self, status: str, pending: Any, operator_id: str | None, refused: Any, dormant: Any) -> int | str:
        account = _STATUS[status]
        if account is AccountStatus.NONE:
            return _REASON_TEXT[Reason.PENDING if pending else Reason.NO_MAILBOX]
        if account is AccountStatus.ANONYMOUS:
            return Reason.ANONYMOUS.value
        if dormant:
            return Reason.DORMANT.value
        if refused:
            return Reason.SENDER_REFUSED.value
        operator = None if operator_id is None else self.operators.get(operator_id)
        if operator is None:
            return Reason.NO_OPERATOR.value
        if operator.status is not OperatorStatus.APPROVED:
            return _REASON_TEXT[_NOT_APPROVED[operator.status.value]]
        where = self.index.get(operator.id)
        if where is None:
            where = self.index[operator.id] = len(self.used)
            self.used.append((operator, operator.endpoint or DISCOVERY))
        return where


class FarService:
    """Reachability, registration lookups and audited changes over one engine."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy: Policy = STRICT,
        parties: PartyPolicy | None = None,
        now: Callable[[], datetime] = _now,
        metrics: FarMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.parties = parties or PartyPolicy(check_digits=policy.check_digits)
        self.now = now
        self.metrics = metrics or FarMetrics()  # what the admin listener's /metrics shows
        # Set by far/holders.py when the minors policy tells senders: which unregistered ids are minors.
        self.minor: Callable[[str], bool] | None = None

    # ------------------------------------------------------------------------------------------- lookups

    async def is_reachable(self, sender: str, recipients_: Sequence[str]) -> list[Reachability]:
        """One answer per recipient, in order, from one query; at most 1,000 recipients.

        ``sender`` is a party id (far/parties.py: ``0192:974760673``, or a Swedish organisationsnummer as 10
        digits, ``16`` + 10 or ``0007:``). Raises InvalidInput for a bad sender or more than 1,000 recipients; an
        invalid recipient is answered with ``invalid-identifier``, not raised.
        """
        party = self.party(sender, "sender")
        with timed(self.metrics.duration, question="reachable"):
            results = await self._lookup(party, recipients_)
        self.metrics.answered("reachable", results)
        return results

    async def routes(self, sender: str, recipients_: Sequence[str]) -> Routes:
        """As :meth:`is_reachable` where only routing is asked (reachable, reason, operator, endpoint): what the
        router asks (``client.ReachabilityLookup``), for a letter and a mailing's batches alike.

        The same reasons in the same order (``test_far_service`` compares the two), from a query a third the
        size of the full one and without an object per recipient.
        """
        party = self.party(sender, "sender")
        with timed(self.metrics.duration, question="reachable"):
            answer = await self._routes(party, recipients_)
        self.metrics.counted("reachable", Counter(answer.results), len(answer.operators))
        return answer

    async def is_registered(self, recipients_: Sequence[str]) -> list[Reachability]:
        """Account status of each recipient (sender acceptance left out), at most 1,000, in one query."""
        # No party id is empty, so no refusal joins: the answer is the account.
        with timed(self.metrics.duration, question="registered"):
            results = await self._lookup("", recipients_)
        self.metrics.answered("registered", results)
        return results

    def _valid(self, ids: Sequence[str]) -> set[str]:
        if len(ids) > MAX_RECIPIENTS:
            raise InvalidInput(f"at most {MAX_RECIPIENTS} recipients at once", field="recipients")
        return valid_recipients(ids, self.policy)

    async def _lookup(self, sender: str, ids: Sequence[str]) -> list[Reachability]:
        valid = self._valid(ids)
        rows: dict[str, Sequence[Any]] = {}
        if valid:
            async with self.engine.connect() as conn:
                # Sorted keys walk the primary-key B-tree in order: fewer page visits than random order.
                fetched = await _fetch(conn, _reach_query, {"ids": sorted(valid), "sender": sender})
            rows = {row[0]: row for row in fetched}
        # A few operators serve millions: build each Operator once per answer, not once per recipient.
        known: dict[str, Operator] = {}
        for row in rows.values():
            if row[4] is not None and row[4] not in known:
                known[row[4]] = _operator(row[4:11])
        answers = [
            decide(r, rows.get(r), known.get(rows[r][4]) if r in rows else None)
            if r in valid
            else Reachability(str(r), False, Reason.INVALID_IDENTIFIER, None, None, False)
            for r in ids
        ]
        minor = self.minor
        if minor is not None:
            answers = [
                a._replace(reason=Reason.MINOR) if a.reason is Reason.NO_MAILBOX and minor(a.recipient) else a
                for a in answers
            ]
        return answers

    async def _routes(self, sender: str, ids: Sequence[str]) -> Routes:
        valid = self._valid(ids)
        fetched: list[Sequence[Any]] = []
        stored: list[Sequence[Any]] = []
        if valid:
            async with self.engine.connect() as conn:
                stored = await _fetch(conn, _operators_query, {})
                fetched = await _fetch(conn, _routes_query, {"ids": sorted(valid), "sender": sender})
        routing = _RouteTable({row[0]: _operator(row) for row in stored})
        # One row per distinct (status, pending, operator, refused, dormant), decided once for all its ids.
        found: dict[str, int | str] = {}
        for row in fetched:
            found.update(zip(row[5].split(_ID_SEPARATOR), repeat(routing.outcome(tuple(row[:5])))))
        no_mailbox, invalid = Reason.NO_MAILBOX.value, Reason.INVALID_IDENTIFIER.value
        if len(valid) == len(ids):  # every id valid (and distinct): no per-id test
            results = list(map(found.get, ids, repeat(no_mailbox)))
        else:
            results = [found.get(r, no_mailbox) if r in valid else invalid for r in ids]
        minor = self.minor
        if minor is not None:
            results = [
                Reason.MINOR.value if result == no_mailbox and minor(r) else result
                for r, result in zip(ids, results, strict=True)
            ]
        return Routes(routing.used, results)

    async def get_recipient(self, recipient: str) -> Recipient:
        """The stored recipient; NotFound when FaR does not know it."""
        rid = self._recipient(recipient)
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(recipients).where(recipients.c.id == rid.value))).first()
        if row is None:
            raise NotFound(f"no recipient {rid.value}")
        return _recipient_from_row(row)

    async def get_operator(self, operator_id: str) -> Operator:
        """The stored operator; NotFound when unknown."""
        oid = self._orgnr(operator_id, "id")
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*_OPERATOR_COLUMNS).where(operators.c.id == oid))).first()
        if row is None:
            raise NotFound(f"no operator {oid}")
        return _operator(row)

    async def list_operators(self) -> list[Operator]:
        """Every operator, by id."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(*_OPERATOR_COLUMNS).order_by(operators.c.id))).all()
        return [_operator(row) for row in rows]

    async def get_approval(self, operator_id: str) -> Approval:
        """The operator's approval; NotFound when the operator is unknown."""
        oid = self._orgnr(operator_id, "id")
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*_APPROVAL_COLUMNS).where(operators.c.id == oid))).first()
        if row is None:
            raise NotFound(f"no operator {oid}")
        return _approval(row)

    async def list_approvals(self) -> list[Approval]:
        """Every operator's approval, by operator id."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(*_APPROVAL_COLUMNS).order_by(operators.c.id))).all()
        return [_approval(row) for row in rows]

    async def revoked_operators(self, operator_ids: Iterable[str]) -> frozenset[str]:
        """Which of these operators are revoked (their credentials no longer write)."""
        return await revoked_operators(self.engine, operator_ids)

    async def list_refusals(self, recipient: str) -> list[dict[str, Any]]:
        """The senders a recipient refuses, with when."""
        rid = self._recipient(recipient)
        query = select(refusals.c.sender_id, refusals.c.created_at).where(refusals.c.recipient_id == rid.value)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(refusals.c.sender_id))).all()
        return [{"sender": row[0], "since": _iso(utc(row[1]))} for row in rows]

    async def audit_trail(self, entity_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The latest changes to one recipient, operator or refusal, newest first."""
        query = select(audit).where(audit.c.entity_id == entity_id).order_by(audit.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            {
                "at": _iso(utc(row.at)),
                "actor": row.actor,
                "action": row.action,
                "entity": row.entity,
                "entity_id": row.entity_id,
                "detail": None if row.detail is None else json.loads(row.detail),
            }
            for row in rows
        ]

    # ------------------------------------------------------------------------------------------- changes

    async def put_operator(
        self, operator: Operator, *, actor: str, guard: Guard | None = None, status: OperatorStatus | None = None
    ) -> bool:
        """Create or replace an operator; True when it was created. ``status``: the approval the caller read with
        the record (a record read and written back carries it); Conflict when it is not the stored one, since an
        approval is decided only through :meth:`decide_operator`."""
        oid = self._orgnr(operator.id, "id")
        if guard is not None:
            async with self.refusal_audited(actor, "operator", oid, "put operator"):
                guard(oid, oid)
        for field, value in (("name", operator.name), ("party_id", operator.party_id)):
            # Control characters could not be written into a Recipient v3 answer (XML 1.0 forbids them).
            if not value or len(value) > 512 or not value.isprintable():
                raise InvalidInput(f"{field} must be 1 to 512 printable characters", field=field)
        values = {
            "name": operator.name,
            "party_id": operator.party_id,
            "endpoint": operator.endpoint,
            "service_address": operator.service_address,
            "ui_address": operator.ui_address,
            "updated_at": self.now(),
        }
        async with self.engine.begin() as conn:
            if status is not None:
                stored = await conn.scalar(select(operators.c.status).where(operators.c.id == oid))
                if stored is not None and stored != status.value:
                    why = f"operator {oid} is {stored}: its approval is decided through …/approval"
                    raise Conflict(why, field="status")
            done = await conn.execute(update(operators).where(operators.c.id == oid).values(**values))
            created = done.rowcount == 0
            detail = Operator(oid, operator.name, operator.party_id, operator.endpoint).to_json()
            del detail["status"]  # an approval is decided apart (decide_operator), never by this change
            if created:
                # Created by the register's administrators: approved by that act. Created by the operator itself
                # (a guard): suspended until the administrators approve it, so no operator approves itself.
                status = OperatorStatus.APPROVED if guard is None else OperatorStatus.SUSPENDED
                why = "registered by the administrators" if guard is None else "awaiting approval"
                await conn.execute(
                    operators.insert().values(
                        id=oid, status=status.value, status_since=values["updated_at"], status_decided_by=actor[:128],
                        status_reason=why, **values,
                    )
                )  # fmt: skip
                detail["status"] = status.value
            audit_id = await self._audit(conn, actor, "create" if created else "update", "operator", oid, detail)
            if created:
                await conn.execute(update(operators).where(operators.c.id == oid).values(status_audit_id=audit_id))
        return created

    async def decide_operator(
        self, operator_id: str, status: OperatorStatus, *, reason: str | None, actor: str
    ) -> tuple[Approval, bool]:
        """Approve, suspend or revoke an operator; the approval and whether it changed.

        The caller must hold the register's ``approve`` scope (far/app.py checks it; an operator's own write scope
        never does). The decision is audited (``approve``, ``suspend``, ``revoke``) in the transaction that stores
        it, and the operator remembers that audit row. A suspension or revocation needs a reason; a revocation is
        final (Conflict for any later decision but the same one). The same status again changes nothing.
        """
        oid = self._orgnr(operator_id, "id")
        if reason is not None and (len(reason) > 512 or not reason.isprintable()):
            raise InvalidInput("reason must be at most 512 printable characters", field="reason")
        if status is not OperatorStatus.APPROVED and not reason:
            raise InvalidInput(f"a decision to {DECISIONS[status]} an operator needs a reason", field="reason")
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(*_APPROVAL_COLUMNS).where(operators.c.id == oid))).first()
            if row is None:
                raise NotFound(f"no operator {oid}")
            current = _approval(row)
            if current.status is status:
                return current, False
            if current.status is OperatorStatus.REVOKED:
                raise Conflict(f"operator {oid} is revoked, which is final; register it anew to approve it")
            at = self.now()
            detail = {"status": status.value, "previous": current.status.value, "reason": reason}
            audit_id = await self._audit(conn, actor, DECISIONS[status], "operator", oid, detail)
            decided = {
                "status": status.value,
                "status_since": at,
                "status_decided_by": actor[:128],
                "status_reason": reason,
                "status_audit_id": audit_id,
            }
            await conn.execute(update(operators).where(operators.c.id == oid).values(**decided))
        return Approval(oid, status, utc(at), actor[:128], reason, audit_id), True

    async def delete_operator(self, operator_id: str, *, actor: str, guard: Guard | None = None) -> None:
        """Delete an operator that no recipient uses; Conflict otherwise."""
        oid = self._orgnr(operator_id, "id")
        if guard is not None:
            async with self.refusal_audited(actor, "operator", oid, "delete operator"):
                guard(oid, oid)
        async with self.engine.begin() as conn:
            used = await conn.scalar(
                select(func.count()).select_from(
                    select(recipients.c.id).where(recipients.c.operator_id == oid).limit(1).subquery()
                )
            )
            if used:
                raise Conflict(f"operator {oid} still has recipients")
            done = await conn.execute(delete(operators).where(operators.c.id == oid))
            if done.rowcount == 0:
                raise NotFound(f"no operator {oid}")
            await self._audit(conn, actor, "delete", "operator", oid, None)

    async def put_recipient(
        self,
        recipient: str,
        *,
        status: AccountStatus,
        pending: bool = False,
        operator_id: str | None = None,
        last_registration: datetime | None = None,
        actor: str,
        guard: Guard | None = None,
    ) -> tuple[Recipient, bool]:
        """Create or replace a recipient; the stored recipient and whether it was created."""
        rid = self._recipient(recipient)
        oid = None if operator_id is None else self._orgnr(operator_id, "operator")
        if status is not AccountStatus.NONE and oid is None:
            raise InvalidInput(f"a {status.value} account needs an operator", field="operator")
        stored = Recipient(rid.value, rid.kind, status, pending, oid, utc(last_registration))
        values = {
            "kind": rid.kind.value,
            "status": status.value,
            "pending": pending,
            "operator_id": oid,
            "last_registration": stored.last_registration,
            "updated_at": self.now(),
        }
        attempted = f"put recipient (operator {oid})"
        async with self.refusal_audited(actor, "recipient", rid.value, attempted), self.engine.begin() as conn:
            if oid is not None and await conn.scalar(select(operators.c.id).where(operators.c.id == oid)) is None:
                raise InvalidInput(f"no operator {oid}", field="operator")
            if guard is not None:
                # In the write transaction: the recipient cannot move between the check and the change.
                guard(await conn.scalar(select(recipients.c.operator_id).where(recipients.c.id == rid.value)), oid)
            done = await conn.execute(update(recipients).where(recipients.c.id == rid.value).values(**values))
            created = done.rowcount == 0
            if created:
                try:
                    await conn.execute(recipients.insert().values(id=rid.value, **values))
                except IntegrityError:
                    raise Conflict(f"recipient {rid.value} was created concurrently; retry") from None
            action = "create" if created else "update"
            await self._audit(conn, actor, action, "recipient", rid.value, stored.to_json())
        return stored, created

    async def delete_recipient(self, recipient: str, *, actor: str, guard: Guard | None = None) -> None:
        """Delete a recipient and its refusals."""
        rid = self._recipient(recipient)
        async with self.refusal_audited(actor, "recipient", rid.value, "delete recipient"), self.engine.begin() as conn:
            if guard is not None:
                guard(await conn.scalar(select(recipients.c.operator_id).where(recipients.c.id == rid.value)), None)
            done = await conn.execute(delete(recipients).where(recipients.c.id == rid.value))
            if done.rowcount == 0:
                raise NotFound(f"no recipient {rid.value}")
            await conn.execute(delete(refusals).where(refusals.c.recipient_id == rid.value))
            await self._audit(conn, actor, "delete", "recipient", rid.value, None)

    async def refuse_sender(self, recipient: str, sender_id: str, *, actor: str, guard: Guard | None = None) -> bool:
        """Record that ``recipient`` refuses mail from the sender ``sender_id`` (a party id); True when it is new."""
        rid = self._recipient(recipient)
        sender = self.party(sender_id, "sender")
        async with self.refusal_audited(actor, "refusal", f"{rid.value}/{sender}", "refuse sender"):
            await self._guard(guard, rid.value, ...)
        key = (refusals.c.recipient_id == rid.value) & (refusals.c.sender_id == sender)
        async with self.engine.begin() as conn:
            if await conn.scalar(select(recipients.c.id).where(recipients.c.id == rid.value)) is None:
                raise NotFound(f"no recipient {rid.value}")
            if await conn.scalar(select(refusals.c.sender_id).where(key)) is not None:
                return False
            await conn.execute(
                refusals.insert().values(recipient_id=rid.value, sender_id=sender, created_at=self.now())
            )
            await self._audit(conn, actor, "refuse", "refusal", f"{rid.value}/{sender}", {"sender": sender})
        return True

    async def accept_sender(self, recipient: str, sender_id: str, *, actor: str, guard: Guard | None = None) -> None:
        """Remove a refusal; NotFound when there was none."""
        rid = self._recipient(recipient)
        sender = self.party(sender_id, "sender")
        async with self.refusal_audited(actor, "refusal", f"{rid.value}/{sender}", "accept sender"):
            await self._guard(guard, rid.value, ...)
        key = (refusals.c.recipient_id == rid.value) & (refusals.c.sender_id == sender)
        async with self.engine.begin() as conn:
            done = await conn.execute(delete(refusals).where(key))
            if done.rowcount == 0:
                raise NotFound(f"{rid.value} does not refuse {sender}")
            await self._audit(conn, actor, "accept", "refusal", f"{rid.value}/{sender}", None)

    # ------------------------------------------------------------------------------------------- helpers

    async def _guard(self, guard: Guard | None, recipient: str, after: str | types.EllipsisType | None) -> None:
        """Ask ``guard`` about a change of ``recipient`` to operator ``after`` (``...``: its operator stays)."""
        if guard is None:
            return
        async with self.engine.connect() as conn:
            current = await conn.scalar(select(recipients.c.operator_id).where(recipients.c.id == recipient))
        guard(current, current if after is ... else after)

    @contextlib.asynccontextmanager
    async def refusal_audited(self, actor: str, entity: str, entity_id: str, attempted: str) -> AsyncIterator[None]:
        """Record a Forbidden raised inside as a ``refused`` audit row (who tried what), then let it go on."""
        try:
            yield
        except Forbidden as exc:
            await self.audit_refusal(actor, entity, entity_id, attempted, exc.detail)
            raise

    async def audit_refusal(self, actor: str, entity: str, entity_id: str, attempted: str, reason: str) -> None:
        """Record a change FaR refused as a ``refused`` audit row: who tried what, and why not."""
        async with self.engine.begin() as conn:
            await self._audit(conn, actor, "refused", entity, entity_id, {"attempted": attempted, "reason": reason})

    def _recipient(self, value: str) -> RecipientId:
        try:
            return parse_recipient(value, self.policy)
        except InvalidIdentifier as exc:
            raise InvalidInput(f"recipient: {exc.reason}", field="recipient") from None

    def party(self, value: str, field: str) -> str:
        """The canonical party id of a sender; InvalidInput naming ``field`` when it is not one."""
        try:
            return parse_party_id(value, self.parties)
        except InvalidIdentifier as exc:
            raise InvalidInput(f"{field}: {exc.reason}", field=field) from None

    def _orgnr(self, value: str, field: str) -> str:
        try:
            return parse_orgnr(value, self.policy)
        except InvalidIdentifier as exc:
            raise InvalidInput(f"{field}: {exc.reason}", field=field) from None

    async def _audit(
        self, conn: AsyncConnection, actor: str, action: str, entity: str, entity_id: str, detail: Any
    ) -> int | None:
        """Write one audit row; its id."""
        done = await conn.execute(
            audit.insert().values(
                at=self.now(),
                actor=actor[:128],
                action=action,
                entity=entity,
                entity_id=entity_id,
                detail=None if detail is None else json.dumps(detail, sort_keys=True),
            )
        )
        key = done.inserted_primary_key
        return None if key is None else int(key[0])


async def revoked_operators(engine: AsyncEngine, operator_ids: Iterable[str]) -> frozenset[str]:
    """Which of these operators are revoked, in one primary-key query."""
    wanted = sorted(set(operator_ids))
    if not wanted:
        return frozenset()
    query = select(operators.c.id).where(operators.c.id.in_(wanted), operators.c.status == OperatorStatus.REVOKED.value)
    async with engine.connect() as conn:
        return frozenset((await conn.execute(query)).scalars())


def _recipient_from_row(row: Any) -> Recipient:
    return Recipient(
        id=row.id,
        kind=Kind(row.kind),
        status=AccountStatus(row.status),
        pending=bool(row.pending),
        operator_id=row.operator_id,
        last_registration=utc(row.last_registration),
    )
