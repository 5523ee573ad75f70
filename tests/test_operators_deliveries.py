"""The operator's checks and answers without sockets: each network's delivery, refusals, receipts the sender checks."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from accesspoint.envelopes.kvittens import ReasonCode, parse_application_response
from accesspoint.envelopes.minameddelanden import build_sealed_delivery, build_signed_delivery
from accesspoint.envelopes.schemas import load_minameddelanden_schema, load_xhe_schema
from accesspoint.envelopes.xhe import parse_xhe
from operators.deliveries import (
    CheckedDelivery,
    Network,
    Refusal,
    check_delivery,
    mailbox_key,
    payload_sha256,
    unknown_recipient,
)
from operators.receipts import ReceiptMismatch, Status, build_answer, check_end_to_end
from tests.conftest import interop_path
from tests.test_operators_support import (
    AUTHORITY,
    COMPANY,
    INTERMEDIARY,
    OPERATOR,
    OPERATOR_ID,
    PERSON,
    STRANGER,
    TRUST,
    sbd,
    sealed,
    secure_delivery,
    xhe,
)

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)


def _answer(outcome: CheckedDelivery | Refusal, payload: bytes, message_id: str = "m1@se") -> dict[str, bytes]:
    parts = build_answer(
        outcome, message_id=message_id, payloads=[("letter@se", payload)], operator=OPERATOR_ID, keys=OPERATOR, at=NOW
    )
    return {p.content_id: p.data for p in parts}


def test_sealed_delivery_is_verified_and_answered_with_a_signed_receipt_the_sender_accepts() -> None:
    """Seal and sender signature verify; the answer carries the signed Receipt and a notification quoting the digest."""
    payload = sealed(secure_delivery())
    delivery = check_delivery(payload, TRUST, at=NOW)
    assert (delivery.network, delivery.recipient, delivery.sender) == (Network.MINA_MEDDELANDEN, PERSON, "162021005448")
    assert delivery.sender_certificate == AUTHORITY.certificate
    assert delivery.seal_certificate == INTERMEDIARY.certificate
    assert delivery.items[0].attachments[0].filename == "beslut.pdf"
    reply = _answer(delivery, payload)
    assert sorted(reply) == [f"notification@{OPERATOR_ID}", f"receipt-1@{OPERATOR_ID}"]
    receipt = check_end_to_end(reply, message_id="m1@se", sent={"letter@se": payload}, operator=OPERATOR.certificate)
    assert receipt.state == "delivered-to-mailbox"
    assert receipt.network_receipts == (f"minameddelanden-receipt:{delivery.business_id}",)
    assert receipt.notification.at == NOW and receipt.notification.operator == OPERATOR_ID


def test_delivery_without_receipt_request_gets_only_the_notification() -> None:
    """No ReceiptRequest: no Mina meddelanden Receipt, the signed notification alone."""
    payload = sealed(secure_delivery(receipt=False))
    reply = _answer(check_delivery(payload, TRUST, at=NOW), payload)
    assert list(reply) == [f"notification@{OPERATOR_ID}"]


def test_sender_refuses_answers_that_do_not_fit_or_are_not_the_operators() -> None:
    """Another signer, another message id or another payload digest: ReceiptMismatch."""
    payload = sealed(secure_delivery())
    reply = _answer(check_delivery(payload, TRUST, at=NOW), payload)
    sent = {"letter@se": payload}
    with pytest.raises(ReceiptMismatch):
        check_end_to_end(reply, message_id="m1@se", sent=sent, operator=STRANGER.certificate)
    with pytest.raises(ReceiptMismatch, match="answers"):
        check_end_to_end(reply, message_id="other@se", sent=sent, operator=OPERATOR.certificate)
    with pytest.raises(ReceiptMismatch, match="digests"):
        check_end_to_end(reply, message_id="m1@se", sent={"letter@se": b"x"}, operator=OPERATOR.certificate)


def test_seal_by_an_untrusted_intermediary_or_an_untrusted_sender_is_refused() -> None:
    """A seal by someone not pinned, or a sender certificate outside the anchors: Refusal with SIG."""
    with pytest.raises(Refusal) as caught:
        check_delivery(sealed(secure_delivery(), intermediary=STRANGER), TRUST, at=NOW)
    assert caught.value.reason is ReasonCode.SIGNATURE
    with pytest.raises(Refusal) as caught:
        check_delivery(sealed(secure_delivery(), sender=STRANGER), TRUST, at=NOW)
    assert caught.value.reason is ReasonCode.SIGNATURE and "not trusted" in caught.value.text


def test_sdk_unknown_recipient_gets_a_rejected_meddelandekvittens() -> None:
    """An XHE to an organisation without a mailbox: REJECTED (BV, unknown-recipient) in a signed XHE."""
    payload = xhe()
    delivery = check_delivery(payload, TRUST, at=NOW)
    assert (delivery.network, delivery.recipient) == (Network.SDK, COMPANY)
    refusal = unknown_recipient(delivery)
    reply = _answer(refusal, payload)
    receipt = check_end_to_end(reply, message_id="m1@se", sent={"letter@se": payload}, operator=OPERATOR.certificate)
    assert receipt.state == "rejected"
    assert receipt.network_receipts == ("meddelandekvittens:REJECTED",)
    assert [r.code for r in receipt.notification.reasons] == ["unknown-recipient"]
    kvittens = next(data for cid, data in reply.items() if cid.startswith("kvittens"))
    [line] = parse_application_response(parse_xhe(kvittens).payload.content).lines
    # SDK's own code for a recipient not served, our reason in the text
    assert line.status_reason_code == "NOT_SERVICED" and line.status_reason.startswith("unknown-recipient: ")
    accepted = check_end_to_end(
        _answer(delivery, payload), message_id="m1@se", sent={"letter@se": payload}, operator=OPERATOR.certificate
    )
    assert accepted.network_receipts == ("meddelandekvittens:ACCEPTED",)


def test_a_signed_delivery_sealed_on_its_way_is_proven_to_its_sender_by_the_operators_receipt() -> None:
    """The sender sent a SignedDelivery and the router sealed it: the notification quotes the sealed bytes, and the
    operator's signed Receipt fitting the delivery is the proof; without a Receipt the answer does not count."""
    for asked in (True, False):
        signed = build_signed_delivery(secure_delivery(receipt=asked), AUTHORITY)
        sealed_on_the_way = build_sealed_delivery(signed, INTERMEDIARY, received=NOW.date())
        reply = _answer(check_delivery(sealed_on_the_way, TRUST, at=NOW), sealed_on_the_way)
        if asked:
            answer = check_end_to_end(
                reply, message_id="m1@se", sent={"letter@se": signed}, operator=OPERATOR.certificate
            )
            assert answer.state == "delivered-to-mailbox"
            assert answer.network_receipts[0].startswith("minameddelanden-receipt:")
        else:
            with pytest.raises(ReceiptMismatch, match="without a Receipt"):
                check_end_to_end(reply, message_id="m1@se", sent={"letter@se": signed}, operator=OPERATOR.certificate)
    with pytest.raises(ReceiptMismatch, match="digests differ"):  # any other payload must be quoted as it was sent
        check_end_to_end(reply, message_id="m1@se", sent={"letter@se": b"<other/>"}, operator=OPERATOR.certificate)


def test_an_answer_to_a_letter_with_content_too_large_to_hold_is_checked_by_that_contents_digest() -> None:
    """A letter whose content travels beside its envelope: the answer fits the envelope's bytes and the content's
    digest as stored, and is refused when that digest is another or the content is not accounted for."""
    payload = sealed(secure_delivery())
    quoted = [("letter@se", payload_sha256(payload)), ("content@se", payload_sha256(b"200 MB of drawings"))]
    parts = build_answer(check_delivery(payload, TRUST, at=NOW), message_id="m1@se", payloads=(), digests=quoted,
                         operator=OPERATOR_ID, keys=OPERATOR, at=NOW)  # fmt: skip
    reply = {p.content_id: p.data for p in parts}
    sent, digests = {"letter@se": payload}, dict(quoted)
    answer = check_end_to_end(reply, message_id="m1@se", sent=sent, operator=OPERATOR.certificate, digests=digests)
    assert answer.state == "delivered-to-mailbox" and answer.network_receipts[0].startswith("minameddelanden-receipt")
    other = {**digests, "content@se": payload_sha256(b"something else")}
    with pytest.raises(ReceiptMismatch, match="digests differ"):
        check_end_to_end(reply, message_id="m1@se", sent=sent, operator=OPERATOR.certificate, digests=other)
    with pytest.raises(ReceiptMismatch, match="payloads differ"):
        check_end_to_end(reply, message_id="m1@se", sent=sent, operator=OPERATOR.certificate)


def test_an_unsealed_signed_delivery_is_refused() -> None:
    """A SignedDelivery that no intermediary sealed (it skipped the router) is refused, however good its signature."""
    with pytest.raises(Refusal) as caught:
        check_delivery(build_signed_delivery(secure_delivery(), AUTHORITY), TRUST, at=NOW)
    assert (caught.value.network, caught.value.code) == (Network.MINA_MEDDELANDEN, "unsealed")


def test_sdk_xhe_with_a_broken_signature_is_refused_with_sig() -> None:
    """A signed XHE whose content changed after signing: REJECTED with SIG, the reply still names the XHE."""
    payload = xhe().replace(b">hej<", b">hej!<")
    with pytest.raises(Refusal) as caught:
        check_delivery(payload, TRUST, at=NOW)
    assert caught.value.reason is ReasonCode.SIGNATURE and caught.value.xhe is not None
    receipt = check_end_to_end(
        _answer(caught.value, payload), message_id="m1@se", sent={"letter@se": payload}, operator=OPERATOR.certificate
    )
    assert receipt.notification.status is Status.REJECTED


def test_foreign_sbd_is_answered_with_the_signed_notification() -> None:
    """An SBD: the receiver's 0007 number names the company mailbox; the answer is the notification alone."""
    payload = sbd()
    delivery = check_delivery(payload, TRUST, at=NOW)
    assert (delivery.network, delivery.recipient, delivery.sender) == (Network.FOREIGN, COMPANY, "0192:810418052")
    reply = _answer(delivery, payload)
    receipt = check_end_to_end(reply, message_id="m1@se", sent={"letter@se": payload}, operator=OPERATOR.certificate)
    assert receipt.state == "delivered-to-mailbox" and receipt.network_receipts == ()


def test_unknown_formats_and_mailbox_keys() -> None:
    """Not XML or an unknown root: refused; 0007 numbers map to 16 + orgnr, other ids stay."""
    for garbage in (b"not xml", b"<x/>"):
        with pytest.raises(Refusal):
            check_delivery(garbage, TRUST, at=NOW)
    assert mailbox_key("0007:5566778899") == COMPANY
    assert mailbox_key("iso6523-actorid-upis::0007:5566778899") == COMPANY
    assert mailbox_key(PERSON) == PERSON and mailbox_key("0203:digg.se") == "0203:digg.se"
    assert dataclasses.replace(unknown_recipient(check_delivery(sbd(), TRUST, at=NOW))).code == "unknown-recipient"


def test_answers_are_valid_against_the_contracts() -> None:
    """The Receipt validates against Mina meddelanden's v3 contract, the Meddelandekvittens XHE against XHE 1.0."""
    mm_schema = load_minameddelanden_schema(interop_path("minameddelanden/contracts"))
    xhe_schema = load_xhe_schema(interop_path("sdk/xhe/xsd/XHE-1.0.xsd"))
    trust = dataclasses.replace(TRUST, minameddelanden_schema=mm_schema, xhe_schema=xhe_schema)
    for payload in (sealed(secure_delivery()), xhe()):
        delivery = check_delivery(payload, trust, at=NOW)
        parts = build_answer(
            delivery,
            message_id="m1@se",
            payloads=[("letter@se", payload)],
            operator=OPERATOR_ID,
            keys=OPERATOR,
            at=NOW,
            minameddelanden_schema=mm_schema,
            xhe_schema=xhe_schema,
        )
        assert len(parts) == 2
