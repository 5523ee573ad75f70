"""How strictly a received message must follow the AS4 wire format, beyond what it takes to read it at all.

Reading (``message.read_message``, ``envelope.parse_envelope``) accepts what it can make sense of and records each
departure from the rules below as a ``Deviation`` on the result, at the cost of a few attribute reads and one
regular expression per message. ``check_wire`` is the strict part: it raises the EbmsError of the first deviation
the caller does not let pass. The AS4 endpoint calls it for every message, letting pass only what the P-Mode's
``leniency`` names (``pmode``); the offline ``accesspoint verify`` reports the deviations instead.

| rule | what is refused | code |
|---|---|---|
| ``mime_line_break`` | a bare CR or LF in a MIME delimiter line or header block (a smuggled header) | EBMS:0007 |
| ``charset`` | a SOAP part not in UTF-8 or UTF-16, or in another than its declared ``charset`` | EBMS:0009 |
| ``soap11`` | a SOAP 1.1 envelope (AS4 is SOAP 1.2) | EBMS:0010 |
| ``must_understand`` | ``eb:Messaging`` without ``mustUnderstand`` true (1.2: ``true``/``1``, 1.1: ``1``) | EBMS:0009 |
| ``message_id`` | a MessageId or RefToMessageId that is no RFC 2822 msg-id (ebMS 3 section 5.2.2.1) | EBMS:0009 |
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.namespaces import SoapVersion


class WireRule(StrEnum):
    """A wire-format rule the endpoint holds received messages to; the value is its name in P-Modes and reports."""

    MIME_LINE_BREAK = "mime_line_break"
    CHARSET = "charset"
    SOAP11 = "soap11"
    MUST_UNDERSTAND = "must_understand"
    MESSAGE_ID = "message_id"

    @property
    def error_code(self) -> ErrorCode:
        """The ebMS error a message breaking this rule is refused with."""
        return _CODES[self]


_CODES: Final = {
    WireRule.MIME_LINE_BREAK: ErrorCode.MIME_INCONSISTENCY,
    WireRule.CHARSET: ErrorCode.INVALID_HEADER,
    WireRule.SOAP11: ErrorCode.PROCESSING_MODE_MISMATCH,
    WireRule.MUST_UNDERSTAND: ErrorCode.INVALID_HEADER,
    WireRule.MESSAGE_ID: ErrorCode.INVALID_HEADER,
}

# What a P-Mode may relax, each because real peers or the specification's own examples break it (README,
# "Strict on the wire"). Line breaks and character sets are never relaxed: they are how a part's headers or
# its text could be read otherwise than the sender's signature meant.
RELAXABLE: Final = frozenset({WireRule.SOAP11, WireRule.MUST_UNDERSTAND, WireRule.MESSAGE_ID})


@dataclass(frozen=True, slots=True)
class Deviation:
    """One rule a received message breaks, what exactly, and the message's MessageId (None when unknown)."""

    rule: WireRule
    detail: str
    message_id: str | None = None


def check_wire(deviations: Iterable[Deviation], *, lenient: frozenset[WireRule] = frozenset()) -> None:
    """Raise the EbmsError of the first deviation whose rule is not in ``lenient``.

    The error refers to the message by its MessageId, unless that is no msg-id and ``lenient`` does not allow it.
    """
    found = tuple(deviations)
    unusable_id = WireRule.MESSAGE_ID not in lenient and any(d.rule is WireRule.MESSAGE_ID for d in found)
    for deviation in found:
        if deviation.rule not in lenient:
            ref = None if unusable_id else deviation.message_id
            raise EbmsError(deviation.rule.error_code, deviation.detail, ref_to_message_id=ref)


# ------------------------------------------------------------------------------------------------ MessageId

# RFC 2822 section 3.6.4 msg-id without its angle brackets (ebMS 3 section 5.2.2.1 leaves them out), obsolete
# forms excluded: id-left "@" id-right, each a dot-atom-text, or a quoted string (left) or domain literal (right).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM_TEXT = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_NO_WS_CTL = r"\x01-\x08\x0b\x0c\x0e-\x1f\x7f"
_QUOTED_PAIR = r"\\[\x01-\x09\x0b\x0c\x0e-\x7f]"
_NO_FOLD_QUOTE = rf'"(?:[{_NO_WS_CTL}\x21\x23-\x5b\x5d-\x7e]|{_QUOTED_PAIR})*"'
_NO_FOLD_LITERAL = rf"\[(?:[{_NO_WS_CTL}\x21-\x5a\x5e-\x7e]|{_QUOTED_PAIR})*\]"
_MSG_ID = re.compile(rf"(?:{_DOT_ATOM_TEXT}|{_NO_FOLD_QUOTE})@(?:{_DOT_ATOM_TEXT}|{_NO_FOLD_LITERAL})")


def is_msg_id(value: str) -> bool:
    """True when ``value`` is an RFC 2822 msg-id without angle brackets (``id-left@id-right``)."""
    return _MSG_ID.fullmatch(value) is not None


def message_id_deviation(message_id: str, ref_to_message_id: str | None) -> Deviation | None:
    """The deviation of a MessageId or RefToMessageId that is no msg-id."""
    if _MSG_ID.fullmatch(message_id) is None:
        bad = f"MessageId {message_id[:80]!r}"
    elif ref_to_message_id is not None and _MSG_ID.fullmatch(ref_to_message_id) is None:
        bad = f"RefToMessageId {ref_to_message_id[:80]!r}"
    else:
        return None
    return Deviation(WireRule.MESSAGE_ID, f"{bad} is not an RFC 2822 msg-id (left@right)", message_id)


# ------------------------------------------------------------------------------------------------ SOAP

_TRUE_12: Final = ("true", "1")  # xs:boolean true; SOAP 1.1 has "1" only


def soap_deviations(
    soap_version: SoapVersion, must_understand: str | None, message_id: str | None
) -> tuple[Deviation, ...]:
    """SOAP 1.1 and eb:Messaging/@mustUnderstand (its value as found, None when absent)."""
    if soap_version is SoapVersion.V12 and must_understand in _TRUE_12:  # the common case, at once
        return ()
    found: list[Deviation] = []
    if soap_version is SoapVersion.V11:
        found.append(Deviation(WireRule.SOAP11, "a SOAP 1.1 envelope: AS4 uses SOAP 1.2", message_id))
    wanted = _TRUE_12 if soap_version is SoapVersion.V12 else ("1",)
    if must_understand is None or must_understand.strip() not in wanted:
        said = "absent" if must_understand is None else repr(must_understand[:20])
        found.append(
            Deviation(WireRule.MUST_UNDERSTAND, f"eb:Messaging/@mustUnderstand must be true, it is {said}", message_id)
        )
    return tuple(found)


# ------------------------------------------------------------------------------------------------ charset

_BOMS: Final = (
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16"),
    (b"\xff\xfe", "utf-16"),
)
# XML 1.0 appendix F: the first four bytes of a document without a byte order mark, "<?xm" in each encoding.
_UNMARKED: Final = (
    (b"\x00\x00\x00<", "utf-32"),
    (b"<\x00\x00\x00", "utf-32"),
    (b"\x00<\x00?", "utf-16"),
    (b"<\x00?\x00", "utf-16"),
)
_DECLARED_ENCODING = re.compile(rb"""^<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")
_ALLOWED_CHARSETS: Final = frozenset({"utf-8", "utf-16"})
_UTF8_DECLARATIONS: Final = tuple(
    f"<?xml version={q}1.0{q} encoding={q}{name}{q}{end}".encode()
    for q in "\"'"
    for name in ("UTF-8", "utf-8")
    for end in ("?>", ' standalone="no"?>', ' standalone="yes"?>')
)


def _family(label: str) -> str:
    """``UTF8``, ``utf-16LE``, ``UTF_32be`` -> ``utf-8``, ``utf-16``, ``utf-32``; other labels lower-cased."""
    compact = label.strip().lower().replace("-", "").replace("_", "")
    for family in ("utf8", "utf16", "utf32"):
        if compact in (family, f"{family}le", f"{family}be"):
            return f"utf-{family[3:]}"
    return label.strip().lower()


def _xml_declaration_encoding(data: bytes, family: str) -> str | None:
    """The encoding an XML declaration at the start of ``data`` names (None when there is none)."""
    head = data[:400]
    if family == "utf-16":
        codec = "utf-16-be" if head.startswith((b"\xfe\xff", b"\x00")) else "utf-16-le"
        text = head[: len(head) // 2 * 2].decode(codec, "replace").lstrip("\ufeff")
        head = text.encode("ascii", "replace")
    elif family == "utf-8":
        head = head.removeprefix(b"\xef\xbb\xbf")
    else:
        return None
    found = _DECLARED_ENCODING.match(head)
    return None if found is None else found.group(1).decode("ascii")


def charset_deviation(declared: str | None, data: bytes, message_id: str | None = None) -> Deviation | None:
    """A SOAP part (``data``, with the ``charset`` its Content-Type ``declared``) not in UTF-8 or UTF-16, or in
    another encoding than it declares in its Content-Type or XML declaration (WS-I Basic Profile R1012, R1018)."""
    # The common case at once: UTF-8 declared or not, and an XML declaration saying UTF-8 or none at all.
    if (declared is None or declared.lower() == "utf-8") and (
        data.startswith(_UTF8_DECLARATIONS) or (data[:1] == b"<" and data[1:2] != b"?")
    ):
        return None
    head = data[:4]
    found = next((name for mark, name in _BOMS if head.startswith(mark)), None)
    found = found or next((name for mark, name in _UNMARKED if head == mark), None)
    in_declaration = _xml_declaration_encoding(data, found or "utf-8")
    family = found or (_family(in_declaration) if in_declaration else "utf-8")
    problem = None
    if family not in _ALLOWED_CHARSETS:
        problem = f"the SOAP part is in {family}: only UTF-8 and UTF-16 are allowed"
    elif in_declaration is not None and _family(in_declaration) != family:
        problem = f"the SOAP part is in {family} but its XML declaration says {in_declaration[:40]!r}"
    elif declared is not None and _family(declared) != family:
        problem = f"the SOAP part is in {family} but its Content-Type says charset={declared[:40]!r}"
    return None if problem is None else Deviation(WireRule.CHARSET, problem, message_id)
