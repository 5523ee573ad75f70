"""Bytes in and out of the shell: request bodies read into spooled parts, SOAP answers, streams of chunks."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import MessageReader, ReceivedMessage, ReceivedPart
from accesspoint.core.mime import PartStart
from accesspoint.core.namespaces import SoapVersion

READ_CHUNK = 64 * 1024
SPOOL_READ_CHUNK = 256 * 1024
SPOOL_IN_MEMORY = 1024 * 1024  # a part or a packed message up to this stays in memory, larger ones go to a file
FEED_BATCH = 1024 * 1024  # bytes of a large body parsed per hop to a worker thread


def spool(_start: PartStart | None = None) -> tempfile.SpooledTemporaryFile[bytes]:
    """A sink for one received part: memory while small, a temporary file past SPOOL_IN_MEMORY."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)


def read_spooled(part: ReceivedPart) -> Iterator[bytes]:
    """The bytes of a part received into a ``spool`` sink, from its start."""
    sink: Any = part.sink
    sink.seek(0)
    while chunk := sink.read(READ_CHUNK):
        yield chunk


async def read_message_body(
    chunks: AsyncIterable[bytes], content_type: str, *, limit: int, too_large: str
) -> ReceivedMessage:
    """Parse a streamed AS4 body into spooled parts; EBMS:0103 with ``too_large`` past ``limit`` bytes.

    The caller ``discard``s the message when done with it; a body that fails to parse leaves no spool behind.
    """
    made: list[tempfile.SpooledTemporaryFile[bytes]] = []

    def sink(start: PartStart) -> tempfile.SpooledTemporaryFile[bytes]:
        made.append(spool(start))
        return made[-1]

    reader = MessageReader(content_type, sink_factory=sink)
    size = 0
    batch: list[bytes] = []
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, too_large)
            if size <= SPOOL_IN_MEMORY:
                reader.feed(chunk)  # a small message stays in memory: parsing it costs less than a hop
                continue
            # Past that the parts go to files: parsed and written in a worker thread, a batch at a time, so a
            # disk that throttles writes never holds the loop.
            batch.append(chunk)
            if sum(map(len, batch)) >= FEED_BATCH:
                await asyncio.to_thread(_feed, reader, batch)
                batch = []
        if batch:
            await asyncio.to_thread(_feed, reader, batch)
        return reader.finish()
    except BaseException:
        await release(made, large=size > SPOOL_IN_MEMORY)
        raise


def _feed(reader: MessageReader, chunks: list[bytes]) -> None:
    for chunk in chunks:
        reader.feed(chunk)


async def release(handles: Sequence[IO[bytes]], *, large: bool) -> None:
    """Close spools; ``large`` ones in a worker thread (a file system can take a while to free a large file)."""
    if large:
        await asyncio.to_thread(_close_all, handles)
    else:
        _close_all(handles)


def _close_all(handles: Sequence[IO[bytes]]) -> None:
    for handle in handles:
        handle.close()


async def discard(received: ReceivedMessage | None) -> None:
    """Close the spools of a received message's parts."""
    parts = () if received is None else received.attachments
    sinks: list[Any] = [part.sink for part in parts if hasattr(part.sink, "close")]
    await release(sinks, large=any(part.size > SPOOL_IN_MEMORY for part in parts))


class FileSpool:
    """An unnamed temporary file written once and read from the start by each reader (pread: no shared offset).

    What a large part's plaintext (receiving) or a large payload's gzip (sending) is kept in between readings.
    """

    def __init__(self, folder: Path) -> None:
        self.handle = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (discard closes it)

    def write(self, data: bytes, /) -> int:
        return self.handle.write(data)

    def chunks(self) -> Iterator[bytes]:
        self.handle.flush()
        offset = 0
        while chunk := os.pread(self.handle.fileno(), SPOOL_READ_CHUNK, offset):
            offset += len(chunk)
            yield chunk

    def discard(self) -> None:
        self.handle.close()


class Spools:
    """Makes ``FileSpool``s in one folder and discards them all together."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: list[FileSpool] = []

    def __call__(self) -> FileSpool:
        self.made.append(FileSpool(self.folder))
        return self.made[-1]

    def close(self) -> None:
        for spool in self.made:
            spool.discard()
        self.made.clear()


async def once(data: bytes) -> AsyncIterator[bytes]:
    """Bytes as a stream of one chunk (what the store takes)."""
    yield data


async def spooled_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    """A spool's bytes from where it stands, in chunks read off the loop, for a streamed body."""
    while chunk := await asyncio.to_thread(handle.read, SPOOL_READ_CHUNK):
        yield chunk


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A file's bytes in chunks read off the loop."""
    with path.open("rb") as handle:
        async for chunk in spooled_chunks(handle):
            yield chunk


def soap_response(body: bytes, version: SoapVersion) -> web.Response:
    """A signal (receipt, error) as the HTTP 200 answer of an AS4 exchange."""
    return web.Response(body=body, status=200, headers={"Content-Type": f"{version.content_type}; charset=UTF-8"})


def soap_fault(
    version: SoapVersion, *, status: int = 500, reason: str = "internal error", retry_after: int | None = None
) -> web.Response:
    """A SOAP Fault (Receiver / Server) saying nothing about the cause; 500 for a fault, 503 for "try later"."""
    text = reason.encode()
    if version is SoapVersion.V11:
        fault = b"<faultcode>soap:Server</faultcode><faultstring>" + text + b"</faultstring>"
    else:
        fault = (
            b"<soap:Code><soap:Value>soap:Receiver</soap:Value></soap:Code>"
            b'<soap:Reason><soap:Text xml:lang="en">' + text + b"</soap:Text></soap:Reason>"
        )
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="' + version.value.encode() + b'">'
        b"<soap:Body><soap:Fault>" + fault + b"</soap:Fault></soap:Body></soap:Envelope>"
    )
    headers = {"Content-Type": f"{version.content_type}; charset=UTF-8"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.Response(body=body, status=status, headers=headers)
