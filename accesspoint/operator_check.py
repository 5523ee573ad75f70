"""The conformance battery against an operator's access point (``accesspoint operator check URL``).

An application module (beside the CLI), not part of ``operators``: it speaks AS4 as a sender does, which the
operator's own code never does (it sees verified deliveries only).

For each network form the operator is agreed on (one outgoing P-Mode leg each: Mina meddelanden, SDK, Peppol …):

- ``test-letter``: a letter signed (and encrypted, as the leg says) with this access point's key is sent; the answer
  must be an AS4 receipt signed by the operator's registered certificate, for that letter, echoing the references
  signed (``verify_receipt``: anything else fails the case);
- ``business-answer``: the operator's later end-to-end answer to that test letter (the signed DeliveryNotification,
  with the Mina meddelanden Receipt or SDK Meddelandekvittens its form carries), which comes as an AS4 user message
  on the two-way P-Mode's reply leg to this access point's endpoint. The check listens there itself
  (:class:`AnswerInbox`: the message is decrypted and its signature checked under the reply leg's policy, and it
  gets a signed receipt), and the answer must verify with the operator's answer certificate and fit the letter
  (``operators.receipts.check_end_to_end``: its MessageId and payload digest) within the timeout. Delivered or
  rejected both pass (the test letter is in no network's envelope, so an operator rejects it: it must still say so,
  signed); the report says which, and which network receipts verified. A one-way P-Mode has no reply leg: the case
  fails, naming the form's two-way P-Mode as the one to check;
- ``forged``: the same letter with its signature value altered is sent; the answer must be an ebMS error (EBMS:0101
  FailedAuthentication) and no receipt: an access point that receipts a forged letter fails.

The cases are independent: one that fails (or finds the access point down) is reported and the next one runs.
Signing, encrypting and checking run off the event loop; answers are bounded.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.ids import new_message_id
from accesspoint.core.message import ReceivedMessage, read_message
from accesspoint.core.model import CollaborationInfo, MessageInfo, PartyInfo, SignalMessage, UserMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.core.signals import build_receipt, signed_references
from accesspoint.security.inbound import open_payloads, verify_parts
from accesspoint.security.keys import KeyPair
from accesspoint.security.outbound import Payload, SecuredMessage, secure_message
from accesspoint.security.receipts import sign_signal, verify_receipt
from accesspoint.servicekit.httpclient import fetch
from operators.receipts import ReceiptMismatch, check_end_to_end
from pmode import Binding, Route

MAX_ANSWER = 1024 * 1024  # a receipt or an error signal; more is a failure, not read on
MAX_BUSINESS_ANSWER = 4 * 1024 * 1024  # the operator's answer: a few signed XML documents
ANSWER_TIMEOUT = 60.0  # seconds the operator has to send its business answer
LETTER_ID = "letter@check"
TEST_LETTER = b'<TestLetter xmlns="urn:accesspoint:operators:check:1">conformance check</TestLetter>'


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case of the battery: which form, which case, whether it passed and what was seen."""

    form: str  # the P-Mode id
    case: str  # test-letter | business-answer | forged
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
        [Payload(LETTER_ID, "application/xml", lambda: [TEST_LETTER])],
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


Answer = dict[str, bytes] | str  # an answer's payloads (Content-ID -> bytes), or why there is none


class AnswerInbox:
    """The check's own AS4 endpoint (``POST /as4``) for the operators' answers to its test letters.

    A test letter is announced with :meth:`expect` before it is sent. A user message referring to it is opened
    under the reply leg's policy (decrypted with this access point's keys, its signature checked against the
    operator access point's certificates), answered with a signed receipt, and its payloads handed to
    :meth:`answer`'s waiter; one that does not open is answered 400 and the waiter told why. Anything else is 404.
    """

    def __init__(self, signing_key: KeyPair, decryption_keys: Sequence[KeyPair]) -> None:
        self.signing_key = signing_key
        self.decryption_keys = tuple(decryption_keys)
        self._waiting: dict[str, tuple[Route, tuple[x509.Certificate, ...], asyncio.Future[Answer]]] = {}

    def expect(self, message_id: str, reply: Route, signers: Sequence[x509.Certificate]) -> None:
        """Wait for an answer to ``message_id`` on the ``reply`` leg, signed (in AS4) by one of ``signers``."""
        self._waiting[message_id] = (reply, tuple(signers), asyncio.get_running_loop().create_future())

    async def answer(self, message_id: str, timeout: float) -> Answer:
        """The answer's payloads (Content-ID -> bytes), or why there are none (the timeout, or it did not open)."""
        waiting = self._waiting[message_id][2]
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), timeout)
        except TimeoutError:
            return f"no business answer within {timeout:g} s"

    def application(self) -> web.Application:
        """The endpoint as an aiohttp application."""
        app = web.Application(client_max_size=MAX_BUSINESS_ANSWER)
        app.router.add_post("/as4", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            received = read_message(request.headers.get("Content-Type", ""), body)
        except EbmsError as exc:
            return web.Response(status=400, text=f"{exc.code}: {exc.detail}")
        user = received.parsed.messaging.message
        ref = user.message_info.ref_to_message_id if isinstance(user, UserMessage) else None
        waiting = None if ref is None else self._waiting.get(ref)
        if not isinstance(user, UserMessage) or waiting is None:
            return web.Response(status=404, text="not an answer to a test letter of this check")
        reply, signers, future = waiting
        try:
            payloads, receipt = await asyncio.to_thread(self._open, received, user, reply, signers)
        except EbmsError as exc:
            if not future.done():
                future.set_result(f"the answer {user.message_info.message_id} does not open: {exc.code} {exc.detail}")
            return web.Response(status=400, text=f"{exc.code}: {exc.detail}")
        if not future.done():
            future.set_result(payloads)
        return web.Response(body=receipt, content_type=SoapVersion.V12.content_type)

    def _open(
        self, received: ReceivedMessage, user: UserMessage, reply: Route, signers: Sequence[x509.Certificate]
    ) -> tuple[dict[str, bytes], bytes]:
        parts = verify_parts(received, reply.security, keys=self.decryption_keys, partner_certificates=signers)
        kept: dict[str, io.BytesIO] = {}
        open_payloads(parts, keep=lambda content_id: kept.setdefault(content_id, io.BytesIO()))
        now = datetime.now(UTC)
        signal = build_receipt(user, signed_references(received.parsed), message_id=new_message_id("check"), now=now)
        receipt = sign_signal(signal, self.signing_key, reply.security, new_id=lambda: f"_{uuid.uuid4().hex}")
        return {cid: data.getvalue() for cid, data in kept.items()}, receipt


def reply_route(route: Route) -> Route | None:
    """The leg the operator answers a letter sent on ``route`` on: the two-way P-Mode's reply leg (None: one-way)."""
    pmode = route.pmode
    if pmode.binding is not Binding.PUSH_AND_PUSH or len(pmode.legs) < 2:
        return None
    return Route(pmode, pmode.legs[1])


def _judge_answer(
    payloads: dict[str, bytes], message_id: str, certificates: Sequence[x509.Certificate]
) -> tuple[bool, str]:
    """Whether the operator's answer verifies with one of ``certificates`` and fits the test letter."""
    why = "no answer certificate to verify with"
    for certificate in certificates:
        try:
            answer = check_end_to_end(
                payloads, message_id=message_id, sent={LETTER_ID: TEST_LETTER}, operator=certificate
            )
        except ReceiptMismatch as exc:
            why = str(exc)
            continue
        receipts = ", ".join(answer.network_receipts) or "no network receipt"
        reasons = "; ".join(f"{r.code}: {r.text}" for r in answer.notification.reasons)
        said = f"{answer.state}" + (f" ({reasons})" if reasons else "")
        signer = answer.signer.subject.rfc4514_string()
        return True, f"{said}, signed by {signer}; {receipts}"
    return False, f"the answer does not verify with the operator's certificate or does not fit the letter: {why}"


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
    inbox: AnswerInbox | None = None,
    answer_certificates: Sequence[x509.Certificate] = (),
    answer_timeout: float = ANSWER_TIMEOUT,
    now: datetime | None = None,
) -> list[CaseResult]:
    """Run the cases for each route against ``url``; the results in order. ``certificates``: the operator's
    registered signing certificates (default: each route's partner signing certificate); ``inbox``: where the
    operator's business answers arrive (None: that case fails, nothing to receive them with);
    ``answer_certificates``: what those answers must be signed with (default: ``certificates``)."""
    results = []
    for route in routes:
        trusted = list(certificates) or [c for c in (route.partner_signing_certificate,) if c is not None]
        answer_signers = list(answer_certificates) or trusted
        reply = reply_route(route)
        for case in ("test-letter", "forged"):
            message_id = f"check-{case}-{uuid.uuid4().hex}@accesspoint"
            at = now or datetime.now(UTC)
            if case == "test-letter" and inbox is not None and reply is not None:
                inbox.expect(message_id, reply, trusted)
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
                if case == "test-letter":
                    results.append(CaseResult(route.pmode.id, "business-answer", False, message_id,
                                              "not sent: no test letter to answer"))  # fmt: skip
                continue
            kind = answer.headers.get("Content-Type", "")
            if case == "forged":
                passed, detail = await asyncio.to_thread(_judge_forged, kind, answer.body)
            else:
                passed, detail = await asyncio.to_thread(_judge_letter, route, secured, trusted, kind, answer.body)
            results.append(CaseResult(route.pmode.id, case, passed, message_id, f"HTTP {answer.status}: {detail}"))
            if case == "test-letter":
                passed, detail = await _business_answer(route, reply, inbox, message_id, answer_signers, answer_timeout)
                results.append(CaseResult(route.pmode.id, "business-answer", passed, message_id, detail))
    return results


async def _business_answer(
    route: Route,
    reply: Route | None,
    inbox: AnswerInbox | None,
    message_id: str,
    signers: Sequence[x509.Certificate],
    timeout: float,
) -> tuple[bool, str]:
    if reply is None:
        one_way = f"P-Mode {route.pmode.id} is one-way: the operator has no leg to answer on"
        return False, one_way + " (check the form's two-way P-Mode)"
    if inbox is None:
        return False, "no endpoint of this check to receive the answer on"
    payloads = await inbox.answer(message_id, timeout)
    if isinstance(payloads, str):
        return False, payloads
    return await asyncio.to_thread(_judge_answer, payloads, message_id, signers)
