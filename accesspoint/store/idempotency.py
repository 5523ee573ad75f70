"""Idempotent submissions: what a submission was answered, kept per backend and key, in the message's transaction.

A backend that did not get an answer (a timeout, a 503, a dropped connection) sends the same request again. The
key is its ``Idempotency-Key`` header, or the MessageId the submission names; the request is known by a
fingerprint of its content (``fingerprint``), not its bytes, so a multipart body with a new boundary is the same
request. The answer is written by ``IdempotencyHook`` in the transaction that stores the message, so either both
are kept or neither. A retry then finds the key taken (the insert collides, or ``IdempotencyKeys.get`` finds it):

- same fingerprint: the original answer again (``KeptAnswer.status`` and ``response``), nothing stored twice;
- another fingerprint: a conflict (HTTP 409), the key is not reused for a different message.

Keys expire after their retention (``purge``); after that a repeated MessageId is still refused by the messages'
own uniqueness, only without the original answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select

from accesspoint.store import schema
from accesspoint.store.db import Database
from accesspoint.store.ops import Also
from accesspoint.store.records import StoredMessage

K = schema.idempotency_keys
KEY_LENGTH = 255
PURGE_BATCH = 500

_DELETE_ONE = delete(K).where(K.c.scope == bindparam("b_scope"), K.c.key == bindparam("b_key"))

# Key namespaces: a header's key and a MessageId never collide with each other.
HEADER = "key:"
MESSAGE_ID = "message-id:"


def fingerprint(document: Mapping[str, Any], parts: Sequence[tuple[str, str, str]] = ()) -> str:
    """SHA-256 of a submission's content: its JSON document (keys sorted) and each streamed part's (name, MIME
    type, SHA-256 of the bytes); whitespace, key order and multipart boundaries do not change it."""
    canonical = json.dumps(
        {"document": document, "parts": [list(part) for part in parts]},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def stored_key(namespace: str, value: str) -> str:
    """The key as kept: namespaced, and hashed when it would not fit the column."""
    key = namespace + value
    if len(key) <= KEY_LENGTH:
        return key
    return namespace + "sha256:" + hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """What a submission under a key was answered."""

    message_id: str
    request_sha256: str
    status: int
    response: str
    created_at: datetime

    def same_request(self, request_sha256: str) -> bool:
        """Whether a retry with this fingerprint is the request that was answered."""
        return self.request_sha256 == request_sha256


class IdempotencyHook:
    """A TransactionHook that keeps the answer to a submission under each of its keys."""

    def __init__(
        self,
        scope: str,
        keys: Sequence[str],
        request_sha256: str,
        answer: Callable[[StoredMessage], tuple[int, str]],
        *,
        now: datetime,
        keep: timedelta,
    ) -> None:
        self.scope = scope
        self.keys = tuple(keys)
        self.request_sha256 = request_sha256
        self._answer = answer
        self._now = now
        self._keep = keep

    def rows(self, message: StoredMessage) -> list[Also]:
        """One row per key (a key already taken fails the write, and with it the message's)."""
        if not self.keys:
            return []
        status, response = self._answer(message)
        return [
            Also(
                "idempotency_keys",
                {
                    "scope": self.scope,
                    "key": key,
                    "request_sha256": self.request_sha256,
                    "message_id": message.message_id,
                    "status": status,
                    "response": response,
                    "created_at": self._now,
                    "expires_at": self._now + self._keep,
                },
            )
            for key in self.keys
        ]

    def committed(self) -> None:
        """Nothing waits for a kept answer."""


class IdempotencyKeys:
    """Reads and purges kept answers."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def get(self, scope: str, keys: Sequence[str]) -> KeptAnswer | None:
        """The answer kept under the first of keys that has one, or None."""
        if not keys:
            return None
        query = select(K).where(K.c.scope == scope, K.c.key.in_(list(keys)))
        rows = await self.db.run(lambda connection: connection.execute(query).all())
        by_key = {row.key: row for row in rows}
        for key in keys:
            row = by_key.get(key)
            if row is not None:
                return KeptAnswer(row.message_id, row.request_sha256, row.status, row.response, row.created_at)
        return None

    async def purge(self, *, now: datetime) -> int:
        """Delete the answers whose retention ran out; how many."""
        old = select(K.c.scope, K.c.key).where(K.c.expires_at <= now).limit(PURGE_BATCH)

        def drop(connection: Connection) -> int:
            found = connection.execute(old).all()
            if found:
                connection.execute(_DELETE_ONE, [{"b_scope": scope, "b_key": key} for scope, key in found])
            return len(found)

        total = 0
        while True:
            count = await self.db.run(drop)
            total += count
            if count < PURGE_BATCH:
                return total
