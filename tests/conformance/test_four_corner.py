"""eDelivery AS4 Four Corner Topology enhancement, AS4_4CT_TA01-TA03 (TAD v1.2): C1 -> C2 -> C3 -> C4.

C1 and C4 are the test driver, C2 and C3 the access points; what C2 sent is read from the interceptor.
"""

from __future__ import annotations

from accesspoint.core.model import Property, UserMessage
from tests.conformance.bed import FOUR_CORNER, Bed, ProfileKeys


def _sent(bed: Bed, profile: ProfileKeys, label: str, **fields: object) -> tuple[str, UserMessage]:
    message = bed.business(profile, "SIMPLE_ONEWAY", label, **fields)  # type: ignore[arg-type]
    answer = bed.submit(profile, message, label=label)
    assert answer.receipt is not None, answer
    assert message.message_id is not None
    exchange = bed.exchange(message.message_id)
    assert 200 <= exchange.status < 300
    assert exchange.answer.signal is not None and exchange.answer.signal.receipt is not None
    user = exchange.capture.request.user_message
    assert user is not None
    return message.message_id, user


def test_as4_4ct_ta01(bed: Bed, profile: ProfileKeys) -> None:
    """End-entity addressing. Prerequisite: the producer submits its own and the consumer's ids. Predicate: the
    message's MessageProperties carry originalSender (C1) and finalRecipient (C4), and C4 gets them."""
    message_id, user = _sent(bed, profile, "4ct-ta01")
    original_sender, final_recipient = FOUR_CORNER
    assert user.original_sender == original_sender
    assert user.final_recipient == final_recipient
    delivered = bed.delivery(message_id).properties
    assert original_sender in delivered and final_recipient in delivered


def test_as4_4ct_ta02(bed: Bed, profile: ProfileKeys) -> None:
    """Tracking. Prerequisite: the producer sets a trackingIdentifier property. Predicate: the RMSH answers with
    a receipt in an HTTP 2xx response and the property reaches the consumer."""
    tracking = Property("trackingIdentifier", "C1C2Identifier")
    message_id, user = _sent(bed, profile, "4ct-ta02", properties=(*FOUR_CORNER, tracking))
    assert user.tracking_identifier == tracking
    assert tracking in bed.delivery(message_id).properties


def test_as4_4ct_ta03(bed: Bed, profile: ProfileKeys) -> None:
    """MSH addressing. Prerequisite: a four-corner exchange. Predicate: From/PartyId and To/PartyId name the
    access points (C2, C3), not the end entities (C1, C4)."""
    _, user = _sent(bed, profile, "4ct-ta03")
    (sender,) = user.party_info.sender.party_ids
    (receiver,) = user.party_info.receiver.party_ids
    assert (sender.value, receiver.value) == (profile.c2_party, profile.c3_party)
    end_entities = {p.value for p in FOUR_CORNER}
    assert not end_entities & {sender.value, receiver.value}
