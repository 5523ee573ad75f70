"""End-to-end delivery receipts, sans-I/O: what the operator signs and sends back, and how the sender checks it.

The operator answers every delivery on the two-way P-Mode's reply leg (``ref_to_message_id`` = the delivery's
AS4 MessageId) with the payloads of ``build_answer``:

- ``notification@…``: always, a ``DeliveryNotification`` signed (enveloped XML-DSig) by the operator: the AS4
  MessageId and business id it answers, ``delivered`` (in the mailbox) or ``rejected`` with reasons, when, the
  operator, the recipient and the SHA-256 of each payload it was handed. For a foreign (SBDH) sender it is the
  whole answer: the "signed AS4 notification";
- ``receipt-N@…``: for a Mina meddelanden delivery, the signed ``Receipt`` of each SecureMessage that asked for
  one (``ReceiptRequest`` SIMPLE or SIGNED), in the contract's form;
- ``kvittens@…``: for an SDK delivery, the Meddelandekvittens (ACCEPTED, or REJECTED with a line per reason) in
  an XHE signed by the recipient side, addressed back to the sender and referring to the delivery's XHE ID.

``check_end_to_end`` is the sender's side: every part must verify with the operator's certificate and agree
with what was sent (same MessageId, same payload digests, same business ids).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from cryptography import x509
from lxml import etree

from accesspoint.core.namespaces import NS
from accesspoint.envelopes._common import (
    EnvelopeError,
    b64decode,
    need_text,
    parse_document,
    root_is,
    serialize,
    sub,
    text,
)
from accesspoint.envelopes.kvittens import (
    RESPONSE_DOCUMENT_ID,
    ApplicationResponse,
    LineResponse,
    ResponseCode,
    build_application_response,
    parse_application_response,
)
from accesspoint.envelopes.minameddelanden import (
    RECEIPT,
    SIGNED_DELIVERY,
    ReceiptRequest,
    SecureDelivery,
    build_delivery_receipt,
    receipt_for,
    receipt_matches,
    verify_delivery_receipt,
    verify_sealed_delivery,
    verify_signed_delivery,
)
from accesspoint.envelopes.signature import SIGNATURE, sign_enveloped
from accesspoint.envelopes.xhe import XHE_NS, Xhe, XheParty, XhePayload, build_xhe, parse_xhe, sdk_scope, verify_xhe
from accesspoint.security.keys import KeyPair
from operators.deliveries import CheckedDelivery, Network, Refusal, payload_sha256
from operators.signed_documents import verified_operator_document

NOTIFICATION_NS = "urn:accesspoint:operators:delivery-notification:1"
_N = f"{{{NOTIFICATION_NS}}}"
NOTIFICATION = f"{_N}DeliveryNotification"
KVITTENS_DOCUMENT_TYPE = "Q{urn:oasis:names:specification:ubl:schema:xsd:ApplicationResponse-2}ApplicationResponse"
DEFAULT_FEDERATION = "urn:fdc:digg.se:edelivery:federation:test"
_ID_NAMESPACE = uuid.UUID("6f1c7c1e-2f0e-4a51-9b1e-0c5d3d3a7e21")


class Status(StrEnum):
    """What became of a delivery at the operator."""

    DELIVERED = "delivered"  # in the recipient's mailbox
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a delivery was rejected: a short machine code and a text."""

    code: str
    text: str


@dataclass(frozen=True, slots=True)
class DeliveryNotification:
    """The operator's signed statement about one AS4 message (see the module docstring)."""

    message_id: str
    business_id: str | None
    network: Network
    status: Status
    at: datetime
    operator: str
    recipient: str | None
    payloads: tuple[tuple[str, str], ...]  # (content id, hex SHA-256) of what the operator was handed
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True, slots=True)
class AnswerPart:
    """One payload of the reply leg."""

    content_id: str
    mime_type: str
    data: bytes


def stable_id(*parts: str) -> str:
    """A UUID derived from ``parts``: the same delivery always gets the same receipt ids (a retried answer is a
    duplicate the access point refuses, never a second receipt)."""
    return str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(parts)))


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_notification(notification: DeliveryNotification, keys: KeyPair) -> bytes:
    """The signed DeliveryNotification."""
    root = etree.Element(NOTIFICATION, nsmap={"n": NOTIFICATION_NS})
    sub(root, f"{_N}MessageId", notification.message_id)
    if notification.business_id is not None:
        sub(root, f"{_N}BusinessId", notification.business_id)
    sub(root, f"{_N}Network", notification.network)
    sub(root, f"{_N}Status", notification.status)
    sub(root, f"{_N}Time", _utc(notification.at))
    sub(root, f"{_N}Operator", notification.operator)
    if notification.recipient is not None:
        sub(root, f"{_N}Recipient", notification.recipient)
    for content_id, digest in notification.payloads:
        sub(root, f"{_N}Payload", ContentId=content_id, SHA256=digest)
    for reason in notification.reasons:
        sub(root, f"{_N}Reason", reason.text, Code=reason.code)
    sign_enveloped(root, keys)
    return serialize(root)


def verify_notification(data: bytes, operator: x509.Certificate) -> DeliveryNotification:
    """Verify a DeliveryNotification with the operator's certificate and return what it says."""
    root = verified_operator_document(data, operator, tag=NOTIFICATION, what="DeliveryNotification")
    try:
        at = datetime.fromisoformat(need_text(root, f"{_N}Time", "Time").replace("Z", "+00:00"))
        network, status = Network(need_text(root, f"{_N}Network", "Network")), Status(text(root.find(f"{_N}Status")))
    except ValueError as exc:
        raise EnvelopeError(f"DeliveryNotification: {exc}") from None
    business = root.find(f"{_N}BusinessId")
    recipient = root.find(f"{_N}Recipient")
    return DeliveryNotification(
        message_id=need_text(root, f"{_N}MessageId", "MessageId"),
        business_id=None if business is None else text(business),
        network=network,
        status=status,
        at=at,
        operator=need_text(root, f"{_N}Operator", "Operator"),
        recipient=None if recipient is None else text(recipient),
        payloads=tuple((p.get("ContentId") or "", p.get("SHA256") or "") for p in root.iterfind(f"{_N}Payload")),
        reasons=tuple(Reason(r.get("Code") or "", text(r)) for r in root.iterfind(f"{_N}Reason")),
    )


# --- the operator's side ---


def _transport_model(xhe: Xhe) -> str:
    suffix = (xhe.document_id or "").rsplit("::", 1)[-1]
    return suffix if suffix.startswith("tm-") else "tm-base-ext-sigenc"


def _kvittens(
    outcome: CheckedDelivery | Refusal, xhe: Xhe, keys: KeyPair, at: datetime, schema: etree.XMLSchema | None
) -> bytes:
    if isinstance(outcome, Refusal):
        code = ResponseCode.REJECTED
        # SDK's own word for a recipient not served here, the code SDK senders act on; ours stays in the text.
        reason_code = "NOT_SERVICED" if outcome.code == "unknown-recipient" else outcome.code
        lines: tuple[LineResponse, ...] = (
            LineResponse(outcome.reason, f"{outcome.code}: {outcome.text}", status_reason_code=reason_code),
        )
    else:
        code, lines = ResponseCode.ACCEPTED, ()
    moment = at.astimezone(UTC)
    response = ApplicationResponse(
        id=stable_id("kvittens", xhe.id),
        issue_date=moment.date(),
        issue_time=moment.time().replace(microsecond=0, tzinfo=UTC),
        sender=xhe.to_party.id,
        receiver=xhe.from_party.id,
        document_reference=xhe.id,
        code=code,
        lines=lines,
    )
    envelope = Xhe(
        id=stable_id("kvittens-xhe", xhe.id),
        created=moment.replace(microsecond=0),
        scope=sdk_scope(f"{RESPONSE_DOCUMENT_ID}::{_transport_model(xhe)}", xhe.federation_id or DEFAULT_FEDERATION),
        from_party=XheParty(xhe.to_party.id, xhe.to_party.scheme),
        to_party=XheParty(xhe.from_party.id, xhe.from_party.scheme),
        payload=XhePayload(KVITTENS_DOCUMENT_TYPE, "application/xml", build_application_response(response)),
    )
    return build_xhe(envelope, keys=keys, schema=schema)


def build_answer(
    outcome: CheckedDelivery | Refusal,
    *,
    message_id: str,
    payloads: Sequence[tuple[str, bytes]],
    operator: str,
    keys: KeyPair,
    at: datetime,
    minameddelanden_schema: etree.XMLSchema | None = None,
    xhe_schema: etree.XMLSchema | None = None,
    digests: Sequence[tuple[str, str]] | None = None,
) -> tuple[AnswerPart, ...]:
    """The reply-leg payloads for the AS4 message ``message_id`` whose ``payloads`` (content id, bytes) the
    operator checked with ``outcome`` — or, for payloads kept as files, their ``digests`` (content id, hex
    SHA-256); signed with the operator's ``keys``; the Receipt and the XHE validated against the schemas when
    given."""
    domain = operator
    delivered = isinstance(outcome, CheckedDelivery)
    notification = DeliveryNotification(
        message_id=message_id,
        business_id=outcome.business_id,
        network=outcome.network,
        status=Status.DELIVERED if delivered else Status.REJECTED,
        at=at,
        operator=operator,
        recipient=outcome.recipient,
        payloads=tuple(digests)
        if digests is not None
        else tuple((cid, payload_sha256(data)) for cid, data in payloads),
        reasons=() if isinstance(outcome, CheckedDelivery) else (Reason(outcome.code, outcome.text),),
    )
    parts = [AnswerPart(f"notification@{domain}", "application/xml", build_notification(notification, keys))]
    if isinstance(outcome, CheckedDelivery) and outcome.secure_delivery is not None:
        delivery = outcome.secure_delivery
        wanted = [m for m in delivery.messages if m.receipt_request in (ReceiptRequest.SIMPLE, ReceiptRequest.SIGNED)]
        for index, message in enumerate(wanted, start=1):
            receipt = build_delivery_receipt(
                receipt_for(delivery, message.id, at.astimezone(UTC).date()), keys, schema=minameddelanden_schema
            )
            parts.append(AnswerPart(f"receipt-{index}@{domain}", "application/xml", receipt))
    xhe = outcome.xhe
    if outcome.network is Network.SDK and xhe is not None:
        parts.append(AnswerPart(f"kvittens@{domain}", "application/xml", _kvittens(outcome, xhe, keys, at, xhe_schema)))
    return tuple(parts)


# --- the sender's side ---


class ReceiptMismatch(ValueError):
    """An end-to-end receipt that does not verify with the operator's certificate or does not fit the message."""


@dataclass(frozen=True, slots=True)
class EndToEndReceipt:
    """A verified answer from the recipient's operator: the notification and which network receipts verified."""

    notification: DeliveryNotification
    signer: x509.Certificate
    network_receipts: tuple[str, ...]  # "minameddelanden-receipt:<message id>", "meddelandekvittens:<code>"

    @property
    def state(self) -> str:
        """``delivered-to-mailbox`` or ``rejected``."""
        return "delivered-to-mailbox" if self.notification.status is Status.DELIVERED else "rejected"


@dataclass(frozen=True, slots=True)
class AnswerHint:
    """What a reply's DeliveryNotification claims before anything is verified: the message it answers and the
    certificate its KeyInfo carries (DER). Only an order to try candidates in, never trusted."""

    message_id: str | None
    certificate: bytes | None


_DS = f"{{{NS.DS.value}}}"
_KEY_INFO_CERTIFICATE = f"{SIGNATURE}/{_DS}KeyInfo/{_DS}X509Data/{_DS}X509Certificate"


def answer_hint(reply: Mapping[str, bytes]) -> AnswerHint:
    """The unverified claims of the reply's DeliveryNotification (``None`` each when absent or unreadable)."""
    for data in reply.values():
        try:
            root = parse_document(data, what="answer")
        except EnvelopeError:
            continue
        if root.tag != NOTIFICATION:
            continue
        message_id = text(root.find(f"{_N}MessageId")) or None
        certificates = root.findall(_KEY_INFO_CERTIFICATE)
        try:
            der = b64decode(text(certificates[0]), "X509Certificate") if len(certificates) == 1 else None
        except EnvelopeError:
            der = None
        return AnswerHint(message_id, der)
    return AnswerHint(None, None)


def check_end_to_end(
    reply: Mapping[str, bytes],
    *,
    message_id: str,
    sent: Mapping[str, bytes],
    operator: x509.Certificate,
    digests: Mapping[str, str] | None = None,
) -> EndToEndReceipt:
    """Check the reply-leg payloads (content id -> bytes) answering the AS4 message ``message_id`` whose payloads
    were ``sent``: all must verify with ``operator`` and agree with what was sent. ``digests`` (content id -> hex
    SHA-256 of every sent payload) is for a message with parts too large to hold: ``sent`` then has only the
    parts small enough to be envelopes, and the others are checked by their digest alone."""
    try:
        return _check(reply, message_id, sent, operator, digests)
    except EnvelopeError as exc:
        raise ReceiptMismatch(str(exc)) from None


def _check(
    reply: Mapping[str, bytes],
    message_id: str,
    sent: Mapping[str, bytes],
    operator: x509.Certificate,
    digests: Mapping[str, str] | None,
) -> EndToEndReceipt:
    notes = [data for data in reply.values() if parse_document(data, what="answer").tag == NOTIFICATION]
    if len(notes) != 1:
        raise ReceiptMismatch(f"expected one DeliveryNotification, found {len(notes)}")
    notification = verify_notification(notes[0], operator)
    if notification.message_id != message_id:
        raise ReceiptMismatch(f"the notification answers {notification.message_id!r}, not {message_id!r}")
    expected = dict(digests) if digests is not None else {cid: payload_sha256(data) for cid, data in sent.items()}
    quoted = dict(notification.payloads)
    if set(quoted) != set(expected) or len(quoted) != len(notification.payloads):
        raise ReceiptMismatch("the notification's payloads differ from what was sent")
    # The intermediary seals a SignedDelivery on its way (the router's SealedDelivery): the operator quotes the
    # digest of what it got, and the sender's proof is the operator's signed Receipt fitting its delivery.
    sealed_on_the_way = {cid for cid in expected if quoted[cid] != expected[cid]}
    if any(cid not in sent or not _is_signed_delivery(sent[cid]) for cid in sealed_on_the_way):
        raise ReceiptMismatch("the notification's payload digests differ from what was sent")
    found: list[str] = []
    fitted: set[str] = set()
    for data in reply.values():
        root = parse_document(data, what="answer")
        if root.tag == RECEIPT:
            label, cid = _check_mm_receipt(root, sent, operator)
            found.append(label)
            fitted.add(cid)
        elif root.tag == f"{{{XHE_NS}}}XHE":
            found.append(_check_kvittens(root, sent, operator, notification))
    if notification.status is Status.DELIVERED and sealed_on_the_way - fitted:
        raise ReceiptMismatch("a delivery sealed on its way is answered without a Receipt that fits it")
    if notification.network is Network.SDK and notification.status is Status.DELIVERED and not found:
        raise ReceiptMismatch("an SDK delivery is answered without a Meddelandekvittens")
    return EndToEndReceipt(notification, operator, tuple(found))


def _is_signed_delivery(data: bytes) -> bool:
    return root_is(data, SIGNED_DELIVERY)


def _sent_delivery(data: bytes) -> SecureDelivery | None:
    """The delivery a sent payload carries: sealed (sent through no intermediary) or signed (sealed on its way)."""
    for verify in (verify_sealed_delivery, verify_signed_delivery):
        try:
            return verify(data).delivery
        except EnvelopeError:
            continue
    return None


def _check_mm_receipt(root: etree._Element, sent: Mapping[str, bytes], operator: x509.Certificate) -> tuple[str, str]:
    verified = verify_delivery_receipt(root, operator=operator)
    for cid, data in sent.items():
        delivery = _sent_delivery(data)
        if delivery is not None and receipt_matches(verified.receipt, delivery):
            return f"minameddelanden-receipt:{verified.receipt.message_id}", cid
    raise ReceiptMismatch(f"the Receipt for {verified.receipt.message_id!r} matches no delivery that was sent")


def _check_kvittens(
    root: etree._Element, sent: Mapping[str, bytes], operator: x509.Certificate, notification: DeliveryNotification
) -> str:
    envelope = verify_xhe(root, expected=operator)
    response = parse_application_response(envelope.xhe.payload.content)
    ids = set()
    for data in sent.values():
        try:
            ids.add(parse_xhe(data).id)
        except EnvelopeError:
            continue
    if response.document_reference not in ids:
        raise ReceiptMismatch(f"the Meddelandekvittens refers to {response.document_reference!r}, not a sent XHE")
    agrees = (response.code is ResponseCode.ACCEPTED) == (notification.status is Status.DELIVERED)
    if not agrees:
        raise ReceiptMismatch("the Meddelandekvittens and the notification disagree")
    return f"meddelandekvittens:{response.code}"
