"""The conformance battery against an operator's access point (``accesspoint operator check URL``).

An application module (beside the CLI), not part of ``operators``: it speaks AS4 as a sender does, which the
operator's own code never does (it sees verified deliveries only).

For each network form the operator is agreed on (one outgoing P-Mode leg each: Mina meddelanden, SDK, Peppol …):

- ``test-letter``: a letter signed (and encrypted, as the leg says) with this access point's key is sent; the answer
  must be an AS4 receipt signed by the operator's registered certificate, for that letter, echoing the references
  signed (``verify_receipt``: anything else fails the case);
- ``forged``: the same letter with its signature value altered is sent; the answer must be an ebMS error (EBMS:0101
  FailedAuthentication) and no receipt: an access point that receipts a forged letter fails.

The cases are independent: one that fails (or finds the access point down) is reported and the next one runs.
Signing, encrypting and checking run off the event loop; answers are bounded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from cryptography import x509

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.model import CollaborationInfo, MessageInfo, PartyInfo, SignalMessage, UserMessage
from accesspoint.security.keys import KeyPair
from accesspoint.security.outbound import Payload, SecuredMessage, secure_message
from accesspoint.security.receipts import verify_receipt
from accesspoint.servicekit.httpclient import fetch
from pmode import Route

MAX_ANSWER = 1024 * 1024  # a receipt or an error signal; more is a failure, not read on
TEST_LETTER = b'<TestLetter xmlns="urn:accesspoint:operators:check:1">conformance check</TestLetter>'


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case of the battery: which form, which case, whether it passed and what was seen."""

    form: str  # the P-Mode id
    case: str  # test-letter | forged
    passed: bool
    message_id: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The case as the report shows it."""
        return {
            "form": self.form,
            "case": self.case,
            "passed": self.passed,
            "message_id": self.message_id,
            "detail": self.detail,
        }


def _letter(route: Route, message_id: str, now: datetime) -> UserMessage:
    return UserMessage(
        message_info=MessageInfo(message_id=message_id, timestamp=now),
        party_info=PartyInfo(sender=route.from_party, receiver=route.to_party),
        collaboration_info=CollaborationInfo(
            service=route.leg.service,
            action=route.leg.action,
            conversation_id=message_id,
            agreement_ref=route.agreement_ref,
        ),
        mpc=route.leg.mpc,
    )


def _secured(route: Route, message_id: str, key: KeyPair, now: datetime) -> tuple[SecuredMessage, bytes]:
    secured = secure_message(
        _letter(route, message_id, now),
        [Payload("letter@check", "application/xml", lambda: [TEST_LETTER])],
        route.security,
        signing_key=key,
        recipient_certificate=route.partner_encryption_certificate,
    )
    return secured, secured.packed.to_bytes()


def forge(body: bytes) -> bytes:
    """The body with one character of its first SignatureValue changed (still valid base64, no longer valid)."""
    start = body.find(b"SignatureValue")
    opening = body.find(b">", start) + 1
    if start < 0 or opening == 0:
        raise ValueError("the letter is not signed: nothing to forge")
    flipped = b"B" if body[opening + 3 : opening + 4] != b"B" else b"C"
    return body[: opening + 3] + flipped + body[opening + 4 :]


def _judge_letter(
    route: Route, secured: SecuredMessage, certificates: Sequence[x509.Certificate], kind: str, answer: bytes
) -> tuple[bool, str]:
    try:
        parsed = read_message(kind, answer).parsed
        verified = verify_receipt(
            parsed,
            route.security,
            sent_message_id=secured.user_message.message_id,
            sent_references=secured.references,
            partner_certificates=certificates,
        )
    except EbmsError as exc:
        return False, f"no valid receipt: {exc.code} {exc.log_detail or exc.detail}"
    if verified.signature is None:
        return True, "an unsigned receipt (the leg accepts one)"
    return True, f"receipt signed by {verified.signature.signer.certificate.subject.rfc4514_string()}"


def _judge_forged(kind: str, answer: bytes) -> tuple[bool, str]:
    try:
        signal = read_message(kind, answer).parsed.messaging.message
    except EbmsError as exc:
        return False, f"the answer is not an ebMS signal: {exc.detail}"
    if not isinstance(signal, SignalMessage):
        return False, "the answer is a user message, not a signal"
    if signal.receipt is not None:
        return False, "the forged letter was receipted"
    codes = sorted({e.error_code for e in signal.errors})
    if ErrorCode.FAILED_AUTHENTICATION.code in codes:
        return True, f"refused with {', '.join(codes)}"
    return False, f"refused, but with {', '.join(codes) or 'no error'} rather than EBMS:0101"


async def check_operator(
    url: str,
    routes: Sequence[Route],
    key: KeyPair,
    *,
    http: aiohttp.ClientSession,
    certificates: Sequence[x509.Certificate] = (),
    now: datetime | None = None,
) -> list[CaseResult]:
    """Run both cases for each route against ``url``; the results in order. ``certificates``: the operator's
    registered signing certificates (default: each route's partner signing certificate)."""
    results = []
    for route in routes:
        trusted = list(certificates) or [c for c in (route.partner_signing_certificate,) if c is not None]
        for case in ("test-letter", "forged"):
            message_id = f"check-{case}-{uuid.uuid4().hex}@accesspoint"
            at = now or datetime.now(UTC)
            try:
                secured, body = await asyncio.to_thread(_secured, route, message_id, key, at)
                if case == "forged":
                    body = forge(body)
                answer = await fetch(
                    http, "POST", url, data=body, headers={"Content-Type": secured.packed.content_type},
                    max_bytes=MAX_ANSWER,
                )  # fmt: skip
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                results.append(CaseResult(route.pmode.id, case, False, message_id, f"not sent: {exc!s:.300}"))
                continue
            kind = answer.headers.get("Content-Type", "")
            if case == "forged":
                passed, detail = await asyncio.to_thread(_judge_forged, kind, answer.body)
            else:
                passed, detail = await asyncio.to_thread(_judge_letter, route, secured, trusted, kind, answer.body)
            results.append(CaseResult(route.pmode.id, case, passed, message_id, f"HTTP {answer.status}: {detail}"))
    return results
