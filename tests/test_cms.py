"""CMS AuthEnvelopedData to a holder key: round trips, OpenSSL in both directions, refusals, certificate checks."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from accesspoint.security import cms, der
from accesspoint.security.holder_keys import HolderKeyRefused, HolderKeyType, check_holder_certificate
from accesspoint.security.keys import KeyPair
from accesspoint.testing.holders import holder_key, signing_holder_key, write_key_pair
from accesspoint.testing.pki import issue, make_ca

NOW = datetime(2030, 1, 1, tzinfo=UTC)
LETTER = "Beslut om bostadsbidrag: ärendet är avgjort.\n".encode() * 50


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return make_ca("Holder key CA")


@pytest.fixture(scope="module")
def rsa_holder(ca: KeyPair) -> KeyPair:
    return holder_key(ca, "197001011234", "rsa")


@pytest.fixture(scope="module")
def x25519_holder(ca: KeyPair) -> KeyPair:
    return holder_key(ca, "197001011234", "x25519")


@pytest.fixture(scope="module")
def p256_holder(ca: KeyPair) -> KeyPair:
    return holder_key(ca, "197001011234", "p256")


def _openssl() -> str:
    path = shutil.which("openssl")
    assert path is not None, "openssl is installed by scripts/ensure-system-packages.sh"
    return path


def _key(pair: KeyPair) -> cms.DecryptionKey:
    return cms.DecryptionKey.from_key_pair(pair)


@pytest.mark.parametrize("kind", ["rsa_holder", "x25519_holder", "p256_holder"])
def test_round_trip_in_small_chunks(kind: str, request: pytest.FixtureRequest) -> None:
    """A letter encrypted to a holder's key decrypts with that key, fed one 7-byte chunk at a time."""
    pair: KeyPair = request.getfixturevalue(kind)
    encrypted = cms.encrypt(LETTER, [cms.Recipient.from_certificate(pair.certificate)])
    assert LETTER not in encrypted
    chunks = [encrypted[i : i + 7] for i in range(0, len(encrypted), 7)]
    assert b"".join(cms.decrypt_stream(chunks, [_key(pair)])) == LETTER


def test_stream_writes_what_it_announced() -> None:
    """The streaming writer refuses plaintext longer or shorter than the size it announced in the DER lengths."""
    recipient = cms.Recipient.from_certificate(holder_key(make_ca(), "1", "x25519").certificate)
    with pytest.raises(ValueError, match="announced"):
        b"".join(cms.encrypt_stream([b"abc"], 2, [recipient]))
    with pytest.raises(ValueError, match="announced"):
        b"".join(cms.encrypt_stream([b"abc"], 4, [recipient]))


@pytest.mark.parametrize("kind", ["rsa_holder", "p256_holder"])
def test_openssl_decrypts_ours(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Debian's `openssl cms -decrypt` opens what we write (RSA-OAEP SHA-256; ECDH with the X9.63 SHA-256 KDF)."""
    pair: KeyPair = request.getfixturevalue(kind)
    key_path, cert_path = write_key_pair(pair, tmp_path, "holder")
    (tmp_path / "letter.cms").write_bytes(cms.encrypt(LETTER, [cms.Recipient.from_certificate(pair.certificate)]))
    result = subprocess.run(
        [_openssl(), "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(tmp_path / "letter.cms"),
         "-inkey", str(key_path), "-recip", str(cert_path)],
        capture_output=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == LETTER


_OPENSSL_OPTIONS = {
    "rsa_holder": [
        "-keyopt",
        "rsa_padding_mode:oaep",
        "-keyopt",
        "rsa_oaep_md:sha256",
        "-keyopt",
        "rsa_mgf1_md:sha256",
    ],
    "p256_holder": ["-keyopt", "ecdh_kdf_md:sha256"],
}


@pytest.mark.parametrize("kind", ["rsa_holder", "p256_holder"])
@pytest.mark.parametrize("stream", [False, True])
def test_we_decrypt_openssl(kind: str, stream: bool, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """What `openssl cms -encrypt -aes-256-gcm` writes (DER, or BER with indefinite lengths under -stream) opens."""
    pair: KeyPair = request.getfixturevalue(kind)
    _, cert_path = write_key_pair(pair, tmp_path, "holder")
    (tmp_path / "letter.txt").write_bytes(LETTER * 40)
    subprocess.run(
        [_openssl(), "cms", "-encrypt", "-binary", "-aes-256-gcm", *(["-stream"] if stream else []),
         "-in", str(tmp_path / "letter.txt"), "-outform", "DER", "-out", str(tmp_path / "letter.cms"),
         "-recip", str(cert_path), *_OPENSSL_OPTIONS[kind]],
        check=True, capture_output=True,
    )  # fmt: skip
    data = (tmp_path / "letter.cms").read_bytes()
    assert (data[1] == 0x80) is stream  # indefinite outer length exactly when streamed
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    assert b"".join(cms.decrypt_stream(chunks, [_key(pair)])) == LETTER * 40


def test_x25519_recipient_by_independent_computation(x25519_holder: KeyPair) -> None:
    """RFC 8418: the X25519 recipient's KEK is X9.63-KDF-SHA256(Z, SharedInfo) and unwraps the content key,
    recomputed here with hashlib and hand-written SharedInfo bytes (Debian's OpenSSL 3.0 has no X25519 CMS)."""
    encrypted = cms.encrypt(LETTER, [cms.Recipient.from_certificate(x25519_holder.certificate)])
    info = der.parse_one(encrypted, "ContentInfo").children()[1].children()[0].children()
    kari = info[1].children()[0]
    assert kari.tag == 0xA1
    version, originator, scheme, keys = kari.children()
    assert version.as_int() == 3
    algorithm_id, public = originator.children()[0].children()
    assert algorithm_id.children()[0].as_oid() == "1.3.101.110"  # id-X25519, parameters absent
    assert len(algorithm_id.children()) == 1
    assert scheme.children()[0].as_oid() == "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf-scheme
    assert scheme.children()[1].children()[0].as_oid() == "2.16.840.1.101.3.4.1.45"  # id-aes256-wrap
    private = x25519_holder.private_key
    assert isinstance(private, x25519.X25519PrivateKey)
    shared = private.exchange(x25519.X25519PublicKey.from_public_bytes(public.as_bit_string()))
    shared_info = bytes.fromhex("3015300b060960864801650304012da206040400000100")  # aes256-wrap, 256 bits
    kek = hashlib.sha256(shared + b"\x00\x00\x00\x01" + shared_info).digest()
    wrapped = keys.children()[0].children()[1].content
    cek = aes_key_unwrap(kek, wrapped)
    eci = info[2].children()
    nonce = eci[1].children()[1].children()[0].content
    ciphertext, mac = eci[2].content, info[3].content
    assert AESGCM(cek).decrypt(nonce, ciphertext + mac, None) == LETTER


def test_ciphertext_for_another_key(rsa_holder: KeyPair, ca: KeyPair) -> None:
    """A message for one key, opened with another holder's key, is refused naming the key it is for."""
    other = holder_key(ca, "198001011234", "rsa")
    encrypted = cms.encrypt(LETTER, [cms.Recipient.from_certificate(rsa_holder.certificate)])
    with pytest.raises(cms.NotAddressedToUs) as refused:
        cms.decrypt(encrypted, [_key(other)])
    assert refused.value.key_ids[0].endswith(f"/{rsa_holder.certificate.serial_number:x}")


def test_tampered_content_fails_opaquely(x25519_holder: KeyPair) -> None:
    """A flipped ciphertext bit fails the GCM tag with the one opaque DecryptionFailed."""
    encrypted = bytearray(cms.encrypt(LETTER, [cms.Recipient.from_certificate(x25519_holder.certificate)]))
    encrypted[-100] ^= 1
    with pytest.raises(cms.DecryptionFailed):
        cms.decrypt(bytes(encrypted), [_key(x25519_holder)])


def test_truncated_message_is_malformed(rsa_holder: KeyPair) -> None:
    """A message cut short is MalformedCms, never plaintext."""
    encrypted = cms.encrypt(LETTER, [cms.Recipient.from_certificate(rsa_holder.certificate)])
    with pytest.raises(cms.MalformedCms):
        cms.decrypt(encrypted[:-20], [_key(rsa_holder)])


def test_oaep_sha1_is_legacy(rsa_holder: KeyPair, tmp_path: Path) -> None:
    """OpenSSL's default RSA-OAEP (SHA-1) is refused unless SHA-1 is explicitly allowed."""
    _, cert_path = write_key_pair(rsa_holder, tmp_path, "holder")
    (tmp_path / "letter.txt").write_bytes(LETTER)
    subprocess.run(
        [_openssl(), "cms", "-encrypt", "-binary", "-aes-128-gcm", "-in", str(tmp_path / "letter.txt"),
         "-outform", "DER", "-out", str(tmp_path / "letter.cms"), "-recip", str(cert_path),
         "-keyopt", "rsa_padding_mode:oaep"],
        check=True, capture_output=True,
    )  # fmt: skip
    data = (tmp_path / "letter.cms").read_bytes()
    with pytest.raises(cms.UnsupportedCms, match="SHA-1"):
        cms.decrypt(data, [_key(rsa_holder)])
    assert cms.decrypt(data, [_key(rsa_holder)], legacy_sha1=True) == LETTER


def test_bare_key_recipient_by_key_identifier() -> None:
    """A key without a certificate (a client's one-time key) is addressed by the identifier its holder chose."""
    client = x25519.X25519PrivateKey.generate()
    encrypted = cms.encrypt(LETTER, [cms.Recipient.from_public_key(client.public_key(), b"client-1")])
    assert cms.decrypt(encrypted, [cms.DecryptionKey.from_private_key(client, b"client-1")]) == LETTER
    with pytest.raises(cms.NotAddressedToUs):
        cms.decrypt(encrypted, [cms.DecryptionKey.from_private_key(client, b"client-2")])


def test_holder_certificates_accepted(rsa_holder: KeyPair, x25519_holder: KeyPair) -> None:
    """RSA with keyEncipherment and X25519 with keyAgreement are holder keys; the key id is the certificate SHA-256."""
    rsa_info = check_holder_certificate(rsa_holder.certificate, now=NOW)
    assert rsa_info.key_type is HolderKeyType.RSA_OAEP
    assert rsa_info.key_id == cms.key_id(rsa_holder.certificate)
    assert check_holder_certificate(x25519_holder.certificate, now=NOW).key_type is HolderKeyType.X25519


def test_holder_certificate_of_the_wrong_type(ca: KeyPair) -> None:
    """An Ed25519 (signing) certificate is refused as a holder key by its key type."""
    with pytest.raises(HolderKeyRefused) as refused:
        check_holder_certificate(issue(ca, "signer", "ed25519").certificate, now=NOW)
    assert refused.value.rule == "key-type"


def test_holder_certificate_of_the_wrong_usage(ca: KeyPair) -> None:
    """An RSA certificate for signing only is refused by its key usage."""
    with pytest.raises(HolderKeyRefused) as refused:
        check_holder_certificate(signing_holder_key(ca, "197001011234").certificate, now=NOW)
    assert refused.value.rule == "key-usage"


def test_holder_certificate_expired(ca: KeyPair) -> None:
    """A holder certificate past its notAfter is refused as expired."""
    old = holder_key(ca, "197001011234", "x25519", not_after=datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(HolderKeyRefused) as refused:
        check_holder_certificate(old.certificate, now=NOW)
    assert refused.value.rule == "expired"
