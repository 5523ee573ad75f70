"""Signed webhook bodies, the contract between the access point that sends events and a backend that takes them.

Each body is signed with HMAC-SHA256 under the webhook's shared secret: ``X-Accesspoint-Signature:
sha256=<hex>``. The access point signs (accesspoint/msh), a backend such as the reference operator checks.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Accesspoint-Signature"
EVENT_HEADER = "X-Accesspoint-Event"


def signature(secret: str, body: bytes) -> str:
    """The value of the signature header for a body: ``sha256=`` and the hex HMAC-SHA256 under the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, body: bytes, header: str | None) -> bool:
    """Whether the signature header fits the body, compared in constant time."""
    return hmac.compare_digest((header or "").encode(), signature(secret, body).encode())
