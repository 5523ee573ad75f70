"""Property-based round trips of the message core: model -> envelope -> MIME -> bytes -> parse -> model."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from accesspoint.core.compression import compress_stream, decompress_stream
from accesspoint.core.envelope import build_envelope, envelope_bytes, parse_envelope, serialize
from accesspoint.core.message import Attachment, pack_bare, pack_message, payload_part_info, read_message
from accesspoint.core.mime import (
    MimeEvent,
    MimePart,
    MultipartEnd,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    write_multipart,
)
from accesspoint.core.model import (
    AgreementRef,
    CollaborationInfo,
    Description,
    ErrorInfo,
    MessageInfo,
    PartInfo,
    PartSchema,
    Party,
    PartyId,
    PartyInfo,
    Property,
    PullRequest,
    Receipt,
    ReferenceEcho,
    Service,
    SignalMessage,
    Transform,
    UserMessage,
)
from accesspoint.core.namespaces import GZIP, NS, MessageProperty, PartProperty, SoapVersion
from accesspoint.core.timestamps import format_timestamp, parse_timestamp

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# --------------------------------------------------------------------------------------------- strategies

# XML 1.0 characters without C0/C1 controls (tab, LF and CR are allowed) and without surrogates.
XML_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=("Cs", "Cc"),
    exclude_characters="\ufffe\uffff",
    include_characters="\t\n\r",
)
# The parser strips whitespace around values, so a value is generated already stripped and non-blank.
TEXT = st.text(XML_CHARS, min_size=1, max_size=30).map(str.strip).filter(bool)
OPT_TEXT = st.none() | TEXT
# RFC 5322 atext plus the dot: what a Content-ID's left-hand side may hold.
ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~."
CONTENT_ID = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(st.sampled_from(ATEXT), min_size=1, max_size=20),
    st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}", fullmatch=True),
).filter(lambda cid: cid != "root.message@accesspoint")
URI = st.builds(
    lambda scheme, path: f"{scheme}:{path}",
    st.from_regex(r"[a-z][a-z0-9+.-]{0,8}", fullmatch=True),
    st.lists(
        st.from_regex(r"[A-Za-z0-9._~!$&'()*+,;=:@-]{1,8}", fullmatch=True)
        | st.from_regex(r"%[0-9A-F]{2}", fullmatch=True)
        | st.sampled_from(["/", "//example.org/", "é", "ö"]),
        min_size=1,
        max_size=6,
    ).map("".join),
)
LANG = st.from_regex(r"[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8}){0,2}", fullmatch=True)
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
_ANY_MOMENT = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS)
MOMENT = st.one_of(
    _ANY_MOMENT,  # microseconds
    _ANY_MOMENT.map(lambda m: m.replace(microsecond=m.microsecond // 1000 * 1000)),  # milliseconds
    _ANY_MOMENT.map(lambda m: m.replace(microsecond=0)),
)
PROPERTY_NAME = (
    st.sampled_from([MessageProperty.ORIGINAL_SENDER.value, MessageProperty.FINAL_RECIPIENT.value])
    | st.just(MessageProperty.TRACKING_IDENTIFIER.value)
    | TEXT
)
PROPERTY = st.builds(Property, PROPERTY_NAME, TEXT, OPT_TEXT)
PARTY = st.builds(
    Party,
    st.lists(st.builds(PartyId, TEXT, OPT_TEXT), min_size=1, max_size=4).map(tuple),
    TEXT,
)
COLLABORATION = st.builds(
    CollaborationInfo,
    service=st.builds(Service, TEXT, OPT_TEXT),
    action=TEXT,
    conversation_id=TEXT,
    agreement_ref=st.none() | st.builds(AgreementRef, TEXT, OPT_TEXT, OPT_TEXT),
)
SCHEMA = st.none() | st.builds(PartSchema, URI, OPT_TEXT, OPT_TEXT)
DESCRIPTION = st.none() | st.builds(Description, TEXT, LANG)
MIME_TYPES = st.sampled_from(["application/xml", "application/pdf", "text/plain", "application/octet-stream"])


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given offsets (duplicates give empty chunks)."""
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


@st.composite
def chunked(draw: st.DrawFn, data: bytes, max_cuts: int = 8) -> list[bytes]:
    """``data`` in randomly sized chunks."""
    return split_at(data, draw(st.lists(st.integers(0, len(data)), max_size=max_cuts)))


@dataclasses.dataclass(frozen=True)
class Payload:
    """An attachment as the test sends it: Content-ID, PartInfo, plain bytes and the chunks of its wire bytes."""

    content_id: str
    info: PartInfo
    plain: bytes
    wire: bytes
    chunks: tuple[bytes, ...]


@st.composite
def payloads(draw: st.DrawFn, content_id: str) -> Payload:
    """One attachment with a PartInfo as AS4 wants it (MimeType, CharacterSet, CompressionType), bytes random."""
    compressed = draw(st.booleans())
    info = payload_part_info(
        content_id,
        draw(MIME_TYPES),
        compressed=compressed,
        character_set=draw(st.none() | st.sampled_from(["UTF-8", "ISO-8859-1"])),
        extra=draw(st.lists(st.builds(Property, TEXT, TEXT, OPT_TEXT), max_size=2)),
    )
    info = dataclasses.replace(info, schema=draw(SCHEMA), description=draw(DESCRIPTION))
    plain = draw(st.binary(max_size=draw(st.sampled_from([64, 600]))))
    wire = b"".join(compress_stream(draw(chunked(plain)))) if compressed else plain
    return Payload(content_id, info, plain, wire, tuple(draw(chunked(wire))))


@st.composite
def user_messages(draw: st.DrawFn, *, max_parts: int = 40) -> tuple[UserMessage, list[Payload]]:
    """A UserMessage over a wide range of headers, with 0..max_parts cid: payloads."""
    count = draw(st.integers(0, min(max_parts, 4)) | st.integers(0, max_parts))
    content_ids = draw(st.lists(CONTENT_ID, min_size=count, max_size=count, unique=True))
    parts = [draw(payloads(cid)) for cid in content_ids]
    message = UserMessage(
        message_info=MessageInfo(draw(TEXT), draw(MOMENT), draw(OPT_TEXT)),
        party_info=PartyInfo(draw(PARTY), draw(PARTY)),
        collaboration_info=draw(COLLABORATION),
        message_properties=tuple(draw(st.lists(PROPERTY, max_size=5))),
        payload_info=tuple(part.info for part in parts),
        mpc=draw(st.none() | URI),
    )
    return message, parts


DIGEST = st.binary(min_size=20, max_size=64).map(lambda b: base64.b64encode(b).decode())
PREFIX = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,8}", fullmatch=True) | st.just("#default")
TRANSFORM = st.builds(
    Transform,
    st.sampled_from(
        [
            "http://www.w3.org/2001/10/xml-exc-c14n#",
            "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Content-Signature-Transform",
            "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        ]
    ),
    st.none() | st.lists(PREFIX, max_size=4).map(tuple),
)
REFERENCE = st.builds(
    ReferenceEcho,
    st.one_of(CONTENT_ID.map(lambda c: f"cid:{c}"), st.from_regex(r"#[A-Za-z_][A-Za-z0-9_.-]{0,30}", fullmatch=True)),
    st.sampled_from(["http://www.w3.org/2001/04/xmlenc#sha256", "http://www.w3.org/2001/04/xmldsig-more#sha384"]),
    DIGEST,
    st.lists(TRANSFORM, max_size=3).map(tuple),
)
ERROR = st.builds(
    ErrorInfo,
    error_code=st.sampled_from(["EBMS:0001", "EBMS:0004", "EBMS:0303"]) | TEXT,
    severity=st.sampled_from(["failure", "warning"]) | TEXT,
    category=OPT_TEXT,
    short_description=OPT_TEXT,
    ref_to_message_in_error=OPT_TEXT,
    origin=OPT_TEXT,
    description=DESCRIPTION,
    detail=OPT_TEXT,
)


@st.composite
def signal_messages(draw: st.DrawFn) -> SignalMessage:
    """A receipt (NRI or copied UserMessage), an error signal or a pull request."""
    kind = draw(st.sampled_from(["nri", "copy", "error", "pull"]))
    ref = draw(TEXT) if kind in ("nri", "copy") else draw(OPT_TEXT)
    info = MessageInfo(draw(TEXT), draw(MOMENT), ref)
    if kind == "nri":
        return SignalMessage(info, receipt=Receipt(references=tuple(draw(st.lists(REFERENCE, min_size=1, max_size=5)))))
    if kind == "copy":
        copied, _ = draw(user_messages(max_parts=3))
        return SignalMessage(info, receipt=Receipt(user_message=copied))
    if kind == "error":
        return SignalMessage(info, errors=tuple(draw(st.lists(ERROR, min_size=1, max_size=3))))
    return SignalMessage(info, pull_request=PullRequest(draw(URI)))


# --------------------------------------------------------------------------------------------- round trips


def _feed_chunks(data: st.DataObject, wire: bytes) -> list[bytes]:
    return split_at(wire, data.draw(st.lists(st.integers(0, len(wire)), max_size=20), label="read cuts"))


@SETTINGS
@given(generated=user_messages(), soap_version=st.sampled_from(SoapVersion), data=st.data())
def test_user_message_survives_build_pack_read(
    generated: tuple[UserMessage, list[Payload]], soap_version: SoapVersion, data: st.DataObject
) -> None:
    """A UserMessage with up to 40 attachments, packed and read back in random chunks, equals the original."""
    message, parts = generated
    envelope = serialize(build_envelope(message, soap_version=soap_version))
    attachments = [Attachment(p.content_id, "application/octet-stream", p.chunks) for p in parts]
    packed = pack_message(envelope, attachments, soap_version=soap_version)
    wire = packed.to_bytes()

    received = read_message(packed.content_type, _feed_chunks(data, wire))

    assert received.parsed.header == message
    assert received.parsed.soap_version is soap_version
    assert received.envelope_bytes == envelope
    assert len(received.attachments) == len(parts)
    for part in parts:
        assert part.info.content_id == part.content_id
        got = received.attachment(part.content_id)
        assert got is not None
        assert isinstance(got.sink, io.BytesIO)
        assert got.sink.getvalue() == part.wire
        assert got.size == len(part.wire)
        if part.info.compression_type == GZIP:
            assert b"".join(decompress_stream([got.sink.getvalue()])) == part.plain


@SETTINGS
@given(
    generated=user_messages(max_parts=3),
    where=st.sampled_from(["no-href", "id-href"]),
    position=st.integers(0, 3),
    soap_version=st.sampled_from(SoapVersion),
)
def test_user_message_with_a_body_payload_survives_the_round_trip(
    generated: tuple[UserMessage, list[Payload]], where: str, position: int, soap_version: SoapVersion
) -> None:
    """A PartInfo for the SOAP Body (no href, or ``#id`` of a Body element) round-trips beside cid: parts."""
    message, parts = generated
    payload = etree.Element("{urn:example:letter}Letter", nsmap={"l": "urn:example:letter"})
    payload.text = "hej"
    href = None
    if where == "id-href":
        payload.set(f"{{{NS.WSU}}}Id", "letter-1")
        href = "#letter-1"
    body_part = PartInfo(href=href, properties=(Property(PartProperty.MIME_TYPE.value, "application/xml"),))
    infos = list(message.payload_info)
    infos.insert(min(position, len(infos)), body_part)
    message = dataclasses.replace(message, payload_info=tuple(infos))
    envelope = serialize(build_envelope(message, soap_version=soap_version, body_payload=payload))
    attachments = [Attachment(p.content_id, "application/octet-stream", p.chunks) for p in parts]
    packed = pack_message(envelope, attachments, soap_version=soap_version)

    received = read_message(packed.content_type, packed.to_bytes())

    assert received.parsed.header == message
    body_payload = received.parsed.body_payload
    assert body_payload is not None and body_payload.text == "hej"


@SETTINGS
@given(signal=signal_messages(), soap_version=st.sampled_from(SoapVersion), mime=st.booleans(), data=st.data())
def test_signal_message_survives_build_pack_read(
    signal: SignalMessage, soap_version: SoapVersion, mime: bool, data: st.DataObject
) -> None:
    """Receipts (NRI or copy), error signals and pull requests, bare or in MIME, read back equal."""
    envelope = serialize(build_envelope(signal, soap_version=soap_version))
    packed = pack_message(envelope, [], soap_version=soap_version) if mime else pack_bare(envelope, soap_version)

    received = read_message(packed.content_type, _feed_chunks(data, packed.to_bytes()))

    assert received.parsed.header == signal
    assert received.parsed.soap_version is soap_version
    assert received.is_mime is mime
    assert received.parsed.messaging.kind == signal.kind


@given(generated=user_messages(max_parts=4), soap_version=st.sampled_from(SoapVersion))
@settings(max_examples=50)
def test_envelope_bytes_are_the_serialised_built_envelope(
    generated: tuple[UserMessage, list[Payload]], soap_version: SoapVersion
) -> None:
    """A user message's header written straight from the text writer equals the built tree serialised, byte for byte."""
    header = generated[0]
    assert envelope_bytes(header, soap_version=soap_version) == serialize(
        build_envelope(header, soap_version=soap_version)
    )


def test_content_id_with_percent_and_hash_is_percent_encoded_in_the_cid_href() -> None:
    """RFC 2392: the href of Content-ID ``50%41#x@d`` is ``cid:50%2541%23x@d``, and it still finds its part."""
    info = payload_part_info("50%41#x@d", "text/plain", compressed=False)
    message = UserMessage(
        MessageInfo("m@x", datetime(2026, 1, 1, tzinfo=UTC)),
        PartyInfo(Party((PartyId("a"),), "r"), Party((PartyId("b"),), "r")),
        CollaborationInfo(Service("s"), "a", "c"),
        payload_info=(info,),
    )
    packed = pack_message(serialize(build_envelope(message)), [Attachment("50%41#x@d", "text/plain", [b"hi"])])

    received = read_message(packed.content_type, packed.to_bytes())

    assert info.href == "cid:50%2541%23x@d"
    assert info.content_id == "50%41#x@d"
    part = received.attachment("50%41#x@d")
    assert part is not None and part.size == 2


@SETTINGS
@given(moment=MOMENT)
def test_timestamps_round_trip_as_the_same_utc_instant(moment: datetime) -> None:
    """Any aware moment (any offset, micro- or milliseconds) formats to UTC with Z and parses to the same instant."""
    text = format_timestamp(moment)
    parsed = parse_timestamp(text)

    assert text.endswith("Z")
    assert parsed == moment
    assert parsed.utcoffset() == timedelta(0)
    assert len(text.split(".")[1]) in (4, 7)  # milliseconds or microseconds, then Z


@SETTINGS
@given(moment=MOMENT, digits=st.integers(0, 9))
def test_timestamps_with_offsets_and_any_fraction_parse_as_utc_instants(moment: datetime, digits: int) -> None:
    """A timestamp written with its own offset and 0..9 fraction digits parses to that instant, truncated to µs."""
    fraction = f"{moment.microsecond:06d}{'987'}"[:digits]
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    zone = f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    text = moment.replace(tzinfo=None, microsecond=0).isoformat() + (f".{fraction}" if digits else "") + zone
    expected = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")) if digits else 0)

    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.astimezone(UTC) == expected.astimezone(UTC)


def test_timestamp_without_zone_is_read_as_utc() -> None:
    """ebMS 3 section 5.2.2.1: a timestamp without a zone designator is UTC."""
    assert parse_timestamp("2026-11-29T09:00:00.123") == datetime(2026, 11, 29, 9, 0, 0, 123000, tzinfo=UTC)


def test_parser_strips_whitespace_around_values_but_the_builder_keeps_it() -> None:
    """Values padded with whitespace (as pretty-printing peers send them) are read back stripped."""
    message = UserMessage(
        message_info=MessageInfo("\n  id-1@example\n", datetime(2026, 1, 1, tzinfo=UTC)),
        party_info=PartyInfo(
            Party((PartyId("\n\t0007:2021005448 ", " urn:type "),), " sender\n"),
            Party((PartyId(" receiver "),), "\nreceiver"),
        ),
        collaboration_info=CollaborationInfo(Service(" urn:service ", " t "), " act ", " conv "),
        message_properties=(Property(" originalSender ", "  C1\n", " urn:t "),),
    )
    envelope = serialize(build_envelope(message))
    assert b"<eb:MessageId>\n  id-1@example\n</eb:MessageId>" in envelope

    parsed = parse_envelope(envelope).header

    assert isinstance(parsed, UserMessage)
    assert parsed.message_id == "id-1@example"
    assert parsed.party_info.sender == Party((PartyId("0007:2021005448", "urn:type"),), "sender")
    assert parsed.party_info.receiver == Party((PartyId("receiver"),), "receiver")
    assert parsed.collaboration_info == CollaborationInfo(Service("urn:service", "t"), "act", "conv")
    assert parsed.message_properties == (Property("originalSender", "C1", "urn:t"),)
    assert parsed.original_sender == Property("originalSender", "C1", "urn:t")


# ------------------------------------------------------------------------------------------- MIME parser


def _normalise(events: Sequence[MimeEvent]) -> list[MimeEvent]:
    """Events with adjacent PartData merged (chunking decides only how data is cut)."""
    out: list[MimeEvent] = []
    for event in events:
        if isinstance(event, PartData) and out and isinstance(out[-1], PartData):
            out[-1] = PartData(out[-1].data + event.data)
        elif not (isinstance(event, PartData) and not event.data):
            out.append(event)
    return out


def _parse(boundary: str, chunks: Sequence[bytes]) -> list[MimeEvent]:
    parser = MultipartParser(boundary)
    events: list[MimeEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    parser.close()
    return _normalise(events)


def _bodies(events: Sequence[MimeEvent]) -> list[tuple[tuple[tuple[str, str], ...], bytes]]:
    """(headers, decoded body) per part, checking the event grammar on the way."""
    parts: list[tuple[tuple[tuple[str, str], ...], bytes]] = []
    headers: tuple[tuple[str, str], ...] | None = None
    body = b""
    for event in events:
        if isinstance(event, PartStart):
            assert headers is None
            headers, body = event.headers, b""
        elif isinstance(event, PartData):
            assert headers is not None
            body += event.data
        elif isinstance(event, PartEnd):
            assert headers is not None
            parts.append((headers, body))
            headers = None
        else:
            assert isinstance(event, MultipartEnd) and headers is None
    assert isinstance(events[-1], MultipartEnd)
    return parts


BOUNDARY = st.binary(min_size=8, max_size=16).map(lambda b: "b-" + b.hex())
BODIES = st.lists(st.binary(max_size=400), min_size=1, max_size=5)


@SETTINGS
@given(boundary=BOUNDARY, bodies=BODIES, data=st.data())
def test_multipart_events_do_not_depend_on_how_the_body_is_split(
    boundary: str, bodies: list[bytes], data: st.DataObject
) -> None:
    """Fed whole or in any split, a multipart body gives the same events and each part's exact bytes."""
    parts = [
        MimePart("application/octet-stream", f"p{i}@test", data.draw(chunked(body))) for i, body in enumerate(bodies)
    ]
    wire = data.draw(st.sampled_from([b"", b"preamble text\r\n"])) + b"".join(write_multipart(parts, boundary))
    wire += data.draw(st.sampled_from([b"", b"epilogue\r\n"]))

    whole = _parse(boundary, [wire])
    split = _parse(boundary, data.draw(chunked(wire, max_cuts=30)))
    bytewise = _parse(boundary, [wire[i : i + 1] for i in range(len(wire))])

    assert split == whole == bytewise
    assert [body for _, body in _bodies(whole)] == bodies
    content_ids = [dict(headers)["content-id"] for headers, _ in _bodies(whole)]
    assert content_ids == [f"<p{i}@test>" for i in range(len(bodies))]


def _handmade_multipart(boundary: str, parts: Sequence[tuple[str, bytes]], newline: bytes) -> bytes:
    """A multipart body written by hand: (Content-Transfer-Encoding, encoded body) per part."""
    delimiter = b"--" + boundary.encode()
    out = b""
    for index, (encoding, body) in enumerate(parts):
        out += delimiter + newline
        out += b"Content-Type: application/octet-stream" + newline
        out += f"Content-ID: <p{index}@test>".encode() + newline
        out += f"Content-Transfer-Encoding: {encoding}".encode() + newline + newline
        out += body + newline
    return out + delimiter + b"--" + newline


@SETTINGS
@given(
    boundary=BOUNDARY,
    bodies=st.lists(st.binary(max_size=400).filter(lambda b: not b.endswith(b"\r")), min_size=1, max_size=4),
    newline=st.sampled_from([b"\r\n", b"\n"]),
    data=st.data(),
)
def test_multipart_with_crlf_or_bare_lf_delimiters_gives_the_parts(
    boundary: str, bodies: list[bytes], newline: bytes, data: st.DataObject
) -> None:
    """Delimiters and header lines ending in CRLF or in bare LF both give each part's exact bytes.

    (With bare LF a body ending in CR is ambiguous with a CRLF delimiter, so such bodies are left out.)
    """
    wire = _handmade_multipart(boundary, [("binary", body) for body in bodies], newline)

    events = _parse(boundary, data.draw(chunked(wire, max_cuts=30)))

    assert [body for _, body in _bodies(events)] == bodies


@SETTINGS
@given(
    boundary=BOUNDARY,
    bodies=st.lists(st.binary(max_size=600), min_size=1, max_size=4),
    newline=st.sampled_from([b"\r\n", b"\n"]),
    data=st.data(),
)
def test_base64_and_quoted_printable_parts_decode_to_their_bytes(
    boundary: str, bodies: list[bytes], newline: bytes, data: st.DataObject
) -> None:
    """base64 (any line length) and quoted-printable (soft breaks, =XX escapes) decode exactly, however split."""
    encoded: list[tuple[str, bytes]] = []
    for body in bodies:
        if data.draw(st.booleans(), label="base64?"):
            text = base64.b64encode(body)
            width = data.draw(st.sampled_from([76, 64, 4, 1000]), label="line width")
            lines = [text[i : i + width] for i in range(0, len(text), width)]
            encoded.append(("base64", newline.join(lines)))
        else:
            qp = binascii.b2a_qp(body, quotetabs=data.draw(st.booleans(), label="quotetabs"), istext=False)
            encoded.append(("quoted-printable", qp.replace(b"\n", newline)))
    wire = _handmade_multipart(boundary, encoded, newline)

    events = _parse(boundary, data.draw(chunked(wire, max_cuts=30)))

    assert [body for _, body in _bodies(events)] == bodies


# ---------------------------------------------------------------------------------------------- compression


@SETTINGS
@given(plain=st.binary(max_size=20_000) | st.just(b"A" * 300_000), level=st.integers(1, 9), data=st.data())
def test_gzip_stream_round_trips_for_any_data_and_chunking(plain: bytes, level: int, data: st.DataObject) -> None:
    """compress_stream then decompress_stream, each fed random chunks, gives the original bytes back."""
    compressed = b"".join(compress_stream(data.draw(chunked(plain)), level=level))
    out = b"".join(decompress_stream(data.draw(chunked(compressed, max_cuts=20)), limit=len(plain)))

    assert out == plain
    assert compressed[:2] == b"\x1f\x8b"
