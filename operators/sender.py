"""The sender's side: find the end-to-end answer to a sent message at one's own access point and check it.

The operator's answer arrives as a message on the reply leg with ``ref_to_message_id`` = the sent message, so
the sender asks its access point for incoming messages referring to it, downloads their payloads and the sent
payloads, and checks the lot with the operator's certificate (``receipts.check_end_to_end``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from cryptography import x509

from operators.receipts import EndToEndReceipt, ReceiptMismatch, check_end_to_end


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


async def _payloads(session: aiohttp.ClientSession, api: str, token: str, record: dict[str, Any]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    base = f"{api}/api/v1/messages/{quote(record['message_id'], safe='')}/payloads"
    for part in record["payloads"]:
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
        sent_payloads = await _payloads(own, api, token, sent)
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
                )
            except ReceiptMismatch as exc:
                problems.append(f"{reply['message_id']}: {exc}")
                continue
            return SenderStatus(message_id, sent["state"], answer, reply["message_id"])
        raise ReceiptMismatch("; ".join(problems))
    finally:
        if session is None:
            await own.close()
