"""Content encryption to a mailbox holder: CMS AuthEnvelopedData (RFC 5083) with AES-GCM (RFC 5084).

Recipients: RSA-OAEP key transport (RFC 3560, SHA-256 and MGF1-SHA-256) or ephemeral-static key agreement
(RFC 8418 X25519; RFC 5753 ECDH on P-256/P-384, the same structure, which Debian's OpenSSL 3.0 also speaks)
with the ANSI X9.63 KDF over SHA-256 and AES key wrap (RFC 3565). Sans-I/O: pure functions over chunk iterables.

Streaming: ``encrypt_stream`` writes DER with definite lengths, so it needs the plaintext's size up front (the
caller has the file or spooled part); ``decrypt_stream`` reads DER or BER (OpenSSL's ``-stream`` output with
indefinite lengths) and yields plaintext as ciphertext arrives. The GCM tag comes after the content, so the
yielded bytes are unauthenticated until the iterator has finished without an exception: write them to a
temporary sink and keep them only then (as ``encryption.py`` does for AS4 parts).

Decryption failures are opaque on purpose (one ``DecryptionFailed`` for a bad wrap, a bad OAEP block and a bad
tag) so that no caller turns them into an oracle; ``NotAddressedToUs`` says only which key ids the message names.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from accesspoint.security import der
from accesspoint.security.keys import KeyPair, PrivateKey


class Oid(StrEnum):
    """The object identifiers this module writes or reads."""

    DATA = "1.2.840.113549.1.7.1"
    AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"
    AES128_GCM = "2.16.840.1.101.3.4.1.6"
    AES256_GCM = "2.16.840.1.101.3.4.1.46"
    RSAES_OAEP = "1.2.840.113549.1.1.7"
    MGF1 = "1.2.840.113549.1.1.8"
    SHA1 = "1.3.14.3.2.26"
    SHA256 = "2.16.840.1.101.3.4.2.1"
    SHA384 = "2.16.840.1.101.3.4.2.2"
    SHA512 = "2.16.840.1.101.3.4.2.3"
    X25519 = "1.3.101.110"
    EC_PUBLIC_KEY = "1.2.840.10045.2.1"
    ECDH_SHA256_KDF = "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf-scheme (RFC 5753, RFC 8418)
    ECDH_SHA384_KDF = "1.3.132.1.11.2"
    ECDH_SHA512_KDF = "1.3.132.1.11.3"
    AES128_WRAP = "2.16.840.1.101.3.4.1.5"
    AES256_WRAP = "2.16.840.1.101.3.4.1.45"


class ContentEncryption(StrEnum):
    """The content-encryption algorithms written; the value is the OID."""

    AES128_GCM = Oid.AES128_GCM.value
    AES256_GCM = Oid.AES256_GCM.value


_CEK_SIZES = {Oid.AES128_GCM.value: 16, Oid.AES256_GCM.value: 32}
_WRAP_FOR_CEK = {16: Oid.AES128_WRAP, 32: Oid.AES256_WRAP}
_WRAP_SIZES = {Oid.AES128_WRAP.value: 16, Oid.AES256_WRAP.value: 32}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    Oid.SHA1.value: hashes.SHA1,
    Oid.SHA256.value: hashes.SHA256,
    Oid.SHA384.value: hashes.SHA384,
    Oid.SHA512.value: hashes.SHA512,
}
_KDF_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    Oid.ECDH_SHA256_KDF.value: hashes.SHA256,
    Oid.ECDH_SHA384_KDF.value: hashes.SHA384,
    Oid.ECDH_SHA512_KDF.value: hashes.SHA512,
}
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {"secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1}
NONCE_SIZE = 12
TAG_SIZE = 16

RecipientPublicKey = rsa.RSAPublicKey | x25519.X25519PublicKey | ec.EllipticCurvePublicKey


class CmsError(ValueError):
    """A CMS message that cannot be opened; subclasses say why."""


class MalformedCms(CmsError):
    """Not an AuthEnvelopedData this module reads (the message names the structure at fault)."""


class UnsupportedCms(CmsError):
    """Well formed, but with an algorithm or feature this module does not accept (named)."""


class NotAddressedToUs(CmsError):
    """None of the given keys is a recipient of the message; ``key_ids`` names the recipients it has."""

    def __init__(self, key_ids: Sequence[str]) -> None:
        self.key_ids = tuple(key_ids)
        super().__init__(f"the message is encrypted for another key (recipients: {', '.join(key_ids) or 'none'})")


class DecryptionFailed(CmsError):
    """The key did not open the message or the content failed its integrity check (deliberately not which)."""

    def __init__(self) -> None:
        super().__init__("decryption failed: the message was altered or the key does not fit")


# --- recipients -----------------------------------------------------------------------------------------------


def _issuer_and_serial(certificate: x509.Certificate) -> bytes:
    return der.sequence(certificate.issuer.public_bytes(), der.integer(certificate.serial_number))


def _subject_key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def key_id(certificate: x509.Certificate) -> str:
    """A holder key's id: the SHA-256 of its certificate (hex), what FaR publishes and the mailbox API shows."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True, slots=True)
class Recipient:
    """Whom to encrypt to: a public key and how the message names it (issuer and serial, or a key identifier)."""

    public_key: RecipientPublicKey
    key_id: str
    issuer_and_serial: bytes | None = None  # DER IssuerAndSerialNumber
    subject_key_identifier: bytes | None = None

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> Recipient:
        """A certificate's key, named by issuer and serial number (what every CMS reader resolves)."""
        public = certificate.public_key()
        if not isinstance(public, RecipientPublicKey):
            raise UnsupportedCms(f"cannot encrypt to a {type(public).__name__.removeprefix('_')} key")
        return cls(public, key_id(certificate), issuer_and_serial=_issuer_and_serial(certificate))

    @classmethod
    def from_public_key(cls, public_key: RecipientPublicKey, identifier: bytes) -> Recipient:
        """A bare key (no certificate), named by a subject key identifier the key holder chose."""
        return cls(public_key, identifier.hex(), subject_key_identifier=identifier)


@dataclass(frozen=True, slots=True)
class DecryptionKey:
    """A private key and the names under which a message may address it."""

    private_key: PrivateKey
    key_id: str
    issuer_and_serial: bytes | None = None
    subject_key_identifier: bytes | None = None

    @classmethod
    def from_key_pair(cls, pair: KeyPair) -> DecryptionKey:
        """A key with its certificate: addressed by issuer and serial, or by the certificate's key identifier."""
        cert = pair.certificate
        return cls(pair.private_key, key_id(cert), _issuer_and_serial(cert), _subject_key_identifier(cert))

    @classmethod
    def from_private_key(cls, private_key: PrivateKey, identifier: bytes) -> DecryptionKey:
        """A bare key addressed by the subject key identifier given at encryption."""
        return cls(private_key, identifier.hex(), subject_key_identifier=identifier)

    def answers(self, rid: _Rid) -> bool:
        """True when a recipient identifier in a message names this key."""
        if rid.issuer_and_serial is not None:
            return rid.issuer_and_serial == self.issuer_and_serial
        return rid.subject_key_identifier is not None and rid.subject_key_identifier == self.subject_key_identifier


@dataclass(frozen=True, slots=True)
class _Rid:
    issuer_and_serial: bytes | None = None
    subject_key_identifier: bytes | None = None

    def describe(self) -> str:
        if self.issuer_and_serial is not None:
            issuer, serial = der.parse_one(self.issuer_and_serial, "IssuerAndSerialNumber").children()
            return f"issuer-serial:{hashlib.sha256(issuer.encoded).hexdigest()[:16]}/{serial.as_int():x}"
        return f"ski:{(self.subject_key_identifier or b'').hex()}"


# --- writing ------------------------------------------------------------------------------------------------------


def _oaep_parameters() -> bytes:
    sha256 = der.algorithm(Oid.SHA256)
    return der.sequence(der.explicit(0, sha256), der.explicit(1, der.algorithm(Oid.MGF1, sha256)))


def _recipient_info(recipient: Recipient, cek: bytes) -> bytes:
    public = recipient.public_key
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise UnsupportedCms(f"an RSA key of {public.key_size} bits is too small (2048 at least)")
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        if recipient.issuer_and_serial is not None:
            version, rid = 0, recipient.issuer_and_serial
        else:
            version, rid = 2, der.tlv(0x80, recipient.subject_key_identifier or b"")
        return der.sequence(
            der.integer(version),
            rid,
            der.algorithm(Oid.RSAES_OAEP, _oaep_parameters()),
            der.octet_string(public.encrypt(cek, oaep)),
        )
    wrap = _WRAP_FOR_CEK[len(cek)]
    if isinstance(public, x25519.X25519PublicKey):
        ephemeral_x = x25519.X25519PrivateKey.generate()
        shared = ephemeral_x.exchange(public)
        originator = der.algorithm(Oid.X25519) + der.bit_string(ephemeral_x.public_key().public_bytes_raw())
    else:
        if public.curve.name not in _EC_CURVES:
            raise UnsupportedCms(f"curve {public.curve.name} is not supported")
        ephemeral_ec = ec.generate_private_key(public.curve)
        shared = ephemeral_ec.exchange(ec.ECDH(), public)
        point = ephemeral_ec.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        originator = der.algorithm(Oid.EC_PUBLIC_KEY) + der.bit_string(point)
    kek = _kdf(hashes.SHA256, shared, wrap, _WRAP_SIZES[wrap.value], ukm=None)
    if recipient.issuer_and_serial is not None:
        rid = recipient.issuer_and_serial
    else:
        rid = der.tlv(0xA0, der.octet_string(recipient.subject_key_identifier or b""))
    originator_key = der.tlv(0xA1, originator)  # originatorKey [1] IMPLICIT OriginatorPublicKey
    return der.tlv(
        0xA1,  # [1] KeyAgreeRecipientInfo
        b"".join(
            (
                der.integer(3),
                der.explicit(0, originator_key),
                der.algorithm(Oid.ECDH_SHA256_KDF, der.algorithm(wrap)),
                der.sequence(der.sequence(rid, der.octet_string(aes_key_wrap(kek, cek)))),
            )
        ),
    )


def _kdf(digest: type[hashes.HashAlgorithm], shared: bytes, wrap: str, size: int, ukm: bytes | None) -> bytes:
    """ANSI X9.63 KDF over ECC-CMS-SharedInfo (RFC 5753 §7.2): keyInfo, entityUInfo, suppPubInfo (bits, 32-bit)."""
    info = der.sequence(
        der.algorithm(wrap),
        *(() if ukm is None else (der.explicit(0, der.octet_string(ukm)),)),
        der.explicit(2, der.octet_string((size * 8).to_bytes(4, "big"))),
    )
    return X963KDF(algorithm=digest(), length=size, sharedinfo=info).derive(shared)


def encrypt_stream(
    chunks: Iterable[bytes],
    size: int,
    recipients: Sequence[Recipient],
    *,
    content_encryption: ContentEncryption = ContentEncryption.AES256_GCM,
    random: Callable[[int], bytes] = os.urandom,
) -> Iterator[bytes]:
    """A ContentInfo(AuthEnvelopedData) for ``size`` bytes of plaintext, as chunks; ValueError if size is wrong."""
    if not recipients:
        raise ValueError("at least one recipient")
    cek = random(_CEK_SIZES[content_encryption.value])
    nonce = random(NONCE_SIZE)
    infos = der.set_of(*(_recipient_info(r, cek) for r in recipients))
    algorithm_id = der.algorithm(content_encryption.value, der.sequence(der.octet_string(nonce), der.integer(TAG_SIZE)))
    # Definite lengths all the way down: every header is known once the plaintext's size is.
    eci_head = der.oid(Oid.DATA) + algorithm_id + bytes([0x80]) + der.length(size)  # [0] IMPLICIT OCTET STRING
    eci_header = bytes([der.SEQUENCE]) + der.length(len(eci_head) + size)
    mac_size = len(der.octet_string(bytes(TAG_SIZE)))
    body_size = len(der.integer(0)) + len(infos) + len(eci_header) + len(eci_head) + size + mac_size
    aed_header = bytes([der.SEQUENCE]) + der.length(body_size)
    explicit_header = bytes([0xA0]) + der.length(len(aed_header) + body_size)
    content_type = der.oid(Oid.AUTH_ENVELOPED_DATA)
    outer_size = len(content_type) + len(explicit_header) + len(aed_header) + body_size
    yield (
        bytes([der.SEQUENCE])
        + der.length(outer_size)
        + content_type
        + explicit_header
        + aed_header
        + der.integer(0)
        + infos
        + eci_header
        + eci_head
    )
    encryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce)).encryptor()
    written = 0
    for chunk in chunks:
        written += len(chunk)
        if written > size:
            raise ValueError(f"more plaintext than the {size} bytes announced")
        if chunk:
            yield encryptor.update(chunk)
    if written != size:
        raise ValueError(f"{written} bytes of plaintext, {size} announced")
    encryptor.finalize()
    yield der.octet_string(encryptor.tag)


def encrypt(
    data: bytes,
    recipients: Sequence[Recipient],
    content_encryption: ContentEncryption = ContentEncryption.AES256_GCM,
) -> bytes:
    """``encrypt_stream`` over bytes in memory."""
    return b"".join(encrypt_stream((data,), len(data), recipients, content_encryption=content_encryption))


# --- reading ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Transport:
    rid: _Rid
    algorithm: der.Element
    encrypted_key: bytes


@dataclass(frozen=True, slots=True)
class _Agreement:
    originator: der.Element  # OriginatorPublicKey's contents: algorithm, public key
    ukm: bytes | None
    algorithm: der.Element
    keys: tuple[tuple[_Rid, bytes], ...]


def _rid(element: der.Element, *, agreement: bool) -> _Rid:
    if element.tag == der.SEQUENCE:
        return _Rid(issuer_and_serial=element.encoded)
    if not agreement and element.tag == 0x80:
        return _Rid(subject_key_identifier=element.content)
    if agreement and element.tag == 0xA0:
        return _Rid(subject_key_identifier=element.children()[0].expect(der.OCTET_STRING, "keyIdentifier").content)
    raise MalformedCms(f"recipient identifier with tag 0x{element.tag:02x}")


def _parse_recipient_infos(element: der.Element) -> list[_Transport | _Agreement]:
    element.expect(der.SET, "RecipientInfos")
    found: list[_Transport | _Agreement] = []
    for info in element.children():
        if info.tag == der.SEQUENCE:
            version, rid, algorithm_id, encrypted = info.children()
            if version.as_int() not in (0, 2):
                raise MalformedCms(f"KeyTransRecipientInfo version {version.as_int()}")
            found.append(
                _Transport(
                    _rid(rid, agreement=False),
                    algorithm_id.expect(der.SEQUENCE, "keyEncryptionAlgorithm"),
                    encrypted.expect(der.OCTET_STRING, "encryptedKey").content,
                )
            )
        elif info.tag == 0xA1:
            parts = info.children()
            if parts[0].as_int() != 3:
                raise MalformedCms("KeyAgreeRecipientInfo version must be 3")
            originator = parts[1].expect(0xA0, "originator").children()[0]
            if originator.tag != 0xA1:
                raise UnsupportedCms("only an ephemeral originator key (originatorKey) is accepted")
            rest = parts[2:]
            ukm = None
            if rest and rest[0].tag == 0xA1:
                ukm = rest[0].children()[0].expect(der.OCTET_STRING, "ukm").content
                rest = rest[1:]
            if len(rest) != 2:
                raise MalformedCms("KeyAgreeRecipientInfo fields")
            keys = tuple(
                (_rid(rid, agreement=True), wrapped.expect(der.OCTET_STRING, "encryptedKey").content)
                for rid, wrapped in (
                    k.children() for k in rest[1].expect(der.SEQUENCE, "recipientEncryptedKeys").children()
                )
            )
            found.append(_Agreement(originator, ukm, rest[0].expect(der.SEQUENCE, "keyEncryptionAlgorithm"), keys))
        else:
            # KEKRecipientInfo [2], PasswordRecipientInfo [3], OtherRecipientInfo [4]: not for holder keys.
            continue
    return found


def _oaep_from(parameters: list[der.Element], legacy_sha1: bool) -> padding.OAEP:
    digest, mgf_digest = Oid.SHA1.value, Oid.SHA1.value
    for field in parameters[0].children() if parameters else []:
        if field.tag == 0xA0:
            digest = field.children()[0].children()[0].as_oid()
        elif field.tag == 0xA1:
            mgf = field.children()[0].children()
            if mgf[0].as_oid() != Oid.MGF1:
                raise UnsupportedCms(f"mask generation {mgf[0].as_oid()}")
            mgf_digest = mgf[1].children()[0].as_oid()
        elif field.tag == 0xA2:
            raise UnsupportedCms("an OAEP label (pSourceFunc) is not accepted")
    for chosen in (digest, mgf_digest):
        if chosen not in _HASHES:
            raise UnsupportedCms(f"OAEP digest {chosen}")
        if chosen == Oid.SHA1 and not legacy_sha1:
            raise UnsupportedCms("RSA-OAEP with SHA-1 is refused (legacy)")
    return padding.OAEP(mgf=padding.MGF1(_HASHES[mgf_digest]()), algorithm=_HASHES[digest](), label=None)


def _unwrap_transport(info: _Transport, key: DecryptionKey, legacy_sha1: bool) -> bytes:
    parts = info.algorithm.children()
    if parts[0].as_oid() != Oid.RSAES_OAEP:
        raise UnsupportedCms(f"key transport {parts[0].as_oid()} (only RSAES-OAEP)")
    oaep = _oaep_from(parts[1:], legacy_sha1)
    if not isinstance(key.private_key, rsa.RSAPrivateKey):
        raise DecryptionFailed
    try:
        return key.private_key.decrypt(info.encrypted_key, oaep)
    except ValueError:
        raise DecryptionFailed from None


def _unwrap_agreement(info: _Agreement, wrapped: bytes, key: DecryptionKey) -> bytes:
    scheme = info.algorithm.children()
    kdf_hash = _KDF_HASHES.get(scheme[0].as_oid())
    if kdf_hash is None:
        raise UnsupportedCms(f"key agreement {scheme[0].as_oid()} (only the X9.63 KDF with SHA-2)")
    wrap = scheme[1].children()[0].as_oid()
    if wrap not in _WRAP_SIZES:
        raise UnsupportedCms(f"key wrap {wrap}")
    algorithm_id, public_bits = info.originator.children()
    public = public_bits.as_bit_string()
    originator_type = algorithm_id.children()[0].as_oid()
    private = key.private_key
    try:
        if originator_type == Oid.X25519 and isinstance(private, x25519.X25519PrivateKey):
            shared = private.exchange(x25519.X25519PublicKey.from_public_bytes(public))
        elif originator_type == Oid.EC_PUBLIC_KEY and isinstance(private, ec.EllipticCurvePrivateKey):
            peer = ec.EllipticCurvePublicKey.from_encoded_point(private.curve, public)
            shared = private.exchange(ec.ECDH(), peer)
        else:
            raise DecryptionFailed
        kek = _kdf(kdf_hash, shared, wrap, _WRAP_SIZES[wrap], info.ukm)
        return aes_key_unwrap(kek, wrapped)
    except (ValueError, InvalidUnwrap):
        raise DecryptionFailed from None


def _content_key(infos: list[_Transport | _Agreement], keys: Sequence[DecryptionKey], legacy_sha1: bool) -> bytes:
    named: list[_Rid] = []
    for info in infos:
        pairs = [(info.rid, None)] if isinstance(info, _Transport) else [(rid, w) for rid, w in info.keys]
        for rid, wrapped in pairs:
            named.append(rid)
            key = next((k for k in keys if k.answers(rid)), None)
            if key is None:
                continue
            if isinstance(info, _Transport):
                return _unwrap_transport(info, key, legacy_sha1)
            assert wrapped is not None
            return _unwrap_agreement(info, wrapped, key)
    raise NotAddressedToUs([rid.describe() for rid in named])


def recipients_of(data: bytes) -> list[str]:
    """The recipients a message names (as in ``NotAddressedToUs``), read from its first bytes."""
    try:
        next(decrypt_stream((data,), ()))
    except NotAddressedToUs as exc:
        return list(exc.key_ids)
    return []


def decrypt_stream(
    chunks: Iterable[bytes], keys: Sequence[DecryptionKey], *, legacy_sha1: bool = False
) -> Iterator[bytes]:
    """The plaintext of a ContentInfo(AuthEnvelopedData), in pieces; raises CmsError (see the module's note)."""
    reader = der.Reader(chunks)
    try:
        yield from _decrypt(reader, keys, legacy_sha1)
    except der.DerError as exc:
        raise MalformedCms(str(exc)) from None


def _decrypt(reader: der.Reader, keys: Sequence[DecryptionKey], legacy_sha1: bool) -> Iterator[bytes]:
    closings: list[int] = []
    closings.append(reader.header(der.SEQUENCE, "ContentInfo"))
    content_type = reader.element("contentType").as_oid()
    if content_type != Oid.AUTH_ENVELOPED_DATA:
        raise UnsupportedCms(f"content type {content_type} (expected AuthEnvelopedData)")
    closings.append(reader.header(0xA0, "content"))
    closings.append(reader.header(der.SEQUENCE, "AuthEnvelopedData"))
    if reader.element("version").as_int() != 0:
        raise MalformedCms("AuthEnvelopedData version must be 0")
    if reader.peek_tag() == 0xA0:
        reader.element("originatorInfo")
    infos = _parse_recipient_infos(reader.element("recipientInfos"))
    cek = _content_key(infos, keys, legacy_sha1)
    eci_length = reader.header(der.SEQUENCE, "authEncryptedContentInfo")
    reader.element("contentType").as_oid()
    algorithm_id = reader.element("contentEncryptionAlgorithm").children()
    algorithm_oid = algorithm_id[0].as_oid()
    if algorithm_oid not in _CEK_SIZES:
        raise UnsupportedCms(f"content encryption {algorithm_oid} (only AES-GCM)")
    if _CEK_SIZES[algorithm_oid] != len(cek):
        raise DecryptionFailed
    if len(algorithm_id) != 2:
        raise MalformedCms("GCMParameters missing")
    gcm = algorithm_id[1].children()
    nonce = gcm[0].expect(der.OCTET_STRING, "aes-nonce").content
    tag_size = gcm[1].as_int() if len(gcm) > 1 else 12
    if len(nonce) != NONCE_SIZE or tag_size not in range(12, 17):
        raise UnsupportedCms("GCM with a nonce other than 12 bytes or a tag shorter than 12")
    decryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce, min_tag_length=tag_size)).decryptor()
    tag = reader.peek_tag()
    if tag == 0x80:
        yield from (decryptor.update(piece) for piece in reader.pieces(reader.header(0x80, "encryptedContent")))
    elif tag == 0xA0:
        outer = reader.header(0xA0, "encryptedContent")
        consumed_start = reader.position
        while True:
            if outer == der.INDEFINITE:
                if reader.peek_tag() == 0x00:
                    reader.end_of_contents("encryptedContent")
                    break
            elif reader.position - consumed_start >= outer:
                break
            for piece in reader.pieces(reader.header(der.OCTET_STRING, "encryptedContent piece")):
                yield decryptor.update(piece)
    if eci_length == der.INDEFINITE:
        reader.end_of_contents("authEncryptedContentInfo")
    if reader.peek_tag() == 0xA1:
        # The tag would have to cover authAttrs, which follow the content: not streamable, and nobody sends them.
        raise UnsupportedCms("authenticated attributes (authAttrs) are not accepted")
    mac = reader.element("mac").expect(der.OCTET_STRING, "mac").content
    if len(mac) != tag_size:
        raise MalformedCms("mac length differs from aes-ICVlen")
    if reader.peek_tag() == 0xA2:
        reader.element("unauthAttrs")
    for closing in reversed(closings):
        if closing == der.INDEFINITE:
            reader.end_of_contents("ContentInfo")
    if not reader.at_end():
        raise MalformedCms("trailing bytes after the ContentInfo")
    try:
        yield decryptor.finalize_with_tag(mac)
    except InvalidTag:
        raise DecryptionFailed from None


def decrypt(data: bytes, keys: Sequence[DecryptionKey], *, legacy_sha1: bool = False) -> bytes:
    """``decrypt_stream`` into memory (checked before anything is returned)."""
    return b"".join(decrypt_stream((data,), keys, legacy_sha1=legacy_sha1))
