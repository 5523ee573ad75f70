"""Fresh ebMS MessageIds, for whichever layer makes a message: the MSH, the router, a backend."""

from __future__ import annotations

import uuid


def new_message_id(domain: str = "accesspoint") -> str:
    """A fresh ebMS MessageId (RFC 2822 msg-id shape, as ebMS 3 5.2.2.1 asks)."""
    return f"{uuid.uuid4()}@{domain}"
