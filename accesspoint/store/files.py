"""A file store for payloads and evidence: streamed in and out, never whole in memory, durable on return."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
# A stream that ends within this many bytes is written in one hop to a worker thread (see FileStore.write).
SMALL_FILE = 256 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    """Where a stream landed (relative to the store's root), how long it was and its SHA-256 (hex)."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Content:
    """Bytes to keep: held in the database (``data``) when short, else a durable file (``path``); size and SHA-256
    (hex) either way."""

    size: int
    sha256: str
    data: bytes | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedFile:
    """A payload a caller wrote whole under ``FileStore.scratch`` (in a worker thread, hashing on the way).

    ``FileStore.write`` given one moves it into place (made durable, renamed) instead of copying and hashing its
    bytes again; read as a stream it is just the file's bytes.
    """

    path: Path
    size: int
    sha256: str

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _chunks(self.path)


@dataclass(frozen=True, slots=True)
class StoredFileRef:
    """A file already in ``store`` (path relative to its root, size and SHA-256 as recorded when it was written).

    ``FileStore.write`` given one of its own gives the file a second name (a hard link) instead of copying it:
    stored files are never changed in place, and each name is deleted on its own. A router forwarding a 2 GiB
    letter so needs no second 2 GiB. Read as a stream it is just the file's bytes.
    """

    store: FileStore
    path: str
    size: int
    sha256: str

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.store.read(self.path)


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
            yield chunk


class FileTooLarge(Exception):
    """A stream went past the limit given to ``FileStore.write``; nothing was kept."""


class FileStore:
    """Files under one root: ``tmp/`` for writes in progress, ``ab/cd/<uuid>`` once complete."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        # Without fsync a file survives the death of the process (the kernel has it) but not a power cut.
        self.fsync = fsync
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    @property
    def scratch(self) -> Path:
        """Where ``PreparedFile``s are written (the same file system as the store, so a rename moves them)."""
        return self._tmp

    async def write(self, chunks: AsyncIterable[bytes], *, limit: int | None = None) -> StoredFile:
        """Stream chunks to a temporary file, fsync, rename into place; hashes and counts on the way.

        The first SMALL_FILE bytes are held in memory: a stream that ends within them (a 4 KB payload, a
        receipt, most raw messages) is written, made durable and renamed in one hop to a worker thread, since
        each hop costs two thread switches, more than writing a few KB. A longer one goes to the file from
        there on, chunk by chunk, so memory stays bounded by SMALL_FILE plus a chunk.
        """
        name = uuid.uuid4().hex
        temp = self._tmp / f"{name}.part"
        final = self.root / name[:2] / name[2:4] / name
        if isinstance(chunks, PreparedFile) and chunks.path.parent == self._tmp:
            if limit is not None and chunks.size > limit:
                raise FileTooLarge(f"stream longer than {limit} bytes")
            await asyncio.to_thread(_adopt, chunks.path, final, self.fsync)
            return StoredFile(path=final.relative_to(self.root).as_posix(), size=chunks.size, sha256=chunks.sha256)
        if isinstance(chunks, StoredFileRef) and chunks.store is self:
            if limit is not None and chunks.size > limit:
                raise FileTooLarge(f"stream longer than {limit} bytes")
            try:
                await asyncio.to_thread(_link, self._resolve(chunks.path), final, self.fsync)
            except OSError as exc:  # a file system without hard links (or across devices): copy it instead
                log.debug("linking %s failed (%s); copying it", chunks.path, exc)
            else:
                return StoredFile(path=final.relative_to(self.root).as_posix(), size=chunks.size, sha256=chunks.sha256)
        digest = hashlib.sha256()
        size = 0
        held: list[bytes] = []
        handle: BinaryIO | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise FileTooLarge(f"stream longer than {limit} bytes")
                digest.update(chunk)
                if handle is not None:
                    await asyncio.to_thread(handle.write, chunk)
                    continue
                held.append(chunk)
                if size > SMALL_FILE:
                    handle = await asyncio.to_thread(_open_with, temp, held)
                    held = []
            if handle is None:
                await asyncio.to_thread(_write_whole, temp, final, held, self.fsync)
            else:
                await asyncio.to_thread(_finish, handle, temp, final, self.fsync)
        except BaseException:
            await asyncio.to_thread(_discard, handle, temp)
            raise
        return StoredFile(path=final.relative_to(self.root).as_posix(), size=size, sha256=digest.hexdigest())

    async def take(self, chunks: AsyncIterable[bytes], *, inline_limit: int, limit: int | None = None) -> Content:
        """The stream as Content: in memory when it ends within inline_limit bytes (it then goes into the database
        with its row, in the writer's transaction), else streamed to a durable file like ``write``.

        Short content costs no file, no fsync and no thread hop here: the database's one commit per batch makes it
        durable together with the rows that refer to it.
        """
        if isinstance(chunks, PreparedFile | StoredFileRef) and chunks.size > inline_limit:
            stored = await self.write(chunks, limit=limit)  # moved into place, not copied and hashed again
            return Content(size=stored.size, sha256=stored.sha256, path=stored.path)
        held: list[bytes] = []
        size = 0
        iterator = aiter(chunks)
        async for chunk in iterator:
            size += len(chunk)
            if limit is not None and size > limit:
                raise FileTooLarge(f"stream longer than {limit} bytes")
            held.append(chunk)
            if size > inline_limit:
                stored = await self.write(_resumed(held, iterator), limit=limit)
                return Content(size=stored.size, sha256=stored.sha256, path=stored.path)
        data = b"".join(held)
        return Content(size=size, sha256=hashlib.sha256(data).hexdigest(), data=data)

    async def read(self, path: str) -> AsyncIterator[bytes]:
        """Yield the file's bytes in chunks (a file shorter than a chunk costs one hop to a worker thread)."""
        handle, first = await asyncio.to_thread(_open_and_read, self._resolve(path))
        if handle is None:
            if first:
                yield first
            return
        try:
            yield first
            while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    def blocking_read(self, path: str) -> Iterator[bytes]:
        """The file's bytes in chunks, read in the calling thread (for a worker thread, never the event loop)."""
        with self._resolve(path).open("rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                yield chunk

    async def delete(self, path: str) -> None:
        """Remove a file; one already gone is fine, since purges may be repeated after a crash."""
        await asyncio.to_thread(self._resolve(path).unlink, missing_ok=True)

    def _resolve(self, path: str) -> Path:
        resolved = (self.root / path).resolve()
        # Paths come from our own database, but a path outside the root is never worth following.
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError(f"path {path!r} is outside the file store")
        return resolved


async def _resumed(held: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks already taken from a stream, then the rest of it."""
    for chunk in held:
        yield chunk
    async for chunk in rest:
        yield chunk


def _finish(handle: BinaryIO, temp: Path, final: Path, fsync: bool) -> None:
    """Make the temporary file durable, then give it its final name and make the rename durable too."""
    handle.flush()
    if fsync:
        os.fsync(handle.fileno())
    handle.close()
    final.parent.mkdir(parents=True, exist_ok=True)
    temp.replace(final)
    if fsync:
        _sync_directory(final.parent)


def _sync_directory(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _link(existing: Path, final: Path, fsync: bool) -> None:
    """Give an existing file its new final name; durable once the directory entry is."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.link(existing, final)
    if fsync:
        _sync_directory(final.parent)


def _adopt(prepared: Path, final: Path, fsync: bool) -> None:
    _finish(prepared.open("ab"), prepared, final, fsync)


def _open_with(temp: Path, chunks: list[bytes]) -> BinaryIO:
    handle = temp.open("wb")
    try:
        handle.writelines(chunks)
    except BaseException:
        handle.close()
        raise
    return handle


def _write_whole(temp: Path, final: Path, chunks: list[bytes], fsync: bool) -> None:
    _finish(_open_with(temp, chunks), temp, final, fsync)


def _open_and_read(path: Path) -> tuple[BinaryIO | None, bytes]:
    """The file's first chunk, and its handle when more may follow (None: the file is closed, all was read)."""
    handle = path.open("rb")
    try:
        first = handle.read(READ_CHUNK)
    except BaseException:
        handle.close()
        raise
    if len(first) < READ_CHUNK:
        handle.close()
        return None, first
    return handle, first


def _discard(handle: BinaryIO | None, temp: Path) -> None:
    if handle is not None:
        handle.close()
    temp.unlink(missing_ok=True)
