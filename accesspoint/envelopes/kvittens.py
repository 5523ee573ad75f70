"""SDK's Meddelandekvittens: the asynchronous message receipt, a UBL 2.1 ApplicationResponse under DIGG's profile.

ACCEPTED carries no line; REJECTED carries one LineResponse per reason, each with a reason code (``SV`` schema,
``BV`` business rule, ``SIG`` signature), the place (an XPath, or ``NA``), a status reason code and text. The
receipt refers to the message by the XHE's Header/ID and travels in an XHE of its own (signed, not encrypted).

Validation is DIGG's cut-down UBL schema (``schemas.load_application_response_schema``) plus the profile rules
R1-APP … R9-APP, ISO schematron with ``queryBinding="xslt2"`` re-expressed in Python here as in ``xhe``. R1-APP
("only the elements and attributes of this specification") is a list of forbidden UBL paths in DIGG's file; here
it is the equivalent allow-list of the profile's paths (a name outside UBL altogether also fires it, which the
full UBL schema would refuse anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from enum import StrEnum

from lxml import etree

from accesspoint.core.xml import holds_elements, string_value
from accesspoint.envelopes._common import (
    ISO6523_ACTORID,
    EnvelopeError,
    Finding,
    expect_root,
    need,
    need_text,
    optional_text,
    parse_date,
    parse_document,
    schema_findings,
    serialize,
    sub,
    text,
)

APP_NS = "urn:oasis:names:specification:ubl:schema:xsd:ApplicationResponse-2"
CAC_NS = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC_NS = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
_R, _A, _B = f"{{{APP_NS}}}", f"{{{CAC_NS}}}", f"{{{CBC_NS}}}"

RESPONSE_CUSTOMIZATION_ID = "urn:fdc:digg.se:edelivery:messagetype:response:1"
RESPONSE_PROFILE_ID = "bdx:noprocess"
# SDK Kodlistor: the receipt's document type identifier (suffixed with the transport model).
RESPONSE_DOCUMENT_ID = (
    "urn:oasis:names:specification:ubl:schema:xsd:ApplicationResponse-2::ApplicationResponse"
    "##fdc:digg.se:edelivery:messagetype:response:1::2.1"
)
NOT_APPLICABLE = "NA"


class ResponseCode(StrEnum):
    """Document-level outcome (R5-APP)."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class ReasonCode(StrEnum):
    """Line-level reason (R6-APP): schema, business rule or signature."""

    SCHEMA = "SV"
    BUSINESS_RULE = "BV"
    SIGNATURE = "SIG"


@dataclass(frozen=True, slots=True)
class LineResponse:
    """One reason for a rejection: where (an XPath or ``NA``), which kind, which rule and what is wrong."""

    reason: ReasonCode
    status_reason: str
    line_id: str = NOT_APPLICABLE
    status_reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class ApplicationResponse:
    """A Meddelandekvittens. ``sender`` and ``receiver`` are participant ids (``0203:myndighetA.org``);
    ``document_reference`` is the ID of the XHE the receipt answers."""

    id: str
    issue_date: date
    issue_time: time
    sender: str
    receiver: str
    document_reference: str
    code: ResponseCode
    lines: tuple[LineResponse, ...] = ()
    sender_scheme: str = ISO6523_ACTORID
    receiver_scheme: str = ISO6523_ACTORID
    customization_id: str = RESPONSE_CUSTOMIZATION_ID
    profile_id: str = RESPONSE_PROFILE_ID


_LINE = f"{_A}DocumentResponse/{_A}LineResponse"
_ALLOWED = frozenset(
    {
        f"{_B}CustomizationID",
        f"{_B}ProfileID",
        f"{_B}ID",
        f"{_B}IssueDate",
        f"{_B}IssueTime",
        f"{_A}SenderParty",
        f"{_A}SenderParty/{_B}EndpointID",
        f"{_A}ReceiverParty",
        f"{_A}ReceiverParty/{_B}EndpointID",
        f"{_A}DocumentResponse",
        f"{_A}DocumentResponse/{_A}Response",
        f"{_A}DocumentResponse/{_A}Response/{_B}ResponseCode",
        f"{_A}DocumentResponse/{_A}DocumentReference",
        f"{_A}DocumentResponse/{_A}DocumentReference/{_B}ID",
        _LINE,
        f"{_LINE}/{_A}LineReference",
        f"{_LINE}/{_A}LineReference/{_B}LineID",
        f"{_LINE}/{_A}Response",
        f"{_LINE}/{_A}Response/{_B}ResponseCode",
        f"{_LINE}/{_A}Response/{_A}Status",
        f"{_LINE}/{_A}Response/{_A}Status/{_B}StatusReasonCode",
        f"{_LINE}/{_A}Response/{_A}Status/{_B}StatusReason",
    }
)
_ALLOWED_ATTRIBUTES = {f"{_B}EndpointID": frozenset({"schemeID"})}
_R9 = "Element och attribut ska anges i enlighet med den tillåtna kardinalitet som framgår i syntaxmappningen."


def _path(root: etree._Element, element: etree._Element) -> str:
    names: list[str] = []
    node: etree._Element | None = element
    while node is not None and node is not root:
        names.append(node.tag)
        node = node.getparent()
    return "/".join(reversed(names))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _cardinality(root: etree._Element) -> list[Finding]:
    checks: list[tuple[bool, str]] = [
        (root.find(f"{_B}CustomizationID") is not None, "CustomizationID är obligatoriskt."),
        (root.find(f"{_B}ProfileID") is not None, "ProfileID är obligatoriskt."),
        (root.find(f"{_B}IssueTime") is not None, "IssueTime är obligatoriskt."),
        (len(root.findall(f"{_A}DocumentResponse")) == 1, "DocumentResponse ska anges 1 gång."),
    ]
    for response in root.iterfind(f"{_A}DocumentResponse"):
        checks.append((len(response.findall(f"{_A}DocumentReference")) == 1, "DocumentReference ska anges 1 gång."))
        for document_response in response.iterfind(f"{_A}Response"):
            checks.append((len(document_response.findall(f"{_B}ResponseCode")) == 1, "Response/ResponseCode 1 gång."))
    for line in root.iterfind(_LINE):
        responses = line.findall(f"{_A}Response")
        checks.append((len(responses) == 1, "LineResponse/Response ska anges 1 gång."))
        for response in responses:
            checks.append((len(response.findall(f"{_B}ResponseCode")) == 1, "LineResponse ResponseCode 1 gång."))
            statuses = response.findall(f"{_A}Status")
            checks.append((len(statuses) == 1, "LineResponse/Response/Status ska anges 1 gång."))
            checks.extend((len(s.findall(f"{_B}StatusReason")) == 1, "Status/StatusReason 1 gång.") for s in statuses)
    for party in ("ReceiverParty", "SenderParty"):
        for element in root.iterfind(f"{_A}{party}"):
            endpoints = element.findall(f"{_B}EndpointID")
            checks.append((len(endpoints) == 1, f"{party}/EndpointID ska anges 1 gång."))
            checks.append((any(e.get("schemeID") for e in endpoints), f"{party}/EndpointID/@schemeID krävs."))
    return [Finding("R9-APP", f"{message} {_R9}") for holds, message in checks if not holds]


def digg_response_findings(root: etree._Element) -> tuple[Finding, ...]:
    """Every DIGG ApplicationResponse rule (R1-APP … R9-APP) that ``root`` breaks."""
    if root.tag != f"{_R}ApplicationResponse":
        return (Finding("R9-APP", f"the document element is {root.tag}, not ApplicationResponse"),)
    findings: list[Finding] = []
    for element in root.iterdescendants(etree.Element):
        if _path(root, element) not in _ALLOWED:
            findings.append(Finding("R1-APP", f"{_local(element.tag)}: only the profile's elements may be used"))
        allowed = _ALLOWED_ATTRIBUTES.get(element.tag, frozenset())
        for name in map(str, element.attrib):
            if not name.startswith("{") and name not in allowed:
                findings.append(Finding("R1-APP", f"{_local(element.tag)}/@{name}: attribute not in the profile"))
    findings.extend(_cardinality(root))
    for element in root.iter(etree.Element):
        if not holds_elements(element) and not string_value(element).strip():
            findings.append(Finding("R2-APP", f"{_local(element.tag)}: tomma element eller attribut får inte anges"))
    if text(root.find(f"{_B}CustomizationID")) != RESPONSE_CUSTOMIZATION_ID:
        findings.append(Finding("R3-APP", f"CustomizationID must be {RESPONSE_CUSTOMIZATION_ID}"))
    if text(root.find(f"{_B}ProfileID")) != RESPONSE_PROFILE_ID:
        findings.append(Finding("R4-APP", f"ProfileID must be {RESPONSE_PROFILE_ID}"))
    codes = [text(e) for e in root.iterfind(f"{_A}DocumentResponse/{_A}Response/{_B}ResponseCode")]
    findings.extend(Finding("R5-APP", f"document ResponseCode {c!r} is not in the code list") for c in codes
                    if c not in set(ResponseCode))  # fmt: skip
    for element in root.iterfind(f"{_LINE}/{_A}Response/{_B}ResponseCode"):
        if text(element) not in set(ReasonCode):
            findings.append(Finding("R6-APP", f"line ResponseCode {text(element)!r} is not SV, BV or SIG"))
    lines = root.find(f".//{_A}LineResponse") is not None
    if ResponseCode.ACCEPTED in codes and lines:
        findings.append(Finding("R7-APP", "an ACCEPTED receipt has no line responses"))
    if ResponseCode.REJECTED in codes and not lines:
        findings.append(Finding("R8-APP", "a REJECTED receipt needs at least one line response"))
    return tuple(findings)


def build_application_response_element(response: ApplicationResponse) -> etree._Element:
    """The ApplicationResponse element for ``response``."""
    root = etree.Element(f"{_R}ApplicationResponse", nsmap={None: APP_NS, "cac": CAC_NS, "cbc": CBC_NS})  # type: ignore[dict-item]
    sub(root, f"{_B}CustomizationID", response.customization_id)
    sub(root, f"{_B}ProfileID", response.profile_id)
    sub(root, f"{_B}ID", response.id)
    sub(root, f"{_B}IssueDate", response.issue_date.isoformat())
    issued = response.issue_time.isoformat()
    sub(root, f"{_B}IssueTime", issued[:-6] + "Z" if issued.endswith("+00:00") else issued)
    for name, party, scheme in (
        ("SenderParty", response.sender, response.sender_scheme),
        ("ReceiverParty", response.receiver, response.receiver_scheme),
    ):
        sub(sub(root, f"{_A}{name}"), f"{_B}EndpointID", party, schemeID=scheme)
    document = sub(root, f"{_A}DocumentResponse")
    sub(sub(document, f"{_A}Response"), f"{_B}ResponseCode", response.code)
    sub(sub(document, f"{_A}DocumentReference"), f"{_B}ID", response.document_reference)
    for line in response.lines:
        element = sub(document, f"{_A}LineResponse")
        sub(sub(element, f"{_A}LineReference"), f"{_B}LineID", line.line_id)
        answer = sub(element, f"{_A}Response")
        sub(answer, f"{_B}ResponseCode", line.reason)
        status = sub(answer, f"{_A}Status")
        if line.status_reason_code is not None:
            sub(status, f"{_B}StatusReasonCode", line.status_reason_code)
        sub(status, f"{_B}StatusReason", line.status_reason)
    return root


def build_application_response(response: ApplicationResponse, *, schema: etree.XMLSchema | None = None) -> bytes:
    """The Meddelandekvittens as bytes, checked against DIGG's rules (and ``schema`` when given)."""
    root = build_application_response_element(response)
    findings = digg_response_findings(root) + (schema_findings(schema, root) if schema is not None else ())
    if findings:
        raise EnvelopeError(findings)
    return serialize(root)


def _time(value: str) -> time:
    raw = value.strip()
    try:
        return time.fromisoformat(raw[:-1] + "+00:00" if raw.endswith("Z") else raw)
    except ValueError:
        raise EnvelopeError(f"IssueTime is not an xs:time: {value!r}", "FORMAT") from None


def parse_application_response(
    data: bytes | etree._Element, *, schema: etree.XMLSchema | None = None
) -> ApplicationResponse:
    """Parse a Meddelandekvittens, validated against ``schema`` (when given) and DIGG's rules."""
    root = parse_document(data, what="ApplicationResponse")
    expect_root(root, f"{_R}ApplicationResponse", "an ApplicationResponse")
    findings = (schema_findings(schema, root) if schema is not None else ()) + digg_response_findings(root)
    if findings:
        raise EnvelopeError(findings)
    document = need(root, f"{_A}DocumentResponse", "DocumentResponse")
    lines = tuple(
        LineResponse(
            reason=ReasonCode(need_text(line, f"{_A}Response/{_B}ResponseCode", "LineResponse ResponseCode")),
            status_reason=need_text(line, f"{_A}Response/{_A}Status/{_B}StatusReason", "StatusReason"),
            line_id=need_text(line, f"{_A}LineReference/{_B}LineID", "LineID"),
            status_reason_code=optional_text(line, f"{_A}Response/{_A}Status/{_B}StatusReasonCode"),
        )
        for line in document.iterfind(f"{_A}LineResponse")
    )
    sender = need(root, f"{_A}SenderParty/{_B}EndpointID", "SenderParty/EndpointID")
    receiver = need(root, f"{_A}ReceiverParty/{_B}EndpointID", "ReceiverParty/EndpointID")
    return ApplicationResponse(
        id=need_text(root, f"{_B}ID", "ID"),
        issue_date=parse_date(need_text(root, f"{_B}IssueDate", "IssueDate"), "IssueDate"),
        issue_time=_time(need_text(root, f"{_B}IssueTime", "IssueTime")),
        sender=text(sender),
        receiver=text(receiver),
        document_reference=need_text(document, f"{_A}DocumentReference/{_B}ID", "DocumentReference/ID"),
        code=ResponseCode(need_text(document, f"{_A}Response/{_B}ResponseCode", "ResponseCode")),
        lines=lines,
        sender_scheme=sender.get("schemeID") or "",
        receiver_scheme=receiver.get("schemeID") or "",
        customization_id=need_text(root, f"{_B}CustomizationID", "CustomizationID"),
        profile_id=need_text(root, f"{_B}ProfileID", "ProfileID"),
    )
