"""Replies to messages we sent: the recipient's operator's end-to-end answer, and the router relaying it back.

A received user message that refers to one we sent may carry the operator's signed answer
(``end_to_end.check_reply`` verifies it and keeps the outcome with the original, announced as the
``end-to-end-receipt`` event). A router hands an answer to a message it forwarded (``fwd-<id>``) back to the
original sender on its two-way P-Mode as ``rev-<reply id>``. Neither changes the receipt the reply gets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from accesspoint.msh import end_to_end
from accesspoint.msh.config import WebhookEvent
from accesspoint.msh.context import Context
from accesspoint.routing.shell import forwarded_id
from accesspoint.store import Direction, DuplicateMessage, NewPayload, StoredMessage
from pmode import Binding

log = logging.getLogger("accesspoint.msh")


class Submit(Protocol):
    """How a relayed answer is submitted (``Submissions.submit``)."""

    async def __call__(self, document: dict[str, Any], files: Sequence[NewPayload] | None = None) -> StoredMessage:
        """Store and queue an outgoing message."""
        ...


class Replies:
    """What a received reply means for the message it answers."""

    def __init__(self, ctx: Context, submit: Submit) -> None:
        self.ctx = ctx
        self.submit = submit

    async def answered(self, reply: StoredMessage, now: datetime) -> None:
        """Check a reply as the operator's answer and relay it where this access point is the router."""
        ctx = self.ctx
        try:
            certificates = end_to_end.operator_certificates(ctx.agreements.current, ctx.settings.operator_certificates)
            record = await end_to_end.check_reply(ctx.store, reply, certificates, now=now)
            if record is not None:
                ctx.webhooks.notify(
                    WebhookEvent.END_TO_END_RECEIPT,
                    {"message_id": record.message_id, "end_to_end": end_to_end.to_json(record)},
                )
            await self._relay(reply)
        except Exception:  # the receipt for the reply is given regardless; the answer stays stored as received
            log.exception("checking the reply %s to %s failed", reply.message_id, reply.ref_to_message_id)

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
