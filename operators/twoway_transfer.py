"""A letter's two-way record in a mailbox move: written by the old operator, restored by the new one.

What a letter asks of its holder (an answer by a deadline, a read receipt, an acknowledgement of a served letter,
a payment) and what became of it (opened, served or not, paid, answers sent) live in the two-way tables
(``twoway_store.py``), keyed by the old operator's mail ids. A move carries them per letter in the signed manifest
(``portability.py``, format 2), keyed by the letter's position among its mail items instead::

    {"conversation_id": …,
     "letters": [{"position": 0, "terms": {…}, "opened_at": …, "delgivning_state": …, "served_at": …,
                  "paid_at": …, "replies": [{reply_id, message_id, actor, created_at}],
                  "payment": {payment_id, payer, provider, provider_reference, amount, currency, paid_at,
                              message_id} | null}],
     "case_events": [{"position": 1, "case_id": …, "event_id": …, "status": …}]}

The new operator takes the *terms* and case events from the letter's envelope, whose sender's signature it has
just checked, exactly as at delivery, and refuses the batch when the record's terms or events differ from them;
what the holder *did* comes from the record, which the old operator's signature over the manifest covers.

What the holder did at the old operator is *finished there* before the letter leaves: from the moment its mailbox
is ``moving-out`` nothing new is recorded there (``twoway_store.MailboxMoving``), and a letter is exported only once
it is settled (``unsettled``): no payment of it still pending at the provider, and nothing about it (answer, read
receipt, kvitto, not-served notice, payment confirmation) still waiting in the outbox. So the record is final when
it is signed, every message it names was taken by the old operator's access point before the new operator could
take the letter over, and the new operator, seeing the answers, opening, service and payment in the record, never
sends or pays them again. Only a completed payment travels: a letter with one still pending is not exported yet.

A letter from a manifest of format 1 (an older exporter) arrives without a record and gets none: without the old
operator's state the new one cannot know whether an invoice was paid or a served letter acknowledged, so it offers
neither rather than guess.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, union
from sqlalchemy.ext.asyncio import AsyncConnection

from operators.deliveries import CheckedDelivery
from operators.letters import Letter
from operators.mailbox import mail
from operators.portability import TransferRefused
from operators.twoway import delivery_records
from operators.twoway_store import TwoWayStore, case_events, letters, outbox, payments, replies

STATES = ("opened_at", "delgivning_state", "served_at", "paid_at")
DELGIVNING = (None, "pending", "served", "not-served")
EVENT_KEYS = ("position", "case_id", "event_id", "status")  # what a carried case event is compared by
BATCH = 500  # origins per query (below every database's limit on bound parameters)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    moment: datetime = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return moment.isoformat()


def _moment(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise TransferRefused(f"{what} is not a date-time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _events(events: list[Any]) -> list[str]:
    """Case events compared by what the sender signed (position, case, event id, status), in any order."""
    return sorted(json.dumps([e.get(k) if isinstance(e, dict) else e for k in EVENT_KEYS]) for e in events)


async def unsettled(conn: AsyncConnection, holder: str) -> set[str]:
    """The origins (AS4 MessageIds) of ``holder``'s letters that may not be exported yet: one of their mail items
    has a payment still pending, or something in the outbox the access point has not taken."""
    waiting = select(mail.c.as4_message_id).where(mail.c.recipient == holder)
    found = await conn.execute(
        union(
            waiting.join(outbox, outbox.c.mail_id == mail.c.id).where(outbox.c.sent_at.is_(None)),
            waiting.join(payments, payments.c.mail_id == mail.c.id).where(payments.c.state != "paid"),
        )
    )
    return set(found.scalars())


async def export_records(conn: AsyncConnection, holder: str, chosen: Sequence[Letter]) -> dict[str, dict[str, Any]]:
    """The two-way record of each letter of ``holder`` that has one, by letter uid."""
    uid_of = {letter.origin: letter.uid for letter in chosen}
    records: dict[str, dict[str, Any]] = {}
    origins = list(uid_of)
    for start in range(0, len(origins), BATCH):
        part = origins[start : start + BATCH]
        rows = (
            await conn.execute(
                select(letters, mail.c.position)
                .join(mail, mail.c.id == letters.c.mail_id)
                .where(letters.c.recipient == holder, letters.c.as4_message_id.in_(part))
                .order_by(mail.c.position)
            )
        ).all()
        ids = [row.mail_id for row in rows]
        answers: dict[int, list[dict[str, Any]]] = {}
        for reply in (await conn.execute(select(replies).where(replies.c.mail_id.in_(ids)))).all():
            answers.setdefault(reply.mail_id, []).append(
                {
                    "reply_id": reply.reply_id,
                    "message_id": reply.message_id,
                    "actor": reply.actor,
                    "created_at": _iso(reply.created_at),
                }
            )
        paid = {
            p.mail_id: {
                "payment_id": p.payment_id,
                "payer": p.payer,
                "provider": p.provider,
                "provider_reference": p.provider_reference,
                "amount": p.amount,
                "currency": p.currency,
                "paid_at": _iso(p.paid_at),
                "message_id": p.message_id,
            }
            for p in (
                await conn.execute(select(payments).where(payments.c.mail_id.in_(ids), payments.c.state == "paid"))
            ).all()
        }
        for row in rows:
            record = records.setdefault(
                uid_of[row.as4_message_id],
                {"conversation_id": row.conversation_id, "letters": [], "case_events": []},
            )
            record["letters"].append(
                {
                    "position": row.position,
                    "terms": json.loads(row.terms),
                    **{name: _iso(getattr(row, name)) for name in STATES if name != "delgivning_state"},
                    "delgivning_state": row.delgivning_state,
                    "replies": sorted(answers.get(row.mail_id, []), key=lambda r: (r["created_at"], r["reply_id"])),
                    "payment": paid.get(row.mail_id),
                }
            )
        events = (
            await conn.execute(
                select(case_events)
                .where(case_events.c.recipient == holder, case_events.c.as4_message_id.in_(part))
                .order_by(case_events.c.position)
            )
        ).all()
        for event in events:
            record = records.setdefault(
                uid_of[event.as4_message_id], {"conversation_id": None, "letters": [], "case_events": []}
            )
            record["case_events"].append({k: getattr(event, k) for k in EVENT_KEYS})
    return records


async def restore(
    conn: AsyncConnection,
    letter: Letter,
    record: dict[str, Any],
    delivery: CheckedDelivery,
    mail_ids: Sequence[int],
) -> None:
    """Write a letter's two-way record on ``conn`` (the import's transaction) for its new ``mail_ids``: terms and
    case events from its verified ``delivery``, the holder's doings from ``record``; TransferRefused when the
    record does not fit the letter its sender signed."""
    what = f"letter {letter.uid} ({letter.origin})"
    conversation = record.get("conversation_id")
    if conversation is not None and not isinstance(conversation, str):
        raise TransferRefused(f"{what}: the two-way record's conversation_id is not a string")
    rows, events = delivery_records(delivery, letter.origin, conversation, mail_ids, letter.received_at)
    derived = {row["mail_id"]: row for row in rows}
    carried = record.get("letters")
    if not isinstance(carried, list):
        raise TransferRefused(f"{what}: the two-way record lists no letters")
    kept: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    paid: list[dict[str, Any]] = []
    try:
        for item in carried:
            row, sent, payment = _restore_letter(what, item, mail_ids, derived, letter.recipient)
            kept.append(row)
            answers += sent
            paid += [] if payment is None else [payment]
    except (KeyError, TypeError, AttributeError) as exc:
        raise TransferRefused(f"{what}: the two-way record is malformed ({type(exc).__name__}: {exc})") from None
    listed = record.get("case_events")
    if not isinstance(listed, list) or _events(listed) != _events(events):
        raise TransferRefused(f"{what}: the case events of the two-way record differ from those its sender signed")
    await conn.run_sync(TwoWayStore.record, kept, events)
    if answers:
        await conn.execute(insert(replies), answers)
    if paid:
        await conn.execute(insert(payments), paid)


def _restore_letter(
    what: str, item: Any, mail_ids: Sequence[int], derived: dict[int, dict[str, Any]], recipient: str
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """One mail item's record checked against the row its envelope gives (taken from ``derived``): that row with
    the holder's doings, the answers sent, the payment made."""
    position = item.get("position") if isinstance(item, dict) else None
    if not isinstance(position, int) or not 0 <= position < len(mail_ids) or mail_ids[position] not in derived:
        raise TransferRefused(f"{what}: the two-way record names part {position!r}, which asks nothing")
    mail_id = mail_ids[position]
    row = derived.pop(mail_id)
    terms = json.loads(row["terms"])
    if item.get("terms") != terms:
        raise TransferRefused(f"{what}: the two-way terms of part {position} differ from those its sender signed")
    state = item.get("delgivning_state")
    if state not in DELGIVNING or (state is None) != (row["delgivning_state"] is None):
        raise TransferRefused(f"{what}: delgivning state {state!r} does not fit the letter's terms")
    row.update({name: _moment(item.get(name), f"{what}: {name}") for name in STATES if name != "delgivning_state"})
    row["delgivning_state"] = state
    answers = [
        {
            "reply_id": str(reply["reply_id"]),
            "mail_id": mail_id,
            "recipient": recipient,
            "message_id": str(reply["message_id"]),
            "actor": str(reply["actor"]),
            "created_at": _moment(reply["created_at"], f"{what}: a reply's created_at"),
        }
        for reply in item.get("replies") or []
    ]
    payment = item.get("payment")
    if payment is None:
        return row, answers, None
    if terms.get("payment") is None:
        raise TransferRefused(f"{what}: a payment of part {position}, which is no invoice")
    names = ("payment_id", "payer", "provider", "provider_reference", "amount", "currency", "message_id")
    made = {name: payment[name] for name in names}
    made.update(mail_id=mail_id, recipient=recipient, state="paid", paid_at=_moment(payment["paid_at"], what))
    return row, answers, made
