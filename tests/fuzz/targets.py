"""The fuzz targets: each reads untrusted bytes the way the access point does and checks the documented contract.

A target either returns (the input was accepted, or refused with the error type and code its function
documents) or raises: an undocumented exception propagates as it is, and a documented error type with a code
the function does not document, or an accepted input whose meaning differs from what was signed, raises
``ContractViolation``. Hangs and memory are bounded by the engine (libFuzzer's ``-timeout`` and
``-rss_limit_mb`` in ``run.py``).

Targets are plain functions over bytes so that the atheris entry point (``main.py``) and the smoke test
(``tests/test_fuzz_smoke.py``) run exactly the same code.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from accesspoint.core.compression import decompress_stream
from accesspoint.core.envelope import build_envelope, parse_envelope
from accesspoint.core.envelope import serialize as serialize_envelope
from accesspoint.core.errors import EbmsError
from accesspoint.core.httpdump import guess_bare_content_type, split_http_dump
from accesspoint.core.message import Attachment, ReceivedMessage, pack_message, read_message
from accesspoint.core.mime import MimeEvent, MultipartParser, PartData
from accesspoint.core.model import SignalMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.core.signals import build_receipt, check_receipt, signed_references
from accesspoint.core.xml import parse_xml
from accesspoint.envelopes import (
    EnvelopeError,
    from_deliver_secure,
    parse_application_response,
    parse_business_message_json,
    parse_delivery_result,
    parse_innbyggerpost,
    parse_sbd,
    parse_xhe,
    peppol_findings,
    verify_delivery_receipt,
    verify_sealed_delivery,
    verify_signed_delivery,
    verify_xhe,
)
from accesspoint.security.inbound import OpenedMessage, open_message
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import SecurityPolicy
from accesspoint.security.receipts import verify_receipt
from far.identifiers import InvalidIdentifier, parse_orgnr, parse_recipient
from far.soap import SoapFault, parse_request
from operators.deliveries import CheckedDelivery, DeliveryTrust, Refusal, check_delivery
from operators.soap import body_child
from pmode.domibus import import_domibus
from pmode.errors import PModeError
from pmode.loader import load_pmodes
from smp.bdxl import BdxlError, apply_naptr_regexp
from smp.documents import DocumentError, flavour_of, parse_service_group, parse_service_metadata
from smp.identifiers import (
    Identifier,
    IdentifierError,
    bdxl_naptr_name,
    peppol_cname_name,
    peppol_naptr_name,
)
from smp.model import Flavour
from smp.signature import SignatureError, verify_document
from tests.fuzz import fixtures
from tests.fuzz.mutation import Part, TreeMutator, run_program, serialize

T = TypeVar("T")


class ContractViolation(AssertionError):
    """An outcome the function's documented contract does not allow."""


def expect(
    call: Callable[[], T], documented: tuple[type[Exception], ...], codes: frozenset[str] | None = None
) -> T | None:
    """``call()``, or None when it raised a documented error (with a documented ebMS code, where given)."""
    try:
        return call()
    except documented as exc:
        if codes is not None and isinstance(exc, EbmsError) and exc.code not in codes:
            raise ContractViolation(f"{exc.code} is not among the documented codes {sorted(codes)}") from exc
        return None


def _codes(*numbers: int) -> frozenset[str]:
    return frozenset(f"EBMS:{number:04d}" for number in numbers)


# What read_message documents (README "Receiving"): the unpackaging and header codes, PartInfo reconciliation
# and the compression type check.
READ_CODES = _codes(1, 2, 3, 7, 8, 9, 11, 303)
# parse_envelope: the same without MIME and PartInfo-to-part reconciliation.
ENVELOPE_CODES = _codes(1, 2, 3, 9, 11)
# open_message (security/inbound.py): signature or trust, decryption, policy, decompression.
OPEN_CODES = _codes(101, 102, 103, 303)


# libFuzzer's -max_len. 64 KiB for what is parsed byte by byte: eight times the largest seed; longer inputs only
# run the same loops longer (the size limits themselves are fuzzed scaled down, e.g. compression's 1 MiB). An
# edit program (mutation.py) reads at most about 100 bytes for its 8 edits, so those targets take 256: libFuzzer
# would otherwise spend its time growing bytes that no edit reads.
MAX_INPUT = 64 * 1024
MAX_PROGRAM = 256


@dataclass(frozen=True)
class Target:
    """A fuzz target: a name, what it checks, the function over bytes, and set-up run before fuzzing."""

    name: str
    summary: str
    run: Callable[[bytes], None]
    prepare: Callable[[], object] = lambda: None
    max_len: int = MAX_INPUT


TARGETS: dict[str, Target] = {}


def target(
    name: str, summary: str, prepare: Callable[[], object] = lambda: None, max_len: int = MAX_INPUT
) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    """Register a target function under ``name``."""

    def register(function: Callable[[bytes], None]) -> Callable[[bytes], None]:
        TARGETS[name] = Target(name, summary, function, prepare, max_len)
        return function

    return register


def _split(data: bytes) -> list[bytes]:
    """``data`` in chunks of a size derived from the data itself (deterministic, 1 to 61 bytes)."""
    size = 1 + zlib.crc32(data) % 61
    return [data[i : i + size] for i in range(0, len(data), size)]


# ------------------------------------------------------------------------------------------------- core

MIME_BOUNDARY = "=_b"


def _mime_outcome(chunks: Sequence[bytes]) -> tuple[object, ...]:
    parser = MultipartParser(MIME_BOUNDARY)
    events: list[MimeEvent] = []
    try:
        for chunk in chunks:
            events.extend(parser.feed(chunk))
        parser.close()
    except EbmsError as exc:
        if exc.code not in _codes(7, 8):
            raise ContractViolation(f"the MIME parser raised {exc.code}") from exc
        return ("refused", exc.code)
    merged: list[object] = []
    for event in events:
        if isinstance(event, PartData) and merged and isinstance(merged[-1], bytes):
            merged[-1] += event.data
        else:
            merged.append(event.data if isinstance(event, PartData) else event)
    return ("accepted", *merged)


@target("mime", "SwA multipart push parser: EBMS:0007/0008 only; the same events however the bytes are chunked")
def fuzz_mime(data: bytes) -> None:
    whole = _mime_outcome([data])
    chunked = _mime_outcome(_split(data))
    if whole != chunked:
        raise ContractViolation(f"fed whole: {whole!r:.300}; fed in chunks: {chunked!r:.300}")


def _message_outcome(content_type: str, chunks: Sequence[bytes]) -> tuple[object, ...]:
    received = expect(lambda: read_message(content_type, chunks), (EbmsError,), READ_CODES)
    if received is None:
        return ("refused",)
    return ("accepted", received.parsed.messaging, received.envelope_bytes, _attachments(received))


def _attachments(received: ReceivedMessage) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for part in received.attachments:
        assert isinstance(part.sink, io.BytesIO)
        out.append((part.content_id, part.content_type, part.headers, part.size, part.sink.getvalue()))
        if part.size != len(part.sink.getvalue()):
            raise ContractViolation(
                f"part {part.content_id!r} reports {part.size} bytes, holds {len(part.sink.getvalue())}"
            )
    return out


@target("message", "read_message (Content-Type line, then the body): documented codes; chunking changes nothing")
def fuzz_message(data: bytes) -> None:
    head, _, body = data.partition(b"\n")
    content_type = head.decode("latin-1")
    whole = _message_outcome(content_type, [body])
    chunked = _message_outcome(content_type, _split(body))
    if whole != chunked:
        raise ContractViolation(f"fed whole: {whole!r:.300}; fed in chunks: {chunked!r:.300}")


@target("envelope", "parse_envelope: documented codes; a receipt's copy of what it read reads back the same")
def fuzz_envelope(data: bytes) -> None:
    parsed = expect(lambda: parse_envelope(data), (EbmsError,), ENVELOPE_CODES)
    if parsed is None:
        return
    signed_references(parsed)
    header = parsed.header
    if isinstance(header, SignalMessage):
        # The error signal's own code, or EBMS:0302: any row of the table.
        expect(lambda: check_receipt(header, sent_message_id="fuzz-1@sender.example"), (EbmsError,))
        return
    # The receipt for an unsigned message copies its UserMessage (AS4 5.1.8): the copy must say the same.
    receipt = build_receipt(header, (), message_id="receipt-1@fuzz", now=fixtures.NOW)
    echoed = parse_envelope(serialize_envelope(build_envelope(receipt))).header
    copied = echoed.receipt.user_message if isinstance(echoed, SignalMessage) and echoed.receipt else None
    if copied != header:  # MessageInfo.timestamp_text, the time as sent, is no part of equality
        raise ContractViolation(f"parsed {header!r:.400} but its receipt's copy reads {copied!r:.400}")


@target("httpdump", "a message file as the CLI reads it (HTTP dump or bare XML): documented codes only")
def fuzz_httpdump(data: bytes) -> None:
    dump = expect(lambda: split_http_dump(data), (EbmsError,), _codes(7))
    if dump is None:
        return
    content_type = dump.header("content-type") or guess_bare_content_type(dump.body)
    expect(lambda: read_message(content_type, dump.body), (EbmsError,), READ_CODES)


@target("compression", "streaming gunzip with a limit: EBMS:0303 only; what it yields is what zlib inflates")
def fuzz_compression(data: bytes) -> None:
    out = expect(lambda: b"".join(decompress_stream(_split(data), limit=1 << 20)), (EbmsError,), _codes(303))
    if out is not None and out != zlib.decompressobj(31).decompress(data):
        raise ContractViolation("decompress_stream yielded other bytes than zlib")


# --------------------------------------------------------------------------------------- WS-Security


@dataclass(frozen=True)
class _As4Case:
    """A valid secured message ready to be edited, and what opening it proves."""

    policy: SecurityPolicy
    keys: tuple[KeyPair, ...]
    tree: TreeMutator
    parts: tuple[Part, ...]
    header: object
    signer: x509.Certificate
    echoes: frozenset[object]
    payloads: dict[str | None, tuple[object, ...]]


def _payload_key(opened: OpenedMessage) -> dict[str | None, tuple[object, ...]]:
    return {p.content_id: (p.mime_type, p.size, p.sha256, p.compressed) for p in opened.payloads}


@functools.cache
def _as4_case(profile: str) -> _As4Case:
    message = fixtures.as4_message(profile)
    keys = fixtures.parties()
    policy = fixtures.policy_1_15() if profile == "1.15" else fixtures.policy_2_0()
    recipient = keys.receiver_rsa if profile == "1.15" else keys.receiver_x25519
    received = read_message(message.content_type, message.body)
    opened = open_message(received, policy, at=fixtures.NOW, keys=[recipient])
    assert opened.signature is not None and opened.complete, "the unedited message must open completely"
    parts = []
    for attachment in received.attachments:
        assert isinstance(attachment.sink, io.BytesIO) and attachment.content_id is not None
        parts.append(Part(attachment.content_id, attachment.content_type, attachment.sink.getvalue()))
    return _As4Case(
        policy=policy,
        keys=(recipient,),
        tree=TreeMutator(parse_xml(received.envelope_bytes)),
        parts=tuple(parts),
        header=received.parsed.header,
        signer=opened.signature.signer.certificate,
        echoes=frozenset(opened.signature.echoes),
        payloads=_payload_key(opened),
    )


def _check_opened(opened: OpenedMessage, case: _As4Case) -> None:
    """An edited message that opened must say exactly what the original said, signed by the same signer."""
    if opened.received.parsed.header != case.header:
        raise ContractViolation(
            f"verified, but the header differs from what was signed: {opened.received.parsed.header!r:.600}"
        )
    if opened.signature is None or opened.signature.signer.certificate != case.signer:
        raise ContractViolation("verified without the original signer's signature")
    if not set(opened.signature.echoes) <= case.echoes:
        raise ContractViolation("verified references that the original signature did not make")
    got = _payload_key(opened)
    for content_id, summary in got.items():
        if case.payloads.get(content_id) != summary:
            raise ContractViolation(
                f"payload {content_id!r} opened as {summary!r}, sent as {case.payloads.get(content_id)!r}"
            )
    if opened.complete and set(got) != set(case.payloads):
        raise ContractViolation(f"complete, but the payloads are {sorted(map(str, got))}")


AS4_BOUNDARY = "----=_Part_fuzz"


def _fuzz_as4(profile: str, data: bytes) -> None:
    case = _as4_case(profile)
    mutated = run_program(case.tree, case.parts, data)
    packed = pack_message(
        serialize(mutated),
        [Attachment(p.content_id, p.content_type, (p.data,)) for p in mutated.parts],
        soap_version=SoapVersion.V11 if mutated.soap_11 else SoapVersion.V12,
        boundary=AS4_BOUNDARY,
    )
    received = expect(lambda: read_message(packed.content_type, packed.to_bytes()), (EbmsError,), READ_CODES)
    if received is None:
        return
    opened = expect(
        lambda: open_message(received, case.policy, at=fixtures.NOW, keys=case.keys), (EbmsError,), OPEN_CODES
    )
    if opened is not None:
        _check_opened(opened, case)


@target(
    "as4_1_15",
    "structured edits of a signed + encrypted AS4 1.15 message (RSA): refused, or opens as signed",
    lambda: _as4_case("1.15"),
    MAX_PROGRAM,
)
def fuzz_as4_1_15(data: bytes) -> None:
    _fuzz_as4("1.15", data)


@target(
    "as4_2_0",
    "structured edits of a signed + encrypted AS4 2.0 message (Ed25519, X25519): as for 1.15",
    lambda: _as4_case("2.0"),
    MAX_PROGRAM,
)
def fuzz_as4_2_0(data: bytes) -> None:
    _fuzz_as4("2.0", data)


@dataclass(frozen=True)
class _ReceiptCase:
    tree: TreeMutator
    policy: SecurityPolicy
    signer: x509.Certificate
    signal: object
    sent_message_id: str
    sent_references: tuple[object, ...]


@functools.cache
def _receipt_case(profile: str) -> _ReceiptCase:
    message = fixtures.as4_message(profile)
    policy = fixtures.policy_1_15() if profile == "1.15" else fixtures.policy_2_0()
    signer = fixtures.receipt_signer(profile)
    data = fixtures.signed_receipt(profile)
    parsed = parse_envelope(data)
    verify_receipt(
        parsed,
        policy,
        sent_message_id=message.user_message.message_id,
        sent_references=message.references,
        partner_certificates=[signer],
    )
    return _ReceiptCase(
        TreeMutator(parse_xml(data)), policy, signer, parsed.header, message.user_message.message_id, message.references
    )


def _prepare_receipts() -> None:
    _receipt_case("1.15")
    _receipt_case("2.0")


@target(
    "receipt",
    "structured edits of signed receipts (first byte: 1.15 or 2.0): refused, or the same receipt",
    _prepare_receipts,
    MAX_PROGRAM,
)
def fuzz_receipt(data: bytes) -> None:
    case = _receipt_case("1.15" if not data or data[0] % 2 == 0 else "2.0")
    mutated = run_program(case.tree, (), data[1:])
    parsed = expect(lambda: parse_envelope(serialize(mutated)), (EbmsError,), ENVELOPE_CODES)
    if parsed is None:
        return
    # verify_receipt keeps the signature's codes and adds EBMS:0302; an error signal raises its own code.
    verified = expect(
        lambda: verify_receipt(
            parsed,
            case.policy,
            sent_message_id=case.sent_message_id,
            sent_references=case.sent_references,  # type: ignore[arg-type]
            partner_certificates=[case.signer],
        ),
        (EbmsError,),
    )
    if verified is None:
        return
    if verified.signal != case.signal:
        raise ContractViolation(f"the receipt verified but says something else: {verified.signal!r:.600}")
    if verified.signature is None or verified.signature.signer.certificate != case.signer:
        raise ContractViolation("the receipt verified without the partner's signature")


# ---------------------------------------------------------------------------- signed business documents


@dataclass(frozen=True)
class _DocumentCase:
    tree: TreeMutator
    verify: Callable[[bytes], object]
    documented: tuple[type[Exception], ...]
    expected: object


def _smp_verified(data: bytes) -> object:
    root = parse_xml(data, what="SMP answer")
    verified = verify_document(root)
    return (_key(verified.signer), parse_service_metadata(verified.root))


def _check_delivery(data: bytes) -> object:
    delivery = check_delivery(data, _delivery_trust(), at=fixtures.NOW)
    return _delivery_key(delivery)


def _delivery_key(delivery: CheckedDelivery) -> object:
    return (
        delivery.network,
        delivery.business_id,
        delivery.recipient,
        delivery.sender,
        delivery.sender_name,
        delivery.items,
        delivery.sender_certificate,
        delivery.seal_certificate,
        delivery.secure_delivery,
        delivery.xhe,
    )


@functools.cache
def _delivery_trust() -> DeliveryTrust:
    keys = fixtures.parties()
    return DeliveryTrust(intermediaries=(keys.intermediary.certificate,), sender_anchors=(keys.ca.certificate,))


# The document verifiers return the certificate whose *key* verified the signature and leave trust in it to the
# caller (KeyInfo is not signed: a certificate altered outside its key still verifies, and fails trust); so what
# must not change is the content and the signer's public key.
def _key(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _verified_xhe(data: bytes) -> object:
    verified = verify_xhe(data)
    return (verified.xhe, _key(verified.signature.signer))


def _verified_signed(data: bytes) -> object:
    verified = verify_signed_delivery(data)
    return (verified.delivery, _key(verified.sender_signature.signer))


def _verified_sealed(data: bytes) -> object:
    verified = verify_sealed_delivery(data)
    signers = (verified.sender_signature.signer, verified.seal_signature.signer)
    return (verified.delivery, verified.seal, *map(_key, signers))


def _verified_receipt(data: bytes) -> object:
    verified = verify_delivery_receipt(data)
    return (verified.receipt, _key(verified.signature.signer))


_SMP_DOCUMENTED = (EbmsError, SignatureError, DocumentError)


def _case(document: bytes, verify: Callable[[bytes], object], documented: tuple[type[Exception], ...]) -> _DocumentCase:
    return _DocumentCase(TreeMutator(parse_xml(document, what="document")), verify, documented, verify(document))


@functools.cache
def _document_cases() -> tuple[_DocumentCase, ...]:
    envelope_error = (EnvelopeError,)
    return (
        _case(fixtures.signed_xhe(), _verified_xhe, envelope_error),
        _case(fixtures.signed_delivery(), _verified_signed, envelope_error),
        _case(fixtures.sealed_delivery(), _verified_sealed, envelope_error),
        _case(fixtures.delivery_receipt(), _verified_receipt, envelope_error),
        _case(fixtures.sealed_delivery(), _check_delivery, (Refusal,)),
        _case(fixtures.signed_xhe(), _check_delivery, (Refusal,)),
        *(_case(fixtures.signed_smp_metadata(flavour), _smp_verified, _SMP_DOCUMENTED) for flavour in Flavour),
    )


@target(
    "signed_documents",
    "structured edits of signed XHE, Mina meddelanden layers and receipts, SMP metadata (first byte picks one): "
    "refused with the documented error, or verified with the same content",
    _document_cases,
    MAX_PROGRAM,
)
def fuzz_signed_documents(data: bytes) -> None:
    cases = _document_cases()
    case = cases[data[0] % len(cases) if data else 0]
    mutated = run_program(case.tree, (), data[1:])
    result = expect(lambda: case.verify(serialize(mutated)), case.documented)
    if result is not None and result != case.expected:
        raise ContractViolation(f"verified, but the content differs from what was signed: {result!r:.600}")


# ------------------------------------------------------------------------------------ parsers of bytes


_ENVELOPE_ERROR = (EnvelopeError,)


@target("sbdh", "SBD (XML) or DPI business message (JSON): EnvelopeError only")
def fuzz_sbdh(data: bytes) -> None:
    if data.lstrip()[:1] in (b"{", b"["):
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            return  # not JSON: the caller's json.loads refuses it before the parser sees it
        if isinstance(document, dict):
            for strict in (True, False):
                expect(lambda strict=strict: parse_business_message_json(document, strict=strict), _ENVELOPE_ERROR)  # type: ignore[misc]
        return
    parsed = expect(lambda: parse_sbd(data), _ENVELOPE_ERROR)
    if parsed is not None:
        peppol_findings(parsed.header)
        expect(lambda: parse_innbyggerpost(parsed.document), _ENVELOPE_ERROR)


@target("xhe", "XHE and Meddelandekvittens: parse_xhe, verify_xhe, parse_application_response raise EnvelopeError only")
def fuzz_xhe(data: bytes) -> None:
    expect(lambda: parse_xhe(data), _ENVELOPE_ERROR)
    expect(lambda: verify_xhe(data), _ENVELOPE_ERROR)
    expect(lambda: parse_application_response(data), _ENVELOPE_ERROR)


@target("minameddelanden", "Mina meddelanden layers, receipts, deliverSecure and its answer: EnvelopeError only")
def fuzz_minameddelanden(data: bytes) -> None:
    expect(lambda: verify_signed_delivery(data), _ENVELOPE_ERROR)
    expect(lambda: verify_sealed_delivery(data), _ENVELOPE_ERROR)
    expect(lambda: verify_delivery_receipt(data), _ENVELOPE_ERROR)
    expect(lambda: parse_delivery_result(data), _ENVELOPE_ERROR)
    expect(lambda: from_deliver_secure(data), _ENVELOPE_ERROR)
    expect(lambda: body_child(data), _ENVELOPE_ERROR)


@target("operators_delivery", "a mailbox operator's check of a delivered payload: Refusal only", _delivery_trust)
def fuzz_operators_delivery(data: bytes) -> None:
    expect(lambda: check_delivery(data, _delivery_trust(), at=fixtures.NOW), (Refusal,))


@target("smp", "SMP answers: parse_xml (EBMS:0009), flavour, ServiceGroup, ServiceMetadata, signature check")
def fuzz_smp(data: bytes) -> None:
    root = expect(lambda: parse_xml(data, what="SMP answer"), (EbmsError,), _codes(9))
    if root is None:
        return
    expect(lambda: flavour_of(root), (DocumentError,))
    expect(lambda: parse_service_group(root), (DocumentError,))
    expect(lambda: verify_document(root), (SignatureError,))
    expect(lambda: parse_service_metadata(root), (DocumentError,))


@target("far_soap", "FaR Recipient v3 SOAP requests: SoapFault only")
def fuzz_far_soap(data: bytes) -> None:
    expect(lambda: parse_request(data), (SoapFault,))


@target("domibus", "Domibus P-Mode import: PModeError only")
def fuzz_domibus(data: bytes) -> None:
    expect(lambda: import_domibus(data), (PModeError,))


@functools.cache
def _pmode_folder() -> Path:
    """A folder holding the certificates the seed P-Modes name: ca.pem, sender.pem, receiver.pem, and certs/ as
    in pmode/examples (certificates only)."""
    # Not on tmpfs, though each execution writes a file here: libFuzzer ends the process without atexit handlers,
    # so under atheris the folder outlives the run (the smoke test's process removes it).
    folder = Path(tempfile.mkdtemp(prefix="fuzz-pmode-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    keys = fixtures.parties()
    for name, pair in (("ca", keys.ca), ("sender", keys.sender_rsa), ("receiver", keys.receiver_rsa)):
        (folder / f"{name}.pem").write_bytes(pair.certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "certs").mkdir()
    for certificate in (fixtures.REPO / "pmode" / "examples" / "certs").glob("*.pem"):
        if not certificate.name.endswith(".key.pem"):
            (folder / "certs" / certificate.name).write_bytes(certificate.read_bytes())
    return folder


@target("pmode", "P-Mode files (first byte: YAML or TOML): PModeError only", _pmode_folder)
def fuzz_pmode(data: bytes) -> None:
    suffix = ".toml" if data[:1] == b"T" else ".yaml"
    path = _pmode_folder() / f"pmodes{suffix}"
    path.write_bytes(data[1:])
    expect(lambda: load_pmodes(path), (PModeError,))


@target("identifiers", "SMP scheme::value and FaR recipient identifiers (the REST paths): their ValueErrors only")
def fuzz_identifiers(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for ebcore in (False, True):
        identifier = expect(lambda ebcore=ebcore: Identifier.parse(text, allow_ebcore=ebcore), (IdentifierError,))  # type: ignore[misc]
        if identifier is not None:
            identifier.url_segment()
            identifier.key()
            peppol_naptr_name(identifier, "edelivery.example.eu")
            peppol_cname_name(identifier, "edelivery.example.eu")
            bdxl_naptr_name(identifier, "edelivery.example.eu")
    expect(lambda: parse_recipient(text), (InvalidIdentifier,))
    expect(lambda: parse_orgnr(text), (InvalidIdentifier,))


# The name a Peppol BDXL lookup queries (SHA-256 label, scheme, zone), as apply_naptr_regexp meets it.
NAPTR_NAME = "b7tfw2wjsecq4h6wthgxvxfuo7yw3lbvw2vi4zb7mh5tfkxbh2xq.iso6523-actorid-upis.edelivery.tech.ec.europa.eu"


@target("bdxl", "a NAPTR regexp from a DNS answer applied to the queried name: BdxlError only, bounded time")
def fuzz_bdxl(data: bytes) -> None:
    expect(lambda: apply_naptr_regexp(data.decode("utf-8", "replace"), NAPTR_NAME), (BdxlError,))
