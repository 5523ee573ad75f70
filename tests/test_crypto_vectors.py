"""Each primitive the 2.0 profile rests on, checked against its RFC's published test vectors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from cryptography.x509.oid import NameOID

from accesspoint.security.algorithms import HkdfPrf, SignatureAlgorithm
from accesspoint.security.encryption import decrypt_stream, hkdf_derive
from accesspoint.security.keys import KeyPair
from accesspoint.security.signing import sign_bytes, verify_bytes

# RFC 8032 §7.1, TEST 1-3: secret key, public key, message, signature.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
        "d25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c"
        "387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc659"
        "4a7c15e9716ed28dc027beceea1ec40a",
    ),
]


def _self_signed(key: ed25519.Ed25519PrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rfc8032")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2045, 1, 1, tzinfo=UTC))
        .sign(key, None)
    )


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_rfc8032_ed25519_vectors_sign_and_verify(secret: str, public: str, message: str, signature: str) -> None:
    """Our XML-DSig signing and verification of Ed25519 reproduce RFC 8032's signatures exactly."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert key.public_key().public_bytes_raw() == bytes.fromhex(public)
    pair = KeyPair(key, _self_signed(key))
    produced = sign_bytes(pair, SignatureAlgorithm.ED25519, bytes.fromhex(message))
    assert produced == bytes.fromhex(signature)
    public_key = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
    assert verify_bytes(public_key, SignatureAlgorithm.ED25519, produced, bytes.fromhex(message))
    assert not verify_bytes(public_key, SignatureAlgorithm.ED25519, produced, bytes.fromhex(message) + b"!")


@pytest.mark.parametrize(
    ("scalar", "u", "output"),
    [  # RFC 7748 §5.2
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ],
)
def test_rfc7748_x25519_function_vectors(scalar: str, u: str, output: str) -> None:
    """X25519 of RFC 7748's scalars and u-coordinates gives its outputs."""
    private = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(scalar))
    assert private.exchange(x25519.X25519PublicKey.from_public_bytes(bytes.fromhex(u))) == bytes.fromhex(output)


def test_rfc7748_x25519_diffie_hellman() -> None:
    """RFC 7748 §6.1: Alice's and Bob's public keys and their shared secret."""
    alice = x25519.X25519PrivateKey.from_private_bytes(
        bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    )
    bob = x25519.X25519PrivateKey.from_private_bytes(
        bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    )
    assert alice.public_key().public_bytes_raw().hex() == (
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )
    assert bob.public_key().public_bytes_raw().hex() == (
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    )
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert alice.exchange(bob.public_key()).hex() == shared
    assert bob.exchange(alice.public_key()).hex() == shared


@pytest.mark.parametrize(
    ("ikm", "salt", "info", "length", "okm"),
    [  # RFC 5869 A.1 (basic) and A.3 (zero-length salt and info), HMAC-SHA256
        (
            "0b" * 22,
            "000102030405060708090a0b0c",
            "f0f1f2f3f4f5f6f7f8f9",
            42,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (
            "0b" * 22,
            "",
            "",
            42,
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ],
)
def test_rfc5869_hkdf_sha256_vectors(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    """Our HKDF (as xmldsig-more#hkdf with hmac-sha256 parameterises it) gives RFC 5869's output keys."""
    derived = hkdf_derive(bytes.fromhex(ikm), HkdfPrf.HMAC_SHA256, bytes.fromhex(salt), bytes.fromhex(info), length)
    assert derived.hex() == okm


def test_hkdf_prefix_property_lets_key_length_in_bits_or_bytes_agree() -> None:
    """A 16-byte HKDF key is the prefix of a longer output, which is why KeyLength 16 and 128 both read right."""
    short = hkdf_derive(b"z" * 32, HkdfPrf.HMAC_SHA256, b"salt", b"", 16)
    assert hkdf_derive(b"z" * 32, HkdfPrf.HMAC_SHA256, b"salt", b"", 128)[:16] == short


@pytest.mark.parametrize(
    ("kek", "key", "wrapped"),
    [  # RFC 3394 §4.1, §4.2, §4.3 and §4.6
        (
            "000102030405060708090a0b0c0d0e0f",
            "00112233445566778899aabbccddeeff",
            "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5",
        ),
        (
            "000102030405060708090a0b0c0d0e0f1011121314151617",
            "00112233445566778899aabbccddeeff",
            "96778b25ae6ca435f92b5b97c050aed2468ab8a17ad84e5d",
        ),
        (
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "00112233445566778899aabbccddeeff",
            "64e8c3f9ce0f5ba263e9777905818a2a93c8191e7d6e8ae7",
        ),
        (
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f",
            "28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21",
        ),
    ],
)
def test_rfc3394_key_wrap_vectors(kek: str, key: str, wrapped: str) -> None:
    """AES key wrap (kw-aes128/192/256) wraps and unwraps RFC 3394's keys to its ciphertexts."""
    assert aes_key_wrap(bytes.fromhex(kek), bytes.fromhex(key)).hex() == wrapped
    assert aes_key_unwrap(bytes.fromhex(kek), bytes.fromhex(wrapped)).hex() == key


# McGrew and Viega, "The Galois/Counter Mode of Operation", test case 3 (AES-128, 96-bit IV, no AAD).
GCM_KEY = bytes.fromhex("feffe9928665731c6d6a8f9467308308")
GCM_IV = bytes.fromhex("cafebabefacedbaddecaf888")
GCM_PLAIN = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525"
    "b16aedf5aa0de657ba637b391aafd255"
)
GCM_CIPHER = bytes.fromhex(
    "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa05"
    "1ba30b396a0aac973d58e091473f5985"
)
GCM_TAG = bytes.fromhex("4d5c2af327cd64a62cf35abd2ba6fab4")


@pytest.mark.parametrize("size", [1, 5, 11, 12, 13, 15, 16, 17, 28, 64, 1000])
def test_gcm_vector_decrypts_as_a_stream_whatever_the_chunking(size: int) -> None:
    """The GCM spec's test case 3, as IV ‖ ciphertext ‖ tag in chunks of any size, decrypts to its plaintext."""
    blob = GCM_IV + GCM_CIPHER + GCM_TAG
    chunks = [blob[i : i + size] for i in range(0, len(blob), size)]
    assert b"".join(decrypt_stream(GCM_KEY, chunks)) == GCM_PLAIN
