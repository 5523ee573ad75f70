"""``make demo``: what the access point can do so far, shown on the embedded default (no servers needed)."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime
from pathlib import Path

from accesspoint.core.compression import compress_stream, decompress_stream
from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.errors import EbmsError
from accesspoint.core.message import Attachment, pack_bare, pack_message, payload_part_info, read_message
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
from accesspoint.core.signals import build_error_signal, build_receipt

INTEROP = Path(__file__).resolve().parent.parent.parent / "shared" / "interop"


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def demo_user_message() -> None:
    """Build, pack, read back and acknowledge a Swedish digital-post message."""
    now = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    letter = b"<Letter xmlns='urn:example:digitalpost'><Subject>Your parking permit</Subject></Letter>" * 20
    pdf = b"%PDF-1.7 (a stand-in for the letter's PDF)\n" * 200
    message = UserMessage(
        message_info=MessageInfo(message_id="demo-1@skatteverket.example", timestamp=now),
        party_info=PartyInfo(
            sender=Party((PartyId("2021005448", "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007"),), "sender"),
            receiver=Party((PartyId("5567890123", "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007"),), "operator"),
        ),
        collaboration_info=CollaborationInfo(
            service=Service("urn:digitalpost:delivery", "digitalpost"),
            action="deliverSecure",
            conversation_id="conv-1",
            agreement_ref=AgreementRef("urn:digitalpost:agreement:2026"),
        ),
        message_properties=(
            Property("originalSender", "0007:2021005448", "urn:oasis:names:tc:ebcore:partyid-type:iso6523"),
            Property("finalRecipient", "198112289874", "personnummer"),
        ),
        payload_info=(
            payload_part_info("letter@demo", "application/xml", compressed=True, character_set="UTF-8"),
            payload_part_info("letter-pdf@demo", "application/pdf", compressed=True),
        ),
    )
    envelope = serialize(build_envelope(message))
    packed = pack_message(
        envelope,
        [
            Attachment("letter@demo", "application/gzip", compress_stream([letter])),
            Attachment("letter-pdf@demo", "application/gzip", compress_stream([pdf])),
        ],
    )
    wire = packed.to_bytes()
    _say("1. A user message from an agency (0007:2021005448) to a mailbox operator, for personnummer 198112289874")
    _say(
        f"   packed as {packed.content_type.split(';')[0]}: {len(wire)} B on the wire, SOAP header {len(envelope)} B"
    )
    received = read_message(packed.content_type, [wire[i : i + 1000] for i in range(0, len(wire), 1000)])
    assert received.parsed.header == message
    for part in message.payload_info:
        stored = received.attachment(part.content_id or "")
        assert stored is not None and isinstance(stored.sink, io.BytesIO)
        plain = b"".join(decompress_stream([stored.sink.getvalue()]))
        _say(f"   read back part {part.href}: {stored.size} B gzip -> {len(plain)} B {part.mime_type}")
    _say("   the parsed header equals the one built: yes")
    receipt = build_receipt(message, (), message_id="receipt-1@operator.example", now=now)
    receipt_bytes = serialize(build_envelope(receipt))
    _say(f"2. The operator's receipt for {receipt.message_info.ref_to_message_id} ({len(receipt_bytes)} B, bare SOAP)")
    _say("   carries a copy of the UserMessage, as AS4 asks for an unsigned message (signing comes next)")
    broken = pack_bare(
        envelope.replace(b"<eb:MessageId>", b"<eb:MessageIdX>").replace(b"</eb:MessageId>", b"</eb:MessageIdX>")
    )
    try:
        read_message(broken.content_type, broken.to_bytes())
    except EbmsError as error:
        signal = build_error_signal([error], message_id="error-1@operator.example", now=now)
        info = signal.errors[0]
        _say(
            f"3. A malformed message gets {info.error_code} {info.short_description}: {error.detail[:64]}..."
        )


def demo_interop() -> None:
    """Read real messages from other implementations, when the interop folder is beside the project."""
    if not INTEROP.is_dir():
        _say("4. (the interop vectors in ../shared/interop are not here; skipping real messages)")
        return
    from accesspoint.cli import load_message

    _say("4. Real messages from other implementations:")
    for relative in (
        "python-peers/as4.usermessage.mime",
        "phase4/messages/dump-raw.as4out",
        "phase4/receipts/governikus.as4in",
        "python-peers/as4.error-EBMS0101-by-as4.xml",
    ):
        content_type, body = load_message(str(INTEROP / relative), None)
        parsed = read_message(content_type, body).parsed
        _say(f"   {relative:45} {parsed.messaging.kind:13} {parsed.header.message_id}")


def main() -> None:
    """Run the demo."""
    _say("AS4 access point demo: the message core (sans-I/O)")
    _say()
    demo_user_message()
    demo_interop()


if __name__ == "__main__":
    main()
