"""Mina meddelanden: SecureDelivery, SignedDelivery (sender), SealedDelivery (intermediary), signed Receipt."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest
from lxml import etree

from accesspoint.core.namespaces import NS
from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.minameddelanden import (
    M1_NS,
    M3_NS,
    RECEIPT_NS,
    Attachment,
    DeliveryReceipt,
    DeliveryResult,
    ReceiptRequest,
    SecureDelivery,
    SecureMessage,
    Sender,
    SupportInfo,
    build_delivery_receipt,
    build_sealed_delivery,
    build_signed_delivery,
    from_deliver_secure,
    parse_delivery_result,
    receipt_for,
    receipt_matches,
    to_deliver_secure,
    verify_delivery_receipt,
    verify_sealed_delivery,
    verify_signed_delivery,
)
from accesspoint.envelopes.schemas import load_minameddelanden_schema
from accesspoint.envelopes.signature import sign_enveloped
from accesspoint.security.keys import KeyPair
from accesspoint.testing import pki
from tests.conftest import interop_path

M1, M3, R = f"{{{M1_NS}}}", f"{{{M3_NS}}}", f"{{{RECEIPT_NS}}}"
RECEIVED = date(2026, 11, 30)
DELIVERY = SecureDelivery(
    sender=Sender("162021005448", "Skatteverket", attention="Avdelning X"),
    recipient="197001011234",
    messages=(
        SecureMessage(
            id="c1f3a2e4-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
            subject="Beslut om skatt",
            support=SupportInfo("Ring oss", url="https://example.se/hjalp", phone="0771-567 567"),
            content_type="text/plain",
            body="Hej! Ditt beslut är bifogat.".encode(),
            attachments=(Attachment("application/pdf", b"%PDF-1.7 beslut", "beslut.pdf"),),
            metadata=(("case", "2026-42"),),
            receipt_request=ReceiptRequest.SIGNED,
        ),
        SecureMessage("m-2", "Utan kvitto", SupportInfo("Ring oss"), "text/html", b"<p>hej</p>"),
    ),
    reference="ref-1",
    correlation_id="corr-1",
)


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return load_minameddelanden_schema(interop_path("minameddelanden/contracts"))


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return pki.make_ca("Mina meddelanden test CA")


@pytest.fixture(scope="module")
def sender(ca: KeyPair) -> KeyPair:
    return pki.issue(ca, "Skatteverket")


@pytest.fixture(scope="module")
def intermediary(ca: KeyPair) -> KeyPair:
    return pki.issue(ca, "Access point")


@pytest.fixture(scope="module")
def operator(ca: KeyPair) -> KeyPair:
    return pki.issue(ca, "Mailbox operator")


@pytest.fixture(scope="module")
def signed(sender: KeyPair, schema: etree.XMLSchema) -> bytes:
    return build_signed_delivery(DELIVERY, sender, schema=schema)


@pytest.fixture(scope="module")
def sealed(signed: bytes, sender: KeyPair, intermediary: KeyPair, schema: etree.XMLSchema) -> bytes:
    return build_sealed_delivery(signed, intermediary, received=RECEIVED, sender=sender.certificate, schema=schema)


def test_signed_delivery_round_trip(signed: bytes, sender: KeyPair, schema: etree.XMLSchema) -> None:
    """The sender's layer is valid against Message v3 and verifies to exactly the delivery that was signed."""
    verified = verify_signed_delivery(signed, sender=sender.certificate, schema=schema)
    assert verified.delivery == DELIVERY
    assert verified.sender_signature.signer == sender.certificate


def test_sealed_delivery_round_trip(
    sealed: bytes, sender: KeyPair, intermediary: KeyPair, schema: etree.XMLSchema
) -> None:
    """The sealed layer is valid against Service v3 and both signatures verify, each with its own signer."""
    verified = verify_sealed_delivery(
        sealed, intermediary=intermediary.certificate, sender=sender.certificate, schema=schema
    )
    assert verified.delivery == DELIVERY
    assert verified.seal.received == RECEIVED and verified.seal.signatures_ok
    assert verified.seal_signature.signer == intermediary.certificate
    assert verified.sender_signature.signer == sender.certificate


def test_sealed_delivery_survives_the_soap_request(
    sealed: bytes, sender: KeyPair, intermediary: KeyPair, schema: etree.XMLSchema
) -> None:
    """Carried as deliverSecure in a SOAP 1.1 body, the SealedDelivery is schema-valid and still verifies."""
    request = to_deliver_secure(sealed)
    assert schema.validate(request)
    envelope = etree.Element(f"{{{NS.SOAP11}}}Envelope", nsmap={"soap": NS.SOAP11.value})
    etree.SubElement(envelope, f"{{{NS.SOAP11}}}Body").append(request)
    wire = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    verified = verify_sealed_delivery(wire, intermediary=intermediary.certificate, sender=sender.certificate)
    assert verified.delivery == DELIVERY
    assert from_deliver_secure(wire).tag == f"{M3}SealedDelivery"


def _edit(data: bytes, path: str, value: str) -> bytes:
    root = etree.fromstring(data)
    element = root.find(path)
    assert element is not None, path
    element.text = value
    return etree.tostring(root)


DELIVERY_SUBJECT = f"{M3}Delivery/{M3}Message/{M3}Header/{M3}Subject"


def test_tampered_signed_delivery_is_refused(signed: bytes, sender: KeyPair) -> None:
    """Changing a message subject after the sender signed breaks the sender's signature."""
    with pytest.raises(EnvelopeError, match="does not verify"):
        verify_signed_delivery(_edit(signed, DELIVERY_SUBJECT, "Annat"), sender=sender.certificate)


def test_tampered_seal_is_refused(sealed: bytes, intermediary: KeyPair) -> None:
    """Changing the seal's ReceivedTime breaks the intermediary's signature."""
    with pytest.raises(EnvelopeError, match="does not verify"):
        verify_sealed_delivery(
            _edit(sealed, f"{M3}Seal/{M1}ReceivedTime", "2026-12-01"), intermediary=intermediary.certificate
        )


def test_resealed_tampered_delivery_is_refused(sealed: bytes, sender: KeyPair, intermediary: KeyPair) -> None:
    """An intermediary that alters the delivery and seals again is caught by the sender's signature inside."""
    root = etree.fromstring(_edit(sealed, f"{M3}SignedDelivery/{DELIVERY_SUBJECT}", "Förfalskad"))
    root.remove(root[-1])
    resealed = etree.tostring(sign_enveloped(root, intermediary))
    with pytest.raises(EnvelopeError, match="does not verify"):
        verify_sealed_delivery(resealed, intermediary=intermediary.certificate, sender=sender.certificate)


def test_seal_by_another_intermediary_is_refused(sealed: bytes, ca: KeyPair) -> None:
    """A SealedDelivery does not verify against another intermediary's certificate."""
    other = pki.issue(ca, "Other access point")
    with pytest.raises(EnvelopeError, match="does not verify"):
        verify_sealed_delivery(sealed, intermediary=other.certificate)


def test_intermediary_refuses_to_seal_a_tampered_delivery(
    signed: bytes, sender: KeyPair, intermediary: KeyPair
) -> None:
    """The intermediary verifies the sender's signature before sealing and seals nothing that fails."""
    with pytest.raises(EnvelopeError, match="does not verify"):
        build_sealed_delivery(
            _edit(signed, DELIVERY_SUBJECT, "Annat"), intermediary, received=RECEIVED, sender=sender.certificate
        )


def test_seal_saying_signatures_failed_is_refused(sealed: bytes, intermediary: KeyPair) -> None:
    """A correctly signed seal with SignaturesOK false is still refused."""
    root = etree.fromstring(_edit(sealed, f"{M3}Seal/{M1}SignaturesOK", "false"))
    root.remove(root[-1])
    with pytest.raises(EnvelopeError, match="seal says"):
        verify_sealed_delivery(
            etree.tostring(sign_enveloped(root, intermediary)), intermediary=intermediary.certificate
        )


def test_wrong_attachment_checksum_is_refused(sender: KeyPair) -> None:
    """A signed delivery whose attachment checksum does not match its body is refused on reading."""
    message = dataclasses.replace(
        DELIVERY.messages[0], attachments=(Attachment("application/pdf", b"%PDF", "a.pdf", "00"),)
    )
    data = build_signed_delivery(dataclasses.replace(DELIVERY, messages=(message,)), sender)
    with pytest.raises(EnvelopeError, match="checksum"):
        verify_signed_delivery(data)


def test_schema_refuses_a_bad_recipient(sender: KeyPair, schema: etree.XMLSchema) -> None:
    """A recipient that is not 12 digits of a RecipientId is refused by the contract's schema."""
    with pytest.raises(EnvelopeError) as caught:
        build_signed_delivery(dataclasses.replace(DELIVERY, recipient="12345"), sender, schema=schema)
    assert caught.value.rules[0] == "XSD"


def test_receipt_round_trip(operator: KeyPair, schema: etree.XMLSchema) -> None:
    """The operator's signed Receipt is schema-valid, verifies with its certificate and matches the delivery."""
    receipt = receipt_for(DELIVERY, DELIVERY.messages[0].id, date(2026, 12, 1))
    assert receipt == DeliveryReceipt(DELIVERY.messages[0].id, "162021005448", "197001011234", date(2026, 12, 1))
    data = build_delivery_receipt(receipt, operator, schema=schema)
    verified = verify_delivery_receipt(data, operator=operator.certificate, schema=schema)
    assert verified.receipt == receipt
    assert verified.signature.signer == operator.certificate
    assert receipt_matches(verified.receipt, DELIVERY)
    assert not receipt_matches(verified.receipt, dataclasses.replace(DELIVERY, recipient="197001011235"))


def test_tampered_receipt_is_refused(operator: KeyPair) -> None:
    """Changing the acknowledged message id of a signed Receipt breaks its signature."""
    data = build_delivery_receipt(receipt_for(DELIVERY, DELIVERY.messages[0].id, RECEIVED), operator)
    with pytest.raises(EnvelopeError, match="does not verify"):
        verify_delivery_receipt(_edit(data, f"{R}MessageId", "m-2"), operator=operator.certificate)


def test_receipt_by_another_operator_is_refused(operator: KeyPair, ca: KeyPair) -> None:
    """A Receipt signed by another operator does not verify with the expected operator's certificate."""
    other = pki.issue(ca, "Other operator")
    data = build_delivery_receipt(receipt_for(DELIVERY, DELIVERY.messages[0].id, RECEIVED), other)
    with pytest.raises(EnvelopeError, match="does not verify"):
        verify_delivery_receipt(data, operator=operator.certificate)


def test_no_receipt_for_a_message_that_asked_none() -> None:
    """A message without ReceiptRequest gets no Receipt."""
    with pytest.raises(EnvelopeError, match="asks for no receipt"):
        receipt_for(DELIVERY, "m-2", RECEIVED)


# The recorded SOAP responses (README: every Body child is valid against the v3 schemas), with what they parse to.
SOAP_SAMPLES: dict[str, DeliveryResult | None] = {
    "wiremock/deliverSecure-kivra.xml": DeliveryResult(
        "3832352f-fa74-4c17-ab6a-a6e3ab8324f3", (("192301010168", True),)
    ),
    "wiremock/deliverSecure-e-boks.xml": None,
    "it/test1_sendDigitalMailToPrivatePerson/deliverSecure.xml": None,
    "it/test3_sendDigitalMailToOrganization/deliverSecure.xml": None,
    "wiremock/skatteverket-kivra-recipient.xml": None,
    "wiremock/skatteverket-faulty-recipient.xml": None,
    "it/test1_sendDigitalMailToPrivatePerson/recipient.xml": None,
    "it/test2_hasAvailableMailboxes/recipient.xml": None,
    "it/test3_sendDigitalMailToOrganization/recipient.xml": None,
}
DELIVERED_TO = {
    "wiremock/deliverSecure-e-boks.xml": "192301010170",
    "it/test1_sendDigitalMailToPrivatePerson/deliverSecure.xml": "190101010159",
    "it/test3_sendDigitalMailToOrganization/deliverSecure.xml": "165591628136",
}


@pytest.mark.parametrize("name", sorted(SOAP_SAMPLES))
def test_recorded_soap_samples(name: str, schema: etree.XMLSchema) -> None:
    """Every recorded answer is schema-valid; deliverSecure answers parse to their results, others are refused."""
    data = interop_path(f"minameddelanden/soap/{name}").read_bytes()
    body = etree.fromstring(data).find(f"{{{NS.SOAP11}}}Body")
    assert body is not None and len(body) == 1
    assert schema.validate(body[0]), schema.error_log
    if "deliverSecure" not in name:
        with pytest.raises(EnvelopeError, match="expected a deliverSecureResponse"):
            parse_delivery_result(data)
        return
    result = parse_delivery_result(data)
    expected = SOAP_SAMPLES[name]
    if expected is not None:
        assert result == expected
    else:
        assert result.statuses == ((DELIVERED_TO[name], True),)


def test_unknown_receipt_request_is_refused(signed: bytes, sender: KeyPair, schema: etree.XMLSchema) -> None:
    """A correctly signed delivery asking for an unknown kind of receipt is refused, with or without the schema."""
    root = etree.fromstring(_edit(signed, f"{M3}Delivery/{M3}Message/{M3}Header/{M3}ReceiptRequest", "ALWAYS"))
    root.remove(root[-1])
    data = etree.tostring(sign_enveloped(root, sender))
    with pytest.raises(EnvelopeError, match="ReceiptRequest 'ALWAYS'"):
        verify_signed_delivery(data, sender=sender.certificate)
    with pytest.raises(EnvelopeError) as caught:
        verify_signed_delivery(data, sender=sender.certificate, schema=schema)
    assert caught.value.rules[0] == "XSD"


def _reference_style(delivery_xml: bytes, keys: KeyPair) -> bytes:
    """A SignedDelivery as Mina meddelanden's Java code signs it: JAXB-style prefixes declared on the root
    (one of them unused), SignedInfo in exclusive C14N, a Reference URI="" with only the enveloped transform, so
    the digest is inclusive C14N and covers every namespace declaration in scope."""
    import xmlsec
    from cryptography.hazmat.primitives import serialization

    source = etree.fromstring(delivery_xml)
    nsmap = {
        "ns2": "http://minameddelanden.gov.se/schema/Sender",
        "ns3": "http://minameddelanden.gov.se/schema/Message/v2",
        "ns4": M3_NS,
        "ns6": M1_NS,
        "ns15": RECEIPT_NS,
    }
    root = etree.Element(f"{M3}SignedDelivery", nsmap=nsmap)
    root.append(source.find(f"{M3}Delivery"))
    root = etree.fromstring(etree.tostring(root))
    template = xmlsec.template.create(
        root, xmlsec.constants.TransformExclC14N, xmlsec.constants.TransformRsaSha256, ns="ds"
    )
    root.append(template)
    reference = xmlsec.template.add_reference(template, xmlsec.constants.TransformSha256, uri="")
    xmlsec.template.add_transform(reference, xmlsec.constants.TransformEnveloped)
    x509_data = xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(template))
    xmlsec.template.x509_data_add_certificate(x509_data)
    context = xmlsec.SignatureContext()
    context.key = xmlsec.Key.from_memory(
        keys.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        xmlsec.constants.KeyDataFormatPem,
    )
    context.key.load_cert_from_memory(
        keys.certificate.public_bytes(serialization.Encoding.PEM), xmlsec.constants.KeyDataFormatPem
    )
    context.sign(template)
    return etree.tostring(root)


def test_reference_style_signature_survives_sealing(
    signed: bytes, sender: KeyPair, intermediary: KeyPair, schema: etree.XMLSchema
) -> None:
    """A sender signature whose digest covers its namespace context still verifies inside our SealedDelivery."""
    foreign = _reference_style(signed, sender)
    assert verify_signed_delivery(foreign, sender=sender.certificate, schema=schema).delivery == DELIVERY
    sealed = build_sealed_delivery(foreign, intermediary, received=RECEIVED, sender=sender.certificate, schema=schema)
    verified = verify_sealed_delivery(sealed, intermediary=intermediary.certificate, sender=sender.certificate)
    assert verified.delivery == DELIVERY
    envelope = etree.Element(f"{{{NS.SOAP11}}}Envelope", nsmap={"soap": NS.SOAP11.value})
    etree.SubElement(envelope, f"{{{NS.SOAP11}}}Body").append(to_deliver_secure(sealed))
    on_the_wire = verify_sealed_delivery(
        etree.tostring(envelope), intermediary=intermediary.certificate, sender=sender.certificate
    )
    assert on_the_wire.delivery == DELIVERY
