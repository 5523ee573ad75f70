"""secure_message's work per payload: a small compressed part is compressed once, a large one streams each time."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from accesspoint.core.compression import decompress_stream
from accesspoint.core.message import read_message
from accesspoint.core.model import CollaborationInfo, MessageInfo, Party, PartyId, PartyInfo, Service, UserMessage
from accesspoint.security import outbound
from accesspoint.security.inbound import open_message
from accesspoint.security.outbound import Payload, secure_message
from accesspoint.security.policy import RevocationMode, SecurityPolicy, TrustSettings
from accesspoint.testing.pki import issue, make_ca

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PLAIN = os.urandom(3000).hex().encode()  # compressible, a few KB


def _user_message() -> UserMessage:
    return UserMessage(
        message_info=MessageInfo(message_id="once@se", timestamp=NOW),
        party_info=PartyInfo(
            sender=Party((PartyId("AP-SE"),), "initiator"), receiver=Party((PartyId("AP-NO"),), "responder")
        ),
        collaboration_info=CollaborationInfo(
            service=Service("urn:example:service"), action="Deliver", conversation_id="c1"
        ),
    )


@pytest.mark.parametrize(("keep", "openings"), [(outbound.KEEP_COMPRESSED, 1), (1024, 2)])
def test_a_compressed_part_is_compressed_once_unless_it_is_large(
    monkeypatch: pytest.MonkeyPatch, keep: int, openings: int
) -> None:
    """Signing and packing share one compression of a small part; past the limit the part is read again as a stream;
    either way the receiver verifies the signature and gets the plaintext back."""
    monkeypatch.setattr(outbound, "KEEP_COMPRESSED", keep)
    ca = make_ca("Outbound CA", "rsa")
    sender, receiver = issue(ca, "AP-SE", "rsa"), issue(ca, "AP-NO", "rsa")
    policy = SecurityPolicy.edelivery_1_15(
        trust=TrustSettings(anchors=(ca.certificate,), revocation=RevocationMode.OFF)
    )
    opened_times = 0

    def source() -> list[bytes]:
        nonlocal opened_times
        opened_times += 1
        return [PLAIN[:2000], PLAIN[2000:]]

    secured = secure_message(
        _user_message(),
        [Payload("letter@se", "application/xml", source)],
        policy,
        signing_key=sender,
        recipient_certificate=receiver.certificate,
    )
    body = b"".join(secured.packed.body)
    assert opened_times == openings
    received = read_message(secured.packed.content_type, body)
    opened = open_message(received, policy, at=NOW, keys=(receiver,))
    assert opened.signature is not None
    assert b"".join(decompress_stream(opened.sources["letter@se"].open(), limit=10**6)) == PLAIN
