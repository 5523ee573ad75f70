"""Strict on the wire, in the core: reading records each departure from the AS4 wire format, ``check_wire`` refuses
it with its ebMS code unless the caller relaxes the rule, and decompression stops a gzip bomb by its ratio.
(The running endpoint's answers are in tests/test_msh_wire_refusals.py.)"""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
import tomllib
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

from accesspoint.cli import load_message
from accesspoint.core.compression import DEFAULT_DECOMPRESSION_LIMIT, compress_stream, decompress_stream
from accesspoint.core.conformance import RELAXABLE, WireRule, check_wire, is_msg_id
from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import (
    Attachment,
    ReceivedMessage,
    pack_bare,
    pack_message,
    payload_part_info,
    read_message,
)
from accesspoint.core.model import (
    CollaborationInfo,
    MessageInfo,
    Party,
    PartyId,
    PartyInfo,
    Property,
    Service,
    UserMessage,
)
from accesspoint.core.namespaces import GZIP, NS, PartProperty, SoapVersion
from accesspoint.security.outbound import Payload, secure_message
from accesspoint.security.policy import SecurityPolicy
from accesspoint.testing.pki import issue, make_ca
from tests.conftest import REPO, interop_path

MIB = 1024 * 1024
NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
MANIFEST = tomllib.loads((REPO / "tests" / "interop_manifest.toml").read_text(encoding="utf-8"))["vector"]


def user_message(message_id: str = "abc-def@x", ref: str | None = None) -> UserMessage:
    """A user message with one compressed payload part."""
    return UserMessage(
        message_info=MessageInfo(message_id, NOW, ref_to_message_id=ref),
        party_info=PartyInfo(Party((PartyId("sender"),), "initiator"), Party((PartyId("receiver"),), "responder")),
        collaboration_info=CollaborationInfo(Service("urn:example:service"), "Deliver", "conversation-1"),
        payload_info=(payload_part_info("letter@x", "application/xml", compressed=True),),
    )


def packed(
    message: UserMessage | None = None,
    *,
    soap_version: SoapVersion = SoapVersion.V12,
    edit: Callable[[etree._Element], None] | None = None,
    encoding: str = "utf-8",
) -> tuple[str, bytes]:
    """Content-Type and body of the message in multipart/related (the envelope edited and encoded as asked)."""
    envelope = build_envelope(message or user_message(), soap_version=soap_version)
    if edit is not None:
        edit(envelope)
    data = etree.tostring(envelope, xml_declaration=True, encoding=encoding.upper())
    attachment = Attachment("letter@x", GZIP, [b"".join(compress_stream([b"<letter/>"]))])
    wire = pack_message(data, [attachment], soap_version=soap_version, boundary="b-1")
    return wire.content_type, wire.to_bytes()


def _no_must_understand(envelope: etree._Element) -> None:
    messaging = next(envelope.iter(f"{{{NS.EBMS}}}Messaging"))
    del messaging.attrib[f"{{{NS.SOAP12}}}mustUnderstand"]


def _must_understand(value: str) -> Callable[[etree._Element], None]:
    def edit(envelope: etree._Element) -> None:
        next(envelope.iter(f"{{{NS.EBMS}}}Messaging")).set(f"{{{NS.SOAP12}}}mustUnderstand", value)

    return edit


def in_part_headers(body: bytes, content_id: str, old: bytes, new: bytes) -> bytes:
    """``body`` with ``old`` replaced by ``new`` once, in the header block of the MIME part ``content_id``."""
    end = body.index(f"Content-ID: <{content_id}>".encode()) + len(content_id) + 18  # and the blank line
    start = body.rindex(b"\n--", 0, end)
    assert body.count(old, start, end) == 1, body[start:end]
    return body[:start] + body[start:end].replace(old, new) + body[end:]


def _in_attachment_headers(old: bytes, new: bytes) -> Callable[[tuple[str, bytes]], tuple[str, bytes]]:
    def change(message: tuple[str, bytes]) -> tuple[str, bytes]:
        content_type, body = message
        return content_type, in_part_headers(body, "letter@x", old, new)

    return change


def _root_charset(charset: str) -> Callable[[tuple[str, bytes]], tuple[str, bytes]]:
    def change(message: tuple[str, bytes]) -> tuple[str, bytes]:
        content_type, body = message
        return content_type, body.replace(
            b"application/soap+xml; charset=UTF-8", f"application/soap+xml; charset={charset}".encode(), 1
        )

    return change


def _same(message: tuple[str, bytes]) -> tuple[str, bytes]:
    return message


# name -> (the message, a change to its wire bytes, the rule it breaks, whether errors may refer to its MessageId)
DEPARTURES: dict[
    str, tuple[Callable[[], tuple[str, bytes]], Callable[[tuple[str, bytes]], tuple[str, bytes]], WireRule, bool]
] = {
    "bare_lf_inside_a_mime_header": (
        packed,
        _in_attachment_headers(b"binary\r\nContent-ID", b"binary\nContent-ID"),
        WireRule.MIME_LINE_BREAK,
        True,
    ),
    "bare_cr_inside_a_mime_header": (
        packed,
        _in_attachment_headers(b"gzip\r\nContent-Transfer", b"gzip\rX-Smuggled: yes\r\nContent-Transfer"),
        WireRule.MIME_LINE_BREAK,
        True,
    ),
    "bare_lf_ending_a_mime_header_block": (
        packed,
        _in_attachment_headers(b"\r\n\r\n", b"\r\n\n"),
        WireRule.MIME_LINE_BREAK,
        True,
    ),
    "bare_lf_ending_a_delimiter_line": (
        packed,
        _in_attachment_headers(b"b-1\r\nContent-Type", b"b-1\nContent-Type"),
        WireRule.MIME_LINE_BREAK,
        True,
    ),
    "utf_32_root_part_under_utf_8": (lambda: packed(encoding="utf-32"), _same, WireRule.CHARSET, True),
    "utf_16_root_part_under_utf_8": (lambda: packed(encoding="utf-16"), _same, WireRule.CHARSET, True),
    "latin_1_root_part": (lambda: packed(encoding="iso-8859-1"), _root_charset("ISO-8859-1"), WireRule.CHARSET, True),
    "soap_1_1": (lambda: packed(soap_version=SoapVersion.V11), _same, WireRule.SOAP11, True),
    "no_must_understand": (lambda: packed(edit=_no_must_understand), _same, WireRule.MUST_UNDERSTAND, True),
    "must_understand_false": (lambda: packed(edit=_must_understand("false")), _same, WireRule.MUST_UNDERSTAND, True),
    "must_understand_0": (lambda: packed(edit=_must_understand("0")), _same, WireRule.MUST_UNDERSTAND, True),
    "message_id_without_at": (lambda: packed(user_message("abc-def")), _same, WireRule.MESSAGE_ID, False),
    "message_id_in_angle_brackets": (lambda: packed(user_message("<abc@x>")), _same, WireRule.MESSAGE_ID, False),
    "ref_to_message_id_no_msg_id": (lambda: packed(user_message(ref="12 34")), _same, WireRule.MESSAGE_ID, False),
}


@pytest.mark.parametrize("case", sorted(DEPARTURES))
def test_check_wire_refuses_each_departure_unless_its_rule_is_relaxed(case: str) -> None:
    """The message is read; its one deviation names the rule; check_wire raises that rule's code (referring to
    the MessageId unless the MessageId itself is the fault), and lets it pass only when relaxed and relaxable."""
    make, change, rule, refers = DEPARTURES[case]
    content_type, body = change(make())
    received = read_message(content_type, body)
    assert [d.rule for d in received.deviations] == [rule]
    with pytest.raises(EbmsError) as caught:
        check_wire(received.deviations)
    assert caught.value.error_code is rule.error_code
    assert caught.value.ref_to_message_id == (received.parsed.header.message_id if refers else None)
    if rule in RELAXABLE:
        check_wire(received.deviations, lenient=frozenset({rule}))
    else:
        with pytest.raises(EbmsError):
            check_wire(received.deviations, lenient=RELAXABLE)


@pytest.mark.parametrize("line_break", [b"\r\n", b"\n"])
def test_line_breaks_are_judged_alike_however_the_body_is_cut(line_break: bytes) -> None:
    """Fed in two pieces cut anywhere near a line break, a CRLF message reads without deviations and an LF-only one
    with one."""
    content_type, body = packed()
    body = body.replace(b"\r\n", line_break)
    expected = [] if line_break == b"\r\n" else [WireRule.MIME_LINE_BREAK]
    breaks = [i for i, byte in enumerate(body) if byte == ord("\n")]
    for cut in sorted({min(max(i + d, 0), len(body)) for i in breaks for d in range(-14, 4)}):
        received = read_message(content_type, [body[:cut], body[cut:]])
        assert [d.rule for d in received.deviations] == expected, cut


def test_the_codes_of_the_rules_are_those_of_the_error_table() -> None:
    """MIME: EBMS:0007; charset, mustUnderstand and MessageId: EBMS:0009; SOAP 1.1 on an AS4 P-Mode: EBMS:0010."""
    assert {rule: rule.error_code.code for rule in WireRule} == {
        WireRule.MIME_LINE_BREAK: "EBMS:0007",
        WireRule.CHARSET: "EBMS:0009",
        WireRule.SOAP11: "EBMS:0010",
        WireRule.MUST_UNDERSTAND: "EBMS:0009",
        WireRule.MESSAGE_ID: "EBMS:0009",
    }


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_a_conformant_message_has_no_deviations(encoding: str) -> None:
    """Our own message (CRLF, SOAP 1.2, mustUnderstand, msg-id), root part in UTF-8 or UTF-16 as declared."""
    content_type, body = packed(encoding=encoding)
    if encoding == "utf-16":
        content_type, body = _root_charset("UTF-16")((content_type, body))
    assert read_message(content_type, body).deviations == ()
    bare = pack_bare(serialize(build_envelope(dataclasses.replace(user_message(), payload_info=()))))
    assert read_message(bare.content_type, bare.to_bytes()).deviations == ()


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("abc-def@x", True),
        ("4f1c3a9e-2b7d-4c1e-9a3f-0d6e8b2c5a71@domibus.eu", True),
        ('"quoted left"@example.org', False),  # a space is no qtext in a no-fold-quote
        ('"quoted\\ left"@[192.0.2.1]', True),
        ("a.b.c@d.e", True),
        ("abc", False),
        ("<abc@x>", False),
        ("a..b@x", False),
        ("a@b@c", False),
        ("abc@", False),
        ("@x", False),
        ("abç@x", False),
    ],
)
def test_msg_id_grammar_is_rfc_2822_without_obsolete_forms(value: str, valid: bool) -> None:
    """id-left "@" id-right: dot-atom-text or a quoted string on the left, dot-atom-text or a literal on the right."""
    assert is_msg_id(value) is valid


# Interop vectors that break a relaxable rule, and why a P-Mode for that peer needs the leniency the README names.
NEEDS_LENIENCY = {
    "phase4/receipts/TestReceipt11.xml": {WireRule.SOAP11},  # ph-as4, phase4's predecessor, signed SOAP 1.1
    "phase4/messages/UserMessageWithoutWSSE.xml": {WireRule.SOAP11},  # phase4's own template
    "phase4/negative/ErrorMessage.xml": {WireRule.MUST_UNDERSTAND},  # phase4's incoming error signals
    "phase4/negative/ErrorMessageNoRefToMessageID.xml": {WireRule.MUST_UNDERSTAND},
    "phase4/negative/ErrorMessageWithFault.xml": {WireRule.MESSAGE_ID},  # a bare UUID as MessageId
    "phase4/spec-examples/soap11/ErrorMessage.xml": {WireRule.SOAP11},  # the ebMS 3 specification's examples
    "phase4/spec-examples/soap11/PullRequest.xml": {WireRule.SOAP11},
    "phase4/spec-examples/soap11/ReceiptMessage.xml": {WireRule.SOAP11, WireRule.MUST_UNDERSTAND},
    "domibus/harmony/messages/validAS4Response.xml": {WireRule.MESSAGE_ID},  # a template: MESSAGE_ID placeholder
}


@pytest.mark.parametrize("vector", [v for v in MANIFEST if v["outcome"] == "parses"], ids=lambda v: v["path"])
def test_real_peers_break_only_relaxable_rules_and_only_where_documented(vector: dict[str, Any]) -> None:
    """Every interop message that parses follows the wire rules, except those listed above (the README's
    leniency options exist for them); none breaks a rule that cannot be relaxed."""
    content_type, body = load_message(str(interop_path(vector["path"])), None)
    if vector.get("preprocess"):
        body = body[body.index(b"<?xml") :]
    rules = {d.rule for d in read_message(content_type, body).deviations}
    assert rules == NEEDS_LENIENCY.get(vector["path"], set())
    assert rules <= RELAXABLE


# ------------------------------------------------------------------------------------------------ gzip bombs


@cache
def _zeros_crc(megabytes: int) -> int:
    crc, zeros = 0, bytes(MIB)
    for _ in range(megabytes):
        crc = zlib.crc32(zeros, crc)
    return crc


def gzip_bomb(megabytes: int, pulled: list[int] | None = None) -> Iterator[bytes]:
    """A valid gzip stream of ``megabytes`` MiB of zeros, made block by block: about 1 KiB per MiB, and neither the
    zeros nor the whole stream is ever held. ``pulled`` counts the compressed bytes a consumer took."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    # One MiB of zeros as raw deflate blocks that refer to nothing before them, ending byte-aligned: repeatable.
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    chunks: Iterator[bytes] = iter(
        [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"]  # gzip header: deflate, no name, no time, OS unknown
    )
    yield from _counted(chunks, pulled)
    yield from _counted((block for _ in range(megabytes)), pulled)
    # A final empty fixed-Huffman block, then CRC-32 and size, computed only if a consumer gets that far.
    yield from _counted(iter([b"\x03\x00", struct.pack("<II", _zeros_crc(megabytes), megabytes * MIB % 2**32)]), pulled)


def _counted(chunks: Iterator[bytes], pulled: list[int] | None) -> Iterator[bytes]:
    for chunk in chunks:
        if pulled is not None:
            pulled.append(len(chunk))
        yield chunk


def test_the_bomb_is_a_valid_gzip_stream() -> None:
    """A small bomb inflates to exactly its zeros (so a big one is refused for its ratio, not as corrupt)."""
    assert b"".join(decompress_stream(gzip_bomb(3), ratio=None)) == bytes(3 * MIB)


def test_refuses_a_gzip_bomb_early_by_its_ratio() -> None:
    """A 2 GiB bomb, exactly at the size limit, is EBMS:0303 once it passes 200 times its input past the 64 MiB
    floor: at most the floor plus one output chunk is produced, from well under a MiB of compressed input."""
    pulled: list[int] = []
    produced = 0
    with pytest.raises(EbmsError) as caught:
        for out in decompress_stream(gzip_bomb(2048, pulled), limit=DEFAULT_DECOMPRESSION_LIMIT):
            produced += len(out)
    assert caught.value.error_code is ErrorCode.DECOMPRESSION_FAILURE
    assert "200 times" in caught.value.detail
    assert 64 * MIB - 256 * 1024 < produced <= 64 * MIB
    assert sum(pulled) < MIB // 8


def test_ordinary_compressed_documents_pass_the_ratio_limit() -> None:
    """Repetitive XML (far under 200:1) inflates past a 1 MiB floor; a bomb under the 64 MiB floor inflates too."""
    template = b"<row id='%d'><name>customer %d</name><amount>%d.00</amount></row>\n"
    rows = b"".join(template % (i, i % 977, i % 5003) for i in range(120_000))
    compressed = list(compress_stream([rows]))
    assert len(rows) > 8 * MIB and sum(map(len, compressed)) * 200 > len(rows)
    assert b"".join(decompress_stream(compressed, floor=MIB)) == rows
    assert sum(map(len, decompress_stream(gzip_bomb(32)))) == 32 * MIB  # about 1000:1, but under the floor


def _verify(*args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "accesspoint", "verify", *args],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout)


def test_verify_refuses_a_gzip_bomb_at_the_size_limit_by_its_ratio(tmp_path: Path) -> None:
    """accesspoint verify: a signed message whose part inflates to exactly 2 GiB (the size limit) is refused with
    EBMS:0303 for its ratio (exit 1); with the ratio limit off (--decompression-ratio 0) its size is what counts."""
    ca = make_ca()
    signer = issue(ca, "PTE000001")
    policy = SecurityPolicy.edelivery_1_15(encrypt=False)
    compression = (Property(PartProperty.COMPRESSION_TYPE.value, GZIP),)
    message = dataclasses.replace(user_message(), payload_info=())
    secured = secure_message(
        message,
        [Payload("bomb@x", GZIP, lambda: gzip_bomb(2048), compress=False, properties=compression)],
        policy,
        signing_key=signer,
        recipient_certificate=None,
    )
    (tmp_path / "bomb.mime").write_bytes(secured.packed.to_bytes())
    (tmp_path / "ca.pem").write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    common = [str(tmp_path / "bomb.mime"), "--content-type", secured.packed.content_type]
    common += ["--trust", str(tmp_path / "ca.pem"), "--no-revocation"]
    code, report = _verify(*common)
    assert code == 1 and report["error"]["code"] == "EBMS:0303", report
    assert "200 times" in report["error"]["reason"]
    code, report = _verify(*common, "--decompression-limit", "16MiB", "--decompression-ratio", "0")
    assert code == 1 and "past the limit" in report["error"]["reason"], report


def test_a_received_message_keeps_its_deviations_apart_from_its_packaging() -> None:
    """The envelope's deviations live on the parsed envelope, the packaging's on the message, both in order; an
    error refers to a MessageId that is no msg-id only where such MessageIds are let pass."""
    content_type, body = _in_attachment_headers(b"binary\r\nContent-ID", b"binary\nContent-ID")(
        packed(user_message("abc"), soap_version=SoapVersion.V11)
    )
    received: ReceivedMessage = read_message(content_type, body)
    assert [d.rule for d in received.deviations] == [WireRule.MIME_LINE_BREAK, WireRule.SOAP11, WireRule.MESSAGE_ID]
    assert [d.rule for d in received.parsed.deviations] == [WireRule.SOAP11, WireRule.MESSAGE_ID]
    assert all(d.message_id == "abc" for d in received.deviations)
    with pytest.raises(EbmsError) as caught:  # the MessageId is no msg-id: the error refers to no message
        check_wire(received.deviations, lenient=frozenset({WireRule.SOAP11}))
    assert caught.value.error_code is ErrorCode.MIME_INCONSISTENCY and caught.value.ref_to_message_id is None
    with pytest.raises(EbmsError) as caught:  # unless the caller accepts such MessageIds
        check_wire(received.deviations, lenient=frozenset({WireRule.MESSAGE_ID}))
    assert caught.value.ref_to_message_id == "abc"
