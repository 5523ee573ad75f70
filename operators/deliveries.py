"""What a mailbox operator does with a delivery, sans-I/O: recognise its network, verify it, turn it into mail.

A payload handed over by the access point is one of three business envelopes, told apart by its root element:

- Mina meddelanden ``SealedDelivery`` (or the Service v3 ``deliverSecure`` wrapper of one): the intermediary's
  seal is verified against the intermediaries this operator accepts (pinned certificates), then the sender's
  signature, whose certificate must chain to one of the sender anchors;
- SDK ``XHE``: the sender's enveloped signature (when the transport model signs, ``tm-base-ext-sigenc``) with
  the same anchors, then XSD (when given) and DIGG's rules; the payload is stored as it came (an encrypted
  payload stays encrypted: only the recipient holds the key);
- a ``StandardBusinessDocument`` (Peppol, Nordic partners): schema-checked; the business document is the mail.

``check_delivery`` returns a ``CheckedDelivery`` (only what was verified) or raises ``Refusal`` carrying what
the negative receipt needs (the network, the business id, the reason as an SDK line reason). Whether the
recipient has a mailbox here is the caller's question (it needs the database); ``unknown_recipient`` builds
that refusal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

from cryptography import x509
from lxml import etree

from accesspoint.envelopes._common import EnvelopeError, parse_document
from accesspoint.envelopes.kvittens import ReasonCode
from accesspoint.envelopes.letter import (
    LETTER,
    LETTER_DOCUMENT_TYPE,
    LetterDocument,
    LetterTerms,
    parse_letter,
    terms_of_secure_message,
)
from accesspoint.envelopes.minameddelanden import (
    SEALED_DELIVERY,
    SERVICE3_NS,
    SIGNED_DELIVERY,
    SecureDelivery,
    verify_sealed_delivery,
)
from accesspoint.envelopes.payment import PaymentDataError
from accesspoint.envelopes.sbdh import SBDH_NS, Sbdh, parse_sbd
from accesspoint.envelopes.signature import SIGNATURE
from accesspoint.envelopes.xhe import XHE_NS, Xhe, parse_xhe, verify_xhe
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.trust import CertificateUsage, TrustError, TrustFailure, validate_certificate

T = TypeVar("T")


class Network(StrEnum):
    """The sender's network, which decides the form of the end-to-end receipt."""

    MINA_MEDDELANDEN = "minameddelanden"
    SDK = "sdk"
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class MailAttachment:
    """A file that came with a message."""

    filename: str
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class MailItem:
    """One message as the recipient will read it in the mailbox."""

    reference: str  # the business id: SecureMessage Id, XHE ID or SBDH InstanceIdentifier
    subject: str
    content_type: str
    body: bytes
    attachments: tuple[MailAttachment, ...] = ()
    terms: LetterTerms | None = None  # what the letter asks of the mailbox (envelopes/letter.py), when it says

    @property
    def event_only(self) -> bool:
        """A case event without content: it goes to the holder's case timeline, not into the mail list."""
        terms = self.terms
        return (
            terms is not None
            and terms.case_event is not None
            and not self.body
            and not self.attachments
            and not terms.parts
        )


@dataclass(frozen=True, slots=True)
class CheckedDelivery:
    """A delivery whose envelope and signatures verified: for whom, from whom, what, and who signed it."""

    network: Network
    business_id: str
    recipient: str  # the mailbox key (see ``mailbox_key``)
    sender: str
    sender_name: str | None
    items: tuple[MailItem, ...]
    sender_certificate: x509.Certificate | None = None
    seal_certificate: x509.Certificate | None = None
    secure_delivery: SecureDelivery | None = None  # Mina meddelanden: for the signed Receipt
    xhe: Xhe | None = None  # SDK: for the Meddelandekvittens
    sbdh: Sbdh | None = None  # SBDH: the parties a holder's answer goes back between


@dataclass(frozen=True, slots=True)
class Refusal(Exception):
    """A delivery the operator does not put in a mailbox, with what the negative receipt says."""

    network: Network
    reason: ReasonCode
    code: str  # a short machine name: unknown-recipient, signature, schema, not-recognised
    text: str
    business_id: str | None = None
    recipient: str | None = None
    sender: str | None = None
    xhe: Xhe | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.code}: {self.text}"


@dataclass(frozen=True, slots=True)
class DeliveryTrust:
    """Whom the operator believes: intermediaries that seal (pinned), anchors for senders' signatures, schemas."""

    intermediaries: tuple[x509.Certificate, ...] = ()
    sender_anchors: tuple[x509.Certificate, ...] = ()
    minameddelanden_schema: etree.XMLSchema | None = None
    xhe_schema: etree.XMLSchema | None = None


def mailbox_key(identifier: str) -> str:
    """The mailbox a recipient identifier names: 12 digits stay as they are (personnummer, samordningsnummer,
    ``16`` + organisationsnummer); an ISO 6523 ``0007:`` organisationsnummer becomes ``16`` + the number, so an
    organisation has one mailbox whichever network wrote to it; other participant ids stay as they are."""
    value = identifier.strip()
    if value.startswith("iso6523-actorid-upis::"):
        value = value.removeprefix("iso6523-actorid-upis::")
    if value.startswith("0007:") and len(value) == 15 and value[5:].isdigit():
        return "16" + value[5:]
    return value


def payload_sha256(data: bytes) -> str:
    """The hex SHA-256 the receipts quote for a delivered payload."""
    return hashlib.sha256(data).hexdigest()


def _trusted_sender(certificate: x509.Certificate, trust: DeliveryTrust, at: datetime) -> None:
    if not trust.sender_anchors:
        raise TrustError(TrustFailure.UNTRUSTED_ISSUER, "no sender anchors are configured")
    # Revocation of end-to-end signers is the sender network's PKI's business; here the path and validity.
    validate_certificate(
        certificate,
        (),
        TrustSettings(anchors=trust.sender_anchors, revocation=RevocationMode.OFF),
        at=at,
        usage=CertificateUsage.SIGNATURE,
    )


def classify(root: etree._Element) -> Network | None:
    """The network a payload belongs to, by its root element (None when it is none of the three)."""
    if root.tag in (SEALED_DELIVERY, SIGNED_DELIVERY, f"{{{SERVICE3_NS}}}deliverSecure"):
        return Network.MINA_MEDDELANDEN
    if root.tag == f"{{{XHE_NS}}}XHE":
        return Network.SDK
    if root.tag == f"{{{SBDH_NS}}}StandardBusinessDocument":
        return Network.FOREIGN
    return None


def check_delivery(payload: bytes, trust: DeliveryTrust, *, at: datetime) -> CheckedDelivery:
    """Verify a delivery and return its mail; Refusal says why it is not delivered."""
    try:
        root = parse_document(payload, what="delivery")
    except EnvelopeError as exc:
        raise Refusal(Network.FOREIGN, ReasonCode.SCHEMA, "not-xml", str(exc)) from None
    network = classify(root)
    if network is Network.MINA_MEDDELANDEN:
        return _sealed(root, trust, at)
    if network is Network.SDK:
        return _xhe(root, trust, at)
    if network is Network.FOREIGN:
        return _sbd(root)
    raise Refusal(Network.FOREIGN, ReasonCode.SCHEMA, "not-recognised", f"no delivery format has root {root.tag}")


def _sealed(root: etree._Element, trust: DeliveryTrust, at: datetime) -> CheckedDelivery:
    network = Network.MINA_MEDDELANDEN
    if root.tag == SIGNED_DELIVERY:
        # Only an intermediary's seal says the sender is registered and connected: a delivery that skipped the
        # router is not taken, however good the sender's own signature.
        raise Refusal(network, ReasonCode.SIGNATURE, "unsealed", "the delivery is not sealed by an intermediary")
    if not trust.intermediaries:
        raise Refusal(network, ReasonCode.SIGNATURE, "seal", "no intermediary is trusted to seal deliveries")
    verified = None
    failure = "the seal does not verify with any trusted intermediary"
    for intermediary in trust.intermediaries:
        try:
            verified = verify_sealed_delivery(root, intermediary=intermediary, schema=trust.minameddelanden_schema)
            break
        except EnvelopeError as exc:
            if "SIGNATURE" not in exc.rules:
                raise Refusal(network, ReasonCode.SCHEMA, "schema", str(exc)) from None
            failure = str(exc)
    if verified is None:
        raise Refusal(network, ReasonCode.SIGNATURE, "signature", failure)
    delivery = verified.delivery
    try:
        _trusted_sender(verified.sender_signature.signer, trust, at)
    except TrustError as exc:
        raise Refusal(
            network,
            ReasonCode.SIGNATURE,
            "signature",
            f"the sender's certificate is not trusted: {exc.reason}",
            business_id=delivery.messages[0].id,
            recipient=delivery.recipient,
            sender=delivery.sender.id,
        ) from None
    known = {"business_id": delivery.messages[0].id, "recipient": delivery.recipient, "sender": delivery.sender.id}
    items = tuple(
        MailItem(
            reference=m.id,
            subject=m.subject,
            content_type=m.content_type,
            body=m.body,
            attachments=tuple(MailAttachment(a.filename, a.content_type, a.body) for a in m.attachments),
            terms=_read_terms(network, partial(terms_of_secure_message, m, reference=delivery.reference), known),
        )
        for m in delivery.messages
    )
    return CheckedDelivery(
        network=network,
        business_id=delivery.messages[0].id,
        recipient=mailbox_key(delivery.recipient),
        sender=delivery.sender.id,
        sender_name=delivery.sender.name,
        items=items,
        sender_certificate=verified.sender_signature.signer,
        seal_certificate=verified.seal_signature.signer,
        secure_delivery=delivery,
    )


def _xhe(root: etree._Element, trust: DeliveryTrust, at: datetime) -> CheckedDelivery:
    network = Network.SDK
    try:
        unverified = parse_xhe(root, schema=trust.xhe_schema)
    except EnvelopeError as exc:
        raise Refusal(network, ReasonCode.SCHEMA, "schema", str(exc)) from None
    known = {"business_id": unverified.id, "recipient": unverified.to_party.id, "sender": unverified.from_party.id}
    signer = None
    if root.find(SIGNATURE) is not None or (unverified.document_id or "").endswith("tm-base-ext-sigenc"):
        try:
            verified = verify_xhe(root, schema=trust.xhe_schema)
            _trusted_sender(verified.signature.signer, trust, at)
        except EnvelopeError as exc:
            raise Refusal(network, ReasonCode.SIGNATURE, "signature", str(exc), **known, xhe=unverified) from None
        except TrustError as exc:
            reason = f"the sender's certificate is not trusted: {exc.reason}"
            raise Refusal(network, ReasonCode.SIGNATURE, "signature", reason, **known, xhe=unverified) from None
        signer = verified.signature.signer
    payload = unverified.payload
    item = MailItem(
        reference=unverified.id,
        subject=payload.document_type_code,
        content_type=payload.content_type_code if not payload.encrypted else "application/xml",
        body=payload.content,
    )
    if payload.document_type_code == LETTER_DOCUMENT_TYPE and payload.xml and not payload.encrypted:
        letter = _read_terms(network, partial(parse_letter, payload.content), {**known, "xhe": unverified})
        item = _letter_item(unverified.id, letter)
    return CheckedDelivery(
        network=network,
        business_id=unverified.id,
        recipient=mailbox_key(unverified.to_party.id),
        sender=unverified.from_party.id,
        sender_name=None,
        items=(item,),
        sender_certificate=signer,
        xhe=unverified,
    )


def _sbd(root: etree._Element) -> CheckedDelivery:
    network = Network.FOREIGN
    try:
        document = parse_sbd(root)
    except EnvelopeError as exc:
        raise Refusal(network, ReasonCode.SCHEMA, "schema", str(exc)) from None
    header = document.header
    business_id = header.document.instance_identifier
    if not header.receiver or not header.sender:
        raise Refusal(network, ReasonCode.SCHEMA, "schema", "the SBDH names no sender or receiver")
    body = etree.tostring(document.document, xml_declaration=True, encoding="UTF-8")
    item = MailItem(reference=business_id, subject=header.document.type, content_type="application/xml", body=body)
    if document.document.tag == LETTER:
        known = {"business_id": business_id, "recipient": header.receiver[0].identifier,
                 "sender": header.sender[0].identifier}  # fmt: skip
        item = _letter_item(business_id, _read_terms(network, partial(parse_letter, document.document), known))
    return CheckedDelivery(
        network=network,
        business_id=business_id,
        recipient=mailbox_key(header.receiver[0].identifier),
        sender=header.sender[0].identifier,
        sender_name=None,
        items=(item,),
        sbdh=header,
    )


def _read_terms(network: Network, read: Callable[[], T], known: dict[str, Any]) -> T:
    """What ``read`` gives (a letter's terms, a letter document), or the refusal naming the rule its terms break
    (for payment data, the business term)."""
    try:
        return read()
    except PaymentDataError as exc:
        raise Refusal(network, ReasonCode.BUSINESS_RULE, "payment-data", f"{exc.term}: {exc.reason}", **known) from None
    except EnvelopeError as exc:
        raise Refusal(network, ReasonCode.BUSINESS_RULE, "terms", str(exc), **known) from None


def _letter_item(reference: str, letter: LetterDocument) -> MailItem:
    body = letter.body
    return MailItem(
        reference=reference,
        subject=letter.subject,
        content_type="" if body is None else body.content_type,
        body=b"" if body is None else body.data,
        attachments=tuple(
            MailAttachment(a.filename or f"attachment-{i}", a.content_type, a.data)
            for i, a in enumerate(letter.attachments, start=1)
        ),
        terms=letter.terms,
    )


def verdict(
    payloads: Sequence[tuple[str, bytes]], trust: DeliveryTrust, *, at: datetime
) -> tuple[str | None, CheckedDelivery | Refusal]:
    """The verdict on a message's payloads (key, bytes): the first in a known format is the delivery (its key is
    returned with the outcome; the first payload's when none is known, None without payloads)."""
    chosen = payloads[0] if payloads else None
    for key, data in payloads:
        try:
            if classify(parse_document(data, what="payload")) is not None:
                chosen = (key, data)
                break
        except EnvelopeError:
            continue
    try:
        return (None if chosen is None else chosen[0]), check_delivery(
            b"" if chosen is None else chosen[1], trust, at=at
        )
    except Refusal as refusal:
        return (None if chosen is None else chosen[0]), refusal


def unknown_recipient(delivery: CheckedDelivery) -> Refusal:
    """The refusal for a verified delivery to someone without a mailbox at this operator."""
    return Refusal(
        delivery.network,
        ReasonCode.BUSINESS_RULE,
        "unknown-recipient",
        f"the recipient {delivery.recipient} has no mailbox at this operator",
        business_id=delivery.business_id,
        recipient=delivery.recipient,
        sender=delivery.sender,
        xhe=delivery.xhe,
    )
