"""The sender's end-to-end status: the recipient's operator's signed answer, checked where it arrives.

A mailbox operator answers each delivery on the two-way P-Mode's reply leg (``ref_to_message_id`` = the
delivery) with a signed ``DeliveryNotification`` and, per network, the Mina meddelanden Receipt or SDK's
Meddelandekvittens (``operators/receipts.py``). When such a reply reaches the access point that sent the
original, the access point checks it (``operators.receipts.check_end_to_end``: every part verifies with the
operator's certificate and quotes the sent message's id and payload SHA-256s) and keeps the outcome with the
original, so its status shows ``delivered-to-mailbox`` or ``rejected``, when, and whose signature says so.

The operator's certificate is the one the agreements give: a P-Mode party's signing certificate (the operator
signs with its access point's key), or one of the server settings' ``end_to_end.operators`` (a sender that
reaches operators through a router and has no P-Mode with them). Through the Swedish router the operator
answers the forwarded message (``fwd-<id>``, same payloads), so that id counts for the original too.

Anything else on a reply leg (an ordinary business reply, an answer that does not verify) records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from accesspoint.routing.letters import worth_reading
from accesspoint.routing.shell import forwarded_id
from accesspoint.store import Direction, EndToEnd, MessageStore, StoredMessage
from accesspoint.store.hooks import TransactionHook
from operators.receipts import EndToEndReceipt, ReceiptMismatch, answer_hint, check_end_to_end
from pmode import PModeSet

log = logging.getLogger("accesspoint.msh.end_to_end")

# An answer is a few signed XML documents; anything larger is not one (and is not read into memory).
ANSWER_LIMIT = 1024 * 1024
_MARK = b"DeliveryNotification"


def operator_certificates(pmodes: PModeSet, configured: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """The certificates an answer may verify with: the configured operators', then every P-Mode party's."""
    found: dict[bytes, x509.Certificate] = {}
    for certificate in (*configured, *(p.signing_certificate for p in pmodes.parties)):
        if certificate is not None:
            found.setdefault(certificate.public_bytes(Encoding.DER), certificate)
    return tuple(found.values())


def verify_answer(
    reply: Mapping[str, bytes],
    *,
    message_id: str,
    sent: Mapping[str, bytes],
    certificates: Iterable[x509.Certificate],
    digests: Mapping[str, str] | None = None,
) -> EndToEndReceipt | None:
    """The verified answer to ``message_id`` among the reply's payloads, or None when there is none that
    verifies with one of ``certificates`` and fits what was ``sent`` (sans-I/O; ``digests``: the SHA-256 of every
    sent payload when ``sent`` holds only the small ones, see ``check_end_to_end``)."""
    if not any(_MARK in data for data in reply.values()):
        return None
    # Each try is a full verification: the notification's own (unverified) claims say which to try first, so an
    # answer costs one verification, not one per operator and id.
    hint = answer_hint(reply)
    candidates = sorted(certificates, key=lambda c: c.public_bytes(Encoding.DER) != hint.certificate)
    answered_ids = sorted((message_id, forwarded_id(message_id)), key=lambda i: i != hint.message_id)
    for certificate in candidates:
        for answered in answered_ids:
            with contextlib.suppress(ReceiptMismatch):
                return check_end_to_end(reply, message_id=answered, sent=sent, operator=certificate, digests=digests)
    return None


def certificate_sha256(certificate: x509.Certificate) -> str:
    """The hex SHA-256 of the certificate's DER: the fingerprint a status names the signer by."""
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def record_of(answer: EndToEndReceipt, *, message_id: str, reply_message_id: str, now: datetime) -> EndToEnd:
    """What the store keeps of a verified answer."""
    note = answer.notification
    return EndToEnd(
        message_id=message_id,
        status=answer.state,
        at=note.at,
        operator=note.operator,
        operator_subject=answer.signer.subject.rfc4514_string(),
        operator_sha256=certificate_sha256(answer.signer),
        reply_message_id=reply_message_id,
        recorded_at=now,
        reasons=tuple((r.code, r.text) for r in note.reasons),
        recipient=note.recipient,
    )


def to_json(record: EndToEnd) -> dict[str, Any]:
    """``end_to_end`` of a message's status document."""
    return {
        "status": record.status,
        "at": record.at.isoformat(),
        "operator": {
            "id": record.operator,
            "subject": record.operator_subject,
            "certificate_sha256": record.operator_sha256,
        },
        "recipient": record.recipient,
        "reasons": [{"code": code, "text": text} for code, text in record.reasons],
        "reply_message_id": record.reply_message_id,
        "recorded_at": record.recorded_at.isoformat(),
    }


async def _contents(store: MessageStore, message: StoredMessage) -> dict[str, bytes] | None:
    found: dict[str, bytes] = {}
    for payload in await store.payloads(message):
        if payload.size > ANSWER_LIMIT:
            return None
        found[payload.content_id] = b"".join([chunk async for chunk in store.read(payload)])
    return found


async def check_reply(
    store: MessageStore,
    reply: StoredMessage,
    certificates: Iterable[x509.Certificate],
    *,
    now: datetime,
    hooks: Callable[[EndToEnd], Sequence[TransactionHook]] | None = None,
) -> EndToEnd | None:
    """Check a received reply as the operator's answer to the message it refers to; the record kept (None when
    it is no verified answer, or the message has one already). ``hooks`` give what is written with the record
    (the backend's event), in its transaction."""
    if reply.ref_to_message_id is None:
        return None
    sent = await store.get(Direction.OUT, reply.ref_to_message_id)
    if sent is None:
        return None
    answer_parts = await _contents(store, reply)
    if not answer_parts or not any(_MARK in data for data in answer_parts.values()):
        return None
    # What was sent is checked by the digests the store keeps; only what may be the letter's envelope (XML within
    # the router's letter limit) is read, never a large letter's content beside it.
    payloads = await store.payloads(sent)
    sent_parts = {
        p.content_id: b"".join([chunk async for chunk in store.read(p)])
        for p in payloads
        if worth_reading(p.mime_type, p.size)
    }
    digests = {p.content_id: p.sha256 for p in payloads}
    # XML signatures, tried with each operator certificate in turn: off the event loop.
    answer = await asyncio.to_thread(
        verify_answer,
        answer_parts,
        message_id=sent.message_id,
        sent=sent_parts,
        certificates=tuple(certificates),
        digests=digests,
    )
    if answer is None:
        log.warning(
            "%s: the answer %s verifies with no operator's certificate or does not fit",
            sent.message_id,
            reply.message_id,
        )
        return None
    record = record_of(answer, message_id=sent.message_id, reply_message_id=reply.message_id, now=now)
    if not await store.record_end_to_end(record, hooks=() if hooks is None else hooks(record)):
        return None
    log.info(
        "%s: %s at %s, signed by %s", sent.message_id, record.status, record.at.isoformat(), record.operator_subject
    )
    return record
