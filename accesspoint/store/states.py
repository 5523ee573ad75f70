"""The message lifecycles as one transition table: anything not listed is illegal."""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    """Which way a message travels through this access point."""

    IN = "in"
    OUT = "out"


class MessageState(StrEnum):
    """Every state a stored message can be in; the value is what the database holds."""

    # outgoing
    SUBMITTED = "submitted"
    SENDING = "sending"
    AWAITING_RECEIPT = "awaiting_receipt"
    DELIVERED = "delivered"
    FAILED = "failed"
    # Parked by an operator (the console): nothing claims, retries or purges it until an operator sends it again.
    DEAD_LETTER = "dead_letter"
    # incoming
    RECEIVED = "received"
    DELIVERED_TO_BACKEND = "delivered_to_backend"
    ACKNOWLEDGED = "acknowledged"


S = MessageState

INITIAL: dict[Direction, MessageState] = {Direction.OUT: S.SUBMITTED, Direction.IN: S.RECEIVED}

# Moves only an operator makes (the console, through ``accesspoint.msh.operations``), never the exchange itself: a
# resend of a failed or parked message (same MessageId: the partner's duplicate elimination still holds), and
# parking a message in the dead-letter state, out of the workers' and the purge's way.
OPERATOR_MOVES: dict[Direction, frozenset[tuple[MessageState, MessageState]]] = {
    Direction.OUT: frozenset(
        {
            (S.FAILED, S.SUBMITTED),
            (S.DEAD_LETTER, S.SUBMITTED),
            (S.SUBMITTED, S.DEAD_LETTER),
            (S.AWAITING_RECEIPT, S.DEAD_LETTER),
            (S.FAILED, S.DEAD_LETTER),
        }
    ),
    Direction.IN: frozenset(),
}

TRANSITIONS: dict[Direction, frozenset[tuple[MessageState, MessageState]]] = {
    Direction.OUT: frozenset(
        {
            (S.SUBMITTED, S.SENDING),  # a worker claimed it (with a lease)
            (S.SENDING, S.AWAITING_RECEIPT),  # posted, or the post failed and a retry is scheduled
            # A synchronous receipt (or error signal) arrives in the HTTP response itself, so the extra
            # write through awaiting_receipt would only cost a commit per message.
            (S.SENDING, S.DELIVERED),
            (S.SENDING, S.FAILED),
            (S.SENDING, S.SENDING),  # the lease of a crashed worker expired and another worker took over
            # Reception awareness: the retry path. Failed stays final, so retention can purge it.
            (S.AWAITING_RECEIPT, S.SENDING),
            (S.AWAITING_RECEIPT, S.DELIVERED),
            (S.AWAITING_RECEIPT, S.FAILED),  # an error signal, or MissingReceipt (EBMS:0301) after the last try
        }
    )
    | OPERATOR_MOVES[Direction.OUT],
    Direction.IN: frozenset(
        {
            (S.RECEIVED, S.DELIVERED_TO_BACKEND),
            (S.DELIVERED_TO_BACKEND, S.ACKNOWLEDGED),
        }
    ),
}

# States after which nothing happens on its own (only an operator's move leaves one); retention purges only these.
FINAL: dict[Direction, frozenset[MessageState]] = {
    Direction.OUT: frozenset({S.DELIVERED, S.FAILED}),
    Direction.IN: frozenset({S.ACKNOWLEDGED}),
}


class IllegalTransition(Exception):
    """A transition the table does not allow for that direction."""

    def __init__(self, direction: Direction, source: MessageState, target: MessageState) -> None:
        super().__init__(f"{direction.value}: {source.value} -> {target.value} is not a legal transition")
        self.direction = direction
        self.source = source
        self.target = target


def check_transition(direction: Direction, source: MessageState, target: MessageState) -> None:
    """Raise IllegalTransition unless the table allows source -> target for that direction."""
    if (source, target) not in TRANSITIONS[direction]:
        raise IllegalTransition(direction, source, target)


def states_of(direction: Direction) -> frozenset[MessageState]:
    """Every state a message of that direction can reach."""
    return frozenset(state for pair in TRANSITIONS[direction] for state in pair) | {INITIAL[direction]}


def diagram(direction: Direction) -> str:
    """The lifecycle of one direction as a Mermaid state diagram, generated from the table for the docs."""
    order = list(MessageState)
    pairs = sorted(TRANSITIONS[direction], key=lambda pair: (order.index(pair[0]), order.index(pair[1])))
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL[direction].value}"]
    lines += [f"    {source.value} --> {target.value}" for source, target in pairs]
    lines += [f"    {state.value} --> [*]" for state in order if state in FINAL[direction]]
    return "\n".join(lines) + "\n"
