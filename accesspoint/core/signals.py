"""Receipts and error signals: building them from what was received, and checking a receipt we got back."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime

from lxml import etree

from accesspoint.core.envelope import DS, ParsedEnvelope, read_reference
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import (
    Description,
    ErrorInfo,
    MessageInfo,
    Receipt,
    ReferenceEcho,
    SignalMessage,
    UserMessage,
)
from accesspoint.core.namespaces import NS

IdFactory = Callable[[], str]


def signed_references(parsed: ParsedEnvelope) -> tuple[ReferenceEcho, ...]:
    """The ds:References of the message's WS-Security signature (empty for an unsigned message).

    Only the security layer knows whether they verified; a receipt must echo verified references only.
    """
    security = parsed.security_header
    if security is None:
        return ()
    signature = security.find(f"{DS}Signature")
    if signature is None:
        return ()
    return tuple(read_reference(ref) for ref in signature.iterfind(f"{DS}SignedInfo/{DS}Reference"))


def build_receipt(
    received: UserMessage,
    references: Sequence[ReferenceEcho],
    *,
    message_id: str,
    now: datetime,
) -> SignalMessage:
    """The AS4 receipt: NonRepudiationInformation echoing ``references``, or a copy of an unsigned UserMessage."""
    receipt = Receipt(references=tuple(references)) if references else Receipt(user_message=received)
    return SignalMessage(
        message_info=MessageInfo(message_id=message_id, timestamp=now, ref_to_message_id=received.message_id),
        receipt=receipt,
    )


def build_error_signal(
    errors: Sequence[EbmsError],
    *,
    message_id: str,
    now: datetime,
    ref_to_message_id: str | None = None,
) -> SignalMessage:
    """An error signal (ready to sign) for one or more EbmsErrors, referencing the message in error."""
    if not errors:
        raise ValueError("an error signal needs at least one error")
    infos = tuple(
        _described(
            ErrorInfo.from_code(
                error.error_code,
                detail=error.detail,
                ref_to_message_in_error=error.ref_to_message_id or ref_to_message_id,
                severity=error.severity,
            ),
            error.description,
        )
        for error in errors
    )
    return SignalMessage(
        message_info=MessageInfo(message_id=message_id, timestamp=now, ref_to_message_id=ref_to_message_id),
        errors=infos,
    )


def _described(info: ErrorInfo, description: str | None) -> ErrorInfo:
    """The error with its own description instead of the table's, where the error has one."""
    return info if description is None else dataclasses.replace(info, description=Description(description))


def _reference_key(reference: ReferenceEcho) -> tuple[object, ...]:
    return (reference.uri, reference.digest_method, reference.digest_value, reference.transforms)


def check_receipt(
    signal: SignalMessage,
    *,
    sent_message_id: str,
    sent_references: Sequence[ReferenceEcho] = (),
) -> Receipt:
    """Check that a receipt refers to the message we sent and echoes exactly the references we signed.

    Raises EBMS:0302 InvalidReceipt otherwise; an error signal in its place raises its own code.
    """
    if signal.errors:
        first = signal.errors[0]
        code = first.known or ErrorCode.OTHER
        raise EbmsError(code, f"the partner answered with an error: {first.error_code} {first.short_description or ''}")
    if signal.receipt is None:
        raise EbmsError(ErrorCode.INVALID_RECEIPT, "the signal is not a receipt")
    if signal.message_info.ref_to_message_id != sent_message_id:
        raise EbmsError(
            ErrorCode.INVALID_RECEIPT,
            f"receipt refers to {signal.message_info.ref_to_message_id!r}, not to {sent_message_id!r}",
        )
    receipt = signal.receipt
    if sent_references:
        if not receipt.references:
            raise EbmsError(ErrorCode.INVALID_RECEIPT, "receipt of a signed message lacks NonRepudiationInformation")
        got = sorted(map(_reference_key, receipt.references), key=repr)
        want = sorted(map(_reference_key, sent_references), key=repr)
        if got != want:
            raise EbmsError(
                ErrorCode.INVALID_RECEIPT, "receipt's NonRepudiationInformation differs from what was signed"
            )
    elif receipt.user_message is not None and receipt.user_message.message_id != sent_message_id:
        raise EbmsError(ErrorCode.INVALID_RECEIPT, "receipt copies another UserMessage than the one sent")
    return receipt


def receipt_references_element(parsed: ParsedEnvelope) -> list[etree._Element]:
    """The ds:Reference elements inside a received receipt's NonRepudiationInformation."""
    return list(
        parsed.messaging_element.iterfind(
            f".//{{{NS.EBBP}}}NonRepudiationInformation/{{{NS.EBBP}}}MessagePartNRInformation/{DS}Reference"
        )
    )
