"""A large payload streamed through ``pack_message`` and ``MessageReader.feed``: MB/s and peak RSS.

Run one measurement per process (``python -m bench.stream --size N [--gzip] [--baseline]``, one JSON line
on stdout) so that the peak RSS it reports is its own. The payload is generated chunk by chunk from a
repeating 1 MiB pseudo-random block and never held whole; the receiving sink hashes and counts (no disk).

- pipeline: chunks -> [compress_stream] -> pack_message -> MessageReader.feed -> sink -> [decompress_stream]
  -> sha256, then ``finish`` (envelope parsed, schema-validated, PartInfo reconciled).
- baseline: chunks -> [compress_stream -> decompress_stream] -> sha256, with no MIME or envelope at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from accesspoint.core.compression import compress_stream, decompress_stream
from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.message import Attachment, MessageReader, pack_message
from bench.fixtures import KIB, PAYLOAD_CID, payload_chunks, random_block, user_message


def _status_kib(field: str) -> int:
    """A VmRSS/VmHWM-style field of /proc/self/status, in KiB (0 where /proc is missing)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class _HashSink:
    """Counts and hashes what it is given (a stand-in for the file the server would write)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> None:
        self.hash.update(data)
        self.size += len(data)


class _QueueSink:
    """Keeps the chunks handed to it until the consumer pulls them (push -> pull for decompress_stream)."""

    def __init__(self) -> None:
        self.queue: deque[bytes] = deque()
        self.size = 0

    def write(self, data: bytes, /) -> None:
        self.queue.append(data)
        self.size += len(data)


def _pipeline(size: int, gzip: bool, chunk_size: int, block: bytes) -> tuple[str, int, int]:
    """Send and receive one message; returns (sha256 of the payload received, payload size, wire size)."""
    message = user_message(mime_type="application/octet-stream", compressed=gzip)
    envelope = serialize(build_envelope(message))
    chunks: Iterator[bytes] = payload_chunks(size, chunk_size, block)
    if gzip:
        chunks = compress_stream(chunks)
    part_type = "application/gzip" if gzip else "application/octet-stream"
    packed = pack_message(envelope, [Attachment(PAYLOAD_CID, part_type, chunks)])
    wire = 0
    if not gzip:
        sink = _HashSink()
        reader = MessageReader(packed.content_type, sink_factory=lambda _start: sink)
        for body_chunk in packed.body:
            wire += len(body_chunk)
            reader.feed(body_chunk)
        received = reader.finish()
        digest, payload_size = sink.hash.hexdigest(), sink.size
    else:
        queue = _QueueSink()
        reader = MessageReader(packed.content_type, sink_factory=lambda _start: queue)

        def compressed_part() -> Iterator[bytes]:
            nonlocal wire
            for body_chunk in packed.body:
                wire += len(body_chunk)
                reader.feed(body_chunk)
                while queue.queue:
                    yield queue.queue.popleft()

        digest_hash = hashlib.sha256()
        payload_size = 0
        for plain in decompress_stream(compressed_part()):
            digest_hash.update(plain)
            payload_size += len(plain)
        received = reader.finish()
        digest = digest_hash.hexdigest()
    if received.parsed.header != message or received.attachment(PAYLOAD_CID) is None:
        raise AssertionError("the message did not come back as sent")
    return digest, payload_size, wire


def _baseline(size: int, gzip: bool, chunk_size: int, block: bytes) -> tuple[str, int, int]:
    """The same chunks hashed directly (through a gzip round trip when ``gzip``), no message around them."""
    digest_hash = hashlib.sha256()
    payload_size = 0
    chunks: Iterator[bytes] = payload_chunks(size, chunk_size, block)
    if gzip:
        chunks = decompress_stream(compress_stream(chunks))
    for chunk in chunks:
        digest_hash.update(chunk)
        payload_size += len(chunk)
    return digest_hash.hexdigest(), payload_size, payload_size


def measure(size: int, *, gzip: bool, baseline: bool, chunk_size: int = 64 * KIB) -> dict[str, Any]:
    """One measurement in this process: throughput, digest and memory (current, peak)."""
    block = random_block()
    rss_start = _status_kib("VmRSS")
    run = _baseline if baseline else _pipeline
    start = time.perf_counter()
    digest, payload_size, wire = run(size, gzip, chunk_size, block)
    elapsed = time.perf_counter() - start
    if payload_size != size:
        raise AssertionError(f"{payload_size} bytes came through, {size} were sent")
    return {
        "size": size,
        "gzip": gzip,
        "baseline": baseline,
        "chunk_size": chunk_size,
        "seconds": elapsed,
        "mb_per_s": size / elapsed / 1e6,
        "sha256": digest,
        "wire_bytes": wire,
        "rss_start_kib": rss_start,
        "peak_rss_kib": _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.stream --size N [--gzip] [--baseline] [--chunk N]``: one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__)
    parser.add_argument("--size", type=int, required=True, help="payload bytes")
    parser.add_argument("--gzip", action="store_true", help="compress the part (AS4 CompressionType gzip)")
    parser.add_argument("--baseline", action="store_true", help="hash the chunks only, no message around them")
    parser.add_argument("--chunk", type=int, default=64 * KIB, help="chunk size (default 64 KiB)")
    args = parser.parse_args(argv)
    result = measure(args.size, gzip=args.gzip, baseline=args.baseline, chunk_size=args.chunk)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
