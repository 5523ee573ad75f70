"""General party identifiers of senders, validated without I/O: ISO 6523 ``icd:value`` and eIDAS-style ids.

A sender of digital post is an organisation anywhere in the Nordic and Baltic countries (or the EU), so FaR keys
senders, and the recipients' refusals of them, on one canonical text:

======  ===========================================  =====================================================
ICD     what                                         checked
======  ===========================================  =====================================================
0007    Swedish organisationsnummer (10 digits)      third digit 2 or more, Luhn (``16`` prefix dropped)
0192    Norwegian organisasjonsnummer (9 digits)     mod 11, weights 3 2 7 6 5 4 3 2
0216    Finnish OVT code: ``0037`` + Y-tunnus        Y-tunnus mod 11, weights 7 9 10 5 8 4 2; up to 5
        (8 digits) + an optional suffix              letters or digits after it
0184    Danish CVR (DIGSTORG, 8 digits)              mod 11, weights 2 7 6 5 4 3 2 1
0196    Icelandic kennitala (10 digits)              mod 11 over the first 8 (weights 3 2 7 6 5 4 3 2)
0191    Estonian registrikood (8 digits)             the isikukood check digit (weights 1..7, then 3..9)
0218    Latvian registration number (11 digits)      length and digits
0200    Lithuanian legal entity code (9 digits)      length and digits
0203    SDK's own register (Swedish public sector)   printable, no spaces
======  ===========================================  =====================================================

Finland's older schemes are accepted on input and stored as 0216: ``0037:`` (Y-tunnus, with or without its
hyphen), ``0212:1234567-8`` (Y-tunnus) and ``0213:FI12345678`` (Finnish VAT number). A bare 10-digit number, or
``16`` + 10 digits, is a Swedish organisationsnummer (what FaR took before), stored as ``0007:…``. The scheme
prefixes ``iso6523-actorid-upis::`` and the ebCore party type ``urn:oasis:names:tc:ebcore:partyid-type:iso6523:``
are dropped. Other ICDs are accepted only when the settings name them (``extra_icds``), with a value of printable
characters. An eIDAS-style identifier ``XX/YY/identifier`` (nationality of the issuer, of the destination, then
the identifier; eIDAS SAML attribute profile 1.2, 2.2.3) is kept as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from far.identifiers import InvalidIdentifier, Policy, parse_orgnr

ISO6523 = "iso6523-actorid-upis"
EBCORE_ISO6523 = "urn:oasis:names:tc:ebcore:partyid-type:iso6523:"
MAX_PARTY_ID = 256
SWEDEN = "0007"
FINLAND = "0216"
_EIDAS = re.compile(r"[A-Z]{2}/[A-Z]{2}/[\x21-\x7e]{1,250}")
_ICD = re.compile(r"\d{4}")
_VALUE = re.compile(r"[\x21-\x7e]{1,240}")
_Y_TUNNUS = re.compile(r"(\d{7})-?(\d)")
_OVT = re.compile(r"0037(\d{8})([0-9A-Za-z]{0,5})")


def _mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    """``11 - sum % 11`` (11 becomes 0; None for 10, which no number may have)."""
    check = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    return None if check == 10 else check % 11


def _norway(value: str) -> str:
    if not re.fullmatch(r"\d{9}", value):
        raise ValueError("a Norwegian organisasjonsnummer is 9 digits")
    if _mod11(value[:8], (3, 2, 7, 6, 5, 4, 3, 2)) != int(value[8]):
        raise ValueError("wrong check digit (mod 11)")
    return value


def y_tunnus_ok(seven: str, check: str) -> bool:
    """Whether ``check`` is the check digit of a Finnish Y-tunnus's first seven digits."""
    remainder = sum(int(d) * w for d, w in zip(seven, (7, 9, 10, 5, 8, 4, 2), strict=True)) % 11
    if remainder == 1:
        return False
    return int(check) == (0 if remainder == 0 else 11 - remainder)


def _y_tunnus(value: str) -> str:
    match = _Y_TUNNUS.fullmatch(value)
    if match is None:
        raise ValueError("a Y-tunnus is 7 digits, a hyphen and a check digit")
    if not y_tunnus_ok(match.group(1), match.group(2)):
        raise ValueError("wrong Y-tunnus check digit")
    return "0037" + match.group(1) + match.group(2)


def _finland(value: str) -> str:
    match = _OVT.fullmatch(value)
    if match is None:
        raise ValueError("an OVT code is 0037, the 8 digits of the Y-tunnus and at most 5 letters or digits")
    digits = match.group(1)
    if not y_tunnus_ok(digits[:7], digits[7]):
        raise ValueError("wrong Y-tunnus check digit")
    return value


def _finnish_vat(value: str) -> str:
    if not re.fullmatch(r"FI\d{8}", value):
        raise ValueError("a Finnish VAT number is FI and 8 digits")
    return _y_tunnus(value[2:])


def _denmark(value: str) -> str:
    number = value.removeprefix("DK")
    if not re.fullmatch(r"\d{8}", number):
        raise ValueError("a Danish CVR number is 8 digits")
    if sum(int(d) * w for d, w in zip(number, (2, 7, 6, 5, 4, 3, 2, 1), strict=True)) % 11:
        raise ValueError("wrong CVR check (mod 11)")
    return number


def _iceland(value: str) -> str:
    number = value.replace("-", "")
    if not re.fullmatch(r"\d{10}", number):
        raise ValueError("a kennitala is 10 digits")
    if _mod11(number[:8], (3, 2, 7, 6, 5, 4, 3, 2)) != int(number[8]):
        raise ValueError("wrong kennitala check digit")
    return number


def _estonia(value: str) -> str:
    if not re.fullmatch(r"\d{8}", value):
        raise ValueError("an Estonian registrikood is 8 digits")
    digits = [int(d) for d in value[:7]]
    check = sum(d * w for d, w in zip(digits, range(1, 8), strict=True)) % 11
    if check == 10:
        check = sum(d * w for d, w in zip(digits, range(3, 10), strict=True)) % 11 % 10
    if check != int(value[7]):
        raise ValueError("wrong registrikood check digit")
    return value


def _digits(count: int, what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not re.fullmatch(rf"\d{{{count}}}", value):
            raise ValueError(f"{what} is {count} digits")
        return value

    return check


def _printable(value: str) -> str:
    if not _VALUE.fullmatch(value):
        raise ValueError("the value is 1 to 240 printable characters without spaces")
    return value


# ICD -> (the ICD it is stored under, the check that returns the canonical value).
_SCHEMES: dict[str, tuple[str, Callable[[str], str]]] = {
    "0007": (SWEDEN, parse_orgnr),
    "0192": ("0192", _norway),
    "0216": (FINLAND, _finland),
    "0037": (FINLAND, _y_tunnus),
    "0212": (FINLAND, _y_tunnus),
    "0213": (FINLAND, _finnish_vat),
    "0184": ("0184", _denmark),
    "0196": ("0196", _iceland),
    "0191": ("0191", _estonia),
    "0218": ("0218", _digits(11, "a Latvian registration number")),
    "0200": ("0200", _digits(9, "a Lithuanian legal entity code")),
    "0203": ("0203", _printable),
}
KNOWN_ICDS = frozenset(_SCHEMES)


@dataclass(frozen=True, slots=True)
class PartyPolicy:
    """What the register accepts besides the known schemes: more ICDs (value printable), eIDAS-style ids, and
    whether Swedish numbers must pass their check digit (``Policy.check_digits``)."""

    extra_icds: frozenset[str] = frozenset()
    allow_eidas: bool = True
    check_digits: bool = True


STRICT_PARTIES = PartyPolicy()


def _strip_scheme(text: str, kind: str | None) -> str:
    if kind and kind.startswith(EBCORE_ISO6523):
        icd = kind.removeprefix(EBCORE_ISO6523)
        return f"{icd}:{text}" if ":" not in text else text
    if text.startswith(EBCORE_ISO6523):
        text = text.removeprefix(EBCORE_ISO6523).replace("::", ":", 1)
    scheme, separator, rest = text.partition("::")
    if separator and scheme == ISO6523:
        return rest
    return text


def parse_party_id(value: object, policy: PartyPolicy = STRICT_PARTIES, *, kind: str | None = None) -> str:
    """The canonical form of a sender's party id (``icd:value`` or ``XX/YY/…``); InvalidIdentifier says why not.

    ``kind`` is the type an identifier came with where it travels typed (an AS4 property's ``type``, an ebCore
    PartyId type).
    """
    if not isinstance(value, str):
        raise InvalidIdentifier(repr(value)[:64], "a party id is text")
    text = _strip_scheme(value.strip(), kind)
    if not text or len(text) > MAX_PARTY_ID or not text.isascii():
        raise InvalidIdentifier(text, f"a party id is 1 to {MAX_PARTY_ID} ASCII characters")
    if "/" in text and ":" not in text.partition("/")[0]:
        if not policy.allow_eidas or not _EIDAS.fullmatch(text):
            raise InvalidIdentifier(text, "not an eIDAS-style identifier (XX/YY/identifier)")
        return text
    icd, separator, rest = text.partition(":")
    if not separator:
        # A bare number: a Swedish organisationsnummer, as FaR's senders were given before (10 or 16 + 10 digits).
        icd, rest = SWEDEN, text
    if not _ICD.fullmatch(icd):
        raise InvalidIdentifier(text, "an ISO 6523 party id is a 4-digit ICD, ':' and the value")
    scheme = _SCHEMES.get(icd)
    try:
        if scheme is not None:
            stored, check = scheme
            if icd == SWEDEN:
                return f"{SWEDEN}:{parse_orgnr(rest, Policy(check_digits=policy.check_digits))}"
            return f"{stored}:{check(rest)}"
        if icd in policy.extra_icds:
            return f"{icd}:{_printable(rest)}"
    except InvalidIdentifier as exc:
        raise InvalidIdentifier(text, exc.reason) from None
    except ValueError as exc:
        raise InvalidIdentifier(text, f"ICD {icd}: {exc}") from None
    raise InvalidIdentifier(text, f"ICD {icd} is not one this register accepts")


def swedish_orgnr(party_id: str) -> str | None:
    """The 10 digits of a canonical ``0007:`` party id (None for any other)."""
    icd, _, value = party_id.partition(":")
    return value if icd == SWEDEN and len(value) == 10 else None


def mina_meddelanden_id(party_id: str) -> str | None:
    """How Mina meddelanden writes a Swedish sender (``16`` + the organisationsnummer); None for foreign ones."""
    orgnr = swedish_orgnr(party_id)
    return None if orgnr is None else "16" + orgnr
