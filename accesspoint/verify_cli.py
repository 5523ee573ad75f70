"""``accesspoint verify``: check a message or signal's signature, decrypt it where a key is given, trust its signer.

Exit codes: 0 valid; 1 refused (EBMS:0101 signature or trust, 0102 decryption, 0103 policy, 0303 decompression);
2 malformed; 3 the signature holds but some references could not be checked (no key for an encrypted part).

A mailbox operator's delgivningskvitto (``operators/evidence.py``) is verified offline the same way:
``accesspoint verify kvitto.xml --timestamp kvitto.tst --trust operator.pem tsa-ca.pem`` checks the kvitto's
signature with the operator's certificate (a non-CA ``--trust`` file) and its RFC 3161 token over the kvitto's
SHA-256 against the time-stamp authority's anchors (the CA ``--trust`` files): exit 0 with what was served, when
and to whom; 1 when a signature, the imprint or the authority's certificate does not hold.

The wire format is read leniently, as files saved by other tools come (bare LF line ends, SOAP 1.1 spec
examples): each departure an AS4 endpoint refuses (``accesspoint.core.conformance``) is listed under
``wire_deviations`` with the code the endpoint would answer, and does not change the exit code. Decompression is
held to the same size and ratio limits as the endpoint's defaults (``--decompression-ratio`` etc. to change them).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from accesspoint.cli import (
    EXIT_INCOMPLETE,
    EXIT_MALFORMED,
    EXIT_OK,
    EXIT_REFUSED,
    UsageError,
    failure,
    load_message,
)
from accesspoint.core.compression import (
    DEFAULT_DECOMPRESSION_FLOOR,
    DEFAULT_DECOMPRESSION_LIMIT,
    DEFAULT_DECOMPRESSION_RATIO,
    DecompressionLimits,
)
from accesspoint.core.conformance import Deviation
from accesspoint.core.envelope import parse_envelope
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import ReceivedMessage, memory_sink, read_message
from accesspoint.core.mime import parse_content_type
from accesspoint.core.model import UserMessage
from accesspoint.core.namespaces import NS
from accesspoint.core.timestamps import parse_timestamp
from accesspoint.envelopes._common import EnvelopeError, parse_document
from accesspoint.security.algorithms import SHA1_BASED
from accesspoint.security.fetch import UrlFetcher
from accesspoint.security.inbound import OpenedMessage, open_message
from accesspoint.security.keys import KeyLoadError, KeyPair, certificate_sha256, load_key_pair, load_private_key
from accesspoint.security.policy import (
    ALLOWED_1_15,
    ALLOWED_2_0,
    Profile,
    RevocationMode,
    SecurityPolicy,
    TrustSettings,
)
from accesspoint.security.revocation import RevocationChecker
from accesspoint.security.timestamp import TimestampError, token_of
from accesspoint.security.tokens import read_binary_security_token
from accesspoint.security.trust import TrustError, load_truststore
from operators.evidence import KVITTO, verify_kvitto
from pmode.values import parse_size

log = logging.getLogger("accesspoint.verify")

# Refusals a well-formed message earns: security (signature, trust, decryption, policy) and decompression bombs.
_REFUSALS = {
    ErrorCode.FAILED_AUTHENTICATION.code,
    ErrorCode.FAILED_DECRYPTION.code,
    ErrorCode.POLICY_NONCOMPLIANCE.code,
    ErrorCode.DECOMPRESSION_FAILURE.code,
}


def register(commands: Any) -> None:
    """Add ``verify`` to the CLI."""
    verify = commands.add_parser("verify", help="verify (and decrypt) an AS4 message or signal; print a JSON report")
    verify.add_argument("file", help="raw HTTP body (with --content-type) or an HTTP dump")
    verify.add_argument("--content-type", help="the HTTP Content-Type of a raw body (wins over a dump's)")
    verify.add_argument(
        "--trust",
        action="extend",
        nargs="+",
        required=True,
        metavar="FILE",
        help="CA certificates (anchors) or pinned partner certificates: PEM, DER or PKCS#12",
    )
    verify.add_argument("--trust-password", help="password of PKCS#12 trust files")
    verify.add_argument("--key", help="private key to decrypt with: PKCS#12, or PEM (with its certificate inside)")
    verify.add_argument("--password", help="password of the --key file")
    verify.add_argument("--at", help="validate certificates as of this ISO-8601 time (default: now)")
    verify.add_argument("--no-revocation", action="store_true", help="do not look up CRLs or OCSP")
    verify.add_argument(
        "--legacy", action="store_true", help="accept SHA-1 based algorithms (e.g. rsa-oaep-mgf1p) on input"
    )
    verify.add_argument(
        "--decompression-limit", type=_size, default=DEFAULT_DECOMPRESSION_LIMIT, metavar="SIZE",
        help="largest payload after decompression (default 2GiB); past it EBMS:0303",
    )  # fmt: skip
    verify.add_argument(
        "--decompression-ratio", type=int, default=DEFAULT_DECOMPRESSION_RATIO, metavar="N",
        help="past the floor, a payload may inflate at most N times its compressed bytes (default 200; 0: no limit)",
    )  # fmt: skip
    verify.add_argument(
        "--decompression-floor", type=_size, default=DEFAULT_DECOMPRESSION_FLOOR, metavar="SIZE",
        help="output below which the ratio is not checked (default 64MiB)",
    )  # fmt: skip
    verify.add_argument(
        "--timestamp", metavar="TOKEN", help="the RFC 3161 token of a delgivningskvitto FILE (DER, or a TimeStampResp)"
    )
    verify.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Verify a message file and report signer, algorithms, references and payloads."""
    if args.timestamp is not None:
        return _verify_kvitto(args)
    content_type, body = load_message(args.file, args.content_type)
    at = _moment(args.at)
    trust = _trust_settings(args)
    unavailable: frozenset[str] = frozenset()
    try:
        received = read_message(content_type, body, sink_factory=memory_sink)
    except EbmsError as exc:
        soap_alone = (
            _soap_part_alone(content_type, body) if exc.error_code is ErrorCode.EXTERNAL_PAYLOAD_ERROR else None
        )
        if soap_alone is None:
            return EXIT_MALFORMED, failure(exc.code, exc.detail, file=args.file)
        received, unavailable = soap_alone
    keys = _keys(args, received, trust)
    policy = SecurityPolicy(
        profile=Profile.EDELIVERY_1_15,
        sign=True,
        encrypt=False,
        allowed_algorithms=ALLOWED_1_15 | ALLOWED_2_0,
        legacy_algorithms=SHA1_BASED if args.legacy else frozenset(),
        trust=trust,
    )
    revocation = None if args.no_revocation else RevocationChecker(UrlFetcher())
    summary = _header(received)
    try:
        opened = open_message(
            received,
            policy,
            at=at,
            keys=keys,
            revocation=revocation,
            # Every --trust certificate may be the one an SKI or IssuerSerial reference names: a self-signed
            # partner certificate marked CA (Domibus' blue_gw / red_gw) is an anchor here, not a pinned leaf.
            partner_certificates=(*trust.pinned, *trust.anchors),
            strict_coverage=False,
            unavailable=unavailable,
            decompression=DecompressionLimits(
                args.decompression_limit, args.decompression_ratio or None, args.decompression_floor
            ),
        )
    except TrustError as exc:
        log.warning("verify %s: %s", args.file, exc.reason)
        return EXIT_REFUSED, failure(exc.code, exc.reason, trust_failure=str(exc.failure), **summary)
    except EbmsError as exc:
        log.warning("verify %s: %s", args.file, exc.log_detail or exc.detail)
        code = EXIT_REFUSED if exc.code in _REFUSALS else EXIT_MALFORMED
        return code, failure(exc.code, exc.log_detail or exc.detail, **summary)
    report = {**summary, **_report(opened)}
    return (EXIT_OK if opened.complete else EXIT_INCOMPLETE), report


def _soap_part_alone(content_type: str, body: bytes) -> tuple[ReceivedMessage, frozenset[str]] | None:
    """A bare SOAP envelope whose PartInfo names cid: parts the file lacks (a saved root part): verify what is there."""
    media = parse_content_type(content_type)
    if media.media_type.startswith("multipart/"):
        return None
    parsed = parse_envelope(body)
    user = parsed.header
    if not isinstance(user, UserMessage):
        return None
    named = frozenset(cid for cid in (part.content_id for part in user.payload_info) if cid is not None)
    if not named:
        return None
    return ReceivedMessage(parsed, body, (), media, is_mime=False), named


def _size(text: str) -> int:
    size = parse_size(text)
    if size is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (bytes, or a number with KiB, MiB, GiB)")
    return size


def _deviation(deviation: Deviation) -> dict[str, str]:
    return {"rule": deviation.rule.value, "code": deviation.rule.error_code.code, "detail": deviation.detail}


def _moment(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = parse_timestamp(text)
    except EbmsError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise UsageError(f"--at {text!r} is not an ISO-8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        # An old-style self-signed root without extensions is an anchor; a leaf without them is pinned.
        return certificate.issuer == certificate.subject


def _trust_settings(args: argparse.Namespace) -> TrustSettings:
    try:
        certificates = load_truststore(args.trust, args.trust_password)
    except KeyLoadError as exc:
        raise UsageError(str(exc)) from None
    if not certificates:
        raise UsageError("the --trust files hold no certificate")
    anchors = tuple(c for c in certificates if _is_ca(c))
    pinned = tuple(c for c in certificates if not _is_ca(c))
    mode = RevocationMode.OFF if args.no_revocation else RevocationMode.SOFT_FAIL
    return TrustSettings(anchors=anchors, pinned=pinned, revocation=mode)


def _keys(args: argparse.Namespace, received: ReceivedMessage, trust: TrustSettings) -> tuple[KeyPair, ...]:
    if args.key is None:
        return ()
    password = None if args.password is None else args.password.encode()
    try:
        return (load_key_pair(args.key, password),)
    except KeyLoadError as first:
        # A bare PEM key: its certificate is the one the message encrypted to (a BST) or one of the --trust files.
        try:
            key = load_private_key(args.key, password)
        except KeyLoadError:
            raise UsageError(str(first)) from None
        wanted = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for certificate in (*_message_certificates(received), *trust.pinned, *trust.anchors):
            spki = certificate.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if spki == wanted:
                return (KeyPair(key, certificate),)
        raise UsageError(f"{args.key}: no certificate for this key in the message or the --trust files") from None


def _message_certificates(received: ReceivedMessage) -> list[x509.Certificate]:
    header = received.parsed.security_header
    if header is None:
        return []
    found: list[x509.Certificate] = []
    for token in header.iter(f"{{{NS.WSSE}}}BinarySecurityToken"):
        try:
            resolved = read_binary_security_token(token)
        except EbmsError:
            continue
        found.extend((resolved.certificate, *resolved.chain))
    return found


def _header(received: ReceivedMessage) -> dict[str, Any]:
    messaging = received.parsed.messaging
    info = messaging.message.message_info
    return {
        "kind": messaging.kind,
        "message_id": info.message_id,
        "ref_to_message_id": info.ref_to_message_id,
        "wire_deviations": [_deviation(d) for d in received.deviations],
    }


def _certificate(certificate: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "sha256": certificate_sha256(certificate),
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
    }


def _encryption_algorithms(received: ReceivedMessage) -> list[str]:
    header = received.parsed.security_header
    if header is None:
        return []
    names = ("EncryptionMethod", "AgreementMethod", "KeyDerivationMethod")
    found = [
        element.get("Algorithm", "")
        for element in header.iter()
        if isinstance(element.tag, str) and element.tag.rpartition("}")[2] in names
    ]
    return list(dict.fromkeys(a for a in found if a))


def _unchecked_reason(uri: str, opened: OpenedMessage) -> str:
    if uri.startswith("cid:") and unquote(uri[4:]) in opened.unavailable:
        return "unchecked (attachment not in the file)"
    return "unchecked (encrypted, no key)"


def _report(opened: OpenedMessage) -> dict[str, Any]:
    signature = opened.signature
    out: dict[str, Any] = {"ok": True, "complete": opened.complete}
    if signature is not None:
        out["signer"] = {
            **_certificate(signature.signer.certificate),
            "token_reference": str(signature.signer.reference),
        }
        digests = sorted(
            {ref.echo.digest_method for ref in signature.references} | {e.digest_method for e in signature.unchecked}
        )
        out["algorithms"] = {
            "signature": signature.signature_algorithm,
            "canonicalization": signature.canonicalization,
            "digests": digests,
            "encryption": _encryption_algorithms(opened.received),
        }
        references: list[dict[str, str | None]] = [
            {"uri": r.echo.uri, "target": r.target, "result": "valid"} for r in signature.references
        ]
        references += [
            {"uri": e.uri, "target": None, "result": _unchecked_reason(e.uri, opened)} for e in signature.unchecked
        ]
        out["references"] = references
    else:
        out["signer"] = None
    if opened.trust is not None:
        out["trust"] = {
            "pinned": opened.trust.pinned,
            "path": [c.subject.rfc4514_string() for c in opened.trust.path],
            "revocation": [
                {"status": str(r.status), "detail": r.detail, "source": r.source} for r in opened.trust.revocation
            ],
        }
    out["payloads"] = [
        {
            "content_id": p.content_id,
            "mime_type": p.mime_type,
            "size": p.size,
            "sha256": p.sha256,
            "encrypted": p.encrypted,
            "compressed": p.compressed,
        }
        for p in opened.payloads
    ]
    out["undecrypted"] = sorted(opened.undecrypted)
    out["unavailable"] = sorted(opened.unavailable)
    out["warnings"] = list(opened.warnings)
    return out


def _verify_kvitto(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """A delgivningskvitto and its time-stamp token, checked offline (see the module docstring)."""
    try:
        data = Path(args.file).read_bytes()
        token = Path(args.timestamp).read_bytes()
        certificates = load_truststore(args.trust, args.trust_password)
    except (OSError, KeyLoadError) as exc:
        raise UsageError(str(exc)) from None
    try:
        if parse_document(data, what="Delgivningskvitto").tag != KVITTO:
            return EXIT_MALFORMED, failure("not-a-kvitto", "--timestamp goes with a Delgivningskvitto", file=args.file)
    except EnvelopeError as exc:
        return EXIT_MALFORMED, failure("malformed", str(exc), file=args.file)
    with contextlib.suppress(TimestampError):
        token = token_of(token)  # a whole TimeStampResp: its token
    operators = [c for c in certificates if not _is_ca(c)]
    anchors = [c for c in certificates if _is_ca(c)]
    try:
        verified = verify_kvitto(data, token, operators=operators, tsa_anchors=anchors, at=_moment(args.at))
    except (EnvelopeError, TimestampError) as exc:
        return EXIT_REFUSED, failure("refused", str(exc), file=args.file)
    kvitto = verified.kvitto
    return EXIT_OK, {
        "ok": True,
        "kind": "delgivningskvitto",
        "message_id": kvitto.message_id,
        "business_id": kvitto.business_id,
        "sender": kvitto.sender,
        "recipient": kvitto.recipient,
        "operator": kvitto.operator,
        "subject": kvitto.subject,
        "signer": {
            "subject": verified.signer.subject.rfc4514_string(),
            "sha256": certificate_sha256(verified.signer),
        },
        **verified.to_json(),
    }
