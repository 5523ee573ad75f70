"""WS-Security payload encryption for AS4 (SwA): AES-GCM attachments, RSA-OAEP (1.15) or X25519/ECDH-ES (2.0)."""

# Sans-I/O: pure functions over lxml trees, bytes and chunk iterators. One random content-encryption key
# (CEK) per message encrypts every attachment; an ``xenc:EncryptedKey`` carries it to the recipient, either
# RSA-OAEP encrypted (eDelivery AS4 1.15) or wrapped with ``kw-aes128`` under a key agreed by ephemeral-static
# X25519 or ECDH-ES and HKDF (eDelivery AS4 2.0). Each attachment gets an ``xenc:EncryptedData`` of type
# Attachment-Content-Only whose ``CipherReference`` names the MIME part; the part itself becomes
# IV ‖ ciphertext ‖ tag (XML Encryption 1.1 §5.2.4), produced and consumed as a stream.
#
# Streaming and the GCM tag: a decrypting stream yields plaintext before the tag, which ends the part, has
# been read. The tag is checked when the stream is exhausted and a mismatch raises EBMS:0102 there, so a
# consumer must treat the bytes as untrusted until iteration has finished without an exception (write them to
# a temporary sink, commit only afterwards). The signature check, which hashes every plaintext byte, does
# exactly that.

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from lxml import etree

from accesspoint.core.envelope import ParsedEnvelope
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import ReceivedMessage, ReceivedPart
from accesspoint.core.namespaces import NS
from accesspoint.core.xml import holds_elements, string_value
from accesspoint.security.algorithms import (
    DataEncryption,
    DigestAlgorithm,
    EncryptedDataType,
    HkdfPrf,
    KeyAgreement,
    KeyDerivation,
    KeyTransport,
    KeyWrap,
    MaskGeneration,
    NamedCurve,
    TokenType,
    Transform,
)
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import Profile, SecurityPolicy
from accesspoint.security.signing import AttachmentSource, resolve_token, security_header
from accesspoint.security.tokens import add_security_token

XENC = f"{{{NS.XENC}}}"
XENC11 = f"{{{NS.XENC11}}}"
DS = f"{{{NS.DS}}}"
DSIG11 = f"{{{NS.DSIG11}}}"
DSIG_MORE = f"{{{NS.DSIG_MORE}}}"
WSSE = f"{{{NS.WSSE}}}"
WSSE11 = f"{{{NS.WSSE11}}}"

# AES-GCM as XML Encryption 1.1 §5.2.4 fixes it: a 96-bit IV before the ciphertext, a 128-bit tag after it.
IV_SIZE = 12
TAG_SIZE = 16
# The ciphertext part's MIME type: SwA 1.1 §5.5.2 replaces the part's content, its type says nothing more.
CIPHERTEXT_CONTENT_TYPE = "application/octet-stream"
SALT_SIZE = 32
# A ciphertext part that arrives in one piece up to this size is decrypted in one AEAD call (AESGCM takes
# at most 2**31 - 1 bytes); larger or chunked parts stream.
ONE_SHOT_MAX = 16 * 1024 * 1024

_CEK_SIZES: dict[str, int] = {
    DataEncryption.AES128_GCM: 16,
    DataEncryption.AES192_GCM: 24,
    DataEncryption.AES256_GCM: 32,
}
_KEK_SIZES: dict[str, int] = {KeyWrap.AES128: 16, KeyWrap.AES192: 24, KeyWrap.AES256: 32}
_OAEP_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    DigestAlgorithm.SHA256: hashes.SHA256,
    DigestAlgorithm.SHA384: hashes.SHA384,
    DigestAlgorithm.SHA512: hashes.SHA512,
    DigestAlgorithm.SHA1: hashes.SHA1,
}
_MGF_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    MaskGeneration.MGF1_SHA1: hashes.SHA1,
    MaskGeneration.MGF1_SHA256: hashes.SHA256,
    MaskGeneration.MGF1_SHA384: hashes.SHA384,
    MaskGeneration.MGF1_SHA512: hashes.SHA512,
}
_PRF_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    HkdfPrf.HMAC_SHA256: hashes.SHA256,
    HkdfPrf.HMAC_SHA384: hashes.SHA384,
    HkdfPrf.HMAC_SHA512: hashes.SHA512,
}
_CURVES: dict[str, ec.EllipticCurve] = {
    NamedCurve.SECP256R1: ec.SECP256R1(),
    NamedCurve.SECP384R1: ec.SECP384R1(),
    NamedCurve.SECP521R1: ec.SECP521R1(),
    NamedCurve.BRAINPOOLP256R1: ec.BrainpoolP256R1(),
}
_CID_URL_SAFE = "!$&'()*+,;=:@/"


class DecryptionKeyMissing(Exception):
    """None of our decryption keys is the one the message's EncryptedKey addresses (not an ebMS error)."""

    # The caller decides: answer EBMS:0102 to the partner, or (CLI) report the listed parts as unchecked.

    def __init__(self, detail: str, content_ids: frozenset[str]) -> None:
        self.detail = detail
        self.content_ids = content_ids
        super().__init__(detail)


def _failed(log_detail: str) -> EbmsError:
    # Generic on the wire (no padding or tag oracle for the partner), precise in the log.
    return EbmsError(ErrorCode.FAILED_DECRYPTION, "the message could not be decrypted", log_detail=log_detail)


def _refused(detail: str) -> EbmsError:
    return EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, detail)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(element: etree._Element | None, what: str) -> bytes:
    """The bytes of a base64 element (its string-value; empty when absent); an element inside is not base64."""
    if element is not None and holds_elements(element):
        raise _failed(f"{what} is not base64")
    try:
        return base64.b64decode("".join(("" if element is None else string_value(element)).split()), validate=True)
    except (binascii.Error, ValueError):
        raise _failed(f"{what} is not base64") from None


# ------------------------------------------------------------------------------------- streaming AES-GCM


def encrypt_stream(key: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """AES-GCM over a chunk stream: a fresh random IV, then the ciphertext chunks, then the 16-byte tag."""
    iv = os.urandom(IV_SIZE)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    yield iv
    for chunk in chunks:
        if chunk:
            yield encryptor.update(chunk)
    yield encryptor.finalize() + encryptor.tag


def decrypt_stream(key: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decrypt IV ‖ ciphertext ‖ tag chunk by chunk; EBMS:0102 at the end when the tag does not match."""
    # Plaintext comes out before the tag is checked: trust it only once the iterator finished without error.
    iterator = iter(chunks)
    head = b""
    for chunk in iterator:
        head += chunk
        if len(head) >= IV_SIZE:
            break
    if len(head) < IV_SIZE:
        raise _failed("ciphertext part shorter than the GCM IV")
    following = next(iterator, None)
    if following is None and len(head) <= ONE_SHOT_MAX:
        # The whole part in one piece (a part held in memory): one AEAD call, which costs a fifth of setting up
        # a streaming decryptor, and releases no plaintext before the tag has been checked.
        if len(head) < IV_SIZE + TAG_SIZE:
            raise _failed("ciphertext part shorter than the GCM IV and tag")
        try:
            plain = AESGCM(key).decrypt(head[:IV_SIZE], memoryview(head)[IV_SIZE:], None)
        except InvalidTag:
            raise _failed("AES-GCM authentication tag mismatch (ciphertext or tag altered, or wrong key)") from None
        if plain:
            yield plain
        return
    decryptor = Cipher(algorithms.AES(key), modes.GCM(head[:IV_SIZE])).decryptor()
    # The last TAG_SIZE bytes seen so far may be the tag: hold them back until the next chunk arrives.
    # Memoryviews spare a copy of large chunks (a part read from its sink in one piece, for instance).
    pending = b""
    first: tuple[bytes | memoryview, ...] = (memoryview(head)[IV_SIZE:],) + (() if following is None else (following,))
    rest: Iterable[bytes | memoryview] = itertools.chain(first, iterator)
    for piece in rest:
        if len(piece) >= TAG_SIZE:
            if pending:
                yield decryptor.update(pending)
            if len(piece) > TAG_SIZE:
                yield decryptor.update(memoryview(piece)[:-TAG_SIZE])
            pending = bytes(piece[-TAG_SIZE:])
        elif piece:
            pending += bytes(piece)
            if len(pending) > TAG_SIZE:
                yield decryptor.update(pending[:-TAG_SIZE])
                pending = pending[-TAG_SIZE:]
    if len(pending) < TAG_SIZE:
        raise _failed("ciphertext part shorter than the GCM IV and tag")
    try:
        final = decryptor.finalize_with_tag(pending)
    except InvalidTag:
        raise _failed("AES-GCM authentication tag mismatch (ciphertext or tag altered, or wrong key)") from None
    if final:
        yield final


# ------------------------------------------------------------------------------------- key derivation


def hkdf_derive(shared_secret: bytes, prf: str, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF (RFC 5869) over the agreed secret, as xmldsig-more#hkdf parameterises it."""
    return HKDF(algorithm=_PRF_DIGESTS[prf](), length=length, salt=salt or None, info=info).derive(shared_secret)


def _agree(private_key: object, public_key: object) -> bytes:
    """The raw shared secret Z: X25519, or the ECDH x-coordinate (ECDH-ES)."""
    if isinstance(private_key, x25519.X25519PrivateKey) and isinstance(public_key, x25519.X25519PublicKey):
        return private_key.exchange(public_key)
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(public_key, ec.EllipticCurvePublicKey):
        if private_key.curve.name != public_key.curve.name:
            raise _failed("originator key is on another curve than the recipient key")
        return private_key.exchange(ec.ECDH(), public_key)
    raise _failed("originator key type does not match the recipient key")


# ------------------------------------------------------------------------------------------ encrypting


def _cid_url(content_id: str) -> str:
    # RFC 2392: a cid: URL percent-encodes what a URL may not carry; the core writes PartInfo hrefs alike.
    return f"cid:{quote(content_id, safe=_CID_URL_SAFE)}"


def _rsa_key_transport(
    encrypted_key: etree._Element,
    security: etree._Element,
    cek: bytes,
    recipient: x509.Certificate,
    policy: SecurityPolicy,
    new_id: Callable[[], str],
) -> None:
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("1.15 key transport needs an RSA recipient certificate")
    method = etree.SubElement(encrypted_key, f"{XENC}EncryptionMethod")
    method.set("Algorithm", policy.key_transport.value)
    if policy.key_transport is KeyTransport.RSA_OAEP_MGF1P:
        # Only when a legacy policy sends it: the URI fixes MGF1-SHA1, the digest is SHA-1 by default.
        digest_uri, mgf_uri = DigestAlgorithm.SHA1, MaskGeneration.MGF1_SHA1
        etree.SubElement(method, f"{DS}DigestMethod", nsmap={"ds": NS.DS.value}).set("Algorithm", digest_uri)
    else:
        # eDelivery AS4 1.15 §1.4.2.6: xmlenc11 rsa-oaep with SHA-256 and MGF1-SHA256, both stated explicitly.
        digest_uri, mgf_uri = DigestAlgorithm.SHA256, MaskGeneration.MGF1_SHA256
        etree.SubElement(method, f"{DS}DigestMethod", nsmap={"ds": NS.DS.value}).set("Algorithm", digest_uri)
        etree.SubElement(method, f"{XENC11}MGF", nsmap={"xenc11": NS.XENC11.value}).set("Algorithm", mgf_uri)
    key_info = etree.SubElement(encrypted_key, f"{DS}KeyInfo", nsmap={"ds": NS.DS.value})
    key_info.append(add_security_token(security, recipient, (), policy.token_reference, new_id()))
    oaep = padding.OAEP(mgf=padding.MGF1(_MGF_DIGESTS[mgf_uri]()), algorithm=_OAEP_DIGESTS[digest_uri](), label=None)
    cipher_data = etree.SubElement(encrypted_key, f"{XENC}CipherData")
    etree.SubElement(cipher_data, f"{XENC}CipherValue").text = _b64(public_key.encrypt(cek, oaep))


def _originator_key_info(
    parent: etree._Element, ephemeral: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
) -> None:
    originator = etree.SubElement(parent, f"{XENC}OriginatorKeyInfo")
    public = ephemeral.public_key()
    if isinstance(public, x25519.X25519PublicKey):
        # eDelivery AS4 2.0: the ephemeral X25519 key as DER SubjectPublicKeyInfo (OID 1.3.101.110).
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        etree.SubElement(originator, f"{DSIG11}DEREncodedKeyValue", nsmap={"dsig11": NS.DSIG11.value}).text = _b64(der)
        return
    curve_uri = next(uri for uri, curve in _CURVES.items() if curve.name == public.curve.name)
    # XML Signature 1.1 §4.5.2.3: dsig11:ECKeyValue is a ds:KeyValue child (as in XML Encryption 1.1's example).
    wrapper = etree.SubElement(originator, f"{DS}KeyValue")
    key_value = etree.SubElement(wrapper, f"{DSIG11}ECKeyValue", nsmap={"dsig11": NS.DSIG11.value})
    etree.SubElement(key_value, f"{DSIG11}NamedCurve").set("URI", curve_uri)
    point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    etree.SubElement(key_value, f"{DSIG11}PublicKey").text = _b64(point)


# The same parameters as _rsa_key_transport on purpose: encrypt_attachments picks one of the two per profile.
def _key_agreement(
    encrypted_key: etree._Element,
    security: etree._Element,
    cek: bytes,
    recipient: x509.Certificate,
    policy: SecurityPolicy,
    new_id: Callable[[], str],
) -> None:
    public_key = recipient.public_key()
    ephemeral: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
    if policy.key_agreement is KeyAgreement.X25519:
        if not isinstance(public_key, x25519.X25519PublicKey):
            raise ValueError("X25519 key agreement needs an X25519 recipient certificate")
        ephemeral = x25519.X25519PrivateKey.generate()
    else:
        curve = _CURVES[policy.key_agreement_curve or ""]
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != curve.name:
            raise ValueError(f"ECDH-ES needs a recipient certificate on {curve.name}")
        ephemeral = ec.generate_private_key(curve)
    kek_size = _KEK_SIZES[policy.key_wrap]
    salt = os.urandom(SALT_SIZE)
    # Info stays empty: peers disagree on its encoding (base64 in RFC 9231bis, hex in Santuario's javadoc);
    # the empty string reads the same in both, and HKDF treats it as no info at all.
    info = b""
    kek = hkdf_derive(_agree(ephemeral, public_key), HkdfPrf.HMAC_SHA256, salt, info, kek_size)

    etree.SubElement(encrypted_key, f"{XENC}EncryptionMethod").set("Algorithm", policy.key_wrap.value)
    key_info = etree.SubElement(encrypted_key, f"{DS}KeyInfo", nsmap={"ds": NS.DS.value})
    agreement = etree.SubElement(key_info, f"{XENC}AgreementMethod")
    agreement.set("Algorithm", policy.key_agreement.value)
    derivation = etree.SubElement(agreement, f"{XENC11}KeyDerivationMethod", nsmap={"xenc11": NS.XENC11.value})
    derivation.set("Algorithm", KeyDerivation.HKDF.value)
    params = etree.SubElement(derivation, f"{DSIG_MORE}HKDFParams", nsmap={"dsig-more": NS.DSIG_MORE.value})
    etree.SubElement(params, f"{DSIG_MORE}PRF").set("Algorithm", HkdfPrf.HMAC_SHA256.value)
    etree.SubElement(params, f"{DSIG_MORE}Salt").text = _b64(salt)
    etree.SubElement(params, f"{DSIG_MORE}Info").text = _b64(info)
    # KeyLength in bytes, as eDelivery AS4 2.0 (16 for kw-aes128) and Santuario's HKDFParams state it.
    etree.SubElement(params, f"{DSIG_MORE}KeyLength").text = str(kek_size)
    _originator_key_info(agreement, ephemeral)
    recipient_info = etree.SubElement(agreement, f"{XENC}RecipientKeyInfo")
    recipient_info.append(add_security_token(security, recipient, (), policy.token_reference, new_id()))
    cipher_data = etree.SubElement(encrypted_key, f"{XENC}CipherData")
    etree.SubElement(cipher_data, f"{XENC}CipherValue").text = _b64(aes_key_wrap(kek, cek))


def _encrypted_data(attachment: AttachmentSource, data_id: str, key_id: str, policy: SecurityPolicy) -> etree._Element:
    encrypted_data = etree.Element(f"{XENC}EncryptedData", nsmap={"xenc": NS.XENC.value})
    encrypted_data.set("Id", data_id)
    encrypted_data.set("Type", EncryptedDataType.ATTACHMENT_CONTENT_ONLY.value)
    encrypted_data.set("MimeType", attachment.content_type)
    etree.SubElement(encrypted_data, f"{XENC}EncryptionMethod").set("Algorithm", policy.data_encryption.value)
    key_info = etree.SubElement(encrypted_data, f"{DS}KeyInfo", nsmap={"ds": NS.DS.value})
    token = etree.SubElement(
        key_info, f"{WSSE}SecurityTokenReference", nsmap={"wsse": NS.WSSE.value, "wsse11": NS.WSSE11.value}
    )
    token.set(f"{WSSE11}TokenType", TokenType.ENCRYPTED_KEY.value)
    etree.SubElement(token, f"{WSSE}Reference").set("URI", f"#{key_id}")
    cipher_data = etree.SubElement(encrypted_data, f"{XENC}CipherData")
    reference = etree.SubElement(cipher_data, f"{XENC}CipherReference")
    reference.set("URI", _cid_url(attachment.content_id))
    transforms = etree.SubElement(reference, f"{XENC}Transforms")
    etree.SubElement(transforms, f"{DS}Transform").set("Algorithm", Transform.ATTACHMENT_CIPHERTEXT.value)
    return encrypted_data


def _ciphertext_source(attachment: AttachmentSource, cek: bytes) -> AttachmentSource:
    # Each opening draws a fresh IV: re-reading a source can never reuse an IV under the message's one key.
    return AttachmentSource(
        attachment.content_id, CIPHERTEXT_CONTENT_TYPE, lambda: encrypt_stream(cek, attachment.open())
    )


def encrypt_attachments(
    envelope: etree._Element,
    attachments: Sequence[AttachmentSource],
    recipient: x509.Certificate,
    policy: SecurityPolicy,
    *,
    new_id: Callable[[], str],
) -> tuple[AttachmentSource, ...]:
    """Encrypt every attachment for ``recipient`` into wsse:Security; return the lazy ciphertext parts."""
    # The elements go before ds:Signature when the envelope is already signed (AS4: compress, sign, encrypt),
    # so a receiver processing the header in order decrypts first. Ciphertext is computed chunk by chunk
    # whenever a returned source is opened.
    if not attachments:
        return ()
    security = security_header(envelope)
    assert security is not None
    cek = os.urandom(_CEK_SIZES[policy.data_encryption])
    key_id = new_id()
    encrypted_key = etree.Element(f"{XENC}EncryptedKey", nsmap={"xenc": NS.XENC.value})
    encrypted_key.set("Id", key_id)
    if policy.profile is Profile.EDELIVERY_1_15:
        _rsa_key_transport(encrypted_key, security, cek, recipient, policy, new_id)
    else:
        _key_agreement(encrypted_key, security, cek, recipient, policy, new_id)
    reference_list = etree.SubElement(encrypted_key, f"{XENC}ReferenceList")
    elements = [encrypted_key]
    for attachment in attachments:
        data_id = new_id()
        etree.SubElement(reference_list, f"{XENC}DataReference").set("URI", f"#{data_id}")
        elements.append(_encrypted_data(attachment, data_id, key_id, policy))
    signature = security.find(f"{DS}Signature")
    for element in elements:
        if signature is None:
            security.append(element)
        else:
            signature.addprevious(element)
    return tuple(_ciphertext_source(attachment, cek) for attachment in attachments)


# ------------------------------------------------------------------------------------------ decrypting


@dataclass(frozen=True, slots=True)
class _Target:
    """One EncryptedData of the header: the part it names, its algorithm, type and the EncryptedKey."""

    content_id: str
    algorithm: str
    mime_type: str
    encrypted_key: etree._Element


def _algorithm(element: etree._Element | None) -> str:
    return "" if element is None else element.get("Algorithm", "")


def _encrypted_data_elements(security: etree._Element | None) -> list[etree._Element]:
    return [] if security is None else security.findall(f"{XENC}EncryptedData")


def _cipher_content_id(encrypted_data: etree._Element) -> str | None:
    reference = encrypted_data.find(f"{XENC}CipherData/{XENC}CipherReference")
    uri = None if reference is None else reference.get("URI", "")
    return unquote(uri[4:]) if uri is not None and uri.startswith("cid:") else None


def encrypted_content_ids(parsed: ParsedEnvelope) -> frozenset[str]:
    """The Content-IDs of the attachments the message's wsse:Security header declares encrypted."""
    found = (_cipher_content_id(e) for e in _encrypted_data_elements(parsed.security_header))
    return frozenset(cid for cid in found if cid is not None)


def _check_data_algorithms(encrypted_data: etree._Element, policy: SecurityPolicy) -> str:
    algorithm = _algorithm(encrypted_data.find(f"{XENC}EncryptionMethod"))
    if algorithm not in _CEK_SIZES or not policy.allows(algorithm):
        raise _refused(f"data encryption {algorithm[:100]!r} is not allowed")
    kind = encrypted_data.get("Type", "")
    if kind != EncryptedDataType.ATTACHMENT_CONTENT_ONLY:
        raise _refused(f"EncryptedData Type {kind[:100]!r} is not supported (only Attachment-Content-Only)")
    reference = encrypted_data.find(f"{XENC}CipherData/{XENC}CipherReference")
    if reference is None or not reference.get("URI", "").startswith("cid:"):
        raise _refused("EncryptedData does not reference an attachment (cid:)")
    transforms = [_algorithm(t) for t in reference.iterfind(f"{XENC}Transforms/{DS}Transform")]
    if transforms != [Transform.ATTACHMENT_CIPHERTEXT] or not policy.allows(transforms[0]):
        raise _refused("CipherReference must use exactly the Attachment-Ciphertext-Transform")
    return algorithm


def check_key_algorithms(encrypted_key: etree._Element, policy: SecurityPolicy) -> None:
    """EBMS:0103 unless every algorithm of an EncryptedKey is allowed (checked before any crypto)."""
    method = encrypted_key.find(f"{XENC}EncryptionMethod")
    algorithm = _algorithm(method)
    if algorithm in (KeyTransport.RSA_OAEP_XMLENC11, KeyTransport.RSA_OAEP_MGF1P):
        assert method is not None
        if not policy.allows(algorithm):
            raise _refused(f"key transport {algorithm!r} is not allowed")
        digest, mgf = _oaep_parameters(method)
        # rsa-oaep-mgf1p fixes MGF1-SHA1 and defaults to SHA-1: listing it in the legacy list admits both.
        legacy = algorithm == KeyTransport.RSA_OAEP_MGF1P
        if digest not in _OAEP_DIGESTS or not (policy.allows(digest) or (legacy and digest == DigestAlgorithm.SHA1)):
            raise _refused(f"RSA-OAEP digest {digest[:100]!r} is not allowed")
        if mgf not in _MGF_DIGESTS or not (policy.allows(mgf) or legacy):
            raise _refused(f"RSA-OAEP mask generation {mgf[:100]!r} is not allowed")
        return
    if algorithm not in _KEK_SIZES or not policy.allows(algorithm):
        raise _refused(f"key encryption {algorithm[:100]!r} is not allowed")
    agreement = encrypted_key.find(f"{DS}KeyInfo/{XENC}AgreementMethod")
    if agreement is None:
        raise _refused("key wrap without xenc:AgreementMethod (pre-shared keys) is not supported")
    agreement_uri = _algorithm(agreement)
    if agreement_uri not in (KeyAgreement.X25519, KeyAgreement.ECDH_ES) or not policy.allows(agreement_uri):
        raise _refused(f"key agreement {agreement_uri[:100]!r} is not allowed")
    derivation = _algorithm(agreement.find(f"{XENC11}KeyDerivationMethod"))
    if derivation != KeyDerivation.HKDF or not policy.allows(derivation):
        raise _refused(f"key derivation {derivation[:100]!r} is not allowed")
    prf = _algorithm(_hkdf_params(agreement).get("PRF"))
    if prf not in _PRF_DIGESTS or not policy.allows(prf):
        raise _refused(f"HKDF PRF {prf[:100]!r} is not allowed")


def _oaep_parameters(method: etree._Element) -> tuple[str, str]:
    """OAEP digest and MGF URIs, with XML Encryption's defaults (SHA-1) where the elements are absent."""
    digest = _algorithm(method.find(f"{DS}DigestMethod")) or DigestAlgorithm.SHA1.value
    if _algorithm(method) == KeyTransport.RSA_OAEP_MGF1P:
        return digest, MaskGeneration.MGF1_SHA1.value
    return digest, _algorithm(method.find(f"{XENC11}MGF")) or MaskGeneration.MGF1_SHA1.value


def _hkdf_params(agreement: etree._Element) -> dict[str, etree._Element]:
    """The HKDFParams children by local name, the first of each (one pass instead of a search per name)."""
    # By local name: Santuario writes PRF under dsig-more but reads it under xenc11.
    params = agreement.find(f"{XENC11}KeyDerivationMethod/{DSIG_MORE}HKDFParams")
    found: dict[str, etree._Element] = {}
    for child in () if params is None else params:
        if isinstance(child.tag, str):
            found.setdefault(child.tag.rpartition("}")[2], child)
    return found


def _resolve_recipient(
    token_reference: etree._Element | None,
    ids: Mapping[str, etree._Element],
    keys: Sequence[KeyPair],
    wanted: Callable[[KeyPair], bool],
) -> list[KeyPair]:
    """The key pairs an STR may address: exactly the referenced one, or every fitting key when there is none."""
    if token_reference is None:
        return [k for k in keys if wanted(k)]
    try:
        resolved = resolve_token(token_reference, ids, [k.certificate for k in keys])
    except EbmsError as exc:
        if _names_outside_message(token_reference):
            return []
        raise _failed(f"unresolvable recipient token reference: {exc.log_detail}") from None
    # Certificate equality is DER equality, without encoding either side again.
    return [k for k in keys if k.certificate == resolved.certificate and wanted(k)]


def _names_outside_message(token_reference: etree._Element) -> bool:
    """True when an STR names a certificate by SKI or issuer/serial: unresolvable means not one of ours."""
    return (
        token_reference.find(f"{WSSE}KeyIdentifier") is not None
        or token_reference.find(f"{DS}X509Data/{DS}X509IssuerSerial") is not None
    )


def _describe(token_reference: etree._Element | None) -> str:
    if token_reference is None:
        return "no recipient reference"
    if token_reference.find(f"{WSSE}KeyIdentifier") is not None:
        return "recipient referenced by SKI"
    if token_reference.find(f"{DS}X509Data") is not None:
        return "recipient referenced by issuer and serial"
    return "recipient referenced by BinarySecurityToken"


def _unwrap_rsa(
    encrypted_key: etree._Element, ids: Mapping[str, etree._Element], keys: Sequence[KeyPair]
) -> bytes | None:
    method = encrypted_key.find(f"{XENC}EncryptionMethod")
    assert method is not None
    token_reference = encrypted_key.find(f"{DS}KeyInfo/{WSSE}SecurityTokenReference")
    candidates = _resolve_recipient(token_reference, ids, keys, lambda k: isinstance(k.private_key, rsa.RSAPrivateKey))
    if not candidates:
        return None
    digest, mgf = _oaep_parameters(method)
    oaep = padding.OAEP(mgf=padding.MGF1(_MGF_DIGESTS[mgf]()), algorithm=_OAEP_DIGESTS[digest](), label=None)
    wrapped = _unb64(encrypted_key.find(f"{XENC}CipherData/{XENC}CipherValue"), "EncryptedKey CipherValue")
    for candidate in candidates:
        private_key = candidate.private_key
        assert isinstance(private_key, rsa.RSAPrivateKey)
        try:
            return private_key.decrypt(wrapped, oaep)
        except ValueError:
            continue
    raise _failed("RSA-OAEP decryption of the content key failed")


def _originator_key(agreement: etree._Element) -> object:
    originator = agreement.find(f"{XENC}OriginatorKeyInfo")
    if originator is None:
        raise _failed("AgreementMethod has no OriginatorKeyInfo")
    der = originator.find(f"{DSIG11}DEREncodedKeyValue")
    try:
        if der is not None:
            return serialization.load_der_public_key(_unb64(der, "DEREncodedKeyValue"))
        # Inside ds:KeyValue as XML Signature 1.1 has it, or bare as some profile texts show it.
        key_value = originator.find(f"{DS}KeyValue/{DSIG11}ECKeyValue")
        key_value = originator.find(f"{DSIG11}ECKeyValue") if key_value is None else key_value
        if key_value is not None:
            curve_uri = key_value.find(f"{DSIG11}NamedCurve")
            curve = _CURVES.get("" if curve_uri is None else curve_uri.get("URI", ""))
            if curve is None:
                raise _failed("ECKeyValue names an unsupported curve")
            point = _unb64(key_value.find(f"{DSIG11}PublicKey"), "ECKeyValue PublicKey")
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise _failed("unreadable originator public key") from None
    raise _failed("OriginatorKeyInfo holds neither DEREncodedKeyValue nor ECKeyValue")


def _info_readings(text: str | None) -> list[bytes]:
    """Every reading of an HKDF Info value: base64 (RFC 9231bis) and hex (what Santuario decodes)."""
    compact = "".join((text or "").split())
    readings = []
    with contextlib.suppress(binascii.Error, ValueError):
        readings.append(base64.b64decode(compact, validate=True))
    with contextlib.suppress(ValueError):
        readings.append(bytes.fromhex(compact))
    if not readings:
        raise _failed("HKDF Info is neither base64 nor hex")
    return list(dict.fromkeys(readings))


def _hkdf_parameters(agreement: etree._Element, kek_size: int) -> tuple[str, bytes, list[bytes]]:
    params = _hkdf_params(agreement)
    prf = _algorithm(params.get("PRF"))
    salt_element, info_element = params.get("Salt"), params.get("Info")
    salt = b"" if salt_element is None else _unb64(salt_element, "HKDF Salt")
    infos = [b""] if info_element is None else _info_readings(string_value(info_element))
    length_element = params.get("KeyLength")
    length_text = "" if length_element is None else string_value(length_element).strip()
    # Bytes per the profile; a length in bits for the same key is read the same (HKDF output is a prefix).
    if length_text and length_text not in (str(kek_size), str(8 * kek_size)):
        raise _failed(f"HKDF KeyLength {length_text[:20]!r} does not fit the key wrap algorithm")
    return prf, salt, infos


def _unwrap_agreed(
    encrypted_key: etree._Element, ids: Mapping[str, etree._Element], keys: Sequence[KeyPair]
) -> bytes | None:
    agreement = encrypted_key.find(f"{DS}KeyInfo/{XENC}AgreementMethod")
    assert agreement is not None
    x25519_wanted = _algorithm(agreement) == KeyAgreement.X25519
    key_type = x25519.X25519PrivateKey if x25519_wanted else ec.EllipticCurvePrivateKey
    token_reference = agreement.find(f"{XENC}RecipientKeyInfo/{WSSE}SecurityTokenReference")
    candidates = _resolve_recipient(token_reference, ids, keys, lambda k: isinstance(k.private_key, key_type))
    if not candidates:
        return None
    kek_size = _KEK_SIZES[_algorithm(encrypted_key.find(f"{XENC}EncryptionMethod"))]
    prf, salt, infos = _hkdf_parameters(agreement, kek_size)
    originator = _originator_key(agreement)
    wrapped = _unb64(encrypted_key.find(f"{XENC}CipherData/{XENC}CipherValue"), "EncryptedKey CipherValue")
    # Trying each key and each reading of Info is safe: the key wrap's integrity check accepts only the right one.
    for candidate, info in itertools.product(candidates, infos):
        kek = hkdf_derive(_agree(candidate.private_key, originator), prf, salt, info, kek_size)
        try:
            return aes_key_unwrap(kek, wrapped)
        except (InvalidUnwrap, ValueError):
            continue
    raise _failed("AES key unwrap of the content key failed (integrity check)")


def unwrap_key(
    encrypted_key: etree._Element,
    ids: Mapping[str, etree._Element],
    keys: Sequence[KeyPair],
    policy: SecurityPolicy,
) -> bytes:
    """The content key an xenc:EncryptedKey carries, unwrapped with whichever of ``keys`` it addresses."""
    # EBMS:0103 for a disallowed algorithm (before any crypto), EBMS:0102 when the key does not unwrap,
    # DecryptionKeyMissing when it addresses none of ``keys``.
    check_key_algorithms(encrypted_key, policy)
    return _unwrap_checked(encrypted_key, ids, keys)


def _unwrap_checked(encrypted_key: etree._Element, ids: Mapping[str, etree._Element], keys: Sequence[KeyPair]) -> bytes:
    """``unwrap_key`` for an EncryptedKey whose algorithms ``check_key_algorithms`` has passed already."""
    agreed = _algorithm(encrypted_key.find(f"{XENC}EncryptionMethod")) in _KEK_SIZES
    cek = _unwrap_agreed(encrypted_key, ids, keys) if agreed else _unwrap_rsa(encrypted_key, ids, keys)
    if cek is None:
        # Looked up only to say which key was wanted: a path search on every message would cost for nothing.
        if agreed:
            path = f"{DS}KeyInfo/{XENC}AgreementMethod/{XENC}RecipientKeyInfo/{WSSE}SecurityTokenReference"
        else:
            path = f"{DS}KeyInfo/{WSSE}SecurityTokenReference"
        reference = encrypted_key.find(path)
        raise DecryptionKeyMissing(f"no decryption key matches the EncryptedKey ({_describe(reference)})", frozenset())
    return cek


def _encrypted_key_for(
    encrypted_data: etree._Element, security: etree._Element, ids: Mapping[str, etree._Element]
) -> etree._Element:
    """The EncryptedKey of an EncryptedData: named by its KeyInfo, else the one whose ReferenceList lists it."""
    inline = encrypted_data.find(f"{DS}KeyInfo/{XENC}EncryptedKey")
    if inline is not None:
        return inline
    reference = encrypted_data.find(f"{DS}KeyInfo/{WSSE}SecurityTokenReference/{WSSE}Reference")
    if reference is not None:
        uri = reference.get("URI", "")
        target = ids.get(uri[1:]) if uri.startswith("#") else None
        if target is None or target.tag != f"{XENC}EncryptedKey" or target.getparent() is not security:
            raise _failed(f"EncryptedData key reference {uri[:80]!r} names no EncryptedKey in wsse:Security")
        return target
    data_id = encrypted_data.get("Id")
    for encrypted_key in security.iterfind(f"{XENC}EncryptedKey"):
        uris = {r.get("URI") for r in encrypted_key.iterfind(f"{XENC}ReferenceList/{XENC}DataReference")}
        if data_id is not None and f"#{data_id}" in uris:
            return encrypted_key
    raise _failed("no EncryptedKey for an EncryptedData")


def _targets(parsed: ParsedEnvelope, policy: SecurityPolicy) -> list[_Target]:
    """Every EncryptedData with its EncryptedKey, every algorithm checked against the policy."""
    security = parsed.security_header
    targets: list[_Target] = []
    seen: set[str] = set()
    for encrypted_data in _encrypted_data_elements(security):
        assert security is not None
        algorithm = _check_data_algorithms(encrypted_data, policy)
        content_id = _cipher_content_id(encrypted_data)
        assert content_id is not None
        if content_id in seen:
            raise _failed(f"two EncryptedData reference attachment {content_id!r}")
        seen.add(content_id)
        encrypted_key = _encrypted_key_for(encrypted_data, security, parsed.ids)
        check_key_algorithms(encrypted_key, policy)
        mime_type = encrypted_data.get("MimeType") or CIPHERTEXT_CONTENT_TYPE
        targets.append(_Target(content_id, algorithm, mime_type, encrypted_key))
    return targets


# A part's plaintext up to this size is kept once a reading of it has ended with the GCM tag verified: the
# signature check and the payload hash (and the MSH storing it) each read every attachment, and a small part
# then costs one decryption instead of one per reading. A larger part is kept in a spool when the caller gives
# one (the MSH: a temporary file), else decrypted again on each reading.
PLAINTEXT_KEPT_MAX = 256 * 1024


class PlaintextSpool(Protocol):
    """Where a large part's plaintext is kept once decrypted: written once, then read any number of times."""

    def write(self, data: bytes, /) -> object:
        """Take the next chunk."""
        ...

    def chunks(self) -> Iterable[bytes]:
        """Everything written, from the start (each call reads it anew)."""
        ...

    def discard(self) -> None:
        """Drop what was written (a reading that did not reach the verified end)."""
        ...


SpoolFactory = Callable[[], PlaintextSpool]


class _Plaintext:
    """One encrypted part as a re-openable plaintext stream, decrypted once where it can be kept (see above)."""

    __slots__ = ("cek", "kept", "open_part", "part", "spool", "spooled")

    def __init__(
        self,
        part: ReceivedPart,
        cek: bytes,
        open_part: Callable[[ReceivedPart], Iterable[bytes]],
        spool: SpoolFactory | None,
    ) -> None:
        self.part = part
        self.cek = cek
        self.open_part = open_part
        self.spool = spool
        self.kept: bytes | None = None
        self.spooled: PlaintextSpool | None = None

    def __call__(self) -> Iterable[bytes]:
        kept = self.kept
        if kept is not None:
            return (kept,) if kept else ()
        if self.spooled is not None:
            return self.spooled.chunks()
        return self._decrypt()

    def _decrypt(self) -> Iterator[bytes]:
        held: list[bytes] | None = []
        spooled: PlaintextSpool | None = None
        size = 0
        complete = False
        try:
            for chunk in decrypt_stream(self.cek, self.open_part(self.part)):
                size += len(chunk)
                if spooled is not None:
                    spooled.write(chunk)
                elif held is not None and size <= PLAINTEXT_KEPT_MAX:
                    held.append(chunk)
                elif held is not None:
                    if self.spool is not None:
                        spooled = self.spool()
                        for earlier in (*held, chunk):
                            spooled.write(earlier)
                    held = None
                yield chunk
            complete = True
        finally:
            if spooled is not None and not complete:
                spooled.discard()
        # Reached only when decrypt_stream ended normally, that is after the tag verified: only authenticated
        # plaintext is ever kept (a reader that stops early or meets EBMS:0102 leaves nothing behind).
        if held is not None:
            self.kept = held[0] if len(held) == 1 else b"".join(held)
        elif spooled is not None:
            self.spooled = spooled


def _plaintext_source(
    target: _Target,
    part: ReceivedPart,
    cek: bytes,
    open_part: Callable[[ReceivedPart], Iterable[bytes]],
    spool: SpoolFactory | None,
) -> AttachmentSource:
    return AttachmentSource(target.content_id, target.mime_type, _Plaintext(part, cek, open_part, spool))


def decrypt_attachments(
    received: ReceivedMessage,
    keys: Sequence[KeyPair],
    policy: SecurityPolicy,
    *,
    open_part: Callable[[ReceivedPart], Iterable[bytes]],
    spool: SpoolFactory | None = None,
) -> dict[str, AttachmentSource]:
    """The encrypted attachments as plaintext sources (original MIME type, re-openable, decrypted lazily).

    ``spool`` keeps a large part's plaintext after its first complete reading, so it is decrypted once.
    """
    # All algorithms are checked first (EBMS:0103), then every content key is unwrapped (EBMS:0102 on failure,
    # DecryptionKeyMissing when addressed to none of ``keys``). The returned streams raise EBMS:0102 at
    # their end when a part's GCM tag does not match: trust their bytes only once fully read.
    targets = _targets(received.parsed, policy)
    keys_by_element: dict[int, bytes] = {}
    for target in targets:
        element_key = id(target.encrypted_key)
        if element_key in keys_by_element:
            continue
        try:
            # _targets checked every EncryptedKey's algorithms against the policy already.
            cek = _unwrap_checked(target.encrypted_key, received.parsed.ids, keys)
        except DecryptionKeyMissing as exc:
            raise DecryptionKeyMissing(exc.detail, frozenset(t.content_id for t in targets)) from None
        keys_by_element[element_key] = cek
    sources: dict[str, AttachmentSource] = {}
    for target in targets:
        cek = keys_by_element[id(target.encrypted_key)]
        if len(cek) != _CEK_SIZES[target.algorithm]:
            raise _failed(f"content key of {len(cek)} bytes does not fit {target.algorithm}")
        part = received.attachment(target.content_id)
        if part is None:
            raise _failed(f"encrypted attachment {target.content_id!r} is not in the message")
        sources[target.content_id] = _plaintext_source(target, part, cek, open_part, spool)
    return sources
