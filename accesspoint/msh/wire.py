"""Bytes in and out of the shell: request bodies read into spooled parts, SOAP answers, streams of chunks."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterator
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
    """Parse a streamed AS4 body into spooled parts; EBMS:0103 with ``too_large`` past ``limit`` bytes."""
    reader = MessageReader(content_type, sink_factory=spool)
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, too_large)
        reader.feed(chunk)
    return reader.finish()


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


def soap_fault(version: SoapVersion, *, status: int = 500, reason: str = "internal error") -> web.Response:
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
    return web.Response(body=body, status=status, headers=headers)
