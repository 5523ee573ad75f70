"""Envelopes and end-to-end receipt formats, sans-I/O: bytes or lxml trees in, typed frozen dataclasses out.

Nothing here touches a socket, a file or a clock: schemas are compiled by the caller from a folder it names
(``schemas``), times are arguments, keys are ``accesspoint.security.keys.KeyPair``. Every refusal is an
``EnvelopeError`` whose ``findings`` name each failed rule (``R3-XHE``, ``R8-APP``, ``XSD``, ``SIGNATURE``, …), so
a receipt can quote them. Verification follows "trust only the verified": ``verify_*`` return ``Verified*``
objects holding only what the signature covered and the certificate whose key verified it; pass the expected
certificate (CertPub, the operator's, the intermediary's) to verify with that key instead of KeyInfo's.

Peppol and DPI (``sbdh``)
    build_sbd(header: Sbdh, document: Element | bytes) -> bytes
    parse_sbd(data: bytes | Element) -> StandardBusinessDocument            # XSD-checked (SBDH 1.3, built in)
    peppol_findings(header: Sbdh) -> tuple[Finding, ...]
    parse_innbyggerpost(element) -> Innbyggerpost                            # DPI C2 -> C3 body, strict base64
    parse_business_message_json(message: Mapping, *, strict=True) -> BusinessMessage   # DPI C1 -> C2 (JSON)

SDK (``xhe``, ``kvittens``)
    build_xhe(xhe: Xhe, *, keys: KeyPair | None = None, schema=None) -> bytes   # signs when keys are given
    parse_xhe(data, *, schema=None) -> Xhe                                   # XSD (if given) + DIGG R1-R14
    verify_xhe(data, *, expected: Certificate | None = None, schema=None) -> VerifiedXhe
    digg_xhe_findings(root) -> tuple[Finding, ...]
    encrypt_xhe_payload(payload: XhePayload, recipient: Certificate) -> XhePayload     # XMLEnc, AES-256-CBC + RSA-OAEP
    decrypt_xhe_payload(payload: XhePayload, keys: KeyPair) -> XhePayload   # after verify_xhe; one generic error
    encrypted_for(encrypted: bytes) -> Certificate | None                    # whose key the payload needs
    build_application_response(response: ApplicationResponse, *, schema=None) -> bytes
    parse_application_response(data, *, schema=None) -> ApplicationResponse  # XSD (if given) + DIGG R1-R9
    digg_response_findings(root) -> tuple[Finding, ...]

Mina meddelanden (``minameddelanden``)
    build_signed_delivery(delivery: SecureDelivery, sender_keys, *, schema=None) -> bytes
    verify_signed_delivery(data, *, sender: Certificate | None = None, schema=None) -> VerifiedSignedDelivery
    build_sealed_delivery(signed_delivery, intermediary_keys, *, received: date, sender=None, schema=None) -> bytes
    verify_sealed_delivery(data, *, intermediary=None, sender=None, schema=None) -> VerifiedSealedDelivery
    to_deliver_secure(sealed) -> Element / from_deliver_secure(request) -> Element   # the Service v3 wire form
    receipt_for(delivery, message_id, acknowledged: date) -> DeliveryReceipt
    build_delivery_receipt(receipt: DeliveryReceipt, operator_keys, *, schema=None) -> bytes
    verify_delivery_receipt(data, *, operator: Certificate | None = None, schema=None) -> VerifiedDeliveryReceipt
    receipt_matches(receipt, delivery) -> bool
    parse_delivery_result(data) -> DeliveryResult                            # deliverSecureResponse

Schemas (``schemas``), compiled once per path, offline
    load_xhe_schema(xsd: Path)                                               # XHE-1.0.xsd (fragments/ beside it)
    load_application_response_schema(xsd: Path)                              # DIGG's Response-2.1.xsd
    load_minameddelanden_schema(contracts: Path)                             # the folder holding schema/
"""

from accesspoint.envelopes._common import EnvelopeError, Finding
from accesspoint.envelopes.encryption import decrypt_xhe_payload, encrypt_xhe_payload, encrypted_for
from accesspoint.envelopes.kvittens import (
    ApplicationResponse,
    LineResponse,
    ReasonCode,
    ResponseCode,
    build_application_response,
    digg_response_findings,
    parse_application_response,
)
from accesspoint.envelopes.minameddelanden import (
    Attachment,
    DeliveryReceipt,
    DeliveryResult,
    ReceiptRequest,
    Seal,
    SecureDelivery,
    SecureMessage,
    Sender,
    SupportInfo,
    VerifiedDeliveryReceipt,
    VerifiedSealedDelivery,
    VerifiedSignedDelivery,
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
from accesspoint.envelopes.sbdh import (
    BusinessMessage,
    DocumentIdentification,
    Innbyggerpost,
    ManifestItem,
    Partner,
    Sbdh,
    Scope,
    ScopeType,
    StandardBusinessDocument,
    build_sbd,
    parse_business_message_json,
    parse_innbyggerpost,
    parse_sbd,
    peppol_findings,
)
from accesspoint.envelopes.schemas import (
    load_application_response_schema,
    load_minameddelanden_schema,
    load_xhe_schema,
)
from accesspoint.envelopes.signature import VerifiedSignature
from accesspoint.envelopes.xhe import (
    Criterion,
    ScopeCode,
    VerifiedXhe,
    Xhe,
    XheParty,
    XhePayload,
    build_xhe,
    digg_xhe_findings,
    parse_xhe,
    sdk_scope,
    verify_xhe,
)

__all__ = [
    "ApplicationResponse",
    "Attachment",
    "BusinessMessage",
    "Criterion",
    "DeliveryReceipt",
    "DeliveryResult",
    "DocumentIdentification",
    "EnvelopeError",
    "Finding",
    "Innbyggerpost",
    "LineResponse",
    "ManifestItem",
    "Partner",
    "ReasonCode",
    "ReceiptRequest",
    "ResponseCode",
    "Sbdh",
    "Scope",
    "ScopeCode",
    "ScopeType",
    "Seal",
    "SecureDelivery",
    "SecureMessage",
    "Sender",
    "StandardBusinessDocument",
    "SupportInfo",
    "VerifiedDeliveryReceipt",
    "VerifiedSealedDelivery",
    "VerifiedSignature",
    "VerifiedSignedDelivery",
    "VerifiedXhe",
    "Xhe",
    "XheParty",
    "XhePayload",
    "build_application_response",
    "build_delivery_receipt",
    "build_sbd",
    "build_sealed_delivery",
    "build_signed_delivery",
    "build_xhe",
    "decrypt_xhe_payload",
    "digg_response_findings",
    "digg_xhe_findings",
    "encrypt_xhe_payload",
    "encrypted_for",
    "from_deliver_secure",
    "load_application_response_schema",
    "load_minameddelanden_schema",
    "load_xhe_schema",
    "parse_application_response",
    "parse_business_message_json",
    "parse_delivery_result",
    "parse_innbyggerpost",
    "parse_sbd",
    "parse_xhe",
    "peppol_findings",
    "receipt_for",
    "receipt_matches",
    "sdk_scope",
    "to_deliver_secure",
    "verify_delivery_receipt",
    "verify_sealed_delivery",
    "verify_signed_delivery",
    "verify_xhe",
]
