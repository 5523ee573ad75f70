"""Fresh ebMS MessageIds, for whichever layer makes a message: the MSH, the router, a backend."""

from __future__ import annotations

import os
import uuid


def new_message_id(domain: str = "accesspoint") -> str:
    """A fresh ebMS MessageId (RFC 2822 msg-id shape, as ebMS 3 5.2.2.1 asks)."""
    return f"{uuid.uuid4()}@{domain}"


def new_xml_id() -> str:
    """A fresh wsu:Id / ds Id: 128 random bits as hex behind an underscore (an NCName cannot start with a digit).

    Written a dozen times per message (signature, key info, tokens, encrypted data): ``uuid.uuid4().hex`` costs
    several times ``os.urandom`` for the same random bits.
    """
    return f"_{os.urandom(16).hex()}"
