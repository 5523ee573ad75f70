"""Two-way digital post at the operator: what a letter asks of the mailbox, and what the holder does with it.

Wired into ``Operator`` at a few points (``service.py``): ``screen`` before a delivery is stored (content parts
bound by digest, the presentation policy), ``for_mailbox`` (a case event without content goes to the timeline,
not the mail list), ``delivered`` after it is stored (its terms and case events recorded), ``opened`` when the
holder reads a letter, ``add_routes`` and ``start``/``stop``. Everything the operator sends back goes through the
outbox (``twoway_store.py``) on the two-way P-Mode's reply leg (``ref_to_message_id`` = the letter's AS4
message, its conversation kept), so the router relays it to the letter's sender.

Mailbox API for the holder (a token scoped to the mailbox, or the holder's session; problem bodies for every
refusal, nothing stored on a refusal):

=======  ===================================================  =============================================
GET      /api/v1/mailboxes/{r}/messages/{id}/two-way          the letter's terms and what became of them
POST     /api/v1/mailboxes/{r}/messages/{id}/replies          answer: ``{text, attachments: [{filename,
                                                              content_type, data}]}`` → 202; 409 when the
                                                              letter takes no answer (now), with the reason
GET      /api/v1/mailboxes/{r}/invoices                       ``?state=unpaid|overdue|paid&due_before=&
                                                              due_after=`` (ISO dates), by due date
POST     /api/v1/mailboxes/{r}/messages/{id}/payment          pay the invoice once (201); 409 the second time
POST     /api/v1/mailboxes/{r}/messages/{id}/acknowledgement  a served letter acknowledged: ``{signatures: [the
                                                              holder's e-ID signature over its
                                                              acknowledgement_text]}``, in an e-ID session →
                                                              201 with the kvitto's digest and time-stamp
GET      /api/v1/mailboxes/{r}/cases                          the case timeline: per sender and case
GET      /api/v1/mailboxes/{r}/cases/{sender}/{case}          one case's events, oldest first
=======  ===================================================  =============================================

Reading a letter (``GET …/messages/{id}``) as its holder for the first time sends the receipt it asked for
(``ReceiptRequest`` SIMPLE or SIGNED): a signed ``opened`` mailbox event, and for Mina meddelanden the contract's
Receipt. A served letter (*e-delgivning*) is acknowledged by its holder, logged in with e-ID, signing the text
``GET …/two-way`` shows (it names the letter and the SHA-256 of every part): the operator sends the sender a
signed delgivningskvitto (``evidence.build_kvitto``) with an RFC 3161 token over its SHA-256 from
``[operator.timestamping]`` (nonce checked, the authority's certificate against ``trust``); a forged or foreign
signature, a letter not served, served already or past its deadline is refused and nothing is stored. One whose
deadline passes unacknowledged gets a signed ``not-served`` notice (the sweep, every ``two_way.sweep_interval``,
on the operator's clock).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from sqlalchemy import Connection

from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.broadcast import MAX_CONTENT, is_broadcast, verify_broadcast
from accesspoint.envelopes.identity import AssertionRefused, SignatureData
from accesspoint.envelopes.kvittens import ReasonCode
from accesspoint.envelopes.letter import InlineFile, terms_to_json
from accesspoint.envelopes.minameddelanden import ReceiptRequest
from accesspoint.envelopes.schemas import load_reply_schema
from accesspoint.security import timestamp
from accesspoint.servicekit.httpclient import fetch, new_session
from accesspoint.servicekit.problems import Problem
from accesspoint.servicekit.tokens import CALLER
from operators.deliveries import CheckedDelivery, MailItem, Network, Refusal, payload_sha256
from operators.evidence import (
    Acknowledgement,
    EventKind,
    Kvitto,
    MailboxEvent,
    ServedPart,
    acknowledgement_text,
    build_event,
    build_kvitto,
    kvitto_sha256,
    read_receipt,
)
from operators.letters import CHUNK, LetterPart
from operators.payments import (
    PaymentConfirmation,
    PaymentOrder,
    PaymentRefused,
    ReferenceProvider,
    build_confirmation,
    invoice_state,
)
from operators.presentation import PartCheck, Violation
from operators.receipts import AnswerPart, stable_id
from operators.replies import AnsweredLetter, HolderAnswer, ReplyRefused, build_reply
from operators.twoway_store import FROZEN, LetterRow, MailboxMoving, TwoWayStore

if TYPE_CHECKING:
    from operators.service import Operator

log = logging.getLogger("operators.twoway")
MAX_BROADCAST = 2 * MAX_CONTENT  # a broadcast document: its content in base64 and a signature
STATES = ("unpaid", "overdue", "paid")


@dataclass(frozen=True, slots=True)
class Holder:
    """Who acts on a mailbox as its holder: the actor recorded, and the name an answer carries."""

    actor: str
    name: str
    person: str | None = None  # the e-ID identity of a session (None for a token)


def _problem(status: int, code: str, reason: str) -> Problem:
    return Problem(status, reason, kind=code, code=code)


def _moving(exc: MailboxMoving) -> Problem:
    return _problem(409, "mailbox-moving", str(exc))


def _mail_id(request: web.Request) -> int:
    text = request.match_info["id"]
    mail_id = int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else 0
    if not 0 < mail_id < 2**63:
        raise _problem(404, "not-found", "no such message")
    return mail_id


def _date(request: web.Request, name: str) -> date | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _problem(400, "invalid-query", f"{name} is not a date (YYYY-MM-DD)") from None


class TwoWay:
    """The two-way part of one operator (see the module docstring)."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.settings = operator.settings.two_way
        self.store = TwoWayStore(operator.store.engine)
        self.provider = ReferenceProvider()
        contracts = operator.settings.minameddelanden_contracts
        self.reply_schema = None if contracts is None else load_reply_schema(contracts)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the sweep: deadlines, and submissions the access point has not taken yet."""
        self._task = asyncio.create_task(self._sweeping())

    async def stop(self) -> None:
        """Stop the sweep."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sweeping(self) -> None:
        interval = self.settings.sweep_interval.total_seconds()
        while True:
            try:
                await self.sweep(self.operator.clock())
                await self.flush()
            except Exception:  # the next round tries again; the outbox keeps what was not sent
                log.exception("the two-way sweep failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    # ----------------------------------------------------------------------------------------- deliveries

    def screen(
        self, outcome: CheckedDelivery, staged: Path, received: Sequence[LetterPart]
    ) -> CheckedDelivery | Refusal:
        """The delivery, or the refusal: a content part that did not come as its envelope says (content id, size,
        SHA-256, as measured while it was written to ``staged``), or content outside the presentation policy (large
        parts streamed from their files). Blocking: run it in a worker thread."""
        found = {p.content_id: p for p in received}

        def refuse(code: str, text: str) -> Refusal:
            return Refusal(
                outcome.network,
                ReasonCode.BUSINESS_RULE,
                code,
                text,
                business_id=outcome.business_id,
                recipient=outcome.recipient,
                sender=outcome.sender,
                xhe=outcome.xhe,
            )

        for item in outcome.items:
            for part in () if item.terms is None else item.terms.parts:
                kept = found.get(part.content_id)
                if kept is None:
                    return refuse("parts", f"the part {part.content_id} the letter names did not come with it")
                if kept.size != part.size or kept.sha256 != part.sha256:
                    return refuse("parts", f"the part {part.content_id} is not what the letter's digest binds")
            if self.settings.presentation is not None:
                violation = self._presentation(item, {c: staged / p.name for c, p in found.items()})
                if violation is not None:
                    return refuse("presentation", str(violation))
        return outcome

    def _presentation(self, item: MailItem, files: dict[str, Path]) -> Violation | None:
        policy = self.settings.presentation
        assert policy is not None
        inline: list[tuple[str, str, bytes]] = []
        if item.body:
            inline.append((f"{item.reference}/body", item.content_type, item.body))
        inline += [(f"{item.reference}/{a.filename}", a.content_type, a.body) for a in item.attachments]
        for name, content_type, data in inline:
            check = PartCheck(policy, name, content_type)
            check.feed(data)
            if (violation := check.finish()) is not None:
                return violation
        for part in () if item.terms is None else item.terms.parts:
            check = PartCheck(policy, part.filename or part.content_id, part.content_type)
            with files[part.content_id].open("rb") as stream:
                while (chunk := stream.read(CHUNK)) and check.violation is None:
                    check.feed(chunk)
            if (violation := check.finish()) is not None:
                return violation
        return None

    @staticmethod
    def for_mailbox(outcome: CheckedDelivery) -> CheckedDelivery:
        """The delivery as the mail list takes it: case events without content go to the timeline only."""
        kept = tuple(item for item in outcome.items if not item.event_only)
        return outcome if len(kept) == len(outcome.items) else replace(outcome, items=kept)

    def delivered(
        self,
        conn: Connection,
        message_id: str,
        record: dict[str, Any],
        outcome: CheckedDelivery,
        mail_ids: Sequence[int],
        now: datetime,
    ) -> None:
        """Record the terms of the delivery's letters and its case events on ``conn``, in the transaction that
        stores the mail (``MailboxStore.deliver(also=…)``; safe to repeat)."""
        letters, events = delivery_records(outcome, message_id, record.get("conversation_id"), mail_ids, now)
        self.store.record(conn, letters, events)

    # ---------------------------------------------------------------------------------- operator broadcasts

    async def broadcast(self, message_id: str, record: dict[str, Any], found: bytes) -> None:
        """A broadcast from the infrastructure owner (``found``: its document, see ``broadcast_document``): into
        every mailbox of its group, answered with how many (a signed ``broadcast`` event), acknowledged (safe to
        repeat)."""
        client = self.operator.client
        assert client is not None
        operator = self.operator.settings
        now = self.operator.clock()
        details: list[tuple[str, str]]
        try:
            broadcast, _signature = verify_broadcast(found, self.operator.trust.intermediaries)
        except EnvelopeError as exc:
            await self.operator.store.reject(message_id, f"broadcast: {exc}", now=now)
            details, business_id = [("delivered", "0"), ("refused", str(exc))], None
            log.warning("broadcast %s refused: %s", message_id, exc)
        else:
            business_id = broadcast.id
            audience = broadcast.audience
            reached = [r for r in await self.store.mailbox_keys() if audience.includes(r)]
            rows = [
                {
                    "recipient": r,
                    "as4_message_id": message_id,
                    "position": i,
                    "network": "broadcast",
                    "reference": broadcast.id,
                    "sender": broadcast.issuer,
                    "sender_name": None,
                    "subject": broadcast.subject,
                    "content_type": broadcast.content_type,
                    "body": broadcast.body,
                    "sha256": payload_sha256(broadcast.body),
                    "signed_by": None,
                    "received_at": now,
                }
                for i, r in enumerate(reached)
            ]
            if await self.store.broadcast(message_id, rows, f"broadcast to {len(rows)} mailboxes", now):
                log.info("broadcast %s: in %d mailboxes (%s)", broadcast.id, len(rows), audience.describe())
            details = [("delivered", str(len(rows))), ("audience", audience.describe())]
        event = MailboxEvent(EventKind.BROADCAST, message_id, operator.id, now, business_id, None, tuple(details))
        answer = AnswerPart(f"broadcast@{operator.id}", "application/xml", build_event(event, operator.keys))
        reply_id = self._message_id("broadcast", message_id)
        pmode = operator.access_point.reply_pmode
        document = {
            **({"pmode": pmode} if pmode else {}),
            "message_id": reply_id,
            "ref_to_message_id": message_id,
            **({"conversation_id": record["conversation_id"]} if record.get("conversation_id") else {}),
            "payloads": [
                {
                    "content_id": answer.content_id,
                    "mime_type": answer.mime_type,
                    "data": base64.b64encode(answer.data).decode(),
                }
            ],
        }
        await self.store.send(reply_id, "broadcast", None, document, now)
        await self.flush()
        await self.operator.store.replied(
            message_id, reply_id, [{"content_id": answer.content_id, "mime_type": answer.mime_type}]
        )
        await client.ack(message_id)

    # ------------------------------------------------------------------------------------------ the holder

    async def holder(self, request: web.Request, recipient: str) -> Holder:
        """The holder of ``recipient`` acting: their e-ID session, or a token scoped to that mailbox (the operator's
        tokens for every mailbox read, but never act for a holder); 401/403 otherwise."""
        reader = await self.operator.desk.reader(request, recipient)
        if reader.person is not None:
            if reader.person != recipient:
                raise _problem(403, "forbidden", f"only the holder of {recipient} may do this")
            found = await self.operator.desk.session(request)
            return Holder(reader.actor, found[1] if found is not None else recipient, person=reader.person)
        if request[CALLER].grant("read").unrestricted:
            raise _problem(403, "forbidden", "only the mailbox's holder may do this, not a token for every mailbox")
        return Holder(reader.actor, recipient)

    async def _letter(self, request: web.Request) -> tuple[str, LetterRow, Holder]:
        recipient = request.match_info["recipient"]
        holder = await self.holder(request, recipient)
        mail_id = _mail_id(request)
        letter = await self.store.letter(recipient, mail_id)
        if letter is None:
            raise _problem(404, "not-found", f"no letter {mail_id} with two-way terms in the mailbox of {recipient}")
        state = await self.operator.store.state(recipient)
        if state in FROZEN:  # early, before a provider or time-stamp authority is asked; the store checks again
            raise _moving(MailboxMoving(recipient, str(state)))
        return recipient, letter, holder

    async def opened(self, request: web.Request, recipient: str, mail_id: int) -> None:
        """A letter read: the first time its holder reads it, the receipt it asked for is sent."""
        try:
            await self.holder(request, recipient)
        except Problem:
            return  # the operator's own reading, or someone the holder allowed to, is not the holder opening it
        letter = await self.store.letter(recipient, mail_id)
        now = self.operator.clock()
        if letter is None or letter.opened_at is not None:
            return
        request_kind = letter.terms.receipt
        message_id, document = None, None
        if request_kind in (ReceiptRequest.SIMPLE, ReceiptRequest.SIGNED):
            message_id = self._message_id("opened", letter.as4_message_id, str(mail_id))
            document = self._submission(message_id, letter, self._read_receipt(letter, request_kind, now))
        try:
            # the opening and its receipt in one transaction: a crash between them would lose the receipt
            if await self.store.mark_opened(mail_id, now, message_id, document) and message_id is not None:
                self._wake.set()
        except MailboxMoving:
            return  # the new operator records the opening, and sends the receipt, once the letter is there

    def _read_receipt(self, letter: LetterRow, request_kind: ReceiptRequest, now: datetime) -> list[AnswerPart]:
        """The signed ``opened`` event, and for Mina meddelanden the contract's Receipt."""
        operator = self.operator.settings
        event = MailboxEvent(
            EventKind.OPENED,
            letter.as4_message_id,
            operator.id,
            now,
            letter.business_id,
            letter.recipient,
            (("receipt", request_kind.value),),
        )
        parts = [AnswerPart(f"opened@{operator.id}", "application/xml", build_event(event, operator.keys))]
        if letter.network == Network.MINA_MEDDELANDEN:
            receipt = read_receipt(
                request_kind,
                message_id=letter.business_id,
                sender=letter.sender,
                holder=letter.holder_party,
                opened=now.date(),
                keys=operator.keys,
            )
            parts.append(AnswerPart(f"read-receipt@{operator.id}", "application/xml", receipt))
        return parts

    async def api_two_way(self, request: web.Request) -> web.Response:
        """GET …/messages/{id}/two-way."""
        recipient = request.match_info["recipient"]
        await self.operator.desk.reader(request, recipient)
        letter = await self.store.letter(recipient, _mail_id(request))
        if letter is None:
            raise _problem(404, "not-found", "no letter with two-way terms there")
        payment = await self.store.payment_of(letter.mail_id)
        return web.json_response(
            {
                "mail_id": letter.mail_id,
                "network": letter.network,
                "business_id": letter.business_id,
                "sender": letter.sender,
                "subject": letter.subject,
                "conversation_id": letter.conversation_id,
                "terms": terms_to_json(letter.terms),
                "opened_at": _iso(letter.opened_at),
                "delgivning": None
                if letter.delgivning_state is None
                else {
                    "state": letter.delgivning_state,
                    "served_at": _iso(letter.served_at),
                    "deadline": _iso(letter.terms.delgivning_deadline),
                    "acknowledgement_text": await self._acknowledgement_text(letter),
                },
                "invoice": None if letter.terms.payment is None else self._invoice_json(letter, payment),
                "replies": [
                    {"reply_id": r["reply_id"], "message_id": r["message_id"], "at": _iso(r["created_at"])}
                    for r in await self.store.replies_of(letter.mail_id)
                ],
                "sent": [
                    {"message_id": o["message_id"], "kind": o["kind"], "sent_at": _iso(o["sent_at"])}
                    for o in await self.store.outbox_of(letter.mail_id)
                ],
            }
        )

    async def api_reply(self, request: web.Request) -> web.Response:
        """POST …/messages/{id}/replies: the holder's answer, in the letter's form, to its sender."""
        _recipient, letter, holder = await self._letter(request)
        body = await self._json(request)
        answer = _answer(body)
        now = self.operator.clock()
        reply_id = str(uuid.uuid4())
        operator = self.operator.settings
        try:
            data = build_reply(
                _answered(letter),
                answer,
                reply_id=reply_id,
                holder_name=holder.name,
                keys=operator.keys,
                at=now,
                reply_schema=self.reply_schema,
                xhe_schema=self.operator.trust.xhe_schema,
            )
        except ReplyRefused as exc:
            raise _problem(exc.status, exc.code, exc.reason) from None
        message_id = self._message_id("reply", reply_id)
        parts = [AnswerPart(f"reply@{operator.id}", "application/xml", data)]
        row = {
            "reply_id": reply_id,
            "mail_id": letter.mail_id,
            "recipient": letter.recipient,
            "message_id": message_id,
            "actor": holder.actor,
            "created_at": now,
        }
        try:
            await self.store.reply(row, self._submission(message_id, letter, parts), at=now)
        except MailboxMoving as exc:
            raise _moving(exc) from None
        self._wake.set()
        log.info("answer %s to %s sent as %s", reply_id, letter.business_id, message_id)
        return web.json_response(
            {
                "reply_id": reply_id,
                "message_id": message_id,
                "network": letter.network,
                "in_reply_to": letter.business_id,
                "case_reference": letter.terms.case_reference,
            },
            status=202,
        )

    async def _json(self, request: web.Request) -> dict[str, Any]:
        limit = self.settings.answer_max_size
        if request.content_length is not None and request.content_length > limit:
            raise _problem(413, "too-large", f"at most {limit} bytes")
        raw = await request.content.read(limit + 1)
        if len(raw) > limit:
            raise _problem(413, "too-large", f"at most {limit} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            raise _problem(400, "invalid-request", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise _problem(400, "invalid-request", "the body is a JSON object")
        return body

    def _invoice_json(self, letter: LetterRow, payment: dict[str, Any] | None) -> dict[str, Any]:
        terms = letter.terms.payment
        assert terms is not None
        paid = payment is not None and payment["state"] == "paid"
        return {
            "mail_id": letter.mail_id,
            "business_id": letter.business_id,
            "sender": letter.sender,
            "sender_name": letter.sender_name,
            "subject": letter.subject,
            "state": invoice_state(paid, terms.due_date, self.operator.clock().date()),
            "payment_data": terms.to_json(),
            "paid": None
            if not paid or payment is None
            else {
                "at": _iso(payment["paid_at"]),
                "provider": payment["provider"],
                "provider_reference": payment["provider_reference"],
                "payment_id": payment["payment_id"],
            },
        }

    async def api_invoices(self, request: web.Request) -> web.Response:
        """GET …/invoices?state=&due_before=&due_after=."""
        recipient = request.match_info["recipient"]
        await self.operator.desk.reader(request, recipient)
        state = request.query.get("state")
        if state is not None and state not in STATES:
            raise _problem(400, "invalid-query", f"state is one of {', '.join(STATES)}")
        rows = await self.store.invoices(
            recipient, due_after=_date(request, "due_after"), due_before=_date(request, "due_before")
        )
        found = []
        for letter in rows:
            if letter.terms.payment is None:
                continue  # marked as an invoice without payment data: nothing to pay from here
            item = self._invoice_json(letter, await self.store.payment_of(letter.mail_id))
            if state is None or item["state"] == state:
                found.append(item)
        return web.json_response({"invoices": found})

    async def api_pay(self, request: web.Request) -> web.Response:
        """POST …/messages/{id}/payment: pay an invoice once, through the payment provider."""
        recipient, letter, holder = await self._letter(request)
        payment = letter.terms.payment
        if payment is None:
            raise _problem(409, "not-an-invoice", "the letter carries no payment data to pay")
        now = self.operator.clock()
        payment_id = str(uuid.uuid4())
        claim = {
            "mail_id": letter.mail_id,
            "payment_id": payment_id,
            "recipient": recipient,
            "payer": holder.actor,
            "amount": payment.amount_text,
            "currency": payment.currency,
        }
        try:
            claimed = await self.store.reserve_payment(claim)
        except MailboxMoving as exc:
            raise _moving(exc) from None
        if not claimed:
            earlier = await self.store.payment_of(letter.mail_id)
            when = "" if earlier is None or earlier["paid_at"] is None else f" on {earlier['paid_at'].isoformat()}"
            raise _problem(409, "already-paid", f"the invoice {letter.business_id} is paid already{when}")
        order = PaymentOrder(payment_id, payment, recipient, letter.as4_message_id, letter.business_id)
        try:
            receipt = await self.provider.pay(order, now=now)
        except PaymentRefused as exc:
            await self.store.release_payment(letter.mail_id)
            raise _problem(422, "payment-refused", exc.reason) from None
        operator = self.operator.settings
        confirmation = PaymentConfirmation(
            payment_id,
            letter.as4_message_id,
            letter.business_id,
            recipient,
            operator.id,
            payment,
            receipt.provider,
            receipt.reference,
            receipt.executed_at,
            receipt.note,
        )
        message_id = self._message_id("payment", payment_id)
        parts = [
            AnswerPart(f"payment@{operator.id}", "application/xml", build_confirmation(confirmation, operator.keys))
        ]
        values = {
            "provider": receipt.provider,
            "provider_reference": receipt.reference,
            "paid_at": receipt.executed_at,
            "message_id": message_id,
        }
        await self.store.paid(letter.mail_id, values, message_id, self._submission(message_id, letter, parts))
        self._wake.set()
        log.info("invoice %s paid (%s %s) as %s", letter.business_id, payment.amount_text, payment.currency, payment_id)
        return web.json_response(
            {
                "payment_id": payment_id,
                "provider": receipt.provider,
                "provider_reference": receipt.reference,
                "paid_at": receipt.executed_at.isoformat(),
                "note": receipt.note,
                "confirmation_message_id": message_id,
            },
            status=201,
        )

    async def _served_parts(self, letter: LetterRow) -> tuple[ServedPart, ...]:
        """What a served letter consists of, by digest: its body, its attachments, the parts beside it."""
        stored = await self.operator.store.read(letter.recipient, letter.mail_id)
        if stored is None:
            raise _problem(404, "not-found", "no such message")
        inline = [(f"{letter.business_id}/body", stored.body)] + [
            (f"{letter.business_id}/{a.filename}", a.body) for a in stored.attachments
        ]
        parts = [ServedPart(c, len(data), hashlib.sha256(data).hexdigest()) for c, data in inline]
        parts += [ServedPart(p.content_id, p.size, p.sha256) for p in letter.terms.parts]
        return tuple(parts)

    async def _acknowledgement_text(self, letter: LetterRow) -> str:
        parts = await self._served_parts(letter)
        return acknowledgement_text(business_id=letter.business_id, subject=letter.subject, sender=letter.sender,
                                    parts=parts)  # fmt: skip

    async def api_acknowledge(self, request: web.Request) -> web.Response:
        """POST …/messages/{id}/acknowledgement: the holder, logged in with e-ID, acknowledges a served letter
        with a fresh e-ID signature over its acknowledgement text; the sender gets the time-stamped kvitto."""
        recipient, letter, holder = await self._letter(request)
        if holder.person is None:
            raise _problem(403, "e-id-required", "a served letter is acknowledged in the holder's e-ID session")
        deadline = letter.terms.delgivning_deadline
        if deadline is None:
            raise _problem(409, "not-served-letter", f"{letter.business_id} is not served: nothing to acknowledge")
        if letter.delgivning_state != "pending":
            raise _problem(409, f"delgivning-{letter.delgivning_state}",
                           f"{letter.business_id} is {letter.delgivning_state} already")  # fmt: skip
        now = self.operator.clock()
        if now > deadline:
            raise _problem(409, "deadline-passed", f"the deadline to acknowledge was {deadline.isoformat()}")
        tsa = self.settings.timestamping
        if tsa is None:
            raise _problem(
                503, "no-timestamping", "this operator has no time-stamp authority ([operator.timestamping])"
            )
        body = await self._json(request)
        items = body.get("signatures")
        if not isinstance(items, list) or len(items) != 1:
            raise _problem(400, "invalid-request", "signatures: a list with the holder's one e-ID signature")
        try:
            signature = SignatureData.from_json(items[0])
        except AssertionRefused as exc:
            raise _problem(422, exc.code.value, exc.reason) from None
        parts = await self._served_parts(letter)
        text = acknowledgement_text(business_id=letter.business_id, subject=letter.subject, sender=letter.sender,
                                    parts=parts)  # fmt: skip
        assertion = self.operator.desk.verify(text, [signature], subject=recipient)[0]
        operator = self.operator.settings
        kvitto = Kvitto(
            message_id=letter.as4_message_id,
            business_id=letter.business_id,
            sender=letter.sender,
            subject=letter.subject,
            recipient=recipient,
            operator=operator.id,
            served_at=now,
            deadline=deadline,
            acknowledgement=Acknowledgement(
                assertion.subject,
                assertion.name,
                assertion.certificate_sha256,
                assertion.nonce,
                assertion.signed_at,
                assertion.text_sha256,
            ),
            parts=parts,
        )
        data = await asyncio.to_thread(build_kvitto, kvitto, operator.keys)
        token, stamp = await self._timestamp(kvitto_sha256(data))
        message_id = self._message_id("served", letter.as4_message_id, str(letter.mail_id))
        answer = [
            AnswerPart(f"kvitto@{operator.id}", "application/xml", data),
            AnswerPart(f"kvitto-timestamp@{operator.id}", "application/timestamp-reply", token),
        ]
        try:
            submission = self._submission(message_id, letter, answer)
            served = await self.store.serve(letter.mail_id, now, message_id, submission)
        except MailboxMoving as exc:
            raise _moving(exc) from None
        if not served:
            raise _problem(409, "delgivning-served", f"{letter.business_id} was acknowledged meanwhile")
        await self.operator.store.audit(
            holder.actor,
            "delgivning-acknowledged",
            recipient,
            {
                "mail_id": letter.mail_id,
                "business_id": letter.business_id,
                "kvitto_sha256": hashlib.sha256(data).hexdigest(),
            },
            now=now,
        )
        self._wake.set()
        log.info("%s in the mailbox of %s: served, kvitto %s", letter.business_id, recipient, message_id)
        return web.json_response(
            {
                "served_at": now.isoformat(),
                "kvitto_sha256": hashlib.sha256(data).hexdigest(),
                "timestamp": stamp.to_json(),
                "message_id": message_id,
            },
            status=201,
        )

    async def _timestamp(self, digest: bytes) -> tuple[bytes, timestamp.VerifiedTimestamp]:
        """An RFC 3161 token over ``digest`` from the configured authority, checked (imprint, nonce, the
        authority's certificate) before it is used; 503 when the authority cannot be reached or fails."""
        tsa = self.settings.timestamping
        assert tsa is not None
        asked = timestamp.request(digest)
        session = new_session(timeout=tsa.timeout.total_seconds())
        try:
            answer = await fetch(session, "POST", tsa.url, data=asked.der, max_bytes=timestamp.MAX_TOKEN,
                                 headers={"Content-Type": "application/timestamp-query"})  # fmt: skip
            if answer.status != 200:
                raise timestamp.TimestampError(f"the authority answered HTTP {answer.status}")
            token = timestamp.token_of(answer.body)
            stamp = await asyncio.to_thread(
                timestamp.verify_token, token, digest=digest, anchors=tsa.anchors, nonce=asked.nonce
            )
        except (aiohttp.ClientError, TimeoutError, timestamp.TimestampError) as exc:
            log.warning("time-stamp from %s: %s", tsa.url, exc)
            raise Problem(503, f"the time-stamp authority failed: {exc}", kind="timestamping-failed",
                          code="timestamping-failed", headers={"Retry-After": "5"}) from None  # fmt: skip
        finally:
            await session.close()
        return token, stamp

    async def api_cases(self, request: web.Request) -> web.Response:
        """GET …/cases: the timeline, grouped per sender and case, each case's events oldest first."""
        recipient = request.match_info["recipient"]
        await self.operator.desk.reader(request, recipient)
        sender, case_id = request.match_info.get("sender"), request.match_info.get("case")
        events = await self.store.timeline(recipient, sender, case_id)
        cases: dict[tuple[str, str], dict[str, Any]] = {}
        for event in events:
            key = (event["sender"], event["case_id"])
            case = cases.setdefault(
                key,
                {
                    "sender": event["sender"],
                    "sender_name": event["sender_name"],
                    "case_id": event["case_id"],
                    "events": [],
                },
            )
            case["status"] = event["status"]
            case["matter_status"] = event["matter_status"] or case.get("matter_status")
            case["events"].append(
                {
                    "time": _iso(event["time"]),
                    "status": event["status"],
                    "link": event["link"],
                    "matter_status": event["matter_status"],
                    "event_id": event["event_id"],
                    "subject": event["subject"],
                    "mail_id": event["mail_id"],
                    "received_at": _iso(event["received_at"]),
                }
            )
        if case_id is not None and not cases:
            raise _problem(404, "not-found", f"no case {case_id} from {sender} in the mailbox of {recipient}")
        ordered = sorted(cases.values(), key=lambda c: c["events"][-1]["time"], reverse=True)
        return web.json_response({"cases": ordered})

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """The holder's two-way endpoints."""
        base = "/api/v1/mailboxes/{recipient}"
        router.add_get(base + "/messages/{id}/two-way", self.api_two_way)
        router.add_post(base + "/messages/{id}/replies", self.api_reply)
        router.add_post(base + "/messages/{id}/payment", self.api_pay)
        router.add_post(base + "/messages/{id}/acknowledgement", self.api_acknowledge)
        router.add_get(base + "/invoices", self.api_invoices)
        router.add_get(base + "/cases", self.api_cases)
        router.add_get(base + "/cases/{sender}/{case}", self.api_cases)

    # ------------------------------------------------------------------------------- sending to the sender

    def _message_id(self, *parts: str) -> str:
        return f"{stable_id('two-way', *parts)}@{self.operator.settings.id}"

    def _submission(self, message_id: str, letter: LetterRow, parts: Sequence[AnswerPart]) -> dict[str, Any]:
        """The submission on the reply leg of the letter's delivery, in its conversation."""
        pmode = self.operator.settings.access_point.reply_pmode
        return {
            **({"pmode": pmode} if pmode else {}),
            "message_id": message_id,
            "ref_to_message_id": letter.as4_message_id,
            **({"conversation_id": letter.conversation_id} if letter.conversation_id else {}),
            "payloads": [
                {"content_id": p.content_id, "mime_type": p.mime_type, "data": base64.b64encode(p.data).decode()}
                for p in parts
            ],
        }

    async def flush(self) -> int:
        """Submit what the access point has not taken yet; how many it took."""
        client = self.operator.client
        if client is None:
            return 0
        taken = 0
        for item in await self.store.unsent():
            try:
                status, answer = await client.submit(item.document)
            except (aiohttp.ClientError, TimeoutError) as exc:
                await self.store.failed(item.message_id, str(exc))
                break  # the access point is away: the next sweep tries again
            if status in (202, 409):  # 409: taken before (a crash after the submit, before this was marked)
                await self.store.sent(item.message_id, self.operator.clock())
                taken += 1
            else:
                await self.store.failed(item.message_id, f"HTTP {status}: {answer}")
                log.warning(
                    "%s %s: the access point refused it: HTTP %s %s", item.kind, item.message_id, status, answer
                )
        return taken

    async def sweep(self, now: datetime) -> int:
        """Served letters past their deadline become not served, each with a signed notice; how many."""
        operator = self.operator.settings
        count = 0
        for letter in await self.store.overdue_services(now):
            deadline = letter.terms.delgivning_deadline
            event = MailboxEvent(
                EventKind.NOT_SERVED,
                letter.as4_message_id,
                operator.id,
                now,
                letter.business_id,
                letter.recipient,
                (("deadline", "" if deadline is None else deadline.isoformat()),),
            )
            parts = [AnswerPart(f"not-served@{operator.id}", "application/xml", build_event(event, operator.keys))]
            message_id = self._message_id("not-served", letter.as4_message_id, str(letter.mail_id))
            try:
                marked = await self.store.not_served(
                    letter.mail_id, now, message_id, self._submission(message_id, letter, parts)
                )
            except MailboxMoving:
                continue  # the letter's new operator sends the notice once it holds the letter
            if marked:
                count += 1
                log.info("%s in the mailbox of %s: not served by %s", letter.business_id, letter.recipient, deadline)
        return count


def delivery_records(
    outcome: CheckedDelivery, message_id: str, conversation_id: str | None, mail_ids: Sequence[int], now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``twoway_letters`` rows and ``twoway_case_events`` of a delivery whose mail rows got ``mail_ids`` (in the
    order of its items that are no bare case events): what its signed envelope asks, nothing done yet."""
    sender, holder, federation = _parties(outcome)
    letters: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    kept = iter(mail_ids)
    for position, item in enumerate(outcome.items):
        mail_id = None if item.event_only else next(kept, None)
        terms = item.terms
        if terms is None:
            continue
        if mail_id is not None:
            letters.append(
                {
                    "mail_id": mail_id,
                    "recipient": outcome.recipient,
                    "as4_message_id": message_id,
                    "conversation_id": conversation_id,
                    "network": str(outcome.network),
                    "business_id": item.reference,
                    "sender": sender,
                    "sender_name": outcome.sender_name,
                    "holder_party": holder,
                    "subject": item.subject,
                    "federation": federation,
                    "terms": json.dumps(terms_to_json(terms)),
                    "reply_option": None if terms.reply is None else terms.reply.option.value,
                    "reply_deadline": None if terms.reply is None else terms.reply.deadline,
                    "receipt_request": None if terms.receipt is None else terms.receipt.value,
                    "delgivning_deadline": terms.delgivning_deadline,
                    "delgivning_state": "pending" if terms.served else None,
                    "invoice": terms.invoice,
                    "due_date": None if terms.payment is None else terms.payment.due_date,
                    "received_at": now,
                }
            )
        event = terms.case_event
        if event is not None:
            events.append(
                {
                    "recipient": outcome.recipient,
                    "sender": outcome.sender,
                    "sender_name": outcome.sender_name,
                    "case_id": event.case_id,
                    "status": event.status,
                    "time": event.time,
                    "link": event.link,
                    "matter_status": None if event.matter_status is None else event.matter_status.value,
                    "event_id": event.event_id,
                    "subject": event.subject or item.subject or None,
                    "mail_id": mail_id,
                    "as4_message_id": message_id,
                    "position": position,
                    "received_at": now,
                }
            )
    return letters, events


def broadcast_document(staged: Path, received: Sequence[LetterPart]) -> bytes | None:
    """The broadcast document among the payloads written to ``staged`` (only small XML parts are looked at; None:
    the message is no broadcast). Blocking: run it in a worker thread."""
    for part in received:
        if part.size <= MAX_BROADCAST and "xml" in part.mime_type:
            data = (staged / part.name).read_bytes()
            if is_broadcast(data):
                return data
    return None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parties(outcome: CheckedDelivery) -> tuple[str, str, str | None]:
    """(the sender, the holder, the federation) as the delivery's envelope named them."""
    if outcome.xhe is not None:
        xhe = outcome.xhe
        return xhe.from_party.id, xhe.to_party.id, xhe.federation_id
    if outcome.sbdh is not None:
        return outcome.sbdh.sender[0].identifier, outcome.sbdh.receiver[0].identifier, None
    if outcome.secure_delivery is not None:
        return outcome.secure_delivery.sender.id, outcome.secure_delivery.recipient, None
    return outcome.sender, outcome.recipient, None


def _answered(letter: LetterRow) -> AnsweredLetter:
    return AnsweredLetter(
        network=Network(letter.network),
        business_id=letter.business_id,
        subject=letter.subject,
        sender=letter.sender,
        holder_party=letter.holder_party,
        terms=letter.terms,
        conversation_id=letter.conversation_id,
        federation=letter.federation,
    )


def _answer(body: dict[str, Any]) -> HolderAnswer:
    text = body.get("text", "")
    if not isinstance(text, str):
        raise _problem(422, "invalid-answer", "text is a string")
    files = body.get("attachments", [])
    if not isinstance(files, list):
        raise _problem(422, "invalid-answer", "attachments is a list of {filename, content_type, data}")
    attachments = []
    for index, item in enumerate(files):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("filename", "content_type")):
            raise _problem(422, "invalid-answer", f"attachments[{index}] needs filename and content_type")
        try:
            data = base64.b64decode(str(item.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise _problem(422, "invalid-answer", f"attachments[{index}].data is not base64") from None
        attachments.append(InlineFile(item["content_type"], data, item["filename"]))
    return HolderAnswer(text, tuple(attachments))
