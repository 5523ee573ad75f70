"""Replies to messages we sent: the recipient's operator's end-to-end answer, and the router relaying it back.

A received user message that refers to one we sent may carry the operator's signed answer
(``end_to_end.check_reply`` verifies it and keeps the outcome with the original, announced as the
``end-to-end-receipt`` event). A router hands an answer to a message it forwarded (``fwd-<id>``) back to the
original sender on its two-way P-Mode as ``rev-<reply id>``. Neither changes the receipt the reply gets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from accesspoint.msh import end_to_end
from accesspoint.msh.config import WebhookEvent
from accesspoint.msh.context import Context
from accesspoint.routing.shell import forwarded_id
from accesspoint.store import Direction, DuplicateMessage, EndToEnd, NewPayload, StoredMessage, StoreUnavailable
from accesspoint.store.hooks import TransactionHook
from accesspoint.store.outbox import DeliveryFailed, Dispatcher, EventHook, NewEvent, OutboxEvent
from pmode import Binding

log = logging.getLogger("accesspoint.msh")

REPLY_JOBS = "job:replies"  # the outbox sink of the replies to check


def _retry(attempts: int) -> timedelta | None:
    """Retry a job that could not run (the database away) soon, and for as long as it takes."""
    del attempts
    return timedelta(seconds=2)


class Submit(Protocol):
    """How a relayed answer is submitted (``Submissions.submit``)."""

    async def __call__(
        self,
        document: dict[str, Any],
        files: Sequence[NewPayload] | None = None,
        *,
        hooks: Sequence[TransactionHook] = (),
    ) -> StoredMessage:
        """Store and queue an outgoing message."""
        ...


class Replies:
    """What a received reply means for the message it answers: a job in the outbox, run at least once.

    The reception of a reply writes the job (``job``) in its transaction; ``dispatcher`` runs it after the receipt
    went back, and again after a crash or while the database is away, until it is done. Running it twice changes
    nothing: the first operator's answer stands, and a relay is submitted under a MessageId of its own.
    """

    def __init__(self, ctx: Context, submit: Submit) -> None:
        self.ctx = ctx
        self.submit = submit
        self._dispatcher: Dispatcher | None = None

    def job(self, *, now: datetime) -> TransactionHook:
        """What the reception of a reply writes: the job that checks it (see the class)."""

        def make(reply: StoredMessage) -> list[NewEvent]:
            return [NewEvent("reply-received", {"message_id": reply.message_id}, (REPLY_JOBS,))]

        return EventHook(make, now=now, wake=self._wake)

    def _wake(self, _sinks: Sequence[str]) -> None:
        if self._dispatcher is not None:
            self._dispatcher.wake()

    def dispatcher(self) -> Dispatcher:
        """The loop that runs the jobs (a supervised task)."""
        ctx = self.ctx
        self._dispatcher = Dispatcher(
            ctx.outbox, REPLY_JOBS, self._run, clock=ctx.clock, lease=ctx.settings.lease,
            timeout=ctx.settings.send_timeout, retry=_retry, concurrency=ctx.settings.reply_workers,
        )  # fmt: skip
        return self._dispatcher

    async def _run(self, event: OutboxEvent) -> None:
        message_id = str(json.loads(event.body)["data"]["message_id"])
        try:
            reply = await self.ctx.store.get(Direction.IN, message_id)
            if reply is not None:  # purged meanwhile: nothing left to check
                await self.answered(reply, self.ctx.clock.now())
        except StoreUnavailable as exc:
            raise DeliveryFailed(str(exc)) from None

    async def answered(self, reply: StoredMessage, now: datetime) -> None:
        """Check a reply as the operator's answer and relay it where this access point is the router.

        StoreUnavailable when the database is away (the job runs again); anything else is logged: the answer stays
        stored as received.
        """
        ctx = self.ctx
        try:
            certificates = end_to_end.operator_certificates(ctx.agreements.current, ctx.settings.operator_certificates)
            await end_to_end.check_reply(ctx.store, reply, certificates, now=now, hooks=self._announced(now))
            await self._relay(reply)
        except StoreUnavailable:
            raise
        except Exception:
            log.exception("checking the reply %s to %s failed", reply.message_id, reply.ref_to_message_id)

    def _announced(self, now: datetime) -> Callable[[EndToEnd], list[TransactionHook]]:
        """The end-to-end-receipt event, written with the answer it announces."""

        def hooks(record: EndToEnd) -> list[TransactionHook]:
            data = {"message_id": record.message_id, "end_to_end": end_to_end.to_json(record)}
            return self.ctx.webhooks.hooks_for(WebhookEvent.END_TO_END_RECEIPT, lambda _sent: data, now=now)

        return hooks

    async def _relay(self, reply: StoredMessage) -> None:
        """The router: a reply to ``fwd-<id>`` goes back to the sender of ``<id>`` on its two-way P-Mode, payloads
        as they came, as ``rev-<reply id>`` (the same reply relayed twice is a duplicate, never a second answer)."""
        ctx = self.ctx
        ref = reply.ref_to_message_id or ""
        original = ref.removeprefix("fwd-")
        if ctx.settings.routing is None or original == ref or forwarded_id(original) != ref:
            return
        request = await ctx.store.get(Direction.IN, original)
        pmode = None if request is None else ctx.agreements.current.get(request.pmode_id or "")
        if request is None or pmode is None or pmode.binding is not Binding.PUSH_AND_PUSH:
            return  # a one-way sender has no reply leg: the answer stays here, with the forwarded message
        files = [
            NewPayload(p.content_id, p.mime_type, ctx.store.read(p), p.properties)
            for p in await ctx.store.payloads(reply)
        ]
        try:
            await self.submit(
                {"pmode": pmode.id, "ref_to_message_id": original, "message_id": f"rev-{reply.message_id}"}, files
            )
        except DuplicateMessage:
            return
        log.info("relayed the answer %s to %s back to its sender", reply.message_id, original)
