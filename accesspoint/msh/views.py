"""How messages look outside the shell: the JSON the API and webhooks show, the facts the store indexes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from accesspoint.core.model import Party, UserMessage
from accesspoint.store import MessageInfo, StoredMessage
from pmode import Route


def party_text(party: Party) -> str:
    """A party as the store and the API name it: ``type::value`` of its first PartyId (the value alone untyped)."""
    first = party.party_ids[0]
    return first.value if first.type is None else f"{first.type}::{first.value}"


def message_info(user: UserMessage, route: Route) -> MessageInfo:
    """The header facts of a user message on a leg, as the store indexes them."""
    return MessageInfo(
        message_id=user.message_id,
        ref_to_message_id=user.message_info.ref_to_message_id,
        conversation_id=user.collaboration_info.conversation_id,
        pmode_id=route.pmode.id,
        leg=route.leg.index,
        mpc=user.effective_mpc,
        from_party=party_text(user.party_info.sender),
        to_party=party_text(user.party_info.receiver),
        service=user.collaboration_info.service.value,
        action=user.collaboration_info.action,
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def message_json(message: StoredMessage) -> dict[str, Any]:
    """A message as the REST API answers it and webhook events carry it."""
    return {
        "message_id": message.message_id,
        "direction": str(message.direction),
        "state": str(message.state),
        "pmode": message.pmode_id,
        "conversation_id": message.conversation_id,
        "ref_to_message_id": message.ref_to_message_id,
        "from": message.from_party,
        "to": message.to_party,
        "service": message.service,
        "action": message.action,
        "attempts": message.attempts,
        "next_attempt_at": _iso(message.next_attempt_at),
        "last_error": None
        if message.last_error_code is None
        else {"code": message.last_error_code, "detail": message.last_error_detail},
        "created_at": _iso(message.created_at),
        "updated_at": _iso(message.updated_at),
    }
