"""Security token references: BST (X509v3 or PKIPath), IssuerSerial and SKI, written and resolved."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.namespaces import NS
from accesspoint.core.xml import find_value, holds_elements, string_value
from accesspoint.security.algorithms import TokenType
from accesspoint.security.keys import load_der_certificate
from accesspoint.security.policy import TokenReference

WSSE = f"{{{NS.WSSE}}}"
WSSE11 = f"{{{NS.WSSE11}}}"
DS = f"{{{NS.DS}}}"
WSU_ID = f"{{{NS.WSU}}}Id"


@dataclass(frozen=True, slots=True)
class ResolvedToken:
    """The certificate a reference points at, the chain that came with it, and how it was referenced."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    reference: TokenReference


def subject_key_identifier(certificate: x509.Certificate) -> bytes:
    """The certificate's SKI: the extension when present, else SHA-1 of the public key bits (RFC 5280 4.2.1.2)."""
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest


def _der_length(data: bytes, offset: int) -> tuple[int, int]:
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    if count == 0 or count > 4 or offset + 1 + count > len(data):
        raise ValueError("bad DER length")
    return int.from_bytes(data[offset + 1 : offset + 1 + count], "big"), offset + 1 + count


def parse_pkipath(data: bytes) -> list[x509.Certificate]:
    """Decode an X509PKIPathv1 token: a DER SEQUENCE OF Certificate, ordered from the CA to the leaf."""
    if not data or data[0] != 0x30:
        raise ValueError("PKIPath is not a DER SEQUENCE")
    length, offset = _der_length(data, 1)
    end = offset + length
    if end != len(data):
        raise ValueError("PKIPath has trailing or missing bytes")
    certificates = []
    while offset < end:
        if data[offset] != 0x30:
            raise ValueError("PKIPath element is not a certificate")
        inner, body = _der_length(data, offset + 1)
        certificates.append(load_der_certificate(data[offset : body + inner]))
        offset = body + inner
    if not certificates:
        raise ValueError("PKIPath is empty")
    return certificates


def build_pkipath(chain: Sequence[x509.Certificate]) -> bytes:
    """Encode certificates (given leaf first) as an X509PKIPathv1 token (CA first, leaf last)."""
    body = b"".join(c.public_bytes(serialization.Encoding.DER) for c in reversed(chain))
    length = len(body)
    if length < 0x80:
        encoded_length = bytes([length])
    else:
        raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
        encoded_length = bytes([0x80 | len(raw)]) + raw
    return b"\x30" + encoded_length + body


def _leaf_of(certificates: Sequence[x509.Certificate]) -> x509.Certificate:
    """The certificate that issued none of the others."""
    issuers = {c.issuer.public_bytes() for c in certificates}
    leaves = [c for c in certificates if c.subject.public_bytes() not in issuers or c.subject == c.issuer]
    non_self = [c for c in leaves if c.subject != c.issuer]
    return (non_self or leaves or list(certificates))[-1]


# -------------------------------------------------------------------------------------------- writing


def add_security_token(
    security: etree._Element,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    reference: TokenReference,
    token_id: str,
) -> etree._Element:
    """Write what ``reference`` needs into the wsse:Security header and return a matching STR element.

    For BSTs the token is inserted first in the header (WSS: tokens precede their use).
    """
    str_element = etree.Element(f"{WSSE}SecurityTokenReference", nsmap={"wsse": NS.WSSE.value})
    if reference in (TokenReference.BST_X509V3, TokenReference.BST_PKIPATH):
        if reference is TokenReference.BST_X509V3:
            value_type, blob = TokenType.X509V3, certificate.public_bytes(serialization.Encoding.DER)
        else:
            value_type, blob = TokenType.X509_PKIPATH_V1, build_pkipath([certificate, *chain])
        bst = etree.Element(f"{WSSE}BinarySecurityToken", nsmap={"wsse": NS.WSSE.value, "wsu": NS.WSU.value})
        bst.set("EncodingType", TokenType.BASE64_BINARY.value)
        bst.set("ValueType", value_type.value)
        bst.set(WSU_ID, token_id)
        bst.text = base64.b64encode(blob).decode("ascii")
        security.insert(0, bst)
        ref = etree.SubElement(str_element, f"{WSSE}Reference")
        ref.set("URI", f"#{token_id}")
        ref.set("ValueType", value_type.value)
    elif reference is TokenReference.SUBJECT_KEY_IDENTIFIER:
        key_id = etree.SubElement(str_element, f"{WSSE}KeyIdentifier")
        key_id.set("EncodingType", TokenType.BASE64_BINARY.value)
        key_id.set("ValueType", TokenType.X509_SKI.value)
        key_id.text = base64.b64encode(subject_key_identifier(certificate)).decode("ascii")
    else:
        x509_data = etree.SubElement(str_element, f"{DS}X509Data", nsmap={"ds": NS.DS.value})
        issuer_serial = etree.SubElement(x509_data, f"{DS}X509IssuerSerial")
        etree.SubElement(issuer_serial, f"{DS}X509IssuerName").text = certificate.issuer.rfc4514_string()
        etree.SubElement(issuer_serial, f"{DS}X509SerialNumber").text = str(certificate.serial_number)
    return str_element


# ------------------------------------------------------------------------------------------ resolving


def _names_equal(text: str, name: x509.Name) -> bool:
    """Compare an IssuerName string with a Name, ignoring RDN order and spacing (peers differ in both)."""
    try:
        parsed = x509.Name.from_rfc4514_string(text)
    except ValueError:
        return False
    return sorted(a.rfc4514_string().lower() for a in parsed) == sorted(a.rfc4514_string().lower() for a in name)


def resolve_token_reference(
    str_element: etree._Element,
    ids: dict[str, etree._Element],
    candidates: Iterable[x509.Certificate] = (),
) -> ResolvedToken:
    """Find the certificate a wsse:SecurityTokenReference designates.

    Direct references resolve to a BST in the message; SKI and IssuerSerial are matched against
    ``candidates`` (our own certificates for decryption, known partner certificates for signatures).
    EBMS:0101 when nothing matches.
    """
    reference = str_element.find(f"{WSSE}Reference")
    if reference is not None:
        uri = reference.get("URI", "")
        if not uri.startswith("#"):
            raise EbmsError(ErrorCode.FAILED_AUTHENTICATION, f"token reference {uri[:80]!r} is not local")
        token = ids.get(uri[1:])
        if token is None or token.tag != f"{WSSE}BinarySecurityToken":
            raise EbmsError(
                ErrorCode.FAILED_AUTHENTICATION, f"token reference {uri[:80]!r} names no BinarySecurityToken"
            )
        return read_binary_security_token(token)
    key_identifier = str_element.find(f"{WSSE}KeyIdentifier")
    pool = list(candidates)
    if key_identifier is not None:
        value_type = key_identifier.get("ValueType", "")
        try:
            raw = base64.b64decode("".join(string_value(key_identifier).split()))
            embedded = load_der_certificate(raw) if value_type == TokenType.X509V3 else None
        except ValueError as exc:  # binascii.Error is one
            raise EbmsError(ErrorCode.FAILED_AUTHENTICATION, f"unreadable KeyIdentifier: {exc}") from None
        if value_type == TokenType.X509_SKI:
            for certificate in pool:
                if subject_key_identifier(certificate) == raw:
                    return ResolvedToken(certificate, (), TokenReference.SUBJECT_KEY_IDENTIFIER)
            raise EbmsError(ErrorCode.FAILED_AUTHENTICATION, "no known certificate has the referenced SKI")
        if embedded is not None:
            return ResolvedToken(embedded, (), TokenReference.BST_X509V3)
        raise EbmsError(ErrorCode.FAILED_AUTHENTICATION, f"unsupported KeyIdentifier type {value_type[:100]!r}")
    issuer_serial = str_element.find(f"{DS}X509Data/{DS}X509IssuerSerial")
    if issuer_serial is not None:
        issuer = (find_value(issuer_serial, f"{DS}X509IssuerName") or "").strip()
        serial_text = (find_value(issuer_serial, f"{DS}X509SerialNumber") or "").strip()
        if not serial_text.isdigit():
            raise EbmsError(ErrorCode.FAILED_AUTHENTICATION, "X509SerialNumber is not a number")
        serial = int(serial_text)
        for certificate in pool:
            if certificate.serial_number == serial and _names_equal(issuer, certificate.issuer):
                return ResolvedToken(certificate, (), TokenReference.ISSUER_SERIAL)
        raise EbmsError(ErrorCode.FAILED_AUTHENTICATION, "no known certificate has the referenced issuer and serial")
    raise EbmsError(ErrorCode.FAILED_AUTHENTICATION, "unsupported SecurityTokenReference")


def read_binary_security_token(token: etree._Element) -> ResolvedToken:
    """Decode a BinarySecurityToken (X509v3 or X509PKIPathv1)."""
    value_type = token.get("ValueType", "")
    try:
        if holds_elements(token):
            raise ValueError("an element inside the token")
        raw = base64.b64decode("".join(string_value(token).split()), validate=True)
        if value_type == TokenType.X509V3:
            return ResolvedToken(load_der_certificate(raw), (), TokenReference.BST_X509V3)
        if value_type == TokenType.X509_PKIPATH_V1:
            chain = parse_pkipath(raw)
            leaf = _leaf_of(chain)
            return ResolvedToken(leaf, tuple(c for c in chain if c is not leaf), TokenReference.BST_PKIPATH)
    except ValueError as exc:
        raise EbmsError(ErrorCode.FAILED_AUTHENTICATION, f"unreadable BinarySecurityToken: {exc}") from None
    raise EbmsError(ErrorCode.FAILED_AUTHENTICATION, f"unsupported BinarySecurityToken type {value_type[:100]!r}")
