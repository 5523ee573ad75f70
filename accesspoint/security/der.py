"""The little DER/BER that CMS needs: encoders for what we write, a pull reader for what we read.

Sans-I/O. The writer emits DER (definite lengths, minimal encodings). The reader accepts BER as OpenSSL's
streaming CMS writes it (indefinite lengths, constructed OCTET STRINGs) where a field may be long, and refuses
anything else with ``DerError`` naming what it expected.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
# Context-specific tags: 0x80 | n primitive, 0xA0 | n constructed.
INDEFINITE = -1


class DerError(ValueError):
    """Input that is not the ASN.1 structure expected; the message says what was expected."""


def length(size: int) -> bytes:
    """A DER length: short form below 128, else 0x80 | count followed by the big-endian count of bytes."""
    if size < 0x80:
        return bytes([size])
    body = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    """One DER element."""
    return bytes([tag]) + length(len(value)) + value


def sequence(*items: bytes) -> bytes:
    """A SEQUENCE of already-encoded elements."""
    return tlv(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """A SET OF already-encoded elements, sorted as DER requires."""
    return tlv(SET, b"".join(sorted(items)))


def integer(value: int) -> bytes:
    """An INTEGER in the minimal two's complement form."""
    size = (value.bit_length() + 8) // 8 if value >= 0 else ((-value - 1).bit_length() + 8) // 8
    return tlv(INTEGER, value.to_bytes(max(size, 1), "big", signed=True))


def octet_string(value: bytes) -> bytes:
    """An OCTET STRING."""
    return tlv(OCTET_STRING, value)


def bit_string(value: bytes) -> bytes:
    """A BIT STRING of whole bytes (no unused bits)."""
    return tlv(BIT_STRING, b"\x00" + value)


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form."""
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(OID, bytes(body))


def explicit(number: int, value: bytes) -> bytes:
    """A context-specific EXPLICIT tag around an encoded element."""
    return tlv(0xA0 | number, value)


def algorithm(dotted: str, parameters: bytes | None = None) -> bytes:
    """An AlgorithmIdentifier; parameters absent unless given (already encoded)."""
    return sequence(oid(dotted), *(() if parameters is None else (parameters,)))


@dataclass(frozen=True, slots=True)
class Element:
    """One decoded element: its tag, the encoding of the whole element and of its contents."""

    tag: int
    encoded: bytes
    content: bytes

    @property
    def constructed(self) -> bool:
        """True for a constructed encoding (SEQUENCE, SET, explicit tags)."""
        return bool(self.tag & 0x20)

    def children(self) -> list[Element]:
        """The elements inside a constructed element (definite lengths only)."""
        if not self.constructed:
            raise DerError(f"tag 0x{self.tag:02x} is not constructed")
        return list(parse_all(self.content))

    def expect(self, tag: int, what: str) -> Element:
        """This element, if it has the tag; else DerError naming ``what``."""
        if self.tag != tag:
            raise DerError(f"expected {what} (tag 0x{tag:02x}), found tag 0x{self.tag:02x}")
        return self

    def as_int(self) -> int:
        """The value of an INTEGER."""
        self.expect(INTEGER, "INTEGER")
        if not self.content:
            raise DerError("empty INTEGER")
        return int.from_bytes(self.content, "big", signed=True)

    def as_oid(self) -> str:
        """The dotted form of an OBJECT IDENTIFIER."""
        self.expect(OID, "OBJECT IDENTIFIER")
        if not self.content or self.content[-1] & 0x80:
            raise DerError("malformed OBJECT IDENTIFIER")
        arcs: list[int] = []
        value = 0
        for byte in self.content:
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                arcs.append(value)
                value = 0
        first = min(arcs[0] // 40, 2)
        return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))

    def as_bit_string(self) -> bytes:
        """The bytes of a BIT STRING with no unused bits."""
        self.expect(BIT_STRING, "BIT STRING")
        if not self.content or self.content[0] != 0:
            raise DerError("BIT STRING with unused bits")
        return self.content[1:]


def _header(data: bytes | bytearray, offset: int) -> tuple[int, int, int]:
    """(tag, length or INDEFINITE, header size) of the element at ``offset``; IndexError when incomplete."""
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not used in CMS")
    first = data[offset + 1]
    if first < 0x80:
        return tag, first, 2
    count = first & 0x7F
    if count == 0:
        if not tag & 0x20:
            raise DerError("indefinite length on a primitive element")
        return tag, INDEFINITE, 2
    if count > 8:
        raise DerError("length too long")
    if offset + 2 + count > len(data):
        raise IndexError(offset + 2 + count)
    return tag, int.from_bytes(data[offset + 2 : offset + 2 + count], "big"), 2 + count


def parse_all(data: bytes) -> Iterator[Element]:
    """The definite-length elements that make up ``data`` one after another."""
    offset = 0
    while offset < len(data):
        try:
            tag, size, head = _header(data, offset)
        except IndexError:
            raise DerError("truncated element") from None
        if size == INDEFINITE:
            raise DerError("indefinite length where DER is required")
        end = offset + head + size
        if end > len(data):
            raise DerError("truncated element")
        yield Element(tag, data[offset:end], data[offset + head : end])
        offset = end


def parse_one(data: bytes, what: str) -> Element:
    """Exactly one element; DerError naming ``what`` otherwise."""
    elements = list(parse_all(data))
    if len(elements) != 1:
        raise DerError(f"{what}: expected one element, found {len(elements)}")
    return elements[0]


class Reader:
    """Pulls BER elements from a stream of chunks: headers one at a time, small elements whole, long contents in pieces.

    ``limit`` bounds what is held at once (a whole element read by ``element``), never the stream's size.
    """

    def __init__(self, chunks: Iterable[bytes], limit: int = 1024 * 1024) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._limit = limit
        self.position = 0

    def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._buffer.extend(chunk)
        return True

    def at_end(self) -> bool:
        """True when the stream has no more bytes."""
        return not self._fill(1)

    def peek_tag(self) -> int | None:
        """The next element's tag, None at the end of the stream."""
        return self._buffer[0] if self._fill(1) else None

    def _peek_header(self, what: str) -> tuple[int, int, int]:
        """(tag, length or INDEFINITE, header size) of the next element, read but not consumed."""
        for size in range(2, 11):
            if not self._fill(size):
                raise DerError(f"truncated before {what}")
            try:
                return _header(self._buffer, 0)
            except IndexError:
                continue
        raise DerError(f"malformed header of {what}")

    def header(self, tag: int, what: str) -> int:
        """Consume the next element's header, which must have ``tag``; its length or INDEFINITE."""
        found, length_, head = self._peek_header(what)
        if found != tag:
            raise DerError(f"expected {what} (tag 0x{tag:02x}), found tag 0x{found:02x}")
        self._consume(head)
        return length_

    def element(self, what: str) -> Element:
        """The next whole (definite-length) element."""
        tag, length_, head = self._peek_header(what)
        if length_ == INDEFINITE:
            raise DerError(f"{what}: indefinite length is not accepted here")
        if head + length_ > self._limit:
            raise DerError(f"{what}: larger than {self._limit} bytes")
        if not self._fill(head + length_):
            raise DerError(f"truncated inside {what}")
        encoded = bytes(self._buffer[: head + length_])
        self._consume(head + length_)
        return Element(tag, encoded, encoded[head:])

    def end_of_contents(self, what: str) -> None:
        """Consume the 00 00 that closes an indefinite-length element."""
        if not self._fill(2) or self._buffer[:2] != b"\x00\x00":
            raise DerError(f"expected the end of {what}")
        self._consume(2)

    def pieces(self, size: int) -> Iterator[bytes]:
        """The next ``size`` bytes as they arrive (chunks are passed on, not joined), without holding them all."""
        remaining = size
        if self._buffer:
            take = min(remaining, len(self._buffer))
            data = bytes(self._buffer[:take])
            self._consume(take)
            remaining -= take
            yield data
        while remaining:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise DerError("truncated content")
            if len(chunk) > remaining:
                self._buffer.extend(memoryview(chunk)[remaining:])
                chunk = chunk[:remaining]
            self.position += len(chunk)
            remaining -= len(chunk)
            yield chunk

    def _consume(self, size: int) -> None:
        del self._buffer[:size]
        self.position += size
