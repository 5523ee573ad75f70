"""What the fuzzers (tests/fuzz, ``make fuzz``) found, each pinned by the smallest input that shows it."""

from __future__ import annotations

import base64
import dataclasses
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from accesspoint.core.envelope import build_envelope, parse_envelope, serialize
from accesspoint.core.errors import EbmsError
from accesspoint.core.mime import MultipartParser, PartData
from accesspoint.core.namespaces import NS
from accesspoint.core.xml import parse_xml
from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.minameddelanden import (
    build_sealed_delivery,
    build_signed_delivery,
    to_deliver_secure,
    verify_sealed_delivery,
)
from accesspoint.envelopes.sbdh import build_sbd, parse_sbd
from accesspoint.envelopes.xhe import XhePayload, build_xhe, parse_xhe, verify_xhe
from accesspoint.security.algorithms import SignatureAlgorithm, TokenType
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import RevocationMode, SecurityPolicy, TrustSettings
from accesspoint.security.signing import exc_c14n, sign_bytes, sign_envelope, verify_signature
from accesspoint.security.tokens import build_pkipath, read_binary_security_token, resolve_token_reference
from accesspoint.security.trust import CertificateUsage, TrustError, validate_certificate
from accesspoint.testing import pki
from pmode.document import dump_yaml
from pmode.domibus import import_domibus
from pmode.errors import PModeError
from pmode.loader import load_pmodes
from smp.bdxl import BdxlError, apply_naptr_regexp
from smp.model import Flavour
from smp.signature import SignatureError, verify_document
from tests.fuzz.fixtures import (
    DOMIBUS_MINIMAL,
    REPO,
    sbdh_model,
    secure_delivery,
    signed_smp_metadata,
    signed_xhe,
    xhe_model,
)
from tests.fuzz.targets import NAPTR_NAME
from tests.test_signing import _ids, _user_message

WSSE = f"{{{NS.WSSE}}}"
DS = f"{{{NS.DS}}}"
EXAMPLES = REPO / "pmode" / "examples"


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


def _with_unknown_name_string_type(der: bytes) -> bytes:
    """The subject's C=SE PrintableString (tag 0x13) retagged 0x0f, a tag no string type has."""
    country = b"\x06\x03\x55\x04\x06\x13\x02SE"  # OID 2.5.4.6 (countryName), PrintableString "SE"
    assert der.count(country) == 2  # issuer, then subject
    at = der.rindex(country) + 5
    return der[:at] + b"\x0f" + der[at + 1 :]


def _with_unknown_key_type(der: bytes) -> bytes:
    """The public key's algorithm rsaEncryption (1.2.840.113549.1.1.1) made 1.2.840.113549.1.1.99."""
    rsa_encryption = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"
    assert der.count(rsa_encryption) == 1
    return der.replace(rsa_encryption, rsa_encryption[:-1] + b"\x63")


def _with_version_14(der: bytes) -> bytes:
    """The version field v3 (INTEGER 2 under [0]) made 14, which X.509 does not have."""
    v3 = b"\xa0\x03\x02\x01\x02"
    assert der.count(v3) == 1
    return der.replace(v3, v3[:-1] + b"\x0e")


def _with_bit_string_country(der: bytes) -> bytes:
    """The subject's C=SE as a BIT STRING (tag 0x03), a type only x500UniqueIdentifier may have."""
    country = b"\x06\x03\x55\x04\x06\x13\x02SE"
    at = der.rindex(country) + 5
    return der[:at] + b"\x03\x02\x00\x80" + der[at + 4 :]


@pytest.mark.parametrize(
    "breakage", [_with_unknown_name_string_type, _with_unknown_key_type, _with_version_14, _with_bit_string_country]
)
@pytest.mark.parametrize("value_type", [TokenType.X509V3, TokenType.X509_PKIPATH_V1])
def test_token_with_an_unusable_certificate_is_failed_authentication(
    value_type: str, breakage: Callable[[bytes], bytes]
) -> None:
    """A BST certificate with an unknown name string type, key type or version, or a BIT STRING name, is EBMS:0101,
    not the KeyError, UnsupportedAlgorithm, InvalidVersion or TypeError cryptography raises for them."""
    ca = pki.make_ca()
    leaf = pki.issue(ca, "sender")
    leaf_der = leaf.certificate.public_bytes(serialization.Encoding.DER)
    broken = breakage(leaf_der)
    if value_type == TokenType.X509_PKIPATH_V1:
        broken = build_pkipath([leaf.certificate, ca.certificate]).replace(leaf_der, broken)
    token = etree.Element(f"{WSSE}BinarySecurityToken", ValueType=value_type)
    token.text = base64.b64encode(broken).decode()
    with pytest.raises(EbmsError) as caught:
        read_binary_security_token(token)
    assert caught.value.code == "EBMS:0101"
    assert "unreadable BinarySecurityToken" in caught.value.log_detail


@pytest.fixture(scope="module")
def signer() -> KeyPair:
    """An RSA access-point key pair under a test CA."""
    return pki.issue(pki.make_ca(), "PTE000001")


def _signed_envelope(signer: KeyPair) -> etree._Element:
    envelope = build_envelope(_user_message([]))
    sign_envelope(envelope, [], signer, SecurityPolicy.edelivery_1_15(), new_id=_ids())
    return envelope


def _resign(envelope: etree._Element, signer: KeyPair) -> None:
    signed_info = next(envelope.iter(f"{DS}SignedInfo"))
    value = sign_bytes(signer, SignatureAlgorithm.RSA_SHA256, exc_c14n(signed_info))
    next(envelope.iter(f"{DS}SignatureValue")).text = base64.b64encode(value).decode()


@pytest.mark.parametrize("value", ["é" + "A" * 342, "QUJDRA="])
def test_signature_value_that_is_not_base64_is_failed_authentication(signer: KeyPair, value: str) -> None:
    """A SignatureValue with bad padding or a non-ASCII character is EBMS:0101, not a binascii or ValueError."""
    envelope = _signed_envelope(signer)
    next(envelope.iter(f"{DS}SignatureValue")).text = value
    with pytest.raises(EbmsError) as caught:
        verify_signature(parse_envelope(serialize(envelope)), {}, SecurityPolicy.edelivery_1_15())
    assert caught.value.code == "EBMS:0101"
    assert caught.value.detail == "the signature could not be verified"


def test_signed_digest_value_that_is_not_base64_is_failed_authentication(signer: KeyPair) -> None:
    """A DigestValue that is not base64, under a valid signature, is EBMS:0101 with a generic wire detail."""
    envelope = _signed_envelope(signer)
    next(envelope.iter(f"{DS}DigestValue")).text = "QUJDRA="
    _resign(envelope, signer)
    with pytest.raises(EbmsError) as caught:
        verify_signature(parse_envelope(serialize(envelope)), {}, SecurityPolicy.edelivery_1_15())
    assert (caught.value.code, caught.value.detail) == ("EBMS:0101", "the signature could not be verified")
    assert "DigestValue" in caught.value.log_detail


@pytest.fixture(scope="module")
def authority() -> KeyPair:
    """A sending authority's RSA key pair (business document signatures)."""
    return pki.issue(pki.make_ca(), "authority")


def test_signed_xhe_whose_payload_element_has_a_non_ascii_name_verifies(authority: KeyPair) -> None:
    """An XHE whose payload element is named with a non-ASCII letter (well-formed XML) verifies."""
    model = dataclasses.replace(
        xhe_model(), payload=XhePayload("Q{urn:example}Brév", "application/xml", "<Brév xmlns='urn:example'/>".encode())
    )
    verified = verify_xhe(build_xhe(model, keys=authority))
    assert (verified.xhe.id, verified.xhe.payload.document_type_code) == (model.id, "Q{urn:example}Brév")
    assert verified.signature.signer == authority.certificate


def test_sealed_delivery_with_text_after_it_inside_deliver_secure_verifies(authority: KeyPair) -> None:
    """Text after the SealedDelivery inside deliverSecure belongs to the wrapper: the delivery still verifies."""
    sealed = build_sealed_delivery(
        build_signed_delivery(secure_delivery(), authority), authority, received=date(2026, 11, 30)
    )
    request = to_deliver_secure(sealed)
    request[0].tail = "text after the delivery"
    verified = verify_sealed_delivery(etree.tostring(request), intermediary=authority.certificate)
    assert verified.delivery == secure_delivery()


def test_sbd_whose_document_element_has_a_non_ascii_name_parses() -> None:
    """An SBD carrying a document element named with a non-ASCII letter parses; lxml is not left to raise."""
    document = parse_sbd(build_sbd(sbdh_model(), "<Brév xmlns='urn:example'>Hei</Brév>".encode()))
    assert document.document.tag == "{urn:example}Brév"
    assert document.header == sbdh_model()


def test_domibus_payload_profile_whose_max_size_is_not_a_number_is_reported_not_raised() -> None:
    """A payloadProfile maxSize that is not a number is reported as unmapped; the import still succeeds."""
    profile = b'<payloadProfiles><payloadProfile name="p" maxSize="12;7"/></payloadProfiles>'
    imported = import_domibus(DOMIBUS_MINIMAL.replace(b"<payloadProfiles/>", profile))
    assert "maxSize '12;7' is not a number" in [note.reason for note in imported.unmapped]


def _first_party_problems(tmp_path: Path, key: str, value: str) -> tuple[str, str, list[tuple[str, str, str]]]:
    """The example P-Modes with the first party's ``key`` set to ``value``, loaded: (file, party, problems as
    (file, field, message)); the load must fail."""
    shutil.copytree(EXAMPLES / "certs", tmp_path / "certs")
    document = yaml.safe_load((EXAMPLES / "pmodes.yaml").read_text())
    party = next(iter(document["parties"]))
    document["parties"][party][key] = value
    path = tmp_path / "pmodes.yaml"
    path.write_text(dump_yaml(document))
    with pytest.raises(PModeError) as caught:
        load_pmodes(path)
    return str(path), party, [(p.file, p.field, p.message) for p in caught.value.problems]


def test_pmode_party_endpoint_with_an_unclosed_ipv6_host_is_a_problem_not_a_value_error(tmp_path: Path) -> None:
    """An endpoint ``http://[abc`` (urlparse raises) is reported with its file and field like any bad endpoint."""
    path, party, found = _first_party_problems(tmp_path, "endpoint", "http://[abc")
    assert (path, f"parties.{party}.endpoint") in [(file, field) for file, field, _ in found]


def test_pmode_certificate_path_in_an_unknown_users_home_is_a_problem_not_a_runtime_error(tmp_path: Path) -> None:
    """A certificate path ``~nosuchuser/…`` (expanduser raises) is reported with its file and field as not loadable."""
    path, party, found = _first_party_problems(tmp_path, "signing_certificate", "~no-such-user-here/sign.pem")
    assert any(
        (file, field) == (path, f"parties.{party}.signing_certificate") and "'~no-such-user-here/sign.pem'" in text
        for file, field, text in found
    ), found


@pytest.mark.parametrize("regexp", ["!(.*)*1!https://smp.example!i", "!\\w*\\w*\\w*\\w*x!https://smp.example!"])
def test_naptr_regexp_whose_matching_could_backtrack_without_bound_is_refused(regexp: str) -> None:
    """A NAPTR regexp repeating a group, or with many quantifiers, is BdxlError before it runs (it ran for minutes)."""
    with pytest.raises(BdxlError, match=r"repeats a group|quantifiers"):
        apply_naptr_regexp(regexp, NAPTR_NAME)


@pytest.mark.parametrize("count", ["{55555555555555555555}", "{2,99999}"])
def test_naptr_regexp_with_a_huge_counted_repetition_is_refused(count: str) -> None:
    """A counted repetition past a DNS name's length is BdxlError (re's OverflowError escaped it before)."""
    with pytest.raises(BdxlError, match="repeats more than 255 times"):
        apply_naptr_regexp(f"![a-z].{count}!https://smp.example!", NAPTR_NAME)


def _der(tag: int, body: bytes) -> bytes:
    length = len(body)
    if length < 0x80:
        return bytes([tag, length]) + body
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def _der_children(value: bytes) -> list[bytes]:
    """The TLVs inside a constructed DER value (given whole), each whole."""
    first = value[1]
    start = 2 + (first & 0x7F if first & 0x80 else 0)
    found, at = [], start
    while at < len(value):
        first = value[at + 1]
        size = first & 0x7F if first & 0x80 else 0
        length = int.from_bytes(value[at + 2 : at + 2 + size], "big") if size else first
        end = at + 2 + size + length
        found.append(value[at:end])
        at = end
    return found


def _with_duplicate_extension(certificate: x509.Certificate) -> x509.Certificate:
    """The certificate with its first extension present twice (the issuer's signature no longer holds)."""
    tbs, algorithm, signature = _der_children(certificate.public_bytes(serialization.Encoding.DER))
    fields = _der_children(tbs)
    assert fields[-1][0] == 0xA3  # [3] extensions
    extensions = _der_children(_der_children(fields[-1])[0])
    doubled = _der(0xA3, _der(0x30, b"".join([extensions[0], *extensions])))
    return x509.load_der_x509_certificate(
        _der(0x30, _der(0x30, b"".join([*fields[:-1], doubled])) + algorithm + signature)
    )


def test_certificate_with_a_duplicate_extension_is_untrusted_not_an_exception() -> None:
    """A signer certificate carrying one extension twice is a TrustError (EBMS:0101), not DuplicateExtension."""
    ca = pki.make_ca()
    broken = _with_duplicate_extension(pki.issue(ca, "sender").certificate)
    with pytest.raises(TrustError) as caught:
        validate_certificate(
            broken,
            (),
            TrustSettings(anchors=(ca.certificate,), revocation=RevocationMode.OFF),
            at=pki.later(30),
            usage=CertificateUsage.SIGNATURE,
        )
    assert caught.value.code == "EBMS:0101"
    assert "bad extensions" in caught.value.reason


def _keyinfo_certificate_with_version_14(document: bytes) -> bytes:
    root = etree.fromstring(document)
    holder = next(root.iter(f"{DS}X509Certificate"))
    der = base64.b64decode("".join((holder.text or "").split()))
    holder.text = base64.b64encode(_with_version_14(der)).decode()
    return etree.tostring(root)


def test_xhe_whose_keyinfo_certificate_is_unreadable_is_a_signature_finding() -> None:
    """An XHE whose KeyInfo certificate has version 14 is EnvelopeError SIGNATURE, not InvalidVersion."""
    with pytest.raises(EnvelopeError) as caught:
        verify_xhe(_keyinfo_certificate_with_version_14(signed_xhe()))
    assert caught.value.rules == ("SIGNATURE",)


def test_smp_document_whose_keyinfo_certificate_is_unreadable_is_a_signature_error() -> None:
    """Signed SMP metadata whose KeyInfo certificate has version 14 is SignatureError, not InvalidVersion."""
    document = _keyinfo_certificate_with_version_14(signed_smp_metadata(Flavour.PEPPOL))
    with pytest.raises(SignatureError, match="cannot be read"):
        verify_document(parse_xml(document))


@pytest.mark.parametrize(
    ("value_type", "text"),
    [(TokenType.X509V3, "MIIB"), (TokenType.X509V3, "QUJDRA="), (TokenType.X509_SKI, "QUJDRA=")],
)
def test_key_identifier_that_is_not_base64_or_no_certificate_is_failed_authentication(
    value_type: str, text: str
) -> None:
    """A KeyIdentifier whose text is not base64, or whose X509v3 bytes are no certificate, is EBMS:0101."""
    reference = etree.Element(f"{WSSE}SecurityTokenReference")
    etree.SubElement(reference, f"{WSSE}KeyIdentifier", ValueType=value_type).text = text
    with pytest.raises(EbmsError) as caught:
        resolve_token_reference(reference, {})
    assert caught.value.code == "EBMS:0101"


def test_signed_message_with_a_relative_namespace_uri_is_failed_authentication(signer: KeyPair) -> None:
    """A relative namespace URI inside a signed part (C14N refuses it) is EBMS:0101, not lxml's C14NError."""
    envelope = _signed_envelope(signer)
    messaging = next(envelope.iter(f"{{{NS.EBMS}}}Messaging"))
    etree.SubElement(messaging, "{relative}Extra")
    with pytest.raises(EbmsError) as caught:
        verify_signature(parse_envelope(serialize(envelope)), {}, SecurityPolicy.edelivery_1_15())
    assert (caught.value.code, caught.value.detail) == ("EBMS:0101", "the signature could not be verified")
    assert "C14N" in caught.value.log_detail


def test_comment_added_inside_a_signed_xhe_payload_is_not_delivered() -> None:
    """A comment put into a signed XHE payload on the way still verifies (C14N drops it) but is not delivered."""
    signed = signed_xhe()
    tampered = signed.replace(b">hej<", b">he<!---->j<")
    assert tampered != signed
    assert verify_xhe(tampered).xhe.payload == verify_xhe(signed).xhe.payload == xhe_model().payload


def test_xhe_criterion_without_its_value_is_a_finding_not_an_empty_value() -> None:
    """An XHE whose DOCUMENTID criterion lost its value element (and its signature) is refused, not read as ''."""
    root = etree.fromstring(signed_xhe())
    (signature,) = root.findall(f"{{{NS.DS}}}Signature")
    root.remove(signature)
    (value,) = [v for v in root.iter("{*}BusinessScopeCriterionValue") if "sigenc" in v.text]
    value.getparent().remove(value)
    with pytest.raises(EnvelopeError, match="BusinessScopeCriterionValue"):
        parse_xhe(etree.tostring(root))
