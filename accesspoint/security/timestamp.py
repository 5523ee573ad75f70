"""RFC 3161 time-stamps, sans-I/O: the request a client sends and the checks on the token that comes back.

A time-stamp token proves that a digest existed at ``genTime``: it is a CMS SignedData (RFC 5652) whose content
is a ``TSTInfo`` (policy, the message imprint, serial number, time, the request's nonce), signed by a time-stamp
authority. ``verify_token`` checks, in this order, and raises ``TimestampError`` naming the first that fails:

1. the structure: ContentInfo of id-signedData, encapsulating id-ct-TSTInfo, exactly one SignerInfo;
2. the message imprint: SHA-256 (or SHA-384/512) and the digest expected; the nonce, when one was sent;
3. the signed attributes: content type id-ct-TSTInfo, the message digest of the TSTInfo, and the ESS
   signing-certificate attribute (v2 or v1, RFC 5816 / 2634) naming the signer's certificate by its hash;
4. the signature over the signed attributes (RSA PKCS#1 v1.5, RSA-PSS, ECDSA) with the signer's key;
5. the signer's certificate: its extended key usage is critical and is id-kp-timeStamping only (RFC 3161
   section 2.3), it was valid at ``genTime``, and it chains to the TSA anchors given (``trust.validate_certificate``).

``request`` builds the ``TimeStampReq`` (version 1, the imprint, a nonce, certReq true so the token carries the
certificate), ``token_of`` reads a ``TimeStampResp`` (refusing every status but granted), ``verify_token``
returns the ``VerifiedTimestamp``: only what was checked.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from accesspoint.security import der
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.trust import CertificateUsage, TrustError, validate_certificate


class Oids:
    """The object identifiers a time-stamp uses."""

    SIGNED_DATA = "1.2.840.113549.1.7.2"
    TST_INFO = "1.2.840.113549.1.9.16.1.4"
    CONTENT_TYPE = "1.2.840.113549.1.9.3"
    MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
    SIGNING_TIME = "1.2.840.113549.1.9.5"
    SIGNING_CERTIFICATE = "1.2.840.113549.1.9.16.2.12"  # ESS, RFC 2634: SHA-1 certificate hash
    SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"  # ESS, RFC 5035 / 5816
    SHA1 = "1.3.14.3.2.26"
    SHA256 = "2.16.840.1.101.3.4.2.1"
    SHA384 = "2.16.840.1.101.3.4.2.2"
    SHA512 = "2.16.840.1.101.3.4.2.3"
    RSA = "1.2.840.113549.1.1.1"
    RSA_SHA256 = "1.2.840.113549.1.1.11"
    RSA_SHA384 = "1.2.840.113549.1.1.12"
    RSA_SHA512 = "1.2.840.113549.1.1.13"
    RSA_PSS = "1.2.840.113549.1.1.10"
    ECDSA_SHA256 = "1.2.840.10045.4.3.2"
    ECDSA_SHA384 = "1.2.840.10045.4.3.3"
    ECDSA_SHA512 = "1.2.840.10045.4.3.4"


HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    Oids.SHA256: hashes.SHA256,
    Oids.SHA384: hashes.SHA384,
    Oids.SHA512: hashes.SHA512,
}
_SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    Oids.RSA_SHA256: hashes.SHA256,
    Oids.RSA_SHA384: hashes.SHA384,
    Oids.RSA_SHA512: hashes.SHA512,
    Oids.ECDSA_SHA256: hashes.SHA256,
    Oids.ECDSA_SHA384: hashes.SHA384,
    Oids.ECDSA_SHA512: hashes.SHA512,
}
GENERALIZED_TIME = 0x18
BOOLEAN = 0x01
NONCE_BITS = 64
# A token is a few kilobytes (a signature and a certificate chain); anything far past that is not one.
MAX_TOKEN = 256 * 1024
_STATUS = {0: "granted", 1: "granted with modifications", 2: "rejection", 3: "waiting", 4: "revocation warning",
           5: "revocation notification"}  # fmt: skip


class TimestampError(ValueError):
    """A time-stamp response or token that does not prove what it should; the message says which check failed."""


@dataclass(frozen=True, slots=True)
class TimestampRequest:
    """A request as sent: its DER, and the imprint and nonce the token must echo."""

    der: bytes
    digest: bytes
    hash_oid: str
    nonce: int
    certificate_requested: bool = True


@dataclass(frozen=True, slots=True)
class TstInfo:
    """What the authority signed."""

    policy: str
    hash_oid: str
    digest: bytes
    serial: int
    gen_time: datetime
    nonce: int | None
    encoded: bytes  # the TSTInfo's DER, as signed


@dataclass(frozen=True, slots=True)
class VerifiedTimestamp:
    """A token that passed every check: when, under which policy, by whom, over what."""

    gen_time: datetime
    policy: str
    serial: int
    nonce: int | None
    digest: bytes
    hash_oid: str
    signer: x509.Certificate

    @property
    def signer_sha256(self) -> str:
        """The hex SHA-256 of the authority's certificate."""
        return hashlib.sha256(self.signer.public_bytes(Encoding.DER)).hexdigest()

    def to_json(self) -> dict[str, str | int | None]:
        """How statuses and evidence show it."""
        return {
            "time": self.gen_time.isoformat(),
            "policy": self.policy,
            "serial": self.serial,
            "nonce": None if self.nonce is None else format(self.nonce, "x"),
            "imprint_sha256": self.digest.hex() if self.hash_oid == Oids.SHA256 else None,
            "tsa": self.signer.subject.rfc4514_string(),
            "tsa_certificate_sha256": self.signer_sha256,
        }


def message_imprint(hash_oid: str, digest: bytes) -> bytes:
    """MessageImprint ::= SEQUENCE { hashAlgorithm, hashedMessage }."""
    return der.sequence(der.algorithm(hash_oid), der.octet_string(digest))


def request(digest: bytes, *, nonce: int | None = None, hash_oid: str = Oids.SHA256) -> TimestampRequest:
    """A TimeStampReq for ``digest`` with a fresh 64-bit nonce (or ``nonce``) and certReq true."""
    expected = HASHES.get(hash_oid)
    if expected is None or len(digest) != expected().digest_size:
        raise ValueError("the digest does not fit the hash algorithm")
    nonce = secrets.randbits(NONCE_BITS) | 1 << (NONCE_BITS - 1) if nonce is None else nonce
    body = der.sequence(
        der.integer(1), message_imprint(hash_oid, digest), der.integer(nonce), der.tlv(BOOLEAN, b"\xff")
    )
    return TimestampRequest(body, digest, hash_oid, nonce)


def parse_request(data: bytes) -> TimestampRequest:
    """A TimeStampReq read back (the authority's side); TimestampError when it is not one."""
    try:
        items = der.parse_one(data, "TimeStampReq").expect(der.SEQUENCE, "TimeStampReq").children()
        if not items or items[0].as_int() != 1:
            raise TimestampError("TimeStampReq: version 1 expected")
        hash_oid, digest = _imprint(items[1])
        nonce = next((i.as_int() for i in items[2:] if i.tag == der.INTEGER), None)
        wanted = next((i.content != b"\x00" for i in items[2:] if i.tag == BOOLEAN), False)
    except (der.DerError, IndexError) as exc:
        raise TimestampError(f"not a TimeStampReq: {exc}") from None
    return TimestampRequest(data, digest, hash_oid, 0 if nonce is None else nonce, wanted)


def _imprint(element: der.Element) -> tuple[str, bytes]:
    algorithm, hashed = element.expect(der.SEQUENCE, "MessageImprint").children()
    return algorithm.children()[0].as_oid(), hashed.expect(der.OCTET_STRING, "hashedMessage").content


def _text(element: der.Element) -> str:
    """PKIFreeText: a SEQUENCE OF UTF8String, joined."""
    try:
        return "; ".join(child.content.decode("utf-8", "replace") for child in element.children())[:300]
    except der.DerError:
        return ""


def token_of(response: bytes) -> bytes:
    """The TimeStampToken of a TimeStampResp; TimestampError with the status when none was granted."""
    if len(response) > MAX_TOKEN:
        raise TimestampError(f"a time-stamp response of {len(response)} bytes is too large")
    try:
        parts = der.parse_one(response, "TimeStampResp").expect(der.SEQUENCE, "TimeStampResp").children()
        status_info = parts[0].expect(der.SEQUENCE, "PKIStatusInfo").children()
        status = status_info[0].as_int()
    except (der.DerError, IndexError) as exc:
        raise TimestampError(f"not a TimeStampResp: {exc}") from None
    if status not in (0, 1):
        text = next((_text(i) for i in status_info[1:] if i.tag == der.SEQUENCE), "")
        raise TimestampError(f"the authority answered {_STATUS.get(status, status)}{': ' + text if text else ''}")
    if len(parts) < 2:
        raise TimestampError("the authority granted the request but sent no token")
    return parts[1].encoded


def _generalized_time(element: der.Element) -> datetime:
    element.expect(GENERALIZED_TIME, "GeneralizedTime")
    value = element.content.decode("ascii", "replace")
    if not value.endswith("Z") or len(value) < 15:
        raise TimestampError(f"genTime {value!r} is not a UTC GeneralizedTime")
    whole, _, fraction = value[:-1].partition(".")
    try:
        moment = datetime.strptime(whole, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise TimestampError(f"genTime {value!r} is not a time") from None
    if fraction:
        if not fraction.isdigit():
            raise TimestampError(f"genTime {value!r} has a malformed fraction")
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return moment


def parse_tst_info(encoded: bytes) -> TstInfo:
    """The TSTInfo of a token's content."""
    items = der.parse_one(encoded, "TSTInfo").expect(der.SEQUENCE, "TSTInfo").children()
    if len(items) < 5 or items[0].as_int() != 1:
        raise TimestampError("TSTInfo: version 1 with policy, imprint, serial and time expected")
    hash_oid, digest = _imprint(items[2])
    nonce = next((i.as_int() for i in items[5:] if i.tag == der.INTEGER), None)
    return TstInfo(items[1].as_oid(), hash_oid, digest, items[3].as_int(), _generalized_time(items[4]), nonce, encoded)


@dataclass(frozen=True, slots=True)
class _SignerInfo:
    issuer_serial: tuple[bytes, int] | None
    key_identifier: bytes | None
    digest_oid: str
    signed_attributes: dict[str, list[der.Element]]
    signed_encoding: bytes  # the signed attributes as a SET: what the signature covers
    signature_oid: str
    signature_parameters: list[der.Element]
    signature: bytes


def _signer_info(element: der.Element) -> _SignerInfo:
    items = element.expect(der.SEQUENCE, "SignerInfo").children()
    sid, digest_algorithm = items[1], items[2]
    issuer_serial, key_identifier = None, None
    if sid.tag == der.SEQUENCE:
        issuer, serial = sid.children()
        issuer_serial = (issuer.encoded, serial.as_int())
    elif sid.tag == 0x80:  # [0] IMPLICIT SubjectKeyIdentifier
        key_identifier = sid.content
    else:
        raise TimestampError("SignerInfo: unknown signer identifier")
    rest = items[3:]
    if not rest or rest[0].tag != 0xA0:
        raise TimestampError("the token's SignerInfo has no signed attributes")
    signed = rest[0]
    attributes: dict[str, list[der.Element]] = {}
    for attribute in signed.children():
        kind, values = attribute.children()
        if kind.as_oid() in attributes:
            raise TimestampError(f"the signed attribute {kind.as_oid()} appears twice")
        attributes[kind.as_oid()] = values.expect(der.SET, "attrValues").children()
    algorithm = rest[1].children()
    return _SignerInfo(
        issuer_serial,
        key_identifier,
        digest_algorithm.children()[0].as_oid(),
        attributes,
        der.tlv(der.SET, signed.content),
        algorithm[0].as_oid(),
        algorithm[1:],
        rest[2].expect(der.OCTET_STRING, "signature").content,
    )


def _certificates(signed_data: list[der.Element]) -> list[x509.Certificate]:
    found = []
    for element in signed_data:
        if element.tag == 0xA0:  # [0] IMPLICIT CertificateSet
            for item in element.children():
                if item.tag == der.SEQUENCE:
                    try:
                        found.append(x509.load_der_x509_certificate(item.encoded))
                    except ValueError as exc:
                        raise TimestampError(f"a certificate in the token cannot be read: {exc}") from None
    return found


def _identifies(certificate: x509.Certificate, info: _SignerInfo) -> bool:
    if info.issuer_serial is not None:
        issuer, serial = info.issuer_serial
        return certificate.serial_number == serial and certificate.issuer.public_bytes() == issuer
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return False
    return ski == info.key_identifier


def _check_signature(certificate: x509.Certificate, info: _SignerInfo) -> None:
    key = certificate.public_key()
    data = info.signed_encoding
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if info.signature_oid == Oids.RSA_PSS:
                digest = HASHES[info.digest_oid]()
                scheme: padding.AsymmetricPadding = padding.PSS(padding.MGF1(digest), padding.PSS.AUTO)
                key.verify(info.signature, data, scheme, digest)
                return
            if info.signature_oid == Oids.RSA:
                algorithm = HASHES.get(info.digest_oid)
            else:
                algorithm = _SIGNATURE_HASHES.get(info.signature_oid) if "113549" in info.signature_oid else None
            if algorithm is None:
                raise TimestampError(f"signature algorithm {info.signature_oid} is not accepted for an RSA key")
            key.verify(info.signature, data, padding.PKCS1v15(), algorithm())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = _SIGNATURE_HASHES.get(info.signature_oid) if "10045" in info.signature_oid else None
            if algorithm is None:
                raise TimestampError(f"signature algorithm {info.signature_oid} is not accepted for an EC key")
            key.verify(info.signature, data, ec.ECDSA(algorithm()))
        else:
            raise TimestampError("the authority's key is neither RSA nor EC")
    except InvalidSignature:
        raise TimestampError("the token's signature does not verify with the authority's certificate") from None
    except (KeyError, UnsupportedAlgorithm) as exc:
        raise TimestampError(f"the token's signature cannot be checked: {exc}") from None


def _check_ess(certificate: x509.Certificate, info: _SignerInfo) -> None:
    """RFC 3161 2.4.1: the ESS signing-certificate attribute names the authority's certificate (by its hash)."""
    encoded = certificate.public_bytes(Encoding.DER)
    v2 = info.signed_attributes.get(Oids.SIGNING_CERTIFICATE_V2)
    v1 = info.signed_attributes.get(Oids.SIGNING_CERTIFICATE)
    if v2:
        first = v2[0].children()[0].children()[0].children()  # SigningCertificateV2.certs[0]: ESSCertIDv2
        hash_oid = Oids.SHA256
        if first[0].tag == der.SEQUENCE:  # hashAlgorithm, absent when it is the default SHA-256
            hash_oid = first[0].children()[0].as_oid()
            first = first[1:]
        algorithm = HASHES.get(hash_oid)
        if algorithm is None:
            raise TimestampError(f"ESSCertIDv2 uses hash {hash_oid}, which is not accepted")
        digest = hashes.Hash(algorithm())
        digest.update(encoded)
        if first[0].expect(der.OCTET_STRING, "certHash").content != digest.finalize():
            raise TimestampError("the signing-certificate attribute names another certificate")
    elif v1:
        first = v1[0].children()[0].children()[0].children()  # SigningCertificate.certs[0]: ESSCertID
        if first[0].expect(der.OCTET_STRING, "certHash").content != hashlib.sha1(encoded).digest():  # noqa: S324 (RFC 2634 names SHA-1; it identifies, it does not sign)
            raise TimestampError("the signing-certificate attribute names another certificate")
    else:
        raise TimestampError("the token has no ESS signing-certificate attribute (RFC 3161 2.4.1)")


def check_timestamping_certificate(certificate: x509.Certificate) -> None:
    """RFC 3161 2.3: exactly one extended key usage, id-kp-timeStamping, and the extension is critical."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise TimestampError("the authority's certificate has no extended key usage (id-kp-timeStamping)") from None
    if not extension.critical:
        raise TimestampError("the authority's extended key usage is not critical (RFC 3161 2.3)")
    if list(extension.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise TimestampError("the authority's extended key usage is not id-kp-timeStamping alone (RFC 3161 2.3)")


def verify_token(
    token: bytes,
    *,
    digest: bytes,
    anchors: Sequence[x509.Certificate],
    nonce: int | None = None,
    hash_oid: str = Oids.SHA256,
    certificates: Sequence[x509.Certificate] = (),
) -> VerifiedTimestamp:
    """Check a TimeStampToken over ``digest`` (see the module docstring); ``nonce`` when one was sent,
    ``certificates`` for a token that does not carry the authority's certificate."""
    if len(token) > MAX_TOKEN:
        raise TimestampError(f"a token of {len(token)} bytes is too large")
    try:
        content_info = der.parse_one(token, "TimeStampToken").expect(der.SEQUENCE, "ContentInfo").children()
        if content_info[0].as_oid() != Oids.SIGNED_DATA:
            raise TimestampError("the token is not a CMS SignedData")
        signed_data = content_info[1].expect(0xA0, "content").children()[0].children()
        encapsulated = signed_data[2].children()
        if encapsulated[0].as_oid() != Oids.TST_INFO:
            raise TimestampError("the token does not encapsulate a TSTInfo")
        tst_der = encapsulated[1].expect(0xA0, "eContent").children()[0].expect(der.OCTET_STRING, "eContent").content
        tst = parse_tst_info(tst_der)
        infos = signed_data[-1].expect(der.SET, "signerInfos").children()
        if len(infos) != 1:
            raise TimestampError(f"the token has {len(infos)} SignerInfos, not one")
        info = _signer_info(infos[0])
        carried = _certificates(signed_data[3:-1])
    except (der.DerError, IndexError, ValueError) as exc:
        if isinstance(exc, TimestampError):
            raise
        raise TimestampError(f"not a time-stamp token: {exc}") from None
    if tst.hash_oid != hash_oid or tst.digest != digest:
        raise TimestampError("the token's message imprint is not the digest that was to be time-stamped")
    if nonce is not None and tst.nonce != nonce:
        raise TimestampError("the token's nonce is not the request's")
    _check_attributes(info, tst)
    signer = next((c for c in (*carried, *certificates) if _identifies(c, info)), None)
    if signer is None:
        raise TimestampError("the authority's certificate is neither in the token nor given")
    try:
        _check_ess(signer, info)
    except (der.DerError, IndexError) as exc:
        raise TimestampError(f"the signing-certificate attribute cannot be read: {exc}") from None
    _check_signature(signer, info)
    check_timestamping_certificate(signer)
    chain = [c for c in (*carried, *certificates) if c != signer]
    try:
        validate_certificate(
            signer,
            chain,
            TrustSettings(anchors=tuple(anchors), revocation=RevocationMode.OFF),
            at=tst.gen_time,
            usage=CertificateUsage.SIGNATURE,
        )
    except TrustError as exc:
        raise TimestampError(f"the authority's certificate is not trusted: {exc.reason}") from None
    return VerifiedTimestamp(tst.gen_time, tst.policy, tst.serial, tst.nonce, tst.digest, tst.hash_oid, signer)


def _check_attributes(info: _SignerInfo, tst: TstInfo) -> None:
    content_type = info.signed_attributes.get(Oids.CONTENT_TYPE)
    if not content_type or content_type[0].as_oid() != Oids.TST_INFO:
        raise TimestampError("the signed content-type attribute is not id-ct-TSTInfo")
    algorithm = HASHES.get(info.digest_oid)
    if algorithm is None:
        raise TimestampError(f"digest algorithm {info.digest_oid} is not accepted")
    digest = hashes.Hash(algorithm())
    digest.update(tst.encoded)
    found = info.signed_attributes.get(Oids.MESSAGE_DIGEST)
    if not found or found[0].expect(der.OCTET_STRING, "messageDigest").content != digest.finalize():
        raise TimestampError("the signed message digest is not the TSTInfo's")
