"""The router's checks of a letter's business envelope, and its seal: sans-I/O, bytes in, bytes out.

The router (the *förmedlare* of Digital post 2.0) vouches for what it forwards, so that operators need trust
only its seal rather than every sender's access point. Before the receipt, for the letter's first payload in a
format it knows:

- Mina meddelanden ``SignedDelivery``: the sender's enveloped signature must verify, with a certificate the
  sender register lists for the sender (``signing_certificates``); ``Delivery/Header/Sender/Id`` must be the
  sender (``16`` + the organisationsnummer of the AS4 originalSender) and ``Recipient`` the AS4 finalRecipient.
  Then the router seals it: the contracts' ``SealedDelivery`` with ``Seal{ReceivedTime, SignaturesOK=true}``,
  signed (enveloped XML-DSig) with the intermediary's key, forwarded in place of the SignedDelivery;
- SDK ``XHE``: ``FromParty`` must be the originalSender; a signed XHE must verify, and with a certificate the
  register lists when it lists any (the signature stays the sender's: SDK's end-to-end model);
- ``StandardBusinessDocument``: the SBDH ``Sender`` must be the originalSender.

Other payloads are passed on as they are. A failed check is a :class:`LetterRefused` (EBMS:0004 with the reason
``letter-signature``, ``letter-sender-mismatch`` or ``letter-recipient-mismatch``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from accesspoint.envelopes._common import EnvelopeError, parse_document
from accesspoint.envelopes.minameddelanden import (
    SEALED_DELIVERY,
    SIGNED_DELIVERY,
    build_sealed_delivery,
    verify_signed_delivery,
)
from accesspoint.envelopes.sbdh import SBDH_NS, parse_sbd
from accesspoint.envelopes.signature import SIGNATURE
from accesspoint.envelopes.xhe import XHE_NS, parse_xhe, verify_xhe
from accesspoint.security.keys import KeyPair
from far.identifiers import InvalidIdentifier
from far.parties import mina_meddelanden_id, parse_party_id
from far.senders import SenderNetwork

# Letters of Mina meddelanden are at most 2 MB; a larger XML payload is passed on unread (never sealed).
MAX_LETTER_BYTES = 16 * 1024 * 1024
LETTER_SIGNATURE = "letter-signature"
LETTER_SENDER = "letter-sender-mismatch"
LETTER_RECIPIENT = "letter-recipient-mismatch"
_XHE = f"{{{XHE_NS}}}XHE"
_SBD = f"{{{SBDH_NS}}}StandardBusinessDocument"


@dataclass(frozen=True, slots=True)
class LetterPart:
    """A payload of the letter as received (plaintext, decompressed)."""

    content_id: str
    mime_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class LetterCheck:
    """What the checks found: the letter's network (None: no known envelope) and the parts to forward instead."""

    network: SenderNetwork | None = None
    replaced: dict[str, bytes] = field(default_factory=dict)
    detail: str = ""


class LetterRefused(Exception):
    """A letter the router does not forward: the reason (the EBMS:0004's first word) and what it means."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def certificate_sha256(certificate: x509.Certificate) -> str:
    """The hex SHA-256 of a certificate's DER: how the sender register names certificates."""
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def worth_reading(mime_type: str, size: int) -> bool:
    """Whether a payload may be a business envelope the router checks (XML, not past the size limit)."""
    return "xml" in mime_type.lower() and size <= MAX_LETTER_BYTES


def _root(part: LetterPart) -> etree._Element | None:
    if not worth_reading(part.mime_type, len(part.data)):
        return None
    try:
        return parse_document(part.data, what="letter")
    except EnvelopeError:
        return None  # not XML after all: passed on as any payload is


def _same_party(given: str, kind: str | None, sender: str) -> bool:
    try:
        return parse_party_id(given, kind=kind) == sender
    except InvalidIdentifier:
        return False


def check_letter(
    parts: Sequence[LetterPart],
    *,
    sender: str,
    recipient: str | None,
    signing_certificates: tuple[str, ...],
    seal: KeyPair | None,
    today: date,
) -> LetterCheck:
    """Check the letter's business envelope against its AS4 originalSender and finalRecipient and the register,
    sealing a SignedDelivery (see the module docstring); LetterRefused when it must not be forwarded."""
    for part in parts:
        root = _root(part)
        if root is None:
            continue
        if root.tag == SIGNED_DELIVERY:
            return _signed_delivery(part, root, sender, recipient, signing_certificates, seal, today)
        if root.tag == SEALED_DELIVERY:
            return LetterCheck(SenderNetwork.MINA_MEDDELANDEN, detail="already sealed: passed on for the operator")
        if root.tag == _XHE:
            return _xhe(root, sender, signing_certificates)
        if root.tag == _SBD:
            return _sbd(root, sender)
    return LetterCheck()


def _signed_delivery(
    part: LetterPart,
    root: etree._Element,
    sender: str,
    recipient: str | None,
    registered: tuple[str, ...],
    seal: KeyPair | None,
    today: date,
) -> LetterCheck:
    try:
        verified = verify_signed_delivery(root)
    except EnvelopeError as exc:
        raise LetterRefused(LETTER_SIGNATURE, f"the SignedDelivery does not verify: {exc}") from None
    signer = certificate_sha256(verified.sender_signature.signer)
    if signer not in registered:
        raise LetterRefused(
            LETTER_SIGNATURE, f"the SignedDelivery is signed with a certificate the register does not list for {sender}"
        )
    delivery = verified.delivery
    if delivery.sender.id != (mina_meddelanden_id(sender) or sender):
        raise LetterRefused(LETTER_SENDER, f"the SignedDelivery's Sender {delivery.sender.id} is not {sender}")
    if recipient is None or delivery.recipient != recipient:
        raise LetterRefused(
            LETTER_RECIPIENT, f"the SignedDelivery's Recipient {delivery.recipient} is not the finalRecipient"
        )
    if seal is None:
        raise LetterRefused(LETTER_SIGNATURE, "this router has no key to seal deliveries with")
    sealed = build_sealed_delivery(part.data, seal, received=today, sender=verified.sender_signature.signer)
    return LetterCheck(
        SenderNetwork.MINA_MEDDELANDEN, {part.content_id: sealed}, f"sealed {part.content_id} as intermediary"
    )


def _xhe(root: etree._Element, sender: str, registered: tuple[str, ...]) -> LetterCheck:
    try:
        xhe = parse_xhe(root)
    except EnvelopeError as exc:
        raise LetterRefused(LETTER_SENDER, f"the XHE is not valid: {exc}") from None
    if not _same_party(xhe.from_party.id, xhe.from_party.scheme, sender):
        raise LetterRefused(LETTER_SENDER, f"the XHE's FromParty {xhe.from_party.id} is not {sender}")
    if root.find(SIGNATURE) is not None:
        try:
            verified = verify_xhe(root)
        except EnvelopeError as exc:
            raise LetterRefused(LETTER_SIGNATURE, f"the XHE's signature does not verify: {exc}") from None
        if registered and certificate_sha256(verified.signature.signer) not in registered:
            raise LetterRefused(
                LETTER_SIGNATURE, f"the XHE is signed with a certificate the register does not list for {sender}"
            )
    return LetterCheck(SenderNetwork.SDK)


def _sbd(root: etree._Element, sender: str) -> LetterCheck:
    try:
        header = parse_sbd(root).header
    except EnvelopeError as exc:
        raise LetterRefused(LETTER_SENDER, f"the SBDH is not valid: {exc}") from None
    if not header.sender or not _same_party(header.sender[0].identifier, header.sender[0].authority, sender):
        named = header.sender[0].identifier if header.sender else "nobody"
        raise LetterRefused(LETTER_SENDER, f"the SBDH's Sender {named} is not {sender}")
    return LetterCheck(SenderNetwork.CROSS_BORDER)
