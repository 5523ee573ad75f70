"""SDK's envelope: OASIS XHE 1.0 under DIGG's profile (``urn:fdc:digg.se:edelivery:xhe:1``).

Validation is the XHE 1.0 schema (``schemas.load_xhe_schema``) plus DIGG's business rules R1-XHE … R14-XHE.
Those ship as ISO schematron with ``queryBinding="xslt2"``; lxml's isoschematron runs XSLT 1.0 only and no XSLT 2
processor is a dependency, so each rule is re-expressed in Python below (``digg_xhe_findings``), with the XPath 2
semantics the rules rely on (``InstanceEncryptionIndicator=true()`` casts the element's value to xs:boolean).
One deliberate difference: DIGG's R11-XHE ("ToParty must use iso6523-actorid-upis") has R10's FromParty context,
so it never checks ToParty (../shared/interop/sdk/README.md); here R11 checks ToParty.

End-to-end security (``tm-base-ext-sigenc``): the sender encrypts the payload (XMLEnc, outside this module) and
signs the whole XHE with an enveloped XML-DSig; ``verify_xhe`` checks that signature before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from lxml import etree

from accesspoint.core.namespaces import NS
from accesspoint.core.xml import holds_elements, string_value
from accesspoint.envelopes._common import (
    ISO6523_ACTORID,
    EnvelopeError,
    Finding,
    b64decode,
    b64encode,
    detach,
    expect_root,
    need,
    need_text,
    optional_text,
    parse_datetime,
    parse_document,
    schema_findings,
    serialize,
    sub,
    text,
    xml_datetime,
)
from accesspoint.envelopes.signature import ALLOWED, VerifiedSignature, sign_enveloped, verify_enveloped
from accesspoint.security.keys import KeyPair

XHE_NS = "http://docs.oasis-open.org/bdxr/ns/XHE/1/ExchangeHeaderEnvelope"
XHA_NS = "http://docs.oasis-open.org/bdxr/ns/XHE/1/AggregateComponents"
XHB_NS = "http://docs.oasis-open.org/bdxr/ns/XHE/1/BasicComponents"
EXT_NS = "http://docs.oasis-open.org/bdxr/ns/XHE/1/ExtensionComponents"
XENC_NS = NS.XENC.value
DS_NS = NS.DS.value
_X, _A, _B = f"{{{XHE_NS}}}", f"{{{XHA_NS}}}", f"{{{XHB_NS}}}"

DIGG_CUSTOMIZATION_ID = "urn:fdc:digg.se:edelivery:xhe:1"


class ScopeCode(StrEnum):
    """The five BusinessScopeCriterionTypeCodes DIGG's profile requires (R4-XHE … R8-XHE)."""

    DOCUMENTID = "DOCUMENTID"
    DOCUMENTID_SCHEME = "DOCUMENTID_SCHEME"
    PROCESSID = "PROCESSID"
    PROCESSID_SCHEME = "PROCESSID_SCHEME"
    FEDERATIONID = "FEDERATIONID"


@dataclass(frozen=True, slots=True)
class Criterion:
    """One BusinessScopeCriterion: type code and value."""

    type_code: str
    value: str


@dataclass(frozen=True, slots=True)
class XheParty:
    """A FromParty/ToParty identifier (``0203:digg.se``) and its scheme."""

    id: str
    scheme: str = ISO6523_ACTORID


@dataclass(frozen=True, slots=True)
class XhePayload:
    """The one payload. ``content`` is the XML document's bytes when ``xml`` (the ``xenc:EncryptedData`` when
    ``encrypted``), otherwise the raw bytes that travel as base64 text."""

    document_type_code: str
    content_type_code: str
    content: bytes
    xml: bool = True
    encrypted: bool = False
    handling_service_id: str | None = None


@dataclass(frozen=True, slots=True)
class Xhe:
    """An XHE envelope under DIGG's profile."""

    id: str
    created: datetime
    scope: tuple[Criterion, ...]
    from_party: XheParty
    to_party: XheParty
    payload: XhePayload
    customization_id: str = DIGG_CUSTOMIZATION_ID
    version: str = "1.0"

    def criterion(self, code: str) -> str | None:
        """The value of the first criterion with that type code, or None."""
        return next((c.value for c in self.scope if c.type_code == code), None)

    @property
    def document_id(self) -> str | None:
        """The DOCUMENTID criterion (the document type identifier, e.g. ``urn:riv:…::tm-base-ext-sigenc``)."""
        return self.criterion(ScopeCode.DOCUMENTID)

    @property
    def process_id(self) -> str | None:
        """The PROCESSID criterion (``bdx:noprocess`` in SDK)."""
        return self.criterion(ScopeCode.PROCESSID)

    @property
    def federation_id(self) -> str | None:
        """The FEDERATIONID criterion (``urn:fdc:digg.se:edelivery:federation:sdk`` or ``…:test``)."""
        return self.criterion(ScopeCode.FEDERATIONID)


def sdk_scope(document_id: str, federation_id: str, *, process_id: str = "bdx:noprocess") -> tuple[Criterion, ...]:
    """The five criteria DIGG's profile requires, with SDK's identifier schemes."""
    return (
        Criterion(ScopeCode.DOCUMENTID, document_id),
        Criterion(ScopeCode.DOCUMENTID_SCHEME, "busdox-docid-qns"),
        Criterion(ScopeCode.PROCESSID, process_id),
        Criterion(ScopeCode.PROCESSID_SCHEME, "urn:fdc:digg.se:edelivery:process"),
        Criterion(ScopeCode.FEDERATIONID, federation_id),
    )


# --- DIGG's business rules (DIGG-XHE-Business-Rules.scmt), re-expressed ---

# R1-XHE: elements of XHE 1.0 the profile does not allow, as (parent path, child) from the rule's context list.
_R1_PATHS = (
    f"{{{EXT_NS}}}XHEExtensions",
    f"{_B}ProfileID",
    f"{_B}ProfileExecutionID",
    f"{_A}Header/{_A}BusinessScope/{_A}ExternalReference",
    *(
        f"{_A}Payloads/{_A}Payload/{name}"
        for name in (
            f"{_B}Description",
            f"{_B}CustomizationID",
            f"{_B}ProfileID",
            f"{_B}ProfileExecutionID",
            f"{_B}ValidationTypeCode",
            f"{_B}InstanceEncryptionMethod",
            f"{_B}InstanceHashValue",
            f"{_A}InstanceDecryptionInformationExternalReference",
            f"{_A}InstanceDecryptionKeyExternalReference",
            f"{_A}RelevantExternalReference",
        )
    ),
)
_R14 = "Element och attribut ska anges i enlighet med den tillåtna kardinalitet som framgår i syntaxmappningen."


def _xs_boolean(value: str) -> bool | None:
    """XPath 2's cast of an untyped value to xs:boolean (None where the cast fails)."""
    return {"true": True, "1": True, "false": False, "0": False}.get(value.strip())


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def digg_xhe_findings(root: etree._Element) -> tuple[Finding, ...]:
    """Every DIGG XHE rule (R1-XHE … R14-XHE) that ``root`` breaks, in the schematron's pattern order."""
    findings: list[Finding] = []
    if root.tag != f"{_X}XHE":
        return (Finding("R14-XHE", f"the document element is {root.tag}, not x:XHE"),)
    for path in _R1_PATHS:
        for element in root.iterfind(path):
            findings.append(Finding("R1-XHE", f"{_local(element.tag)}: only the elements of the profile may be used"))
    criteria = root.findall(f"{_A}Header/{_A}BusinessScope/{_A}BusinessScopeCriterion")
    payloads = root.findall(f"{_A}Payloads/{_A}Payload")
    cardinality = (
        (root.find(f"{_B}CustomizationID") is not None, "CustomizationID är obligatoriskt."),
        (bool(criteria), "BusinessScopeCriterion är obligatoriskt."),
        (root.find(f"{_A}Header/{_A}FromParty") is not None, "FromParty är obligatoriskt."),
        (
            len(root.findall(f"{_A}Header/{_A}FromParty/{_A}PartyIdentification")) == 1,
            "FromParty/PartyIdentification max 1 gång.",
        ),
        (
            len(root.findall(f"{_A}Header/{_A}ToParty/{_A}PartyIdentification")) == 1,
            "ToParty/PartyIdentification max 1 gång.",
        ),
        (len(payloads) == 1, "Payload är obligatoriskt och får bara anges en gång."),
        (root.find(f"{_A}Payloads/{_A}Payload/{_B}DocumentTypeCode") is not None, "DocumentTypeCode är obligatoriskt."),
        (root.find(f"{_A}Payloads/{_A}Payload/{_B}ContentTypeCode") is not None, "ContentTypeCode är obligatoriskt."),
        (root.find(f"{_A}Payloads/{_A}Payload/{_A}PayloadContent") is not None, "PayloadContent är obligatoriskt."),
    )
    findings.extend(Finding("R14-XHE", f"{message} {_R14}") for holds, message in cardinality if not holds)
    # A criterion without its value would be read as an empty one (the XSD requires both; it is not always given).
    for criterion in criteria:
        for part in ("BusinessScopeCriterionTypeCode", "BusinessScopeCriterionValue"):
            if len(criterion.findall(f"{_B}{part}")) != 1:
                message = f"BusinessScopeCriterion/{part} är obligatoriskt och får bara anges en gång."
                findings.append(Finding("R14-XHE", f"{message} {_R14}"))
    for element in root.iter(etree.Element):
        if element.tag.startswith((f"{{{XENC_NS}}}", f"{{{DS_NS}}}")) or holds_elements(element):
            continue
        if string_value(element).strip():
            continue
        if any(a.tag == f"{_A}PayloadContent" for a in element.iterancestors()):
            continue
        findings.append(Finding("R2-XHE", f"{_local(element.tag)}: tomma element eller attribut får inte anges"))
    for element in root.iterfind(f"{_B}CustomizationID"):
        if text(element) != DIGG_CUSTOMIZATION_ID:
            findings.append(
                Finding("R3-XHE", f"CustomizationID must be {DIGG_CUSTOMIZATION_ID}, not {text(element)!r}")
            )
    codes = {text(c.find(f"{_B}BusinessScopeCriterionTypeCode")) for c in criteria}
    for rule, code in zip(("R4-XHE", "R5-XHE", "R6-XHE", "R7-XHE", "R8-XHE"), ScopeCode, strict=True):
        if code not in codes:
            findings.append(Finding(rule, f"a BusinessScopeCriterion with the code {code} is required"))
    for element in root.iterfind(f"{_B}XHEVersionID"):
        if text(element) != "1.0":
            findings.append(Finding("R9-XHE", f"XHEVersionID must be 1.0, not {text(element)!r}"))
    for rule, party in (("R10-XHE", "FromParty"), ("R11-XHE", "ToParty")):
        for element in root.iterfind(f"{_A}Header/{_A}{party}/{_A}PartyIdentification/{_B}ID"):
            if (element.get("schemeID") or "").strip() != ISO6523_ACTORID:
                findings.append(Finding(rule, f"the {party} ID must have schemeID {ISO6523_ACTORID}"))
    for payload in payloads:
        indicator = _xs_boolean(text(payload.find(f"{_B}InstanceEncryptionIndicator")))
        encrypted_data = payload.find(f"{_A}PayloadContent/{{{XENC_NS}}}EncryptedData") is not None
        if indicator is True and not encrypted_data:
            findings.append(
                Finding("R12-XHE", "InstanceEncryptionIndicator is true but PayloadContent holds no EncryptedData")
            )
        if indicator is False and encrypted_data:
            findings.append(
                Finding("R13-XHE", "InstanceEncryptionIndicator is false but PayloadContent holds EncryptedData")
            )
    return tuple(findings)


# --- building and parsing ---


def _embed(content: bytes) -> etree._Element:
    return parse_document(content, what="XHE payload")


def build_xhe_element(xhe: Xhe) -> etree._Element:
    """The ``x:XHE`` element for ``xhe`` (unsigned)."""
    root = etree.Element(f"{_X}XHE", nsmap={"x": XHE_NS, "xha": XHA_NS, "xhb": XHB_NS})
    sub(root, f"{_B}XHEVersionID", xhe.version)
    sub(root, f"{_B}CustomizationID", xhe.customization_id)
    header = sub(root, f"{_A}Header")
    sub(header, f"{_B}ID", xhe.id)
    sub(header, f"{_B}CreationDateTime", xml_datetime(xhe.created))
    scope = sub(header, f"{_A}BusinessScope")
    for criterion in xhe.scope:
        element = sub(scope, f"{_A}BusinessScopeCriterion")
        sub(element, f"{_B}BusinessScopeCriterionTypeCode", criterion.type_code)
        sub(element, f"{_B}BusinessScopeCriterionValue", criterion.value)
    for name, party in (("FromParty", xhe.from_party), ("ToParty", xhe.to_party)):
        sub(sub(sub(header, f"{_A}{name}"), f"{_A}PartyIdentification"), f"{_B}ID", party.id, schemeID=party.scheme)
    payload = sub(sub(root, f"{_A}Payloads"), f"{_A}Payload")
    body = xhe.payload
    sub(payload, f"{_B}DocumentTypeCode", body.document_type_code)
    sub(payload, f"{_B}ContentTypeCode", body.content_type_code)
    if body.handling_service_id is not None:
        sub(payload, f"{_B}HandlingServiceID", body.handling_service_id)
    sub(payload, f"{_B}InstanceEncryptionIndicator", "true" if body.encrypted else "false")
    content = sub(payload, f"{_A}PayloadContent")
    if body.xml or body.encrypted:
        content.append(_embed(body.content))
    else:
        content.text = b64encode(body.content)
    return root


def build_xhe(xhe: Xhe, *, keys: KeyPair | None = None, schema: etree.XMLSchema | None = None) -> bytes:
    """The XHE as bytes, checked against DIGG's rules (and ``schema`` when given), signed with ``keys`` when given
    (``tm-base-ext-sigenc``). EnvelopeError lists every finding when what was asked for breaks a rule."""
    root = build_xhe_element(xhe)
    findings = digg_xhe_findings(root) + (schema_findings(schema, root) if schema is not None else ())
    if findings:
        raise EnvelopeError(findings)
    if keys is not None:
        sign_enveloped(root, keys)
    return serialize(root)


def check_xhe(data: bytes | etree._Element, *, schema: etree.XMLSchema | None = None) -> etree._Element:
    """Parse and validate: XSD findings (when ``schema`` is given) then DIGG's rules; EnvelopeError lists them all."""
    root = parse_document(data, what="XHE")
    findings = (schema_findings(schema, root) if schema is not None else ()) + digg_xhe_findings(root)
    if findings:
        raise EnvelopeError(findings)
    return root


def _party(header: etree._Element, name: str) -> XheParty:
    identifier = need(header, f"{_A}{name}/{_A}PartyIdentification/{_B}ID", f"{name}/PartyIdentification/ID")
    return XheParty(text(identifier), identifier.get("schemeID") or "")


def _payload(element: etree._Element) -> XhePayload:
    encrypted = _xs_boolean(text(element.find(f"{_B}InstanceEncryptionIndicator"))) is True
    holder = need(element, f"{_A}PayloadContent", "PayloadContent")
    children = [c for c in holder if isinstance(c.tag, str)]
    if children:
        payload = detach(children[0])
        # The signature (exclusive C14N, without comments) does not cover comments: one added on the way
        # would be delivered as if signed. The payload delivered is what was signed.
        etree.strip_tags(payload, etree.Comment)
        content, xml = etree.tostring(payload), True
    else:
        content, xml = b64decode(text(holder), "PayloadContent"), False
    return XhePayload(
        document_type_code=need_text(element, f"{_B}DocumentTypeCode", "DocumentTypeCode"),
        content_type_code=need_text(element, f"{_B}ContentTypeCode", "ContentTypeCode"),
        content=content,
        xml=xml,
        encrypted=encrypted,
        handling_service_id=optional_text(element, f"{_B}HandlingServiceID"),
    )


def xhe_from_element(root: etree._Element) -> Xhe:
    """The model of a validated ``x:XHE`` element."""
    expect_root(root, f"{_X}XHE", "an XHE envelope")
    header = need(root, f"{_A}Header", "Header")
    scope = tuple(
        Criterion(text(c.find(f"{_B}BusinessScopeCriterionTypeCode")), text(c.find(f"{_B}BusinessScopeCriterionValue")))
        for c in header.iterfind(f"{_A}BusinessScope/{_A}BusinessScopeCriterion")
    )
    return Xhe(
        id=need_text(header, f"{_B}ID", "Header/ID"),
        created=parse_datetime(need_text(header, f"{_B}CreationDateTime", "CreationDateTime"), "CreationDateTime"),
        scope=scope,
        from_party=_party(header, "FromParty"),
        to_party=_party(header, "ToParty"),
        payload=_payload(need(root, f"{_A}Payloads/{_A}Payload", "Payload")),
        customization_id=need_text(root, f"{_B}CustomizationID", "CustomizationID"),
        version=need_text(root, f"{_B}XHEVersionID", "XHEVersionID"),
    )


def parse_xhe(data: bytes | etree._Element, *, schema: etree.XMLSchema | None = None) -> Xhe:
    """Parse an XHE, validated against ``schema`` (when given) and DIGG's rules. Its signature is not checked
    here: use ``verify_xhe`` for ``tm-base-ext-sigenc`` documents."""
    return xhe_from_element(check_xhe(data, schema=schema))


@dataclass(frozen=True, slots=True)
class VerifiedXhe:
    """An XHE whose enveloped signature covers all of it, and who signed it."""

    xhe: Xhe
    signature: VerifiedSignature


def verify_xhe(
    data: bytes | etree._Element,
    *,
    expected: x509.Certificate | None = None,
    schema: etree.XMLSchema | None = None,
    allowed: frozenset[str] = ALLOWED,
) -> VerifiedXhe:
    """Check the sender's signature over the whole XHE first (SDK: before any decryption), then validate it.

    ``expected`` is the sender's signing certificate from CertPub; without it the KeyInfo certificate is used and
    trusting it is the caller's step."""
    root = parse_document(data, what="XHE")
    signature = verify_enveloped(root, expected=expected, allowed=allowed)
    return VerifiedXhe(xhe_from_element(check_xhe(root, schema=schema)), signature)
