"""Paying an invoice from the mailbox (*Betallösning*): the payment-provider interface, a reference provider and
the signed payment confirmation the sender receives, sans-I/O.

A holder pays an invoice letter whose payment data the operator keeps (``envelopes/payment.py``). The operator
hands a ``PaymentOrder`` (the invoice's terms as the sender signed them, who pays, an id of its own) to its
``PaymentProvider``; the provider initiates the credit transfer and answers with its reference. The operator records
the payment (once per invoice: paying twice is refused) and sends the sender a ``PaymentConfirmation`` signed with
its key, on the AS4 reply leg of the invoice's delivery.

``ReferenceProvider`` is **not a bank**: it moves no money and talks to no one. It accepts every well-formed
order at once and says so in its note, so that the flow can be run end to end; a real provider (a bank's
payment-initiation API, Bankgirot, a PSD2 PISP) implements the same ``pay``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from cryptography import x509
from lxml import etree

from accesspoint.envelopes._common import (
    EnvelopeError,
    need,
    need_text,
    optional_text,
    parse_date,
    parse_datetime,
    serialize,
    sub,
    text,
    xml_datetime,
)
from accesspoint.envelopes.payment import AccountKind, PaymentData, PaymentDataError, validate
from accesspoint.envelopes.signature import sign_enveloped
from accesspoint.security.keys import KeyPair
from operators.signed_documents import verified_operator_document

PAYMENTS_NS = "urn:accesspoint:payments:1"
_P = f"{{{PAYMENTS_NS}}}"
CONFIRMATION = f"{_P}PaymentConfirmation"
REFERENCE_NOTE = "reference provider: no bank was involved and no money moved"


class PaymentRefused(Exception):
    """The provider will not carry out the order; ``reason`` says why in words a holder can read."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    """What the holder asked to pay: the invoice's terms (as its sender signed them) and who pays."""

    payment_id: str
    payment: PaymentData
    payer: str  # the holder's identity (personnummer, 16 + orgnr)
    invoice_message_id: str  # the AS4 message that delivered the invoice
    business_id: str


@dataclass(frozen=True, slots=True)
class ProviderReceipt:
    """The provider's answer: its own reference for the transfer, when it was executed, and a note."""

    provider: str
    reference: str
    executed_at: datetime
    note: str = ""


class PaymentProvider(Protocol):
    """Initiates a credit transfer for a holder (see the module docstring)."""

    name: str

    async def pay(self, order: PaymentOrder, *, now: datetime) -> ProviderReceipt:
        """Carry out the order, or raise PaymentRefused."""
        ...


class ReferenceProvider:
    """Accepts every valid order at once and moves no money (see the module docstring)."""

    name = "reference"

    async def pay(self, order: PaymentOrder, *, now: datetime) -> ProviderReceipt:
        """A receipt for a valid order; PaymentRefused for payment data that fails its checks."""
        try:
            validate(order.payment)
        except PaymentDataError as exc:
            raise PaymentRefused(f"{exc.term}: {exc.reason}") from None
        return ProviderReceipt(self.name, f"ref-{uuid.uuid4()}", now, REFERENCE_NOTE)


@dataclass(frozen=True, slots=True)
class PaymentConfirmation:
    """What the sender receives: which invoice was paid, by whom, with which terms, through whom and when."""

    payment_id: str
    invoice_message_id: str
    business_id: str
    payer: str
    operator: str
    payment: PaymentData
    provider: str
    provider_reference: str
    paid_at: datetime
    note: str = ""


def build_confirmation(confirmation: PaymentConfirmation, keys: KeyPair) -> bytes:
    """The signed PaymentConfirmation (the payment terms with their EN 16931 business term names)."""
    root = etree.Element(CONFIRMATION, nsmap={"p": PAYMENTS_NS})
    for name, value in (
        ("PaymentId", confirmation.payment_id),
        ("InvoiceMessageId", confirmation.invoice_message_id),
        ("BusinessId", confirmation.business_id),
        ("Payer", confirmation.payer),
        ("Operator", confirmation.operator),
        ("Provider", confirmation.provider),
        ("ProviderReference", confirmation.provider_reference),
        ("PaidAt", xml_datetime(confirmation.paid_at)),
    ):
        sub(root, f"{_P}{name}", value)
    terms = sub(root, f"{_P}Terms")
    payment = confirmation.payment
    sub(terms, f"{_P}Amount", payment.amount_text, Term="BT-115", Currency=payment.currency)
    sub(terms, f"{_P}DueDate", payment.due_date.isoformat(), Term="BT-9")
    sub(terms, f"{_P}Reference", payment.reference, Term="BT-83")
    sub(terms, f"{_P}Account", payment.account, Term="BT-84", Kind=payment.account_kind.value)
    if payment.bic is not None:
        sub(terms, f"{_P}BIC", payment.bic, Term="BT-86")
    sub(terms, f"{_P}Payee", payment.payee, Term="BT-59")
    optional = (("PayeeId", payment.payee_id, "BT-60"), ("InvoiceNumber", payment.invoice_number, "BT-1"))
    for name, given, term in optional:
        if given is not None:
            sub(terms, f"{_P}{name}", given, Term=term)
    if confirmation.note:
        sub(root, f"{_P}Note", confirmation.note)
    sign_enveloped(root, keys)
    return serialize(root)


def verify_confirmation(data: bytes | etree._Element, operator: x509.Certificate) -> PaymentConfirmation:
    """A confirmation whose signature verifies with the operator's certificate; EnvelopeError otherwise."""
    root = verified_operator_document(data, operator, tag=CONFIRMATION, what="PaymentConfirmation")
    terms = need(root, f"{_P}Terms", "Terms")
    amount = need(terms, f"{_P}Amount", "Amount")
    account = need(terms, f"{_P}Account", "Account")
    try:
        kind = AccountKind(account.get("Kind") or "")
    except ValueError:
        raise EnvelopeError("PaymentConfirmation: unknown account kind") from None
    payment = PaymentData(
        amount=Decimal(text(amount)),
        currency=amount.get("Currency") or "",
        due_date=parse_date(need_text(terms, f"{_P}DueDate", "DueDate"), "DueDate"),
        reference=need_text(terms, f"{_P}Reference", "Reference"),
        account_kind=kind,
        account=text(account),
        payee=need_text(terms, f"{_P}Payee", "Payee"),
        bic=optional_text(terms, f"{_P}BIC"),
        payee_id=optional_text(terms, f"{_P}PayeeId"),
        invoice_number=optional_text(terms, f"{_P}InvoiceNumber"),
    )
    return PaymentConfirmation(
        payment_id=need_text(root, f"{_P}PaymentId", "PaymentId"),
        invoice_message_id=need_text(root, f"{_P}InvoiceMessageId", "InvoiceMessageId"),
        business_id=need_text(root, f"{_P}BusinessId", "BusinessId"),
        payer=need_text(root, f"{_P}Payer", "Payer"),
        operator=need_text(root, f"{_P}Operator", "Operator"),
        payment=payment,
        provider=need_text(root, f"{_P}Provider", "Provider"),
        provider_reference=need_text(root, f"{_P}ProviderReference", "ProviderReference"),
        paid_at=parse_datetime(need_text(root, f"{_P}PaidAt", "PaidAt"), "PaidAt"),
        note=optional_text(root, f"{_P}Note") or "",
    )


def invoice_state(paid: bool, due: date, today: date) -> str:
    """``paid``, ``overdue`` or ``unpaid``: how the mailbox API names an invoice's state."""
    if paid:
        return "paid"
    return "overdue" if today > due else "unpaid"
