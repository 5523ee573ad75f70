"""What every envelope module shares: the one exception, findings of schema and rule checks, small tree helpers."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from lxml import etree

from accesspoint.core.errors import EbmsError
from accesspoint.core.xml import holds_elements, parse_xml, string_value

# Envelopes carry whole business documents (an XHE may hold a 100 MB payload in SDK), so their bound is larger
# than the SOAP header's; the caller may pass a tighter one.
MAX_DOCUMENT_BYTES = 128 * 1024 * 1024
# Peppol Policy for use of Identifiers: the participant identifier scheme (SBDH Authority, XHE schemeID, UBL
# EndpointID@schemeID).
ISO6523_ACTORID = "iso6523-actorid-upis"


@dataclass(frozen=True, slots=True)
class Finding:
    """One failed check: ``rule`` is the rule id (``R3-XHE``, ``R7-APP``), ``XSD`` for a schema violation,
    ``SIGNATURE`` for a signature that does not verify, or a format's own id; ``message`` says what is wrong."""

    rule: str
    message: str


class EnvelopeError(ValueError):
    """A document that is not well-formed, not of the expected kind, invalid, or whose signature fails.

    ``findings`` lists every failed check where the validation ran to the end (all business rules), so a
    receipt (SDK Meddelandekvittens) can name each; ``str()`` is the first, bounded."""

    def __init__(self, findings: tuple[Finding, ...] | Finding | str, rule: str = "FORMAT") -> None:
        if isinstance(findings, str):
            findings = (Finding(rule, findings),)
        elif isinstance(findings, Finding):
            findings = (findings,)
        self.findings: tuple[Finding, ...] = findings
        first = findings[0] if findings else Finding(rule, "invalid")
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        super().__init__(f"{first.rule}: {first.message[:300]}{more}")

    @property
    def rules(self) -> tuple[str, ...]:
        """The rule id of each finding, in order."""
        return tuple(f.rule for f in self.findings)


def parse_document(data: bytes | etree._Element, *, what: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> etree._Element:
    """Bytes through the hardened parser (no DTD, entities or network); an element is taken as it is."""
    if not isinstance(data, bytes | bytearray):
        return data
    try:
        return parse_xml(bytes(data), max_bytes=max_bytes, what=what)
    except EbmsError as exc:
        raise EnvelopeError(exc.detail or str(exc), "XML") from None


def root_is(data: bytes, tag: str) -> bool:
    """Whether the bytes are a document whose root element is ``tag`` (Clark notation); nothing is verified."""
    try:
        return parse_document(data, what="payload").tag == tag
    except EnvelopeError:
        return False


def expect_root(root: etree._Element, tag: str, what: str) -> None:
    """Refuse a document whose element is not ``tag`` (Clark notation)."""
    if root.tag != tag:
        raise EnvelopeError(f"expected {what} ({tag}), found {root.tag}", "FORMAT")


def child(parent: etree._Element, tag: str) -> etree._Element | None:
    """The first child named ``tag`` (Clark notation), or None."""
    return parent.find(tag)


def need(parent: etree._Element, tag: str, what: str) -> etree._Element:
    """The first child named ``tag``; EnvelopeError naming ``what`` when it is absent."""
    found = parent.find(tag)
    if found is None:
        raise EnvelopeError(f"{what} is missing", "FORMAT")
    return found


def text(element: etree._Element | None) -> str:
    """The element's string-value (all its text, as signed), whitespace-trimmed ('' when absent).

    Every value an envelope reads is of simple type: an element inside one is a FORMAT error (comments and
    processing instructions change nothing, as they change nothing that is signed).
    """
    if element is None:
        return ""
    if holds_elements(element):
        raise EnvelopeError(f"{etree.QName(element).localname} holds an element where a value belongs", "FORMAT")
    return string_value(element).strip()


def need_text(parent: etree._Element, tag: str, what: str) -> str:
    """The trimmed, non-empty text of a required child."""
    value = text(need(parent, tag, what))
    if not value:
        raise EnvelopeError(f"{what} is empty", "FORMAT")
    return value


def optional_text(parent: etree._Element, tag: str) -> str | None:
    """The trimmed text of an optional child, None when absent."""
    found = parent.find(tag)
    return None if found is None else text(found)


def sub(parent: etree._Element, tag: str, value: str | None = None, **attributes: str) -> etree._Element:
    """Append a child element, with text when ``value`` is given."""
    element = etree.SubElement(parent, tag, attributes)
    if value is not None:
        element.text = value
    return element


def b64decode(value: str, what: str) -> bytes:
    """Strict base64 (whitespace allowed, nothing else): libxml2 lets '.' through in xs:base64Binary, we do not."""
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} is not valid base64", "FORMAT") from None


def b64encode(data: bytes) -> str:
    """Base64 text for an xs:base64Binary element."""
    return base64.b64encode(data).decode("ascii")


def xml_datetime(value: datetime) -> str:
    """An xs:dateTime with its offset; UTC is written ``Z``. A naive datetime is refused (time zones matter)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a timestamp needs a time zone")
    rendered = value.isoformat()
    return rendered[:-6] + "Z" if rendered.endswith("+00:00") else rendered


def parse_datetime(value: str, what: str) -> datetime:
    """An xs:dateTime (``Z`` or an offset, 0-9 fraction digits) as an aware datetime; naive values are refused."""
    raw = value.strip()
    if raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    head, dot, rest = raw.partition(".")
    if dot:
        # Python takes at most 6 fraction digits; XML allows any number. Keep microseconds.
        digits = re.match(r"\d*", rest).group()  # type: ignore[union-attr]  # \d* always matches
        zone = rest[len(digits) :]
        raw = f"{head}.{(digits + '000000')[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise EnvelopeError(f"{what} is not an xs:dateTime: {value!r}", "FORMAT") from None
    if parsed.tzinfo is None:
        raise EnvelopeError(f"{what} has no time zone: {value!r}", "FORMAT")
    return parsed


def parse_date(value: str, what: str) -> date:
    """An xs:date (an optional time zone suffix is ignored: the day is what the formats record)."""
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise EnvelopeError(f"{what} is not an xs:date: {value!r}", "FORMAT") from None


def schema_findings(schema: etree.XMLSchema, root: etree._Element) -> tuple[Finding, ...]:
    """Every violation of ``schema`` by ``root`` as XSD findings (empty when valid)."""
    if schema.validate(root):
        return ()
    error_log: Any = schema.error_log  # lxml-stubs do not know that the log is iterable
    return tuple(Finding("XSD", f"line {e.line}: {e.message}") for e in error_log)


def require_valid(schema: etree.XMLSchema, root: etree._Element) -> None:
    """Raise EnvelopeError with every XSD violation."""
    findings = schema_findings(schema, root)
    if findings:
        raise EnvelopeError(findings)


def detach(element: etree._Element) -> etree._Element:
    """A payload element as a document of its own: the namespace declarations it makes itself are kept (used or
    not: a signature over the payload in inclusive C14N covers them), those it only inherited from the envelope
    are dropped where unused."""
    parent = element.getparent()
    inherited = parent.nsmap if parent is not None else {}
    own = [p for p, uri in element.nsmap.items() if p is not None and inherited.get(p) != uri]
    copied = etree.fromstring(standalone_bytes(element))
    etree.cleanup_namespaces(copied, keep_ns_prefixes=own)
    return copied


def standalone_bytes(source: etree._Element | etree._ElementTree) -> bytes:
    """An element (or a whole tree) as the bytes of a document of its own, which parse back to the same tree.

    Not lxml's default: that encodes as ASCII, which writes a non-ASCII element name as a character reference
    (``<ds&#699;x>``, not XML), and it appends the element's tail, text that belongs to the parent."""
    return etree.tostring(source, encoding="UTF-8", with_tail=False)


def serialize(root: etree._Element) -> bytes:
    """UTF-8 bytes with an XML declaration: what every builder returns."""
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
