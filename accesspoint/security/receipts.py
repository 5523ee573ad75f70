"""Signed signals: receipts and errors leave signed, and a receipt counts only when it proves delivery.

A receipt is accepted only if it is signed by the expected partner, its signature covers its eb:Messaging,
it refers to the message sent and its NonRepudiationInformation echoes exactly the references we signed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from accesspoint.core.envelope import ParsedEnvelope, build_envelope, serialize
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import Receipt, ReferenceEcho, SignalMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.core.signals import check_receipt
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import SecurityPolicy
from accesspoint.security.signing import (
    TokenCache,
    TokenTemplates,
    VerifiedSignature,
    find_signature,
    sign_envelope,
    verify_signature,
)


def sign_signal(
    signal: SignalMessage,
    keys: KeyPair,
    policy: SecurityPolicy,
    *,
    soap_version: SoapVersion = SoapVersion.V12,
    new_id: Callable[[], str],
    templates: TokenTemplates | None = None,
) -> bytes:
    """A receipt or error signal as signed bare SOAP (signature over eb:Messaging and the Body)."""
    envelope = build_envelope(signal, soap_version=soap_version)
    sign_envelope(envelope, [], keys, policy, new_id=new_id, templates=templates)
    return serialize(envelope)


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """A receipt that proves delivery: who signed it and what it acknowledges."""

    signal: SignalMessage
    receipt: Receipt
    signature: VerifiedSignature | None  # None only when the policy accepts unsigned receipts


def verify_receipt(
    parsed: ParsedEnvelope,
    policy: SecurityPolicy,
    *,
    sent_message_id: str,
    sent_references: Sequence[ReferenceEcho],
    partner_certificates: Iterable[x509.Certificate],
    tokens: TokenCache | None = None,
) -> VerifiedReceipt:
    """Accept a receipt only when signed by one of the partner's certificates and matching what was sent.

    EBMS:0302 InvalidReceipt for an unsigned receipt (when the policy requires signed receipts), a signer
    other than the partner, a reference to another message or NonRepudiationInformation that differs from
    the references we signed; the signature's own failures keep their codes (EBMS:0101/0103).
    """
    header = parsed.header
    if not isinstance(header, SignalMessage):
        raise EbmsError(ErrorCode.INVALID_RECEIPT, "expected a receipt signal, got a user message")
    partners = list(partner_certificates)
    if find_signature(parsed) is None:
        if policy.require_signed_receipts:
            raise EbmsError(ErrorCode.INVALID_RECEIPT, "the receipt is not signed")
        receipt = check_receipt(header, sent_message_id=sent_message_id, sent_references=sent_references)
        return VerifiedReceipt(header, receipt, None)
    signature = verify_signature(parsed, {}, policy, candidates=partners, tokens=tokens)
    # Certificates compare by their DER encoding (cryptography's __eq__), without re-encoding either.
    if signature.signer.certificate not in partners:
        raise EbmsError(
            ErrorCode.INVALID_RECEIPT,
            "the receipt is not signed by the partner",
            log_detail=f"receipt signed by {signature.signer.certificate.subject.rfc4514_string()}",
        )
    receipt = check_receipt(header, sent_message_id=sent_message_id, sent_references=sent_references)
    return VerifiedReceipt(header, receipt, signature)
