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
GET      /api/v1/mailboxes/{r}/cases                          the case timeline: per sender and case
GET      /api/v1/mailboxes/{r}/cases/{sender}/{case}          one case's events, oldest first
=======  ===================================================  =============================================

Reading a letter (``GET …/messages/{id}``) as its holder for the first time sends the receipt it asked for
(``ReceiptRequest`` SIMPLE or SIGNED): a signed ``opened`` mailbox event, and for Mina meddelanden the contract's
Receipt. A served letter (*e-delgivning*) whose deadline passes unacknowledged gets a signed ``not-served``
notice (the sweep, every ``two_way.sweep_interval``, on the operator's clock).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from accesspoint.envelopes.kvittens import ReasonCode
from accesspoint.envelopes.letter import InlineFile, terms_to_json
from accesspoint.envelopes.minameddelanden import ReceiptRequest
from accesspoint.envelopes.schemas import load_reply_schema
from accesspoint.servicekit.problems import Problem
from accesspoint.servicekit.tokens import BearerToken
from operators.deliveries import CheckedDelivery, MailItem, Network, Refusal, payload_sha256
from operators.evidence import EventKind, MailboxEvent, build_event, read_receipt
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
from operators.twoway_store import LetterRow, TwoWayStore

if TYPE_CHECKING:
    from operators.service import Operator

log = logging.getLogger("operators.twoway")
STATES = ("unpaid", "overdue", "paid")


@dataclass(frozen=True, slots=True)
class Holder:
    """Who acts on a mailbox as its holder: the actor recorded, and the name an answer carries."""

    actor: str
    name: str


def _problem(status: int, code: str, reason: str) -> Problem:
    return Problem(status, reason, kind=code, code=code)


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

    def screen(self, outcome: CheckedDelivery, payloads: Sequence[tuple[str, bytes]]) -> CheckedDelivery | Refusal:
        """The delivery, or the refusal: a content part that did not come as its envelope says (content id, size,
        SHA-256), or content outside the presentation policy."""
        found = dict(payloads)
        policy = self.settings.presentation

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
                data = found.get(part.content_id)
                if data is None:
                    return refuse("parts", f"the part {part.content_id} the letter names did not come with it")
                if len(data) != part.size or payload_sha256(data) != part.sha256:
                    return refuse("parts", f"the part {part.content_id} is not what the letter's digest binds")
            if policy is not None:
                violation = self._presentation(item, found)
                if violation is not None:
                    return refuse("presentation", str(violation))
        return outcome

    def _presentation(self, item: MailItem, payloads: dict[str, bytes]) -> Violation | None:
        policy = self.settings.presentation
        assert policy is not None
        checks: list[tuple[str, str, bytes]] = []
        if item.body:
            checks.append((f"{item.reference}/body", item.content_type, item.body))
        checks += [(f"{item.reference}/{a.filename}", a.content_type, a.body) for a in item.attachments]
        for part in () if item.terms is None else item.terms.parts:
            checks.append((part.filename or part.content_id, part.content_type, payloads[part.content_id]))
        for name, content_type, data in checks:
            check = PartCheck(policy, name, content_type)
            check.feed(data)
            violation = check.finish()
            if violation is not None:
                return violation
        return None

    @staticmethod
    def for_mailbox(outcome: CheckedDelivery) -> CheckedDelivery:
        """The delivery as the mail list takes it: case events without content go to the timeline only."""
        kept = tuple(item for item in outcome.items if not item.event_only)
        return outcome if len(kept) == len(outcome.items) else replace(outcome, items=kept)

    async def delivered(
        self,
        message_id: str,
        record: dict[str, Any],
        outcome: CheckedDelivery,
        mail_ids: Sequence[int],
        now: datetime,
    ) -> None:
        """Record the terms of the delivery's letters and its case events (safe to repeat)."""
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
                        "conversation_id": record.get("conversation_id"),
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
        await self.store.record(letters, events)

    # ------------------------------------------------------------------------------------------ the holder

    def holder(self, request: web.Request, recipient: str) -> Holder:
        """The holder of ``recipient`` acting: a token scoped to that mailbox (the operator's own tokens for every
        mailbox read, but do not act for a holder); 401/403 otherwise."""
        token: BearerToken = self.operator.auth.authorize(request, "read", recipient=recipient)
        if token.grant("read").unrestricted:
            raise _problem(403, "forbidden", "only the mailbox's holder may do this, not a token for every mailbox")
        return Holder(token.name, recipient)

    async def _letter(self, request: web.Request) -> tuple[str, LetterRow, Holder]:
        recipient = request.match_info["recipient"]
        holder = self.holder(request, recipient)
        mail_id = _mail_id(request)
        letter = await self.store.letter(recipient, mail_id)
        if letter is None:
            raise _problem(404, "not-found", f"no letter {mail_id} with two-way terms in the mailbox of {recipient}")
        return recipient, letter, holder

    async def opened(self, request: web.Request, recipient: str, mail_id: int) -> None:
        """A letter read: the first time its holder reads it, the receipt it asked for is sent."""
        token = self.operator.auth.authenticate(request)
        if token.grant("read").unrestricted:
            return  # the operator's own reading is not the holder's
        letter = await self.store.letter(recipient, mail_id)
        now = self.operator.clock()
        if letter is None or not await self.store.mark_opened(mail_id, now):
            return
        request_kind = letter.terms.receipt
        if request_kind not in (ReceiptRequest.SIMPLE, ReceiptRequest.SIGNED):
            return
        operator = self.operator.settings
        event = MailboxEvent(
            EventKind.OPENED,
            letter.as4_message_id,
            operator.id,
            now,
            letter.business_id,
            recipient,
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
        message_id = self._message_id("opened", letter.as4_message_id, str(mail_id))
        await self.store.send(message_id, "opened", mail_id, self._submission(message_id, letter, parts), now)
        self._wake.set()

    async def api_two_way(self, request: web.Request) -> web.Response:
        """GET …/messages/{id}/two-way."""
        recipient = request.match_info["recipient"]
        self.operator.auth.authorize(request, "read", recipient=recipient)
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
                else {"state": letter.delgivning_state, "served_at": _iso(letter.served_at)},
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
        await self.store.reply(row, self._submission(message_id, letter, parts), at=now)
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
        self.operator.auth.authorize(request, "read", recipient=recipient)
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
        if not await self.store.reserve_payment(claim):
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

    async def api_cases(self, request: web.Request) -> web.Response:
        """GET …/cases: the timeline, grouped per sender and case, each case's events oldest first."""
        recipient = request.match_info["recipient"]
        self.operator.auth.authorize(request, "read", recipient=recipient)
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
            if await self.store.not_served(
                letter.mail_id, now, message_id, self._submission(message_id, letter, parts)
            ):
                count += 1
                log.info("%s in the mailbox of %s: not served by %s", letter.business_id, letter.recipient, deadline)
        return count


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
