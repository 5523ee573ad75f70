"""The presentation policy: what content a mailbox shows, checked part by part as it streams, sans-I/O.

Content that a holder's mailbox could not show safely is refused before anything is stored, with a reason that
names the part and the rule, and that reason goes back in the operator's signed answer. The policy
(``[operator.presentation]``) says:

- which MIME types may be shown (by default ``application/pdf``, ``text/plain``, ``text/html``); a ``charset``
  parameter, where given, must be UTF-8;
- the largest part (``max_part_size``), counted as the bytes stream through;
- PDF: the file starts with ``%PDF-``; with ``pdf_a`` (the default) it declares PDF/A conformance in its XMP
  metadata (``pdfaid:part``), and it never carries JavaScript (``/JavaScript``, ``/JS``), launch actions or
  encryption (``/Encrypt``), which PDF/A forbids too;
- plain text: valid UTF-8;
- HTML: a sanitised subset — only the elements and attributes listed below, links only to ``https:`` and
  ``mailto:``, no scripts, styles, frames, forms, event handlers or external images (DIGG's rule for digital
  mail), at most ``max_html_size`` (2 MiB: the whole message's limit in Mina meddelanden). Nothing is rewritten:
  the content is signed by its sender, so what does not fit is refused, never "cleaned".

``PartCheck`` takes one part's chunks (``feed``) and gives the first ``Violation`` (``finish``); memory stays
bounded (a PDF is scanned through a sliding window, HTML is the only kind read whole, and only up to its limit).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

from lxml import etree
from lxml import html as lxml_html

PDF_MAGIC = b"%PDF-"
# XMP: <pdfaid:part>2</pdfaid:part> or pdfaid:part="2" (ISO 19005 6.7.11).
_PDFA = re.compile(rb"pdfaid:part\s*(?:=\s*[\"']\s*[1-4]|>\s*[1-4])")
# Name objects PDF/A forbids; a name ends at a delimiter, so /JSON is not /JS.
_PDF_FORBIDDEN = re.compile(rb"/(JavaScript|JS|Launch|Encrypt)(?=[\s/<>\[\]()%{}]|$)")
_WINDOW = 64  # bytes carried over between chunks, longer than any pattern above

_TAGS = """html head title body p br hr b strong i em u s small sub sup span div blockquote pre code h1 h2 h3 h4 h5 h6
ul ol li dl dt dd table thead tbody tfoot tr th td caption a img"""
_ATTRIBUTES = "href title lang dir colspan rowspan alt src width height class id"
ALLOWED_TAGS = frozenset(_TAGS.split())
ALLOWED_ATTRIBUTES = frozenset(_ATTRIBUTES.split())
LINK_SCHEMES = ("https:", "mailto:")


@dataclass(frozen=True, slots=True)
class PresentationPolicy:
    """What content a mailbox shows (see the module docstring)."""

    content_types: frozenset[str] = frozenset({"application/pdf", "text/plain", "text/html"})
    max_part_size: int = 64 * 1024 * 1024
    pdf_a: bool = True
    max_html_size: int = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a part is refused: the part's name, the rule (``content-type``, ``size``, ``pdf-a``, …) and a reason."""

    part: str
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"{self.part}: {self.reason} (presentation policy: {self.rule})"


def media_type(content_type: str) -> tuple[str, str | None]:
    """The bare MIME type in lower case and its charset parameter (None when absent)."""
    kind, _, parameters = content_type.partition(";")
    charset = None
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return kind.strip().lower(), charset


@dataclass
class PartCheck:
    """One part checked as its bytes stream through (see the module docstring)."""

    policy: PresentationPolicy
    name: str
    content_type: str
    size: int = 0
    violation: Violation | None = None
    _kind: str = ""
    _tail: bytes = b""
    _head: bytes = b""
    _pdf_a: bool = False
    _decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")())
    _html: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        kind, charset = media_type(self.content_type)
        self._kind = kind
        if kind not in self.policy.content_types:
            shown = ", ".join(sorted(self.policy.content_types))
            self._fail("content-type", f"{kind or 'no content type'} is not shown in mailboxes (only {shown})")
        elif charset is not None and charset not in ("utf-8", "utf8"):
            self._fail("charset", f"text in {charset} is not shown; send UTF-8")

    def _fail(self, rule: str, reason: str) -> None:
        if self.violation is None:
            self.violation = Violation(self.name, rule, reason)

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the part."""
        if self.violation is not None or not chunk:
            return
        self.size += len(chunk)
        if self.size > self.policy.max_part_size:
            self._fail("size", f"larger than {self.policy.max_part_size} bytes")
            return
        if self._kind == "application/pdf":
            self._scan_pdf(chunk)
        elif self._kind == "text/plain":
            try:
                self._decoder.decode(chunk)
            except UnicodeDecodeError:
                self._fail("utf-8", "the text is not valid UTF-8")
        elif self._kind == "text/html":
            if self.size > self.policy.max_html_size:
                self._fail("size", f"HTML larger than {self.policy.max_html_size} bytes")
            else:
                self._html.extend(chunk)

    def _scan_pdf(self, chunk: bytes) -> None:
        if len(self._head) < len(PDF_MAGIC):
            self._head += chunk[: len(PDF_MAGIC) - len(self._head)]
            if not PDF_MAGIC.startswith(self._head[: len(PDF_MAGIC)]):
                self._fail("pdf", "not a PDF (it does not start with %PDF-)")
                return
        window = self._tail + chunk
        forbidden = _PDF_FORBIDDEN.search(window)
        if forbidden is not None:
            name = forbidden.group(1).decode()
            self._fail("pdf-a", f"the PDF contains /{name}, which a mailbox does not show (PDF/A forbids it)")
        if _PDFA.search(window):
            self._pdf_a = True
        self._tail = window[-_WINDOW:]

    def finish(self) -> Violation | None:
        """The first violation, once every byte was fed."""
        if self.violation is None:
            if self._kind == "application/pdf":
                if len(self._head) < len(PDF_MAGIC):
                    self._fail("pdf", "not a PDF (it does not start with %PDF-)")
                elif self.policy.pdf_a and not self._pdf_a:
                    self._fail("pdf-a", "the PDF declares no PDF/A conformance (XMP pdfaid:part)")
            elif self._kind == "text/plain":
                try:
                    self._decoder.decode(b"", final=True)
                except UnicodeDecodeError:
                    self._fail("utf-8", "the text ends inside a UTF-8 character")
            elif self._kind == "text/html":
                problem = html_problem(bytes(self._html))
                if problem is not None:
                    self._fail("html", problem)
        return self.violation


def check_bytes(policy: PresentationPolicy, name: str, content_type: str, data: bytes) -> Violation | None:
    """A part held in memory, checked at once."""
    check = PartCheck(policy, name, content_type)
    check.feed(data)
    return check.finish()


def html_problem(data: bytes) -> str | None:
    """Why an HTML document is outside the sanitised subset (None when it is inside)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "the HTML is not valid UTF-8"
    if not text.strip():
        return "the HTML is empty"
    parser = lxml_html.HTMLParser(remove_comments=True, no_network=True, recover=True)
    try:
        root = lxml_html.document_fromstring(text, parser=parser)
    except (etree.ParserError, ValueError) as exc:
        return f"the HTML cannot be read ({exc})"
    for element in root.iter():
        tag = element.tag
        if not isinstance(tag, str):
            return "processing instructions are not shown"
        if tag.lower() not in ALLOWED_TAGS:
            return f"<{tag}> is not in the HTML subset mailboxes show"
        for attribute, value in element.attrib.items():
            name = str(attribute).lower()
            if name not in ALLOWED_ATTRIBUTES:
                return f"the attribute {name} on <{tag}> is not allowed (no event handlers or styles)"
            target = str(value).strip().lower()
            if name == "href" and not target.startswith((*LINK_SCHEMES, "#")):
                return f"a link to {target[:60]!r}: only https: and mailto: links are shown"
            if name == "src" and not target.startswith(("cid:", "data:image/png", "data:image/jpeg")):
                return f"an external image ({target[:60]!r}) is not shown"
    return None
