"""A development RFC 3161 time-stamp authority, sans-I/O: what ``accesspoint tsa serve`` answers with.

Not a production TSA (no HSM, no audited clock, no policy document): it exists so that the demo, the tests and
the bench can time-stamp evidence (the operator's delgivningskvitto) without a third party. ``respond`` turns a
TimeStampReq into a TimeStampResp: a TSTInfo (policy, the request's imprint and nonce, a serial number, the time
of the injectable clock, one second's accuracy) signed as CMS SignedData with the signed attributes RFC 3161 and
OpenSSL check (content type, signing time, message digest, ESS signing-certificate v2) and the authority's
certificate when the request asks for it. ``authority_certificate`` issues the certificate with the critical
id-kp-timeStamping extended key usage RFC 3161 2.3 requires.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from accesspoint.security import der
from accesspoint.security.issuing import certificate_builder
from accesspoint.security.keys import KeyPair
from accesspoint.security.timestamp import GENERALIZED_TIME, Oids, TimestampError, message_imprint, parse_request

POLICY = "1.3.6.1.4.1.55555.3161.1"  # a private arc: the development authority's one policy
QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
UTC_TIME = 0x17
UTF8_STRING = 0x0C


def authority_certificate(
    ca: KeyPair,
    subject: x509.Name,
    *,
    not_before: datetime,
    not_after: datetime,
    critical: bool = True,
    purposes: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.TIME_STAMPING,),
) -> KeyPair:
    """A fresh RSA key and its certificate issued by ``ca``: digitalSignature and nonRepudiation, and the extended
    key usage ``purposes`` (id-kp-timeStamping alone and critical, unless a test asks for another)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = (
        certificate_builder(
            subject, ca.certificate.subject, key.public_key(), not_before=not_before, not_after=not_after
        )
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(purposes)), critical=critical)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(key, certificate, (ca.certificate,))


def _attribute(oid: str, value: bytes) -> bytes:
    return der.sequence(der.oid(oid), der.set_of(value))


def _generalized_time(moment: datetime) -> bytes:
    return der.tlv(GENERALIZED_TIME, moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ").encode())


def _refusal(text: str, fail_bit: int) -> bytes:
    """A TimeStampResp with status rejection (2), its text and failInfo bit."""
    bits = (1 << (7 - fail_bit % 8)).to_bytes(1, "big")
    unused = 7 - fail_bit % 8
    info = der.sequence(
        der.integer(2),
        der.sequence(der.tlv(UTF8_STRING, text.encode())),
        der.tlv(der.BIT_STRING, bytes([unused]) + bits),
    )
    return der.sequence(info)


class TimeStampAuthority:
    """Signs time-stamp tokens with ``keys`` at the time ``clock`` gives (see the module docstring)."""

    def __init__(self, keys: KeyPair, *, clock: Callable[[], datetime] | None = None, policy: str = POLICY) -> None:
        self.keys = keys
        self.clock = clock or (lambda: datetime.now(UTC))
        self.policy = policy
        self._serials = itertools.count(1)

    def respond(self, query: bytes) -> bytes:
        """The TimeStampResp for a DER TimeStampReq (a refusal with a reason for what is none)."""
        try:
            request = parse_request(query)
        except TimestampError as exc:
            return _refusal(str(exc), 5)  # badDataFormat
        if request.hash_oid not in (Oids.SHA256, Oids.SHA384, Oids.SHA512):
            return _refusal("only SHA-2 imprints are accepted", 0)  # badAlg
        moment = self.clock().astimezone(UTC).replace(microsecond=0)
        tst = der.sequence(
            der.integer(1),
            der.oid(self.policy),
            message_imprint(request.hash_oid, request.digest),
            der.integer(next(self._serials)),
            _generalized_time(moment),
            der.sequence(der.integer(1)),  # accuracy: one second
            *((der.integer(request.nonce),) if request.nonce else ()),
        )
        return der.sequence(der.sequence(der.integer(0)), self._token(tst, moment, request.certificate_requested))

    def _token(self, tst: bytes, moment: datetime, with_certificate: bool) -> bytes:
        certificate = self.keys.certificate
        encoded = certificate.public_bytes(serialization.Encoding.DER)
        attributes = der.set_of(
            _attribute(Oids.CONTENT_TYPE, der.oid(Oids.TST_INFO)),
            _attribute(Oids.SIGNING_TIME, der.tlv(UTC_TIME, moment.strftime("%y%m%d%H%M%SZ").encode())),
            _attribute(Oids.MESSAGE_DIGEST, der.octet_string(hashlib.sha256(tst).digest())),
            # ESSCertIDv2 with the default hash (SHA-256) left out, as DER requires.
            _attribute(
                Oids.SIGNING_CERTIFICATE_V2,
                der.sequence(der.sequence(der.sequence(der.octet_string(hashlib.sha256(encoded).digest())))),
            ),
        )
        key = self.keys.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            signature = key.sign(attributes, padding.PKCS1v15(), hashes.SHA256())
            algorithm = der.algorithm(Oids.RSA_SHA256, der.tlv(der.NULL, b""))
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            signature = key.sign(attributes, ec.ECDSA(hashes.SHA256()))
            algorithm = der.algorithm(Oids.ECDSA_SHA256)
        else:
            raise ValueError("the authority signs with RSA or EC")
        signer_info = der.sequence(
            der.integer(1),
            der.sequence(certificate.issuer.public_bytes(), der.integer(certificate.serial_number)),
            der.algorithm(Oids.SHA256),
            der.tlv(0xA0, der.parse_one(attributes, "signedAttrs").content),  # [0] IMPLICIT: the SET re-tagged
            algorithm,
            der.octet_string(signature),
        )
        chain = encoded + b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.keys.chain)
        signed_data = der.sequence(
            der.integer(3),
            der.set_of(der.algorithm(Oids.SHA256)),
            der.sequence(der.oid(Oids.TST_INFO), der.explicit(0, der.octet_string(tst))),
            der.tlv(0xA0, chain) if with_certificate else b"",
            der.set_of(signer_info),
        )
        return der.sequence(der.oid(Oids.SIGNED_DATA), der.explicit(0, signed_data))
