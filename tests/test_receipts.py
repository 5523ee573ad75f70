"""Signed receipts: accepted only from the expected partner, for the message sent, echoing what was signed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cryptography import x509

from accesspoint.cli import load_message
from accesspoint.core.envelope import build_envelope, parse_envelope, serialize
from accesspoint.core.errors import EbmsError
from accesspoint.core.message import read_message
from accesspoint.core.model import ReferenceEcho, UserMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.core.signals import build_receipt, signed_references
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import SecurityPolicy
from accesspoint.security.receipts import sign_signal, verify_receipt
from accesspoint.security.signing import AttachmentSource, sign_envelope, verify_signature
from accesspoint.testing.pki import issue, make_ca
from tests.conftest import interop_path
from tests.test_signing import _ids, _user_message

NOW = datetime(2026, 11, 29, 11, 0, tzinfo=UTC)
POLICY = SecurityPolicy.edelivery_1_15()


@pytest.fixture(scope="module")
def parties() -> tuple[KeyPair, KeyPair, KeyPair]:
    """Sender, receiver and an impostor, all under one CA."""
    ca = make_ca()
    return issue(ca, "PTE000001"), issue(ca, "PTE000002"), issue(ca, "PTE000666")


def _exchange(sender: KeyPair, receiver: KeyPair) -> tuple[UserMessage, tuple[ReferenceEcho, ...], bytes]:
    """The sender signs a message; the receiver verifies it and signs the receipt echoing verified references."""
    message = _user_message(["doc@test"])
    envelope = build_envelope(message)
    source = AttachmentSource("doc@test", "application/gzip", lambda: [b"\x1f\x8b compressed bytes"])
    sent = sign_envelope(envelope, [source], sender, POLICY, new_id=_ids())
    verified = verify_signature(parse_envelope(serialize(envelope)), {"doc@test": source}, POLICY)
    receipt = build_receipt(message, verified.echoes, message_id="receipt-1@receiver", now=NOW)
    return message, sent, sign_signal(receipt, receiver, POLICY, new_id=_ids())


def _code(call: Callable[[], object]) -> str:
    with pytest.raises(EbmsError) as caught:
        call()
    return caught.value.code


def test_receipt_from_the_partner_for_our_message_is_accepted(parties: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A receipt signed by the partner, referring to our message and echoing our references, proves delivery."""
    sender, receiver, _ = parties
    message, sent, receipt = _exchange(sender, receiver)
    result = verify_receipt(
        parse_envelope(receipt),
        POLICY,
        sent_message_id=message.message_id,
        sent_references=sent,
        partner_certificates=[receiver.certificate],
    )
    assert set(result.receipt.references) == set(sent)
    assert result.signature is not None and result.signature.signer.certificate == receiver.certificate


@pytest.mark.parametrize("version", list(SoapVersion))
def test_a_receipt_is_signed_in_the_soap_version_asked_for_and_verifies(
    parties: tuple[KeyPair, KeyPair, KeyPair], version: SoapVersion
) -> None:
    """A receipt to a SOAP 1.1 peer is a signed SOAP 1.1 envelope (and 1.2 for 1.2), and it verifies as such."""
    receiver = parties[1]
    receipt = build_receipt(_user_message(["doc@test"]), (), message_id="receipt-2@receiver", now=NOW)
    parsed = parse_envelope(sign_signal(receipt, receiver, POLICY, soap_version=version, new_id=_ids()))
    assert parsed.soap_version is version
    assert verify_signature(parsed, {}, POLICY).signer.certificate == receiver.certificate


def test_receipt_signed_by_someone_else_is_invalid(parties: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A well-formed receipt signed by another certificate than the partner's is EBMS:0302."""
    sender, receiver, impostor = parties
    message, sent, receipt = _exchange(sender, impostor)
    call = lambda: verify_receipt(  # noqa: E731
        parse_envelope(receipt),
        POLICY,
        sent_message_id=message.message_id,
        sent_references=sent,
        partner_certificates=[receiver.certificate],
    )
    assert _code(call) == "EBMS:0302"


def test_receipt_for_another_message_is_invalid(parties: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A receipt whose RefToMessageId names another message is EBMS:0302."""
    sender, receiver, _ = parties
    _, sent, receipt = _exchange(sender, receiver)
    call = lambda: verify_receipt(  # noqa: E731
        parse_envelope(receipt),
        POLICY,
        sent_message_id="other@sender",
        sent_references=sent,
        partner_certificates=[receiver.certificate],
    )
    assert _code(call) == "EBMS:0302"


def test_receipt_echoing_other_references_is_invalid(parties: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A receipt whose NonRepudiationInformation differs from what we signed (one digest) is EBMS:0302."""
    sender, receiver, _ = parties
    message, sent, receipt = _exchange(sender, receiver)
    altered = (ReferenceEcho(sent[0].uri, sent[0].digest_method, "AAAA", sent[0].transforms), *sent[1:])
    call = lambda: verify_receipt(  # noqa: E731
        parse_envelope(receipt),
        POLICY,
        sent_message_id=message.message_id,
        sent_references=altered,
        partner_certificates=[receiver.certificate],
    )
    assert _code(call) == "EBMS:0302"


def test_unsigned_receipt_is_invalid_when_signed_receipts_are_required(
    parties: tuple[KeyPair, KeyPair, KeyPair],
) -> None:
    """An unsigned receipt is EBMS:0302 under the default policy, and accepted when the policy allows it."""
    sender, receiver, _ = parties
    message, _sent, _ = _exchange(sender, receiver)
    unsigned = serialize(build_envelope(build_receipt(message, (), message_id="r-2@receiver", now=NOW)))
    call = lambda: verify_receipt(  # noqa: E731
        parse_envelope(unsigned),
        POLICY,
        sent_message_id=message.message_id,
        sent_references=(),
        partner_certificates=[receiver.certificate],
    )
    assert _code(call) == "EBMS:0302"
    lenient = SecurityPolicy.edelivery_1_15(require_signed_receipts=False)
    result = verify_receipt(
        parse_envelope(unsigned),
        lenient,
        sent_message_id=message.message_id,
        sent_references=(),
        partner_certificates=[receiver.certificate],
    )
    assert result.signature is None and result.receipt.user_message == message


def test_tampered_receipt_keeps_failed_authentication(parties: tuple[KeyPair, KeyPair, KeyPair]) -> None:
    """A receipt altered after signing is refused with EBMS:0101 (the signature itself fails)."""
    sender, receiver, _ = parties
    message, sent, receipt = _exchange(sender, receiver)
    forged = receipt.replace(b"receipt-1@receiver", b"receipt-9@receiver")
    call = lambda: verify_receipt(  # noqa: E731
        parse_envelope(forged),
        POLICY,
        sent_message_id=message.message_id,
        sent_references=sent,
        partner_certificates=[receiver.certificate],
    )
    assert _code(call) == "EBMS:0101"


@pytest.mark.parametrize("name", ["as4", "peppol-py"])
def test_receipts_recorded_from_the_as4_peer_prove_delivery_of_their_messages(name: str) -> None:
    """as4's recorded receipts verify against its receiver certificate and echo the sent message's SignedInfo."""
    content_type, body = load_message(str(interop_path(f"python-peers/{name}.usermessage.mime")), None)
    sent = read_message(content_type, body).parsed
    receipt_type, receipt_body = load_message(str(interop_path(f"python-peers/{name}.receipt-by-as4.xml")), None)
    receipt = read_message(receipt_type, receipt_body).parsed
    partner = x509.load_pem_x509_certificate(interop_path("python-peers/pki/receiver.cert.pem").read_bytes())
    result = verify_receipt(
        receipt,
        POLICY,
        sent_message_id=sent.header.message_id,
        sent_references=signed_references(sent),
        partner_certificates=[partner],
    )
    assert len(result.receipt.references) == 3
