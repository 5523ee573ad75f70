"""The decision table for outgoing messages: total, legal against the store's transitions, bounded retries."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from accesspoint.core.errors import ErrorCode
from accesspoint.msh.next_step import (
    OUTGOING_STATES,
    TABLE,
    TARGETS,
    Action,
    Budget,
    Channel,
    Facts,
    Outcome,
    decide,
    describe_table,
)
from accesspoint.store.states import FINAL, Direction, MessageState, check_transition
from pmode.model import ReceptionAwareness
from tests.conftest import REPO

NOW = datetime(2026, 3, 1, tzinfo=UTC)
MISSING_RECEIPT = ErrorCode.MISSING_RECEIPT.code
ATTEMPT_OUTCOMES = [o for o in Outcome if o not in (Outcome.RECEIPT, Outcome.ERROR_SIGNAL, Outcome.WARNING_SIGNAL)]

awareness = st.builds(
    ReceptionAwareness,
    enabled=st.booleans(),
    retries=st.integers(0, 8),
    backoff_base=st.integers(1, 3600).map(lambda s: timedelta(seconds=s)),
    backoff_max=st.integers(3600, 7200).map(lambda s: timedelta(seconds=s)),
    jitter=st.floats(0, 0.5),
)
facts = st.builds(
    Facts,
    state=st.sampled_from(OUTGOING_STATES),
    attempts=st.integers(0, 12),
    awareness=awareness,
    channel=st.sampled_from(Channel),
)


def test_every_combination_has_exactly_one_row_and_its_move_is_legal_in_the_store() -> None:
    """All 400 (outcome, channel, budget, state) cases are decided, each by a move the store's table allows."""
    keys = list(itertools.product(Outcome, Channel, Budget, OUTGOING_STATES))
    assert set(TABLE) == set(keys)
    for key in keys:
        target = TARGETS[TABLE[key].action]
        if target is not None:
            check_transition(Direction.OUT, key[3], target)


@given(facts, st.sampled_from(Outcome), st.floats(0, 0.999))
def test_a_settled_message_never_moves_and_every_failure_carries_a_code(
    given_facts: Facts, outcome: Outcome, jitter: float
) -> None:
    """Delivered or failed stays put whatever comes; fail and dead-letter always name an ebMS code."""
    decision = decide(outcome, given_facts, now=NOW, jitter=jitter, code="EBMS:0004")
    if given_facts.state in FINAL[Direction.OUT]:
        assert decision.action in (Action.KEEP, Action.IGNORE) and decision.target is None
    if decision.action in (Action.FAIL, Action.DEAD_LETTER):
        assert decision.code is not None and decision.code.startswith("EBMS:")
        assert decision.target is MessageState.FAILED
    else:
        assert decision.code is None


@given(facts, st.floats(0, 0.999))
def test_a_retry_is_due_after_now_within_the_legs_backoff(given_facts: Facts, jitter: float) -> None:
    """RETRY and AWAIT are due strictly later, no later than backoff_max stretched by the jitter."""
    sending = Facts(MessageState.SENDING, given_facts.attempts, given_facts.awareness, given_facts.channel)
    for outcome in (Outcome.TRANSIENT, Outcome.ACCEPTED, Outcome.PULLED):
        decision = decide(outcome, sending, now=NOW, jitter=jitter)
        if decision.action in (Action.RETRY, Action.AWAIT):
            assert decision.at is not None
            aware = sending.awareness
            assert NOW < decision.at <= NOW + aware.backoff_max * (1 + aware.jitter)
        else:
            assert decision.at is None


@settings(max_examples=300)
@given(awareness, st.lists(st.sampled_from([Outcome.TRANSIENT, Outcome.ACCEPTED]), min_size=1, max_size=30))
def test_a_message_is_sent_at_most_once_more_than_its_retries_then_fails_with_missing_receipt(
    aware: ReceptionAwareness, outcomes: list[Outcome]
) -> None:
    """Walking claims and failed or unanswered attempts: at most retries + 1 sends, then EBMS:0301, then nothing."""
    state, sends, steps = MessageState.SUBMITTED, 0, iter(outcomes)
    final = None
    for attempts in range(1, 2 * len(outcomes) + 3):  # each claim counts an attempt and moves it to sending
        claimed = decide(Outcome.CLAIMED, Facts(MessageState.SENDING, attempts, aware), now=NOW, jitter=0.5)
        if claimed.action is not Action.SEND:
            final = claimed
            break
        sends += 1
        outcome = next(steps, None)
        if outcome is None:
            break
        decision = decide(outcome, Facts(MessageState.SENDING, attempts, aware), now=NOW, jitter=0.5)
        check_transition(Direction.OUT, MessageState.SENDING, decision.target or MessageState.SENDING)
        state = decision.target or state
        if state is MessageState.FAILED:
            final = decision
            break
    assert sends <= (aware.retries + 1 if aware.enabled else 1)
    if final is not None:
        assert (final.action, final.code) == (Action.FAIL, MISSING_RECEIPT)


def test_the_last_attempt_still_waits_for_an_asynchronous_receipt_but_no_further_attempt_follows() -> None:
    """After the last attempt an accepted message waits once more; the claim after that fails it with EBMS:0301."""
    aware = ReceptionAwareness(retries=2, backoff_base=timedelta(seconds=10), jitter=0.0)
    last = Facts(MessageState.SENDING, 3, aware)
    assert decide(Outcome.TRANSIENT, last, now=NOW, jitter=0.5).code == MISSING_RECEIPT
    waits = decide(Outcome.ACCEPTED, last, now=NOW, jitter=0.5)
    assert (waits.action, waits.at) == (Action.RETRY, NOW + timedelta(seconds=40))
    spent = decide(Outcome.CLAIMED, Facts(MessageState.SENDING, 4, aware), now=NOW, jitter=0.5)
    assert (spent.action, spent.code, spent.detail) == (Action.FAIL, MISSING_RECEIPT, "no receipt after 3 attempts")


def test_signals_settle_only_messages_in_flight() -> None:
    """A receipt delivers and an error fails a message in flight; late ones are kept; warnings never settle."""
    aware = ReceptionAwareness()
    for state in (MessageState.SENDING, MessageState.AWAITING_RECEIPT):
        assert decide(Outcome.RECEIPT, Facts(state, 1, aware), now=NOW, jitter=0).action is Action.DELIVER
        failed = decide(Outcome.ERROR_SIGNAL, Facts(state, 1, aware), now=NOW, jitter=0, code="EBMS:0303")
        assert (failed.action, failed.code) == (Action.FAIL, "EBMS:0303")
        assert decide(Outcome.WARNING_SIGNAL, Facts(state, 1, aware), now=NOW, jitter=0).action is Action.KEEP
    for state in (MessageState.SUBMITTED, MessageState.DELIVERED, MessageState.FAILED):
        assert decide(Outcome.RECEIPT, Facts(state, 1, aware), now=NOW, jitter=0).action is Action.KEEP


def test_pull_legs_are_offered_to_pullers_and_unsendable_messages_are_dead_lettered() -> None:
    """A claimed pull-leg message goes to a puller; a pulled one waits for its receipt; no P-Mode: dead letter."""
    aware = ReceptionAwareness(retries=1, backoff_base=timedelta(seconds=5), jitter=0.0)
    pull = Facts(MessageState.SENDING, 1, aware, Channel.PULL)
    assert decide(Outcome.CLAIMED, pull, now=NOW, jitter=0).action is Action.OFFER
    pulled = decide(Outcome.PULLED, pull, now=NOW, jitter=0)
    assert (pulled.action, pulled.target, pulled.at) == (
        Action.AWAIT,
        MessageState.AWAITING_RECEIPT,
        NOW + timedelta(seconds=5),
    )
    gone = decide(Outcome.UNSENDABLE, pull, now=NOW, jitter=0, code="EBMS:0010", detail="P-Mode gone")
    assert (gone.action, gone.target, gone.code) == (Action.DEAD_LETTER, MessageState.FAILED, "EBMS:0010")


def test_the_operators_guide_shows_the_table_as_generated() -> None:
    """accesspoint/msh/README.md carries the decision table exactly as describe_table() writes it."""
    assert describe_table() in (REPO / "accesspoint" / "msh" / "README.md").read_text("utf-8")
