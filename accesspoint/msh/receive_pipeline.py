"""The receive pipeline: a received user message becomes a ``VerifiedMessage`` or an EbmsError.

It matches the P-Mode leg and checks the header against it, then decrypts, verifies the signature and the
signer's trust, decompresses and hashes the payloads and builds the receipt. The rest of the shell takes only
the ``VerifiedMessage`` (route, header, signer, payloads), never a header that was not verified.

A message whose parts together pass ``offload_threshold`` is opened in a worker thread in one hop: each
encrypted part is decrypted once (its plaintext kept in a spool file the signature check fills and the
decompression reads), each payload is decompressed, hashed and written once, into a file under the store's
scratch folder that the store then renames into place. A smaller one is opened in place, unless its payloads
inflate past the threshold (a small gzip can hold a large payload): then decompression restarts in a thread.
When the signer's revocation status is not known yet, the hop returns before decompressing, the lookups run
on the loop (``msh.revocation``, bounded wait) and a second hop finishes.
"""

from __future__ import annotations

import asyncio
import functools
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TypeVar

from accesspoint.core.errors import EbmsError
from accesspoint.core.message import ReceivedMessage
from accesspoint.core.model import SignalMessage, UserMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.msh.context import Context
from accesspoint.msh.receiving import check_decrypted, check_user_message, match_user_message, receipt_for
from accesspoint.msh.revocation import KnownStatus
from accesspoint.msh.security import Verifier
from accesspoint.msh.wire import Spools, once, read_spooled
from accesspoint.security.inbound import OpenedPayload, SignedParts, open_payloads, validate_signer, verify_parts
from accesspoint.security.signing import VerifiedSignature
from accesspoint.security.trust import TrustResult
from accesspoint.servicekit.metrics import timed
from accesspoint.store import NewPayload, PreparedFile
from pmode import Route

READ = 256 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VerifiedPayload:
    """A payload after decryption and decompression: kept in memory (small) or in a prepared file (large)."""

    content_id: str
    mime_type: str
    properties: dict[str, str]
    size: int
    sha256: str
    data: bytes | None = None
    file: PreparedFile | None = None

    def new_payload(self) -> NewPayload:
        """As the store takes it (a prepared file is moved into place, not copied)."""
        chunks = self.file if self.file is not None else once(self.data or b"")
        return NewPayload(self.content_id, self.mime_type, chunks, self.properties)


@dataclass(slots=True)
class VerifiedMessage:
    """A user message that passed its leg's security: what was proven and the receipt that answers it."""

    route: Route
    user_message: UserMessage
    signature: VerifiedSignature | None  # None only on a leg whose policy does not sign
    trust: TrustResult | None
    receipt: SignalMessage  # unsigned; the inbound pipeline signs it
    envelope: bytes  # the SOAP envelope as received: the raw-message evidence
    soap_version: SoapVersion
    payloads: tuple[VerifiedPayload, ...]
    scratch: _Scratch = field(repr=False)

    def new_payloads(self) -> list[NewPayload]:
        """The payloads as the store takes them."""
        return [p.new_payload() for p in self.payloads]

    async def close(self) -> None:
        """Drop the spools and whatever prepared file the store did not take (in a worker thread when on disk)."""
        if self.scratch.spool.made or self.scratch.files:
            await asyncio.to_thread(self.scratch.close)
        else:
            self.scratch.close()


class _Overflow(Exception):
    """A payload opened in place grew past what may be decompressed on the loop."""


class _Scratch:
    """The temporary files one message's opening makes, in the store's scratch folder; closed together."""

    def __init__(self, folder: Path, in_place_limit: int | None) -> None:
        self.folder = folder
        self.in_place_limit = in_place_limit  # None: files for everything (in a thread)
        self.spool = Spools(folder)  # where a large encrypted part's plaintext is kept after its first reading
        self.files: dict[str, _PayloadFile] = {}
        self.memory: dict[str, _MemorySink] = {}

    def keep(self, content_id: str) -> _PayloadFile | _MemorySink:
        """Where a payload's plaintext goes while it is hashed."""
        if self.in_place_limit is not None:
            sink = self.memory[content_id] = _MemorySink(self.in_place_limit - sum(map(len, self.memory.values())))
            return sink
        made = self.files[content_id] = _PayloadFile(self.folder / f"{uuid.uuid4().hex}.part")
        return made

    def payload(self, opened: OpenedPayload, mime_type: str, properties: dict[str, str]) -> VerifiedPayload:
        cid = opened.content_id or ""
        if cid in self.files:
            prepared = self.files[cid].finish(opened.size, opened.sha256)
            return VerifiedPayload(cid, mime_type, properties, opened.size, opened.sha256, file=prepared)
        data = self.memory[cid].getvalue() if cid in self.memory else b""
        return VerifiedPayload(cid, mime_type, properties, opened.size, opened.sha256, data=data)

    def close(self) -> None:
        self.spool.close()
        for made in self.files.values():
            made.discard()


class _MemorySink(io.BytesIO):
    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: bytes, /) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.room:
            raise _Overflow
        return super().write(data)

    def __len__(self) -> int:
        return self.getbuffer().nbytes


class _PayloadFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[bytes] | None = path.open("wb")

    def write(self, data: bytes, /) -> int:
        assert self.handle is not None
        return self.handle.write(data)

    def finish(self, size: int, sha256: str) -> PreparedFile:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        return PreparedFile(self.path, size, sha256)

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        self.path.unlink(missing_ok=True)  # gone already when the store took it


@dataclass(frozen=True, slots=True)
class _Opening:
    """One message's opening, gathered on the loop; its steps run wherever they are called."""

    received: ReceivedMessage
    route: Route
    user: UserMessage
    verifier: Verifier
    at: datetime
    scratch: _Scratch

    def signed(self) -> SignedParts:
        """Decrypt (lazily, into spools) and verify the signature."""
        partner = [c for c in (self.route.partner_signing_certificate,) if c is not None]
        parts = verify_parts(
            self.received,
            self.route.security,
            keys=self.verifier.decryption_keys,
            partner_certificates=partner,
            read_part=read_spooled,
            tokens=self.verifier.tokens,
            spool=self.scratch.spool,
        )
        check_decrypted(self.user, parts.undecrypted)
        return parts

    def trusted(self, parts: SignedParts, known: KnownStatus | None) -> TrustResult | None:
        """Trust in the signer, revocation as far as ``known`` knows it."""
        trust = self.route.security.trust
        return validate_signer(parts, trust, at=self.at, revocation=known, cache=self.verifier.trust)

    def payloads(self, parts: SignedParts) -> tuple[VerifiedPayload, ...]:
        """Decompress, hash and keep each payload."""
        limits = self.route.leg.payload.decompression
        opened = {p.content_id: p for p in open_payloads(parts, limits=limits, keep=self.scratch.keep)}
        found = []
        for info in self.user.payload_info:
            if info.content_id is None or info.content_id not in opened:
                continue
            source = parts.sources[info.content_id]
            properties = {p.name: p.value for p in info.properties}
            mime = info.mime_type or source.content_type
            found.append(self.scratch.payload(opened[info.content_id], mime, properties))
        return tuple(found)

    def run(
        self, known: KnownStatus | None, *, with_payloads: bool
    ) -> tuple[SignedParts, TrustResult | None, tuple[VerifiedPayload, ...] | None]:
        """Signature and trust, and the payloads when asked, unless revocation lookups are needed first."""
        parts = self.signed()
        try:
            trust = self.trusted(parts, known)
        except EbmsError:
            if known is None or not known.misses:
                raise
            return parts, None, None
        if not with_payloads or (known is not None and known.misses):
            return parts, trust, None
        return parts, trust, self.payloads(parts)


class ReceivePipeline:
    """Verifies received user messages for the inbound pipeline and the puller."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def verify(self, received: ReceivedMessage, now: datetime) -> VerifiedMessage:
        """The verified message; EbmsError (with RefToMessageId) when it is refused."""
        ctx = self.ctx
        with ctx.tracer.start_as_current_span("as4.verify"), timed(ctx.metrics.security_duration, operation="verify"):
            return await self._verify(received, now)

    async def _verify(self, received: ReceivedMessage, now: datetime) -> VerifiedMessage:
        ctx = self.ctx
        route, user = match_user_message(received, ctx.agreements.current)
        check_user_message(route, user)
        threshold = ctx.settings.offload_threshold
        large = sum(part.size for part in received.attachments) > threshold
        scratch = _Scratch(ctx.store.files.scratch, None if large else threshold)
        opening = _Opening(received, route, user, ctx.verifier, now, scratch)
        revocation = ctx.verifier.revocation
        known = None if revocation is None else revocation.known()
        try:
            parts, trust, payloads = await _hop(large, functools.partial(opening.run, with_payloads=large), known)
            if known is not None and known.misses:
                assert revocation is not None
                trust = await revocation.validate(lambda k: _inline(opening.trusted, parts, k))
            if payloads is None:
                payloads = await self._payloads(opening, parts, large)
        except EbmsError as exc:
            await asyncio.to_thread(scratch.close)
            exc.ref_to_message_id = exc.ref_to_message_id or user.message_id
            raise
        except BaseException:
            await asyncio.to_thread(scratch.close)
            raise
        receipt = receipt_for(user, parts.signature, at=now)
        envelope, version = received.envelope_bytes, received.parsed.messaging.soap_version
        return VerifiedMessage(route, user, parts.signature, trust, receipt, envelope, version, payloads, scratch)

    async def _payloads(self, opening: _Opening, parts: SignedParts, large: bool) -> tuple[VerifiedPayload, ...]:
        """The payloads: in place for a small message, unless they inflate; then (and for a large one) in a thread."""
        if not large:
            try:
                return opening.payloads(parts)
            except _Overflow:
                opening.scratch.memory.clear()
                opening.scratch.in_place_limit = None
        return await asyncio.to_thread(opening.payloads, parts)


async def _hop(offload: bool, work: Callable[[KnownStatus | None], T], known: KnownStatus | None) -> T:
    if offload:
        return await asyncio.to_thread(work, known)
    return work(known)


async def _inline(
    work: Callable[[SignedParts, KnownStatus | None], TrustResult | None], parts: SignedParts, known: KnownStatus
) -> TrustResult | None:
    return work(parts, known)
