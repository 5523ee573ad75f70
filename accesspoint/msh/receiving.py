"""What the MSH decides about a received user message, without I/O: P-Mode, security, receipt or error.

The aiohttp shell reads the body, calls ``accept_user_message``, stores what it returns and sends back the
signed receipt; any EbmsError becomes a signed error signal through ``error_response``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import serialization

from accesspoint.core.conformance import check_wire
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.ids import new_message_id, new_xml_id
from accesspoint.core.message import ReceivedMessage
from accesspoint.core.model import MessageInfo, PullRequest, SignalMessage, UserMessage
from accesspoint.core.namespaces import TEST_ACTION, TEST_SERVICE, SoapVersion
from accesspoint.core.signals import build_error_signal, build_receipt
from accesspoint.security.algorithms import SignatureAlgorithm
from accesspoint.security.inbound import OpenedMessage, PartReader, TrustCache, open_message
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import SecurityPolicy
from accesspoint.security.receipts import sign_signal
from accesspoint.security.revocation import RevocationSource
from accesspoint.security.signing import TokenCache, TokenTemplates, VerifiedSignature
from pmode import PModeSet, Route


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """A user message that passed P-Mode matching and security, with the receipt to answer it with."""

    route: Route
    user_message: UserMessage
    opened: OpenedMessage
    receipt: SignalMessage


def match_user_message(received: ReceivedMessage, pmodes: PModeSet) -> tuple[Route, UserMessage]:
    """The P-Mode leg a received user message travels on (EbmsError: none, several, or not a user message)."""
    user = received.parsed.messaging.message
    if not isinstance(user, UserMessage):
        raise EbmsError(ErrorCode.PROCESSING_MODE_MISMATCH, "expected a user message")
    match = pmodes.match_incoming(user)
    # The wire format first, strictly unless the P-Mode relaxes a rule for its partner.
    check_wire(received.deviations, lenient=frozenset() if match.route is None else match.route.pmode.leniency)
    problem = match.ebms_error(user.message_id)
    if problem is not None or match.route is None:
        raise problem or EbmsError(ErrorCode.VALUE_NOT_RECOGNIZED, "no P-Mode", ref_to_message_id=user.message_id)
    return match.route, user


def check_user_message(route: Route, user: UserMessage) -> None:
    """What the leg asks of the header before any cryptography: its part properties (a MimeType each, an encoding
    name as CharacterSet), its required properties, at most its parts."""
    check_part_properties(user)
    names = {p.name for p in user.message_properties}
    missing = [name for name in route.leg.required_properties if name not in names]
    if missing:
        raise EbmsError(
            ErrorCode.VALUE_INCONSISTENT,
            f"MessageProperties lack {', '.join(missing)}",
            ref_to_message_id=user.message_id,
        )
    if len(user.payload_info) > route.leg.payload.max_parts:
        raise EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, "too many payload parts", ref_to_message_id=user.message_id)


def check_decrypted(user: UserMessage, undecrypted: frozenset[str]) -> None:
    """Parts our own keys did not open: to the sender that is a decryption failure, kept generic."""
    if undecrypted:
        raise EbmsError(
            ErrorCode.FAILED_DECRYPTION,
            "the message could not be decrypted",
            ref_to_message_id=user.message_id,
            log_detail=f"no decryption key for {sorted(undecrypted)}",
        )


def receipt_for(user: UserMessage, signature: VerifiedSignature | None, *, at: datetime) -> SignalMessage:
    """The receipt for a verified user message: NonRepudiationInformation echoing what its sender signed."""
    echoes = () if signature is None else signature.echoes
    return build_receipt(user, echoes, message_id=new_message_id(), now=at)


def accept_user_message(
    received: ReceivedMessage,
    pmodes: PModeSet,
    *,
    keys: Sequence[KeyPair],
    at: datetime,
    revocation: RevocationSource | None,
    read_part: PartReader,
) -> AcceptedMessage:
    """Match the P-Mode leg, check the header, open the message under its policy; build the receipt.

    The whole of receiving in one call, for tests and tools; the access point runs the same steps in its receive
    pipeline (``receive_pipeline``), off the event loop for large messages.
    """
    route, user = match_user_message(received, pmodes)
    check_user_message(route, user)
    partner = [c for c in (route.partner_signing_certificate,) if c is not None]
    try:
        opened = open_message(
            received,
            route.security,
            at=at,
            keys=keys,
            revocation=revocation,
            partner_certificates=partner,
            read_part=read_part,
            decompression=route.leg.payload.decompression,
        )
    except EbmsError as exc:
        exc.ref_to_message_id = exc.ref_to_message_id or user.message_id
        raise
    check_decrypted(user, opened.undecrypted)
    return AcceptedMessage(route, user, opened, receipt_for(user, opened.signature, at=at))


# XML 1.0 section 4.3.3: EncName, what a CharacterSet part property must be (AS4_CP_TA29).
_ENCODING_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")


def valid_character_set(value: str) -> bool:
    """True when the value is an encoding name as XML 1.0 writes them (``UTF-8``, ``ISO-8859-1``)."""
    return _ENCODING_NAME.fullmatch(value) is not None


def check_part_properties(user: UserMessage) -> None:
    """EBMS:0003 for a payload without its MimeType part property (AS4 requires one, AS4_CP_TA26) or with a
    CharacterSet that is no encoding name (AS4_CP_TA29)."""
    for part in user.payload_info:
        where = part.href or "the SOAP Body payload"
        if not part.mime_type:
            raise EbmsError(
                ErrorCode.VALUE_INCONSISTENT,
                f"PartInfo {where} has no MimeType part property",
                ref_to_message_id=user.message_id,
            )
        charset = part.character_set
        if charset is not None and not valid_character_set(charset):
            raise EbmsError(
                ErrorCode.VALUE_INCONSISTENT,
                f"PartInfo {where}: CharacterSet {charset[:64]!r} is not an encoding name (XML 1.0, 4.3.3)",
                ref_to_message_id=user.message_id,
            )


def is_ping(user: UserMessage) -> bool:
    """True for the ebMS test service and action (ebMS 3 5.2.2.9): receipted, never delivered to a consumer."""
    collaboration = user.collaboration_info
    return collaboration.service.value == TEST_SERVICE and collaboration.action == TEST_ACTION


def signed_signal(
    signal: SignalMessage,
    keys: KeyPair,
    policy: SecurityPolicy,
    soap_version: SoapVersion,
    *,
    templates: TokenTemplates | None = None,
) -> bytes:
    """A receipt or error as signed bare SOAP in the request's SOAP version."""
    return sign_signal(signal, keys, policy, soap_version=soap_version, new_id=new_xml_id, templates=templates)


def policy_for_key(keys: KeyPair) -> SecurityPolicy:
    """The signing policy for a signal when no P-Mode is known: 1.15 for RSA keys, 2.0 for Ed25519."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if isinstance(keys.private_key, ed25519.Ed25519PrivateKey):
        return SecurityPolicy.edelivery_2_0(encrypt=False)
    return SecurityPolicy.edelivery_1_15(signature_algorithm=SignatureAlgorithm.RSA_SHA256, encrypt=False)


def refused_route(received: ReceivedMessage | None, pmodes: PModeSet) -> Route | None:
    """The leg a refused user message belongs to, when one P-Mode matches it."""
    if received is None:
        return None
    message = received.parsed.messaging.message
    if not isinstance(message, UserMessage):
        return None
    return pmodes.match_incoming(message).route


def reply_policy(received: ReceivedMessage | None, pmodes: PModeSet) -> SecurityPolicy | None:
    """The security policy of the leg a refused user message belongs to, when one P-Mode matches it."""
    route = refused_route(received, pmodes)
    return None if route is None else route.security


def error_response(
    error: EbmsError,
    *,
    keys: KeyPair,
    policy: SecurityPolicy | None,
    soap_version: SoapVersion,
    at: datetime,
    templates: TokenTemplates | None = None,
) -> bytes:
    """The signed ebMS error signal answering a message that failed (wire detail only, never log detail)."""
    signal = build_error_signal([error], message_id=new_message_id(), now=at, ref_to_message_id=error.ref_to_message_id)
    return signed_signal(signal, keys, policy or policy_for_key(keys), soap_version, templates=templates)


def pull_request(mpc: str, *, at: datetime) -> SignalMessage:
    """An eb:PullRequest signal for one MPC (ebMS 3 5.2.3.1), ready to sign."""
    return SignalMessage(MessageInfo(message_id=new_message_id(), timestamp=at), pull_request=PullRequest(mpc))


def verify_signal(
    received: ReceivedMessage,
    route: Route,
    *,
    at: datetime,
    revocation: RevocationSource | None,
    tokens: TokenCache | None = None,
    trust_cache: TrustCache | None = None,
) -> VerifiedSignature | None:
    """Check a signal's signature under the route's policy and that its signer is the route's partner.

    EBMS:0101 (generic on the wire) when it does not verify, its signer is not trusted or is another party
    than the one the P-Mode names; None only when the policy does not sign and the signal is unsigned.
    """
    partner = [c for c in (route.partner_signing_certificate,) if c is not None]
    opened = open_message(
        received,
        route.security,
        at=at,
        revocation=revocation,
        partner_certificates=partner,
        tokens=tokens,
        trust_cache=trust_cache,
    )
    signature = opened.signature
    if signature is None:
        return None
    if partner:
        signer = signature.signer.certificate
        der = signer.public_bytes(serialization.Encoding.DER)
        if all(c.public_bytes(serialization.Encoding.DER) != der for c in partner):
            raise EbmsError(
                ErrorCode.FAILED_AUTHENTICATION,
                "the signal is not signed by the partner",
                log_detail=f"signer {signer.subject.rfc4514_string()} is not {route.partner.name}",
            )
    return signature
