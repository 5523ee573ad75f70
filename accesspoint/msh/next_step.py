"""What happens next to an outgoing message, decided from what just happened to it: one table, no I/O.

The send workers, the pull server and the signal handler each report an ``Outcome`` (a worker claimed the
message, the partner answered with a receipt, the connection failed, ...) with the ``Facts`` of the message
(its state, attempts so far, its leg's reception awareness, push or pull); ``decide`` looks the case up in
``TABLE`` and returns the ``Decision``: send it, offer it to a puller, record it delivered, retry it at a time,
fail it (with the partner's code, or EBMS:0301 MissingReceipt once the retries are spent), dead-letter it
(this access point cannot send it at all: an operator must look), keep a late signal as evidence, or ignore a
stale outcome. Every combination of (outcome, channel, budget, state) has exactly one row; the shell turns the
decision into one compare-and-set transition (``TARGETS``), which the store's table allows
(``tests/test_msh_next_step.py`` walks every row).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from accesspoint.core.errors import ErrorCode
from accesspoint.store.states import MessageState
from pmode.model import ReceptionAwareness


class Outcome(StrEnum):
    """What just happened to an outgoing message."""

    CLAIMED = "claimed"  # a worker won its claim (state sending, attempts counted): go ahead?
    PULLED = "pulled"  # handed to a partner's PullRequest
    RECEIPT = "receipt"  # a receipt that verified and echoes what was signed
    ERROR_SIGNAL = "error-signal"  # an error signal with severity failure
    WARNING_SIGNAL = "warning-signal"  # an error signal with warnings only
    ACCEPTED = "accepted"  # HTTP 2xx without a synchronous receipt: the receipt comes later
    TRANSIENT = "transient"  # unreachable, timeout, HTTP 5xx, discovery or a revocation responder down for now
    INVALID_ANSWER = "invalid-answer"  # an answer that is no usable receipt (EBMS:0302, a bad signature, ...)
    REFUSED = "refused"  # the partner must not be sent to (its certificate untrusted, not registered)
    UNSENDABLE = "unsendable"  # this access point cannot send it (P-Mode gone, no endpoint, cannot be secured)


class Channel(StrEnum):
    """How the message leaves: pushed by a worker, or pulled by the partner."""

    PUSH = "push"
    PULL = "pull"


class Budget(StrEnum):
    """Where the message stands against its leg's reception awareness (retries after the first attempt)."""

    LEFT = "retries-left"  # attempts <= retries: another attempt may follow
    LAST = "last-made"  # attempts == retries + 1: the last attempt was made; only its receipt may still come
    SPENT = "spent"  # attempts > retries + 1: the wait after the last attempt ran out
    UNAWARE = "unaware"  # reception awareness is off: one attempt, no retries, no waiting


class Action(StrEnum):
    """What the shell does."""

    SEND = "send"  # push it now
    OFFER = "offer"  # to a puller: the pull server hands it over now, a worker parks it until the next PullRequest
    AWAIT = "await"  # pulled: wait for its receipt until ``at``, then offer it again
    DELIVER = "deliver"  # delivered: the receipt is kept with the move
    RETRY = "retry"  # awaiting_receipt until ``at``, then a worker tries again
    FAIL = "fail"  # failed with ``code``: the exchange failed
    DEAD_LETTER = "dead-letter"  # failed with ``code``: this access point cannot send it; logged for an operator
    KEEP = "keep"  # keep the signal as evidence; the message stays as it is (already settled)
    IGNORE = "ignore"  # a stale outcome (the message moved on meanwhile): nothing to do


# The state each action moves the message to (None: it stays where it is).
TARGETS: dict[Action, MessageState | None] = {
    Action.SEND: None,
    Action.OFFER: MessageState.AWAITING_RECEIPT,
    Action.AWAIT: MessageState.AWAITING_RECEIPT,
    Action.DELIVER: MessageState.DELIVERED,
    Action.RETRY: MessageState.AWAITING_RECEIPT,
    Action.FAIL: MessageState.FAILED,
    Action.DEAD_LETTER: MessageState.FAILED,
    Action.KEEP: None,
    Action.IGNORE: None,
}

OUTGOING_STATES = (
    MessageState.SUBMITTED,
    MessageState.SENDING,
    MessageState.AWAITING_RECEIPT,
    MessageState.DELIVERED,
    MessageState.FAILED,
    MessageState.DEAD_LETTER,  # parked by an operator: a late signal is only kept, a stale attempt ignored
)
_SIGNALS = frozenset({Outcome.RECEIPT, Outcome.ERROR_SIGNAL, Outcome.WARNING_SIGNAL})
_ATTEMPTS = frozenset(Outcome) - _SIGNALS  # outcomes of an attempt: only a message in `sending` has them
_ACTIVE = frozenset({MessageState.SENDING, MessageState.AWAITING_RECEIPT})
_ANY_CHANNEL = frozenset(Channel)
_ANY_BUDGET = frozenset(Budget)
_ALL_STATES = frozenset(OUTGOING_STATES)

Key = tuple[Outcome, Channel, Budget, MessageState]


@dataclass(frozen=True, slots=True)
class _Rule:
    outcomes: frozenset[Outcome]
    action: Action
    channels: frozenset[Channel] = _ANY_CHANNEL
    budgets: frozenset[Budget] = _ANY_BUDGET
    states: frozenset[MessageState] = _ALL_STATES
    missing_receipt: bool = False  # the failure is EBMS:0301 rather than the outcome's own code
    why: str = ""


def _rule(
    outcomes: Iterable[Outcome],
    action: Action,
    *,
    channels: Iterable[Channel] = _ANY_CHANNEL,
    budgets: Iterable[Budget] = _ANY_BUDGET,
    states: Iterable[MessageState] = _ALL_STATES,
    missing_receipt: bool = False,
    why: str = "",
) -> _Rule:
    return _Rule(
        frozenset(outcomes), action, frozenset(channels), frozenset(budgets), frozenset(states), missing_receipt, why
    )


# First match wins; the table below is these rules expanded over every combination.
_RULES = (
    # Signals: a receipt or error settles a message in flight; one that is settled already only keeps it.
    _rule(_SIGNALS, Action.KEEP, states=_ALL_STATES - _ACTIVE, why="not in flight: kept as evidence"),
    _rule({Outcome.WARNING_SIGNAL}, Action.KEEP, why="warnings do not settle a message"),
    _rule({Outcome.RECEIPT}, Action.DELIVER, why="receipt verified"),
    _rule({Outcome.ERROR_SIGNAL}, Action.FAIL, why="the partner's error signal"),
    # Attempts: only a claimed message (sending) has them; anything else is a stale report.
    _rule(_ATTEMPTS, Action.IGNORE, states=_ALL_STATES - {MessageState.SENDING}, why="moved on meanwhile"),
    _rule({Outcome.CLAIMED}, Action.FAIL, budgets={Budget.SPENT}, missing_receipt=True, why="no receipt came"),
    _rule({Outcome.CLAIMED}, Action.OFFER, channels={Channel.PULL}, why="the partner pulls it"),
    _rule({Outcome.CLAIMED}, Action.SEND),
    _rule({Outcome.PULLED}, Action.OFFER, budgets={Budget.UNAWARE}, why="pulled; no retry without awareness"),
    _rule({Outcome.PULLED}, Action.AWAIT, why="pulled; offered again after the retry delay"),
    _rule({Outcome.ACCEPTED}, Action.FAIL, budgets={Budget.UNAWARE}, missing_receipt=True, why="no receipt"),
    _rule({Outcome.ACCEPTED}, Action.RETRY, why="its receipt comes asynchronously: waited for"),
    _rule({Outcome.TRANSIENT}, Action.RETRY, budgets={Budget.LEFT}, why="tried again later"),
    _rule({Outcome.TRANSIENT}, Action.FAIL, missing_receipt=True, why="no retries left"),
    _rule({Outcome.INVALID_ANSWER, Outcome.REFUSED}, Action.FAIL),
    _rule({Outcome.UNSENDABLE}, Action.DEAD_LETTER),
)


def _expand() -> dict[Key, _Rule]:
    table: dict[Key, _Rule] = {}
    for key in itertools.product(Outcome, Channel, Budget, OUTGOING_STATES):
        outcome, channel, budget, state = key
        for rule in _RULES:
            if (
                outcome in rule.outcomes
                and channel in rule.channels
                and budget in rule.budgets
                and state in rule.states
            ):
                table[key] = rule
                break
    return table


TABLE: dict[Key, _Rule] = _expand()


@dataclass(frozen=True, slots=True)
class Facts:
    """What the decision needs to know about a message."""

    state: MessageState
    attempts: int  # attempts made so far, this one included (a claim counts one)
    awareness: ReceptionAwareness
    channel: Channel = Channel.PUSH

    @property
    def budget(self) -> Budget:
        """The message's standing against its retries."""
        if not self.awareness.enabled:
            return Budget.UNAWARE
        retries = self.awareness.retries
        if self.attempts <= retries:
            return Budget.LEFT
        return Budget.LAST if self.attempts == retries + 1 else Budget.SPENT


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do: the action, the state it moves to, when to try again, the ebMS code of a failure."""

    action: Action
    target: MessageState | None
    at: datetime | None = None  # RETRY and AWAIT: when the message is due again
    code: str | None = None  # FAIL and DEAD_LETTER
    detail: str = ""


def decide(
    outcome: Outcome,
    facts: Facts,
    *,
    now: datetime,
    jitter: float,
    code: str | None = None,
    detail: str = "",
) -> Decision:
    """The next step for a message with ``facts`` after ``outcome``.

    ``jitter`` in [0, 1) spreads retries (drawn by the caller); ``code`` is the ebMS code the outcome carries
    (the partner's error, why an answer or a partner was refused) and ``detail`` its reason.
    """
    rule = TABLE[(outcome, facts.channel, facts.budget, facts.state)]
    action = rule.action
    at = None
    if action in (Action.RETRY, Action.AWAIT):
        at = now + facts.awareness.retry_delay(max(facts.attempts - 1, 0), jitter)
    failed_code = None
    if action in (Action.FAIL, Action.DEAD_LETTER):
        if rule.missing_receipt:
            failed_code = ErrorCode.MISSING_RECEIPT.code
            previous = facts.attempts - 1 if outcome is Outcome.CLAIMED else facts.attempts
            detail = f"no receipt after {previous} attempts" + (f": {detail}" if detail else "")
        else:
            failed_code = code or ErrorCode.OTHER.code
    reason = detail or rule.why
    return Decision(action, TARGETS[action], at, failed_code, reason)


def describe_table() -> str:
    """The rules as a Markdown table (first match wins), generated for the operator's guide."""
    lines = ["| outcome | channel | budget | state | next step |", "|---|---|---|---|---|"]

    def names(chosen: Iterable[StrEnum], every: Iterable[StrEnum]) -> str:
        picked = [c.value for c in every if c in set(chosen)]
        return "any" if len(picked) == len(list(every)) else ", ".join(picked)

    for rule in _RULES:
        step = rule.action.value + (" (EBMS:0301)" if rule.missing_receipt else "")
        step += f": {rule.why}" if rule.why else ""
        states = names(rule.states, OUTGOING_STATES)
        lines.append(
            f"| {names(rule.outcomes, Outcome)} | {names(rule.channels, Channel)} "
            f"| {names(rule.budgets, Budget)} | {states} | {step} |"
        )
    return "\n".join(lines) + "\n"
