"""What the fuzzers start from: a throw-away PKI and valid documents made with the project's own builders.

Everything is made once per process (``functools.cache``) and is deterministic where the fuzzer needs it to be
(ids, times); keys and ciphertexts are fresh per process, which only changes bytes the fuzzers never compare.
"""

from __future__ import annotations

import functools
import gzip
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from cryptography import x509
from lxml import etree

from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.model import (
    AgreementRef,
    CollaborationInfo,
    MessageInfo,
    Party,
    PartyId,
    PartyInfo,
    Property,
    ReferenceEcho,
    Service,
    UserMessage,
)
from accesspoint.core.namespaces import SoapVersion
from accesspoint.core.signals import build_receipt
from accesspoint.envelopes.kvittens import ApplicationResponse, LineResponse, ReasonCode, ResponseCode
from accesspoint.envelopes.minameddelanden import (
    Attachment,
    DeliveryReceipt,
    ReceiptRequest,
    SecureDelivery,
    SecureMessage,
    Sender,
    SupportInfo,
    build_delivery_receipt,
    build_sealed_delivery,
    build_signed_delivery,
)
from accesspoint.envelopes.sbdh import DocumentIdentification, Partner, Sbdh, Scope, ScopeType, build_sbd
from accesspoint.envelopes.xhe import Xhe, XheParty, XhePayload, build_xhe, sdk_scope
from accesspoint.security.keys import KeyPair
from accesspoint.security.outbound import Payload, secure_message
from accesspoint.security.policy import RevocationMode, SecurityPolicy, TrustSettings
from accesspoint.security.receipts import sign_signal
from accesspoint.testing import pki
from smp.documents import render_service_group, render_service_metadata
from smp.identifiers import Identifier
from smp.model import EndpointInfo, Flavour, ProcessInfo, Redirect, ServiceGroup, ServiceMetadata
from smp.signature import sign_document

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class Pki:
    """The parties of the fuzzed exchanges."""

    ca: KeyPair
    sender_rsa: KeyPair  # AS4 1.15: signs
    receiver_rsa: KeyPair  # AS4 1.15: decrypts
    sender_ed25519: KeyPair  # AS4 2.0: signs
    receiver_x25519: KeyPair  # AS4 2.0: decrypts
    receiver_ed25519: KeyPair  # AS4 2.0: signs the receipt
    stranger: KeyPair  # signed by another CA: never trusted
    authority: KeyPair  # signs business envelopes (XHE, SignedDelivery)
    intermediary: KeyPair  # seals Mina meddelanden deliveries
    operator: KeyPair  # signs Mina meddelanden receipts


@functools.cache
def parties() -> Pki:
    """The PKI, made once per process."""
    ca = pki.make_ca("Fuzz CA")
    return Pki(
        ca=ca,
        sender_rsa=pki.issue(ca, "sender-1.15"),
        receiver_rsa=pki.issue(ca, "receiver-1.15"),
        sender_ed25519=pki.issue(ca, "sender-2.0", "ed25519"),
        receiver_x25519=pki.issue(ca, "receiver-2.0", "x25519"),
        receiver_ed25519=pki.issue(ca, "receiver-2.0-sign", "ed25519"),
        stranger=pki.issue(pki.make_ca("Stranger CA"), "stranger"),
        authority=pki.issue(ca, "authority"),
        intermediary=pki.issue(ca, "intermediary"),
        operator=pki.issue(ca, "operator"),
    )


def trust() -> TrustSettings:
    """Trust in the fuzz CA, without revocation lookups (no network in a fuzzer)."""
    return TrustSettings(anchors=(parties().ca.certificate,), revocation=RevocationMode.OFF)


def policy_1_15() -> SecurityPolicy:
    """eDelivery AS4 1.15 trusting the fuzz CA."""
    return SecurityPolicy.edelivery_1_15(trust=trust())


def policy_2_0() -> SecurityPolicy:
    """eDelivery AS4 2.0 trusting the fuzz CA."""
    return SecurityPolicy.edelivery_2_0(trust=trust())


def counter_ids(prefix: str = "id") -> Callable[[], str]:
    """Deterministic wsu:Id values."""
    numbers = iter(range(1, 1_000_000))
    return lambda: f"{prefix}-{next(numbers)}"


def user_message(message_id: str = "fuzz-1@sender.example") -> UserMessage:
    """A four-corner user message (payload_info is filled in by ``secure_message``)."""
    ap = "urn:fdc:peppol.eu:2017:identifiers:ap"
    return UserMessage(
        message_info=MessageInfo(message_id, NOW),
        party_info=PartyInfo(
            Party(
                (PartyId("PSE000001", ap),), "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"
            ),
            Party(
                (PartyId("PSE000002", ap),), "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"
            ),
        ),
        collaboration_info=CollaborationInfo(
            service=Service("urn:fdc:peppol.eu:2017:poacc:billing:01:1.0", "cenbii-procid-ubl"),
            action="busdox-docid-qns::urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice##1.0",
            conversation_id="conversation-1",
            agreement_ref=AgreementRef("urn:fdc:peppol.eu:2017:agreements:tia:ap_provider", pmode="pm-1"),
        ),
        message_properties=(
            Property("originalSender", "0007:5567212345", "iso6523-actorid-upis"),
            Property("finalRecipient", "0007:5566778899", "iso6523-actorid-upis"),
        ),
    )


# The payloads: an XML document (canonicalised for its digest) and a binary one, both compressed on the way.
PAYLOADS: tuple[tuple[str, str, bytes], ...] = (
    ("invoice@sender.example", "application/xml", b'<Invoice xmlns="urn:example:invoice"><ID>42</ID></Invoice>'),
    ("scan@sender.example", "application/pdf", b"%PDF-1.7\n" + bytes(range(256))),
)


def _payloads() -> list[Payload]:
    return [Payload(cid, mime, _opener(data)) for cid, mime, data in PAYLOADS]


def _opener(data: bytes) -> Callable[[], Iterable[bytes]]:
    return lambda: (data,)


@dataclass(frozen=True)
class WireMessage:
    """A secured message as it goes on the wire, and what it says."""

    content_type: str
    body: bytes
    envelope: bytes
    user_message: UserMessage
    references: tuple[ReferenceEcho, ...]


@functools.cache
def as4_message(profile: str) -> WireMessage:
    """A signed and encrypted user message with two attachments (profile ``1.15`` or ``2.0``)."""
    keys = parties()
    if profile == "1.15":
        policy, signer, recipient = policy_1_15(), keys.sender_rsa, keys.receiver_rsa
    else:
        policy, signer, recipient = policy_2_0(), keys.sender_ed25519, keys.receiver_x25519
    secured = secure_message(
        user_message(),
        _payloads(),
        policy,
        signing_key=signer,
        recipient_certificate=recipient.certificate,
        new_id=counter_ids(),
    )
    body = secured.packed.to_bytes()
    return WireMessage(secured.packed.content_type, body, secured.envelope, secured.user_message, secured.references)


@functools.cache
def signed_receipt(profile: str) -> bytes:
    """The receiver's signed receipt for ``as4_message(profile)`` (bare SOAP 1.2)."""
    keys = parties()
    message = as4_message(profile)
    signal = build_receipt(message.user_message, message.references, message_id="receipt-1@receiver.example", now=NOW)
    if profile == "1.15":
        return sign_signal(signal, keys.receiver_rsa, policy_1_15(), new_id=counter_ids("r"))
    return sign_signal(signal, keys.receiver_ed25519, policy_2_0(), new_id=counter_ids("r"))


def receipt_signer(profile: str) -> x509.Certificate:
    """The certificate ``signed_receipt(profile)`` is signed with."""
    keys = parties()
    return (keys.receiver_rsa if profile == "1.15" else keys.receiver_ed25519).certificate


def unsigned_envelope(soap_version: SoapVersion = SoapVersion.V12) -> bytes:
    """The user message as a bare, unsigned envelope."""
    return serialize(build_envelope(user_message(), soap_version=soap_version))


# ------------------------------------------------------------------------------------- business envelopes


def secure_delivery(*, receipt: bool = True) -> SecureDelivery:
    """A Mina meddelanden delivery of one letter with an attachment."""
    return SecureDelivery(
        sender=Sender("162021005448", "Skatteverket"),
        recipient="197001011234",
        messages=(
            SecureMessage(
                id="5f0c6a9e-2b1d-4f7a-9a8e-1c2d3e4f5a6b",
                subject="Beslut om skatt",
                support=SupportInfo("Ring oss"),
                content_type="text/plain",
                body="Hej! Ditt beslut är bifogat.".encode(),
                attachments=(Attachment("application/pdf", b"%PDF-1.7 beslut", "beslut.pdf"),),
                receipt_request=ReceiptRequest.SIGNED if receipt else None,
            ),
        ),
    )


@functools.cache
def signed_delivery() -> bytes:
    """The sender's SignedDelivery."""
    return build_signed_delivery(secure_delivery(), parties().authority)


@functools.cache
def sealed_delivery() -> bytes:
    """The intermediary's SealedDelivery around ``signed_delivery()``."""
    return build_sealed_delivery(signed_delivery(), parties().intermediary, received=date(2026, 11, 30))


def delivery_receipt_model() -> DeliveryReceipt:
    """The operator's receipt for the letter."""
    return DeliveryReceipt("5f0c6a9e-2b1d-4f7a-9a8e-1c2d3e4f5a6b", "162021005448", "197001011234", date(2026, 11, 30))


@functools.cache
def delivery_receipt() -> bytes:
    """The operator's signed Receipt."""
    return build_delivery_receipt(delivery_receipt_model(), parties().operator)


SDK_DOCUMENT = "urn:riv:infrastructure:messaging:MessageWithAttachments:3::messagePayload##3.0::tm-base-ext-sigenc"


def xhe_model() -> Xhe:
    """An SDK XHE from a municipality to an organisation."""
    return Xhe(
        id="8d7f6e5d-4c3b-2a19-8877-665544332211",
        created=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        scope=sdk_scope(SDK_DOCUMENT, "urn:fdc:digg.se:edelivery:federation:test"),
        from_party=XheParty("0203:kommun.example.se"),
        to_party=XheParty("0007:5566778899"),
        payload=XhePayload(
            "Q{urn:riv:infrastructure:messaging:MessageWithAttachments:3}messagePayload",
            "application/xml",
            b'<messagePayload xmlns="urn:riv:infrastructure:messaging:MessageWithAttachments:3">hej</messagePayload>',
        ),
    )


@functools.cache
def signed_xhe() -> bytes:
    """``xhe_model()`` signed by the authority."""
    return build_xhe(xhe_model(), keys=parties().authority)


def sbdh_model() -> Sbdh:
    """A Peppol-style SBDH from a Norwegian agency."""
    return Sbdh(
        sender=(Partner("0192:810418052"),),
        receiver=(Partner("0007:5566778899"),),
        document=DocumentIdentification(
            standard="urn:example:letter",
            type_version="1.0",
            instance_identifier="3e2d1c0b-aaaa-bbbb-cccc-ddddeeeeffff",
            type="Letter",
            created=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        ),
        scopes=(Scope(ScopeType.DOCUMENTID, "urn:example:letter::Letter##1.0", "busdox-docid-qns"),),
    )


def sbd() -> bytes:
    """An SBD carrying a small letter."""
    return build_sbd(sbdh_model(), b'<Letter xmlns="urn:example:letter">Hei!</Letter>')


def application_response() -> ApplicationResponse:
    """A rejecting Meddelandekvittens with one line."""
    return ApplicationResponse(
        id="b1c2d3e4-0000-1111-2222-333344445555",
        issue_date=date(2026, 11, 30),
        issue_time=datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timetz(),
        sender="0007:5566778899",
        receiver="0203:kommun.example.se",
        document_reference="8d7f6e5d-4c3b-2a19-8877-665544332211",
        code=ResponseCode.REJECTED,
        lines=(LineResponse(ReasonCode.SIGNATURE, "the signature does not verify"),),
    )


# ---------------------------------------------------------------------------------------------------- SMP


def smp_metadata(flavour: Flavour) -> ServiceMetadata:
    """Service metadata with one AS4 endpoint (SMP 1 flavours) or endpoint plus process (SMP 2)."""
    return ServiceMetadata(
        participant=Identifier("iso6523-actorid-upis", "0007:5566778899"),
        document=Identifier("busdox-docid-qns", "urn:example:letter::Letter##1.0"),
        processes=(
            ProcessInfo(
                Identifier("cenbii-procid-ubl", "urn:example:process"),
                (
                    EndpointInfo(
                        transport_profile="peppol-transport-as4-v2_0"
                        if flavour is Flavour.PEPPOL
                        else "bdxr-transport-ebms3-as4-v1p0",
                        url="https://ap.example.se/as4",
                        certificate=_der(parties().receiver_rsa.certificate),
                        activation=datetime(2026, 1, 1, tzinfo=UTC),
                        expiration=datetime(2030, 1, 1, tzinfo=UTC),
                        description="test endpoint",
                        technical_contact="mailto:ops@example.se",
                    ),
                ),
            ),
        ),
    )


def _der(certificate: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return certificate.public_bytes(serialization.Encoding.DER)


@functools.cache
def signed_smp_metadata(flavour: Flavour) -> bytes:
    """``smp_metadata(flavour)`` rendered and signed as that flavour expects."""
    root = render_service_metadata(smp_metadata(flavour), flavour)
    return etree.tostring(sign_document(root, parties().receiver_rsa, flavour))


def smp_redirect(flavour: Flavour) -> bytes:
    """An unsigned Redirect document."""
    metadata = ServiceMetadata(
        Identifier("iso6523-actorid-upis", "0007:5566778899"),
        Identifier("busdox-docid-qns", "urn:example:letter::Letter##1.0"),
        redirect=Redirect("https://smp2.example.se/x", "CN=SMP", (_der(parties().ca.certificate),)),
    )
    return etree.tostring(render_service_metadata(metadata, flavour))


def smp_service_group(flavour: Flavour) -> bytes:
    """An unsigned ServiceGroup naming one document type."""
    group = ServiceGroup(
        Identifier("iso6523-actorid-upis", "0007:5566778899"),
        (Identifier("busdox-docid-qns", "urn:example:letter::Letter##1.0"),),
    )
    return etree.tostring(render_service_group(group, flavour, "https://smp.example.se"))


def gzip_bytes(data: bytes) -> bytes:
    """gzip without a timestamp (as AS4 compresses)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as handle:
        handle.write(data)
    return out.getvalue()


# A small Domibus P-Mode: two parties, one one-way push process (the shape of Domibus' own samples).
DOMIBUS_MINIMAL = b"""<db:configuration xmlns:db="http://domibus.eu/configuration" party="blue_gw">
<mpcs>
<mpc name="defaultMpc"
 qualifiedName="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/defaultMPC"
 enabled="true" default="true" retention_downloaded="0" retention_undownloaded="14400"/>
</mpcs>
<businessProcesses>
<roles>
<role name="defaultInitiatorRole"
 value="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"/>
<role name="defaultResponderRole"
 value="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"/>
</roles>
<parties><partyIdTypes>
<partyIdType name="partyTypeUrn" value="urn:oasis:names:tc:ebcore:partyid-type:unregistered"/>
</partyIdTypes>
<party name="red_gw" endpoint="http://localhost:8180/domibus/services/msh">
<identifier partyId="domibus-red" partyIdType="partyTypeUrn"/></party>
<party name="blue_gw" endpoint="http://localhost:8080/domibus/services/msh">
<identifier partyId="domibus-blue" partyIdType="partyTypeUrn"/></party></parties>
<meps>
<mep name="oneway" value="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/oneWay"/>
<binding name="push" value="http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/push"/>
</meps>
<properties>
<property name="originalSenderProperty" key="originalSender" datatype="string" required="true"/>
<propertySet name="eDeliveryPropertySet"><propertyRef property="originalSenderProperty"/>
</propertySet></properties>
<payloadProfiles/>
<securities>
<security name="eDeliveryAS4Policy" policy="eDeliveryAS4Policy.xml" signatureMethod="RSA_SHA256"/>
</securities>
<errorHandlings>
<errorHandling name="demoErrorHandling" errorAsResponse="true" businessErrorNotifyProducer="true"
 businessErrorNotifyConsumer="true" deliveryFailureNotifyProducer="true"/>
</errorHandlings>
<agreements><agreement name="agreement1" value="A1" type="T1"/></agreements>
<services><service name="testService1" value="bdx:noprocess" type="tc1"/></services>
<actions><action name="tc1Action" value="TC1Leg1"/></actions>
<as4><receptionAwareness name="receptionAwareness" retry="12;4;CONSTANT" duplicateDetection="true"/>
<reliability name="AS4Reliability" nonRepudiation="true" replyPattern="response"/></as4>
<legConfigurations>
<legConfiguration name="pushTestcase1tc1Action" service="testService1" action="tc1Action"
 defaultMpc="defaultMpc" reliability="AS4Reliability" security="eDeliveryAS4Policy"
 receptionAwareness="receptionAwareness" propertySet="eDeliveryPropertySet"
 errorHandling="demoErrorHandling" compressPayloads="true"/>
</legConfigurations>
<process name="tc1Process" agreement="agreement1" mep="oneway" binding="push"
 initiatorRole="defaultInitiatorRole" responderRole="defaultResponderRole">
<initiatorParties><initiatorParty name="blue_gw"/><initiatorParty name="red_gw"/></initiatorParties>
<responderParties><responderParty name="blue_gw"/><responderParty name="red_gw"/></responderParties>
<legs><leg name="pushTestcase1tc1Action"/></legs></process>
</businessProcesses></db:configuration>"""
