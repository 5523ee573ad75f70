"""Helpers for the operator tests: a throw-away PKI, deliveries in each network's format, key files on disk.

Roles: the sending authority signs SignedDeliveries and XHEs with a certificate from "Senders CA"; the sender's
access point (``ap-sweden-sign`` from the example PKI) seals as the intermediary; the operator signs receipts.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from accesspoint.envelopes.minameddelanden import (
    Attachment,
    ReceiptRequest,
    SecureDelivery,
    SecureMessage,
    Sender,
    SupportInfo,
    build_sealed_delivery,
    build_signed_delivery,
)
from accesspoint.envelopes.sbdh import DocumentIdentification, Partner, Sbdh, Scope, ScopeType, build_sbd
from accesspoint.envelopes.xhe import Xhe, XheParty, XhePayload, build_xhe, sdk_scope
from accesspoint.security.keys import KeyPair, load_key_pair
from accesspoint.testing import pki
from operators.deliveries import DeliveryTrust
from tests.test_msh import CERTS

SENDERS_CA = pki.make_ca("Senders CA")
AUTHORITY = pki.issue(SENDERS_CA, "Skatteverket e-tjanst")
OPERATOR = pki.issue(pki.make_ca("Operators CA"), "Test Mailbox AB")
INTERMEDIARY = load_key_pair(CERTS / "ap-sweden-sign.key.pem", None, certificate=CERTS / "ap-sweden-sign.pem")
STRANGER = pki.issue(pki.make_ca("Stranger CA"), "Not a sender")

OPERATOR_ID = "165568402266"
PERSON = "197001011234"
COMPANY = "165566778899"  # 16 + organisationsnummer 5566778899
SDK_ORG = "0007:5566778899"
FEDERATION = "urn:fdc:digg.se:edelivery:federation:test"
SDK_DOCUMENT = "urn:riv:infrastructure:messaging:MessageWithAttachments:3::messagePayload##3.0::tm-base-ext-sigenc"

TRUST = DeliveryTrust(intermediaries=(INTERMEDIARY.certificate,), sender_anchors=(SENDERS_CA.certificate,))


def secure_delivery(recipient: str = PERSON, *, receipt: bool = True, message_id: str | None = None) -> SecureDelivery:
    """A delivery of one letter with an attachment, asking for a signed receipt unless told not to."""
    return SecureDelivery(
        sender=Sender("162021005448", "Skatteverket"),
        recipient=recipient,
        messages=(
            SecureMessage(
                id=message_id or str(uuid.uuid4()),
                subject="Beslut om skatt",
                support=SupportInfo("Ring oss"),
                content_type="text/plain",
                body="Hej! Ditt beslut är bifogat.".encode(),
                attachments=(Attachment("application/pdf", b"%PDF-1.7 beslut", "beslut.pdf"),),
                receipt_request=ReceiptRequest.SIGNED if receipt else None,
            ),
        ),
    )


def sealed(delivery: SecureDelivery, *, sender: KeyPair = AUTHORITY, intermediary: KeyPair = INTERMEDIARY) -> bytes:
    """The SealedDelivery: signed by the sender, sealed by the intermediary."""
    signed = build_signed_delivery(delivery, sender)
    return build_sealed_delivery(signed, intermediary, received=date(2026, 11, 30))


def xhe(to: str = SDK_ORG, *, keys: KeyPair | None = AUTHORITY, xhe_id: str | None = None) -> bytes:
    """An SDK XHE from a municipality to ``to``, signed by the sending authority."""
    envelope = Xhe(
        id=xhe_id or str(uuid.uuid4()),
        created=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        scope=sdk_scope(SDK_DOCUMENT, FEDERATION),
        from_party=XheParty("0203:kommun.example.se"),
        to_party=XheParty(to),
        payload=XhePayload(
            "Q{urn:riv:infrastructure:messaging:MessageWithAttachments:3}messagePayload",
            "application/xml",
            b'<messagePayload xmlns="urn:riv:infrastructure:messaging:MessageWithAttachments:3">hej</messagePayload>',
        ),
    )
    return build_xhe(envelope, keys=keys)


def sbd(receiver: str = "0007:5566778899") -> bytes:
    """A Peppol-style SBD from a Norwegian agency carrying a small document."""
    header = Sbdh(
        sender=(Partner("0192:810418052"),),
        receiver=(Partner(receiver),),
        document=DocumentIdentification(
            standard="urn:example:letter",
            type_version="1.0",
            instance_identifier=str(uuid.uuid4()),
            type="Letter",
            created=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        ),
        scopes=(Scope(ScopeType.DOCUMENTID, "urn:example:letter::Letter##1.0", "busdox-docid-qns"),),
    )
    return build_sbd(header, b'<Letter xmlns="urn:example:letter">Hei!</Letter>')


def write_key_pair(keys: KeyPair, folder: Path, name: str) -> tuple[Path, Path]:
    """The key and certificate as PEM files (key, certificate)."""
    key = folder / f"{name}.key.pem"
    certificate = folder / f"{name}.pem"
    key.write_bytes(
        keys.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    certificate.write_bytes(keys.certificate.public_bytes(serialization.Encoding.PEM))
    return key, certificate


def write_certificate(keys: KeyPair, folder: Path, name: str) -> Path:
    """The certificate alone as a PEM file."""
    path = folder / f"{name}.pem"
    path.write_bytes(keys.certificate.public_bytes(serialization.Encoding.PEM))
    return path
