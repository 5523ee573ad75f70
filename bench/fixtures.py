"""What the benchmarks send: a Peppol-like eDelivery AS4 1.15 user message and generated payload streams."""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final

from accesspoint.core.message import payload_part_info
from accesspoint.core.model import (
    AgreementRef,
    CollaborationInfo,
    MessageInfo,
    Party,
    PartyId,
    PartyInfo,
    Property,
    Service,
    UserMessage,
)
from accesspoint.core.namespaces import MessageProperty, PartyIdType

KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB

PEPPOL_AP: Final = PartyIdType.PEPPOL_AP.value
INITIATOR: Final = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"
RESPONDER: Final = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"
INVOICE_DOCTYPE: Final = (
    "busdox-docid-qns::urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice"
    "##urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0::2.1"
)
PAYLOAD_CID: Final = "a4a3b2c1-5e6f-4a7b-8c9d-0e1f2a3b4c5d@sender.example"
NOW: Final = datetime(2026, 11, 29, 9, 0, 0, 123000, tzinfo=UTC)


def user_message(
    *,
    message_id: str = "5f0c6a7e-9b1d-4c3e-8a2f-6d4b3c2a1e0f@sender.example",
    content_id: str = PAYLOAD_CID,
    mime_type: str = "application/xml",
    compressed: bool = True,
) -> UserMessage:
    """A Peppol-like eDelivery AS4 1.15 header: AP parties, agreement, typed service, action, four corners."""
    return UserMessage(
        message_info=MessageInfo(message_id=message_id, timestamp=NOW),
        party_info=PartyInfo(
            sender=Party((PartyId("POP000123", PEPPOL_AP),), INITIATOR),
            receiver=Party((PartyId("POP000456", PEPPOL_AP),), RESPONDER),
        ),
        collaboration_info=CollaborationInfo(
            service=Service("urn:fdc:peppol.eu:2017:poacc:billing:01:1.0", "cenbii-procid-ubl"),
            action=INVOICE_DOCTYPE,
            conversation_id="c3b1e2f4-7a8d-4e6b-9c0a-1f2e3d4c5b6a@sender.example",
            agreement_ref=AgreementRef("urn:fdc:peppol.eu:2017:agreements:tia:ap_provider"),
        ),
        message_properties=(
            Property(MessageProperty.ORIGINAL_SENDER.value, "0007:5567321707", "iso6523-actorid-upis"),
            Property(MessageProperty.FINAL_RECIPIENT.value, "0007:2021005448", "iso6523-actorid-upis"),
        ),
        payload_info=(payload_part_info(content_id, mime_type, compressed=compressed),),
    )


def invoice_attachment(size: int = 4 * KIB) -> bytes:
    """A gzip stream of about ``size`` bytes, as an attachment arrives after the sender compressed it."""
    rng = random.Random(4096)
    # Incompressible content keeps the gzip output at the size asked for (plus the 18-byte gzip frame).
    return gzip.compress(rng.randbytes(size - 18), compresslevel=6, mtime=0)


def random_block(size: int = MIB, seed: int = 2026) -> bytes:
    """A block of pseudo-random bytes (deflate cannot shrink it: the worst case for gzip)."""
    return random.Random(seed).randbytes(size)


def payload_chunks(total: int, chunk_size: int = 64 * KIB, block: bytes | None = None) -> Iterator[bytes]:
    """``total`` bytes as ``chunk_size`` chunks cut from a repeating pseudo-random block (never all in memory)."""
    source = random_block() if block is None else block
    if len(source) % chunk_size:
        raise ValueError("the block must be a whole number of chunks")
    offset = 0
    remaining = total
    while remaining > 0:
        size = min(chunk_size, remaining)
        yield source[offset : offset + size]
        offset = (offset + size) % len(source)
        remaining -= size
