"""The operator's own signed statements (mailbox events, the delgivningskvitto, payment confirmations, delivery
notifications), sans-I/O: what reading any of them starts with."""

from __future__ import annotations

from cryptography import x509
from lxml import etree

from accesspoint.envelopes._common import EnvelopeError, parse_document
from accesspoint.envelopes.signature import verify_enveloped


def operator_document(data: bytes | etree._Element, *, tag: str, what: str) -> etree._Element:
    """The parsed document, whose root must be ``tag`` (``what`` names it in the EnvelopeError); not yet verified."""
    root = parse_document(data, what=what)
    if root.tag != tag:
        raise EnvelopeError(f"expected a {what}, found {root.tag}")
    return root


def verified_operator_document(
    data: bytes | etree._Element, operator: x509.Certificate, *, tag: str, what: str
) -> etree._Element:
    """As ``operator_document``, with its enveloped signature verified with ``operator``'s certificate."""
    root = operator_document(data, tag=tag, what=what)
    verify_enveloped(root, expected=operator)
    return root
