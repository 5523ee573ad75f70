"""Receipts and error signals: building them, their wire form, and checking the receipts a partner returns."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from accesspoint.core.envelope import build_envelope, parse_envelope, serialize
from accesspoint.core.errors import MAX_DETAIL, EbmsError, ErrorCode, Severity
from accesspoint.core.message import payload_part_info, read_message
from accesspoint.core.model import (
    CollaborationInfo,
    MessageInfo,
    Party,
    PartyId,
    PartyInfo,
    Property,
    ReferenceEcho,
    Service,
    SignalMessage,
    UserMessage,
)
from accesspoint.core.namespaces import NS
from accesspoint.core.signals import build_error_signal, build_receipt, check_receipt, signed_references
from accesspoint.core.xml import validate_messaging
from tests.conftest import interop_path

NOW = datetime(2026, 11, 29, 9, 0, 0, 250000, tzinfo=UTC)
SOAP12 = "application/soap+xml; charset=UTF-8"
NSMAP = {
    "env": NS.SOAP12.value,
    "eb": NS.EBMS.value,
    "ebbp": NS.EBBP.value,
    "ds": NS.DS.value,
    "ec": NS.EC.value,
    "wsse": NS.WSSE.value,
    "xml": NS.XML.value,
}
SIGNED_INFO_REFS = "/*/*[local-name()='Header']/wsse:Security/ds:Signature/ds:SignedInfo/ds:Reference"
NRI_REFS = "//eb:Receipt/ebbp:NonRepudiationInformation/ebbp:MessagePartNRInformation/ds:Reference"

RefTuple = tuple[str, str, str, tuple[tuple[str, tuple[str, ...] | None], ...]]


def elements(node: etree._Element, path: str) -> list[etree._Element]:
    """The elements an XPath selects."""
    found = node.xpath(path, namespaces=NSMAP)
    assert isinstance(found, list)
    return [item for item in found if isinstance(item, etree._Element)]


def string(node: etree._Element, path: str) -> str:
    """The string value of an XPath expression."""
    return str(node.xpath(f"string({path})", namespaces=NSMAP))


def xpath_references(data: bytes, path: str) -> list[RefTuple]:
    """The ds:References at ``path``, extracted with plain lxml XPath (independently of the core)."""
    root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    out: list[RefTuple] = []
    for ref in elements(root, path):
        transforms = tuple(
            (
                str(t.get("Algorithm")),
                tuple(string(t, "ec:InclusiveNamespaces/@PrefixList").split())
                if elements(t, "ec:InclusiveNamespaces")
                else None,
            )
            for t in elements(ref, "ds:Transforms/ds:Transform")
        )
        digest = "".join(string(ref, "ds:DigestValue").split())
        out.append((str(ref.get("URI")), string(ref, "ds:DigestMethod/@Algorithm"), digest, transforms))
    return out


def as_tuple(reference: ReferenceEcho) -> RefTuple:
    """A ReferenceEcho in the shape ``xpath_references`` returns."""
    transforms = tuple((t.algorithm, t.inclusive_prefixes) for t in reference.transforms)
    return (reference.uri, reference.digest_method, reference.digest_value, transforms)


def unsigned_message() -> UserMessage:
    """An unsigned user message from an agency to a mailbox operator."""
    return UserMessage(
        message_info=MessageInfo("msg-7@agency.example", datetime(2026, 11, 29, 8, 59, tzinfo=UTC)),
        party_info=PartyInfo(Party((PartyId("2021005448", "iso6523:0007"),), "sender"), Party((PartyId("op"),), "r")),
        collaboration_info=CollaborationInfo(Service("urn:digitalpost:delivery"), "deliverSecure", "conv-7"),
        message_properties=(Property("finalRecipient", "198112289874", "personnummer"),),
        payload_info=(payload_part_info("letter@agency.example", "application/pdf", compressed=True),),
    )


# ---------------------------------------------------------------------------------------------- receipts


def test_receipt_for_an_unsigned_message_carries_a_copy_of_its_user_message() -> None:
    """AS4 5.1.8: the receipt of an unsigned message copies its eb:UserMessage and refers to its MessageId."""
    message = unsigned_message()

    receipt = build_receipt(message, (), message_id="rcpt-7@operator.example", now=NOW)
    data = serialize(build_envelope(receipt))
    parsed = read_message(SOAP12, data).parsed

    assert receipt.receipt is not None and receipt.receipt.user_message == message
    assert not receipt.receipt.is_non_repudiation
    assert receipt.message_info == MessageInfo("rcpt-7@operator.example", NOW, "msg-7@agency.example")
    root = etree.fromstring(data)
    copies = elements(root, "//eb:SignalMessage/eb:Receipt/eb:UserMessage")
    assert len(copies) == 1
    assert string(copies[0], "eb:MessageInfo/eb:MessageId") == "msg-7@agency.example"
    assert parsed.header == receipt
    assert parsed.messaging.kind == "receipt"
    assert isinstance(parsed.header, SignalMessage)
    assert check_receipt(parsed.header, sent_message_id="msg-7@agency.example").user_message == message


@pytest.mark.parametrize(
    "relative",
    [
        "python-peers/as4.usermessage.soap.xml",
        "python-peers/peppol-py.usermessage.soap.xml",
        "domibus/messages/RawXMLMessageWithSpaces.xml",  # InclusiveNamespaces PrefixList "" and "soap"
    ],
)
def test_receipt_for_a_signed_message_echoes_exactly_its_signed_info_references(relative: str) -> None:
    """The NRI receipt of a signed message echoes its SignedInfo references: same URIs, transforms and digests."""
    data = interop_path(relative).read_bytes()
    expected = xpath_references(data, SIGNED_INFO_REFS)
    parsed = parse_envelope(data)
    assert isinstance(parsed.header, UserMessage)

    references = signed_references(parsed)
    receipt = build_receipt(parsed.header, references, message_id="rcpt-1@receiver.example", now=NOW)
    wire = serialize(build_envelope(receipt))

    assert len(expected) == 3
    assert [as_tuple(ref) for ref in references] == expected
    assert receipt.receipt is not None and receipt.receipt.user_message is None
    assert xpath_references(wire, NRI_REFS) == expected
    assert elements(etree.fromstring(wire), "//eb:Receipt/eb:UserMessage") == []
    assert receipt.message_info.ref_to_message_id == parsed.header.message_id
    back = read_message(SOAP12, wire).parsed.header
    assert back == receipt
    assert isinstance(back, SignalMessage)
    assert check_receipt(back, sent_message_id=parsed.header.message_id, sent_references=references)


def test_receipt_echo_keeps_inclusive_namespace_prefixes() -> None:
    """A reference whose exc-c14n transform lists InclusiveNamespaces prefixes is echoed with the same list."""
    data = interop_path("domibus/messages/RawXMLMessageWithSpaces.xml").read_bytes()
    references = signed_references(parse_envelope(data))

    prefixes = [t.inclusive_prefixes for ref in references for t in ref.transforms]

    assert prefixes == [(), ("soap",), None]


HARMONY = "domibus/harmony/messages/"


@pytest.mark.parametrize(
    ("request_file", "response_file"),
    [("MSHAS4Request.xml", "MSHAS4Response.xml"), ("MSHAS4Request-signOnly.xml", "MSHAS4Response-signOnly.xml")],
)
def test_check_receipt_accepts_domibus_receipt_for_its_request(request_file: str, response_file: str) -> None:
    """Domibus' NRR receipt, whose NRI equals the request's SignedInfo references as a set, is accepted."""
    request_bytes = interop_path(HARMONY + request_file).read_bytes()
    response_bytes = interop_path(HARMONY + response_file).read_bytes()
    request = parse_envelope(request_bytes)
    response = read_message(SOAP12, response_bytes).parsed.header
    assert isinstance(response, SignalMessage)

    receipt = check_receipt(
        response, sent_message_id=request.header.message_id, sent_references=signed_references(request)
    )

    expected = xpath_references(request_bytes, SIGNED_INFO_REFS)
    assert set(xpath_references(response_bytes, NRI_REFS)) == set(expected)
    assert {as_tuple(ref) for ref in receipt.references} == set(expected)
    assert len(expected) == 3


def test_check_receipt_refuses_domibus_receipt_against_another_request_0302() -> None:
    """Domibus' receipt checked against the other request's references or id is refused with EBMS:0302."""
    request = parse_envelope(interop_path(HARMONY + "MSHAS4Request.xml").read_bytes())
    other = parse_envelope(interop_path(HARMONY + "MSHAS4Request-signOnly.xml").read_bytes())
    response = read_message(SOAP12, interop_path(HARMONY + "MSHAS4Response.xml").read_bytes()).parsed.header
    assert isinstance(response, SignalMessage)

    with pytest.raises(EbmsError) as wrong_refs:
        check_receipt(response, sent_message_id=request.header.message_id, sent_references=signed_references(other))
    with pytest.raises(EbmsError) as wrong_id:
        check_receipt(response, sent_message_id=other.header.message_id, sent_references=signed_references(request))

    assert wrong_refs.value.code == "EBMS:0302"
    assert "differs" in wrong_refs.value.detail
    assert wrong_id.value.code == "EBMS:0302"
    assert "refers to" in wrong_id.value.detail


def test_check_receipt_refuses_domibus_receipt_with_a_tampered_digest_0302() -> None:
    """Domibus' receipt with one echoed DigestValue altered is refused with EBMS:0302."""
    request = parse_envelope(interop_path(HARMONY + "MSHAS4Request.xml").read_bytes())
    data = interop_path(HARMONY + "MSHAS4Response.xml").read_bytes()
    digest = signed_references(request)[0].digest_value.encode()
    assert data.count(digest) == 1
    tampered = read_message(SOAP12, data.replace(digest, b"A" + digest[1:])).parsed.header
    assert isinstance(tampered, SignalMessage)

    with pytest.raises(EbmsError) as caught:
        check_receipt(tampered, sent_message_id=request.header.message_id, sent_references=signed_references(request))

    assert caught.value.code == "EBMS:0302"


def test_check_receipt_raises_the_code_of_an_error_signal_received_instead() -> None:
    """An eb:Error signal (as4's signed EBMS:0101) where a receipt was expected raises EBMS:0101, not 0302."""
    signal = read_message(SOAP12, interop_path("python-peers/as4.error-EBMS0101-by-as4.xml").read_bytes()).parsed.header
    assert isinstance(signal, SignalMessage)

    with pytest.raises(EbmsError) as caught:
        check_receipt(signal, sent_message_id=signal.message_info.ref_to_message_id or "")

    assert caught.value.code == "EBMS:0101"


# ------------------------------------------------------------------------------------------ error signals


def test_error_signal_serialises_every_field_of_eb_error() -> None:
    """build_error_signal gives an eb:Error with code, severity, category, descriptions, reference and detail."""
    error = EbmsError(ErrorCode.INVALID_HEADER, "eb:Timestamp 'yesterday' is not an xsd:dateTime")

    signal = build_error_signal([error], message_id="err-1@operator.example", now=NOW, ref_to_message_id="msg-7@a")
    data = serialize(build_envelope(signal))

    items = elements(etree.fromstring(data), "//eb:SignalMessage/eb:Error")
    assert len(items) == 1
    item = items[0]
    assert item.get("errorCode") == "EBMS:0009"
    assert item.get("severity") == "failure"
    assert item.get("category") == "UnPackaging"
    assert item.get("shortDescription") == "InvalidHeader"
    assert item.get("refToMessageInError") == "msg-7@a"
    assert item.get("origin") == "ebMS"
    description = item.find(f"{{{NS.EBMS}}}Description")
    assert description is not None
    assert description.get(f"{{{NS.XML}}}lang") == "en"
    assert description.text == ErrorCode.INVALID_HEADER.value.description
    assert item.findtext(f"{{{NS.EBMS}}}ErrorDetail") == "eb:Timestamp 'yesterday' is not an xsd:dateTime"
    assert signal.message_info == MessageInfo("err-1@operator.example", NOW, "msg-7@a")


def test_error_signal_is_schema_valid_and_reads_back_equal() -> None:
    """An error signal with several errors (own reference, warning severity) is schema valid and parses back equal."""
    errors = [
        EbmsError(ErrorCode.EXTERNAL_PAYLOAD_ERROR, "no MIME part for PartInfo href 'cid:x'"),
        EbmsError(ErrorCode.FEATURE_NOT_SUPPORTED, "split and join", ref_to_message_id="msg-other@a"),
        EbmsError(ErrorCode.DECOMPRESSION_FAILURE, "", severity=Severity.WARNING),
    ]

    signal = build_error_signal(errors, message_id="err-2@operator.example", now=NOW, ref_to_message_id="msg-7@a")
    parsed = read_message(SOAP12, serialize(build_envelope(signal))).parsed
    validate_messaging(parsed.messaging_element)

    assert parsed.header == signal
    assert parsed.messaging.kind == "error"
    assert [e.error_code for e in signal.errors] == ["EBMS:0011", "EBMS:0002", "EBMS:0303"]
    assert [e.ref_to_message_in_error for e in signal.errors] == ["msg-7@a", "msg-other@a", "msg-7@a"]
    assert [e.severity for e in signal.errors] == ["failure", "warning", "warning"]
    assert signal.errors[2].detail is None
    assert [e.known for e in signal.errors] == [
        ErrorCode.EXTERNAL_PAYLOAD_ERROR,
        ErrorCode.FEATURE_NOT_SUPPORTED,
        ErrorCode.DECOMPRESSION_FAILURE,
    ]


def test_error_signal_detail_is_bounded_and_log_detail_stays_off_the_wire() -> None:
    """A huge detail is cut to MAX_DETAIL on the wire; the log-only detail never reaches the signal."""
    error = EbmsError(ErrorCode.INVALID_HEADER, "x" * (50 * MAX_DETAIL), log_detail="private key slot 3 failed")

    signal = build_error_signal([error], message_id="err-3@operator.example", now=NOW)
    data = serialize(build_envelope(signal))
    back = parse_envelope(data).header

    assert len(error.detail) == MAX_DETAIL
    assert isinstance(back, SignalMessage)
    assert back.errors[0].detail == "x" * MAX_DETAIL
    assert b"x" * (MAX_DETAIL + 1) not in data
    assert b"private key" not in data
    assert back.errors[0].ref_to_message_in_error is None


def test_error_signal_needs_at_least_one_error() -> None:
    """build_error_signal refuses an empty list of errors."""
    with pytest.raises(ValueError, match="at least one"):
        build_error_signal([], message_id="err-4@operator.example", now=NOW)
