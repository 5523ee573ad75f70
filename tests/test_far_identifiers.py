"""Recipient identifiers: personnummer, samordningsnummer, organisations, eIDAS; check digits on and off."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from far.identifiers import (
    RECIPIENT_ID_PATTERN,
    SOAP_POLICY,
    STRICT,
    InvalidIdentifier,
    Kind,
    Policy,
    luhn_ok,
    parse_orgnr,
    parse_recipient,
    recipient_kind,
    valid_recipients,
    with_check_digit,
)

LENIENT = Policy(check_digits=False)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("197802022389", Kind.PERSONNUMMER),
        ("198112189876", Kind.PERSONNUMMER),
        ("200002296127", Kind.PERSONNUMMER),  # 29 February of a leap year
        ("197010632391", Kind.SAMORDNINGSNUMMER),  # day 63 = 3 October + 60
        ("190001912393", Kind.SAMORDNINGSNUMMER),  # day 91 = 31st + 60
        ("165568402266", Kind.ORGANISATION),  # Kivra AB
        ("162021005448", Kind.ORGANISATION),  # Skatteverket
        ("ES/SE/99999142H", Kind.EIDAS),
    ],
)
def test_valid_identifiers_are_classified(value: str, kind: Kind) -> None:
    """Valid numbers are accepted and told apart by their digits."""
    assert parse_recipient(value).kind is kind
    assert parse_recipient(value).value == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("197802022388", "wrong check digit"),
        ("197010632390", "wrong check digit"),
        ("165568402267", "wrong check digit"),
        ("190002291235", "not a date"),  # 1900 was no leap year
        ("197002302383", "not a date"),  # 30 February
        ("197010922388", "not a date"),  # samordningsnummer day 92 - 60 = 32
        ("197013012386", "not a personnummer"),  # month 13
        ("177802022389", "not a personnummer"),  # century 17
        ("165512345678", "third digit"),  # third digit 1: that is a personnummer's month
        ("19780202238", "not 12 digits"),
        ("1978020223890", "not 12 digits"),
        ("19780202-2389", "not 12 digits"),
        ("".join(chr(0xFF10 + int(c)) for c in "197802022389"), "not 12 digits"),  # full-width: str.isdigit
        ("", "not 12 digits"),
        ("se/SE/123", "not an eIDAS identifier"),
        ("ES/SE/" + "x" * 251, "not an eIDAS identifier"),
        ("ES/SE/a b", "not an eIDAS identifier"),
    ],
)
def test_invalid_identifiers_say_why(value: str, reason: str) -> None:
    """Invalid numbers are refused with a reason naming the fault."""
    with pytest.raises(InvalidIdentifier) as caught:
        parse_recipient(value)
    assert reason in caught.value.reason


def test_samordningsnummer_is_day_plus_60_and_checked() -> None:
    """A samordningsnummer is the birth date with 60 added to the day, and carries its own check digit."""
    person = parse_recipient("19" + with_check_digit("701003239"))
    coordination = parse_recipient("19" + with_check_digit("701063239"))
    assert (person.kind, coordination.kind) == (Kind.PERSONNUMMER, Kind.SAMORDNINGSNUMMER)
    with pytest.raises(InvalidIdentifier, match="not a date"):
        parse_recipient("19" + with_check_digit("700291239"))  # 91 - 60 = 31 February


def test_eidas_only_where_allowed() -> None:
    """The Recipient v3 contract carries 12 digits only, so its policy refuses eIDAS identifiers."""
    with pytest.raises(InvalidIdentifier):
        parse_recipient("ES/SE/99999142H", Policy(allow_eidas=False))


def test_lenient_policy_accepts_what_the_schema_accepts() -> None:
    """With check digits off, the recorded Mina meddelanden test numbers (wrong check digits) are accepted."""
    for value in ("192301010168", "190101010159", "165591628136"):
        with pytest.raises(InvalidIdentifier):
            parse_recipient(value, STRICT)
        assert parse_recipient(value, LENIENT).value == value


@given(st.text(alphabet="0123456789", min_size=12, max_size=12))
def test_lenient_policy_is_exactly_the_schema_pattern(value: str) -> None:
    """For any 12 digits, the lenient policy accepts exactly what recipient:RecipientId's pattern matches."""
    matches = RECIPIENT_ID_PATTERN.fullmatch(value) is not None
    try:
        parse_recipient(value, LENIENT)
        accepted = True
    except InvalidIdentifier:
        accepted = False
    assert accepted == matches


@given(st.text(alphabet="0123456789", min_size=12, max_size=12))
def test_strict_is_a_subset_of_lenient(value: str) -> None:
    """Whatever the strict policy accepts, the schema accepts too."""
    try:
        parse_recipient(value, STRICT)
    except InvalidIdentifier:
        return
    assert RECIPIENT_ID_PATTERN.fullmatch(value)


@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_with_check_digit_completes_luhn(nine: str) -> None:
    """One digit always completes a Luhn sum, and changing it breaks the sum."""
    ten = with_check_digit(nine)
    assert luhn_ok(ten)
    assert not luhn_ok(ten[:9] + str((int(ten[9]) + 1) % 10))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2021005448", "2021005448"), ("162021005448", "2021005448"), ("5568402266", "5568402266")],
)
def test_organisation_numbers(value: str, expected: str) -> None:
    """A sender's organisationsnummer is 10 digits, optionally prefixed with 16."""
    assert parse_orgnr(value) == expected


@pytest.mark.parametrize("value", ["2021005449", "202100544", "172021005448", "5512345678", "20210054480", "abc"])
def test_bad_organisation_numbers(value: str) -> None:
    """Wrong check digit, length, prefix or third digit is refused."""
    with pytest.raises(InvalidIdentifier):
        parse_orgnr(value)


# Around every edge of the batch check's fast path: days 28-31 and 61-91, 29 February, check digits, an
# organisation's third digit, eIDAS, non-ASCII digits, a prefix or suffix too many.
_EDGES = [
    "19" + with_check_digit(nine)
    for nine in ("780228238", "780229238", "800229238", "780230238", "780131238", "780431238", "780188238",
                 "780189238", "780191238", "780192238", "780160238", "780100238", "781302238", "780002238")
] + ["165568402266", "165518402266", "165568402267", "ES/SE/99999142H", "ES/SE/", "197802022389\n", "1978020223899",
     "\uff11\uff19" + "7802022389", "18" + with_check_digit("780202238"), "21" + "7802022389"]  # fmt: skip


@given(
    st.lists(
        st.one_of(
            st.sampled_from(_EDGES),
            st.text(alphabet="0123456789", min_size=12, max_size=12),
            st.builds(lambda head, nine: head + with_check_digit(nine), st.sampled_from(["16", "18", "19", "20"]),
                      st.text(alphabet="0123456789", min_size=9, max_size=9)),
            st.text(max_size=14),
        ),
        max_size=40,
    )
)  # fmt: skip
def test_the_batch_check_accepts_exactly_what_recipient_kind_accepts(values: list[str]) -> None:
    """valid_recipients keeps an id exactly when recipient_kind accepts it, under every policy."""
    for policy in (STRICT, LENIENT, SOAP_POLICY):
        assert valid_recipients(values, policy) == _accepted_one_by_one(values, policy)


def _accepted_one_by_one(values: list[str], policy: Policy) -> set[str]:
    accepted = set()
    for value in values:
        try:
            recipient_kind(value, policy)
        except InvalidIdentifier:
            continue
        accepted.add(value)
    return accepted


_COMMON_SHAPES = st.builds(
    lambda head, nine: head + with_check_digit(nine),
    st.sampled_from(["18", "19", "20"]),
    st.builds(lambda yy, mm, dd, serial: f"{yy:02d}{mm:02d}{dd:02d}{serial:03d}",
              st.integers(0, 99), st.integers(1, 12), st.sampled_from([*range(1, 29), *range(61, 89)]),
              st.integers(0, 999)),
) | st.builds(lambda nine: "16" + with_check_digit(nine), st.from_regex(r"[2-9][0-9]{8}", fullmatch=True))  # fmt: skip


@given(
    st.lists(
        st.one_of(
            _COMMON_SHAPES,
            _COMMON_SHAPES.map(lambda value: value[:-1] + str((int(value[-1]) + 1) % 10)),  # a check digit off
            _COMMON_SHAPES.map(lambda value: value[:5] + str((int(value[5]) + 5) % 10) + value[6:]),
        ),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from(["", "\n", "\n197802022389"]),
)
def test_a_batch_of_common_shapes_is_checked_as_recipient_kind_checks_each(values: list[str], glued: str) -> None:
    """A batch of only twelve-digit ids of the common shapes (and one with a newline glued on) keeps exactly what
    recipient_kind accepts."""
    values = [*values[:-1], values[-1] + glued]
    assert valid_recipients(values, STRICT) == _accepted_one_by_one(values, STRICT)
