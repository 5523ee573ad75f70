"""The UN/CEFACT Standard Business Document Header (SBDH 1.3) as Peppol and Norway's DPI use it.

An SBD is the header plus exactly one business document (Peppol envelope specification 1.2; DPI wraps its
``Innbyggerpost`` the same way on the C2 -> C3 leg). DPI's C1 -> C2 business message is the same header as JSON
(``standardBusinessDocument.standardBusinessDocumentHeader``), read by ``parse_business_message_json``.

The schema is written here from the SBDH 1.3 structure (the interop folder ships none; ``../shared/interop/
norway-dpi/README.md`` says so): same element names, order, cardinalities and types as UN/CEFACT's files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from lxml import etree

from accesspoint.envelopes._common import (
    ISO6523_ACTORID,
    EnvelopeError,
    Finding,
    b64decode,
    detach,
    expect_root,
    need,
    need_text,
    optional_text,
    parse_datetime,
    parse_document,
    require_valid,
    serialize,
    sub,
    text,
    xml_datetime,
)

SBDH_NS = "http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader"
INNBYGGERPOST_NS = "http://digdir.no/dpi/innbyggerpost"
_H = f"{{{SBDH_NS}}}"


class ScopeType(StrEnum):
    """BusinessScope/Scope/Type values the networks define (Peppol envelope spec 1.2; DPI)."""

    DOCUMENTID = "DOCUMENTID"
    PROCESSID = "PROCESSID"
    COUNTRY_C1 = "COUNTRY_C1"
    MLS_TO = "MLS_TO"
    MLS_TYPE = "MLS_TYPE"
    CONVERSATION_ID = "ConversationId"


@dataclass(frozen=True, slots=True)
class Partner:
    """A Sender or Receiver identifier with its authority (``0192:810418052``, ``iso6523-actorid-upis``)."""

    identifier: str
    authority: str | None = ISO6523_ACTORID


@dataclass(frozen=True, slots=True)
class Scope:
    """One BusinessScope/Scope: type, instance identifier and the optional identifier (the scheme in Peppol)."""

    type: str
    instance_identifier: str
    identifier: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentIdentification:
    """Standard (root namespace), TypeVersion, InstanceIdentifier (the document's id), Type and creation time."""

    standard: str
    type_version: str
    instance_identifier: str
    type: str
    created: datetime
    multiple_type: bool | None = None


@dataclass(frozen=True, slots=True)
class ManifestItem:
    """Manifest/ManifestItem: another payload of the message (its MIME type and where it is, e.g. ``cid:...``)."""

    mime_type: str  # MimeTypeQualifierCode
    uri: str  # UniformResourceIdentifier
    description: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Sbdh:
    """A StandardBusinessDocumentHeader."""

    sender: tuple[Partner, ...]
    receiver: tuple[Partner, ...]
    document: DocumentIdentification
    scopes: tuple[Scope, ...] = ()
    header_version: str = "1.0"
    manifest: tuple[ManifestItem, ...] = ()  # the other payloads (eDelivery AS4 SBDH enhancement: non-XML ones)

    def scope(self, scope_type: str) -> Scope | None:
        """The first scope of that type, or None."""
        return next((s for s in self.scopes if s.type == scope_type), None)

    @property
    def document_id(self) -> str | None:
        """The DOCUMENTID scope's instance identifier (the document type identifier)."""
        found = self.scope(ScopeType.DOCUMENTID)
        return found.instance_identifier if found else None

    @property
    def process_id(self) -> str | None:
        """The PROCESSID scope's instance identifier."""
        found = self.scope(ScopeType.PROCESSID)
        return found.instance_identifier if found else None


@dataclass(frozen=True, slots=True)
class StandardBusinessDocument:
    """A parsed SBD: its header and the one business document it carries (a detached copy)."""

    header: Sbdh
    document: etree._Element


_SCHEMA = b"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
    xmlns="http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader"
    targetNamespace="http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader"
    elementFormDefault="qualified" attributeFormDefault="unqualified">
  <xs:element name="StandardBusinessDocument" type="StandardBusinessDocument"/>
  <xs:element name="StandardBusinessDocumentHeader" type="StandardBusinessDocumentHeader"/>
  <xs:complexType name="StandardBusinessDocument">
    <xs:sequence>
      <xs:element ref="StandardBusinessDocumentHeader" minOccurs="0"/>
      <xs:any namespace="##other" processContents="lax"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="StandardBusinessDocumentHeader">
    <xs:sequence>
      <xs:element name="HeaderVersion" type="xs:string"/>
      <xs:element name="Sender" type="Partner" maxOccurs="unbounded"/>
      <xs:element name="Receiver" type="Partner" maxOccurs="unbounded"/>
      <xs:element name="DocumentIdentification" type="DocumentIdentification"/>
      <xs:element name="Manifest" type="Manifest" minOccurs="0"/>
      <xs:element name="BusinessScope" type="BusinessScope" minOccurs="0"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="Partner">
    <xs:sequence>
      <xs:element name="Identifier" type="PartnerIdentification"/>
      <xs:element name="ContactInformation" type="ContactInformation" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="PartnerIdentification">
    <xs:simpleContent>
      <xs:extension base="xs:string">
        <xs:attribute name="Authority" type="xs:string"/>
      </xs:extension>
    </xs:simpleContent>
  </xs:complexType>
  <xs:complexType name="ContactInformation">
    <xs:sequence>
      <xs:element name="Contact" type="xs:string"/>
      <xs:element name="EmailAddress" type="xs:string" minOccurs="0"/>
      <xs:element name="FaxNumber" type="xs:string" minOccurs="0"/>
      <xs:element name="TelephoneNumber" type="xs:string" minOccurs="0"/>
      <xs:element name="ContactTypeIdentifier" type="xs:string" minOccurs="0"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="DocumentIdentification">
    <xs:sequence>
      <xs:element name="Standard" type="xs:string"/>
      <xs:element name="TypeVersion" type="xs:string"/>
      <xs:element name="InstanceIdentifier" type="xs:string"/>
      <xs:element name="Type" type="xs:string"/>
      <xs:element name="MultipleType" type="xs:boolean" minOccurs="0"/>
      <xs:element name="CreationDateAndTime" type="xs:dateTime"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="Manifest">
    <xs:sequence>
      <xs:element name="NumberOfItems" type="xs:integer"/>
      <xs:element name="ManifestItem" type="ManifestItem" maxOccurs="unbounded"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="ManifestItem">
    <xs:sequence>
      <xs:element name="MimeTypeQualifierCode" type="xs:string"/>
      <xs:element name="UniformResourceIdentifier" type="xs:anyURI"/>
      <xs:element name="Description" type="xs:string" minOccurs="0"/>
      <xs:element name="LanguageCode" type="xs:string" minOccurs="0"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="BusinessScope">
    <xs:sequence>
      <xs:element name="Scope" type="Scope" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="Scope">
    <xs:sequence>
      <xs:element name="Type" type="xs:string"/>
      <xs:element name="InstanceIdentifier" type="xs:string"/>
      <xs:element name="Identifier" type="xs:string" minOccurs="0"/>
      <xs:element ref="ScopeInformation" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence>
  </xs:complexType>
  <xs:element name="ScopeInformation" type="xs:anyType" abstract="true"/>
  <xs:element name="CorrelationInformation" type="CorrelationInformation" substitutionGroup="ScopeInformation"/>
  <xs:complexType name="CorrelationInformation">
    <xs:sequence>
      <xs:element name="RequestingDocumentCreationDateTime" type="xs:dateTime" minOccurs="0"/>
      <xs:element name="RequestingDocumentInstanceIdentifier" type="xs:string" minOccurs="0"/>
      <xs:element name="ExpectedResponseDateTime" type="xs:dateTime" minOccurs="0"/>
    </xs:sequence>
  </xs:complexType>
  <xs:element name="BusinessService" type="BusinessService" substitutionGroup="ScopeInformation"/>
  <xs:complexType name="BusinessService">
    <xs:sequence>
      <xs:element name="BusinessServiceName" type="xs:string" minOccurs="0"/>
      <xs:element name="ServiceTransaction" minOccurs="0">
        <xs:complexType>
          <xs:attribute name="TypeOfServiceTransaction">
            <xs:simpleType>
              <xs:restriction base="xs:string">
                <xs:enumeration value="RequestingServiceTransaction"/>
                <xs:enumeration value="RespondingServiceTransaction"/>
              </xs:restriction>
            </xs:simpleType>
          </xs:attribute>
          <xs:attribute name="IsNonRepudiationRequired" type="xs:string"/>
          <xs:attribute name="IsAuthenticationRequired" type="xs:string"/>
          <xs:attribute name="IsNonRepudiationOfReceiptRequired" type="xs:string"/>
          <xs:attribute name="IsIntelligibleCheckRequired" type="xs:string"/>
          <xs:attribute name="IsApplicationErrorResponseRequested" type="xs:string"/>
          <xs:attribute name="TimeToAcknowledgeReceipt" type="xs:string"/>
          <xs:attribute name="TimeToAcknowledgeAcceptance" type="xs:string"/>
          <xs:attribute name="TimeToPerform" type="xs:string"/>
          <xs:attribute name="Recurrence" type="xs:string"/>
        </xs:complexType>
      </xs:element>
    </xs:sequence>
  </xs:complexType>
</xs:schema>
"""


@cache
def sbdh_schema() -> etree.XMLSchema:
    """The SBDH 1.3 schema (compiled once)."""
    return etree.XMLSchema(etree.fromstring(_SCHEMA))


def build_sbdh(header: Sbdh) -> etree._Element:
    """The StandardBusinessDocumentHeader element for ``header``."""
    root = etree.Element(f"{_H}StandardBusinessDocumentHeader", nsmap={"sh": SBDH_NS})
    sub(root, f"{_H}HeaderVersion", header.header_version)
    for name, partners in (("Sender", header.sender), ("Receiver", header.receiver)):
        for partner in partners:
            attributes = {"Authority": partner.authority} if partner.authority is not None else {}
            sub(sub(root, f"{_H}{name}"), f"{_H}Identifier", partner.identifier, **attributes)
    ident = sub(root, f"{_H}DocumentIdentification")
    doc = header.document
    sub(ident, f"{_H}Standard", doc.standard)
    sub(ident, f"{_H}TypeVersion", doc.type_version)
    sub(ident, f"{_H}InstanceIdentifier", doc.instance_identifier)
    sub(ident, f"{_H}Type", doc.type)
    if doc.multiple_type is not None:
        sub(ident, f"{_H}MultipleType", "true" if doc.multiple_type else "false")
    sub(ident, f"{_H}CreationDateAndTime", xml_datetime(doc.created))
    if header.manifest:
        manifest = sub(root, f"{_H}Manifest")
        sub(manifest, f"{_H}NumberOfItems", str(len(header.manifest)))
        for item in header.manifest:
            element = sub(manifest, f"{_H}ManifestItem")
            sub(element, f"{_H}MimeTypeQualifierCode", item.mime_type)
            sub(element, f"{_H}UniformResourceIdentifier", item.uri)
            for name, value in (("Description", item.description), ("LanguageCode", item.language)):
                if value is not None:
                    sub(element, f"{_H}{name}", value)
    if header.scopes:
        scopes = sub(root, f"{_H}BusinessScope")
        for scope in header.scopes:
            element = sub(scopes, f"{_H}Scope")
            sub(element, f"{_H}Type", scope.type)
            sub(element, f"{_H}InstanceIdentifier", scope.instance_identifier)
            if scope.identifier is not None:
                sub(element, f"{_H}Identifier", scope.identifier)
    return root


def build_sbd(header: Sbdh, document: etree._Element | bytes) -> bytes:
    """A StandardBusinessDocument: ``header`` and the business ``document`` (an element or XML bytes), validated."""
    body = parse_document(document, what="business document") if isinstance(document, bytes) else document
    root = etree.Element(f"{_H}StandardBusinessDocument", nsmap={"sh": SBDH_NS})
    root.append(build_sbdh(header))
    root.append(detach(body))
    require_valid(sbdh_schema(), root)
    return serialize(root)


def _partner(element: etree._Element, what: str) -> Partner:
    identifier = need(element, f"{_H}Identifier", f"{what}/Identifier")
    value = text(identifier)
    if not value:
        raise EnvelopeError(f"{what}/Identifier is empty", "SBDH")
    return Partner(value, identifier.get("Authority"))


def parse_sbdh(element: etree._Element) -> Sbdh:
    """The header model of a StandardBusinessDocumentHeader element (schema-checked by ``parse_sbd``)."""
    ident = need(element, f"{_H}DocumentIdentification", "DocumentIdentification")
    multiple = optional_text(ident, f"{_H}MultipleType")
    document = DocumentIdentification(
        standard=need_text(ident, f"{_H}Standard", "DocumentIdentification/Standard"),
        type_version=need_text(ident, f"{_H}TypeVersion", "DocumentIdentification/TypeVersion"),
        instance_identifier=need_text(ident, f"{_H}InstanceIdentifier", "DocumentIdentification/InstanceIdentifier"),
        type=need_text(ident, f"{_H}Type", "DocumentIdentification/Type"),
        created=parse_datetime(
            need_text(ident, f"{_H}CreationDateAndTime", "CreationDateAndTime"), "CreationDateAndTime"
        ),
        multiple_type=None if multiple is None else multiple in ("true", "1"),
    )
    scopes = tuple(
        Scope(
            need_text(scope, f"{_H}Type", "Scope/Type"),
            text(need(scope, f"{_H}InstanceIdentifier", "Scope/InstanceIdentifier")),
            optional_text(scope, f"{_H}Identifier"),
        )
        for scope in element.iterfind(f"{_H}BusinessScope/{_H}Scope")
    )
    manifest = tuple(
        ManifestItem(
            need_text(item, f"{_H}MimeTypeQualifierCode", "ManifestItem/MimeTypeQualifierCode"),
            need_text(item, f"{_H}UniformResourceIdentifier", "ManifestItem/UniformResourceIdentifier"),
            optional_text(item, f"{_H}Description"),
            optional_text(item, f"{_H}LanguageCode"),
        )
        for item in element.iterfind(f"{_H}Manifest/{_H}ManifestItem")
    )
    return Sbdh(
        sender=tuple(_partner(e, "Sender") for e in element.iterfind(f"{_H}Sender")),
        receiver=tuple(_partner(e, "Receiver") for e in element.iterfind(f"{_H}Receiver")),
        document=document,
        scopes=scopes,
        header_version=need_text(element, f"{_H}HeaderVersion", "HeaderVersion"),
        manifest=manifest,
    )


def parse_sbd(data: bytes | etree._Element) -> StandardBusinessDocument:
    """Parse and schema-validate a StandardBusinessDocument; EnvelopeError (XSD findings) when it is invalid."""
    root = parse_document(data, what="StandardBusinessDocument")
    expect_root(root, f"{_H}StandardBusinessDocument", "a StandardBusinessDocument")
    require_valid(sbdh_schema(), root)
    header_element = root.find(f"{_H}StandardBusinessDocumentHeader")
    if header_element is None:
        # The schema makes the header optional; an access point cannot route without it.
        raise EnvelopeError("the StandardBusinessDocument has no StandardBusinessDocumentHeader", "SBDH")
    payload = [e for e in root if isinstance(e.tag, str) and e is not header_element]
    return StandardBusinessDocument(parse_sbdh(header_element), detach(payload[0]))


def peppol_findings(header: Sbdh) -> tuple[Finding, ...]:
    """What the Peppol envelope specification 1.2 requires beyond the schema (one sender and receiver, both with
    an Authority; DOCUMENTID and PROCESSID scopes; HeaderVersion 1.0); empty when all hold."""
    findings: list[Finding] = []
    if header.header_version != "1.0":
        findings.append(Finding("SBDH", f"HeaderVersion must be 1.0, not {header.header_version!r}"))
    for name, partners in (("Sender", header.sender), ("Receiver", header.receiver)):
        if len(partners) != 1:
            findings.append(Finding("SBDH", f"exactly one {name} is required, found {len(partners)}"))
        findings.extend(Finding("SBDH", f"{name}/Identifier has no Authority") for p in partners if not p.authority)
    for required in (ScopeType.DOCUMENTID, ScopeType.PROCESSID):
        scope = header.scope(required)
        if scope is None or not scope.instance_identifier:
            findings.append(Finding("SBDH", f"the {required} scope is required"))
    return tuple(findings)


# --- DPI ---


@dataclass(frozen=True, slots=True)
class Innbyggerpost:
    """DPI's C2 -> C3 body: the signed business message (a compact JWS) and the encrypted document package (CMS)."""

    signed_business_message: str
    document_package: bytes


def parse_innbyggerpost(element: etree._Element) -> Innbyggerpost:
    """The ``Innbyggerpost`` element of a DPI SBD; the package must be real base64 (DPI's own example is not)."""
    expect_root(element, f"{{{INNBYGGERPOST_NS}}}Innbyggerpost", "an Innbyggerpost")
    jws = need_text(element, f"{{{INNBYGGERPOST_NS}}}SignertForretningsmelding", "SignertForretningsmelding")
    findings: list[Finding] = []
    if jws.count(".") != 2 or not all(jws.split(".")):
        findings.append(Finding("DPI", "SignertForretningsmelding is not a compact JWS (three dot-separated parts)"))
    package = b""
    try:
        encoded = need_text(element, f"{{{INNBYGGERPOST_NS}}}Dokumentpakke", "Dokumentpakke")
        package = b64decode(encoded, "Dokumentpakke")
    except EnvelopeError as exc:
        findings.extend(Finding("DPI", f.message) for f in exc.findings)
    if findings:
        raise EnvelopeError(tuple(findings))
    return Innbyggerpost(jws, package)


@dataclass(frozen=True, slots=True)
class BusinessMessage:
    """A DPI business message in JSON: the header, the body's key (``digital``, ``utskrift``, …) and the body."""

    header: Sbdh
    kind: str
    body: Mapping[str, Any]


def _json_partner(item: Mapping[str, Any]) -> Partner:
    identifier = item.get("identifier") or {}
    return Partner(str(identifier.get("value", "")), identifier.get("authority"))


def parse_business_message_json(message: Mapping[str, Any], *, strict: bool = True) -> BusinessMessage:
    """DPI's JSON form of an SBD (``{"standardBusinessDocument": {"standardBusinessDocumentHeader": …, kind: …}}``).

    ``strict`` requires the body's key to equal ``documentIdentification.type``, which the current DPI
    examples satisfy and the older drafts (``*_budnad*``, ``*_nav*``, ``fysiskpost_print_*``) do not."""
    try:
        sbd = message["standardBusinessDocument"]
        raw = sbd["standardBusinessDocumentHeader"]
        ident = raw["documentIdentification"]
        document = DocumentIdentification(
            standard=str(ident["standard"]),
            type_version=str(ident["typeVersion"]),
            instance_identifier=str(ident["instanceIdentifier"]),
            type=str(ident["type"]),
            created=parse_datetime(str(ident["creationDateAndTime"]), "creationDateAndTime"),
        )
        scopes = tuple(
            Scope(str(s["type"]), str(s["instanceIdentifier"]), s.get("identifier"))
            for s in (raw.get("businessScope") or {}).get("scope", [])
        )
        header = Sbdh(
            sender=tuple(_json_partner(p) for p in raw["sender"]),
            receiver=tuple(_json_partner(p) for p in raw["receiver"]),
            document=document,
            scopes=scopes,
            header_version=str(raw["headerVersion"]),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise EnvelopeError(f"not a DPI business message: missing or malformed {exc}", "DPI") from None
    bodies = [key for key in sbd if key != "standardBusinessDocumentHeader"]
    if len(bodies) != 1:
        raise EnvelopeError(f"a business message has exactly one body, found {bodies}", "DPI")
    kind = bodies[0]
    if strict and kind != document.type:
        raise EnvelopeError(f"body {kind!r} does not match documentIdentification.type {document.type!r}", "DPI")
    return BusinessMessage(header, kind, sbd[kind])
