"""What an operator does to outgoing messages by hand (the console calls these): resend, park, ping a partner.

A **resend** moves a ``failed`` or ``dead_letter`` message back to ``submitted`` under the same MessageId, with
its attempts counted afresh, and queues it: the stored header and payloads are sent again exactly as the API's
retry path sends them, so a partner that did get it (and whose receipt was lost) answers from its duplicate
elimination and delivers it once. A MessageId is never reused for another message, and no second message is made.
**Parking** moves a message that waits (``submitted``, ``awaiting_receipt``) or failed into ``dead_letter``, where
no worker claims it and no purge removes it until it is resent. Both are compare-and-set moves: a message that
moved meanwhile (a worker claimed it) is left alone and reported as such. A **ping** submits an ebMS test message
(ebMS 3 5.2.2.9) on a P-Mode whose leg is the test service: the partner receipts it and keeps it from its backend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from accesspoint.core.ids import new_message_id
from accesspoint.core.namespaces import TEST_ACTION, TEST_SERVICE
from accesspoint.msh.context import Context
from accesspoint.msh.submissions import Submission, Submissions
from accesspoint.msh.wire import once
from accesspoint.store import Direction, MessageState, NewPayload, StoredMessage
from accesspoint.store.ops import Move
from accesspoint.store.queue import QueueUnavailable
from accesspoint.store.states import OPERATOR_MOVES
from pmode import Binding, PMode

log = logging.getLogger("accesspoint.msh")

RESENDABLE = frozenset(source for source, target in OPERATOR_MOVES[Direction.OUT] if target is MessageState.SUBMITTED)
PARKABLE = frozenset(source for source, target in OPERATOR_MOVES[Direction.OUT] if target is MessageState.DEAD_LETTER)
PING_PAYLOAD = b"ebMS test message (connection check)"


class Done(StrEnum):
    """What became of an operator's move."""

    MOVED = "moved"
    NOT_FOUND = "not-found"
    WRONG_STATE = "wrong-state"  # not in a state the move starts from
    RACED = "raced"  # it moved meanwhile (a worker claimed it); nothing was changed


@dataclass(frozen=True, slots=True)
class Moved:
    """The outcome for one message: what happened and the message as it is now (None when not stored)."""

    message_id: str
    done: Done
    message: StoredMessage | None


def ping_pmodes(pmodes: list[PMode]) -> list[PMode]:
    """The P-Modes over which this access point can ping its partner: an outgoing first leg on the test service."""
    found = []
    for pmode in pmodes:
        leg = pmode.legs[0]
        sends = pmode.sender_of(leg).party == pmode.ourselves.party and pmode.binding is not Binding.PULL
        if sends and leg.service.value == TEST_SERVICE and leg.action == TEST_ACTION:
            found.append(pmode)
    return found


class Operations:
    """The operator's moves on outgoing messages, over one access point's context."""

    def __init__(self, ctx: Context, submissions: Submissions) -> None:
        self.ctx = ctx
        self.submissions = submissions

    async def resend(self, message_id: str, *, actor: str) -> Moved:
        """Send a failed or parked message again under its MessageId (see the module)."""
        moved = await self._move(message_id, MessageState.SUBMITTED, RESENDABLE, f"resent by {actor}", reset=True)
        message = moved.message
        if moved.done is Done.MOVED and message is not None:
            route = self.ctx.agreements.route_of(message)
            if route is None or route.pmode.binding is not Binding.PULL:  # a pulled one waits for its PullRequest
                try:
                    await self.ctx.queue.put(message_id)
                except QueueUnavailable as exc:
                    log.warning("%s resent; the send queue is unavailable (%s): recovery queues it", message_id, exc)
            log.info("%s resent by %s", message_id, actor)
        return moved

    async def dead_letter(self, message_id: str, *, actor: str) -> Moved:
        """Park a waiting or failed message in ``dead_letter`` (see the module)."""
        moved = await self._move(message_id, MessageState.DEAD_LETTER, PARKABLE, f"parked by {actor}", reset=False)
        if moved.done is Done.MOVED:
            log.info("%s parked in the dead-letter state by %s", message_id, actor)
        return moved

    async def ping(self, pmode_id: str) -> StoredMessage:
        """Submit an ebMS test message on a ping P-Mode (``ping_pmodes``); ValueError when it is none."""
        pmode = self.ctx.agreements.current.get(pmode_id)
        if pmode is None or pmode not in ping_pmodes([pmode]):
            raise ValueError(f"{pmode_id!r} is no P-Mode whose first leg sends the ebMS test service")
        message_id = new_message_id()
        payload = NewPayload(f"ping@{message_id.split('@')[-1]}", "text/plain", once(PING_PAYLOAD))
        return await self.submissions.accept(Submission(message_id=message_id, payloads=(payload,), pmode=pmode_id))

    async def _move(
        self, message_id: str, target: MessageState, sources: frozenset[MessageState], detail: str, *, reset: bool
    ) -> Moved:
        store = self.ctx.store
        message = await store.get(Direction.OUT, message_id)
        if message is None:
            return Moved(message_id, Done.NOT_FOUND, None)
        if message.state not in sources:
            return Moved(message_id, Done.WRONG_STATE, message)
        # Attempts start afresh on a resend: the leg's retries are the budget of this sending, not of the last one.
        move = Move(
            message, target, self.ctx.clock.now(), attempts_add=-message.attempts if reset else 0, detail=detail
        )
        moved = await store.writer.submit(move)
        if moved is None:
            return Moved(message_id, Done.RACED, await store.get(Direction.OUT, message_id))
        return Moved(message_id, Done.MOVED, moved)
