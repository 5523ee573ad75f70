"""Payment data of an invoice letter (*Betaldata*), aligned with EN 16931, sans-I/O.

A letter marked as an invoice may carry structured payment data with the EN 16931 business terms a payer needs:

=========  ==============================================  ==================================================
BT-1       invoice number (optional)                       ``cbc:ID``
BT-5       invoice currency, ISO 4217                      ``cbc:DocumentCurrencyCode``, ``@currencyID``
BT-9       payment due date                                ``cbc:DueDate``
BT-59/60   payee name and identifier (optional)            ``cac:PayeeParty``
BT-81      payment means: 30 credit transfer               ``cac:PaymentMeans/cbc:PaymentMeansCode``
BT-83      remittance information: the OCR number (mod 10  ``cac:PaymentMeans/cbc:PaymentID``
           check digit) or an RF creditor reference
           (ISO 11649, mod 97)
BT-84      payment account: bankgiro, plusgiro or IBAN     ``cac:PayeeFinancialAccount/cbc:ID``
BT-86      BIC for an IBAN; ``SE:BANKGIRO`` /              ``…/cac:FinancialInstitutionBranch/cbc:ID``
           ``SE:PLUSGIRO`` for the Swedish giros (as
           Peppol BIS Billing 3.0 in Sweden writes them)
BT-115     amount due for payment (> 0, two decimals)      ``cac:LegalMonetaryTotal/cbc:PayableAmount``
=========  ==============================================  ==================================================

Two forms carry the same terms:

- **UBL** (EN 16931's UBL 2.1 syntax binding): a ``PaymentData`` element in ``urn:accesspoint:payment:1`` whose
  children are the UBL Invoice's elements above, in the Invoice's order. SDK letters (XHE) and Peppol/Nordic
  letters (SBDH) carry it inside the letter document (``envelopes/letter.py``);
- **Mina meddelanden**: the contract's extension point, ``SecureMessage/Header/Metadata`` Tag/Value pairs named
  after the business terms (``en16931:BT-115`` = ``1250.00``), signed with the rest of the delivery.

``validate`` checks what a payer relies on, and every form is validated when read: a wrong OCR check digit, an
unknown currency, a giro in another currency than SEK, a bad IBAN or BIC are ``PaymentDataError`` naming the
business term, so a letter with them is refused with that reason and never stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from lxml import etree

from accesspoint.envelopes._common import EnvelopeError, Finding, need, optional_text, parse_date, sub, text

PAYMENT_NS = "urn:accesspoint:payment:1"
CBC_NS = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CAC_NS = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
_P, _BC, _AC = f"{{{PAYMENT_NS}}}", f"{{{CBC_NS}}}", f"{{{CAC_NS}}}"
PAYMENT_DATA = f"{_P}PaymentData"
NSMAP = {"pay": PAYMENT_NS, "cbc": CBC_NS, "cac": CAC_NS}

# UNCL 4461: 30 is "credit transfer", what a giro or IBAN payment is.
CREDIT_TRANSFER = "30"
# The Mina meddelanden Metadata tags: the invoice mark, then one per business term.
INVOICE_TAG = "accesspoint:invoice"
TAG_PREFIX = "en16931:"

# ISO 4217 active currency codes (2024), funds and precious metals left out: a payer pays in money.
_CURRENCY_TABLE = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF
CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL
HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL
MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON
RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH
UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL"""
CURRENCIES = frozenset(_CURRENCY_TABLE.split())
# The Swedish giros settle in kronor.
GIRO_CURRENCY = "SEK"
# IBAN lengths per country (SWIFT IBAN registry), for the Nordic and Baltic neighbours and the euro area.
IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FO": 18,
    "FR": 27, "GB": 22, "GL": 18, "GR": 27, "HR": 21, "IE": 22, "IS": 26, "IT": 27, "LT": 20, "LU": 20, "LV": 21,
    "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "SE": 24, "SI": 19, "SK": 24,
}  # fmt: skip
_BIC = re.compile(r"[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?")
_AMOUNT = re.compile(r"\d{1,15}(\.\d{1,2})?")


class PaymentDataError(EnvelopeError):
    """Payment data a payer could not rely on: ``term`` is the EN 16931 business term at fault (``BT-83``)."""

    def __init__(self, term: str, reason: str) -> None:
        self.term = term
        self.reason = reason
        super().__init__(Finding(term, reason))


class AccountKind(StrEnum):
    """Where the money goes (BT-84), and how BT-86 names the service provider."""

    BANKGIRO = "bankgiro"
    PLUSGIRO = "plusgiro"
    IBAN = "iban"


_GIRO_SCHEMES = {AccountKind.BANKGIRO: "SE:BANKGIRO", AccountKind.PLUSGIRO: "SE:PLUSGIRO"}


@dataclass(frozen=True, slots=True)
class PaymentData:
    """The payment terms of one invoice (see the module docstring). ``account`` is the number as written
    without separators; ``bic`` only for an IBAN."""

    amount: Decimal  # BT-115
    currency: str  # BT-5
    due_date: date  # BT-9
    reference: str  # BT-83
    account_kind: AccountKind  # BT-84 (and BT-86)
    account: str  # BT-84
    payee: str  # BT-59
    bic: str | None = None  # BT-86, IBAN only
    payee_id: str | None = None  # BT-60
    invoice_number: str | None = None  # BT-1

    @property
    def amount_text(self) -> str:
        """BT-115 as written: two decimals."""
        return f"{self.amount:.2f}"

    def to_json(self) -> dict[str, str | None]:
        """The REST form, keyed by what each term is (and its BT number in the docs)."""
        return {
            "amount": self.amount_text,
            "currency": self.currency,
            "due_date": self.due_date.isoformat(),
            "reference": self.reference,
            "account_kind": self.account_kind.value,
            "account": self.account,
            "bic": self.bic,
            "payee": self.payee,
            "payee_id": self.payee_id,
            "invoice_number": self.invoice_number,
        }

    @classmethod
    def from_json(cls, item: Mapping[str, object]) -> PaymentData:
        """Read the REST form, validated; PaymentDataError naming the term at fault."""
        fields = {
            "amount": "BT-115", "currency": "BT-5", "due_date": "BT-9", "reference": "BT-83",
            "account_kind": "BT-84", "account": "BT-84", "payee": "BT-59",
        }  # fmt: skip
        values: dict[str, str | None] = {}
        for name, term in fields.items():
            value = item.get(name)
            if not isinstance(value, str) or not value.strip():
                raise PaymentDataError(term, f"{name} is required (a string)")
            values[name] = value.strip()
        for name in ("bic", "payee_id", "invoice_number"):
            value = item.get(name)
            if value is not None and not isinstance(value, str):
                raise PaymentDataError("BT-86" if name == "bic" else name, f"{name} must be a string")
            values[name] = value.strip() if isinstance(value, str) and value.strip() else None
        return _checked(values)


def luhn_valid(digits: str) -> bool:
    """Whether the last digit is the mod 10 (Luhn) check digit of the others, as OCR numbers and giros use."""
    if not digits.isdigit() or not digits.isascii():
        return False
    total = 0
    for index, character in enumerate(reversed(digits)):
        value = int(character) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def luhn_digit(digits: str) -> str:
    """The mod 10 check digit to append to ``digits``."""
    return next(d for d in "0123456789" if luhn_valid(digits + d))


def _mod97(value: str) -> int:
    return int("".join(str(int(c, 36)) for c in value)) % 97


def iban_valid(iban: str) -> bool:
    """ISO 13616: the country's length (where known) and the mod 97 check."""
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", iban):
        return False
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    return _mod97(iban[4:] + iban[:4]) == 1


def rf_reference_valid(reference: str) -> bool:
    """ISO 11649 creditor reference: ``RF``, two check digits, up to 21 letters or digits, mod 97 = 1."""
    return bool(re.fullmatch(r"RF\d{2}[A-Z0-9]{1,21}", reference)) and _mod97(reference[4:] + reference[:4]) == 1


def _compact(value: str) -> str:
    return re.sub(r"[\s-]", "", value).upper()


def _checked(values: Mapping[str, str | None]) -> PaymentData:
    """Build and validate from text values (the REST, UBL and Metadata forms all come through here)."""
    amount_text = values.get("amount") or ""
    if not _AMOUNT.fullmatch(amount_text):
        raise PaymentDataError("BT-115", f"the amount due {amount_text[:32]!r} is not a number with up to 2 decimals")
    try:
        amount = Decimal(amount_text)
    except InvalidOperation:
        raise PaymentDataError("BT-115", "the amount due is not a number") from None
    try:
        kind = AccountKind(values.get("account_kind") or "")
    except ValueError:
        raise PaymentDataError("BT-84", "the account is not a bankgiro, plusgiro or IBAN") from None
    try:
        due = parse_date(values.get("due_date") or "", "BT-9")
    except EnvelopeError:
        raise PaymentDataError("BT-9", "the due date is not a date (YYYY-MM-DD)") from None
    bic = _compact(values.get("bic") or "") or None
    if kind is not AccountKind.IBAN and bic == _GIRO_SCHEMES[kind]:
        bic = None  # BT-86 names the giro itself, which account_kind already says
    payment = PaymentData(
        amount=amount,
        currency=(values.get("currency") or "").strip(),
        due_date=due,
        reference=_compact(values.get("reference") or ""),
        account_kind=kind,
        account=_compact(values.get("account") or ""),
        payee=(values.get("payee") or "").strip(),
        bic=bic,
        payee_id=values.get("payee_id"),
        invoice_number=values.get("invoice_number"),
    )
    validate(payment)
    return payment


def validate(payment: PaymentData) -> None:
    """Every check a payer relies on; PaymentDataError naming the first term at fault."""
    if payment.amount <= 0:
        raise PaymentDataError("BT-115", "the amount due must be more than zero")
    if not payment.amount.is_finite() or payment.amount != payment.amount.quantize(Decimal("0.01")):
        raise PaymentDataError("BT-115", "the amount due has more than two decimals")
    if payment.currency not in CURRENCIES:
        raise PaymentDataError("BT-5", f"{payment.currency[:8]!r} is not an ISO 4217 currency code")
    reference = payment.reference
    if reference.startswith("RF"):
        if not rf_reference_valid(reference):
            raise PaymentDataError("BT-83", f"the RF reference {reference[:32]} fails its ISO 11649 check")
    elif not reference.isdigit() or not 2 <= len(reference) <= 25:
        raise PaymentDataError("BT-83", "the payment reference is neither an OCR number (2-25 digits) nor RF")
    elif not luhn_valid(reference):
        raise PaymentDataError("BT-83", f"the OCR number {reference} has a wrong check digit (mod 10)")
    account = payment.account
    if payment.account_kind is AccountKind.IBAN:
        if not iban_valid(account):
            raise PaymentDataError("BT-84", f"{account[:34]} is not a valid IBAN (length or mod 97 check)")
        if payment.bic is None or not _BIC.fullmatch(payment.bic):
            raise PaymentDataError("BT-86", "an IBAN needs the BIC of the payee's bank (8 or 11 characters)")
    else:
        sizes = (7, 8) if payment.account_kind is AccountKind.BANKGIRO else tuple(range(2, 9))
        if not account.isdigit() or len(account) not in sizes or not luhn_valid(account):
            raise PaymentDataError("BT-84", f"{account[:16]} is not a valid {payment.account_kind} number")
        if payment.currency != GIRO_CURRENCY:
            raise PaymentDataError("BT-5", f"a {payment.account_kind} payment is in SEK, not {payment.currency}")
        if payment.bic is not None and payment.bic != _GIRO_SCHEMES[payment.account_kind]:
            raise PaymentDataError("BT-86", f"a {payment.account_kind} takes no BIC ({payment.bic[:16]})")
    if not payment.payee or len(payment.payee) > 256:
        raise PaymentDataError("BT-59", "the payee's name is required (at most 256 characters)")
    for value, term in ((payment.payee_id, "BT-60"), (payment.invoice_number, "BT-1")):
        if value is not None and len(value) > 255:
            raise PaymentDataError(term, "at most 255 characters")


# --- the UBL form ---


def build_ubl(payment: PaymentData, parent: etree._Element | None = None) -> etree._Element:
    """The ``PaymentData`` element (a child of ``parent`` when given)."""
    validate(payment)
    root = etree.Element(PAYMENT_DATA, nsmap=NSMAP) if parent is None else sub(parent, PAYMENT_DATA)
    if payment.invoice_number is not None:
        sub(root, f"{_BC}ID", payment.invoice_number)
    sub(root, f"{_BC}DueDate", payment.due_date.isoformat())
    sub(root, f"{_BC}DocumentCurrencyCode", payment.currency)
    payee = sub(root, f"{_AC}PayeeParty")
    if payment.payee_id is not None:
        sub(sub(payee, f"{_AC}PartyIdentification"), f"{_BC}ID", payment.payee_id)
    sub(sub(payee, f"{_AC}PartyName"), f"{_BC}Name", payment.payee)
    means = sub(root, f"{_AC}PaymentMeans")
    sub(means, f"{_BC}PaymentMeansCode", CREDIT_TRANSFER)
    sub(means, f"{_BC}PaymentID", payment.reference)
    account = sub(means, f"{_AC}PayeeFinancialAccount")
    sub(account, f"{_BC}ID", payment.account)
    branch = payment.bic if payment.account_kind is AccountKind.IBAN else _GIRO_SCHEMES[payment.account_kind]
    sub(sub(account, f"{_AC}FinancialInstitutionBranch"), f"{_BC}ID", branch)
    total = sub(root, f"{_AC}LegalMonetaryTotal")
    sub(total, f"{_BC}PayableAmount", payment.amount_text, currencyID=payment.currency)
    return root


def _account_kind(account: str, branch: str | None) -> str:
    for kind, scheme in _GIRO_SCHEMES.items():
        if branch == scheme:
            return kind.value
    return AccountKind.IBAN.value if account[:2].isalpha() else ""


def parse_ubl(element: etree._Element) -> PaymentData:
    """The payment data of a ``PaymentData`` element, validated (PaymentDataError naming the term at fault)."""
    if element.tag != PAYMENT_DATA:
        raise EnvelopeError(f"expected {PAYMENT_DATA}, found {element.tag}")
    means = need(element, f"{_AC}PaymentMeans", "PaymentMeans")
    code = optional_text(means, f"{_BC}PaymentMeansCode")
    if code != CREDIT_TRANSFER:
        raise PaymentDataError("BT-81", f"payment means {code!r} is not credit transfer ({CREDIT_TRANSFER})")
    account = text(need(means, f"{_AC}PayeeFinancialAccount/{_BC}ID", "BT-84"))
    branch = optional_text(means, f"{_AC}PayeeFinancialAccount/{_AC}FinancialInstitutionBranch/{_BC}ID")
    amount = element.find(f"{_AC}LegalMonetaryTotal/{_BC}PayableAmount")
    if amount is None:
        raise PaymentDataError("BT-115", "the amount due is missing")
    currency = optional_text(element, f"{_BC}DocumentCurrencyCode") or ""
    if (amount.get("currencyID") or "") != currency:
        raise PaymentDataError("BT-5", "the amount's currencyID differs from the document currency")
    kind = _account_kind(_compact(account), branch)
    return _checked(
        {
            "amount": text(amount).strip(),
            "currency": currency,
            "due_date": optional_text(element, f"{_BC}DueDate"),
            "reference": optional_text(means, f"{_BC}PaymentID"),
            "account_kind": kind,
            "account": account,
            "bic": branch if kind == AccountKind.IBAN else None,
            "payee": optional_text(element, f"{_AC}PayeeParty/{_AC}PartyName/{_BC}Name"),
            "payee_id": optional_text(element, f"{_AC}PayeeParty/{_AC}PartyIdentification/{_BC}ID"),
            "invoice_number": optional_text(element, f"{_BC}ID"),
        }
    )


# --- the Mina meddelanden form: Metadata Tag/Value pairs ---

_TERMS = (
    ("BT-1", "invoice_number"),
    ("BT-5", "currency"),
    ("BT-9", "due_date"),
    ("BT-59", "payee"),
    ("BT-60", "payee_id"),
    ("BT-83", "reference"),
    ("BT-84", "account"),
    ("BT-86", "bic"),
    ("BT-115", "amount"),
)


def to_metadata(payment: PaymentData) -> tuple[tuple[str, str], ...]:
    """The invoice tag and one Tag/Value pair per business term (absent terms left out)."""
    validate(payment)
    values = payment.to_json()
    values["bic"] = payment.bic if payment.account_kind is AccountKind.IBAN else _GIRO_SCHEMES[payment.account_kind]
    pairs = [(INVOICE_TAG, "true")]
    pairs += [(TAG_PREFIX + term, value) for term, name in _TERMS if (value := values[name]) is not None]
    return tuple(pairs)


def from_metadata(pairs: Iterable[tuple[str, str]]) -> PaymentData | None:
    """The payment data the Metadata pairs carry (None when they carry no ``en16931:`` term), validated."""
    found: dict[str, str] = {}
    for tag, value in pairs:
        if tag.startswith(TAG_PREFIX):
            term = tag.removeprefix(TAG_PREFIX)
            if term in found:
                raise PaymentDataError(term, f"{term} is given twice")
            found[term] = value
    if not found:
        return None
    unknown = set(found) - {term for term, _ in _TERMS}
    if unknown:
        raise PaymentDataError(sorted(unknown)[0], "not a payment term this operator knows")
    values: dict[str, str | None] = {name: found.get(term) for term, name in _TERMS}
    account = _compact(values["account"] or "")
    values["account_kind"] = _account_kind(account, values["bic"])
    return _checked(values)


def is_invoice(pairs: Iterable[tuple[str, str]]) -> bool:
    """Whether the Metadata pairs mark the letter as an invoice."""
    return any(tag == INVOICE_TAG and value.strip().lower() == "true" for tag, value in pairs)
