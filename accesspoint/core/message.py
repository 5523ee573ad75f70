"""Whole AS4 messages on the wire: a SOAP envelope alone, or inside multipart/related with its payload parts.

``pack_message`` turns an envelope and attachments into a Content-Type and a stream of body chunks;
``MessageReader`` (push) and ``read_message`` (pull) turn them back, handing every attachment's bytes to a
sink the caller provides (a file in the shell, memory in tests), so payloads never have to sit in memory.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from accesspoint.core.compression import check_compression_type
from accesspoint.core.conformance import Deviation, WireRule, charset_deviation
from accesspoint.core.envelope import ParsedEnvelope, parse_envelope
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.mime import (
    ContentType,
    MimePart,
    MultipartEnd,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    content_id_of,
    format_content_type,
    media_type_of,
    new_boundary,
    parse_content_type,
    write_multipart,
)
from accesspoint.core.model import PartInfo, Property, UserMessage
from accesspoint.core.namespaces import GZIP, PartProperty, SoapVersion
from accesspoint.core.xml import MAX_ENVELOPE_BYTES

SOAP_MEDIA_TYPES = {"application/soap+xml": SoapVersion.V12, "text/xml": SoapVersion.V11}


# ---------------------------------------------------------------------------------------------- sending


@dataclass(frozen=True, slots=True)
class Attachment:
    """A MIME part as it goes on the wire (already compressed and, later, encrypted by the caller)."""

    content_id: str
    content_type: str
    chunks: Iterable[bytes]


@dataclass(frozen=True, slots=True)
class PackedMessage:
    """An HTTP body ready to send: its Content-Type and its chunks."""

    content_type: str
    body: Iterable[bytes]

    def to_bytes(self) -> bytes:
        """The whole body (tests and small messages only)."""
        return b"".join(self.body)


_CID_URL_SAFE = "!$&'()*+,;=:@/"


def payload_part_info(
    content_id: str,
    mime_type: str,
    *,
    compressed: bool,
    character_set: str | None = None,
    extra: Sequence[Property] = (),
) -> PartInfo:
    """The PartInfo AS4 wants for a payload: href ``cid:``, MimeType, CharacterSet, CompressionType."""
    properties = [Property(PartProperty.MIME_TYPE.value, mime_type)]
    if character_set is not None:
        properties.append(Property(PartProperty.CHARACTER_SET.value, character_set))
    if compressed:
        properties.append(Property(PartProperty.COMPRESSION_TYPE.value, GZIP))
    properties.extend(extra)
    # RFC 2392: a cid: URL percent-encodes what a URL may not carry ('%' included) of the Content-ID.
    return PartInfo(href=f"cid:{quote(content_id, safe=_CID_URL_SAFE)}", properties=tuple(properties))


def pack_bare(envelope: bytes, soap_version: SoapVersion = SoapVersion.V12) -> PackedMessage:
    """A bare SOAP message (no MIME), as AS4 sends signals."""
    return PackedMessage(f"{soap_version.content_type}; charset=UTF-8", (envelope,))


def pack_message(
    envelope: bytes,
    attachments: Sequence[Attachment],
    *,
    soap_version: SoapVersion = SoapVersion.V12,
    boundary: str | None = None,
    root_content_id: str = "root.message@accesspoint",
) -> PackedMessage:
    """A multipart/related (SwA) message: the envelope as the ``start`` part, then each attachment."""
    boundary = boundary or new_boundary()
    root_type = f"{soap_version.content_type}; charset=UTF-8"
    parts = [MimePart(root_type, root_content_id, (envelope,))]
    parts.extend(MimePart(a.content_type, a.content_id, a.chunks) for a in attachments)
    content_type = format_content_type(
        "multipart/related",
        {"type": soap_version.content_type, "boundary": boundary, "start": f"<{root_content_id}>"},
    )
    return PackedMessage(content_type, write_multipart(parts, boundary))


# -------------------------------------------------------------------------------------------- receiving


class Sink(Protocol):
    """Where an attachment's bytes go: anything with ``write``."""

    def write(self, data: bytes, /) -> object:
        """Store a chunk."""


SinkFactory = Callable[[PartStart], Sink]


def memory_sink(_start: PartStart) -> io.BytesIO:
    """A sink that keeps the part in memory (tests and small messages)."""
    return io.BytesIO()


@dataclass(slots=True)
class ReceivedPart:
    """An attachment as received: headers, size after transfer decoding, and the sink holding its bytes."""

    content_id: str | None
    content_type: str
    headers: tuple[tuple[str, str], ...]
    sink: Sink
    size: int = 0


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A received message: the parsed envelope, its exact bytes (signatures need them) and the attachments."""

    parsed: ParsedEnvelope
    envelope_bytes: bytes
    attachments: tuple[ReceivedPart, ...]
    content_type: ContentType
    is_mime: bool = field(default=True)
    # Departures from the wire format in the packaging (MIME, character set); the envelope's are in ``parsed``.
    packaging_deviations: tuple[Deviation, ...] = ()

    @property
    def deviations(self) -> tuple[Deviation, ...]:
        """Every departure from the AS4 wire format the message was read despite (``conformance.check_wire``)."""
        return self.packaging_deviations + self.parsed.deviations

    def attachment(self, content_id: str) -> ReceivedPart | None:
        """The attachment with that Content-ID (as in a ``cid:`` href, percent-decoded), or None."""
        for part in self.attachments:
            if part.content_id == content_id:
                return part
        return None


class MessageReader:
    """Push reader for an HTTP body: ``feed`` chunks, then ``finish`` for the ReceivedMessage."""

    def __init__(
        self,
        content_type: str,
        *,
        sink_factory: SinkFactory = memory_sink,
        max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
        validate: bool = True,
    ) -> None:
        self._content_type = parse_content_type(content_type)
        self._sink_factory = sink_factory
        self._max_envelope = max_envelope_bytes
        self._validate = validate
        # The root part's Content-ID, as ``start`` names it (read once, not once per part).
        self._start = self._content_type.param("start")
        self._start_id = content_id_of(self._start) if self._start else None
        media = self._content_type.media_type
        self._bare: bytearray | None = None
        self._parser: MultipartParser | None = None
        if media in SOAP_MEDIA_TYPES:
            self._bare = bytearray()
        elif media == "multipart/related":
            kind = (self._content_type.param("type") or "").lower()
            if kind == "application/xop+xml":
                raise EbmsError(ErrorCode.FEATURE_NOT_SUPPORTED_UNPACKAGING, "MTOM/XOP packaging is not supported")
            if kind and kind not in SOAP_MEDIA_TYPES:
                raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"multipart/related type {kind!r} is not SOAP")
            boundary = self._content_type.param("boundary")
            if not boundary:
                raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "multipart/related without a boundary")
            self._parser = MultipartParser(boundary)
        elif media.startswith("multipart/"):
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"{media} is not multipart/related (SwA)")
        else:
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"Content-Type {media or '(none)'!r} is not SOAP or SwA")
        self._parts: list[tuple[ReceivedPart, bytearray | None]] = []
        self._current: tuple[ReceivedPart, bytearray | None] | None = None

    def feed(self, data: bytes) -> None:
        """Consume a chunk of the HTTP body."""
        if self._bare is not None:
            self._bare += data
            if len(self._bare) > self._max_envelope:
                raise EbmsError(ErrorCode.INVALID_HEADER, f"SOAP envelope is larger than {self._max_envelope} bytes")
            return
        assert self._parser is not None
        for event in self._parser.feed(data):
            self._on_event(event)

    def _on_event(self, event: PartStart | PartData | PartEnd | MultipartEnd) -> None:
        if isinstance(event, PartStart):
            content_id = event.header("content-id")
            part = ReceivedPart(
                content_id=None if content_id is None else content_id_of(content_id),
                content_type=event.header("content-type") or "text/plain",
                headers=event.headers,
                sink=_NULL_SINK,
            )
            # Until the root is known, a part that may be the root is buffered (bounded): the first part
            # when ``start`` is absent, or the part whose Content-ID is ``start``.
            maybe_root = self._start_id == part.content_id if self._start else not self._parts
            if maybe_root:
                self._current = (part, bytearray())
            else:
                part.sink = self._sink_factory(event)
                self._current = (part, None)
        elif isinstance(event, PartData):
            assert self._current is not None
            part, buffer = self._current
            part.size += len(event.data)
            if buffer is not None:
                buffer += event.data
                if len(buffer) > self._max_envelope:
                    raise EbmsError(ErrorCode.INVALID_HEADER, f"SOAP part is larger than {self._max_envelope} bytes")
            else:
                part.sink.write(event.data)
        elif isinstance(event, PartEnd):
            assert self._current is not None
            self._parts.append(self._current)
            self._current = None

    def finish(self) -> ReceivedMessage:
        """Check completeness, parse the envelope and reconcile PartInfo with the attachments."""
        if self._bare is not None:
            envelope = bytes(self._bare)
            parsed = parse_envelope(envelope, validate=self._validate)
            charset = charset_deviation(self._content_type.param("charset"), envelope, parsed.header.message_id)
            bare = ReceivedMessage(
                parsed, envelope, (), self._content_type, is_mime=False, packaging_deviations=_some(charset)
            )
            if isinstance(parsed.header, UserMessage):
                reconcile_payloads(parsed.header, bare)
            return bare
        assert self._parser is not None
        self._parser.close()
        root_index = self._root_index()
        root, root_bytes = self._parts[root_index]
        if root_bytes is None:  # pragma: no cover - the root is always buffered
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "the root part was not kept")
        root_media = media_type_of(root.content_type)
        if root_media not in SOAP_MEDIA_TYPES:
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"the root part is {root_media!r}, not a SOAP envelope")
        attachments = []
        # The root's Content-ID counts too: an attachment reusing it is a duplicate, not a payload.
        seen: set[str] = set() if root.content_id is None else {root.content_id}
        for index, (part, buffer) in enumerate(self._parts):
            if index == root_index:
                continue
            if part.content_id is None:
                raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "an attachment part has no Content-ID")
            if part.content_id in seen:
                raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"Content-ID {part.content_id!r} occurs twice")
            seen.add(part.content_id)
            if buffer is not None:  # buffered as a root candidate, then it was not the root
                part.sink = self._sink_factory(PartStart(part.headers))
                part.sink.write(bytes(buffer))
            attachments.append(part)
        envelope = bytes(root_bytes)
        parsed = parse_envelope(envelope, validate=self._validate)
        ref = parsed.header.message_id
        deviations: list[Deviation | None] = [charset_deviation(_charset(root.content_type), envelope, ref)]
        if self._parser.bare_line_break is not None:
            deviations.insert(0, Deviation(WireRule.MIME_LINE_BREAK, self._parser.bare_line_break, ref))
        received = ReceivedMessage(
            parsed, envelope, tuple(attachments), self._content_type, packaging_deviations=_some(*deviations)
        )
        if isinstance(parsed.header, UserMessage):
            reconcile_payloads(parsed.header, received)
        return received

    def _root_index(self) -> int:
        if not self._start:
            return 0
        wanted = self._start_id
        for index, (part, _) in enumerate(self._parts):
            if part.content_id == wanted:
                return index
        raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"no part has the start Content-ID {wanted!r}")


def _charset(content_type: str) -> str | None:
    """The charset parameter of a part's Content-Type (the whole Content-Type is parsed only when unusual)."""
    found = _CHARSET.search(content_type)
    if found is not None:
        return found.group(1)
    return parse_content_type(content_type).param("charset") if "charset" in content_type.lower() else None


_CHARSET = re.compile(r";\s*charset=([A-Za-z0-9._-]+)\s*(?:;|$)", re.IGNORECASE)


def _some(*deviations: Deviation | None) -> tuple[Deviation, ...]:
    return tuple(d for d in deviations if d is not None)


class _NullSink:
    def write(self, data: bytes, /) -> int:
        return len(data)


_NULL_SINK = _NullSink()


def href_content_id(part: PartInfo) -> str | None:
    """The Content-ID a ``cid:`` href names, percent-decoded (RFC 2392)."""
    return part.content_id


def reconcile_payloads(message: UserMessage, received: ReceivedMessage) -> None:
    """Every ``cid:`` PartInfo has its part and every part its PartInfo (EBMS:0011); compression is known.

    The error refers to the message (its header was read), so the sender learns which one failed (AS4_CP_TA08).
    """
    try:
        _reconcile_payloads(message, received)
    except EbmsError as error:
        error.ref_to_message_id = error.ref_to_message_id or message.message_id
        raise


def _reconcile_payloads(message: UserMessage, received: ReceivedMessage) -> None:
    referenced: set[str] = set()
    for part in message.payload_info:
        check_compression_type(part.compression_type)
        if part.href is None or part.href.startswith("#"):
            continue
        content_id = href_content_id(part)
        if content_id is None:
            raise EbmsError(ErrorCode.EXTERNAL_PAYLOAD_ERROR, f"PartInfo href {part.href!r} is not a cid: reference")
        if received.attachment(content_id) is None:
            raise EbmsError(ErrorCode.EXTERNAL_PAYLOAD_ERROR, f"no MIME part for PartInfo href {part.href!r}")
        referenced.add(content_id)
    for attachment in received.attachments:
        if attachment.content_id not in referenced:
            raise EbmsError(
                ErrorCode.EXTERNAL_PAYLOAD_ERROR, f"MIME part {attachment.content_id!r} is described by no PartInfo"
            )


def read_message(
    content_type: str,
    body: bytes | Iterable[bytes],
    *,
    sink_factory: SinkFactory = memory_sink,
    validate: bool = True,
) -> ReceivedMessage:
    """Read a whole HTTP body (bytes or chunks) into a ReceivedMessage."""
    reader = MessageReader(content_type, sink_factory=sink_factory, validate=validate)
    for chunk in (body,) if isinstance(body, bytes) else body:
        reader.feed(chunk)
    return reader.finish()
