"""GZIP per payload part as the AS4 profile prescribes (AS4 section 3.1), streaming, with a size limit."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Final

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.namespaces import GZIP

# Decompressed output beyond this is refused (a gzip bomb inflates 1000:1); P-Modes may lower or raise it.
DEFAULT_DECOMPRESSION_LIMIT: Final = 2 * 1024**3
_GZIP_WBITS: Final = 31  # zlib: gzip container
_OUT_CHUNK: Final = 256 * 1024


def check_compression_type(value: str | None) -> None:
    """Accept no compression or ``application/gzip``; anything else is EBMS:0303 (AS4: gzip only)."""
    if value is not None and value.strip().lower() != GZIP:
        raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, f"unsupported CompressionType {value[:64]!r}")


def compress_stream(chunks: Iterable[bytes], level: int = 6) -> Iterator[bytes]:
    """GZIP-compress a stream of chunks into a stream of chunks."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def decompress_stream(chunks: Iterable[bytes], *, limit: int = DEFAULT_DECOMPRESSION_LIMIT) -> Iterator[bytes]:
    """Inflate a gzip stream chunk by chunk; EBMS:0303 for corrupt data, trailing garbage or output past ``limit``."""
    decompressor = zlib.decompressobj(_GZIP_WBITS)
    produced = 0
    seen_input = False
    for chunk in chunks:
        if not chunk:
            continue
        if decompressor.eof:
            raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, "data after the end of the gzip stream")
        seen_input = True
        data = chunk
        while data:
            try:
                out = decompressor.decompress(data, _OUT_CHUNK)
            except zlib.error as exc:
                raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, f"corrupt gzip data: {exc}") from None
            produced += len(out)
            if produced > limit:
                raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, f"payload inflates past the limit of {limit} bytes")
            if out:
                yield out
            data = decompressor.unconsumed_tail
            if decompressor.eof and decompressor.unused_data:
                raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, "data after the end of the gzip stream")
    if not seen_input or not decompressor.eof:
        raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, "gzip stream is truncated")
