"""Opening a received message: decrypt, verify the signature, trust the signer, decompress (AS4's order).

``open_message`` is the whole receiving side of WS-Security in one pure function. It raises the EbmsError
the MSH answers with (0101 signature or trust, 0102 decryption, 0103 policy, 0303 decompression), or returns
an ``OpenedMessage`` that says exactly what was proven. An encrypted attachment for which no key is at hand
is not an error here: its signature reference stays unchecked and the result is ``complete=False`` (a
diagnostic tool reports it; an MSH configured with its own keys never meets it).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cryptography import x509
from lxml import etree

from accesspoint.core.compression import DEFAULT_LIMITS, DecompressionLimits, decompress_with
from accesspoint.core.envelope import ParsedEnvelope
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import ReceivedMessage, ReceivedPart
from accesspoint.core.model import PartInfo, UserMessage
from accesspoint.core.namespaces import GZIP
from accesspoint.security.encryption import (
    DecryptionKeyMissing,
    SpoolFactory,
    decrypt_attachments,
    encrypted_content_ids,
)
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import RevocationMode, SecurityPolicy, TrustSettings
from accesspoint.security.revocation import RevocationSource
from accesspoint.security.signing import (
    AttachmentSource,
    TokenCache,
    VerifiedSignature,
    coverage_gaps,
    find_signature,
    verify_signature,
)
from accesspoint.security.trust import CertificateUsage, TrustResult, validate_certificate

PartReader = Callable[[ReceivedPart], Iterable[bytes]]


def read_memory_part(part: ReceivedPart) -> Iterable[bytes]:
    """The bytes of an attachment received into a memory sink (``memory_sink``)."""
    sink = part.sink
    if not isinstance(sink, io.BytesIO):
        raise TypeError("read_memory_part needs attachments received into BytesIO sinks")
    return (sink.getvalue(),)


@dataclass(frozen=True, slots=True)
class OpenedPayload:
    """A payload as the backend gets it: after decryption and decompression, with its size and SHA-256."""

    content_id: str | None  # None for a payload in the SOAP Body
    mime_type: str | None
    size: int
    sha256: str
    encrypted: bool
    compressed: bool


@dataclass(frozen=True, slots=True)
class OpenedMessage:
    """What receiving proved about a message: its signature, its signer's trust path and its payloads."""

    received: ReceivedMessage
    signature: VerifiedSignature | None  # None only when the policy does not require signing and none is there
    trust: TrustResult | None
    payloads: tuple[OpenedPayload, ...]
    encrypted: frozenset[str]  # Content-IDs that arrived encrypted
    undecrypted: frozenset[str]  # ... of which no key was at hand
    warnings: tuple[str, ...] = ()
    # Each attachment as a re-openable plaintext stream (decrypted, still compressed): what the MSH stores.
    sources: Mapping[str, AttachmentSource] = field(default_factory=dict, compare=False)
    # Parts the PartInfo names that were not in the file at all (a SOAP part saved without its attachments).
    unavailable: frozenset[str] = frozenset()

    @property
    def complete(self) -> bool:
        """True when every part was decrypted and every signature reference checked."""
        unchecked = () if self.signature is None else self.signature.unchecked
        return not self.undecrypted and not self.unavailable and not unchecked


def payload_sources(
    received: ReceivedMessage,
    keys: Sequence[KeyPair],
    policy: SecurityPolicy,
    *,
    read_part: PartReader = read_memory_part,
    unavailable: frozenset[str] = frozenset(),
    spool: SpoolFactory | None = None,
) -> tuple[dict[str, AttachmentSource], frozenset[str], frozenset[str]]:
    """Each attachment as a re-openable plaintext stream, the encrypted Content-IDs and those left undecrypted.

    ``spool`` keeps a large part's plaintext once its first reading ends (see ``decrypt_attachments``).
    """
    encrypted = encrypted_content_ids(received.parsed)
    sources: dict[str, AttachmentSource] = {}
    undecrypted: frozenset[str] = frozenset()
    # Parts that are not there at all need no key; what remains to decrypt is decrypted as one message.
    if encrypted - unavailable:
        try:
            sources.update(decrypt_attachments(received, keys, policy, open_part=read_part, spool=spool))
        except DecryptionKeyMissing:
            undecrypted = encrypted
    for part in received.attachments:
        if part.content_id is None or part.content_id in encrypted:
            continue
        sources[part.content_id] = AttachmentSource(part.content_id, part.content_type, _reopen(read_part, part))
    return sources, encrypted, undecrypted


def _reopen(read_part: PartReader, part: ReceivedPart) -> Callable[[], Iterable[bytes]]:
    return lambda: read_part(part)


@dataclass(frozen=True, slots=True)
class SignedParts:
    """What decryption and the signature proved, before trust and decompression (``verify_parts``)."""

    received: ReceivedMessage
    signature: VerifiedSignature | None
    encrypted: frozenset[str]
    undecrypted: frozenset[str]
    unavailable: frozenset[str]
    sources: Mapping[str, AttachmentSource]
    warnings: tuple[str, ...] = ()


def verify_parts(
    received: ReceivedMessage,
    policy: SecurityPolicy,
    *,
    keys: Sequence[KeyPair] = (),
    partner_certificates: Iterable[x509.Certificate] = (),
    read_part: PartReader = read_memory_part,
    strict_coverage: bool = True,
    unavailable: frozenset[str] = frozenset(),
    tokens: TokenCache | None = None,
    spool: SpoolFactory | None = None,
) -> SignedParts:
    """The first steps of ``open_message``: decrypt (lazily) and verify the signature; EbmsError if they fail."""
    parsed = received.parsed
    sources, encrypted, undecrypted = payload_sources(
        received, keys, policy, read_part=read_part, unavailable=unavailable, spool=spool
    )
    if policy.encrypt and _user(parsed) is not None:
        plain = [cid for cid in sources if cid not in encrypted]
        if plain:
            raise EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, f"attachment {plain[0]!r} is not encrypted")
    signature: VerifiedSignature | None = None
    warnings: list[str] = []
    found = find_signature(parsed)
    if found is not None or policy.sign:
        lenient = not strict_coverage and _user(parsed) is None
        signature = verify_signature(
            parsed,
            sources,
            policy,
            candidates=partner_certificates,
            skip_attachments=undecrypted | unavailable,
            require_coverage=not lenient,
            found=found,
            tokens=tokens,
        )
        if lenient:
            warnings.extend(coverage_gaps(signature, parsed, sources, undecrypted | unavailable))
    return SignedParts(received, signature, encrypted, undecrypted, unavailable, sources, tuple(warnings))


def validate_signer(
    parts: SignedParts,
    trust: TrustSettings,
    *,
    at: datetime,
    revocation: RevocationSource | None,
    cache: TrustCache | None = None,
) -> TrustResult | None:
    """Trust in the signer of verified parts (TrustError, EBMS:0101, when there is none); None if unsigned."""
    if parts.signature is None:
        return None
    signer = parts.signature.signer
    party_id = _sender_party_id(parts.received)
    usage = CertificateUsage.SIGNATURE
    if cache is None:
        return validate_certificate(
            signer.certificate, signer.chain, trust, at=at, usage=usage, revocation=revocation, party_id=party_id
        )
    return cache.validate(
        signer.certificate, signer.chain, trust, at=at, usage=usage, revocation=revocation, party_id=party_id
    )


def open_payloads(
    parts: SignedParts,
    *,
    limits: DecompressionLimits = DEFAULT_LIMITS,
    keep: Callable[[str], PayloadSink] | None = None,
) -> tuple[OpenedPayload, ...]:
    """The last step of ``open_message``: each payload decompressed and hashed (EBMS:0303 past ``limits``).

    ``keep(content_id)`` gives a sink that is written the payload's plaintext in the same pass (what an MSH
    stores), so each part is read once more here and no more.
    """
    skipped = parts.undecrypted | parts.unavailable
    return tuple(_open_payloads(parts.received, dict(parts.sources), parts.encrypted, skipped, limits, keep))


def open_message(
    received: ReceivedMessage,
    policy: SecurityPolicy,
    *,
    at: datetime,
    keys: Sequence[KeyPair] = (),
    revocation: RevocationSource | None = None,
    partner_certificates: Iterable[x509.Certificate] = (),
    read_part: PartReader = read_memory_part,
    decompression: DecompressionLimits = DEFAULT_LIMITS,
    check_trust: bool = True,
    strict_coverage: bool = True,
    unavailable: frozenset[str] = frozenset(),
    tokens: TokenCache | None = None,
    trust_cache: TrustCache | None = None,
) -> OpenedMessage:
    """Decrypt, verify, validate the signer's certificate and decompress; raise the EbmsError to answer with.

    ``strict_coverage=False`` turns AS4's coverage rule (Messaging, Body payload, every attachment signed)
    into warnings for signals, for a diagnostic tool; user messages are always held to it. ``unavailable``
    names attachments that are not there at all (a diagnostic tool reading a SOAP part alone): their
    references stay unchecked, as for an attachment without its key. ``tokens`` and ``trust_cache`` are a
    verifier's caches (none without them). The steps one by one: ``verify_parts``, ``validate_signer``,
    ``open_payloads``.
    """
    parts = verify_parts(
        received,
        policy,
        keys=keys,
        partner_certificates=partner_certificates,
        read_part=read_part,
        strict_coverage=strict_coverage,
        unavailable=unavailable,
        tokens=tokens,
    )
    warnings = list(parts.warnings)
    trust: TrustResult | None = None
    if check_trust:
        trust = validate_signer(parts, policy.trust, at=at, revocation=revocation, cache=trust_cache)
        if trust is not None:
            warnings.extend(trust.warnings)
    payloads = open_payloads(parts, limits=decompression)
    return OpenedMessage(
        received,
        parts.signature,
        trust,
        payloads,
        parts.encrypted,
        parts.undecrypted,
        tuple(dict.fromkeys(warnings)),
        parts.sources,
        parts.unavailable,
    )


class TrustCache:
    """Trust decisions about signers, reused while nothing but the clock could change them.

    With revocation off, ``validate_certificate`` depends on the certificate and its chain, the trust settings,
    the usage, the PartyId (when bound) and the moment; a path that held once holds at any moment inside the
    validity period of every certificate on it, and that is checked again on each reuse. Never cached:
    failures, and any decision with revocation on (a revocation must count at once; the revocation cache keeps
    answers). Keys are identities: a ``TokenCache`` decodes a partner's token once, so its certificates are the
    same objects in every message; an entry holds its objects, so no id is reused while it lives. One instance
    belongs to one verifier.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: dict[tuple[object, ...], tuple[tuple[object, ...], TrustResult]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def validate(
        self,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate],
        trust: TrustSettings,
        *,
        at: datetime,
        usage: CertificateUsage,
        revocation: RevocationSource | None,
        party_id: str | None,
    ) -> TrustResult:
        """``validate_certificate``, its positive decisions reused within the validity of the path."""
        if trust.revocation is not RevocationMode.OFF or at.tzinfo is None:
            return validate_certificate(
                certificate, chain, trust, at=at, usage=usage, revocation=revocation, party_id=party_id
            )
        held = (certificate, *chain, trust)
        key = (*map(id, held), usage, party_id if trust.bind_cn_to_party_id else None)
        entry = self._entries.get(key)
        if entry is not None:
            objects, result = entry
            same = len(objects) == len(held) and all(a is b for a, b in zip(objects, held, strict=True))
            if same and all(c.not_valid_before_utc <= at <= c.not_valid_after_utc for c in result.path):
                return result
        result = validate_certificate(certificate, chain, trust, at=at, usage=usage, revocation=None, party_id=party_id)
        with self._lock:
            while len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (held, result)
        return result


def _user(parsed: ParsedEnvelope) -> UserMessage | None:
    message = parsed.messaging.message
    return message if isinstance(message, UserMessage) else None


def _sender_party_id(received: ReceivedMessage) -> str | None:
    user = _user(received.parsed)
    if user is None or not user.party_info.sender.party_ids:
        return None
    return user.party_info.sender.party_ids[0].value


class PayloadSink(Protocol):
    """Where ``open_payloads`` writes a payload's plaintext while it hashes it."""

    def write(self, data: bytes, /) -> object:
        """Take the next chunk."""
        ...


def _open_payloads(
    received: ReceivedMessage,
    sources: dict[str, AttachmentSource],
    encrypted: frozenset[str],
    undecrypted: frozenset[str],
    limits: DecompressionLimits,
    keep: Callable[[str], PayloadSink] | None = None,
) -> Iterator[OpenedPayload]:
    user = _user(received.parsed)
    if user is None:
        return
    for part in user.payload_info:
        content_id = part.content_id
        if content_id is None:
            yield _body_payload(received, part)
            continue
        if content_id in undecrypted:
            continue
        source = sources.get(content_id)
        if source is None:
            raise EbmsError(ErrorCode.MIME_INCONSISTENCY, f"no attachment for {part.href!r}")
        compressed = part.compression_type == GZIP
        chunks: Iterable[bytes] = source.open()
        if compressed:
            chunks = decompress_with(chunks, limits)
        digest = hashlib.sha256()
        size = 0
        sink = None if keep is None else keep(content_id)
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            if sink is not None:
                sink.write(chunk)
        yield OpenedPayload(content_id, part.mime_type, size, digest.hexdigest(), content_id in encrypted, compressed)


def _body_payload(received: ReceivedMessage, part: PartInfo) -> OpenedPayload:
    element = received.parsed.body_payload
    data = b"" if element is None else etree.tostring(element)
    return OpenedPayload(
        None, part.mime_type or "application/xml", len(data), hashlib.sha256(data).hexdigest(), False, False
    )
