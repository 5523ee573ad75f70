"""Structured mutation: the fuzzer's bytes are read as a small program of edits to a valid document.

A byte-level mutation of a signed message almost always breaks the XML or a digest at once, so the fuzzer would
stay in the parser. Here each input byte string is a sequence of tree edits (move, copy, wrap, rename, delete
an element; set, split or comment an element's text; set an attribute; ...) and MIME edits (attachment bytes,
headers), applied to a valid signed and encrypted message; coverage guidance then learns which edit sequences
reach deeper checks (wrapping, references, token resolution, decryption). Every edit keeps the document
well-formed, so the signature checks are what refuses it — or, if the edit left the signed content as it was,
what must accept it with the same values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lxml import etree

from accesspoint.core.namespaces import NS
from accesspoint.security import algorithms

MAX_EDITS = 8


class ByteReader:
    """Reads choices from the fuzzer's bytes; an exhausted reader answers 0 (the first choice)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def exhausted(self) -> bool:
        """True once every byte has been read."""
        return self._pos >= len(self._data)

    def byte(self) -> int:
        """The next byte, 0 past the end."""
        if self._pos >= len(self._data):
            return 0
        value = self._data[self._pos]
        self._pos += 1
        return value

    def below(self, bound: int) -> int:
        """A number in ``range(bound)`` (two bytes when the bound is past one byte's reach)."""
        if bound <= 1:
            return 0
        value = self.byte()
        if bound > 256:
            value = value << 8 | self.byte()
        return value % bound

    def choice(self, items: Sequence[str]) -> str:
        """One of ``items``."""
        return items[self.below(len(items))]


def _elements(root: etree._Element) -> list[etree._Element]:
    # iter(etree.Element) leaves comments and PIs out in C: a Python filter over every node cost a tenth of an
    # execution of the signed-message targets.
    return list(root.iter(etree.Element))


def _is_inside(element: etree._Element, ancestor: etree._Element) -> bool:
    return element is ancestor or any(a is ancestor for a in element.iterancestors())


# Tags an element may be renamed to or wrapped in: the names the verifiers look for, and one they do not know.
TAGS: tuple[str, ...] = (
    f"{{{NS.EBMS}}}Messaging",
    f"{{{NS.EBMS}}}UserMessage",
    f"{{{NS.EBMS}}}SignalMessage",
    f"{{{NS.EBMS}}}MessageInfo",
    f"{{{NS.EBMS}}}MessageId",
    f"{{{NS.EBMS}}}Receipt",
    f"{{{NS.EBMS}}}PartInfo",
    f"{{{NS.WSSE}}}Security",
    f"{{{NS.WSSE}}}SecurityTokenReference",
    f"{{{NS.WSSE}}}BinarySecurityToken",
    f"{{{NS.WSSE}}}Reference",
    f"{{{NS.WSSE}}}KeyIdentifier",
    f"{{{NS.DS}}}X509Data",
    f"{{{NS.DS}}}X509IssuerSerial",
    f"{{{NS.DS}}}X509Certificate",
    f"{{{NS.DS}}}Signature",
    f"{{{NS.DS}}}SignedInfo",
    f"{{{NS.DS}}}Reference",
    f"{{{NS.DS}}}Object",
    f"{{{NS.DS}}}KeyInfo",
    f"{{{NS.XENC}}}EncryptedKey",
    f"{{{NS.XENC}}}EncryptedData",
    f"{{{NS.SOAP12}}}Header",
    f"{{{NS.SOAP12}}}Body",
    f"{{{NS.SOAP11}}}Envelope",
    "{urn:fuzz}Wrapper",
    "Unqualified",
)
ATTRIBUTES: tuple[str, ...] = (
    f"{{{NS.WSU}}}Id",
    "Id",
    "id",
    "ID",
    f"{{{NS.XML}}}id",
    "URI",
    "Algorithm",
    "href",
    "ValueType",
    "EncodingType",
    "Type",
    "MimeType",
    "mpc",
    "PrefixList",
    f"{{{NS.SOAP12}}}mustUnderstand",
    f"{{{NS.SOAP11}}}mustUnderstand",
    f"{{{NS.XML}}}lang",
)
# Every algorithm and token type URI the security layer knows.
ALGORITHM_URIS = tuple(
    str(member.value)
    for enum in (
        algorithms.C14N,
        algorithms.SignatureAlgorithm,
        algorithms.DigestAlgorithm,
        algorithms.Transform,
        algorithms.DataEncryption,
        algorithms.KeyTransport,
        algorithms.MaskGeneration,
        algorithms.KeyAgreement,
        algorithms.KeyDerivation,
        algorithms.KeyWrap,
        algorithms.HkdfPrf,
        algorithms.TokenType,
        algorithms.EncryptedDataType,
    )
    for member in enum
)
GENERIC_TOKENS: tuple[str, ...] = (
    "",
    " ",
    "\n",
    "true",
    "false",
    "0",
    "1",
    "#",
    "cid:",
    "AAAA",
    "====",
    "x" * 300,
    "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/defaultMPC",
    "application/gzip",
    "application/xml",
    *ALGORITHM_URIS,
)
# Characters a string edit inserts: markup that must be escaped, whitespace the parsers strip, non-ASCII.
_INSERTS = ("<", "&", "]]>", " ", "\t", "\r\n", "\u00e9", "\U0001f600", "-", "@", "%", "#", ":")
# Text that looks like nothing but changes the signed bytes, or does not.
_SPACES = ("", " ", "\n", "\r\n  ", "\t")


def collect_tokens(root: etree._Element) -> tuple[str, ...]:
    """Every text and attribute value of ``root``, with ``#`` before each Id value (reference URIs)."""
    found: dict[str, None] = dict.fromkeys(GENERIC_TOKENS)
    for element in _elements(root):
        if element.text and element.text.strip():
            found.setdefault(element.text.strip())
        for name, value in element.attrib.items():
            found.setdefault(value)
            if name.endswith(("Id", "id")) or name == "ID":
                found.setdefault(f"#{value}")
    return tuple(found)


def mutate_string(value: str, reader: ByteReader, tokens: Sequence[str]) -> str:
    """One small edit of a string: insert, delete, replace, duplicate, truncate, case."""
    kind = reader.below(7)
    position = reader.below(len(value) + 1)
    if kind == 0:
        return value[:position] + reader.choice(_INSERTS) + value[position:]
    if kind == 1:
        return value[:position] + value[position + 1 :]
    if kind == 2:
        return reader.choice(tokens)
    if kind == 3:
        return value + value
    if kind == 4:
        return value[:position]
    if kind == 5:
        return value.swapcase()
    return value[:position] + reader.choice(tokens) + value[position:]


@dataclass
class Part:
    """A MIME part as the wire mutator holds it."""

    content_id: str
    content_type: str
    data: bytes


@dataclass
class Mutated:
    """The edited message: the envelope tree, the attachments and byte flips to make in the serialised envelope."""

    root: etree._Element
    parts: list[Part]
    flips: list[tuple[int, int]] = field(default_factory=list)
    soap_11: bool = False


def _set_text(element: etree._Element, reader: ByteReader, tokens: Sequence[str]) -> None:
    element.text = reader.choice(tokens)


def _edit_text(element: etree._Element, reader: ByteReader, tokens: Sequence[str]) -> None:
    element.text = mutate_string(element.text or "", reader, tokens)


def _comment_in_text(element: etree._Element, reader: ByteReader, _tokens: Sequence[str]) -> None:
    # <a>abc<!---->def</a>: exclusive C14N (without comments) signs "abcdef"; ``.text`` is only "abc".
    text = element.text or ""
    position = reader.below(len(text) + 1)
    node = etree.Comment("") if reader.byte() % 2 == 0 else etree.ProcessingInstruction("fuzz", "x")
    element.text = text[:position]
    node.tail = text[position:]
    element.insert(0, node)


def _cdata(element: etree._Element, _reader: ByteReader, _tokens: Sequence[str]) -> None:
    text = element.text or ""
    if "]]>" not in text:
        element.text = etree.CDATA(text)


def _set_tail(element: etree._Element, reader: ByteReader, tokens: Sequence[str]) -> None:
    if element.getparent() is not None:
        element.tail = reader.choice(_SPACES) if reader.byte() % 2 else reader.choice(tokens)


def _set_attribute(element: etree._Element, reader: ByteReader, tokens: Sequence[str]) -> None:
    names = list(element.attrib.keys())
    name = names[reader.below(len(names))] if names and reader.byte() % 2 else reader.choice(ATTRIBUTES)
    value = reader.choice(tokens)
    if reader.byte() % 3 == 0:
        value = mutate_string(element.get(name, value), reader, tokens)
    element.set(name, value)


def _delete_attribute(element: etree._Element, reader: ByteReader, _tokens: Sequence[str]) -> None:
    names = list(element.attrib.keys())
    if names:
        del element.attrib[names[reader.below(len(names))]]


def _rename(element: etree._Element, reader: ByteReader, _tokens: Sequence[str]) -> None:
    element.tag = reader.choice(TAGS)


def _reprefix(element: etree._Element, reader: ByteReader, _tokens: Sequence[str]) -> None:
    # The same name under another prefix: a difference exclusive C14N keeps, lxml's names do not.
    parent = element.getparent()
    namespace = etree.QName(element).namespace
    if parent is None or namespace is None:
        return
    prefix = ("p", "ns0", "eb", "ds", "S")[reader.below(5)]
    replacement = etree.Element(element.tag, attrib=dict(element.attrib), nsmap={prefix: namespace})
    replacement.text, replacement.tail = element.text, element.tail
    replacement.extend(list(element))
    parent.replace(element, replacement)


_ElementEdit = Callable[[etree._Element, ByteReader, Sequence[str]], None]
_ELEMENT_EDITS: tuple[_ElementEdit, ...] = (
    _set_text,
    _edit_text,
    _comment_in_text,
    _cdata,
    _set_tail,
    _set_attribute,
    _delete_attribute,
    _rename,
    _reprefix,
)


class TreeMutator:
    """Applies an edit program to a copy of a document."""

    def __init__(self, root: etree._Element, extra_tokens: Sequence[str] = ()) -> None:
        self._root = root
        self.tokens = tuple(dict.fromkeys((*collect_tokens(root), *extra_tokens)))

    def copy(self) -> etree._Element:
        """A fresh copy of the document to edit."""
        return copy.deepcopy(self._root)

    def edit(self, root: etree._Element, reader: ByteReader) -> None:
        """One edit of the tree (the root element itself is never removed)."""
        elements = _elements(root)
        kind = reader.below(7 + len(_ELEMENT_EDITS))
        element = elements[reader.below(len(elements))]
        if kind >= 7:
            _ELEMENT_EDITS[kind - 7](element, reader, self.tokens)
            return
        parent = element.getparent()
        if kind == 0:  # delete
            if parent is not None:
                parent.remove(element)
        elif kind == 1:  # duplicate in place
            if parent is not None:
                element.addnext(copy.deepcopy(element))
        elif kind in (2, 3):  # move (2) or copy (3) under another element
            target = elements[reader.below(len(elements))]
            if parent is None or _is_inside(target, element):
                return
            moved = element if kind == 2 else copy.deepcopy(element)
            target.insert(reader.below(len(target) + 1), moved)
        elif kind == 4:  # wrap
            if parent is not None:
                wrapper = etree.Element(reader.choice(TAGS))
                element.addprevious(wrapper)
                wrapper.append(element)
        elif kind == 5:  # swap with another element
            other = elements[reader.below(len(elements))]
            if parent is None or other.getparent() is None or _is_inside(other, element) or _is_inside(element, other):
                return
            marker = etree.Comment("swap")
            other.addprevious(marker)
            element.addprevious(other)
            marker.addprevious(element)
            marker.getparent().remove(marker)  # type: ignore[union-attr]  # it was just inserted
        else:  # a new child
            child = etree.SubElement(element, reader.choice(TAGS))
            child.text = reader.choice(self.tokens)


def edit_parts(mutated: Mutated, reader: ByteReader, tokens: Sequence[str]) -> None:
    """One edit of the MIME level: attachment bytes, a part's headers, parts dropped or duplicated, SOAP 1.1."""
    kind = reader.below(7)
    parts = mutated.parts
    if kind == 6:
        mutated.soap_11 = not mutated.soap_11
        return
    if not parts:
        return
    part = parts[reader.below(len(parts))]
    if kind == 0 and part.data:  # flip a byte
        position = reader.below(len(part.data))
        part.data = (
            part.data[:position] + bytes([part.data[position] ^ (reader.byte() | 1)]) + part.data[position + 1 :]
        )
    elif kind == 1:  # truncate or extend
        part.data = part.data[: reader.below(len(part.data) + 1)] if reader.byte() % 2 else part.data + b"\x00" * 16
    elif kind == 2:  # another Content-ID (a sender cannot put CR or LF into the header)
        part.content_id = mutate_string(part.content_id, reader, tokens).replace("\r", "").replace("\n", "")
    elif kind == 3:  # another Content-Type
        part.content_type = reader.choice(("application/xml", "text/plain", "application/gzip", "text/xml; a=b"))
    elif kind == 4:  # drop
        parts.remove(part)
    else:  # duplicate, or swap contents with another part
        other = parts[reader.below(len(parts))]
        if other is part:
            parts.append(Part(part.content_id, part.content_type, part.data))
        else:
            part.data, other.data = other.data, part.data


def run_program(tree: TreeMutator, parts: Sequence[Part], data: bytes) -> Mutated:
    """Apply the edit program in ``data``: each step's first byte picks tree, MIME or raw-byte edits."""
    reader = ByteReader(data)
    mutated = Mutated(tree.copy(), [Part(p.content_id, p.content_type, p.data) for p in parts])
    for _ in range(MAX_EDITS):
        if reader.exhausted:
            break
        layer = reader.byte() % 8
        if layer < 6:
            tree.edit(mutated.root, reader)
        elif layer == 6:
            edit_parts(mutated, reader, tree.tokens)
        else:
            mutated.flips.append((reader.below(1 << 16), reader.byte() | 1))
    return mutated


def serialize(mutated: Mutated) -> bytes:
    """The edited envelope as bytes, with its raw byte flips applied."""
    data = bytearray(etree.tostring(mutated.root))
    for position, mask in mutated.flips:
        if data:
            data[position % len(data)] ^= mask
    return bytes(data)
