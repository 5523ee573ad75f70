"""A user message's header as JSON: what ``accesspoint inspect`` prints and the REST API returns about it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from accesspoint.core.model import Party, Property, UserMessage


def party_json(party: Party) -> dict[str, Any]:
    """eb:From or eb:To: its PartyIds (value, type) and role."""
    return {"party_ids": [{"value": p.value, "type": p.type} for p in party.party_ids], "role": party.role}


def properties_json(properties: Sequence[Property]) -> list[dict[str, Any]]:
    """MessageProperties or PartProperties in order, each with name, value and type."""
    return [{"name": p.name, "value": p.value, "type": p.type} for p in properties]


def header_json(header: UserMessage) -> dict[str, Any]:
    """Parties, agreement, service, action, conversation, MPC and message properties of a user message."""
    collaboration = header.collaboration_info
    agreement = collaboration.agreement_ref
    return {
        "from": party_json(header.party_info.sender),
        "to": party_json(header.party_info.receiver),
        "agreement": None
        if agreement is None
        else {"value": agreement.value, "type": agreement.type, "pmode": agreement.pmode},
        "service": {"value": collaboration.service.value, "type": collaboration.service.type},
        "action": collaboration.action,
        "conversation_id": collaboration.conversation_id,
        "mpc": header.effective_mpc,
        "message_properties": properties_json(header.message_properties),
    }
