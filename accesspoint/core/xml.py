"""Hardened XML: the only way the core turns untrusted bytes into a tree, and the ebMS header schema."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

from lxml import etree

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.namespaces import NS

# A SOAP header is small: the payloads travel as MIME parts. A bigger envelope is refused before parsing.
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024

_WSU_ID = f"{{{NS.WSU}}}Id"
_XML_ID = f"{{{NS.XML}}}id"
# Attributes that XML-DSig same-document references resolve: wsu:Id (WSS), xml:id, and plain Id/id.
ID_ATTRIBUTES = (_WSU_ID, _XML_ID, "Id", "id", "ID")
_ID_NAMES = frozenset(ID_ATTRIBUTES)


def _hardened_parser() -> etree.XMLParser:
    # No DTD loading, no entity expansion, no network, no huge trees (libxml2's depth and size limits stay on).
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
    )


_PARSER = _hardened_parser()


def parse_xml(data: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES, what: str = "SOAP envelope") -> etree._Element:
    """Parse untrusted XML: no DTD, no entities, no network, bounded size; raises EBMS:0009 on any of those."""
    if len(data) > max_bytes:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"{what} is larger than {max_bytes} bytes")
    try:
        root = etree.fromstring(data, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"{what} is not well-formed XML: {exc.msg}") from None
    if root is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"{what} is empty")
    docinfo = root.getroottree().docinfo
    if getattr(docinfo, "doctype", "") or getattr(docinfo, "internalDTD", None) is not None:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"{what} carries a DTD, which AS4 forbids")
    for node in root.iter(etree.Entity):
        raise EbmsError(ErrorCode.INVALID_HEADER, f"{what} references entity {getattr(node, 'name', '')!r}")
    return root


def string_value(element: etree._Element) -> str:
    """The element's string-value (XPath 1.0 section 5.2): all its descendant text, in document order.

    Read every value from signed XML with this, never with ``element.text``: that is only the text before the
    first child node, so a comment inside a signed value (``<eb:MessageId>abc<!---->-def@x</eb:MessageId>``)
    would cut it to ``abc`` while exclusive C14N without comments signs ``abc-def@x`` (the comment-truncation
    class of CVE-2017-11427). Comments and processing instructions add nothing; the text of child elements
    does, as it does to what is signed (whether a child element may be there at all is the caller's schema).
    """
    if not len(element):  # no child node of any kind, the common case: its text is the whole value
        return element.text or ""
    # Text nodes of a tree parsed from bytes are str (the stubs allow bytes for trees built otherwise).
    return "".join(cast(Iterator[str], element.itertext()))


def holds_elements(element: etree._Element) -> bool:
    """True when a child element sits inside ``element`` (comments and processing instructions do not count).

    A value of simple type holding an element is malformed; each layer refuses it with its own error.
    """
    return len(element) > 0 and next(element.iterchildren(etree.Element), None) is not None


def find_value(parent: etree._Element, path: str) -> str | None:
    """``parent.findtext(path)`` done right: the string-value of the first element at ``path``, None if none."""
    found = parent.find(path)
    return None if found is None else string_value(found)


def check_unique_ids(root: etree._Element) -> dict[str, etree._Element]:
    """Map every Id in the document to its element; a duplicated Id (a signature-wrapping sign) is EBMS:0009."""
    seen: dict[str, etree._Element] = {}
    for element in root.iter():
        # One keys() call per element; most elements of a header carry no attribute at all, and most of the
        # others no Id (a set test in C); only those are looked at name by name, in ID_ATTRIBUTES order.
        names = element.keys()
        if not names or _ID_NAMES.isdisjoint(names) or not isinstance(element.tag, str):
            continue
        for name in ID_ATTRIBUTES:
            value = element.get(name) if name in names else None
            if value is None:
                continue
            if value in seen:
                raise EbmsError(ErrorCode.INVALID_HEADER, f"Id {value!r} occurs more than once")
            seen[value] = element
    return seen


def element_id(element: etree._Element) -> str | None:
    """The element's Id under any of the attributes references resolve."""
    for name in ID_ATTRIBUTES:
        value = element.get(name)
        if value is not None:
            return value
    return None


@cache
def ebms_header_schema() -> etree.XMLSchema:
    """The ebMS 3 header schema, loaded once from the package (imports resolved locally)."""
    folder = resources.files("accesspoint.core") / "schemas"
    path = Path(str(folder / "ebms-header-3_0-200704.xsd"))
    return etree.XMLSchema(etree.parse(str(path), parser=_hardened_parser()))


def validate_messaging(messaging: etree._Element) -> None:
    """Validate eb:Messaging against the ebMS 3 header schema; EBMS:0009 with the first violation."""
    schema = ebms_header_schema()
    if not schema.validate(messaging):
        error_log: Any = schema.error_log  # lxml-stubs do not know that the log is iterable
        errors = list(error_log)
        reason = errors[0].message if errors else "schema violation"
        raise EbmsError(ErrorCode.INVALID_HEADER, f"eb:Messaging is not valid against the ebMS 3 schema: {reason}")
