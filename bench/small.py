"""Build + parse of a ~4 KB user message, in messages/s, against raw lxml parse + serialize of its envelope.

One operation is what a sender and a receiver do for a small message, single-threaded:
model -> ``build_envelope`` -> ``serialize`` -> ``pack_message`` -> bytes, then ``read_message`` (MIME,
hardened parse, Id checks, ebMS 3 schema, model, PartInfo reconciliation). The baseline is
``etree.fromstring`` + ``etree.tostring`` of the same envelope bytes: any header parser built on lxml
does at least that, so the ratio says how close to lxml itself the core runs.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

from lxml import etree

from accesspoint.core.envelope import build_envelope, parse_envelope, read_user_message, serialize
from accesspoint.core.message import Attachment, ReceivedMessage, pack_message, read_message
from accesspoint.core.mime import MultipartParser, parse_content_type
from accesspoint.core.model import UserMessage
from accesspoint.core.xml import check_unique_ids, parse_xml, validate_messaging
from bench.fixtures import PAYLOAD_CID, invoice_attachment, user_message

# The same settings as the core's hardened parser (accesspoint.core.xml), without its checks around it.
_RAW_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, collect_ids=False
)


def build(message: UserMessage, attachment: bytes) -> tuple[str, bytes]:
    """Sender side: model -> envelope -> bytes -> multipart/related body."""
    envelope = serialize(build_envelope(message))
    packed = pack_message(envelope, [Attachment(PAYLOAD_CID, "application/gzip", (attachment,))])
    return packed.content_type, packed.to_bytes()


def parse(content_type: str, body: bytes) -> ReceivedMessage:
    """Receiver side: the whole body to a ReceivedMessage (schema validation on, as in production)."""
    return read_message(content_type, body)


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per CPU second of ``operation`` run back to back for about ``seconds`` of CPU time.

    CPU time rather than wall time: on a shared machine the time other processes take would count against
    whichever case ran then (ours or the baseline). On an idle machine the two agree (single-threaded code).
    """
    batch = 1
    done = 0
    start = time.process_time()
    now = start
    while now - start < seconds:
        for _ in range(batch):
            operation()
        done += batch
        now = time.process_time()
        batch = min(batch * 2, 256)
    return done / (now - start)


def _verify(message: UserMessage, attachment: bytes) -> tuple[str, bytes]:
    content_type, body = build(message, attachment)
    received = parse(content_type, body)
    if received.parsed.header != message:
        raise AssertionError("the parsed header differs from the one built")
    part = received.attachment(PAYLOAD_CID)
    if part is None or not isinstance(part.sink, io.BytesIO) or part.sink.getvalue() != attachment:
        raise AssertionError("the attachment did not come back intact")
    return content_type, body


def run(*, seconds: float = 2.0, repeats: int = 5, stage_seconds: float = 0.5) -> dict[str, Any]:
    """Measure build + parse and the raw lxml baseline in alternating rounds; medians of ``repeats``."""
    message = user_message()
    attachment = invoice_attachment()
    content_type, body = _verify(message, attachment)
    envelope = serialize(build_envelope(message))

    def roundtrip() -> None:
        parse(*build(message, attachment))

    def baseline() -> None:
        etree.tostring(etree.fromstring(envelope, _RAW_PARSER))

    ours: list[float] = []
    raw: list[float] = []
    rate(roundtrip, min(seconds, 0.5))  # warm-up: schema loaded, caches filled
    for _ in range(repeats):
        ours.append(rate(roundtrip, seconds))
        raw.append(rate(baseline, seconds))
    ours_median = statistics.median(ours)
    raw_median = statistics.median(raw)
    return {
        "envelope_bytes": len(envelope),
        "attachment_bytes": len(attachment),
        "wire_bytes": len(body),
        "seconds_per_round": seconds,
        "repeats": repeats,
        "messages_per_s": ours_median,
        "messages_per_s_rounds": ours,
        "us_per_message": 1e6 / ours_median,
        "baseline": "lxml fromstring + tostring of the same envelope bytes",
        "baseline_per_s": raw_median,
        "baseline_per_s_rounds": raw,
        "ratio": ours_median / raw_median,
        "stages_us": stages(message, attachment, content_type, body, seconds=stage_seconds),
    }


def stages(
    message: UserMessage, attachment: bytes, content_type: str, body: bytes, *, seconds: float
) -> dict[str, float]:
    """Microseconds per call of each step, measured alone on the same inputs (median of three)."""
    envelope_tree = build_envelope(message)
    envelope = serialize(envelope_tree)
    boundary = parse_content_type(content_type).param("boundary") or ""
    root = parse_xml(envelope)
    messaging = parse_xml(envelope)[0][0]
    user = messaging[0]
    steps: dict[str, Callable[[], object]] = {
        "build: build_envelope (model -> tree)": lambda: build_envelope(message),
        "build: serialize (tree -> bytes)": lambda: serialize(envelope_tree),
        "build: pack_message -> bytes": lambda: pack_message(
            envelope, [Attachment(PAYLOAD_CID, "application/gzip", (attachment,))]
        ).to_bytes(),
        "parse: read_message (all of parse)": lambda: read_message(content_type, body),
        "parse:   parse_content_type (HTTP header)": lambda: parse_content_type(content_type),
        "parse:   MultipartParser.feed (whole body)": lambda: MultipartParser(boundary).feed(body),
        "parse:   parse_envelope (all XML steps)": lambda: parse_envelope(envelope),
        "parse:     parse_xml (hardened lxml parse)": lambda: parse_xml(envelope),
        "parse:     check_unique_ids": lambda: check_unique_ids(root),
        "parse:     validate_messaging (ebMS 3 schema)": lambda: validate_messaging(messaging),
        "parse:     read_user_message (tree -> model)": lambda: read_user_message(user),
        "baseline: lxml fromstring": lambda: etree.fromstring(envelope, _RAW_PARSER),
        "baseline: lxml tostring": lambda: etree.tostring(envelope_tree),
    }
    return {name: 1e6 / statistics.median(rate(step, seconds) for _ in range(3)) for name, step in steps.items()}
