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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from accesspoint.core.envelope import parse_envelope
from accesspoint.core.model import Property, UserMessage
from accesspoint.core.namespaces import PartProperty, SoapVersion
from accesspoint.msh.context import Context
from accesspoint.msh.security import Signer
from accesspoint.msh.wire import SPOOL_IN_MEMORY, Spools
from accesspoint.routing.outbound import addressed
from accesspoint.security.outbound import Payload, SecuredMessage
from accesspoint.servicekit.metrics import timed
from accesspoint.store import Direction, EvidenceKind, MessageStore, StoredMessage, StoredPayload
from pmode import Route

SUBMITTED_HEADERS = 4096  # headers as submitted kept in memory for their first attempt (the oldest go first)


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

    async def close(self) -> None:
        """Drop the spool (a large one in a worker thread: freeing a large file takes a while)."""
        if self.size > SPOOL_IN_MEMORY:
            await asyncio.to_thread(self.body.close)
        else:
            self.body.close()


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
        # instances do).
        self._submitted: dict[str, UserMessage] = {}

    def remember_header(self, header: UserMessage) -> None:
        """Keep a just-submitted message's header for its first attempt."""
        if len(self._submitted) >= SUBMITTED_HEADERS:
            del self._submitted[next(iter(self._submitted))]
        self._submitted[header.message_id] = header

    async def secure(
        self, message: StoredMessage, route: Route, soap_version: SoapVersion = SoapVersion.V12
    ) -> SpooledMessage:
        """The message compressed, signed, encrypted and packed; ValueError or EbmsError if it cannot be."""
        store = self.ctx.store
        user = self._submitted.pop(message.message_id, None) or await self._stored_header(message)
        stored = await store.payloads(message)
        large = sum(p.size for p in stored) > self.ctx.settings.offload_threshold
        job = _Job(
            addressed(user, route),  # a dynamic partner's eb:To is the access point discovery found
            _payloads(store, stored, route),
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


def _payloads(store: MessageStore, stored: Sequence[StoredPayload], route: Route) -> tuple[Payload, ...]:
    """The stored payloads as they are sent, each with the PartProperties it was submitted with (AS4_CP_TA27)."""
    return tuple(
        Payload(
            p.content_id,
            p.mime_type,
            store.payload_source(p),
            compress=route.leg.compression,
            character_set=p.properties.get(PartProperty.CHARACTER_SET.value),
            properties=tuple(Property(k, v) for k, v in p.properties.items() if k not in _OWN_PART_PROPERTIES),
        )
        for p in stored
    )
