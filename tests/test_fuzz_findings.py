"""What the fuzzers (tests/fuzz, ``make fuzz``) found, each pinned by the smallest input that shows it."""

from __future__ import annotations

import base64
import copy

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from accesspoint.core.errors import EbmsError
from accesspoint.core.mime import MultipartParser, PartData
from accesspoint.core.namespaces import NS
from accesspoint.security.algorithms import TokenType
from accesspoint.security.tokens import build_pkipath, read_binary_security_token
from tests import pki

WSSE = f"{{{NS.WSSE}}}"


def _base64_part(encoded: bytes) -> bytes:
    return (
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"\r\n--b--\r\n"
    )


def _decoded(body: bytes, chunk: int) -> bytes | str:
    parser = MultipartParser("b")
    data = b""
    try:
        for start in range(0, len(body), chunk):
            data += b"".join(e.data for e in parser.feed(body[start : start + chunk]) if isinstance(e, PartData))
        parser.close()
    except EbmsError as exc:
        return exc.code
    return data


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (b"aGVs bG8(gd29y*bGQ=", b"hello world"),  # characters outside the alphabet are ignored (RFC 2045 6.8)
        (b"aGk=aGk=", "EBMS:0007"),  # base64 after the padding
        (b"aG=k", "EBMS:0007"),  # '=' inside a quantum
        (b"aGk=\r\n==", b"hi"),  # more '=' after the padding changes nothing
    ],
)
def test_base64_part_decodes_the_same_however_the_body_is_chunked(encoded: bytes, expected: bytes | str) -> None:
    """A base64 part decodes to the same bytes, or fails with EBMS:0007, whether fed whole or byte by byte."""
    body = _base64_part(encoded)
    assert {_decoded(body, size) for size in (len(body), 1, 2, 3, 5, 7)} == {expected}


def _with_unknown_name_string_type(certificate: x509.Certificate) -> bytes:
    """The certificate's DER with its subject's C=SE PrintableString (tag 0x13) retagged 0x0f, a tag no string has."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    country = b"\x06\x03\x55\x04\x06\x13\x02SE"  # OID 2.5.4.6 (countryName), PrintableString "SE"
    assert der.count(country) == 2  # issuer, then subject
    at = der.rindex(country) + 5
    return der[:at] + b"\x0f" + der[at + 1 :]


@pytest.mark.parametrize("value_type", [TokenType.X509V3, TokenType.X509_PKIPATH_V1])
def test_token_whose_certificate_name_has_an_unknown_string_type_is_failed_authentication(value_type: str) -> None:
    """A BST certificate whose subject holds an unknown ASN.1 string type is EBMS:0101, not a KeyError."""
    ca = pki.make_ca()
    leaf = pki.issue(ca, "sender")
    broken = _with_unknown_name_string_type(leaf.certificate)
    if value_type == TokenType.X509_PKIPATH_V1:
        ca_der = ca.certificate.public_bytes(serialization.Encoding.DER)
        good = build_pkipath([leaf.certificate, ca.certificate])
        broken = good.replace(leaf.certificate.public_bytes(serialization.Encoding.DER), broken)
        assert broken != good and ca_der in broken
    token = etree.Element(f"{WSSE}BinarySecurityToken", ValueType=value_type)
    token.text = base64.b64encode(broken).decode()
    with pytest.raises(EbmsError) as caught:
        read_binary_security_token(copy.deepcopy(token))
    assert caught.value.code == "EBMS:0101"
    assert "unreadable BinarySecurityToken" in caught.value.log_detail
