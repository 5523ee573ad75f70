"""The sender's side: find the end-to-end answer to a sent message at one's own access point and check it.

The operator's answer arrives as a message on the reply leg with ``ref_to_message_id`` = the sent message, so
the sender asks its access point for incoming messages referring to it, downloads their payloads and the sent
payloads, and checks the lot with the operator's certificate (``receipts.check_end_to_end``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from cryptography import x509

from accesspoint.envelopes._common import EnvelopeError, parse_document
from accesspoint.envelopes.minameddelanden import RECEIPT
from accesspoint.security.timestamp import TimestampError
from operators.evidence import KVITTO, MAILBOX_EVENT, EventKind, is_kvitto, verify_event, verify_kvitto
from operators.payments import CONFIRMATION, verify_confirmation
from operators.receipts import NOTIFICATION, EndToEndReceipt, ReceiptMismatch, check_end_to_end
from operators.replies import is_reply, read_reply
from operators.service import MAX_ENVELOPE

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SenderStatus:
    """Where a sent message stands end to end."""

    message_id: str
    transport: str  # the access point's state of the sent message (``delivered`` = the AS4 receipt came)
    receipt: EndToEndReceipt | None  # the operator's verified answer, when it has come
    reply_message_id: str | None = None

    @property
    def state(self) -> str:
        """``delivered-to-mailbox``, ``rejected``, or the transport state while no answer has come."""
        return self.transport if self.receipt is None else self.receipt.state

    def to_json(self) -> dict[str, Any]:
        """The status as the CLI prints it."""
        document: dict[str, Any] = {"message_id": self.message_id, "state": self.state, "transport": self.transport}
        if self.receipt is not None:
            note = self.receipt.notification
            document.update(
                reply_message_id=self.reply_message_id,
                at=note.at.isoformat(),
                operator=note.operator,
                recipient=note.recipient,
                network=str(note.network),
                business_id=note.business_id,
                signed_by=self.receipt.signer.subject.rfc4514_string(),
                network_receipts=list(self.receipt.network_receipts),
                reasons=[{"code": r.code, "text": r.text} for r in note.reasons],
            )
        return document


async def _get(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, bytes]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.read()


async def _json(session: aiohttp.ClientSession, url: str, token: str) -> Any:
    status, raw = await _get(session, url, token)
    if status != 200:
        raise LookupError(f"{url}: HTTP {status}")
    return json.loads(raw)


async def _payloads(
    session: aiohttp.ClientSession, api: str, token: str, record: dict[str, Any], *, envelopes: bool = False
) -> dict[str, bytes]:
    """A message's payloads by content id; with ``envelopes`` only those that may be a letter's envelope (XML, at
    most the operator's ``MAX_ENVELOPE``), never a large letter's content."""
    found: dict[str, bytes] = {}
    base = f"{api}/api/v1/messages/{quote(record['message_id'], safe='')}/payloads"
    for part in record["payloads"]:
        if envelopes and ("xml" not in str(part["mime_type"]).lower() or int(part["size"]) > MAX_ENVELOPE):
            continue
        url = f"{base}/{quote(part['content_id'], safe='')}?direction={record['direction']}"
        status, data = await _get(session, url, token)
        if status != 200:
            raise LookupError(f"{url}: HTTP {status}")
        found[part["content_id"]] = data
    return found


async def end_to_end_status(
    api: str, token: str, message_id: str, operator: x509.Certificate, *, session: aiohttp.ClientSession | None = None
) -> SenderStatus:
    """The end-to-end status of the sent message ``message_id`` at the access point ``api``.

    LookupError when the access point does not know the message; ReceiptMismatch when an answer came but does
    not verify with ``operator`` or does not fit what was sent."""
    own = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    api = api.rstrip("/")
    try:
        sent = await _json(own, f"{api}/api/v1/messages/{quote(message_id, safe='')}?direction=out", token)
        replies = await _json(
            own, f"{api}/api/v1/messages?direction=in&ref_to_message_id={quote(message_id, safe='')}", token
        )
        if not replies["messages"]:
            return SenderStatus(message_id, sent["state"], None)
        # What was sent is checked by the digests the access point lists, its envelopes by their bytes.
        sent_payloads = await _payloads(own, api, token, sent, envelopes=True)
        digests = {str(p["content_id"]): str(p["sha256"]) for p in sent["payloads"]}
        problems: list[str] = []
        for reply in replies["messages"]:
            record = await _json(
                own, f"{api}/api/v1/messages/{quote(reply['message_id'], safe='')}?direction=in", token
            )
            try:
                answer = check_end_to_end(
                    await _payloads(own, api, token, record),
                    message_id=message_id,
                    sent=sent_payloads,
                    operator=operator,
                    digests=digests,
                )
            except ReceiptMismatch as exc:
                problems.append(f"{reply['message_id']}: {exc}")
                continue
            return SenderStatus(message_id, sent["state"], answer, reply["message_id"])
        raise ReceiptMismatch("; ".join(problems))
    finally:
        if session is None:
            await own.close()


# --- two-way: what else came back about a sent letter ---


@dataclass
class TwoWayStatus:
    """Everything the recipient's operator sent back about a letter besides its delivery answer, each verified:
    the holder's answers, the read receipt, the delgivning outcome (``served`` with its time-stamped kvitto, or
    ``not-served``), the payment confirmation; what did not verify is listed in ``problems``."""

    message_id: str
    replies: list[dict[str, Any]] = field(default_factory=list)
    opened: dict[str, Any] | None = None
    delgivning: dict[str, Any] | None = None
    payment: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``two_way`` section of a status."""
        return {
            "replies": self.replies,
            "opened": self.opened,
            "delgivning": self.delgivning,
            "payment": self.payment,
            "problems": self.problems,
        }


def read_two_way(
    status: TwoWayStatus,
    message_id: str,
    payloads: Mapping[str, bytes],
    operators: Sequence[x509.Certificate],
    tsa_anchors: Sequence[x509.Certificate],
) -> None:
    """Add what one message that came back about ``message_id`` says (sans-I/O)."""
    kvitto = next((d for d in payloads.values() if is_kvitto(d)), None)
    for content_id, data in payloads.items():
        try:
            root = parse_document(data, what="payload")
        except EnvelopeError:
            if data is not None and kvitto is not None:
                continue  # the time-stamp token, read with its kvitto
            status.problems.append(f"{message_id}/{content_id}: not XML")
            continue
        try:
            if root.tag == NOTIFICATION or root.tag == RECEIPT:
                continue  # the delivery answer (end_to_end_status) or the contract's copy of a read receipt
            if root.tag == MAILBOX_EVENT:
                event = _first(partial(verify_event, root), operators)
                shown = {"at": event.at.isoformat(), "message_id": message_id, "details": dict(event.details)}
                if event.kind is EventKind.OPENED:
                    status.opened = shown
                elif event.kind is EventKind.NOT_SERVED and (status.delgivning or {}).get("status") != "served":
                    status.delgivning = {"status": "not-served", **shown}
            elif root.tag == KVITTO:
                tokens = [d for c, d in payloads.items() if c != content_id and not _xml(d)]
                if not tokens:
                    raise EnvelopeError("the kvitto came without its time-stamp token")
                if not tsa_anchors:
                    raise EnvelopeError("no time-stamp authority is trusted to check the kvitto's token")
                verified = verify_kvitto(data, tokens[0], operators=operators, tsa_anchors=tsa_anchors)
                status.delgivning = {"status": "served", "message_id": message_id, **verified.to_json()}
            elif root.tag == CONFIRMATION:
                confirmation = _first(partial(verify_confirmation, root), operators)
                status.payment = {
                    "message_id": message_id,
                    "payment_id": confirmation.payment_id,
                    "paid_at": confirmation.paid_at.isoformat(),
                    "payer": confirmation.payer,
                    "provider": confirmation.provider,
                    "provider_reference": confirmation.provider_reference,
                    "terms": confirmation.payment.to_json(),
                    "note": confirmation.note,
                }
            elif is_reply(data):
                status.replies.append({"message_id": message_id, **read_reply(data, operators).to_json()})
            else:
                status.problems.append(f"{message_id}/{content_id}: {root.tag} is nothing this status reads")
        except (EnvelopeError, TimestampError) as exc:
            status.problems.append(f"{message_id}/{content_id}: {exc}")


def _xml(data: bytes) -> bool:
    return data.lstrip()[:1] == b"<"


def _first(verify: Callable[[x509.Certificate], T], operators: Sequence[x509.Certificate]) -> T:
    """What ``verify`` gives with the first certificate it succeeds with."""
    last: EnvelopeError = EnvelopeError("no operator's certificate to verify with")
    for certificate in operators:
        try:
            return verify(certificate)
        except EnvelopeError as exc:
            last = exc
    raise last


async def two_way_status(
    api: str,
    token: str,
    message_id: str,
    operators: Sequence[x509.Certificate],
    *,
    tsa_anchors: Sequence[x509.Certificate] = (),
    session: aiohttp.ClientSession | None = None,
) -> TwoWayStatus:
    """Everything that came back about the sent letter ``message_id`` at the access point ``api`` (see
    ``TwoWayStatus``); LookupError when the access point does not know it."""
    own = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    api = api.rstrip("/")
    status = TwoWayStatus(message_id)
    try:
        await _json(own, f"{api}/api/v1/messages/{quote(message_id, safe='')}?direction=out", token)
        found = await _json(
            own, f"{api}/api/v1/messages?direction=in&ref_to_message_id={quote(message_id, safe='')}", token
        )
        for item in sorted(found["messages"], key=lambda m: m["created_at"] or ""):
            record = await _json(own, f"{api}/api/v1/messages/{quote(item['message_id'], safe='')}?direction=in", token)
            payloads = await _payloads(own, api, token, record)
            read_two_way(status, item["message_id"], payloads, operators, tsa_anchors)
    finally:
        if session is None:
            await own.close()
    return status
