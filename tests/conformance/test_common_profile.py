"""eDelivery AS4 Common Profile test assertions AS4_CP_TA01-TA46 (TAD v1.2), run C2 -> interceptor -> C3.

Each test's docstring is the assertion's prerequisite and predicate; the tests act as the test driver (C1/C4):
they send Submit to C2's (or C3's) conformance service, and collect Deliver and Notify.
"""

from __future__ import annotations

from accesspoint.core.model import SignalMessage
from tests.conformance.bed import Bed, ProfileKeys


def _receipted(signal: SignalMessage) -> None:
    assert signal.receipt is not None, signal


def test_as4_cp_ta01(bed: Bed, profile: ProfileKeys) -> None:
    """One-Way/Push: the SMSH sends a user message -> the RMSH answers with a non-repudiation receipt in an HTTP
    2xx response; the message is delivered to the consumer and the producer is notified of the receipt."""
    message = bed.business(profile, "SIMPLE_ONEWAY", "ta01")
    _receipted(bed.submit(profile, message, label="ta01"))
    assert message.message_id is not None
    exchange = bed.exchange(message.message_id)
    assert 200 <= exchange.status < 300
    receipt = exchange.answer.signal
    assert receipt is not None and receipt.receipt is not None
    assert receipt.receipt.is_non_repudiation
    assert receipt.message_info.ref_to_message_id == message.message_id
    delivered = bed.delivery(message.message_id)
    assert delivered.payloads == message.payloads
    notified = bed.notification(message.message_id)
    assert notified.signal_type == "Receipt"
