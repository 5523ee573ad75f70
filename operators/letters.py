"""Letters exactly as they arrived: files on disk, a row each in ``letters``, written and read as streams.

A letter is what one delivery put in a mailbox: every AS4 payload as it was handed over (the business envelope —
SealedDelivery, XHE or SBD — and any other part), the signed answer the operator sent back (notification,
receipts, Meddelandekvittens) and the access point's record of the AS4 message (parties, service, action, the
digests of its evidence). Each part is a file ``<storage>/letters/<uid>/<name>`` with its size and SHA-256 in
the row, so a move to another operator (``operators/portability.py``) hands over the same bytes and the new
operator checks every digest and signature again.

Files are written before the row that names them and renamed into place: a crash leaves at most a folder no row
names, which ``FileStore.sweep`` removes at start. Chunks are written and hashed in a worker thread, so a 200 MB
payload never blocks the event loop nor sits in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LetterPart:
    """One file of a letter: its name in the letter's folder, what it was on the wire, its size and digest."""

    name: str
    content_id: str
    mime_type: str
    role: str  # envelope | payload | answer
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """As stored and as the manifest lists it."""
        return asdict(self)

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> LetterPart:
        """Read the stored form back (KeyError, TypeError when it is not one)."""
        return cls(
            str(item["name"]),
            str(item["content_id"]),
            str(item["mime_type"]),
            str(item["role"]),
            int(item["size"]),
            str(item["sha256"]),
        )


@dataclass(frozen=True, slots=True)
class Letter:
    """A letter as kept (see the module docstring)."""

    uid: str
    recipient: str
    origin: str
    network: str
    business_id: str
    sender: str
    received_at: datetime
    parts: tuple[LetterPart, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    answered_by: str | None = None
    imported_from: str | None = None

    @property
    def size(self) -> int:
        """Every part together."""
        return sum(p.size for p in self.parts)

    def part(self, role: str) -> LetterPart | None:
        """The first part in that role."""
        return next((p for p in self.parts if p.role == role), None)

    def row(self) -> dict[str, Any]:
        """The ``letters`` row."""
        return {
            "uid": self.uid,
            "recipient": self.recipient,
            "origin": self.origin,
            "network": self.network,
            "business_id": self.business_id,
            "sender": self.sender,
            "received_at": self.received_at,
            "parts": json.dumps([p.to_json() for p in self.parts]),
            "size": self.size,
            "metadata": json.dumps(self.metadata, sort_keys=True),
            "answered_by": self.answered_by,
            "imported_from": self.imported_from,
        }

    @classmethod
    def from_row(cls, row: Any) -> Letter:
        """From a ``letters`` row."""
        return cls(
            uid=row.uid,
            recipient=row.recipient,
            origin=row.origin,
            network=row.network,
            business_id=row.business_id,
            sender=row.sender,
            # SQLite hands DateTime(timezone=True) back naive: it was stored as UTC.
            received_at=row.received_at if row.received_at.tzinfo else row.received_at.replace(tzinfo=UTC),
            parts=tuple(LetterPart.from_json(p) for p in json.loads(row.parts)),
            metadata=json.loads(row.metadata),
            answered_by=row.answered_by,
            imported_from=row.imported_from,
        )


def new_uid() -> str:
    """A fresh letter uid."""
    return str(uuid.uuid4())


class Sink:
    """A file being written from chunks, hashed as it goes (in a worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: IO[bytes] | None = None

    def _write(self, chunk: bytes) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("wb")
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    async def write(self, chunk: bytes) -> None:
        """Append a chunk."""
        await asyncio.to_thread(self._write, chunk)

    def _close(self) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        else:
            self._file.close()

    async def close(self) -> tuple[int, str]:
        """Close the file; its size and hex SHA-256."""
        await asyncio.to_thread(self._close)
        return self.size, self._hash.hexdigest()


class FileStore:
    """The operator's ``storage`` folder: ``letters/<uid>/``, ``incoming/`` (being received), ``transfers/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.letters = root / "letters"
        self.incoming = root / "incoming"
        self.transfers = root / "transfers"
        for folder in (self.letters, self.incoming, self.transfers):
            folder.mkdir(parents=True, exist_ok=True)

    def folder(self, uid: str) -> Path:
        """Where a letter's files are."""
        return self.letters / uid

    def path(self, uid: str, name: str) -> Path:
        """One file of a letter."""
        return self.letters / uid / name

    def staging(self, key: str) -> Path:
        """A fresh folder in ``incoming/`` for files being received (named after ``key``, emptied first)."""
        folder = self.incoming / hashlib.sha256(key.encode()).hexdigest()[:32]
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def place(self, staged: Path, uid: str) -> Path:
        """Move a staged folder into place as letter ``uid``'s files."""
        target = self.folder(uid)
        staged.replace(target)
        return target

    def remove(self, uids: Iterable[str]) -> None:
        """Delete letters' files (what the database no longer names)."""
        for uid in uids:
            shutil.rmtree(self.folder(uid), ignore_errors=True)

    def sweep(self, known: set[str]) -> int:
        """Remove letter folders no row names and anything left in ``incoming/``; how many were removed."""
        removed = 0
        for folder in self.letters.iterdir():
            if folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        for leftover in self.incoming.iterdir():
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        return removed

    async def chunks(self, uid: str, name: str) -> AsyncIterator[bytes]:
        """A letter's file, in chunks read off the event loop."""
        handle = await asyncio.to_thread(self.path(uid, name).open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            handle.close()


def as4_metadata(record: dict[str, Any]) -> dict[str, Any]:
    """What a letter keeps of the access point's record of its AS4 message: ids, parties, service, action,
    conversation, the user message's header as received and the digests of the evidence kept there."""
    keys = ("message_id", "conversation_id", "pmode", "from", "to", "service", "action", "created_at", "header")
    kept = {key: record.get(key) for key in keys if record.get(key) is not None}
    kept["payloads"] = [
        {k: p.get(k) for k in ("content_id", "mime_type", "size", "sha256")} for p in record.get("payloads", [])
    ]
    kept["evidence"] = [{k: e.get(k) for k in ("kind", "size", "sha256")} for e in record.get("evidence", [])]
    return kept


def file_digest(path: Path) -> tuple[int, str]:
    """Size and hex SHA-256 of a file, read in chunks (call it off the event loop)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
