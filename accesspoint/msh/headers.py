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
from accesspoint.store import EvidenceKind, MessageStore, StoredMessage
from pmode import Route


async def stored_header(store: MessageStore, message: StoredMessage) -> dict[str, Any] | None:
    """The message's header as JSON, read from its first raw-message evidence (None once that is purged)."""
    kept = await store.evidence(message.direction, message.message_id, EvidenceKind.RAW_MESSAGE)
    if not kept:
        return None
    envelope = b"".join([chunk async for chunk in store.read(kept[0])])
    header = (await asyncio.to_thread(parse_envelope, envelope)).messaging.message
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
