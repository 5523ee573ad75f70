"""Replies to messages we sent: the recipient's operator's end-to-end answer, and the router relaying it back.

A received user message that refers to one we sent may carry the operator's signed answer
(``end_to_end.check_reply`` verifies it and keeps the outcome with the original, announced as the
``end-to-end-receipt`` event). A router hands an answer to a message it forwarded (``fwd-<id>``) back to the
original sender on its two-way P-Mode as ``rev-<reply id>``. Neither changes the receipt the reply gets.

A letter the router accepted but will not forward (its operator suspended, revoked or gone from FaR after the
receipt: ``routing.decision.NotForwarded``) gets the router's own answer instead, on the same way back: a
``DeliveryNotification`` ``rejected`` with the reason (``operator-suspended`` …) signed with the router's RSA key
(the key its seal uses), as ``rev-fwd-<id>``. The sender checks it as any end-to-end answer (the router's
certificate is its P-Mode partner's), so its status shows ``rejected`` with that reason instead of waiting for an
answer that never comes. The job is written with the forward's failure, in its transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from accesspoint.core.model import PartyId
from accesspoint.envelopes._common import EnvelopeError, parse_document
from accesspoint.msh import end_to_end
from accesspoint.msh.config import WebhookEvent
from accesspoint.msh.context import Context
from accesspoint.msh.wire import once
from accesspoint.routing.decision import FINAL_RECIPIENT, NotForwarded
from accesspoint.routing.letters import worth_reading
from accesspoint.routing.shell import forwarded_id, stored_header
from accesspoint.store import (
    Direction,
    DuplicateMessage,
    EndToEnd,
    NewPayload,
    StoredMessage,
    StoredPayload,
    StoreUnavailable,
)
from accesspoint.store.hooks import TransactionHook
from accesspoint.store.outbox import DeliveryFailed, Dispatcher, EventHook, NewEvent, OutboxEvent
from operators.deliveries import Network, classify
from operators.receipts import DeliveryNotification, Reason, Status, build_notification
from pmode import Binding

log = logging.getLogger("accesspoint.msh")

REPLY_JOBS = "job:replies"  # the outbox sink of the replies to check (and of the letters not forwarded)
NOT_FORWARDED = "forward-refused"  # the job's kind for a letter the router will not forward


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

    def not_forwarded_job(self, refusal: NotForwarded, *, now: datetime) -> list[TransactionHook]:
        """What the failure of a forward the router will not make writes: the job that answers its sender."""
        if self.ctx.settings.routing is None:
            return []
        data = {"reason": refusal.reason, "text": refusal.explanation}

        def make(forward: StoredMessage) -> list[NewEvent]:
            return [NewEvent(NOT_FORWARDED, {"message_id": forward.message_id, **data}, (REPLY_JOBS,))]

        return [EventHook(make, now=now, wake=self._wake)]

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
        data = json.loads(event.body)["data"]
        message_id = str(data["message_id"])
        try:
            if event.kind == NOT_FORWARDED:
                try:
                    await self.not_forwarded(message_id, str(data["reason"]), str(data["text"]))
                except StoreUnavailable:
                    raise
                except Exception:
                    log.exception("answering the sender of %s, which is not forwarded, failed", message_id)
                return
            reply = await self.ctx.store.get(Direction.IN, message_id)
            if reply is not None:  # purged meanwhile: nothing left to check
                await self.answered(reply, self.ctx.clock.now())
        except StoreUnavailable as exc:
            raise DeliveryFailed(str(exc)) from None

    async def not_forwarded(self, forward_id: str, reason: str, text: str) -> None:
        """The router's signed ``rejected`` answer to the sender of a letter it will not forward (see the module).

        Nothing goes back to a sender on a one-way P-Mode (it has no reply leg): the forward's failure, its error and
        the log say what became of the letter. StoreUnavailable when the database is away (the job runs again).
        """
        ctx = self.ctx
        original = forward_id.removeprefix("fwd-")
        request = await ctx.store.get(Direction.IN, original)
        pmode = None if request is None else ctx.agreements.current.get(request.pmode_id or "")
        if request is None or pmode is None or pmode.binding is not Binding.PUSH_AND_PUSH:
            # A mailing's letter, a backend's submission, or a sender on a one-way P-Mode: no reply leg to answer on.
            log.warning("%s is not forwarded (%s); there is no AS4 sender's reply leg to tell", original, reason)
            return
        keys = ctx.routing.seal
        if keys is None:
            log.warning("%s is not forwarded (%s); no RSA key to sign the sender's answer with", original, reason)
            return
        payloads = await ctx.store.payloads(request)
        forward = await ctx.store.get(Direction.OUT, forward_id)
        header = None if forward is None else await stored_header(ctx.store, forward)  # the letter's properties
        properties = () if header is None else header.message_properties
        recipient = next((p.value for p in properties if p.name == FINAL_RECIPIENT), None)
        router = (pmode.ourselves.party.party_ids or (PartyId(pmode.ourselves.party.name),))[0].value
        notification = DeliveryNotification(
            message_id=original,
            business_id=None,
            network=Network.SDK if pmode.network == "sdk" else await self._network(payloads),
            status=Status.REJECTED,
            at=ctx.clock.now(),
            operator=router,
            recipient=recipient,
            payloads=tuple((p.content_id, p.sha256) for p in payloads),
            reasons=(Reason(reason, text),),
        )
        signed = await asyncio.to_thread(build_notification, notification, keys)  # an XML signature: off the loop
        answer = NewPayload(f"notification@{_domain(router)}", "application/xml", once(signed))
        document = {"pmode": pmode.id, "ref_to_message_id": original, "message_id": f"rev-{forward_id}"}
        try:
            await self.submit(document, [answer])
        except DuplicateMessage:
            return
        log.info("%s is not forwarded (%s): its sender is told with %s", original, reason, document["message_id"])

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

    async def _network(self, payloads: Sequence[StoredPayload]) -> Network:
        """The letter's network by its envelope's root (a small XML part), else foreign (an SBDH or unknown)."""
        for payload in payloads:
            if worth_reading(payload.mime_type, payload.size):
                data = b"".join([chunk async for chunk in self.ctx.store.read(payload)])
                try:
                    network = classify(parse_document(data, what="letter"))
                except EnvelopeError:
                    continue
                if network is not None:
                    return network
        return Network.FOREIGN

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


def _domain(party_id: str) -> str:
    """A Content-ID's right-hand side made of a party id (its letters and digits)."""
    return "".join(c for c in party_id if c.isalnum() or c in ".-").strip(".-") or "router"
