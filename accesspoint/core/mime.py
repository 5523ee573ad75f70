"""SOAP with Attachments: a streaming multipart/related writer and a push parser (sans-I/O, like h11).

The parser is fed bytes as they arrive and returns events; part bodies come out in chunks, so a payload
of any size passes through without being held in memory.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from accesspoint.core.errors import EbmsError, ErrorCode

CRLF: Final = b"\r\n"
MAX_PART_HEADER_BYTES: Final = 16 * 1024
MAX_PARTS: Final = 10_000

# The quoted-string alternative is written as an unrolled loop ("[^"\\]*(?:\\.[^"\\]*)*"): it matches exactly what
# "(?:[^"\\]|\\.)*" matches, about three times faster (no repeat bookkeeping per character).
_PARAM = re.compile(r';\s*([^=\s;]+)\s*=\s*("[^"\\]*(?:\\.[^"\\]*)*"|[^;]*)')
_TOKEN_SAFE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True, slots=True)
class ContentType:
    """A parsed Content-Type: lower-cased media type and parameters (names lower-cased)."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        """A parameter's value, unquoted, or None."""
        return self.params.get(name.lower())


def parse_content_type(value: str) -> ContentType:
    """Parse a Content-Type header value (RFC 2045 parameters, quoted strings allowed)."""
    media, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for name, value in _PARAM.findall(";" + rest):
        raw = value.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1]
            if "\\" in raw:
                raw = re.sub(r"\\(.)", r"\1", raw)
        params[name.lower()] = raw
    return ContentType(media.strip().lower(), params)


def media_type_of(value: str) -> str:
    """``parse_content_type(value).media_type`` without parsing the parameters."""
    return value.partition(";")[0].strip().lower()


def format_content_type(media_type: str, params: dict[str, str]) -> str:
    """Format a Content-Type, quoting parameter values that are not tokens."""
    out = [media_type]
    for name, value in params.items():
        _check_header_value(value)
        out.append(f"{name}={value}" if _TOKEN_SAFE.match(value) else f'{name}="{value}"')
    return "; ".join(out)


def _check_header_value(value: str) -> None:
    if "\r" in value or "\n" in value or '"' in value:
        raise ValueError(f"header value {value!r} may not contain CR, LF or a double quote")


def content_id_of(header_value: str) -> str:
    """The Content-ID without angle brackets."""
    value = header_value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value.strip()


# ---------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True, slots=True)
class MimePart:
    """A part to write: its headers and its body as an iterable of byte chunks."""

    content_type: str
    content_id: str | None
    chunks: Iterable[bytes]
    extra_headers: tuple[tuple[str, str], ...] = ()


def new_boundary() -> str:
    """A fresh random MIME boundary (128 bits: it cannot occur in content by chance)."""
    return f"----=_Part_{secrets.token_hex(16)}"


def write_multipart(parts: Iterable[MimePart], boundary: str) -> Iterator[bytes]:
    """Yield a multipart body: each part's headers, then its chunks as they come, then the close delimiter."""
    _check_header_value(boundary)
    delimiter = b"--" + boundary.encode("ascii")
    first = True
    for part in parts:
        head = [(b"" if first else CRLF) + delimiter]
        first = False
        headers = [("Content-Type", part.content_type), ("Content-Transfer-Encoding", "binary")]
        if part.content_id is not None:
            headers.append(("Content-ID", f"<{part.content_id}>"))
        headers.extend(part.extra_headers)
        for name, value in headers:
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} may not contain CR or LF")
            head.append(f"{name}: {value}".encode())
        yield CRLF.join(head) + CRLF + CRLF
        for chunk in part.chunks:
            if chunk:
                yield chunk
    yield CRLF + delimiter + b"--" + CRLF


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins; its headers (names lower-cased, in order)."""

    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The first header of that name, or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


@dataclass(frozen=True, slots=True)
class PartData:
    """A chunk of the current part's body, transfer-decoded."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete."""


@dataclass(frozen=True, slots=True)
class MultipartEnd:
    """The close delimiter was seen."""


MimeEvent = PartStart | PartData | PartEnd | MultipartEnd

_PREAMBLE, _HEADERS, _BODY, _AFTER_DELIMITER, _EPILOGUE = range(5)


# RFC 2045 6.8: "characters not found in Table 1 must be ignored by decoding software" ('=' is in the table).
_NOT_BASE64: Final = bytes(
    sorted(set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="))
)


class _Base64Decoder:
    """Streaming base64: decodes whole quanta, keeps the remainder for the next chunk.

    Whatever the chunking, the same bytes decode the same way: characters outside the alphabet are dropped
    before quanta are counted, and '=' is accepted only as the padding of the last quantum (more base64 after
    it, or '=' anywhere else, is EBMS:0007; binascii's lenient mode would stop or skip depending on where a
    chunk happened to end).
    """

    def __init__(self) -> None:
        self._pending = b""
        self._ended = False

    def decode(self, data: bytes) -> bytes:
        joined = self._pending + data.translate(None, _NOT_BASE64)
        if self._ended:
            if joined.strip(b"="):
                raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "base64 part body continues after its padding")
            return b""
        pad = joined.find(b"=")
        head = joined if pad < 0 else joined[:pad]
        usable = len(head) - len(head) % 4
        self._pending = joined[usable:]
        out = _a2b_base64(head[:usable])
        if pad >= 0 and len(self._pending) >= 4:
            # The padded last quantum ("xx==" or "xxx="): decoded strictly, then only more '=' may follow.
            out += _a2b_base64(self._pending[:4])
            rest, self._pending, self._ended = self._pending[4:], b"", True
            if rest.strip(b"="):
                raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "base64 part body continues after its padding")
        return out

    def finish(self) -> bytes:
        if self._pending:
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "base64 part body ends in a partial quantum")
        return b""


def _a2b_base64(quanta: bytes) -> bytes:
    try:
        return binascii.a2b_base64(quanta, strict_mode=True)
    except binascii.Error as exc:
        raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"invalid base64 part body: {exc}") from None


class _QuotedPrintableDecoder:
    """Streaming quoted-printable: decodes complete lines only (a soft break may span chunks)."""

    def __init__(self) -> None:
        self._pending = b""

    def decode(self, data: bytes) -> bytes:
        joined = self._pending + data
        cut = joined.rfind(b"\n") + 1
        self._pending = joined[cut:]
        return binascii.a2b_qp(joined[:cut])

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        return binascii.a2b_qp(rest)


class _Identity:
    def decode(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


_Decoder = _Base64Decoder | _QuotedPrintableDecoder | _Identity


def _decoder_for(encoding: str | None) -> _Decoder:
    value = (encoding or "binary").strip().lower()
    if value in ("binary", "8bit", "7bit"):
        return _Identity()
    if value == "base64":
        return _Base64Decoder()
    if value == "quoted-printable":
        return _QuotedPrintableDecoder()
    raise EbmsError(ErrorCode.FEATURE_NOT_SUPPORTED_UNPACKAGING, f"Content-Transfer-Encoding {value!r}")


_CR: Final = ord("\r")


def _headers_end(buffer: bytes, pos: int) -> tuple[int, int] | None:
    """Where the part headers from ``pos`` end and how long the blank line is; None while it has not come."""
    if buffer.startswith(b"\r\n", pos):
        return pos, 2
    if buffer.startswith(b"\n", pos):
        return pos, 1
    crlf = buffer.find(b"\r\n\r\n", pos)
    # A bare-LF blank line counts only before the first CRLF one, so it is looked for that far only: searching
    # for the two-byte needle through a whole binary part body costs more than the rest of the parse.
    lf = buffer.find(b"\n\n", pos, len(buffer) if crlf < 0 else crlf + 1)
    if lf >= 0:
        end, skip = lf, 2
    elif crlf >= 0:
        end, skip = crlf, 4
    else:
        if len(buffer) - pos > MAX_PART_HEADER_BYTES:
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "MIME part headers are too long")
        return None
    if end - pos > MAX_PART_HEADER_BYTES:
        raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "MIME part headers are too long")
    return end, skip


class MultipartParser:
    """Push parser for a multipart body: ``feed`` bytes, get events; ``close`` checks the body was complete.

    Delimiters are found on LF as well as CRLF line ends (some peers and dumps use bare LF). A bare CR or LF in a
    delimiter line or a part's header block is read, and ``bare_line_break`` says where the first one was: an
    endpoint refuses it (``conformance``), since a bare LF inside a header line is how a second header is smuggled
    past a parser that splits on CRLF only.
    """

    def __init__(self, boundary: str, *, max_parts: int = MAX_PARTS) -> None:
        if not boundary or len(boundary) > 200:
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "multipart boundary is missing or too long")
        self._delimiter = b"\n--" + boundary.encode("latin-1")
        # The first delimiter may open the body without a preceding line break.
        self._buffer = b"\n"
        self._state = _PREAMBLE
        self._decoder: _Decoder = _Identity()
        self._parts = 0
        self._max_parts = max_parts
        self.bare_line_break: str | None = None

    @property
    def complete(self) -> bool:
        """True once the close delimiter has been seen."""
        return self._state == _EPILOGUE

    def feed(self, data: bytes) -> list[MimeEvent]:
        """Consume bytes and return the events they complete."""
        if self._state == _EPILOGUE:
            return []
        # The bytes not yet consumed plus ``data``, read through an offset: each step moves ``pos`` instead of
        # copying the rest of the buffer, and what is left is kept once, when the call returns (or raises).
        buffer = self._buffer + data
        pos = 0
        delimiter = self._delimiter
        events: list[MimeEvent] = []
        try:
            while True:
                if self._state == _PREAMBLE:
                    index = buffer.find(delimiter, pos)
                    if index < 0:
                        pos = max(pos, len(buffer) - len(delimiter))
                        return events
                    pos = index + len(delimiter)
                    self._state = _AFTER_DELIMITER
                elif self._state == _AFTER_DELIMITER:
                    if len(buffer) - pos < 2:
                        return events
                    if buffer.startswith(b"--", pos):
                        if self._parts == 0:
                            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "multipart body has no parts")
                        self._state = _EPILOGUE
                        pos = len(buffer)
                        events.append(MultipartEnd())
                        return events
                    line_end = buffer.find(b"\n", pos)
                    if line_end < 0:
                        if len(buffer) - pos > 256:
                            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "garbage after a multipart delimiter")
                        return events
                    if buffer[pos:line_end].strip(b" \t\r"):
                        raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "garbage after a multipart delimiter")
                    if (line_end == pos or buffer[line_end - 1] != _CR) and self.bare_line_break is None:
                        self.bare_line_break = f"a bare LF ends delimiter line {self._parts + 1}"
                    pos = line_end + 1
                    self._state = _HEADERS
                elif self._state == _HEADERS:
                    found = _headers_end(buffer, pos)
                    if found is None:
                        return events
                    end, skip = found
                    block = buffer[pos:end]
                    if self.bare_line_break is None:
                        self._check_line_breaks(block, buffer[end : end + skip], end == pos)
                    raw = block.decode("latin-1")
                    pos = end + skip
                    events.append(self._start_part(raw))
                    self._state = _BODY
                else:  # _BODY
                    index = buffer.find(delimiter, pos)
                    if index < 0:
                        keep = len(delimiter)
                        if len(buffer) - pos > keep:
                            chunk = self._decoder.decode(buffer[pos : len(buffer) - keep])
                            pos = len(buffer) - keep
                            if chunk:
                                events.append(PartData(chunk))
                        return events
                    end = index - 1 if index > pos and buffer[index - 1] == _CR else index
                    chunk = self._decoder.decode(buffer[pos:end]) + self._decoder.finish()
                    if chunk:
                        events.append(PartData(chunk))
                    events.append(PartEnd())
                    pos = index + len(delimiter)
                    self._state = _AFTER_DELIMITER
        finally:
            self._buffer = buffer[pos:]

    def _check_line_breaks(self, block: bytes, blank_line: bytes, empty: bool) -> None:
        """Note a bare CR or LF in a header block or the blank line ending it (CRLF is the only line break)."""
        pairs = block.count(b"\r\n")
        clean_end = blank_line == (b"\r\n" if empty else b"\r\n\r\n")
        if block.count(b"\r") != pairs or block.count(b"\n") != pairs or not clean_end:
            self.bare_line_break = f"a bare CR or LF in the headers of MIME part {self._parts + 1}"

    def _start_part(self, raw: str) -> PartStart:
        """The PartStart for a part's raw header block; the decoder for its body is chosen here."""
        headers: list[tuple[str, str]] = []
        for line in raw.replace("\r\n", "\n").split("\n"):
            if not line:
                continue
            if line[0] in " \t" and headers:  # folded continuation
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip())
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"malformed MIME part header {line[:80]!r}")
            headers.append((name.strip().lower(), value.strip()))
        self._parts += 1
        if self._parts > self._max_parts:
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"more than {self._max_parts} MIME parts")
        start = PartStart(tuple(headers))
        self._decoder = _decoder_for(start.header("content-transfer-encoding"))
        return start

    def close(self) -> None:
        """Check that the body ended with the close delimiter (EBMS:0007 otherwise)."""
        if self._state != _EPILOGUE:
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "multipart body is truncated (no close delimiter)")
