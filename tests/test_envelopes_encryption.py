"""SDK end-to-end encryption: encrypt for the recipient, sign the XHE, verify first, then decrypt."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from lxml import etree

from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.encryption import (
    decrypt_payload,
    decrypt_xhe_payload,
    encrypt_payload,
    encrypt_xhe_payload,
    encrypted_for,
)
from accesspoint.envelopes.schemas import load_xhe_schema
from accesspoint.envelopes.xhe import Xhe, XheParty, XhePayload, build_xhe, parse_xhe, sdk_scope, verify_xhe
from accesspoint.security.keys import KeyPair
from accesspoint.testing import pki
from tests.conftest import interop_path

MESSAGE = b'<m:message xmlns:m="urn:riv:infrastructure:messaging:MessageWithAttachments:3"><m:t>Hej</m:t></m:message>'
XENC = "{http://www.w3.org/2001/04/xmlenc#}"


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return pki.make_ca("SDK CA")


@pytest.fixture(scope="module")
def recipient(ca: KeyPair) -> KeyPair:
    return pki.issue(ca, "recipient.e2e.example.se")


@pytest.fixture(scope="module")
def sender(ca: KeyPair) -> KeyPair:
    return pki.issue(ca, "sender.e2e.example.se")


def _xhe(payload: XhePayload) -> Xhe:
    return Xhe(
        "3b0a2c4d-1e2f-4a5b-8c9d-0e1f2a3b4c5d",
        datetime(2026, 11, 30, 13, 0, tzinfo=UTC),
        sdk_scope("urn:riv:…::tm-base-ext-sigenc", "urn:fdc:digg.se:edelivery:federation:test"),
        XheParty("0203:sender.example.se"),
        XheParty("0203:recipient.example.se"),
        payload,
    )


@pytest.mark.parametrize(
    "payload",
    [
        XhePayload("Q{urn:riv:infrastructure:messaging:MessageWithAttachments:3}message", "application/xml", MESSAGE),
        XhePayload("application/pdf", "application/pdf", b"%PDF-1.7\x00\xff binary", xml=False),
    ],
    ids=["xml", "binary"],
)
def test_sigenc_round_trip(payload: XhePayload, sender: KeyPair, recipient: KeyPair) -> None:
    """Encrypt for the recipient, sign as the sender; the recipient verifies, then decrypts the original payload."""
    schema = load_xhe_schema(interop_path("sdk/xhe/xsd/XHE-1.0.xsd"))
    sealed = encrypt_xhe_payload(payload, recipient.certificate)
    assert sealed.encrypted and etree.fromstring(sealed.content).tag == f"{XENC}EncryptedData"
    data = build_xhe(_xhe(sealed), keys=sender, schema=schema)
    verified = verify_xhe(data, expected=sender.certificate, schema=schema)
    assert encrypted_for(verified.xhe.payload.content) == recipient.certificate
    assert decrypt_xhe_payload(verified.xhe.payload, recipient) == payload


def test_encrypted_data_uses_sdks_algorithms(recipient: KeyPair) -> None:
    """The EncryptedData names AES-256-CBC and RSA-OAEP (mgf1p), as DIGG's examples do."""
    root = etree.fromstring(encrypt_payload(MESSAGE, recipient.certificate))
    assert root.get("Type") == "http://www.w3.org/2001/04/xmlenc#Element"
    assert [m.get("Algorithm") for m in root.iter(f"{XENC}EncryptionMethod")] == [
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
    ]


def test_other_key_cannot_decrypt(recipient: KeyPair, ca: KeyPair) -> None:
    """Another key gets the one generic answer."""
    encrypted = encrypt_payload(MESSAGE, recipient.certificate)
    with pytest.raises(EnvelopeError) as caught:
        decrypt_payload(encrypted, pki.issue(ca, "someone else"))
    assert str(caught.value) == "DECRYPTION: the payload cannot be decrypted"


def test_tampered_ciphertext_gets_the_same_answer(recipient: KeyPair) -> None:
    """A flipped ciphertext byte fails with exactly the same error as a wrong key (no padding oracle)."""
    root = etree.fromstring(encrypt_payload(MESSAGE, recipient.certificate))
    value = root.find(f"{XENC}CipherData/{XENC}CipherValue")
    assert value is not None and value.text
    raw = bytearray(base64.b64decode(value.text))
    raw[len(raw) // 2] ^= 0x01
    value.text = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(EnvelopeError) as caught:
        decrypt_payload(etree.tostring(root), recipient)
    assert str(caught.value) == "DECRYPTION: the payload cannot be decrypted"


def test_plain_payload_passes_through(recipient: KeyPair) -> None:
    """Decrypting a payload that is not encrypted returns it unchanged."""
    payload = XhePayload("d", "application/xml", MESSAGE)
    assert decrypt_xhe_payload(payload, recipient) is payload


@pytest.mark.parametrize(
    ("name", "common_name"),
    [
        ("sdk/xhe/examples/XHE-tm-base-ext-sigenc.xml", "at.e2e.inera.se"),
        ("sdk/message-v3/derived/as4_xhe_encrypted.value.xml", "testa.e2e.inera.se"),
    ],
)
def test_interop_encrypted_payloads_are_not_for_us(name: str, common_name: str, recipient: KeyPair) -> None:
    """DIGG's encrypted payloads name their recipient; without its key (not published) decryption is refused."""
    xhe = parse_xhe(interop_path(name).read_bytes())
    certificate = encrypted_for(xhe.payload.content)
    assert certificate is not None
    assert f"CN={common_name}" in certificate.subject.rfc4514_string()
    with pytest.raises(EnvelopeError, match="cannot be decrypted"):
        decrypt_xhe_payload(xhe.payload, recipient)


def test_other_content_cipher_is_refused_before_decrypting(recipient: KeyPair) -> None:
    """Only the algorithms SDK names are accepted: another content cipher is refused."""
    root = etree.fromstring(encrypt_payload(MESSAGE, recipient.certificate))
    root.find(f"{XENC}EncryptionMethod").set("Algorithm", "http://www.w3.org/2001/04/xmlenc#aes128-cbc")  # type: ignore[union-attr]
    with pytest.raises(EnvelopeError, match="cannot be decrypted"):
        decrypt_payload(etree.tostring(root), recipient)
