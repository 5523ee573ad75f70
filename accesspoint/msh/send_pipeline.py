"""The send pipeline: a stored outgoing message rebuilt, compressed, signed, encrypted and packed into a spool.

Every attempt rebuilds the message from the header as submitted and the stored payloads (``secure``). A
message whose payloads together pass ``offload_threshold`` is secured entirely in a worker thread, in one
hop: compression, the digests the signature covers, the encryption and the packing all read the payloads
there, so the event loop never waits for the crypto of a large attachment; a small one is cheaper secured in
place than the hop would cost. The packed body goes to a spool (memory, or a file past 1 MiB) that is then
POSTed (or handed to a puller) with its length, so memory does not grow with the payload either.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import IO

from accesspoint.core.envelope import parse_envelope
from accesspoint.core.model import Property, UserMessage
from accesspoint.core.namespaces import PartProperty, SoapVersion
from accesspoint.msh.context import Context
from accesspoint.msh.security import Signer
from accesspoint.msh.wire import SPOOL_IN_MEMORY, InMemory, Spools, spooled_chunks
from accesspoint.routing.outbound import addressed
from accesspoint.security.outbound import ChunkSource, Payload, SecuredMessage
from accesspoint.servicekit.metrics import timed
from accesspoint.store import Direction, EvidenceKind, MessageStore, NewPayload, StoredMessage, StoredPayload
from pmode import Route

SUBMITTED_HEADERS = 4096  # headers as submitted kept in memory for their first attempt (the oldest go first)
SUBMITTED_PAYLOAD_BYTES = 64 * 1024 * 1024  # ... with their payloads while these add up to no more than this
SUBMITTED_PAYLOAD_LIMIT = 256 * 1024  # a message's payloads kept so only up to this (larger: read from the store)


@dataclass(slots=True)
class SpooledMessage:
    """A secured message ready for the wire: what was signed, and the packed body in a spool at its start."""

    secured: SecuredMessage
    body: IO[bytes]
    size: int

    @property
    def content_type(self) -> str:
        """The HTTP Content-Type of the packed body (multipart/related with its start and boundary)."""
        return self.secured.packed.content_type

    def payload(self) -> bytes | AsyncIterator[bytes]:
        """The packed body for a request or response: its bytes when the spool is in memory (reading them costs
        less than a hop to a thread would), else chunks read off the loop."""
        if self.size <= SPOOL_IN_MEMORY:
            return self.body.read()
        return spooled_chunks(self.body)

    async def close(self) -> None:
        """Drop the spool (a large one in a worker thread: freeing a large file takes a while)."""
        if self.size > SPOOL_IN_MEMORY:
            await asyncio.to_thread(self.body.close)
        else:
            self.body.close()


@dataclass(frozen=True, slots=True)
class _Part:
    """A payload as securing reads it: from the store, or the bytes just submitted."""

    content_id: str
    mime_type: str
    properties: dict[str, str]
    size: int
    open: ChunkSource


@dataclass(frozen=True, slots=True)
class _Submitted:
    """A just-submitted message until its first attempt: its header, and its payloads when they were small."""

    header: UserMessage
    parts: tuple[_Part, ...] | None

    @property
    def size(self) -> int:
        return 0 if self.parts is None else sum(p.size for p in self.parts)


@dataclass(frozen=True, slots=True)
class _Job:
    """Everything securing needs, gathered on the loop; ``run`` does the work wherever it is called."""

    user: UserMessage
    payloads: tuple[Payload, ...]
    signer: Signer
    route: Route
    soap_version: SoapVersion
    compressed: Spools | None  # large payloads: gzipped once into these files, not once per reading

    def run(self) -> SpooledMessage:
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (SpooledMessage closes it)
        try:
            secured = self.signer.secure(self.user, self.payloads, self.route, self.soap_version, self.compressed)
            for chunk in secured.packed.body:
                spool.write(chunk)
            size = spool.tell()
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        finally:
            if self.compressed is not None:
                self.compressed.close()
        return SpooledMessage(secured, spool, size)


class SendPipeline:
    """Builds what goes on the wire for an outgoing message, off the loop when it is large."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # The header of each message submitted here, until its first attempt: the model its kept evidence was
        # serialised from, so the first attempt neither reads those bytes back nor parses them (retries and other
        # instances do); with it the payloads submitted in memory, the very bytes the store kept, so the first
        # attempt does not read them back either (a read is a hop to a thread on SQLite).
        self._submitted: dict[str, _Submitted] = {}
        self._submitted_bytes = 0

    def remember(self, header: UserMessage, payloads: Sequence[NewPayload]) -> None:
        """Keep a just-submitted message's header (and its payloads when small and in memory) for its first attempt."""
        parts: tuple[_Part, ...] | None = None
        if all(isinstance(p.chunks, InMemory) for p in payloads):
            parts = tuple(_in_memory(p) for p in payloads)
            if sum(p.size for p in parts) > SUBMITTED_PAYLOAD_LIMIT:
                parts = None
        entry = _Submitted(header, parts)
        while self._submitted and (
            len(self._submitted) >= SUBMITTED_HEADERS or self._submitted_bytes + entry.size > SUBMITTED_PAYLOAD_BYTES
        ):
            self._forget(next(iter(self._submitted)))
        self._submitted[header.message_id] = entry
        self._submitted_bytes += entry.size

    def _forget(self, message_id: str) -> _Submitted | None:
        entry = self._submitted.pop(message_id, None)
        if entry is not None:
            self._submitted_bytes -= entry.size
        return entry

    async def secure(
        self, message: StoredMessage, route: Route, soap_version: SoapVersion = SoapVersion.V12
    ) -> SpooledMessage:
        """The message compressed, signed, encrypted and packed; ValueError or EbmsError if it cannot be."""
        store = self.ctx.store
        submitted = self._forget(message.message_id)
        user = submitted.header if submitted is not None else await self._stored_header(message)
        parts = submitted.parts if submitted is not None else None
        if parts is None:
            parts = tuple(_stored(store, p) for p in await store.payloads(message))
        large = sum(p.size for p in parts) > self.ctx.settings.offload_threshold
        job = _Job(
            addressed(user, route),  # a dynamic partner's eb:To is the access point discovery found
            _payloads(parts, route),
            self.ctx.signer,
            route,
            soap_version,
            Spools(store.files.scratch) if large else None,
        )
        metrics, tracer = self.ctx.metrics, self.ctx.tracer
        with tracer.start_as_current_span("as4.secure"), timed(metrics.security_duration, operation="secure"):
            return await asyncio.to_thread(job.run) if large else job.run()

    async def _stored_header(self, message: StoredMessage) -> UserMessage:
        """The header as submitted, from its evidence (a retry, or a message another instance took in)."""
        store = self.ctx.store
        kept = (await store.evidence(Direction.OUT, message.message_id, EvidenceKind.RAW_MESSAGE))[0]
        user = parse_envelope(b"".join([c async for c in store.read(kept)])).messaging.message
        if not isinstance(user, UserMessage):
            raise ValueError("the stored header is not a user message")
        return user


# Part properties the MSH writes itself: MimeType and CharacterSet from the payload, CompressionType from the leg.
_OWN_PART_PROPERTIES = frozenset(p.value for p in PartProperty)


def _stored(store: MessageStore, payload: StoredPayload) -> _Part:
    return _Part(payload.content_id, payload.mime_type, payload.properties, payload.size, store.payload_source(payload))


def _in_memory(payload: NewPayload) -> _Part:
    assert isinstance(payload.chunks, InMemory)
    data = payload.chunks.data
    return _Part(payload.content_id, payload.mime_type, dict(payload.properties), len(data), lambda: iter((data,)))


def _payloads(parts: Sequence[_Part], route: Route) -> tuple[Payload, ...]:
    """The payloads as they are sent, each with the PartProperties it was submitted with (AS4_CP_TA27)."""
    return tuple(
        Payload(
            p.content_id,
            p.mime_type,
            p.open,
            compress=route.leg.compression,
            character_set=p.properties.get(PartProperty.CHARACTER_SET.value),
            properties=tuple(Property(k, v) for k, v in p.properties.items() if k not in _OWN_PART_PROPERTIES),
        )
        for p in parts
    )
