"""The archive's audit log as a hash chain, sans-I/O: each entry's hash covers the previous entry's hash.

``hash = SHA-256(JSON [prev_hash, seq, at, actor, action, subject, detail])`` (sorted keys, no spaces, UTF-8). The
first entry's ``prev_hash`` is 64 zeros. Changing, removing or reordering any entry breaks the chain at that entry
(and every later one); cutting the tail off is caught by comparing the head with one published earlier
(``expect_head``). The table is append-only in the database too (triggers refuse UPDATE and DELETE), so tampering
needs someone who can drop triggers; the verifier is what tells.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry as stored."""

    seq: int
    at: str  # ISO 8601, UTC
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, action: str, subject: str, detail: Any) -> str:
    """The hash of an entry that follows ``prev_hash``."""
    document = [prev_hash, seq, at, actor, action, subject, detail]
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What the verifier found: ok, how many entries, the head hash, and where it broke (if it did)."""

    ok: bool
    count: int
    head: str
    broken_at: int | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The CLI's answer."""
        return {"ok": self.ok, "entries": self.count, "head": self.head, "broken_at": self.broken_at,
                "problem": self.problem}  # fmt: skip


def verify_chain(entries: Iterable[AuditEntry], *, expect_head: str | None = None) -> ChainReport:
    """Walk the entries in sequence order and check every link; the first break is reported."""
    previous, count = GENESIS, 0
    for expected_seq, entry in enumerate(entries, start=1):
        if entry.seq != expected_seq:
            return ChainReport(
                False, count, previous, entry.seq, f"entry {expected_seq} is missing (found {entry.seq})"
            )
        if entry.prev_hash != previous:
            return ChainReport(False, count, previous, entry.seq, f"entry {entry.seq} does not follow its predecessor")
        recomputed = entry_hash(previous, entry.seq, entry.at, entry.actor, entry.action, entry.subject, entry.detail)
        if recomputed != entry.hash:
            return ChainReport(False, count, previous, entry.seq, f"entry {entry.seq} was altered (hash mismatch)")
        previous, count = entry.hash, count + 1
    if expect_head is not None and previous != expect_head:
        return ChainReport(False, count, previous, None, "the head differs from the one expected (entries cut off?)")
    return ChainReport(True, count, previous)
