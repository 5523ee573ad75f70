"""What an operator signs after delivery (mailbox events, read receipts, the time-stamped delgivningskvitto) and a
holder's answer in the contracts' reply-delivery form."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.minameddelanden import (
    Attachment,
    ReceiptRequest,
    Sender,
    verify_delivery_receipt,
)
from accesspoint.envelopes.reply import ReplyDelivery, ReplyMessage, build_sealed_reply, verify_sealed_reply
from accesspoint.envelopes.schemas import load_minameddelanden_schema, load_reply_schema
from accesspoint.security import timestamp
from accesspoint.security.timestamp import TimestampError
from accesspoint.security.tsa import TimeStampAuthority
from accesspoint.testing import pki
from accesspoint.testing.tsa import tsa_certificate
from operators.evidence import (
    Acknowledgement,
    EventKind,
    Kvitto,
    MailboxEvent,
    ServedPart,
    acknowledgement_text,
    build_event,
    build_kvitto,
    kvitto_sha256,
    read_receipt,
    verify_event,
    verify_kvitto,
)
from operators.payments import (
    PaymentConfirmation,
    PaymentOrder,
    PaymentRefused,
    ReferenceProvider,
    build_confirmation,
    invoice_state,
    verify_confirmation,
)
from tests.conftest import interop_path
from tests.test_envelopes_payment import BANKGIRO

OPERATOR = pki.issue(pki.make_ca("Operators"), "Brevladan Ett AB")
OTHER = pki.issue(pki.make_ca("Others"), "Not the operator")
TSA_CA = pki.make_ca("TSA CA")
TSA = tsa_certificate(TSA_CA)
AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
PARTS = (ServedPart("body@agency", 1024, hashlib.sha256(b"x").hexdigest()),)
KVITTO = Kvitto(
    message_id="fwd-letter-1@agency",
    business_id="letter-1",
    sender="162021005448",
    subject="Beslut",
    recipient="197802022389",
    operator="165568402266",
    served_at=AT,
    deadline=AT + timedelta(days=14),
    acknowledgement=Acknowledgement("197802022389", "Alice", "ab" * 32, "2026-12-07T12:00:00+00:00/n", AT, "cd" * 32),
    parts=PARTS,
)


def _stamped(data: bytes, moment: datetime = AT) -> bytes:
    query = timestamp.request(kvitto_sha256(data))
    return timestamp.token_of(TimeStampAuthority(TSA, clock=lambda: moment).respond(query.der))


def test_mailbox_event_verifies_only_with_the_operators_certificate() -> None:
    """A signed ``opened`` event reads back; with another certificate it is refused."""
    event = MailboxEvent(EventKind.OPENED, "fwd-1@x", "165568402266", AT, "letter-1", "197802022389", (("a", "b"),))
    data = build_event(event, OPERATOR)
    assert verify_event(data, OPERATOR.certificate) == event
    with pytest.raises(EnvelopeError):
        verify_event(data, OTHER.certificate)


def test_read_receipt_is_the_contracts_receipt_signed_for_signed_and_bare_for_simple() -> None:
    """SIGNED gives a signed Receipt that verifies; SIMPLE a schema-valid Receipt without a signature."""
    schema = load_minameddelanden_schema(interop_path("minameddelanden/contracts"))
    signed = read_receipt(
        ReceiptRequest.SIGNED, message_id="m-1", sender="162021005448", holder="197802022389",
        opened=AT.date(), keys=OPERATOR,
    )  # fmt: skip
    verified = verify_delivery_receipt(signed, operator=OPERATOR.certificate, schema=schema)
    assert verified.receipt.acknowledged == AT.date() and verified.receipt.receipt_sender == "197802022389"
    simple = read_receipt(
        ReceiptRequest.SIMPLE, message_id="m-1", sender="162021005448", holder="197802022389",
        opened=AT.date(), keys=OPERATOR,
    )  # fmt: skip
    root = etree.fromstring(simple)
    schema.assertValid(root)
    assert root.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is None


def test_kvitto_with_its_time_stamp_verifies_and_says_what_was_served() -> None:
    """The signed kvitto and the token over its SHA-256 verify; the evidence names the parts and the stamp."""
    data = build_kvitto(KVITTO, OPERATOR)
    verified = verify_kvitto(data, _stamped(data), operators=[OTHER.certificate, OPERATOR.certificate],
                             tsa_anchors=[TSA_CA.certificate])  # fmt: skip
    assert verified.kvitto == KVITTO and verified.signer == OPERATOR.certificate
    evidence = verified.to_json()
    assert evidence["kvitto_sha256"] == hashlib.sha256(data).hexdigest()
    assert evidence["parts"] == [{"content_id": "body@agency", "size": 1024, "sha256": PARTS[0].sha256}]


def test_kvitto_forgeries_are_refused() -> None:
    """Another signer, a changed kvitto, a token over other bytes, an older token or an untrusted authority."""
    data = build_kvitto(KVITTO, OPERATOR)
    token = _stamped(data)
    anchors = [TSA_CA.certificate]
    with pytest.raises(EnvelopeError, match="no operator"):
        verify_kvitto(build_kvitto(KVITTO, OTHER), token, operators=[OPERATOR.certificate], tsa_anchors=anchors)
    changed = data.replace(b"197802022389", b"197802022390")
    with pytest.raises(EnvelopeError, match="no operator"):
        verify_kvitto(changed, token, operators=[OPERATOR.certificate], tsa_anchors=anchors)
    with pytest.raises(TimestampError, match="imprint"):
        verify_kvitto(data, _stamped(data + b" "), operators=[OPERATOR.certificate], tsa_anchors=anchors)
    with pytest.raises(TimestampError, match="older"):
        verify_kvitto(data, _stamped(data, AT - timedelta(hours=1)), operators=[OPERATOR.certificate],
                      tsa_anchors=anchors)  # fmt: skip
    with pytest.raises(TimestampError, match="not trusted"):
        verify_kvitto(data, token, operators=[OPERATOR.certificate], tsa_anchors=[OTHER.certificate])


def test_acknowledgement_text_names_the_letter_and_every_digest() -> None:
    """The text the holder signs binds the letter's id and each part's SHA-256."""
    text = acknowledgement_text(business_id="letter-1", subject="Beslut", sender="Skatteverket", parts=PARTS)
    assert "letter-1" in text and PARTS[0].sha256 in text


def test_sealed_reply_is_schema_valid_and_verifies_with_the_operator_only() -> None:
    """The contracts' SealedReplyDelivery: valid against Reply.xsd, correlated to the letter, tamper-evident."""
    schema = load_reply_schema(interop_path("minameddelanden/contracts"))
    reply = ReplyDelivery(
        Sender("197802022389", "Alice Andersson"),
        "162021005448",
        ReplyMessage("reply-1", "Sv: Beslut", "text/plain", "Tack, jag överklagar.".encode(),
                     (Attachment("application/pdf", b"%PDF-1.7 bilaga", "overklagan.pdf"),)),
        AT.date(),
        reference="Dnr 2026/4711",
        correlation_id="letter-1",
    )  # fmt: skip
    data = build_sealed_reply(reply, OPERATOR, received=date(2026, 12, 7), schema=schema)
    verified = verify_sealed_reply(data, operator=OPERATOR.certificate, schema=schema)
    assert verified.reply == reply and verified.received == date(2026, 12, 7)
    with pytest.raises(EnvelopeError):
        verify_sealed_reply(data, operator=OTHER.certificate)
    with pytest.raises(EnvelopeError):
        verify_sealed_reply(data.replace(b"Dnr 2026/4711", b"Dnr 2026/4712"), operator=OPERATOR.certificate)


async def test_reference_provider_pays_valid_orders_and_the_confirmation_verifies() -> None:
    """The reference provider (no bank) accepts a valid order and says so; the signed confirmation reads back."""
    provider = ReferenceProvider()
    order = PaymentOrder("pay-1", BANKGIRO, "197802022389", "fwd-invoice-1@agency", "invoice-1")
    receipt = await provider.pay(order, now=AT)
    assert receipt.provider == "reference" and "no money moved" in receipt.note
    confirmation = PaymentConfirmation(
        "pay-1", order.invoice_message_id, "invoice-1", order.payer, "165568402266", BANKGIRO,
        receipt.provider, receipt.reference, AT, receipt.note,
    )  # fmt: skip
    data = build_confirmation(confirmation, OPERATOR)
    assert verify_confirmation(data, OPERATOR.certificate) == confirmation
    with pytest.raises(EnvelopeError):
        verify_confirmation(data, OTHER.certificate)
    with pytest.raises(PaymentRefused, match="BT-83"):
        await provider.pay(dataclasses.replace(order, payment=dataclasses.replace(BANKGIRO, reference="12")), now=AT)


def test_invoice_state_follows_payment_and_due_date() -> None:
    """Unpaid until the due date, overdue after it, paid once paid."""
    due = date(2027, 1, 31)
    assert invoice_state(False, due, due) == "unpaid"
    assert invoice_state(False, due, due + timedelta(days=1)) == "overdue"
    assert invoice_state(True, due, due + timedelta(days=1)) == "paid"


def test_accesspoint_verify_checks_a_kvitto_offline_as_openssl_does(tmp_path: Path) -> None:
    """``accesspoint verify KVITTO --timestamp TST --trust …`` accepts the evidence (exit 0, what was served) and
    ``openssl ts -verify`` accepts the same token over the same bytes; a changed kvitto is refused by both."""
    data = build_kvitto(KVITTO, OPERATOR)
    (tmp_path / "kvitto.xml").write_bytes(data)
    (tmp_path / "kvitto.tst").write_bytes(_stamped(data))
    (tmp_path / "operator.pem").write_bytes(OPERATOR.certificate.public_bytes(Encoding.PEM))
    (tmp_path / "tsa-ca.pem").write_bytes(TSA_CA.certificate.public_bytes(Encoding.PEM))

    def verify() -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "accesspoint", "verify", "kvitto.xml", "--timestamp", "kvitto.tst",
             "--trust", "operator.pem", "tsa-ca.pem", "--no-revocation"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return done.returncode, json.loads(done.stdout)

    def openssl() -> int:
        done = subprocess.run(
            ["openssl", "ts", "-verify", "-data", "kvitto.xml", "-in", "kvitto.tst", "-token_in",
             "-CAfile", "tsa-ca.pem"],
            cwd=tmp_path, capture_output=True, check=False,
        )  # fmt: skip
        return done.returncode

    code, report = verify()
    assert code == 0 and report["kind"] == "delgivningskvitto" and report["recipient"] == KVITTO.recipient
    assert report["kvitto_sha256"] == hashlib.sha256(data).hexdigest()
    assert report["timestamp"]["time"] == AT.isoformat() and report["parts"][0]["sha256"] == PARTS[0].sha256
    if shutil.which("openssl"):
        assert openssl() == 0
    (tmp_path / "kvitto.xml").write_bytes(data.replace(b"Beslut", b"Beslu7"))
    code, report = verify()
    assert code == 1 and not report["ok"]
    if shutil.which("openssl"):
        assert openssl() != 0
