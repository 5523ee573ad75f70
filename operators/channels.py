"""How a router hands a sealed delivery to a mailbox operator: one narrow Protocol, an AS4 and a SOAP channel.

``As4Channel`` submits the SealedDelivery to the router's own access point on the operator's two-way
push-and-push P-Mode; the answer (the operator's signed receipt) comes back later on the reply leg and is read
with ``sender.end_to_end_status``. ``SoapChannel`` calls the operator's Service v3 ``deliverSecure`` and has its
answer at once (Delivered per recipient; the signed Receipt, where asked for, follows through Mina meddelanden's
own channels, outside this adapter).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from lxml import etree

from operators.soap import DeliverSecureFault, ServiceV3Client


@dataclass(frozen=True, slots=True)
class Handover:
    """What the channel knows right after handing a delivery over."""

    channel: str  # "as4" or "soap"
    reference: str  # the AS4 MessageId, or the operator's TransId
    delivered: bool | None  # SOAP: the operator's Delivered; AS4: None until the end-to-end answer comes
    detail: str = ""


class OperatorChannel(Protocol):
    """Anything that can take a SealedDelivery to a mailbox operator."""

    async def deliver(self, sealed: bytes, *, message_id: str, recipient: str) -> Handover:
        """Hand the delivery over; raise on a refusal the channel sees at once."""
        ...


@dataclass
class As4Channel:
    """Through the router's access point (its backend API) on the operator's two-way P-Mode."""

    api: str
    token: str = field(repr=False)
    pmode: str
    session: aiohttp.ClientSession | None = None

    async def deliver(self, sealed: bytes, *, message_id: str, recipient: str) -> Handover:
        """Submit the delivery; the access point sends it and tracks the AS4 receipt."""
        document = {
            "pmode": self.pmode,
            "message_id": message_id,
            "properties": {"finalRecipient": recipient},
            "payloads": [
                {
                    "content_id": f"delivery@{message_id.split('@')[-1]}",
                    "mime_type": "application/xml",
                    "data": base64.b64encode(sealed).decode(),
                }
            ],
        }
        session = self.session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        try:
            async with session.post(
                f"{self.api.rstrip('/')}/api/v1/messages",
                data=json.dumps(document),
                headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            ) as response:
                answer = await response.read()
                if response.status not in (202, 409):
                    raise RuntimeError(f"the access point refused the submission: HTTP {response.status} {answer!r}")
        finally:
            if self.session is None:
                await session.close()
        return Handover("as4", message_id, None, "submitted")


@dataclass
class SoapChannel:
    """To an operator still on the Service v3 contract."""

    url: str
    schema: etree.XMLSchema | None = None
    session: aiohttp.ClientSession | None = None

    async def deliver(self, sealed: bytes, *, message_id: str, recipient: str) -> Handover:
        """``deliverSecure``; the operator's Delivered for the recipient (DeliverSecureFault on a fault)."""
        result = await ServiceV3Client(self.url, self.schema, self.session).deliver_secure(sealed)
        delivered = dict(result.statuses).get(recipient)
        if delivered is None:
            raise DeliverSecureFault(0, f"the answer names no status for {recipient}")
        return Handover("soap", result.trans_id, delivered, f"deliverSecure for {message_id}")
