"""The Service v3 adapter: ``deliverSecure`` of a SealedDelivery to operators still on Mina meddelanden's SOAP.

Client side (``ServiceV3Client``): our side, as the intermediary, posts a SOAP 1.1 ``deliverSecure`` to the
operator's ServiceAdress (the one FaR names) and reads the ``deliverSecureResponse`` (TransId, per recipient
Delivered) or the ``applicationFault`` (ErrorCode, Description, CallId). Request and answer are validated
against the Service v3 schemas when a schema is given (``load_minameddelanden_schema``); an answer that is
another element (a recorded ``isRegisteredResponse``, say) is refused.

Server side (``legacy_operator_app``): a small Service v3 endpoint, the legacy operator in tests and a shim for
an operator that wants to keep the contract: it validates the request, checks the delivery exactly as the AS4
operator does (``deliveries.check_delivery``: seal, sender signature, trust) and hands it to a callback that
stores it and says whether the recipient had a mailbox.

The WSDL's soapAction is ``""`` for every operation; the binding is document/literal SOAP 1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from lxml import etree

from accesspoint.core.xml import find_value
from accesspoint.envelopes._common import EnvelopeError, parse_document, schema_findings, serialize, sub
from accesspoint.envelopes.minameddelanden import (
    SERVICE3_NS,
    SERVICE_NS,
    DeliveryResult,
    parse_delivery_result,
    to_deliver_secure,
)
from operators.deliveries import CheckedDelivery, DeliveryTrust, Refusal, check_delivery

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
COMMON3_NS = "http://minameddelanden.gov.se/schema/Common/v3"
_E, _SV3, _SV, _C3 = f"{{{SOAP11_NS}}}", f"{{{SERVICE3_NS}}}", f"{{{SERVICE_NS}}}", f"{{{COMMON3_NS}}}"
SOAP11_CONTENT_TYPE = "text/xml; charset=utf-8"

# ExceptionInformation ErrorCodes this adapter's server side answers with (the contract leaves them open).
FAULT_SCHEMA = 1001
FAULT_SIGNATURE = 1002
FAULT_FORMAT = 1003


class DeliverSecureFault(Exception):
    """The operator answered with a SOAP Fault carrying ``applicationFault`` (or an unusable answer)."""

    def __init__(self, error_code: int, description: str, call_id: str = "") -> None:
        super().__init__(f"{error_code}: {description}")
        self.error_code = error_code
        self.description = description
        self.call_id = call_id


def _validate(schema: etree.XMLSchema | None, element: etree._Element) -> None:
    if schema is None:
        return
    findings = schema_findings(schema, element)
    if findings:
        raise EnvelopeError(findings)


def _envelope(child: etree._Element) -> bytes:
    envelope = etree.Element(f"{_E}Envelope", nsmap={"soap": SOAP11_NS})
    sub(envelope, f"{_E}Body").append(child)
    return serialize(envelope)


def body_child(data: bytes) -> etree._Element:
    """The one element in the Body of a SOAP 1.1 envelope (EnvelopeError otherwise)."""
    root = parse_document(data, what="SOAP envelope")
    if root.tag != f"{_E}Envelope":
        raise EnvelopeError(f"not a SOAP 1.1 envelope: {root.tag}")
    body = root.find(f"{_E}Body")
    children = [c for c in body if isinstance(c.tag, str)] if body is not None else []
    if len(children) != 1:
        raise EnvelopeError("the SOAP Body must hold exactly one element")
    return children[0]


def deliver_secure_request(sealed: bytes | etree._Element, *, schema: etree.XMLSchema | None = None) -> bytes:
    """The SOAP 1.1 ``deliverSecure`` request for a SealedDelivery (validated when ``schema`` is given)."""
    request = to_deliver_secure(sealed)
    _validate(schema, request)
    return _envelope(request)


def read_deliver_secure_answer(data: bytes, *, schema: etree.XMLSchema | None = None) -> DeliveryResult:
    """The DeliveryResult of a ``deliverSecureResponse``; DeliverSecureFault for a fault, EnvelopeError for
    anything else (another element, or an answer the schema refuses)."""
    child = body_child(data)
    if child.tag == f"{_E}Fault":
        fault = child.find(f"detail/{_C3}applicationFault")
        if fault is None:
            raise DeliverSecureFault(0, (find_value(child, "faultstring") or "SOAP Fault")[:500])
        try:
            code = int(find_value(fault, f"{_C3}ErrorCode") or "0")
        except ValueError:
            code = 0
        description, call_id = find_value(fault, f"{_C3}Description"), find_value(fault, f"{_C3}CallId")
        raise DeliverSecureFault(code, description or "", call_id or "")
    _validate(schema, child)
    return parse_delivery_result(child)


@dataclass
class ServiceV3Client:
    """Posts ``deliverSecure`` to one operator's Service v3 endpoint."""

    url: str
    schema: etree.XMLSchema | None = None
    session: aiohttp.ClientSession | None = None
    timeout: float = 60.0

    async def deliver_secure(self, sealed: bytes | etree._Element) -> DeliveryResult:
        """Deliver a SealedDelivery; the operator's DeliveryResult, or DeliverSecureFault / EnvelopeError."""
        return await self.post(deliver_secure_request(sealed, schema=self.schema))

    async def post(self, request: bytes) -> DeliveryResult:
        """Post a ready ``deliverSecure`` SOAP request and read the answer."""
        session = self.session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            headers = {"Content-Type": SOAP11_CONTENT_TYPE, "SOAPAction": '""'}
            async with session.post(self.url, data=request, headers=headers) as response:
                answer = await response.read()
                kind = response.headers.get("Content-Type", "")
        finally:
            if self.session is None:
                await session.close()
        if "xml" not in kind:
            raise DeliverSecureFault(0, f"HTTP {response.status} with {kind or 'no content type'}")
        return read_deliver_secure_answer(answer, schema=self.schema)


# --- the legacy operator (server side) ---

Deliver = Callable[[CheckedDelivery], Awaitable[bool]]


def _call_id() -> str:
    return f"call-{secrets.token_hex(12)}"  # 29 characters: CallId is 20 to 50


def fault_response(code: int, description: str, *, schema: etree.XMLSchema | None = None) -> bytes:
    """A SOAP 1.1 Fault whose detail is a Common v3 ``applicationFault``."""
    fault = etree.Element(f"{_E}Fault", nsmap={"soap": SOAP11_NS})
    sub(fault, "faultcode", "soap:Client" if code != 0 else "soap:Server")
    sub(fault, "faultstring", description[:500])
    detail = sub(fault, "detail")
    information = etree.SubElement(detail, f"{_C3}applicationFault", nsmap={"c3": COMMON3_NS})
    sub(information, f"{_C3}ErrorCode", str(code))
    sub(information, f"{_C3}Description", description[:500])
    sub(information, f"{_C3}CallId", _call_id())
    _validate(schema, information)
    return _envelope(fault)


def deliver_secure_response(
    trans_id: str, statuses: list[tuple[str, bool]], *, schema: etree.XMLSchema | None = None
) -> bytes:
    """A SOAP 1.1 ``deliverSecureResponse``."""
    response = etree.Element(f"{_SV3}deliverSecureResponse", nsmap={"svc3": SERVICE3_NS, "svc": SERVICE_NS})
    result = sub(response, f"{_SV3}return")
    sub(result, f"{_SV}TransId", trans_id)
    for recipient, delivered in statuses:
        status = sub(result, f"{_SV}Status")
        sub(status, f"{_SV}RecipientId", recipient)
        sub(status, f"{_SV}Delivered", "true" if delivered else "false")
    _validate(schema, response)
    return _envelope(response)


Handler = Callable[[web.Request], Awaitable[web.Response]]


SOAP_MAX_SIZE = 48 * 1024 * 1024  # a Mina meddelanden delivery of 30 MB, base64 in XML, with room to spare
LARGE_BODY = 1024 * 1024


@dataclass
class SoapBodyLimit:
    """How much of a ``deliverSecure`` request is taken in before anything about its sender is known.

    At most ``max_size`` bytes (a declared Content-Length above it is refused before reading, 413), and bodies above
    ``large`` only ``max_large`` at a time (503 with Retry-After): checking a delivery's seal and signature holds its
    XML several times over in memory, so concurrency, not only size, bounds the process's memory.
    """

    max_size: int = SOAP_MAX_SIZE
    max_large: int = 1
    large: int = LARGE_BODY
    retry_after: int = 10
    in_progress: int = 0  # large bodies being read or checked now

    @contextlib.asynccontextmanager
    async def admitted(self, request: web.Request) -> AsyncIterator[Callable[[], Awaitable[bytes]]]:
        """A reader of the request's body within the limits; _Refused when it may not be read."""
        declared = request.content_length
        if declared is not None and declared > self.max_size:
            raise _Refused(413, f"the request is {declared} bytes; at most {self.max_size} are taken")
        large = declared is None or declared > self.large
        if large and self.in_progress >= self.max_large:
            raise _Refused(503, "busy with other large deliveries; try again later", retry_after=self.retry_after)
        self.in_progress += large
        try:
            yield lambda: self._read(request)
        finally:
            self.in_progress -= large

    async def _read(self, request: web.Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self.max_size:
                raise _Refused(413, f"the request is larger than {self.max_size} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


class _Refused(Exception):
    def __init__(self, status: int, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.retry_after = status, reason, retry_after


def deliver_secure_handler(
    deliver: Deliver,
    trust: DeliveryTrust,
    *,
    schema: etree.XMLSchema | None = None,
    clock: Callable[[], datetime] | None = None,
    limit: SoapBodyLimit | None = None,
) -> Handler:
    """The aiohttp handler of a Service v3 ``deliverSecure`` endpoint; ``deliver`` stores a checked delivery
    and says whether the recipient had a mailbox (``Delivered``). The body is read within ``limit``, and parsed
    and checked in a worker thread (a large delivery's XML and signatures do not hold up the event loop)."""
    now = clock or (lambda: datetime.now(UTC))
    bounds = limit or SoapBodyLimit()

    def soap(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=body, status=status, headers={"Content-Type": SOAP11_CONTENT_TYPE, **(headers or {})})

    async def handle(request: web.Request) -> web.Response:
        try:
            async with bounds.admitted(request) as read:
                body = await read()
                checked = await asyncio.to_thread(_check_request, body, trust, schema, now())
        except _Refused as refused:
            code = 0 if refused.status == 503 else FAULT_FORMAT
            retry = {} if refused.retry_after is None else {"Retry-After": str(refused.retry_after)}
            return soap(fault_response(code, refused.reason, schema=schema), refused.status, retry)
        if isinstance(checked, bytes):
            return soap(checked, 500)
        delivered = await deliver(checked)
        answer = deliver_secure_response(str(uuid.uuid4()), [(checked.recipient, delivered)], schema=schema)
        return soap(answer)

    return handle


def _check_request(
    body: bytes, trust: DeliveryTrust, schema: etree.XMLSchema | None, at: datetime
) -> CheckedDelivery | bytes:
    """The checked delivery of a ``deliverSecure`` request, or the fault that answers it."""
    try:
        child = body_child(body)
    except EnvelopeError as exc:
        return fault_response(FAULT_FORMAT, str(exc), schema=schema)
    if child.tag != f"{_SV3}deliverSecure":
        return fault_response(FAULT_FORMAT, f"operation not offered: {child.tag}", schema=schema)
    try:
        _validate(schema, child)
    except EnvelopeError as exc:
        return fault_response(FAULT_SCHEMA, str(exc), schema=schema)
    try:
        return check_delivery(etree.tostring(child), trust, at=at)
    except Refusal as refusal:
        code = FAULT_SIGNATURE if refusal.code in ("signature", "seal") else FAULT_SCHEMA
        return fault_response(code, refusal.text, schema=schema)


def legacy_operator_app(
    deliver: Deliver,
    trust: DeliveryTrust,
    *,
    schema: etree.XMLSchema | None = None,
    clock: Callable[[], datetime] | None = None,
    limit: SoapBodyLimit | None = None,
) -> web.Application:
    """A Service v3 endpoint (any path) answering ``deliverSecure`` (see ``deliver_secure_handler``)."""
    bounds = limit or SoapBodyLimit()
    # The handler reads the body itself, within its limit; aiohttp's own cap only has to stay out of the way.
    app = web.Application(client_max_size=bounds.max_size)
    app.router.add_post("/{tail:.*}", deliver_secure_handler(deliver, trust, schema=schema, clock=clock, limit=bounds))
    return app


__all__ = [
    "DeliverSecureFault",
    "ServiceV3Client",
    "SoapBodyLimit",
    "deliver_secure_handler",
    "deliver_secure_request",
    "deliver_secure_response",
    "fault_response",
    "legacy_operator_app",
    "read_deliver_secure_answer",
]
