"""The Mina meddelanden Recipient v3 contract (``isReachable``, ``isRegistered``), sans-I/O: bytes in, bytes out.

SOAP 1.1, document/literal, ``soapAction=""`` (contracts/Recipient.wsdl). Requests are read with the hardened
parser and checked the way the schema would (element names and order, the RecipientId and OrganizationNumber
patterns, at most 1,000 recipientId); anything else is a SOAP fault whose detail is the contract's
``commonv3:applicationFault`` (ExceptionInformation: ErrorCode, Description, CallId).

Fault error codes:

====  ======================================================================
1001  not a SOAP 1.1 envelope, or not well-formed
1002  unknown operation (only isReachable and isRegistered are offered)
1003  a request element out of the schema (name, order, count, pattern)
1004  more than 1,000 recipients
5000  FaR failed (the database); the sender may retry
====  ======================================================================

A recipient that matches the schema but fails the check digit is answered, not faulted: ``Type`` ``Not``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape

from lxml import etree

from accesspoint.core.errors import EbmsError
from accesspoint.core.xml import holds_elements, parse_xml, string_value
from far.identifiers import RECIPIENT_ID_PATTERN
from far.model import AccountStatus
from far.service import MAX_RECIPIENTS, Operator, Reachability

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
RECIPIENT_V3 = "http://minameddelanden.gov.se/schema/Recipient/v3"
RECIPIENT_V1 = "http://minameddelanden.gov.se/schema/Recipient"
COMMON_V3 = "http://minameddelanden.gov.se/schema/Common/v3"
CONTENT_TYPE = "text/xml; charset=utf-8"
# A SOAP request for 1,000 recipients is about 60 KB; anything past 1 MiB is refused before parsing.
MAX_REQUEST_BYTES = 1024 * 1024
_ORGANIZATION_NUMBER = re.compile(r"16\d{10}")
_TYPE = {AccountStatus.SECURE: "Secure", AccountStatus.ANONYMOUS: "Anonymous", AccountStatus.NONE: "Not"}


class FaultCode(enum.IntEnum):
    """ExceptionInformation/ErrorCode values of FaR's faults (see the module docstring)."""

    NOT_SOAP = 1001
    UNKNOWN_OPERATION = 1002
    INVALID_REQUEST = 1003
    TOO_MANY_RECIPIENTS = 1004
    INTERNAL = 5000


class SoapFault(Exception):
    """A request FaR answers with a SOAP fault."""

    def __init__(self, code: FaultCode, description: str) -> None:
        self.code = code
        self.description = description[:512]
        super().__init__(f"{int(code)}: {self.description}")

    @property
    def client(self) -> bool:
        """True when the sender is at fault (``soap:Client``), False for ``soap:Server``."""
        return self.code is not FaultCode.INTERNAL


@dataclass(frozen=True)
class IsReachable:
    """An isReachable request: the sender (10 digits, without ``16``) and the recipients in order."""

    sender_orgnr: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class IsRegistered:
    """An isRegistered request."""

    recipients: tuple[str, ...]


def parse_request(body: bytes) -> IsReachable | IsRegistered:
    """Read a Recipient v3 request; raise SoapFault when it is not one FaR answers."""
    try:
        envelope = parse_xml(body, max_bytes=MAX_REQUEST_BYTES, what="SOAP request")
    except EbmsError as exc:
        raise SoapFault(FaultCode.NOT_SOAP, exc.detail) from None
    if envelope.tag != f"{{{SOAP11}}}Envelope":
        raise SoapFault(FaultCode.NOT_SOAP, f"root element is {envelope.tag}, not a SOAP 1.1 Envelope")
    children = _elements(envelope)
    bodies = [child for child in children if child.tag == f"{{{SOAP11}}}Body"]
    if len(bodies) != 1:
        raise SoapFault(FaultCode.NOT_SOAP, "a SOAP 1.1 Envelope has exactly one Body")
    operations = _elements(bodies[0])
    if len(operations) != 1:
        raise SoapFault(FaultCode.NOT_SOAP, "the Body must hold exactly one request element")
    operation = operations[0]
    if operation.tag == f"{{{RECIPIENT_V3}}}isReachable":
        return _is_reachable(operation)
    if operation.tag == f"{{{RECIPIENT_V3}}}isRegistered":
        return IsRegistered(_recipient_ids(_elements(operation), minimum=1))
    raise SoapFault(FaultCode.UNKNOWN_OPERATION, f"operation {operation.tag} is not offered by FaR")


def _elements(parent: etree._Element) -> list[etree._Element]:
    # Comments and processing instructions are not elements; text between elements is ignored, as the schema
    # (element-only content) would let a validating reader ignore whitespace.
    return [child for child in parent if isinstance(child.tag, str)]


def _value(element: etree._Element) -> str:
    """A request value: the element's string-value (a comment inside changes nothing), trimmed; no element in it."""
    if holds_elements(element):
        raise SoapFault(FaultCode.INVALID_REQUEST, f"unexpected element inside {etree.QName(element).localname}")
    return string_value(element).strip()


def _is_reachable(operation: etree._Element) -> IsReachable:
    children = _elements(operation)
    if not children or children[0].tag != f"{{{RECIPIENT_V3}}}senderOrgNr":
        raise SoapFault(FaultCode.INVALID_REQUEST, "isReachable starts with senderOrgNr")
    sender = _value(children[0])
    if not _ORGANIZATION_NUMBER.fullmatch(sender):
        raise SoapFault(FaultCode.INVALID_REQUEST, "senderOrgNr is 16 followed by the 10-digit organisationsnummer")
    return IsReachable(sender[2:], _recipient_ids(children[1:], minimum=0))


def _recipient_ids(elements: Sequence[etree._Element], *, minimum: int) -> tuple[str, ...]:
    if len(elements) > MAX_RECIPIENTS:
        raise SoapFault(FaultCode.TOO_MANY_RECIPIENTS, f"at most {MAX_RECIPIENTS} recipientId per request")
    if len(elements) < minimum:
        raise SoapFault(FaultCode.INVALID_REQUEST, "at least one recipientId is required")
    ids = []
    for element in elements:
        if element.tag != f"{{{RECIPIENT_V3}}}recipientId":
            raise SoapFault(FaultCode.INVALID_REQUEST, f"unexpected element {element.tag}")
        value = _value(element)
        if not RECIPIENT_ID_PATTERN.fullmatch(value):
            raise SoapFault(FaultCode.INVALID_REQUEST, f"recipientId {value[:32]!r} is not a RecipientId")
        ids.append(value)
    return tuple(ids)


# ---------------------------------------------------------------------------------------------- answers

_ENVELOPE_START = f'<?xml version="1.0" encoding="UTF-8"?>\n<S:Envelope xmlns:S="{SOAP11}"><S:Body>'
_ENVELOPE_END = "</S:Body></S:Envelope>"


def _datetime(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _supplier(operator: Operator) -> str:
    # ServiceAdress is the operator's Service v3 address where it has one, else its AS4 endpoint; the schema
    # wants an anyURI, and an empty one (as InternalServiceAdress is in the recorded samples) is one.
    address = operator.service_address or operator.endpoint or ""
    return (
        f"<r:ServiceSupplier><r:Id>16{operator.id}</r:Id><r:Name>{escape(operator.name)}</r:Name>"
        f"<r:ServiceAdress>{escape(address)}</r:ServiceAdress>"
        + ("" if operator.ui_address is None else f"<r:UIAdress>{escape(operator.ui_address)}</r:UIAdress>")
        + "<r:InternalServiceAdress/></r:ServiceSupplier>"
    )


def _account_status(result: Reachability, suppliers: dict[int, str]) -> str:
    parts = [
        f"<r:RecipientId>{escape(result.recipient)}</r:RecipientId>",
        f"<r:Type>{_TYPE[result.status]}</r:Type>",
        f"<r:Pending>{'true' if result.pending else 'false'}</r:Pending>",
    ]
    operator = result.operator
    if operator is not None and result.status is not AccountStatus.NONE:
        # A handful of operators serve a thousand recipients: each one's element is written once per answer
        # (keyed by identity: the service hands out one Operator object per operator and answer).
        supplier = suppliers.get(id(operator))
        if supplier is None:
            supplier = suppliers[id(operator)] = _supplier(operator)
        parts.append(supplier)
    if result.last_registration is not None:
        parts.append(f"<r:LastRegistration>{_datetime(result.last_registration)}</r:LastRegistration>")
    return "".join(parts)


def is_reachable_response(results: Sequence[Reachability]) -> bytes:
    """The isReachableResponse envelope: one ReachabilityStatus per recipient, in request order."""
    items = []
    suppliers: dict[int, str] = {}
    for result in results:
        change = result.sender_refused_at
        items.append(
            f"<v3:return><r:AccountStatus>{_account_status(result, suppliers)}</r:AccountStatus>"
            f"<r:SenderAccepted>{'true' if result.sender_accepted else 'false'}</r:SenderAccepted>"
            + ("" if change is None else f"<r:LastSenderAcceptChange>{_datetime(change)}</r:LastSenderAcceptChange>")
            + "</v3:return>"
        )
    body = f'<v3:isReachableResponse xmlns:v3="{RECIPIENT_V3}" xmlns:r="{RECIPIENT_V1}">{"".join(items)}'
    return (_ENVELOPE_START + body + "</v3:isReachableResponse>" + _ENVELOPE_END).encode()


def is_registered_response(results: Sequence[Reachability]) -> bytes:
    """The isRegisteredResponse envelope: one AccountStatus per recipient, in request order."""
    suppliers: dict[int, str] = {}
    items = "".join(f"<v3:return>{_account_status(result, suppliers)}</v3:return>" for result in results)
    body = f'<v3:isRegisteredResponse xmlns:v3="{RECIPIENT_V3}" xmlns:r="{RECIPIENT_V1}">{items}'
    return (_ENVELOPE_START + body + "</v3:isRegisteredResponse>" + _ENVELOPE_END).encode()


def fault_response(fault: SoapFault, call_id: str) -> bytes:
    """A SOAP 1.1 fault whose detail is ``commonv3:applicationFault``; ``call_id`` is 20 to 50 characters."""
    code = "S:Client" if fault.client else "S:Server"
    detail = (
        f'<c:applicationFault xmlns:c="{COMMON_V3}"><c:ErrorCode>{int(fault.code)}</c:ErrorCode>'
        f"<c:Description>{escape(fault.description)}</c:Description><c:CallId>{escape(call_id)}</c:CallId>"
        "</c:applicationFault>"
    )
    body = (
        f"<S:Fault><faultcode>{code}</faultcode><faultstring>{escape(fault.description)}</faultstring>"
        f"<detail>{detail}</detail></S:Fault>"
    )
    return (_ENVELOPE_START + body + _ENVELOPE_END).encode()
