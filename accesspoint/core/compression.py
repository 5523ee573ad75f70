"""GZIP per payload part as the AS4 profile prescribes (AS4 section 3.1), streaming, with size and ratio limits."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.namespaces import GZIP

# Decompressed output beyond this is refused (a gzip bomb inflates 1000:1); P-Modes may lower or raise it.
DEFAULT_DECOMPRESSION_LIMIT: Final = 2 * 1024**3
# A bomb is stopped long before the size limit by its ratio: output may exceed this many times the compressed
# bytes read so far only below the floor. Real documents stay far below (XML gzips 5:1 to 20:1, a page of
# zeros in a PDF briefly more, hence the floor); deflate's maximum is about 1032:1.
DEFAULT_DECOMPRESSION_RATIO: Final = 200
DEFAULT_DECOMPRESSION_FLOOR: Final = 64 * 1024**2
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


@dataclass(frozen=True, slots=True)
class DecompressionLimits:
    """How far a payload may inflate: ``limit`` bytes at most, and past ``floor`` bytes no more than ``ratio``
    times the compressed bytes read so far (None: no ratio limit)."""

    limit: int = DEFAULT_DECOMPRESSION_LIMIT
    ratio: int | None = DEFAULT_DECOMPRESSION_RATIO
    floor: int = DEFAULT_DECOMPRESSION_FLOOR


DEFAULT_LIMITS: Final = DecompressionLimits()


def decompress_with(chunks: Iterable[bytes], limits: DecompressionLimits) -> Iterator[bytes]:
    """``decompress_stream`` under ``limits``."""
    return decompress_stream(chunks, limit=limits.limit, ratio=limits.ratio, floor=limits.floor)


def decompress_stream(
    chunks: Iterable[bytes],
    *,
    limit: int = DEFAULT_DECOMPRESSION_LIMIT,
    ratio: int | None = DEFAULT_DECOMPRESSION_RATIO,
    floor: int = DEFAULT_DECOMPRESSION_FLOOR,
) -> Iterator[bytes]:
    """Inflate a gzip stream chunk by chunk; EBMS:0303 for corrupt data, trailing garbage, output past ``limit``,
    or output past both ``floor`` and ``ratio`` times the compressed bytes read so far (a bomb stops early)."""
    decompressor = zlib.decompressobj(_GZIP_WBITS)
    produced = 0
    fed = 0
    seen_input = False
    for chunk in chunks:
        if not chunk:
            continue
        if decompressor.eof:
            raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, "data after the end of the gzip stream")
        seen_input = True
        fed += len(chunk)
        data = chunk
        while data:
            try:
                out = decompressor.decompress(data, _OUT_CHUNK)
            except zlib.error as exc:
                raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, f"corrupt gzip data: {exc}") from None
            produced += len(out)
            if produced > limit:
                raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, f"payload inflates past the limit of {limit} bytes")
            if ratio is not None and produced > floor and produced > ratio * (fed - len(decompressor.unconsumed_tail)):
                raise EbmsError(
                    ErrorCode.DECOMPRESSION_FAILURE,
                    f"payload inflates more than {ratio} times the compressed bytes (past {floor} bytes)",
                )
            if out:
                yield out
            data = decompressor.unconsumed_tail
            if decompressor.eof and decompressor.unused_data:
                raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, "data after the end of the gzip stream")
    if not seen_input or not decompressor.eof:
        raise EbmsError(ErrorCode.DECOMPRESSION_FAILURE, "gzip stream is truncated")
