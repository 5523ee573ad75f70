"""Message files as the CLI reads them: a raw HTTP body, or an HTTP dump (headers, blank line, body)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from accesspoint.core.errors import EbmsError, ErrorCode


@dataclass(frozen=True, slots=True)
class HttpMessage:
    """An HTTP message's headers (names lower-cased) and body."""

    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header of that name, or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


def _looks_like_xml(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def split_http_dump(data: bytes) -> HttpMessage:
    """Split an HTTP dump (optional request/status line, headers, blank line, body; CRLF or LF).

    A file that starts with XML has no headers. EBMS:0007 when no Content-Type can be found.
    """
    if _looks_like_xml(data):
        return HttpMessage((), data)
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, body = data[:crlf], data[crlf + 4 :]
    elif lf >= 0:
        head, body = data[:lf], data[lf + 2 :]
    else:
        raise EbmsError(ErrorCode.MIME_INCONSISTENCY, "file is neither XML nor an HTTP dump (no blank line)")
    headers: list[tuple[str, str]] = []
    for raw in head.decode("latin-1").replace("\r\n", "\n").split("\n"):
        if not raw.strip():
            continue
        if raw[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + raw.strip())
            continue
        name, sep, value = raw.partition(":")
        if not sep or " " in name.strip():
            # The request or status line ("POST /as4 HTTP/1.1", "HTTP/1.1 200 OK") carries no header.
            if not headers and ("HTTP/" in raw):
                continue
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"malformed HTTP header line {raw[:80]!r}")
        headers.append((name.strip().lower(), value.strip()))
    return HttpMessage(tuple(headers), body)


def guess_bare_content_type(body: bytes) -> str:
    """For a headerless XML file: the SOAP media type its envelope namespace implies."""
    head = body[:4096]
    # The namespace the Envelope start tag binds its own prefix to decides: a SOAP 1.1 envelope may also declare
    # the SOAP 1.2 namespace for its header blocks (ph-as4 receipts do).
    tag = _ENVELOPE_START.search(head)
    if tag is not None:
        prefix = tag.group(1)
        attribute = re.escape(b"xmlns:" + prefix if prefix else b"xmlns")
        declared = re.search(attribute + rb"""\s*=\s*["']([^"']*)["']""", tag.group(0))
        if declared is not None and declared.group(1) in _SOAP_MEDIA_TYPES:
            return _SOAP_MEDIA_TYPES[declared.group(1)]
    if b"http://schemas.xmlsoap.org/soap/envelope/" in head and b"http://www.w3.org/2003/05/soap-envelope" not in head:
        return "text/xml"
    return "application/soap+xml"


_ENVELOPE_START = re.compile(rb"<(?:([A-Za-z_][\w.-]*):)?Envelope\b[^>]*")
_SOAP_MEDIA_TYPES = {
    b"http://schemas.xmlsoap.org/soap/envelope/": "text/xml",
    b"http://www.w3.org/2003/05/soap-envelope": "application/soap+xml",
}
