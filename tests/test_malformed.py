"""Negative tests: every ebMS error code the message core raises, each produced from real, broken bytes."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from accesspoint.cli import load_message
from accesspoint.core.compression import compress_stream, decompress_stream
from accesspoint.core.envelope import EB, build_envelope, parse_envelope, serialize
from accesspoint.core.errors import EbmsError
from accesspoint.core.message import (
    Attachment,
    MessageReader,
    pack_bare,
    pack_message,
    payload_part_info,
    read_message,
)
from accesspoint.core.model import (
    AgreementRef,
    CollaborationInfo,
    ErrorInfo,
    MessageInfo,
    PartInfo,
    Party,
    PartyId,
    PartyInfo,
    Property,
    PullRequest,
    Receipt,
    ReferenceEcho,
    Service,
    SignalMessage,
    UserMessage,
)
from accesspoint.core.namespaces import NS, PartProperty
from accesspoint.core.signals import build_error_signal, build_receipt, check_receipt
from accesspoint.core.xml import MAX_ENVELOPE_BYTES, parse_xml, validate_messaging
from tests.cli import in_process
from tests.conftest import interop_path

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
CID = "letter@agency.example"
LETTER = b"<Letter xmlns='urn:example:digitalpost'><Subject>Parking permit</Subject></Letter>" * 50
SOAP12 = "application/soap+xml; charset=UTF-8"
MF = "http://docs.oasis-open.org/ebxml-msg/ns/v3.0/mf/2010/04/"


def user_message(
    payload_info: tuple[PartInfo, ...] | None = None, message_id: str = "msg-1@agency.example"
) -> UserMessage:
    """A Swedish digital-post user message with one compressed cid: payload unless told otherwise."""
    if payload_info is None:
        payload_info = (payload_part_info(CID, "application/xml", compressed=True, character_set="UTF-8"),)
    return UserMessage(
        message_info=MessageInfo(message_id, NOW),
        party_info=PartyInfo(
            Party((PartyId("2021005448", "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007"),), "sender"),
            Party((PartyId("5567890123", "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007"),), "operator"),
        ),
        collaboration_info=CollaborationInfo(
            Service("urn:digitalpost:delivery", "digitalpost"),
            "deliverSecure",
            "conv-1",
            AgreementRef("urn:digitalpost:agreement:2026"),
        ),
        message_properties=(Property("originalSender", "0007:2021005448"), Property("finalRecipient", "198112289874")),
        payload_info=payload_info,
    )


def letter_attachment(content_id: str = CID) -> Attachment:
    """The gzip'd letter as a MIME part."""
    return Attachment(content_id, "application/octet-stream", compress_stream([LETTER]))


def envelope(message: UserMessage | SignalMessage | None = None, **build: object) -> bytes:
    """A serialized envelope built with the core."""
    return serialize(build_envelope(message or user_message(), **build))  # type: ignore[arg-type]


def packed(
    message: UserMessage | None = None, attachments: Iterable[Attachment] | None = None, **build: object
) -> tuple[str, bytes]:
    """A real SwA message: Content-Type and body."""
    attachments = [letter_attachment()] if attachments is None else list(attachments)
    result = pack_message(envelope(message, **build), attachments, boundary="----=_Part_test_0123456789abcdef")
    return result.content_type, result.to_bytes()


def with_param(content_type: str, name: str, value: str | None) -> str:
    """``content_type`` with parameter ``name`` set to ``value`` (quoted), or removed for None."""
    pattern = rf';\s*{name}=("[^"]*"|[^;]*)'
    assert re.search(pattern, content_type), content_type
    return re.sub(pattern, "" if value is None else f'; {name}="{value}"', content_type)


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a packed message's Content-Type."""
    match = re.search(r'boundary="([^"]*)"', content_type)
    assert match is not None
    return match.group(1).encode()


def edited(edit: Callable[[etree._Element], object], message: UserMessage | SignalMessage | None = None) -> bytes:
    """A bare envelope built with the core, then edited as a tree."""
    root = build_envelope(message or user_message(payload_info=()))
    edit(root)
    return serialize(root)


def find(root: etree._Element, local: str) -> etree._Element:
    """The first eb: element of that local name."""
    element = root.find(f".//{EB}{local}")
    assert element is not None, local
    return element


def expect(code: str, content_type: str, body: bytes | list[bytes], match: str, *, validate: bool = True) -> EbmsError:
    """Reading ``body`` fails with exactly ``code`` for the reason ``match``; the error can go on the wire."""
    with pytest.raises(EbmsError) as caught:
        read_message(content_type, body, validate=validate)
    return check_error(caught.value, code, match)


def check_error(error: EbmsError, code: str, match: str) -> EbmsError:
    """``error`` has ``code``, a detail matching ``match``, and serialises into a schema-valid error signal."""
    assert error.code == code, f"{error.code} {error.detail}"
    assert re.search(match, error.detail, re.IGNORECASE), error.detail
    signal = build_error_signal([error], message_id="err-1@ap.example", now=NOW, ref_to_message_id="msg-1@x")
    parsed = parse_envelope(serialize(build_envelope(signal)))
    validate_messaging(parsed.messaging_element)
    assert isinstance(parsed.header, SignalMessage)
    assert parsed.header.errors[0].error_code == code
    return error


def test_the_unbroken_inputs_are_accepted() -> None:
    """The messages the negative tests break are valid as built: bare, SwA, edited-but-intact and signals."""
    content_type, body = packed()
    assert read_message(content_type, body).parsed.header == user_message()
    assert parse_envelope(edited(lambda root: None)).header == user_message(payload_info=())
    pull = SignalMessage(MessageInfo("pull-1@x", NOW), pull_request=PullRequest())
    assert read_message(SOAP12, envelope(pull)).parsed.header == pull


# ------------------------------------------------------------------------------------- EBMS:0002 feature


def test_message_fragment_header_block_is_feature_not_supported_0002() -> None:
    """An ebMS 3 Part 2 mf:MessageFragment SOAP header (split and join) is refused with EBMS:0002."""
    fragment = f'<mf:MessageFragment xmlns:mf="{MF}"><mf:GroupId>g-1</mf:GroupId></mf:MessageFragment>'.encode()
    body = envelope(user_message(payload_info=())).replace(b"<eb:Messaging", fragment + b"<eb:Messaging", 1)
    expect("EBMS:0002", SOAP12, body, "split and join")


def test_message_fragment_inside_messaging_is_feature_not_supported_0002() -> None:
    """An mf:MessageFragment as an extension child of eb:Messaging is refused with EBMS:0002."""
    fragment = f'<mf:MessageFragment xmlns:mf="{MF}"><mf:GroupId>g-1</mf:GroupId></mf:MessageFragment>'.encode()
    body = envelope(user_message(payload_info=())).replace(b"</eb:Messaging>", fragment + b"</eb:Messaging>", 1)
    expect("EBMS:0002", SOAP12, body, "split and join")


# ------------------------------------------------------------------------------ EBMS:0003 inconsistency


def _user_message_xml(data: bytes) -> bytes:
    match = re.search(rb"<eb:UserMessage.*</eb:UserMessage>", data, re.DOTALL)
    assert match is not None
    return match.group(0)


def test_two_user_messages_are_value_inconsistent_0003() -> None:
    """Two eb:UserMessage in one eb:Messaging (bundling) are refused with EBMS:0003."""
    data = envelope(user_message(payload_info=()))
    twice = data.replace(_user_message_xml(data), _user_message_xml(data) * 2)
    expect("EBMS:0003", SOAP12, twice, "bundling")


def test_phase4_two_user_messages_vector_is_value_inconsistent_0003() -> None:
    """phase4's negative TwoUserMessages.xml is refused with EBMS:0003."""
    data = interop_path("phase4/negative/TwoUserMessages.xml").read_bytes()
    expect("EBMS:0003", SOAP12, data, "bundling")


def test_signal_bundled_with_user_message_is_value_inconsistent_0003() -> None:
    """A SignalMessage bundled with a UserMessage in one eb:Messaging is refused with EBMS:0003."""
    pull = envelope(SignalMessage(MessageInfo("pull-1@x", NOW), pull_request=PullRequest()))
    signal = re.search(rb"<eb:SignalMessage>.*</eb:SignalMessage>", pull, re.DOTALL)
    assert signal is not None
    data = envelope(user_message(payload_info=())).replace(b"<eb:UserMessage>", signal.group(0) + b"<eb:UserMessage>")
    expect("EBMS:0003", SOAP12, data, "bundling")


def test_part_info_for_an_empty_body_is_value_inconsistent_0003() -> None:
    """A PartInfo without href (the SOAP Body) while the Body is empty is refused with EBMS:0003."""
    body_part = PartInfo(href=None, properties=(Property(PartProperty.MIME_TYPE.value, "application/xml"),))
    expect("EBMS:0003", SOAP12, envelope(user_message(payload_info=(body_part,))), "Body, which is empty")


def test_body_payload_without_part_info_is_value_inconsistent_0003() -> None:
    """A payload in the SOAP Body that no PartInfo describes is refused with EBMS:0003."""
    data = envelope(user_message(payload_info=()), body_payload=etree.fromstring(LETTER[:82]))
    expect("EBMS:0003", SOAP12, data, "no PartInfo describes")


def test_two_part_infos_for_the_body_are_value_inconsistent_0003() -> None:
    """Two PartInfo elements both referring to the SOAP Body are refused with EBMS:0003."""
    body_part = PartInfo(href=None, properties=(Property(PartProperty.MIME_TYPE.value, "application/xml"),))
    data = envelope(user_message(payload_info=(body_part, body_part)), body_payload=etree.fromstring(LETTER[:82]))
    expect("EBMS:0003", SOAP12, data, "more than one PartInfo")


def test_duplicate_part_info_href_is_value_inconsistent_0003() -> None:
    """Two PartInfo elements with the same cid: href are refused with EBMS:0003."""
    info = payload_part_info(CID, "application/xml", compressed=True)
    content_type, body = packed(user_message(payload_info=(info, info)))
    expect("EBMS:0003", content_type, body, "share an href")


def test_receipt_without_ref_to_message_id_is_value_inconsistent_0003() -> None:
    """A Receipt signal whose RefToMessageId was removed is refused with EBMS:0003."""
    receipt = build_receipt(user_message(), (), message_id="rcpt-1@operator.example", now=NOW)
    data = re.sub(rb"<eb:RefToMessageId>[^<]*</eb:RefToMessageId>", b"", envelope(receipt), count=1)
    assert b"RefToMessageId" not in data.split(b"<eb:Receipt>")[0]
    expect("EBMS:0003", SOAP12, data, "RefToMessageId")


def test_signal_mixing_receipt_and_error_is_value_inconsistent_0003() -> None:
    """A SignalMessage carrying both a Receipt and an Error is refused with EBMS:0003."""
    error = ErrorInfo("EBMS:0004", "failure")
    mixed = SignalMessage(
        MessageInfo("sig-1@x", NOW, "msg-1@agency.example"),
        receipt=Receipt(user_message=user_message()),
        errors=(error,),
    )
    expect("EBMS:0003", SOAP12, envelope(mixed), "mixes")


# ------------------------------------------------------------------------ EBMS:0001 value not recognized


def test_signal_with_no_receipt_error_or_pull_request_is_value_not_recognized_0001() -> None:
    """A SignalMessage holding only MessageInfo (its PullRequest removed) is refused with EBMS:0001."""
    data = envelope(SignalMessage(MessageInfo("pull-1@x", NOW), pull_request=PullRequest()))
    emptied = re.sub(rb"<eb:PullRequest[^>]*/>", b"", data)
    assert emptied != data
    expect("EBMS:0001", SOAP12, emptied, "no Receipt, Error or PullRequest")


# --------------------------------------------------------------------------------- EBMS:0007 MIME packaging


def test_multipart_mixed_is_mime_inconsistency_0007() -> None:
    """An SwA body sent as multipart/mixed instead of multipart/related is refused with EBMS:0007."""
    content_type, body = packed()
    mixed = content_type.replace("multipart/related", "multipart/mixed")
    assert mixed != content_type
    expect("EBMS:0007", mixed, body, "not multipart/related")


def test_non_soap_content_type_is_mime_inconsistency_0007() -> None:
    """A SOAP envelope sent as text/plain is refused with EBMS:0007."""
    expect("EBMS:0007", "text/plain", envelope(), "not SOAP or SwA")


def test_multipart_related_of_a_non_soap_type_is_mime_inconsistency_0007() -> None:
    """multipart/related whose type parameter is not a SOAP media type is refused with EBMS:0007."""
    content_type, body = packed()
    expect("EBMS:0007", with_param(content_type, "type", "text/plain"), body, "is not SOAP")


def test_multipart_without_boundary_is_mime_inconsistency_0007() -> None:
    """multipart/related without a boundary parameter is refused with EBMS:0007."""
    content_type, body = packed()
    expect("EBMS:0007", with_param(content_type, "boundary", None), body, "without a boundary")


def test_missing_start_part_is_mime_inconsistency_0007() -> None:
    """A start parameter naming a Content-ID that no part has is refused with EBMS:0007."""
    content_type, body = packed()
    expect("EBMS:0007", with_param(content_type, "start", "<gone@x>"), body, "start Content-ID")


def test_duplicate_content_id_is_mime_inconsistency_0007() -> None:
    """Two attachment parts with the same Content-ID are refused with EBMS:0007."""
    content_type, body = packed(attachments=[letter_attachment(), letter_attachment()])
    expect("EBMS:0007", content_type, body, "occurs twice")


def test_attachment_reusing_the_root_content_id_is_mime_inconsistency_0007() -> None:
    """An attachment with the root part's Content-ID (even with a PartInfo naming it) is refused with EBMS:0007."""
    info = payload_part_info("root.message@accesspoint", "application/xml", compressed=True)
    content_type, body = packed(
        user_message(payload_info=(info,)), attachments=[letter_attachment("root.message@accesspoint")]
    )
    expect("EBMS:0007", content_type, body, "occurs twice")


def test_truncated_multipart_body_is_mime_inconsistency_0007() -> None:
    """A multipart body cut before its close delimiter is refused with EBMS:0007."""
    content_type, body = packed()
    expect("EBMS:0007", content_type, body[: len(body) - 40], "truncated")


def test_attachment_without_content_id_is_mime_inconsistency_0007() -> None:
    """An attachment part whose Content-ID header was removed is refused with EBMS:0007."""
    content_type, body = packed()
    stripped = body.replace(f"Content-ID: <{CID}>\r\n".encode(), b"")
    assert stripped != body
    expect("EBMS:0007", content_type, stripped, "no Content-ID")


def test_root_part_that_is_not_soap_is_mime_inconsistency_0007() -> None:
    """A start part labelled application/octet-stream instead of a SOAP type is refused with EBMS:0007."""
    content_type, body = packed()
    relabelled = body.replace(b"Content-Type: " + SOAP12.encode(), b"Content-Type: application/octet-stream", 1)
    assert relabelled != body
    expect("EBMS:0007", content_type, relabelled, "not a SOAP envelope")


def test_multipart_with_only_the_close_delimiter_is_mime_inconsistency_0007() -> None:
    """A multipart body whose first delimiter is the close delimiter (no parts) is refused with EBMS:0007."""
    content_type, _ = packed()
    expect("EBMS:0007", content_type, b"--" + boundary_of(content_type) + b"--\r\n", "no parts")


def test_base64_part_with_invalid_or_partial_quantum_is_mime_inconsistency_0007() -> None:
    """A base64 attachment with a broken quantum, or ending in a partial one, is refused with EBMS:0007."""
    content_type, body = packed(attachments=[Attachment(CID, "application/octet-stream", [b"QUJD"])])
    base64_body = body.replace(
        b"Content-Transfer-Encoding: binary\r\nContent-ID: <" + CID.encode(),
        b"Content-Transfer-Encoding: base64\r\nContent-ID: <" + CID.encode(),
    )
    assert base64_body != body
    expect("EBMS:0007", content_type, base64_body.replace(b"QUJD", b"QQ=A"), "invalid base64")
    expect("EBMS:0007", content_type, base64_body.replace(b"QUJD", b"QUJDQQ"), "partial quantum")


def test_garbage_after_a_delimiter_is_mime_inconsistency_0007() -> None:
    """Text on the line of a part delimiter is refused with EBMS:0007."""
    content_type, body = packed()
    boundary = boundary_of(content_type)
    expect(
        "EBMS:0007",
        content_type,
        body.replace(b"--" + boundary + b"\r\n", b"--" + boundary + b" junk\r\n", 1),
        "garbage",
    )


# ---------------------------------------------------------------------- EBMS:0008 unsupported packaging


def test_mtom_xop_packaging_is_feature_not_supported_0008() -> None:
    """multipart/related of type application/xop+xml (MTOM) is refused with EBMS:0008."""
    content_type, body = packed()
    expect("EBMS:0008", with_param(content_type, "type", "application/xop+xml"), body, "MTOM")


def test_unknown_content_transfer_encoding_is_feature_not_supported_0008() -> None:
    """An attachment with Content-Transfer-Encoding x-uuencode is refused with EBMS:0008."""
    content_type, body = packed()
    head, _, tail = body.rpartition(b"Content-Transfer-Encoding: binary")
    expect("EBMS:0008", content_type, head + b"Content-Transfer-Encoding: x-uuencode" + tail, "x-uuencode")


# -------------------------------------------------------------------------------- EBMS:0009 invalid header


def test_bytes_that_are_not_xml_are_invalid_header_0009() -> None:
    """An envelope cut in the middle (not well-formed XML) is refused with EBMS:0009."""
    data = envelope()
    expect("EBMS:0009", SOAP12, data[: len(data) // 2], "not well-formed")


def test_dtd_is_refused_as_invalid_header_0009() -> None:
    """An envelope with an internal DTD subset is refused with EBMS:0009."""
    data = envelope().replace(b"?>", b"?>\n<!DOCTYPE env:Envelope [<!ELEMENT x ANY>]>", 1)
    expect("EBMS:0009", SOAP12, data, "DTD")


def test_external_entity_is_refused_without_being_read_0009(tmp_path: Path) -> None:
    """An XXE pointing at a local file is refused with EBMS:0009 and the file's content appears nowhere."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    doctype = f'<!DOCTYPE env:Envelope [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'.encode()
    data = envelope(user_message(payload_info=())).replace(b"?>", b"?>\n" + doctype, 1)
    data = data.replace(b"msg-1@agency.example", b"&xxe;")
    error = expect("EBMS:0009", SOAP12, data, "DTD")
    assert "TOP-SECRET" not in str(error) and "TOP-SECRET" not in (error.log_detail or "")


def test_billion_laughs_is_refused_without_expansion_0009() -> None:
    """A billion-laughs entity bomb is refused with EBMS:0009 quickly, without expanding the entities."""
    entities = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    doctype = f"<!DOCTYPE env:Envelope [{''.join(entities)}]>".encode()
    data = envelope(user_message(payload_info=())).replace(b"?>", b"?>\n" + doctype, 1)
    data = data.replace(b"msg-1@agency.example", b"&lol9;")
    started = time.monotonic()
    # Refused by the DTD check or, earlier, by libxml2's entity-amplification guard: either way, no expansion.
    error = expect("EBMS:0009", SOAP12, data, "DTD|entity")
    assert time.monotonic() - started < 2
    assert "lollollol" not in str(error)


def test_entity_reference_without_dtd_is_refused_0009() -> None:
    """An undeclared entity reference in the header is refused with EBMS:0009."""
    data = envelope(user_message(payload_info=())).replace(b"msg-1@agency.example", b"&undeclared;")
    expect("EBMS:0009", SOAP12, data, "entity|not well-formed")


def test_root_that_is_not_a_soap_envelope_is_invalid_header_0009() -> None:
    """eb:Messaging sent on its own, without a SOAP envelope around it, is refused with EBMS:0009."""
    messaging = find(build_envelope(user_message(payload_info=())), "Messaging")
    expect(
        "EBMS:0009", SOAP12, etree.tostring(messaging, xml_declaration=True, encoding="UTF-8"), "not a SOAP envelope"
    )


def test_envelope_without_messaging_is_invalid_header_0009() -> None:
    """A SOAP envelope whose eb:Messaging header was removed is refused with EBMS:0009."""

    def remove(root: etree._Element) -> None:
        messaging = find(root, "Messaging")
        messaging.getparent().remove(messaging)  # type: ignore[union-attr]

    expect("EBMS:0009", SOAP12, edited(remove), "no eb:Messaging")


def test_envelope_without_body_is_invalid_header_0009() -> None:
    """A SOAP envelope whose Body was removed is refused with EBMS:0009."""

    def remove(root: etree._Element) -> None:
        root.remove(root[1])

    expect("EBMS:0009", SOAP12, edited(remove), "no Body")


def test_messaging_outside_the_header_is_invalid_header_0009() -> None:
    """eb:Messaging moved from the SOAP Header into the Body is refused with EBMS:0009."""

    def move(root: etree._Element) -> None:
        root[1].append(find(root, "Messaging"))

    expect("EBMS:0009", SOAP12, edited(move), "not a child of the SOAP Header")


def test_two_messaging_headers_are_invalid_header_0009() -> None:
    """Two eb:Messaging header blocks (a signature-wrapping sign) are refused with EBMS:0009."""

    def duplicate(root: etree._Element) -> None:
        twin = copy.deepcopy(find(root, "Messaging"))
        twin.set(f"{{{NS.WSU}}}Id", "_twin")
        root[0].append(twin)

    expect("EBMS:0009", SOAP12, edited(duplicate), "more than one eb:Messaging")


def test_messaging_without_user_or_signal_message_is_invalid_header_0009() -> None:
    """An eb:Messaging emptied of its UserMessage is refused with EBMS:0009."""

    def empty(root: etree._Element) -> None:
        messaging = find(root, "Messaging")
        messaging.remove(messaging[0])

    expect("EBMS:0009", SOAP12, edited(empty), "neither a UserMessage nor a SignalMessage")


def test_missing_message_info_is_invalid_header_0009() -> None:
    """A UserMessage whose eb:MessageInfo was removed is refused with EBMS:0009, with or without the schema."""

    def remove(root: etree._Element) -> None:
        info = find(root, "MessageInfo")
        info.getparent().remove(info)  # type: ignore[union-attr]

    expect("EBMS:0009", SOAP12, edited(remove), "schema")
    expect("EBMS:0009", SOAP12, edited(remove), "no eb:MessageInfo", validate=False)


def test_missing_message_id_is_invalid_header_0009() -> None:
    """A UserMessage whose eb:MessageId was removed is refused with EBMS:0009, with or without the schema."""

    def remove(root: etree._Element) -> None:
        message_id = find(root, "MessageId")
        message_id.getparent().remove(message_id)  # type: ignore[union-attr]

    expect("EBMS:0009", SOAP12, edited(remove), "schema")
    expect("EBMS:0009", SOAP12, edited(remove), "MessageId is missing", validate=False)


@pytest.mark.parametrize("timestamp", ["yesterday", "2026-02-30T10:00:00Z", "2026-11-29T25:00:00Z", "2026-11-29"])
def test_bad_timestamp_is_invalid_header_0009(timestamp: str) -> None:
    """An eb:Timestamp that is not a valid xsd:dateTime is refused with EBMS:0009, with or without the schema."""

    def spoil(root: etree._Element) -> None:
        find(root, "Timestamp").text = timestamp

    expect("EBMS:0009", SOAP12, edited(spoil), "schema")
    expect("EBMS:0009", SOAP12, edited(spoil), "Timestamp", validate=False)


def test_empty_party_id_is_invalid_header_0009() -> None:
    """An empty eb:PartyId is refused with EBMS:0009, with or without the schema."""

    def empty(root: etree._Element) -> None:
        find(root, "PartyId").text = "  "

    expect("EBMS:0009", SOAP12, edited(empty), "PartyId is empty", validate=False)
    root = build_envelope(user_message(payload_info=()))
    find(root, "PartyId").text = ""
    expect("EBMS:0009", SOAP12, serialize(root), "schema")


def test_phase4_user_message_without_party_id_is_invalid_header_0009() -> None:
    """phase4's negative UserMessageNoPartyID.xml (an empty PartyId) is refused with EBMS:0009."""
    data = interop_path("phase4/negative/UserMessageNoPartyID.xml").read_bytes()
    expect("EBMS:0009", SOAP12, data, "PartyId")


def test_duplicate_wsu_id_is_invalid_header_0009() -> None:
    """eb:Messaging and the Body sharing one wsu:Id (a signature-wrapping sign) are refused with EBMS:0009."""
    data = envelope(user_message(payload_info=()), messaging_id="_same", body_id="_same")
    expect("EBMS:0009", SOAP12, data, "more than once")


def test_oversize_bare_envelope_is_invalid_header_0009() -> None:
    """A bare SOAP envelope padded past MAX_ENVELOPE_BYTES is refused with EBMS:0009 while it is fed."""
    padding = b"<!--" + b"x" * MAX_ENVELOPE_BYTES + b"-->"
    data = envelope(user_message(payload_info=())).replace(b"<env:Body", padding + b"<env:Body", 1)
    reader = MessageReader(SOAP12)
    with pytest.raises(EbmsError) as caught:
        for offset in range(0, len(data), 65536):
            reader.feed(data[offset : offset + 65536])
    check_error(caught.value, "EBMS:0009", "larger than")
    with pytest.raises(EbmsError) as direct:
        parse_xml(data)
    check_error(direct.value, "EBMS:0009", "larger than")


def test_oversize_soap_part_is_invalid_header_0009() -> None:
    """A SOAP root part padded past the limit inside a multipart body is refused with EBMS:0009."""
    content_type, body = packed()
    padded = body.replace(b"<env:Body", b"<!--" + b"x" * 4096 + b"--><env:Body", 1)
    reader = MessageReader(content_type, max_envelope_bytes=4096)
    with pytest.raises(EbmsError) as caught:
        reader.feed(padded)
    check_error(caught.value, "EBMS:0009", "larger than")


# ------------------------------------------------------------------------ EBMS:0011 external payload


def test_cid_part_info_without_its_part_is_external_payload_error_0011() -> None:
    """A cid: PartInfo whose MIME part was never sent is refused with EBMS:0011."""
    second = payload_part_info("second@agency.example", "application/pdf", compressed=True)
    message = user_message(payload_info=(*user_message().payload_info, second))
    content_type, body = packed(message)
    expect("EBMS:0011", content_type, body, "no MIME part")


def test_part_without_part_info_is_external_payload_error_0011() -> None:
    """A MIME part that no PartInfo describes is refused with EBMS:0011."""
    content_type, body = packed(attachments=[letter_attachment(), letter_attachment("stowaway@x")])
    expect("EBMS:0011", content_type, body, "described by no PartInfo")


def test_non_cid_href_is_external_payload_error_0011() -> None:
    """A PartInfo href to an external URL (not cid:) is refused with EBMS:0011."""
    info = PartInfo(
        href="https://example.org/letter.xml", properties=(Property(PartProperty.MIME_TYPE.value, "text/xml"),)
    )
    content_type, body = packed(user_message(payload_info=(info,)), attachments=[])
    expect("EBMS:0011", content_type, body, "not a cid: reference")


def test_fragment_href_outside_the_body_is_external_payload_error_0011() -> None:
    """A PartInfo href ``#_ebmsMessaging`` (an Id outside the Body) is refused with EBMS:0011."""
    info = PartInfo(href="#_ebmsMessaging", properties=(Property(PartProperty.MIME_TYPE.value, "text/xml"),))
    data = envelope(user_message(payload_info=(info,)), body_payload=etree.fromstring(LETTER[:82]))
    expect("EBMS:0011", SOAP12, data, "not in the SOAP Body")


# ------------------------------------------------------------------------- EBMS:0303 decompression


def test_unknown_compression_type_is_decompression_failure_0303() -> None:
    """A PartInfo with CompressionType application/x-rar is refused with EBMS:0303."""
    info = payload_part_info(CID, "application/xml", compressed=False)
    info = PartInfo(info.href, (*info.properties, Property(PartProperty.COMPRESSION_TYPE.value, "application/x-rar")))
    content_type, body = packed(user_message(payload_info=(info,)))
    expect("EBMS:0303", content_type, body, "application/x-rar")


def test_phase4_wrong_compression_vector_is_decompression_failure_0303() -> None:
    """phase4's negative WrongCompression.mime (CompressionType application/rar) is refused with EBMS:0303."""
    content_type, body = load_message(str(interop_path("phase4/negative/WrongCompression.mime")), None)
    expect("EBMS:0303", content_type, body, "application/rar")


def _gzip(data: bytes = LETTER) -> bytes:
    return b"".join(compress_stream([data]))


def _inflate(chunks: list[bytes], code: str, match: str, limit: int = 1 << 30) -> int:
    """Decompress until the expected error; return how many bytes came out before it."""
    produced = 0
    with pytest.raises(EbmsError) as caught:
        for out in decompress_stream(chunks, limit=limit):
            produced += len(out)
    check_error(caught.value, code, match)
    return produced


def test_corrupt_gzip_is_decompression_failure_0303() -> None:
    """Gzip data with a flipped byte in the deflate stream, or a wrong magic, is refused with EBMS:0303."""
    data = bytearray(_gzip())
    data[len(data) // 2] ^= 0xFF
    _inflate([bytes(data)], "EBMS:0303", "corrupt")
    _inflate([b"PK\x03\x04" + _gzip()[4:]], "EBMS:0303", "corrupt")


def test_gzip_with_wrong_crc_is_decompression_failure_0303() -> None:
    """Gzip data whose CRC-32 trailer was altered is refused with EBMS:0303."""
    data = bytearray(_gzip())
    data[-8] ^= 0x01
    _inflate([bytes(data)], "EBMS:0303", "corrupt")


def test_truncated_gzip_is_decompression_failure_0303() -> None:
    """Gzip data cut short, or no data at all, is refused with EBMS:0303."""
    data = _gzip()
    _inflate([data[:-5]], "EBMS:0303", "truncated")
    _inflate([data[: len(data) // 2]], "EBMS:0303", "truncated")
    _inflate([], "EBMS:0303", "truncated")


def test_trailing_garbage_after_gzip_is_decompression_failure_0303() -> None:
    """Bytes after the end of the gzip stream, in the same chunk or a later one, are refused with EBMS:0303."""
    data = _gzip()
    _inflate([data + b"garbage"], "EBMS:0303", "after the end")
    _inflate([data, b"garbage"], "EBMS:0303", "after the end")


def test_gzip_bomb_stops_at_the_limit_0303() -> None:
    """50 MB of zeros (about 50 KB of gzip) is refused with EBMS:0303 once the output passes a 1 MiB limit."""
    zeros = bytes(1 << 20)
    bomb = b"".join(compress_stream(zeros for _ in range(50)))
    assert len(bomb) < 100_000
    limit = 1 << 20
    produced = _inflate([bomb[i : i + 4096] for i in range(0, len(bomb), 4096)], "EBMS:0303", "limit", limit=limit)
    assert produced <= limit


# ----------------------------------------------------------------------------- EBMS:0302 invalid receipt


REFERENCES = (
    ReferenceEcho("#_ebmsMessaging", "http://www.w3.org/2001/04/xmlenc#sha256", "bWVzc2FnaW5n"),
    ReferenceEcho(f"cid:{CID}", "http://www.w3.org/2001/04/xmlenc#sha256", "YXR0YWNobWVudA=="),
)


def _received_receipt(references: tuple[ReferenceEcho, ...], about: UserMessage | None = None) -> SignalMessage:
    """A receipt built with the core, sent and read back from its bytes."""
    receipt = build_receipt(about or user_message(), references, message_id="rcpt-1@operator.example", now=NOW)
    header = read_message(*_bare(envelope(receipt))).parsed.header
    assert isinstance(header, SignalMessage)
    return header


def _bare(data: bytes) -> tuple[str, bytes]:
    packed_bare = pack_bare(data)
    return packed_bare.content_type, packed_bare.to_bytes()


def _check(signal: SignalMessage, match: str, **kwargs: object) -> None:
    with pytest.raises(EbmsError) as caught:
        check_receipt(signal, **kwargs)  # type: ignore[arg-type]
    check_error(caught.value, "EBMS:0302", match)


def test_receipt_for_another_message_is_invalid_receipt_0302() -> None:
    """A receipt whose RefToMessageId names another message is refused with EBMS:0302."""
    receipt = _received_receipt(REFERENCES)
    assert check_receipt(receipt, sent_message_id="msg-1@agency.example", sent_references=REFERENCES)
    _check(receipt, "refers to", sent_message_id="msg-2@agency.example", sent_references=REFERENCES)


def test_receipt_echoing_other_references_is_invalid_receipt_0302() -> None:
    """A receipt whose NRI digest differs from what was signed, or lacks a reference, is refused with EBMS:0302."""
    tampered = (REFERENCES[0], ReferenceEcho(f"cid:{CID}", REFERENCES[1].digest_method, "b3RoZXI="))
    _check(_received_receipt(tampered), "differs", sent_message_id="msg-1@agency.example", sent_references=REFERENCES)
    _check(
        _received_receipt(REFERENCES[:1]), "differs", sent_message_id="msg-1@agency.example", sent_references=REFERENCES
    )


def test_receipt_without_nri_for_a_signed_message_is_invalid_receipt_0302() -> None:
    """A copy-of-UserMessage receipt answering a signed message is refused with EBMS:0302."""
    _check(
        _received_receipt(()),
        "lacks NonRepudiationInformation",
        sent_message_id="msg-1@agency.example",
        sent_references=REFERENCES,
    )


def test_receipt_copying_another_user_message_is_invalid_receipt_0302() -> None:
    """A copy-of-UserMessage receipt whose copy is another message is refused with EBMS:0302."""
    receipt = _received_receipt((), about=user_message(message_id="msg-9@agency.example"))
    forged = SignalMessage(MessageInfo(receipt.message_id, NOW, "msg-1@agency.example"), receipt=receipt.receipt)
    _check(forged, "copies another UserMessage", sent_message_id="msg-1@agency.example")


def test_pull_request_in_place_of_a_receipt_is_invalid_receipt_0302() -> None:
    """A pull request signal where a receipt was expected is refused with EBMS:0302."""
    pull = read_message(
        *_bare(envelope(SignalMessage(MessageInfo("p@x", NOW, "msg-1@agency.example"), pull_request=PullRequest())))
    ).parsed.header
    assert isinstance(pull, SignalMessage)
    _check(pull, "not a receipt", sent_message_id="msg-1@agency.example")


# ---------------------------------------------------------------------------------------------------- CLI


def _inspect(path: Path, content_type: str | None) -> tuple[int, dict[str, object]]:
    # Through the CLI's main in this process: tests/test_interop_manifest.py runs inspect as a process.
    done = in_process("inspect", path, *(() if content_type is None else ("--content-type", content_type)))
    return done.code, done.document


def test_cli_inspect_prints_0009_and_exits_2_for_a_dtd(tmp_path: Path) -> None:
    """``accesspoint inspect`` on an envelope carrying a DTD prints EBMS:0009 and exits 2."""
    path = tmp_path / "dtd.xml"
    path.write_bytes(envelope().replace(b"?>", b"?>\n<!DOCTYPE env:Envelope [<!ELEMENT x ANY>]>", 1))

    code, document = _inspect(path, SOAP12)

    assert code == 2
    assert document["ok"] is False
    assert document["error"]["code"] == "EBMS:0009"  # type: ignore[index]


def test_cli_inspect_prints_0008_and_exits_2_for_an_unknown_transfer_encoding(tmp_path: Path) -> None:
    """``accesspoint inspect`` on SwA with an unknown Content-Transfer-Encoding prints EBMS:0008 and exits 2."""
    content_type, body = packed()
    head, _, tail = body.rpartition(b"Content-Transfer-Encoding: binary")
    path = tmp_path / "cte.mime"
    path.write_bytes(head + b"Content-Transfer-Encoding: x-uuencode" + tail)

    code, document = _inspect(path, content_type)

    assert code == 2
    assert document["error"]["code"] == "EBMS:0008"  # type: ignore[index]


def test_cli_inspect_prints_0303_and_exits_2_for_an_http_dump_with_rar_compression(tmp_path: Path) -> None:
    """``accesspoint inspect`` on an HTTP dump whose PartInfo says application/x-rar prints EBMS:0303, exit 2."""
    info = payload_part_info(CID, "application/xml", compressed=False)
    info = PartInfo(info.href, (*info.properties, Property(PartProperty.COMPRESSION_TYPE.value, "application/x-rar")))
    content_type, body = packed(user_message(payload_info=(info,)))
    path = tmp_path / "rar.http"
    path.write_bytes(f"POST /as4 HTTP/1.1\r\nContent-Type: {content_type}\r\n\r\n".encode() + body)

    code, document = _inspect(path, None)

    assert code == 2
    assert document["error"]["code"] == "EBMS:0303"  # type: ignore[index]
