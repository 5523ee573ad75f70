"""What the backend learns about a message's ebMS header: the header as stored, and a refused message's error.

The store indexes a few header facts (ids, parties, service, action); the rest (roles, service type, message
properties) lives in the message's first raw-message evidence, the envelope as received or the header as
submitted. ``GET /api/v1/messages/{id}`` shows it as ``header``, in the shape ``accesspoint inspect`` prints.
"""

from __future__ import annotations

import asyncio
from typing import Any

from accesspoint.core.envelope import parse_envelope
from accesspoint.core.errors import EbmsError
from accesspoint.core.model import UserMessage
from accesspoint.core.summary import header_json
from accesspoint.store import Evidence, MessageStore
from pmode import Route


async def raw_header(store: MessageStore, raw: Evidence | None, inline: bytes | None = None) -> dict[str, Any] | None:
    """The header as JSON of a raw-message evidence (its bytes given when already read), None without one.

    Not validated again: it was when the message came in or was submitted, and only valid ones are kept."""
    if raw is None:
        return None
    envelope = inline if inline is not None else b"".join([chunk async for chunk in store.read(raw)])
    header = (await asyncio.to_thread(parse_envelope, envelope, validate=False)).messaging.message
    return header_json(header) if isinstance(header, UserMessage) else None


def refusal(user: UserMessage, route: Route, error: EbmsError) -> dict[str, Any]:
    """The ``message-refused`` event's data: the refused message's ids and header, and the error it was given."""
    return {
        "message_id": user.message_id,
        "ref_to_message_id": user.message_info.ref_to_message_id,
        "pmode": route.pmode.id,
        **header_json(user),
        "error": {
            "code": error.code,
            "short_description": error.short_description,
            "severity": str(error.severity),
            "category": str(error.category),
            "detail": error.detail,
        },
    }
