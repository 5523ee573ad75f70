"""Payment data (EN 16931 business terms): checks a payer relies on, and the UBL and Mina meddelanden forms."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from accesspoint.envelopes.payment import (
    INVOICE_TAG,
    AccountKind,
    PaymentData,
    PaymentDataError,
    build_ubl,
    from_metadata,
    iban_valid,
    is_invoice,
    luhn_digit,
    luhn_valid,
    parse_ubl,
    rf_reference_valid,
    to_metadata,
    validate,
)

OCR = "1234567890" + luhn_digit("1234567890")
BANKGIRO = PaymentData(
    amount=Decimal("1250.50"),
    currency="SEK",
    due_date=date(2027, 1, 31),
    reference=OCR,
    account_kind=AccountKind.BANKGIRO,
    account="50501055",
    payee="Skatteverket",
    payee_id="2021005448",
    invoice_number="F-2027-0042",
)
IBAN = replace(
    BANKGIRO, currency="EUR", account_kind=AccountKind.IBAN, account="SE4550000000058398257466", bic="ESSESESS"
)


def _wrong_digit(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def test_ocr_check_digit_is_mod_10() -> None:
    """The OCR number's last digit is its Luhn check digit; any other last digit is refused as BT-83."""
    assert luhn_valid(OCR)
    validate(BANKGIRO)
    with pytest.raises(PaymentDataError) as refused:
        validate(replace(BANKGIRO, reference=_wrong_digit(OCR)))
    assert refused.value.term == "BT-83" and "check digit" in refused.value.reason


@given(st.text(alphabet="0123456789", min_size=1, max_size=24))
def test_luhn_digit_makes_every_number_valid_and_every_other_digit_invalid(digits: str) -> None:
    """For any digits exactly one appended check digit passes the mod 10 check."""
    assert [d for d in "0123456789" if luhn_valid(digits + d)] == [luhn_digit(digits)]


@pytest.mark.parametrize(
    ("change", "term"),
    [
        ({"currency": "SEKK"}, "BT-5"),
        ({"currency": "XYZ"}, "BT-5"),
        ({"currency": "EUR"}, "BT-5"),  # a bankgiro settles in kronor
        ({"amount": Decimal("0")}, "BT-115"),
        ({"amount": Decimal("-5.00")}, "BT-115"),
        ({"amount": Decimal("10.005")}, "BT-115"),
        ({"account": "50501056"}, "BT-84"),
        ({"account": "123"}, "BT-84"),
        ({"reference": "ABC123"}, "BT-83"),
        ({"payee": ""}, "BT-59"),
        ({"bic": "ESSESESS"}, "BT-86"),
    ],
)
def test_bad_payment_terms_are_refused_naming_the_business_term(change: dict[str, object], term: str) -> None:
    """Each broken term is refused with its EN 16931 business term."""
    with pytest.raises(PaymentDataError) as refused:
        validate(replace(BANKGIRO, **change))  # type: ignore[arg-type]
    assert refused.value.term == term


def test_iban_needs_its_mod_97_check_and_a_bic() -> None:
    """An IBAN with a changed digit, or without a BIC, is refused."""
    validate(IBAN)
    assert not iban_valid("SE4550000000058398257467")
    with pytest.raises(PaymentDataError, match="IBAN"):
        validate(replace(IBAN, account="SE4550000000058398257467"))
    with pytest.raises(PaymentDataError) as refused:
        validate(replace(IBAN, bic=None))
    assert refused.value.term == "BT-86"


def test_rf_creditor_reference_is_accepted_with_its_iso_11649_check() -> None:
    """An RF reference passes with its mod 97 check digits and fails with others."""
    assert rf_reference_valid("RF18539007547034")
    validate(replace(IBAN, reference="RF18539007547034"))
    with pytest.raises(PaymentDataError) as refused:
        validate(replace(IBAN, reference="RF19539007547034"))
    assert refused.value.term == "BT-83"


@pytest.mark.parametrize(
    "payment",
    [
        BANKGIRO,
        IBAN,
        replace(BANKGIRO, account_kind=AccountKind.PLUSGIRO, account="9912346", payee_id=None, invoice_number=None),
    ],
)
def test_ubl_form_round_trips_in_the_invoices_element_order(payment: PaymentData) -> None:
    """The UBL form reads back to the same terms; its children follow the UBL Invoice's order."""
    element = build_ubl(payment)
    assert parse_ubl(etree.fromstring(etree.tostring(element))) == payment
    names = [etree.QName(child).localname for child in element]
    invoice_order = ["ID", "DueDate", "DocumentCurrencyCode", "PayeeParty", "PaymentMeans", "LegalMonetaryTotal"]
    assert names == [n for n in invoice_order if n in names]


def test_ubl_form_refuses_a_payable_amount_in_another_currency() -> None:
    """currencyID on BT-115 must be the document currency."""
    element = build_ubl(BANKGIRO)
    amount = element.find(".//{*}PayableAmount")
    assert amount is not None
    amount.set("currencyID", "NOK")
    with pytest.raises(PaymentDataError) as refused:
        parse_ubl(element)
    assert refused.value.term == "BT-5"


def test_metadata_form_round_trips_and_marks_the_invoice() -> None:
    """The Mina meddelanden Tag/Value pairs read back to the same terms and carry the invoice tag."""
    for payment in (BANKGIRO, IBAN):
        pairs = to_metadata(payment)
        assert (INVOICE_TAG, "true") in pairs and is_invoice(pairs)
        assert dict(pairs)["en16931:BT-115"] == "1250.50"
        assert from_metadata([("other", "x"), *pairs]) == payment
    assert from_metadata([("other", "x")]) is None


def test_metadata_form_refuses_a_wrong_ocr_and_a_term_given_twice() -> None:
    """A tampered OCR number or a repeated term is refused, naming the term."""
    pairs = list(to_metadata(BANKGIRO))
    tampered = [(t, _wrong_digit(v) if t == "en16931:BT-83" else v) for t, v in pairs]
    with pytest.raises(PaymentDataError) as refused:
        from_metadata(tampered)
    assert refused.value.term == "BT-83"
    with pytest.raises(PaymentDataError) as twice:
        from_metadata([*pairs, ("en16931:BT-115", "1.00")])
    assert twice.value.term == "BT-115"


def test_rest_form_round_trips_and_names_missing_terms() -> None:
    """The JSON form reads back; a missing amount is BT-115."""
    assert PaymentData.from_json(IBAN.to_json()) == IBAN
    assert PaymentData.from_json(BANKGIRO.to_json()) == BANKGIRO
    incomplete = {k: v for k, v in BANKGIRO.to_json().items() if k != "amount"}
    with pytest.raises(PaymentDataError) as refused:
        PaymentData.from_json(incomplete)
    assert refused.value.term == "BT-115"
