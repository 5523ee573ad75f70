"""Values are what was signed: a comment or processing instruction put inside a signed value after signing still
verifies (exclusive C14N without comments drops it), and every layer acts on the whole value, never on the text
before the comment (the comment-truncation class of CVE-2017-11427)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from accesspoint.core.envelope import build_envelope, parse_envelope, serialize
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.model import CollaborationInfo, MessageInfo, Party, PartyId, PartyInfo, Service, UserMessage
from accesspoint.core.namespaces import NS
from accesspoint.core.xml import find_value, holds_elements, parse_xml, string_value
from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.kvittens import build_application_response, parse_application_response
from accesspoint.envelopes.sbdh import parse_sbd
from accesspoint.envelopes.xhe import verify_xhe
from accesspoint.msh.end_to_end import verify_answer
from accesspoint.security.inbound import open_message
from accesspoint.security.outbound import Payload, secure_message
from accesspoint.security.policy import RevocationMode, SecurityPolicy, TrustSettings
from accesspoint.security.signing import sign_envelope, verify_signature
from accesspoint.testing.pki import issue, make_ca
from accesspoint.testing.smp import metadata, pki
from far.soap import IsReachable, SoapFault, parse_request
from operators.deliveries import check_delivery
from operators.receipts import build_answer
from operators.soap import DeliverSecureFault, read_deliver_secure_answer
from smp.documents import DocumentError, parse_service_metadata, render_service_metadata
from smp.model import Flavour
from smp.signature import sign_document, verify_document
from tests.conftest import REPO
from tests.test_envelopes_kvittens import REJECTED
from tests.test_operators_support import (
    AUTHORITY,
    OPERATOR,
    PERSON,
    SDK_ORG,
    TRUST,
    sbd,
    sealed,
    secure_delivery,
    xhe,
)

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
COMMENT = b"<!-- put here after signing -->"
PI = b"<?inserted after-signing?>"


def commented(data: bytes, local_name: str, occurrence: int = 0, *, pi: bool = True) -> bytes:
    """``data`` with a comment (and unless ``pi`` is False, a processing instruction) inside the text of an element
    named ``local_name``. C14N without comments drops the comment but keeps a PI: a PI may go into signed content
    only before signing, a comment also after."""
    pattern = rb"<(?:[\w.-]+:)?" + local_name.encode() + rb"(?:\s[^>]*)?>([^<]{3,})</"
    found = list(re.finditer(pattern, data))[occurrence]
    value = found.group(1)
    third = len(value) // 3
    split = value[:third] + COMMENT + value[third : 2 * third] + (PI if pi else b"") + value[2 * third :]
    return data[: found.start(1)] + split + data[found.end(1) :]


# ------------------------------------------------------------------------------------------------ the helper


def test_string_value_is_all_descendant_text_and_skips_comments_and_pis() -> None:
    """string_value joins every text node below the element; comments and PIs add nothing, child elements do."""
    root = etree.fromstring(b"<v>abc<!---->-d<?pi x?>ef@x<c>y<!--z-->z</c>!</v>")
    assert root.text == "abc"  # what the old reads acted on
    assert string_value(root) == "abc-def@xyz!"
    assert holds_elements(root)
    plain = etree.fromstring(b"<v>abc<!-- a comment --><?pi?></v>")
    assert string_value(plain) == "abc" and not holds_elements(plain)
    assert string_value(etree.fromstring(b"<v/>")) == ""
    assert find_value(root, "c") == "yz" and find_value(root, "missing") is None


PLUGIN_PROBE = """
    from lxml import etree

    element = etree.fromstring(b"<a>x</a>")
    element.text = "written"  # writing stays allowed
    first = element.text
    tail = element.tail
    found = element.findtext("b")
    joined = "".join(element.itertext())
    whole = etree.ElementTree(element).findtext("a")
"""


def test_reading_element_text_is_a_type_error_outside_string_value(tmp_path: Path) -> None:
    """The mypy plugin in pyproject reports .text, .tail, findtext and itertext reads (not writes) of lxml elements."""
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(PLUGIN_PROBE))
    config = tmp_path / "mypy.ini"
    config.write_text(f"[mypy]\nplugins = {REPO / 'tests' / 'mypy_string_value.py'}\n")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--no-incremental", str(probe)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    flagged = sorted(int(line.split(":")[1]) for line in done.stdout.splitlines() if "[element-text]" in line)
    assert flagged == [6, 7, 8, 9, 10], done.stdout


# ------------------------------------------------------------------------------------------ core and security


def _user_message(sender: str, receiver: str) -> UserMessage:
    return UserMessage(
        message_info=MessageInfo("abc-def@x", NOW),
        party_info=PartyInfo(Party((PartyId(sender),), "initiator"), Party((PartyId(receiver),), "responder")),
        collaboration_info=CollaborationInfo(Service("urn:example:service"), "Deliver", "conversation-1"),
    )


@pytest.mark.parametrize("profile", ["1.15", "2.0"])
def test_as4_values_with_a_comment_inside_verify_and_are_read_whole(profile: str) -> None:
    """Comments inside MessageId, ConversationId, PartyId and a DigestValue, and comments and PIs inside the token,
    the SignatureValue and the wrapped key, all put there after signing: the message opens, each value whole."""
    if profile == "1.15":
        policy, ca = SecurityPolicy.edelivery_1_15(), make_ca()
        signer, recipient = issue(ca, "PTE000001", "rsa"), issue(ca, "PTE000002", "rsa")
        key_values = ["CipherValue"]
    else:
        policy, ca = SecurityPolicy.edelivery_2_0(), make_ca(kind="ed25519")
        signer, recipient = issue(ca, "PTE000001", "ed25519"), issue(ca, "PTE000002-decrypt", "x25519")
        key_values = ["CipherValue", "Salt", "DEREncodedKeyValue"]
    policy = dataclasses.replace(policy, trust=TrustSettings(anchors=(ca.certificate,), revocation=RevocationMode.OFF))
    letter = b"<letter>" + b"hej " * 500 + b"</letter>"
    secured = secure_message(
        _user_message("PTE000001", "PTE000002"),
        [Payload("letter@x", "application/xml", lambda: [letter])],
        policy,
        signing_key=signer,
        recipient_certificate=recipient.certificate,
    )
    body = secured.packed.to_bytes()
    for name in ["MessageId", "ConversationId", "PartyId", "DigestValue"]:  # signed: a comment only
        body = commented(body, name, pi=False)
    for name in ["BinarySecurityToken", "SignatureValue", *key_values]:  # not signed: a comment and a PI
        body = commented(body, name)
    assert body.count(COMMENT) == 6 + len(key_values) and body.count(PI) == 2 + len(key_values)
    received = read_message(secured.packed.content_type, body)
    header = received.parsed.header
    assert isinstance(header, UserMessage)
    assert header.message_id == "abc-def@x"
    assert header.collaboration_info.conversation_id == "conversation-1"
    assert header.party_info.sender.party_ids[0].value == "PTE000001"
    opened = open_message(received, policy, at=NOW, keys=[recipient])
    assert opened.complete and opened.signature is not None
    assert opened.signature.signer.certificate == signer.certificate
    assert [p.sha256 for p in opened.payloads] == [hashlib.sha256(letter).hexdigest()]


def test_a_processing_instruction_signed_inside_the_message_id_is_read_whole() -> None:
    """A PI is signed (C14N keeps PIs): a MessageId signed with one inside verifies and is acted on whole."""
    ca = make_ca()
    signer = issue(ca, "PTE000001", "rsa")
    policy = SecurityPolicy.edelivery_1_15(encrypt=False)
    envelope = build_envelope(_user_message("PTE000001", "PTE000002"))
    message_id = next(envelope.iter(f"{{{NS.EBMS}}}MessageId"))
    message_id.text = "abc"
    pi = etree.ProcessingInstruction("pi", "signed with it")
    pi.tail = "-def@x"
    message_id.append(pi)
    sign_envelope(envelope, [], signer, policy, new_id=iter(f"id-{n}" for n in range(9)).__next__)
    received = read_message("application/soap+xml", serialize(envelope))
    assert b"abc<?pi signed with it?>-def@x" in received.envelope_bytes
    assert received.parsed.header.message_id == "abc-def@x"
    assert verify_signature(received.parsed, {}, policy).signer.certificate == signer.certificate


def test_ebms_header_values_are_read_whole_and_an_element_inside_one_is_a_schema_error() -> None:
    """A comment in a Property value, Role or Service changes nothing; an element inside MessageId is EBMS:0009."""
    envelope = textwrap.dedent("""\
        <S:Envelope xmlns:S="http://www.w3.org/2003/05/soap-envelope"
            xmlns:eb="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/">
          <S:Header><eb:Messaging S:mustUnderstand="true"><eb:UserMessage>
            <eb:MessageInfo><eb:Timestamp>2026-11-30T12:30:00Z</eb:Timestamp>
              <eb:MessageId>abc-def@x</eb:MessageId></eb:MessageInfo>
            <eb:PartyInfo>
              <eb:From><eb:PartyId>sender</eb:PartyId><eb:Role>initiator-role</eb:Role></eb:From>
              <eb:To><eb:PartyId>receiver</eb:PartyId><eb:Role>responder-role</eb:Role></eb:To>
            </eb:PartyInfo>
            <eb:CollaborationInfo><eb:Service>urn:example:service</eb:Service><eb:Action>Deliver</eb:Action>
              <eb:ConversationId>conversation-1</eb:ConversationId></eb:CollaborationInfo>
            <eb:MessageProperties>
              <eb:Property name="finalRecipient">0007:5566778899</eb:Property></eb:MessageProperties>
          </eb:UserMessage></eb:Messaging></S:Header><S:Body/></S:Envelope>""").encode()
    for name in ("Role", "Service", "Property"):
        envelope = commented(envelope, name)
    header = parse_envelope(envelope).header
    assert isinstance(header, UserMessage)
    assert header.party_info.sender.role == "initiator-role"
    assert header.collaboration_info.service.value == "urn:example:service"
    assert header.message_properties[0].value == "0007:5566778899"
    with pytest.raises(EbmsError) as caught:
        parse_envelope(envelope.replace(b">abc-def@x<", b">abc<b>x</b>-def@x<"))
    assert caught.value.error_code is ErrorCode.INVALID_HEADER


# --------------------------------------------------------------------------------------------------- envelopes


def test_sbdh_values_are_read_whole() -> None:
    """A comment inside the SBDH receiver and InstanceIdentifier: the parsed header has both whole."""
    data = sbd("0007:5566778899")
    instance = parse_sbd(data).header.document.instance_identifier
    data = commented(commented(data, "Identifier", occurrence=1), "InstanceIdentifier")
    header = parse_sbd(data).header
    assert header.receiver[0].identifier == "0007:5566778899"
    assert header.document.instance_identifier == instance


def test_signed_xhe_with_a_comment_inside_its_recipient_verifies_and_names_the_whole_recipient() -> None:
    """An XHE signed by the authority gets a comment in ToParty's id: it verifies and addresses the whole id."""
    data = commented(xhe(SDK_ORG), "ID", _occurrence(xhe(SDK_ORG), "ID", SDK_ORG), pi=False)
    verified = verify_xhe(data, expected=AUTHORITY.certificate)
    assert verified.xhe.to_party.id == SDK_ORG


def _occurrence(data: bytes, local_name: str, value: str) -> int:
    pattern = rb"<(?:[\w.-]+:)?" + local_name.encode() + rb"(?:\s[^>]*)?>([^<]{3,})</"
    values = [m.group(1).decode() for m in re.finditer(pattern, data)]
    return values.index(value)


def test_sealed_delivery_with_comments_inside_recipient_and_body_verifies_and_is_read_whole() -> None:
    """Mina meddelanden: comments in the signed and sealed delivery's recipient and attachment body change nothing
    the operator acts on (the recipient's mailbox, the attachment's bytes)."""
    payload = sealed(secure_delivery())
    data = commented(payload, "Recipient", pi=False)
    data = commented(data, "Body", occurrence=1, pi=False)
    delivery = check_delivery(data, TRUST, at=NOW)
    assert delivery.recipient == PERSON
    assert delivery.items[0].attachments[0].body == b"%PDF-1.7 beslut"


def test_operator_answer_with_a_comment_inside_the_quoted_message_id_is_the_answer_to_that_message() -> None:
    """The operator's signed notification quotes m1@se with a comment inside: the sender's access point still
    finds it the answer to m1@se (operators.receipts, msh.end_to_end)."""
    payload = sealed(secure_delivery())
    checked = check_delivery(payload, TRUST, at=NOW)
    parts = build_answer(
        checked, message_id="m1@se", payloads=[("letter@se", payload)], operator="op", keys=OPERATOR, at=NOW
    )
    reply = {p.content_id: p.data for p in parts}
    note = next(cid for cid, data in reply.items() if b"DeliveryNotification" in data)
    reply[note] = commented(reply[note], "MessageId", pi=False)
    sent = {"letter@se": payload}
    answer = verify_answer(reply, message_id="m1@se", sent=sent, certificates=[OPERATOR.certificate])
    assert answer is not None and answer.notification.message_id == "m1@se"


def test_meddelandekvittens_values_are_read_whole() -> None:
    """A Meddelandekvittens with comments inside its ResponseCode, the answered XHE's ID and a reason parses whole."""
    data = build_application_response(REJECTED)
    for name in ("ResponseCode", "StatusReason"):
        data = commented(data, name)
    data = commented(data, "ID", occurrence=_occurrence(data, "ID", REJECTED.document_reference))
    assert parse_application_response(data) == REJECTED


def test_an_element_inside_an_envelope_value_is_a_format_error() -> None:
    """A value of simple type holding an element is refused (FORMAT), not read with the element's text."""
    data = sbd("0007:5566778899").replace(b">0007:5566778899<", b">0007:<x>5566778899</x><", 1)
    with pytest.raises(EnvelopeError) as caught:
        parse_sbd(data)
    assert caught.value.rules[0] in {"XSD", "FORMAT"}


# --------------------------------------------------------------------------------------------------------- SMP


def test_signed_smp_metadata_with_a_comment_inside_the_endpoint_url_verifies_and_gives_the_whole_url() -> None:
    """A comment in the signed EndpointURI and in the signer's certificate: it verifies; the URL is whole."""
    root = sign_document(
        render_service_metadata(metadata("https://ap.example/as4"), Flavour.OASIS1), pki().smp, Flavour.OASIS1
    )
    data = etree.tostring(root)
    data = commented(data, "EndpointURI", pi=False)
    data = commented(data, "X509Certificate")
    verified = verify_document(parse_xml(data, what="SMP"))
    assert verified.signer == pki().smp.certificate
    parsed = parse_service_metadata(verified.root)
    assert [e.url for p in parsed.processes for e in p.endpoints] == ["https://ap.example/as4"]
    with pytest.raises(DocumentError, match="holds an element"):
        signed = etree.tostring(root)
        parse_service_metadata(parse_xml(signed.replace(b"https://ap.example/as4", b"https://<b>x</b>"), what="SMP"))


# --------------------------------------------------------------------------------------------------- FaR, operators


def _is_reachable(recipient: bytes) -> bytes:
    return (
        b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
        b' xmlns:v3="http://minameddelanden.gov.se/schema/Recipient/v3"><soap:Body><v3:isReachable>'
        b"<v3:senderOrgNr>165566778899</v3:senderOrgNr><v3:recipientId>" + recipient + b"</v3:recipientId>"
        b"</v3:isReachable></soap:Body></soap:Envelope>"
    )


def test_far_request_values_are_read_whole_and_an_element_inside_one_is_refused() -> None:
    """FaR isReachable: comments inside senderOrgNr and recipientId change nothing; an element inside is a fault."""
    request = commented(commented(_is_reachable(b"197001011234"), "recipientId"), "senderOrgNr")
    parsed = parse_request(request)
    assert isinstance(parsed, IsReachable)
    assert (parsed.sender_orgnr, parsed.recipients) == ("5566778899", ("197001011234",))
    with pytest.raises(SoapFault):
        parse_request(_is_reachable(b"1970<x/>01011234"))


def test_operator_fault_values_are_read_whole() -> None:
    """A deliverSecure fault with comments inside its code and description is read whole."""
    fault = (
        b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault>'
        b"<faultcode>soap:Server</faultcode><faultstring>refused</faultstring><detail>"
        b'<c:applicationFault xmlns:c="http://minameddelanden.gov.se/schema/Common/v3">'
        b"<c:ErrorCode>1234</c:ErrorCode><c:Description>no such mailbox</c:Description><c:CallId>call-42</c:CallId>"
        b"</c:applicationFault></detail></soap:Fault></soap:Body></soap:Envelope>"
    )
    for name in ("ErrorCode", "Description", "CallId"):
        fault = commented(fault, name)
    with pytest.raises(DeliverSecureFault) as caught:
        read_deliver_secure_answer(fault)
    assert (caught.value.error_code, caught.value.description, caught.value.call_id) == (
        1234,
        "no such mailbox",
        "call-42",
    )
