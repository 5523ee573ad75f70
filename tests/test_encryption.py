"""Payload encryption: what we encrypt decrypts (here, and with plain cryptography), forgeries and wrong keys do not."""

from __future__ import annotations

import base64
import copy
import gzip
import io
import tracemalloc
from collections.abc import Callable, Iterable, Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from accesspoint.cli import load_message
from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.errors import EbmsError
from accesspoint.core.message import Attachment, ReceivedMessage, ReceivedPart, pack_message, read_message
from accesspoint.core.namespaces import NS
from accesspoint.core.xml import check_unique_ids, parse_xml
from accesspoint.security.algorithms import KeyAgreement, KeyTransport, NamedCurve
from accesspoint.security.encryption import (
    IV_SIZE,
    ONE_SHOT_MAX,
    TAG_SIZE,
    DecryptionKeyMissing,
    decrypt_attachments,
    decrypt_stream,
    encrypt_attachments,
    encrypt_stream,
    encrypted_content_ids,
    unwrap_key,
)
from accesspoint.security.keys import KeyPair, load_key_pair
from accesspoint.security.policy import SecurityPolicy, TokenReference
from accesspoint.security.signing import AttachmentSource, TokenCache, sign_envelope, verify_signature
from accesspoint.security.tokens import ResolvedToken, read_binary_security_token
from accesspoint.testing.pki import KeyType, issue, make_ca
from tests.conftest import interop_path
from tests.test_signing import _ids, _user_message

XENC = f"{{{NS.XENC}}}"
DS = f"{{{NS.DS}}}"
WSSE = f"{{{NS.WSSE}}}"
WSU_ID = f"{{{NS.WSU}}}Id"
GENERIC = "the message could not be decrypted"

# 33 attachments (past the 30 other stacks stop at), of the types AS4 meets, one empty and one of 300 KB.
PAYLOADS: dict[str, tuple[str, bytes]] = {
    f"part-{i}@test": [
        ("application/gzip", gzip.compress(f"<Invoice n='{i}'/>".encode() * i, mtime=0)),
        ("application/xml", f"<doc n='{i}'>{'text ' * i}</doc>".encode()),
        ("text/plain", f"line {i}\r\n".encode() * i),
        ("application/octet-stream", bytes(range(i, 256)) * i),
    ][i % 4]
    for i in range(31)
}
PAYLOADS["empty@test"] = ("application/octet-stream", b"")
PAYLOADS["large@test"] = ("application/octet-stream", bytes(range(256)) * 1200)

CURVES: dict[str, NamedCurve] = {
    "p256": NamedCurve.SECP256R1,
    "p384": NamedCurve.SECP384R1,
    "p521": NamedCurve.SECP521R1,
    "brainpool": NamedCurve.BRAINPOOLP256R1,
}


def _sources(payloads: dict[str, tuple[str, bytes]]) -> list[AttachmentSource]:
    def chunks(data: bytes) -> Callable[[], Iterable[bytes]]:
        return lambda: (data[i : i + 4096] for i in range(0, len(data), 4096))

    return [AttachmentSource(cid, ct, chunks(data)) for cid, (ct, data) in payloads.items()]


def _encrypt(
    policy: SecurityPolicy,
    recipient: KeyPair,
    payloads: dict[str, tuple[str, bytes]] = PAYLOADS,
    signer: KeyPair | None = None,
) -> tuple[bytes, tuple[AttachmentSource, ...]]:
    """Build a user message, sign it when asked, encrypt it: the envelope bytes and the ciphertext parts."""
    envelope = build_envelope(_user_message(list(payloads)))
    new_id = _ids()
    if signer is not None:
        sign_envelope(envelope, _sources(payloads), signer, policy, new_id=new_id)
    ciphertexts = encrypt_attachments(envelope, _sources(payloads), recipient.certificate, policy, new_id=new_id)
    return serialize(envelope), ciphertexts


def _wire(envelope: bytes, ciphertexts: Iterable[AttachmentSource]) -> ReceivedMessage:
    """Pack as SwA MIME and read it back, as a receiver would."""
    packed = pack_message(envelope, [Attachment(s.content_id, s.content_type, s.open()) for s in ciphertexts])
    return read_message(packed.content_type, packed.body)


def _open_part(part: ReceivedPart) -> Iterator[bytes]:
    assert isinstance(part.sink, io.BytesIO)
    data = part.sink.getvalue()
    return (data[i : i + 1000] for i in range(0, len(data), 1000))


def _decrypt(received: ReceivedMessage, keys: list[KeyPair], policy: SecurityPolicy) -> dict[str, tuple[str, bytes]]:
    sources = decrypt_attachments(received, keys, policy, open_part=_open_part)
    return {cid: (s.content_type, b"".join(s.open())) for cid, s in sources.items()}


def _code(call: Callable[[], object]) -> str:
    with pytest.raises(EbmsError) as caught:
        call()
    return caught.value.code


def _ecdh_policy(kind: str) -> SecurityPolicy:
    return SecurityPolicy.edelivery_2_0(key_agreement=KeyAgreement.ECDH_ES, key_agreement_curve=CURVES[kind])


@pytest.fixture(scope="module")
def rsa_recipient() -> KeyPair:
    """The receiving access point's RSA key pair (1.15)."""
    return issue(make_ca(), "PTE000002", "rsa")


@pytest.fixture(scope="module")
def x25519_recipient() -> KeyPair:
    """The receiving access point's X25519 decryption key pair (2.0), certified by an Ed25519 CA."""
    return issue(make_ca(kind="ed25519"), "PTE000002-decrypt", "x25519")


# -------------------------------------------------------------------------------------------- round trips


def test_rsa_oaep_round_trip_with_33_attachments(rsa_recipient: KeyPair) -> None:
    """1.15: 33 attachments encrypted with RSA-OAEP key transport come back byte for byte with their MIME types."""
    policy = SecurityPolicy.edelivery_1_15()
    received = _wire(*_encrypt(policy, rsa_recipient))
    assert encrypted_content_ids(received.parsed) == frozenset(PAYLOADS)
    assert _decrypt(received, [rsa_recipient], policy) == PAYLOADS


def test_x25519_round_trip_with_33_attachments(x25519_recipient: KeyPair) -> None:
    """2.0: 33 attachments encrypted under X25519 + HKDF + kw-aes128 come back byte for byte."""
    policy = SecurityPolicy.edelivery_2_0()
    received = _wire(*_encrypt(policy, x25519_recipient))
    assert _decrypt(received, [x25519_recipient], policy) == PAYLOADS


@pytest.mark.parametrize("kind", list(CURVES))
def test_ecdh_es_round_trip_on_each_curve(kind: KeyType) -> None:
    """2.0 EC alternative: ECDH-ES + HKDF on P-256, P-384, P-521 and brainpoolP256r1 round-trips 33 attachments."""
    recipient = issue(make_ca(kind="ed25519"), "PTE000002-decrypt", kind)
    policy = _ecdh_policy(kind)
    received = _wire(*_encrypt(policy, recipient))
    assert _decrypt(received, [recipient], policy) == PAYLOADS


@pytest.mark.parametrize("profile", ["1.15", "2.0"])
def test_sign_encrypt_pack_read_decrypt_verify(profile: str) -> None:
    """Sign, then encrypt, pack and read, then decrypt and verify: every part is covered by the signature."""
    if profile == "1.15":
        policy = SecurityPolicy.edelivery_1_15()
        ca = make_ca()
        signer, recipient = issue(ca, "PTE000001", "rsa"), issue(ca, "PTE000002", "rsa")
    else:
        policy = SecurityPolicy.edelivery_2_0()
        ca = make_ca(kind="ed25519")
        signer, recipient = issue(ca, "PTE000001", "ed25519"), issue(ca, "PTE000002-decrypt", "x25519")
    received = _wire(*_encrypt(policy, recipient, signer=signer))
    security = received.parsed.security_header
    assert security is not None
    order = [etree.QName(child).localname for child in security]
    # AS4 order (compress, sign, encrypt): the receiver meets the EncryptedKey and data before the signature.
    assert order.index("EncryptedKey") < order.index("Signature")
    assert max(i for i, name in enumerate(order) if name == "EncryptedData") < order.index("Signature")
    plain = decrypt_attachments(received, [recipient], policy, open_part=_open_part)
    result = verify_signature(received.parsed, plain, policy)
    assert {r.target for r in result.references} == {"messaging", "body"} | {f"attachment:{c}" for c in PAYLOADS}
    assert result.signer.certificate == signer.certificate


@pytest.mark.parametrize("profile", ["1.15", "2.0"])
def test_a_recipient_token_is_decoded_once_for_the_messages_that_carry_it(
    profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two messages to one certificate: its token decoded once, both decrypted; a stranger's token is not ours."""
    decoded: list[str] = []

    def recorded(token: etree._Element) -> ResolvedToken:
        decoded.append(token.get("ValueType", ""))
        return read_binary_security_token(token)

    monkeypatch.setattr("accesspoint.security.signing.read_binary_security_token", recorded)
    policy = SecurityPolicy.edelivery_1_15() if profile == "1.15" else SecurityPolicy.edelivery_2_0()
    ca = make_ca() if profile == "1.15" else make_ca(kind="ed25519")
    kind: KeyType = "rsa" if profile == "1.15" else "x25519"
    recipient, stranger = issue(ca, "PTE000002", kind), issue(ca, "PTE000003", kind)
    payloads = {"one@test": ("application/xml", b"<one/>")}
    tokens = TokenCache()
    for _ in range(2):
        received = _wire(*_encrypt(policy, recipient, payloads))
        plain = decrypt_attachments(received, [recipient], policy, open_part=_open_part, tokens=tokens)
        assert b"".join(plain["one@test"].open()) == b"<one/>"
    assert len(decoded) == len(tokens) == 1
    received = _wire(*_encrypt(policy, stranger, payloads))
    with pytest.raises(DecryptionKeyMissing):
        decrypt_attachments(received, [recipient], policy, open_part=_open_part, tokens=tokens)


def test_without_the_key_the_signature_still_checks_with_attachments_skipped(rsa_recipient: KeyPair) -> None:
    """No decryption key: DecryptionKeyMissing names the parts, and the signature verifies with them unchecked."""
    policy = SecurityPolicy.edelivery_1_15()
    signer = issue(make_ca(), "PTE000001", "rsa")
    received = _wire(*_encrypt(policy, rsa_recipient, signer=signer))
    with pytest.raises(DecryptionKeyMissing) as caught:
        decrypt_attachments(received, [signer], policy, open_part=_open_part)
    assert caught.value.content_ids == frozenset(PAYLOADS)
    skipped = encrypted_content_ids(received.parsed)
    result = verify_signature(received.parsed, {}, policy, skip_attachments=skipped)
    assert {echo.uri for echo in result.unchecked} == {f"cid:{c}" for c in PAYLOADS}


# ------------------------------------------------------------------------------------------ wire structure


def _tree(envelope: bytes) -> etree._Element:
    return etree.fromstring(envelope)


def _attr(root: etree._Element, path: str, name: str = "Algorithm") -> str | None:
    element = root.find(path)
    return None if element is None else element.get(name)


def test_1_15_wire_structure_follows_the_profile(rsa_recipient: KeyPair) -> None:
    """1.15: xmlenc11 rsa-oaep with SHA-256 and MGF1-SHA256, a BST for the recipient, SwA EncryptedData per part."""
    envelope, ciphertexts = _encrypt(SecurityPolicy.edelivery_1_15(), rsa_recipient)
    root = _tree(envelope)
    key = root.find(f".//{XENC}EncryptedKey")
    assert key is not None
    method = f"{XENC}EncryptionMethod"
    assert _attr(key, method) == "http://www.w3.org/2009/xmlenc11#rsa-oaep"
    assert _attr(key, f"{method}/{DS}DigestMethod") == "http://www.w3.org/2001/04/xmlenc#sha256"
    assert _attr(key, f"{method}/{{{NS.XENC11}}}MGF") == "http://www.w3.org/2009/xmlenc11#mgf1sha256"
    reference = key.find(f"{DS}KeyInfo/{WSSE}SecurityTokenReference/{WSSE}Reference")
    assert reference is not None
    (bst,) = [t for t in root.iter(f"{WSSE}BinarySecurityToken") if f"#{t.get(WSU_ID)}" == reference.get("URI")]
    assert base64.b64decode(bst.text or "") == rsa_recipient.certificate.public_bytes(serialization.Encoding.DER)
    data_refs = [r.get("URI") for r in key.iterfind(f"{XENC}ReferenceList/{XENC}DataReference")]
    encrypted = root.findall(f".//{XENC}EncryptedData")
    assert data_refs == [f"#{e.get('Id')}" for e in encrypted] and len(encrypted) == len(PAYLOADS)
    for element, (cid, (mime_type, _)) in zip(encrypted, PAYLOADS.items(), strict=True):
        assert element.get("Type") == "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Content-Only"
        assert element.get("MimeType") == mime_type
        assert _attr(element, method) == "http://www.w3.org/2009/xmlenc11#aes128-gcm"
        assert _attr(element, f"{XENC}CipherData/{XENC}CipherReference", "URI") == f"cid:{cid}"
        assert _attr(element, f".//{DS}Transform") == (
            "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Ciphertext-Transform"
        )
        token = element.find(f"{DS}KeyInfo/{WSSE}SecurityTokenReference")
        assert token is not None
        assert token.get(f"{{{NS.WSSE11}}}TokenType", "").endswith("#EncryptedKey")
        assert _attr(token, f"{WSSE}Reference", "URI") == f"#{key.get('Id')}"
    assert {s.content_type for s in ciphertexts} == {"application/octet-stream"}
    sizes = {s.content_id: len(b"".join(s.open())) for s in ciphertexts}
    assert sizes == {cid: len(data) + 12 + 16 for cid, (_, data) in PAYLOADS.items()}


def test_2_0_wire_structure_follows_the_profile(x25519_recipient: KeyPair) -> None:
    """2.0: kw-aes128 under an X25519 AgreementMethod with HKDF parameters and the ephemeral key as DER SPKI."""
    root = _tree(_encrypt(SecurityPolicy.edelivery_2_0(), x25519_recipient)[0])
    key = root.find(f".//{XENC}EncryptedKey")
    assert key is not None
    assert _attr(key, f"{XENC}EncryptionMethod") == "http://www.w3.org/2001/04/xmlenc#kw-aes128"
    agreement = key.find(f"{DS}KeyInfo/{XENC}AgreementMethod")
    assert agreement is not None and agreement.get("Algorithm") == "http://www.w3.org/2021/04/xmldsig-more#x25519"
    derivation = agreement.find(f"{{{NS.XENC11}}}KeyDerivationMethod")
    assert derivation is not None and derivation.get("Algorithm") == "http://www.w3.org/2021/04/xmldsig-more#hkdf"
    more = f"{{{NS.DSIG_MORE}}}"
    params = derivation.find(f"{more}HKDFParams")
    assert params is not None
    assert [etree.QName(c).localname for c in params] == ["PRF", "Salt", "Info", "KeyLength"]
    assert _attr(params, f"{more}PRF") == "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"
    assert len(base64.b64decode(params.findtext(f"{more}Salt") or "")) == 32
    assert params.findtext(f"{more}KeyLength") == "16"
    der = base64.b64decode(agreement.findtext(f"{XENC}OriginatorKeyInfo/{{{NS.DSIG11}}}DEREncodedKeyValue") or "")
    assert der[:12].hex() == "302a300506032b656e032100"  # SPKI with OID 1.3.101.110 (id-X25519), no parameters
    assert isinstance(serialization.load_der_public_key(der), x25519.X25519PublicKey)
    recipient = agreement.find(f"{XENC}RecipientKeyInfo/{WSSE}SecurityTokenReference/{WSSE}Reference")
    assert recipient is not None and recipient.get("ValueType", "").endswith("#X509PKIPathv1")


@pytest.mark.parametrize("kind", list(CURVES))
def test_ecdh_es_originator_key_names_its_curve(kind: KeyType) -> None:
    """ECDH-ES carries the ephemeral key as ds:KeyValue/dsig11:ECKeyValue naming the policy's curve."""
    recipient = issue(make_ca(kind="ed25519"), "PTE000002-decrypt", kind)
    root = _tree(_encrypt(_ecdh_policy(kind), recipient)[0])
    agreement = root.find(f".//{XENC}AgreementMethod")
    assert agreement is not None and agreement.get("Algorithm") == "http://www.w3.org/2009/xmlenc11#ECDH-ES"
    curve = agreement.find(f"{XENC}OriginatorKeyInfo/{DS}KeyValue/{{{NS.DSIG11}}}ECKeyValue/{{{NS.DSIG11}}}NamedCurve")
    assert curve is not None and curve.get("URI") == CURVES[kind].value


@pytest.mark.parametrize("form", ["bare-ECKeyValue", "DEREncodedKeyValue"])
def test_ecdh_es_originator_key_is_also_read_in_other_forms(form: str) -> None:
    """An ECDH-ES originator key given as a bare dsig11:ECKeyValue or as DER SPKI decrypts as well."""
    recipient = issue(make_ca(kind="ed25519"), "PTE000002-decrypt", "p256")
    policy = _ecdh_policy("p256")
    payloads = dict(list(PAYLOADS.items())[:2])
    envelope, ciphertexts = _encrypt(policy, recipient, payloads)
    root = _tree(envelope)
    wrapper = root.find(f".//{XENC}OriginatorKeyInfo/{DS}KeyValue")
    assert wrapper is not None
    originator, (key_value,) = wrapper.getparent(), list(wrapper)
    assert originator is not None
    originator.remove(wrapper)
    if form == "bare-ECKeyValue":
        originator.append(key_value)
    else:
        point = base64.b64decode(key_value.findtext(f"{{{NS.DSIG11}}}PublicKey") or "")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        etree.SubElement(originator, f"{{{NS.DSIG11}}}DEREncodedKeyValue").text = base64.b64encode(der).decode()
    assert _decrypt(_wire(etree.tostring(root), ciphertexts), [recipient], policy) == payloads


# ------------------------------------------------------------------------ independent decryption (oracle)


def _independent_cek(root: etree._Element, keys: KeyPair) -> bytes:
    """The content key, recovered with lxml and plain cryptography only (no code of ours)."""
    key = root.find(f".//{XENC}EncryptedKey")
    assert key is not None
    wrapped = base64.b64decode(key.findtext(f"{XENC}CipherData/{XENC}CipherValue") or "")
    private = keys.private_key
    if isinstance(private, rsa.RSAPrivateKey):
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        return private.decrypt(wrapped, oaep)
    agreement = key.find(f"{DS}KeyInfo/{XENC}AgreementMethod")
    assert agreement is not None
    more, dsig11 = f"{{{NS.DSIG_MORE}}}", f"{{{NS.DSIG11}}}"
    params = agreement.find(f".//{more}HKDFParams")
    assert params is not None
    salt = base64.b64decode(params.findtext(f"{more}Salt") or "")
    info = base64.b64decode(params.findtext(f"{more}Info") or "")
    if isinstance(private, x25519.X25519PrivateKey):
        der = base64.b64decode(agreement.findtext(f".//{dsig11}DEREncodedKeyValue") or "")
        public = serialization.load_der_public_key(der)
        assert isinstance(public, x25519.X25519PublicKey)
        shared = private.exchange(public)
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        point = base64.b64decode(agreement.findtext(f".//{dsig11}PublicKey") or "")
        shared = private.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(private.curve, point))
    kek = HKDF(algorithm=hashes.SHA256(), length=16, salt=salt, info=info).derive(shared)
    return aes_key_unwrap(kek, wrapped)


@pytest.mark.parametrize("kind", ["rsa", "x25519", "p256", "brainpool"])
def test_plain_cryptography_decrypts_what_we_encrypt(kind: KeyType) -> None:
    """A few lines of lxml + cryptography, independent of our code, decrypt every attachment we encrypt."""
    if kind == "rsa":
        policy, recipient = SecurityPolicy.edelivery_1_15(), issue(make_ca(), "PTE000002", "rsa")
    elif kind == "x25519":
        policy, recipient = SecurityPolicy.edelivery_2_0(), issue(make_ca(kind="ed25519"), "PTE000002", "x25519")
    else:
        policy, recipient = _ecdh_policy(kind), issue(make_ca(kind="ed25519"), "PTE000002", kind)
    envelope, ciphertexts = _encrypt(policy, recipient)
    cek = _independent_cek(_tree(envelope), recipient)
    for source in ciphertexts:
        blob = b"".join(source.open())
        assert AESGCM(cek).decrypt(blob[:12], blob[12:], None) == PAYLOADS[source.content_id][1]


@pytest.mark.parametrize("encoding", ["base64", "hex"])
def test_a_peer_s_non_empty_hkdf_info_is_read_as_base64_or_hex(x25519_recipient: KeyPair, encoding: str) -> None:
    """A key re-wrapped by a peer with a non-empty Info (base64 per RFC 9231bis, hex as Santuario reads it) decrypts."""
    policy = SecurityPolicy.edelivery_2_0()
    envelope, ciphertexts = _encrypt(policy, x25519_recipient, dict(list(PAYLOADS.items())[:2]))
    root = _tree(envelope)
    cek = _independent_cek(root, x25519_recipient)
    # The peer's side, in plain cryptography: a new ephemeral key, salt and info, the same content key. The
    # info's hex form (32 characters) is valid base64 too, so both readings have to be tried.
    ephemeral, salt, info = x25519.X25519PrivateKey.generate(), b"s" * 32, b"eDelivery-AS4-20"
    public = x25519_recipient.certificate.public_key()
    assert isinstance(public, x25519.X25519PublicKey)
    kek = HKDF(algorithm=hashes.SHA256(), length=16, salt=salt, info=info).derive(ephemeral.exchange(public))
    more, dsig11 = f"{{{NS.DSIG_MORE}}}", f"{{{NS.DSIG11}}}"
    texts = {
        f".//{more}Salt": base64.b64encode(salt).decode(),
        f".//{more}Info": info.hex() if encoding == "hex" else base64.b64encode(info).decode(),
        f".//{dsig11}DEREncodedKeyValue": base64.b64encode(
            ephemeral.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode(),
        f".//{XENC}EncryptedKey/{XENC}CipherData/{XENC}CipherValue": base64.b64encode(aes_key_wrap(kek, cek)).decode(),
    }
    for path, text in texts.items():
        element = root.find(path)
        assert element is not None
        element.text = text
    received = _wire(etree.tostring(root), ciphertexts)
    assert _decrypt(received, [x25519_recipient], policy) == dict(list(PAYLOADS.items())[:2])


# ------------------------------------------------------------------------------------------------ streams


def test_encryption_is_lazy_and_chunked_with_a_fresh_iv_per_opening(rsa_recipient: KeyPair) -> None:
    """Nothing is read before a part is opened; ciphertext comes chunk by chunk; each opening uses a new IV."""
    reads: list[int] = []

    def big() -> Iterator[bytes]:
        for _ in range(64):
            reads.append(1)
            yield b"x" * 65536

    envelope = build_envelope(_user_message(["big@test"]))
    source = AttachmentSource("big@test", "application/octet-stream", big)
    policy = SecurityPolicy.edelivery_1_15()
    (cipher,) = encrypt_attachments(envelope, [source], rsa_recipient.certificate, policy, new_id=_ids())
    assert reads == []
    first = list(cipher.open())
    assert max(len(c) for c in first) <= 65536 + 16 and len(reads) == 64
    second = b"".join(cipher.open())
    assert first[0] != second[:12]  # a new IV on each opening: re-reading never reuses (key, IV)
    received = _wire(serialize(envelope), [AttachmentSource("big@test", "application/octet-stream", lambda: first)])
    plain = decrypt_attachments(received, [rsa_recipient], policy, open_part=_open_part)
    assert all(len(chunk) <= 1000 for chunk in plain["big@test"].open())
    assert b"".join(plain["big@test"].open()) == b"x" * 65536 * 64


def test_a_large_attachment_streams_through_encryption_and_decryption_in_bounded_memory() -> None:
    """64 MiB in 1 MiB chunks are encrypted and decrypted with at most a few MiB allocated at any moment."""
    key, chunk = bytes(16), bytes(1 << 20)
    tracemalloc.start()
    try:
        total = sum(len(c) for c in decrypt_stream(key, encrypt_stream(key, (chunk for _ in range(64)))))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 64 << 20
    assert peak < 6 << 20


def test_a_part_past_the_one_shot_size_read_in_one_chunk_decrypts_and_its_tag_is_checked() -> None:
    """A ciphertext part past 16 MiB, handed over whole (a part read from its sink at once), takes the
    streaming path: it decrypts, and with one tag bit flipped it is EBMS:0102."""
    key = bytes(range(16))
    data = bytes(ONE_SHOT_MAX)
    blob = bytearray(b"".join(encrypt_stream(key, [data])))
    assert len(blob) == IV_SIZE + ONE_SHOT_MAX + TAG_SIZE
    assert b"".join(decrypt_stream(key, [bytes(blob)])) == data
    blob[-1] ^= 0x01
    with pytest.raises(EbmsError) as caught:
        b"".join(decrypt_stream(key, [bytes(blob)]))
    assert "tag mismatch" in caught.value.log_detail


@settings(max_examples=60)
@given(
    data=st.binary(max_size=600),
    size=st.integers(min_value=1, max_value=80),
    flip=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
)
def test_a_part_streamed_in_chunks_with_any_bit_flipped_is_failed_decryption(
    data: bytes, size: int, flip: int, bit: int
) -> None:
    """Cut into several chunks (the streaming path, not the one-piece AEAD call), a ciphertext part with any one bit
    of its IV, ciphertext or tag flipped is EBMS:0102 by the end of its stream."""
    key = bytes(range(16))
    blob = bytearray(b"".join(encrypt_stream(key, [data])))
    blob[flip % len(blob)] ^= 1 << bit
    chunks = [bytes(blob[offset : offset + size]) for offset in range(0, len(blob), size)]
    chunks = chunks if len(chunks) > 1 else [chunks[0][:IV_SIZE], chunks[0][IV_SIZE:]]
    with pytest.raises(EbmsError) as caught:
        b"".join(decrypt_stream(key, chunks))
    assert caught.value.code == "EBMS:0102"


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    sizes=st.lists(st.integers(min_value=1, max_value=80), min_size=1),
    empties=st.booleans(),
)
def test_decrypt_stream_inverts_encrypt_stream_for_any_chunking(data: bytes, sizes: list[int], empties: bool) -> None:
    """However the ciphertext is cut into chunks (empty ones included), the stream decrypts to the plaintext."""
    key = bytes(range(16))
    blob = b"".join(encrypt_stream(key, [data[:100], data[100:]]))
    chunks, offset, index = [], 0, 0
    while offset < len(blob):
        size = sizes[index % len(sizes)]
        chunks.append(blob[offset : offset + size])
        chunks.extend([b""] if empties else [])
        offset, index = offset + size, index + 1
    assert b"".join(decrypt_stream(key, chunks)) == data


# ---------------------------------------------------------------------------------------- keys and rollover


def test_an_encrypted_key_naming_no_recipient_is_tried_with_each_rsa_key_until_one_unwraps() -> None:
    """An EncryptedKey whose KeyInfo names no token is tried with every RSA key held: a foreign key that fails
    first does not stop the search, the right one opens the parts."""
    ca = make_ca()
    recipient, other = issue(ca, "PTE000002", "rsa"), issue(ca, "PTE000002-old", "rsa")
    policy = SecurityPolicy.edelivery_1_15()
    payloads = dict(list(PAYLOADS.items())[:2])
    envelope, ciphertexts = _encrypt(policy, recipient, payloads)
    root = etree.fromstring(envelope)
    (encrypted_key,) = root.iter(f"{{{NS.XENC}}}EncryptedKey")
    encrypted_key.remove(encrypted_key.find(f"{{{NS.DS}}}KeyInfo"))  # type: ignore[arg-type]
    received = _wire(etree.tostring(root), ciphertexts)
    assert _decrypt(received, [other, recipient], policy) == payloads


@pytest.mark.parametrize("reference", list(TokenReference))
def test_wrong_key_is_decryption_key_missing_and_rollover_finds_the_right_one(reference: TokenReference) -> None:
    """With any token reference a foreign key is DecryptionKeyMissing; among several keys the addressed one works."""
    ca = make_ca()
    recipient, other = issue(ca, "PTE000002", "rsa"), issue(ca, "PTE000002-old", "rsa")
    policy = SecurityPolicy.edelivery_1_15(token_reference=reference)
    received = _wire(*_encrypt(policy, recipient))
    with pytest.raises(DecryptionKeyMissing) as caught:
        _decrypt(received, [other], policy)
    assert not isinstance(caught.value, EbmsError)
    assert caught.value.content_ids == frozenset(PAYLOADS)
    assert _decrypt(received, [other, recipient], policy) == PAYLOADS


@pytest.mark.parametrize("reference", list(TokenReference))
def test_x25519_recipient_reference_selects_among_rollover_keys(
    x25519_recipient: KeyPair, reference: TokenReference
) -> None:
    """2.0: the RecipientKeyInfo reference (any style) picks the right X25519 key; another one alone is missing."""
    other = issue(make_ca(kind="ed25519"), "PTE000002-next", "x25519")
    policy = SecurityPolicy.edelivery_2_0(token_reference=reference)
    received = _wire(*_encrypt(policy, x25519_recipient, dict(list(PAYLOADS.items())[:3])))
    with pytest.raises(DecryptionKeyMissing):
        _decrypt(received, [other], policy)
    assert len(_decrypt(received, [other, x25519_recipient], policy)) == 3


# ------------------------------------------------------------------------------------------------ forgeries


def _tampered_part(received: ReceivedMessage, content_id: str, edit: Callable[[bytes], bytes]) -> None:
    part = received.attachment(content_id)
    assert part is not None and isinstance(part.sink, io.BytesIO)
    part.sink = io.BytesIO(edit(part.sink.getvalue()))


@pytest.mark.parametrize(
    "edit",
    [
        lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # a ciphertext bit
        lambda b: b[:-1] + bytes([b[-1] ^ 0x80]),  # a tag bit
        lambda b: b[:5] + bytes([b[5] ^ 1]) + b[6:],  # an IV bit
        lambda b: b[:-1],  # truncated
        lambda b: b[:20],  # shorter than IV and tag
    ],
    ids=["ciphertext", "tag", "iv", "truncated", "short"],
)
def test_tampered_attachment_is_failed_decryption_with_a_generic_wire_detail(
    rsa_recipient: KeyPair, edit: Callable[[bytes], bytes]
) -> None:
    """Any change to a ciphertext part fails the GCM check at the end of its stream: EBMS:0102, generic detail."""
    policy = SecurityPolicy.edelivery_1_15()
    received = _wire(*_encrypt(policy, rsa_recipient))
    _tampered_part(received, "large@test", edit)
    sources = decrypt_attachments(received, [rsa_recipient], policy, open_part=_open_part)
    with pytest.raises(EbmsError) as caught:
        b"".join(sources["large@test"].open())
    assert caught.value.code == "EBMS:0102"
    assert caught.value.detail == GENERIC
    assert caught.value.log_detail != GENERIC
    assert b"".join(sources["part-5@test"].open()) == PAYLOADS["part-5@test"][1]


def test_a_small_part_read_twice_is_decrypted_once_and_a_tampered_one_fails_every_time(rsa_recipient: KeyPair) -> None:
    """Plaintext is kept only after its GCM tag verified: a good part reads back equal, a tampered one never passes."""
    policy = SecurityPolicy.edelivery_1_15()
    received = _wire(*_encrypt(policy, rsa_recipient))
    _tampered_part(received, "part-5@test", lambda b: b[:-1] + bytes([b[-1] ^ 0x80]))
    opened: list[str] = []

    def counting_open_part(part: ReceivedPart) -> Iterator[bytes]:
        opened.append(str(part.content_id))
        return _open_part(part)

    sources = decrypt_attachments(received, [rsa_recipient], policy, open_part=counting_open_part)
    good = sources["part-1@test"]
    assert b"".join(good.open()) == b"".join(good.open()) == PAYLOADS["part-1@test"][1]
    assert opened.count("part-1@test") == 1
    for _ in range(2):
        assert _code(lambda: b"".join(sources["part-5@test"].open())) == "EBMS:0102"
    assert opened.count("part-5@test") == 2


class _MemorySpool:
    """A plaintext spool in memory that remembers whether it was discarded."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.discarded = False

    def write(self, data: bytes, /) -> object:
        return self.buffer.write(data)

    def chunks(self) -> Iterable[bytes]:
        return [self.buffer.getvalue()]

    def discard(self) -> None:
        self.discarded, self.buffer = True, io.BytesIO()


def test_a_part_read_again_is_its_whole_verified_plaintext_from_memory_or_the_spool(rsa_recipient: KeyPair) -> None:
    """A small part read in many chunks and a large one given a spool are decrypted once and read back whole;
    a tampered large part fails every reading and its spool is discarded."""
    policy = SecurityPolicy.edelivery_1_15()
    # Read in 1000-byte pieces, 980 bytes decrypt as two chunks (972 + 8) and 6000 as seven.
    payloads = {
        "two@test": ("application/octet-stream", bytes(range(245)) * 4),
        "many@test": ("application/octet-stream", bytes(range(200)) * 30),
        "large@test": PAYLOADS["large@test"],
    }
    envelope, ciphertexts = _encrypt(policy, rsa_recipient, payloads)
    received, tampered = _wire(envelope, ciphertexts), _wire(envelope, ciphertexts)
    _tampered_part(tampered, "large@test", lambda b: b[:-1] + bytes([b[-1] ^ 0x80]))
    opened: list[str] = []
    spools: list[_MemorySpool] = []

    def counting_open_part(part: ReceivedPart) -> Iterator[bytes]:
        opened.append(str(part.content_id))
        return _open_part(part)

    def spool() -> _MemorySpool:
        spools.append(_MemorySpool())
        return spools[-1]

    sources = decrypt_attachments(received, [rsa_recipient], policy, open_part=counting_open_part, spool=spool)
    for cid, (_, plaintext) in payloads.items():  # the large part is past the keep limit
        assert [b"".join(sources[cid].open()) for _ in range(3)] == [plaintext] * 3
        assert opened.count(cid) == 1
    assert len(spools) == 1 and not spools[0].discarded
    forged = decrypt_attachments(tampered, [rsa_recipient], policy, open_part=counting_open_part, spool=spool)
    for _ in range(2):
        assert _code(lambda: b"".join(forged["large@test"].open())) == "EBMS:0102"
    assert len(spools) == 3 and all(s.discarded for s in spools[1:])


def _edit_envelope(envelope: bytes, edit: Callable[[etree._Element], None]) -> bytes:
    root = etree.fromstring(envelope)
    edit(root)
    return etree.tostring(root)


def _flip_text(path: str) -> Callable[[etree._Element], None]:
    def edit(root: etree._Element) -> None:
        element = root.find(path)
        assert element is not None and element.text
        raw = bytearray(base64.b64decode(element.text))
        raw[len(raw) // 2] ^= 1
        element.text = base64.b64encode(bytes(raw)).decode()

    return edit


@pytest.mark.parametrize(
    ("profile", "path"),
    [
        ("1.15", f".//{XENC}EncryptedKey/{XENC}CipherData/{XENC}CipherValue"),
        ("2.0", f".//{XENC}EncryptedKey/{XENC}CipherData/{XENC}CipherValue"),
        ("2.0", f".//{{{NS.DSIG_MORE}}}Salt"),
        ("2.0", f".//{{{NS.DSIG11}}}DEREncodedKeyValue"),
    ],
    ids=["rsa-wrapped-key", "kw-wrapped-key", "hkdf-salt", "ephemeral-key"],
)
def test_tampered_key_material_is_failed_decryption(
    rsa_recipient: KeyPair, x25519_recipient: KeyPair, profile: str, path: str
) -> None:
    """A changed wrapped key, HKDF salt or ephemeral key fails to unwrap: EBMS:0102 with a generic detail."""
    policy = SecurityPolicy.edelivery_1_15() if profile == "1.15" else SecurityPolicy.edelivery_2_0()
    recipient = rsa_recipient if profile == "1.15" else x25519_recipient
    envelope, ciphertexts = _encrypt(policy, recipient)
    received = _wire(_edit_envelope(envelope, _flip_text(path)), ciphertexts)
    with pytest.raises(EbmsError) as caught:
        _decrypt(received, [recipient], policy)
    assert (caught.value.code, caught.value.detail) == ("EBMS:0102", GENERIC)


def test_key_of_another_profile_is_policy_noncompliance_before_any_crypto(
    rsa_recipient: KeyPair, x25519_recipient: KeyPair
) -> None:
    """X25519 under a 1.15 policy and RSA-OAEP under a 2.0 policy: EBMS:0103 even with no key at hand."""
    x_message = _wire(*_encrypt(SecurityPolicy.edelivery_2_0(), x25519_recipient))
    assert _code(lambda: _decrypt(x_message, [], SecurityPolicy.edelivery_1_15())) == "EBMS:0103"
    rsa_message = _wire(*_encrypt(SecurityPolicy.edelivery_1_15(), rsa_recipient))
    assert _code(lambda: _decrypt(rsa_message, [], SecurityPolicy.edelivery_2_0())) == "EBMS:0103"


def _set_attribute(path: str, name: str, value: str) -> Callable[[etree._Element], None]:
    def edit(root: etree._Element) -> None:
        for element in root.iterfind(path):
            element.set(name, value)

    return edit


def _remove(path: str) -> Callable[[etree._Element], None]:
    def edit(root: etree._Element) -> None:
        for element in root.findall(path):
            parent = element.getparent()
            assert parent is not None
            parent.remove(element)

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        _set_attribute(f".//{XENC}EncryptedData/{XENC}EncryptionMethod", "Algorithm", f"{NS.XENC}aes128-cbc"),
        _set_attribute(f".//{XENC}EncryptedData", "Type", f"{NS.XENC}Content"),
        _remove(f".//{XENC}CipherReference/{XENC}Transforms"),
        _set_attribute(f".//{XENC}EncryptedKey/{XENC}EncryptionMethod/{DS}DigestMethod", "Algorithm", "urn:x"),
        _remove(f".//{XENC}EncryptedKey/{XENC}EncryptionMethod/{{{NS.XENC11}}}MGF"),  # defaults to MGF1-SHA1
        _set_attribute(f".//{XENC}EncryptedKey/{XENC}EncryptionMethod/{DS}DigestMethod", "Algorithm", f"{NS.DS}sha1"),
    ],
    ids=["aes-cbc", "element-encryption", "no-ciphertext-transform", "unknown-digest", "mgf1-sha1", "oaep-sha1"],
)
def test_disallowed_or_unsupported_algorithms_are_policy_noncompliance(
    rsa_recipient: KeyPair, edit: Callable[[etree._Element], None]
) -> None:
    """A data, transform, digest or MGF algorithm the policy does not allow is EBMS:0103, before any crypto."""
    policy = SecurityPolicy.edelivery_1_15()
    envelope, ciphertexts = _encrypt(policy, rsa_recipient)
    received = _wire(_edit_envelope(envelope, edit), ciphertexts)
    assert _code(lambda: _decrypt(received, [], policy)) == "EBMS:0103"


def _duplicate_first_encrypted_data(root: etree._Element) -> None:
    first = root.find(f".//{XENC}EncryptedData")
    assert first is not None
    twin = copy.deepcopy(first)
    twin.set("Id", "twin")
    first.addnext(twin)


def _key_outside_security(root: etree._Element) -> None:
    encrypted_key = root.find(f".//{XENC}EncryptedKey")
    security = root.find(f".//{WSSE}Security")
    assert encrypted_key is not None and security is not None
    security.addnext(encrypted_key)


def _key_reference_not_local(root: etree._Element) -> None:
    for reference in root.iterfind(f".//{XENC}EncryptedData//{WSSE}Reference"):
        reference.set("URI", "X" + reference.get("URI", "")[1:])


def _key_by_reference_list(root: etree._Element) -> None:
    _remove(f".//{XENC}EncryptedData/{DS}KeyInfo")(root)


def _key_named_nowhere(root: etree._Element) -> None:
    _key_by_reference_list(root)
    _remove(f".//{XENC}ReferenceList")(root)


def _key_inline(root: etree._Element) -> None:
    encrypted_key = root.find(f".//{XENC}EncryptedKey")
    assert encrypted_key is not None
    for key_info in root.iterfind(f".//{XENC}EncryptedData/{DS}KeyInfo"):
        key_info[:] = [copy.deepcopy(encrypted_key)]
        for element in key_info.iter():
            element.attrib.pop("Id", None)
            element.attrib.pop(WSU_ID, None)
    parent = encrypted_key.getparent()
    assert parent is not None
    parent.remove(encrypted_key)


@pytest.mark.parametrize("edit", [_key_by_reference_list, _key_inline], ids=["reference-list", "inline"])
def test_an_encrypted_key_is_found_inline_or_by_the_reference_list_naming_its_data(
    rsa_recipient: KeyPair, edit: Callable[[etree._Element], None]
) -> None:
    """An EncryptedData without a key reference finds its EncryptedKey inside its KeyInfo or through the
    ReferenceList that names it, and decrypts."""
    policy = SecurityPolicy.edelivery_1_15()
    payloads = dict(list(PAYLOADS.items())[:2])
    envelope, ciphertexts = _encrypt(policy, rsa_recipient, payloads)
    received = _wire(_edit_envelope(envelope, edit), ciphertexts)
    assert _decrypt(received, [rsa_recipient], policy) == payloads


@pytest.mark.parametrize(
    "edit",
    [
        _set_attribute(f".//{XENC}CipherReference", "URI", "cid:absent@test"),
        _set_attribute(f".//{XENC}EncryptedData//{WSSE}Reference", "URI", "#nowhere"),
        _duplicate_first_encrypted_data,
        _key_outside_security,
        _key_reference_not_local,
        _key_named_nowhere,
    ],
    ids=[
        "absent-part",
        "dangling-key-reference",
        "two-for-one-part",
        "key-outside-security",
        "key-reference-not-local",
        "no-key-names-the-data",
    ],
)
def test_inconsistent_encryption_headers_are_failed_decryption(
    rsa_recipient: KeyPair, edit: Callable[[etree._Element], None]
) -> None:
    """An EncryptedData naming no part, no EncryptedKey in wsse:Security (by a local reference or a ReferenceList),
    or a part already named is EBMS:0102."""
    policy = SecurityPolicy.edelivery_1_15()
    envelope, ciphertexts = _encrypt(policy, rsa_recipient)
    received = _wire(_edit_envelope(envelope, edit), ciphertexts)
    assert _code(lambda: _decrypt(received, [rsa_recipient], policy)) == "EBMS:0102"


def test_rsa_oaep_mgf1p_is_refused_unless_listed_as_legacy(rsa_recipient: KeyPair) -> None:
    """rsa-oaep-mgf1p (SHA-1 MGF) is EBMS:0103 by default and decrypts when the policy's legacy list names it."""
    legacy = SecurityPolicy.edelivery_1_15(
        key_transport=KeyTransport.RSA_OAEP_MGF1P, legacy_algorithms=frozenset({KeyTransport.RSA_OAEP_MGF1P})
    )
    received = _wire(*_encrypt(legacy, rsa_recipient))
    assert _attr(_tree(received.envelope_bytes), f".//{XENC}EncryptedKey/{XENC}EncryptionMethod") == (
        KeyTransport.RSA_OAEP_MGF1P.value
    )
    assert _code(lambda: _decrypt(received, [rsa_recipient], SecurityPolicy.edelivery_1_15())) == "EBMS:0103"
    assert _decrypt(received, [rsa_recipient], legacy) == PAYLOADS


# -------------------------------------------------------------------------------------------------- interop


@pytest.mark.parametrize("name", ["as4", "peppol-py"])
def test_python_peer_messages_decrypt_to_their_recorded_attachment_and_verify(name: str) -> None:
    """The as4 and peppol-py messages decrypt with the receiver key to the recorded bytes, and then verify."""
    folder = interop_path("python-peers")
    keys = load_key_pair(folder / "pki/receiver.key.pem", certificate=folder / "pki/receiver.cert.pem")
    content_type, body = load_message(str(folder / f"{name}.usermessage.mime"), None)
    received = read_message(content_type, body)
    policy = SecurityPolicy.edelivery_1_15()
    plain = decrypt_attachments(received, [keys], policy, open_part=_open_part)
    ((content_id, source),) = plain.items()
    assert b"".join(source.open()) == (folder / f"{name}.attachment.decrypted.gz").read_bytes()
    result = verify_signature(received.parsed, plain, policy)
    assert result.covers(f"attachment:{content_id}")


def _gateway_key(name: str) -> KeyPair:
    folder = interop_path("domibus/keys")
    return load_key_pair(folder / f"{name}.key.pem", certificate=folder / f"{name}.cert.pem")


def _encrypted_key(relative: str) -> tuple[etree._Element, dict[str, etree._Element]]:
    root = parse_xml(interop_path(relative).read_bytes())
    key = root.find(f".//{XENC}EncryptedKey")
    assert key is not None
    return key, check_unique_ids(root)


LEGACY = SecurityPolicy.edelivery_1_15(legacy_algorithms=frozenset({KeyTransport.RSA_OAEP_MGF1P}))


@pytest.mark.parametrize(
    ("relative", "owner", "stranger", "content_key"),
    [  # unwrapped keys as domibus/README.md documents them
        ("domibus/harmony/messages/MSHAS4Request.xml", "blue_gw", "red_gw", "ef0995de0ef72888edee2818022791e6"),
        ("domibus/harmony/messages/SoapRequest.xml", "red_gw", "blue_gw", "cbb87a7ce38f6e6f7f4d44ee1514b4fd"),
        (
            "domibus/harmony/messages/SoapRequestBinaryToken.xml",
            "red_gw",
            "blue_gw",
            "06b29281ea8a9338f351f58073a186cf",
        ),
    ],
)
def test_harmony_encrypted_keys_unwrap_to_their_documented_content_keys(
    relative: str, owner: str, stranger: str, content_key: str
) -> None:
    """Harmony's EncryptedKeys (xmlenc11 rsa-oaep and legacy mgf1p, SKI references) unwrap with the addressed key."""
    key, ids = _encrypted_key(relative)
    assert unwrap_key(key, ids, [_gateway_key(stranger), _gateway_key(owner)], LEGACY).hex() == content_key
    with pytest.raises(DecryptionKeyMissing):
        unwrap_key(key, ids, [_gateway_key(stranger)], LEGACY)


def test_harmony_mgf1p_key_is_refused_without_the_legacy_listing() -> None:
    """Harmony's rsa-oaep-mgf1p EncryptedKey is EBMS:0103 under the default 1.15 policy."""
    key, ids = _encrypted_key("domibus/harmony/messages/SoapRequest.xml")
    assert _code(lambda: unwrap_key(key, ids, [_gateway_key("red_gw")], SecurityPolicy.edelivery_1_15())) == (
        "EBMS:0103"
    )


@pytest.mark.parametrize(
    "name",
    ["bst_x509v3", "bst_X509PKIPathv1", "is", "ski"],
)
def test_domibus_key_reference_styles_all_lead_to_red_gw(name: str) -> None:
    """Domibus' four reference styles (BST X509v3, BST PKIPath, IssuerSerial, SKI) resolve to red_gw and unwrap."""
    # The unwrapped key is cross-checked with plain cryptography (OAEP parameters read from the XML).
    key, ids = _encrypted_key(f"domibus/messages/{name}_incoming_message.xml")
    red = _gateway_key("red_gw")
    ours = unwrap_key(key, ids, [_gateway_key("blue_gw"), red], LEGACY)
    method = key.find(f"{XENC}EncryptionMethod")
    assert method is not None
    digests = {"http://www.w3.org/2001/04/xmlenc#sha256": hashes.SHA256(), None: hashes.SHA1()}  # noqa: S303 - what Domibus sent
    digest = digests[_attr(method, f"{DS}DigestMethod")]
    mgf = hashes.SHA256() if _attr(method, f"{{{NS.XENC11}}}MGF") else hashes.SHA1()  # noqa: S303
    wrapped = base64.b64decode(key.findtext(f"{XENC}CipherData/{XENC}CipherValue") or "")
    assert isinstance(red.private_key, rsa.RSAPrivateKey)
    oaep = padding.OAEP(mgf=padding.MGF1(mgf), algorithm=digest, label=None)
    assert red.private_key.decrypt(wrapped, oaep) == ours and len(ours) == 16
    with pytest.raises(DecryptionKeyMissing):
        unwrap_key(key, ids, [_gateway_key("blue_gw")], LEGACY)


def test_holodeck_message_is_refused_as_mgf1p_then_not_ours() -> None:
    """Holodeck's rsa-oaep-mgf1p message: EBMS:0103 by default; legacy-listed, it addresses a key we lack."""
    path = interop_path("phase4/messages/from-holodeck-1.xml")
    data = path.read_bytes()
    root = parse_xml(data[data.index(b"<?xml") :])  # a licence comment precedes the declaration
    key = root.find(f".//{XENC}EncryptedKey")
    assert key is not None
    ids = check_unique_ids(root)
    red = _gateway_key("red_gw")
    assert _code(lambda: unwrap_key(key, ids, [red], SecurityPolicy.edelivery_1_15())) == "EBMS:0103"
    with pytest.raises(DecryptionKeyMissing):
        unwrap_key(key, ids, [red], LEGACY)


def test_phase4_outgoing_message_is_for_a_key_we_do_not_have() -> None:
    """phase4's encrypted Peppol message parses, lists its encrypted part, and reports the key as missing."""
    content_type, body = load_message(str(interop_path("phase4/messages/dump-raw.as4out")), None)
    received = read_message(content_type, body)
    encrypted = encrypted_content_ids(received.parsed)
    assert encrypted == frozenset(p.content_id for p in received.attachments)
    with pytest.raises(DecryptionKeyMissing) as caught:
        decrypt_attachments(received, [_gateway_key("red_gw")], SecurityPolicy.edelivery_1_15(), open_part=_open_part)
    assert caught.value.content_ids == encrypted
