"""Recipient and sender identifiers of FaR, validated without I/O.

A recipient is one of:

- a **personnummer**: 12 digits ``CCYYMMDDNNNC`` (Skatteverket SKV 704), the date a real calendar date;
- a **samordningsnummer**: the same with 60 added to the day (SKV 707), so days 61 to 91;
- an **organisation**: ``16`` + the 10-digit organisationsnummer, whose third digit is 2 or more (a legal
  person's "month" can never be a real month, which is how it is told apart from a personnummer);
- an **eIDAS identifier** of an EU citizen, ``XX/YY/unique`` (eIDAS SAML attribute profile 1.2, section 2.2.3:
  nationality of the issuing node, of the destination, then an identifier); only the REST API carries these,
  since the Recipient v3 contract allows 12 digits and nothing else.

The last digit of the 10 digits ``YYMMDDNNNC`` (and of an organisationsnummer) is a Luhn check digit. It is
checked by default, together with the date and the organisation's third digit; ``Policy(check_digits=False)``
accepts any number the Recipient v3 schema accepts, as some official test data (and the recorded Mina
meddelanden samples) fail the check.
"""

from __future__ import annotations

import calendar
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from itertools import compress

# The Recipient v3 schema type recipient:RecipientId, verbatim (schema/Recipient.xsd).
RECIPIENT_ID_PATTERN = re.compile(
    r"(16\d{10})|((18|19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{4})|((18|19|20)\d{2}(0[1-9]|1[0-2])(\d{2})\d{4})"
)
# sender:OrganizationNumber is "16" + 10 digits; the CLI and REST API also take the bare 10 digits.
_ORGNR = re.compile(r"(?:16)?(\d{10})")
# Two ISO 3166 letters, "/", two letters, "/", then an identifier of printable characters (no spaces).
_EIDAS = re.compile(r"([A-Z]{2})/([A-Z]{2})/([\x21-\x7e]{1,250})")
MAX_EIDAS_LENGTH = 256
SAMORDNING_DAY_OFFSET = 60


class Kind(enum.Enum):
    """What a recipient identifier denotes; the value is what the database and the API store."""

    PERSONNUMMER = "personnummer"
    SAMORDNINGSNUMMER = "samordningsnummer"
    ORGANISATION = "organisation"
    EIDAS = "eidas"


@dataclass(frozen=True)
class Policy:
    """How strictly identifiers are checked."""

    check_digits: bool = True
    allow_eidas: bool = True


STRICT = Policy()
SOAP_POLICY = Policy(allow_eidas=False)


class InvalidIdentifier(ValueError):
    """An identifier that is not a valid recipient or organisation number; ``reason`` says why."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"{value[:64]!r}: {reason}")


@dataclass(frozen=True)
class RecipientId:
    """A validated recipient identifier in its canonical form (12 digits, or the eIDAS string)."""

    value: str
    kind: Kind


# Luhn: every second digit from the right is doubled and its digits summed; precomputed per character.
_PLAIN = {str(d): d for d in range(10)}
_DOUBLED = {str(d): (2 * d if d < 5 else 2 * d - 9) for d in range(10)}
_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def luhn_ok(digits: str) -> bool:
    """True when the last digit of ``digits`` is the Luhn check digit of the others."""
    doubled = digits[-2::-2]
    plain = digits[::-2]
    return (sum(_DOUBLED[c] for c in doubled) + sum(_PLAIN[c] for c in plain)) % 10 == 0


def _is_date(year: int, month: int, day: int) -> bool:
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS[month]:
        return False
    return month != 2 or day < 29 or calendar.isleap(year)


def parse_recipient(value: str, policy: Policy = STRICT) -> RecipientId:
    """Validate a recipient identifier; raise InvalidIdentifier with the reason when it is not one."""
    return RecipientId(value, recipient_kind(value, policy))


def recipient_kind(value: str, policy: Policy = STRICT) -> Kind:
    """What a valid recipient identifier denotes; raise InvalidIdentifier when it is not one."""
    if not isinstance(value, str):
        raise InvalidIdentifier(repr(value), "not a string")
    if "/" in value:
        return _parse_eidas(value, policy)
    if len(value) != 12 or not value.isascii() or not value.isdigit():
        raise InvalidIdentifier(value, "not 12 digits")
    if value.startswith("16"):
        if not policy.check_digits:
            return Kind.ORGANISATION
        if value[4] < "2":
            raise InvalidIdentifier(value, "an organisationsnummer has 2 or more as its third digit")
        if not _luhn10(value[2:]):
            raise InvalidIdentifier(value, "wrong check digit")
        return Kind.ORGANISATION
    century, month, day = value[0:2], int(value[4:6]), int(value[6:8])
    # The schema's pattern, spelled out: century 18, 19 or 20 and a month 01 to 12 (any day: see below).
    if century not in ("18", "19", "20") or not 1 <= month <= 12:
        raise InvalidIdentifier(value, "not a personnummer, samordningsnummer or 16 + organisationsnummer")
    kind = Kind.SAMORDNINGSNUMMER if day > SAMORDNING_DAY_OFFSET else Kind.PERSONNUMMER
    if not policy.check_digits:
        # Lenient mode: what the schema accepts is enough (its third branch allows any two-digit day).
        return kind
    real_day = day - SAMORDNING_DAY_OFFSET if kind is Kind.SAMORDNINGSNUMMER else day
    if not _is_date(int(value[0:4]), month, real_day):
        raise InvalidIdentifier(value, f"{value[0:8]} is not a date (samordningsnummer add 60 to the day)")
    if not _luhn10(value[2:]):
        raise InvalidIdentifier(value, "wrong check digit")
    return kind


# Luhn over exactly ten digits, two at a time: the first of each pair is doubled (one lookup per pair).
_PAIRS = {f"{a}{b}": _DOUBLED[str(a)] + b for a in range(10) for b in range(10)}


def _luhn10(d: str) -> bool:
    return (_PAIRS[d[0:2]] + _PAIRS[d[2:4]] + _PAIRS[d[4:6]] + _PAIRS[d[6:8]] + _PAIRS[d[8:10]]) % 10 == 0


# The common shapes, in ASCII digits only: a personnummer or samordningsnummer whose day exists in every month (01-28,
# 61-88) and a 16 + organisationsnummer (third digit 2 or more). Whatever else (days 29-31, eIDAS, anything invalid)
# goes the exact way, recipient_kind.
_COMMON_PERSON = re.compile(
    r"(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|1[0-9]|2[0-8]|6[1-9]|7[0-9]|8[0-8])[0-9]{4}"
)
_COMMON_ORGANISATION = re.compile(r"16[0-9]{2}[2-9][0-9]{7}")
# Luhn over the ten digits after the century in three lookups: four digits (doubled, plain, doubled, plain) twice,
# then the last pair.
_QUADS = {f"{a}{b}": _PAIRS[a] + _PAIRS[b] for a in _PAIRS for b in _PAIRS}


# A batch of common shapes, one a line: the shape of 1,000 ids in one match.
_COMMON_LINES = re.compile(
    f"(?:(?:{_COMMON_PERSON.pattern}|{_COMMON_ORGANISATION.pattern})\n)*"
    f"(?:{_COMMON_PERSON.pattern}|{_COMMON_ORGANISATION.pattern})"
)
# Each ASCII digit as the value Luhn adds for it, doubled (digit sum of 2d) or plain, and a per-id digit sum (at most
# 10 * 9) as 0 when it is a multiple of ten, else 1.
_DOUBLED_BYTES = bytes.maketrans(b"0123456789", bytes(int(_DOUBLED[str(d)]) for d in range(10)))
_PLAIN_BYTES = bytes.maketrans(b"0123456789", bytes(range(10)))
_SUM_PASSES = bytes(int(total % 10 == 0) for total in range(256))


def valid_recipients(values: Iterable[str], policy: Policy = STRICT) -> set[str]:
    """The valid recipient identifiers among ``values``: exactly those :func:`recipient_kind` accepts, checked
    without an exception or an object per identifier (a mailing is checked a thousand at a time)."""
    if not policy.check_digits:
        return {value for value in values if _is_recipient(value, policy)}
    values = list(values)
    joined = "\n".join(values)
    # No id with a newline of its own (it would pass as two lines), every line a common shape: all twelve ASCII
    # digits whose date needs no further look, so only the check digits are left.
    if joined.count("\n") == len(values) - 1 and _COMMON_LINES.fullmatch(joined) is not None:
        return _luhn_passes(values, joined.encode("ascii"))
    person, organisation, quads, pairs = _COMMON_PERSON.fullmatch, _COMMON_ORGANISATION.fullmatch, _QUADS, _PAIRS
    valid = set()
    for value in values:
        if (person(value) or organisation(value)) is not None:
            # Fully matched: twelve ASCII digits whose date (or third digit) needs no further look.
            if (quads[value[2:6]] + quads[value[6:10]] + pairs[value[10:12]]) % 10 == 0:
                valid.add(value)
        elif _is_recipient(value, policy):
            valid.add(value)
    return valid


def _luhn_passes(values: list[str], lines: bytes) -> set[str]:
    """The ``values`` (twelve ASCII digits each, ``lines`` them joined by newlines) whose ten digits after the
    century pass Luhn, summed column by column as big integers with one byte per id (a sum of ten digit values
    fits a byte, so no carry crosses ids): a handful of C calls for the batch instead of Python per id."""
    total = 0
    for position in range(2, 12):
        column = lines[position::13].translate(_DOUBLED_BYTES if position % 2 == 0 else _PLAIN_BYTES)
        total += int.from_bytes(column, "big")
    return set(compress(values, total.to_bytes(len(values), "big").translate(_SUM_PASSES)))


def _is_recipient(value: str, policy: Policy) -> bool:
    try:
        recipient_kind(value, policy)
    except InvalidIdentifier:
        return False
    return True


def _parse_eidas(value: str, policy: Policy) -> Kind:
    if not policy.allow_eidas:
        raise InvalidIdentifier(value, "eIDAS identifiers are not accepted here (12 digits only)")
    if len(value) > MAX_EIDAS_LENGTH or not _EIDAS.fullmatch(value):
        raise InvalidIdentifier(value, "not an eIDAS identifier (XX/YY/identifier, at most 256 characters)")
    return Kind.EIDAS


def parse_orgnr(value: str, policy: Policy = STRICT) -> str:
    """Validate an organisationsnummer (10 digits, or 12 with the ``16`` prefix); return the 10 digits."""
    match = _ORGNR.fullmatch(value) if isinstance(value, str) and value.isascii() else None
    if match is None:
        raise InvalidIdentifier(str(value), "an organisationsnummer is 10 digits (or 16 + 10 digits)")
    digits = match.group(1)
    if not policy.check_digits:
        return digits
    if digits[2] < "2":
        raise InvalidIdentifier(value, "an organisationsnummer has 2 or more as its third digit")
    if not _luhn10(digits):
        raise InvalidIdentifier(value, "wrong check digit")
    return digits


def with_check_digit(nine: str) -> str:
    """Append the Luhn check digit to nine digits (test data and benchmarks build numbers with it)."""
    for last in "0123456789":
        if luhn_ok(nine + last):
            return nine + last
    raise AssertionError("unreachable: one of ten digits always completes a Luhn sum")


def birth_date(value: str) -> date | None:
    """The birth date a personnummer or samordningsnummer carries (day - 60 for the latter); None for an
    organisation, an eIDAS identifier or a number whose date does not exist."""
    if len(value) != 12 or not value.isdigit() or value.startswith("16"):
        return None
    day = int(value[6:8])
    day = day - SAMORDNING_DAY_OFFSET if day > SAMORDNING_DAY_OFFSET else day
    try:
        return date(int(value[0:4]), int(value[4:6]), day)
    except ValueError:
        return None


def age_on(value: str, today: date) -> int | None:
    """Whole years of age on ``today`` of the person ``value`` names (None: not a person with a date)."""
    born = birth_date(value)
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))
