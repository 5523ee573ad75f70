"""eDelivery AS4 Dynamic Sender enhancement, AS4_DS_TA01-TA03 (TAD v1.2): C2 finds C3 through BDXL and SMP.

C2's P-Mode templates name no responder certificate or address (``endpoint: dynamic``); dnsmasq answers the
BDXL lookups and the project's SMP server (run by the harness) publishes C3's endpoint (the interceptor) and
certificate. AS4 1.15 only: an AS4 2.0 partner needs a separate X25519 certificate, which eDelivery's SMP
metadata has no place for (this access point reads one only from SDK's CertPub extension).
"""

from __future__ import annotations

import os

import pytest

from accesspoint.core.errors import ErrorCode
from accesspoint.core.model import PartyId, Property
from tests.conformance.bed import (
    DS_DISCOVERED,
    DS_FOUR_CORNER,
    DS_POINT_TO_POINT,
    DS_STALE,
    UNREGISTERED,
    XML_PAYLOAD,
    Bed,
    Exchange,
    ProfileKeys,
)


@pytest.fixture(params=["1.15"])
def profile(request: pytest.FixtureRequest, bed: Bed) -> ProfileKeys:
    """The AS4 1.15 view of the bed, where discovery runs (dnsmasq needed; its absence fails under CI=true)."""
    if bed.discovery is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(bed.discovery)
        pytest.skip(bed.discovery)
    return bed.profiles[request.param]


def _sent(bed: Bed, profile: ProfileKeys, label: str, pmode: str, participant: str, **fields: object) -> Exchange:
    """Submit on a dynamic sender P-Mode, the Submit naming the participant, and wait for C3's answer."""
    scheme, _, value = participant.partition("::")
    message = bed.business(profile, pmode, label, to_party=PartyId(value, scheme), **fields)
    answer = bed.submit(profile, message, label=label)
    assert answer.receipt is not None, answer
    return bed.exchange(str(message.message_id))


def _final_recipient(participant: str) -> tuple[Property, Property]:
    scheme, _, value = participant.partition("::")
    return (Property("originalSender", "0088:c1", scheme), Property("finalRecipient", value, scheme))


def _to(exchange: Exchange) -> PartyId:
    user = exchange.capture.request.user_message
    assert user is not None
    (party_id,) = user.party_info.receiver.party_ids
    return party_id


def _receipted(exchange: Exchange) -> None:
    signal = exchange.answer.signal
    assert 200 <= exchange.status < 300 and signal is not None and signal.receipt is not None, signal


def test_as4_ds_ta01(bed: Bed, profile: ProfileKeys) -> None:
    """Four corners. Prerequisite: C2 has a P-Mode template without Responder.Party, encryption certificate and
    address; the finalRecipient is registered in discovery, naming C3; the producer sets originalSender and
    finalRecipient. Predicate: C2's message has To/PartyId set to the discovered C3, C3 takes it and answers with a
    non-repudiation receipt that C2 accepts."""
    properties = _final_recipient(DS_FOUR_CORNER)
    exchange = _sent(bed, profile, "ds-ta01", "DYNAMIC_SENDER", DS_FOUR_CORNER, properties=properties)
    assert _to(exchange) == PartyId(DS_DISCOVERED, UNREGISTERED)
    _receipted(exchange)
    message_id = str(exchange.capture.message_id)
    assert bed.notification(message_id).signal_type == "Receipt"
    assert bed.delivery(message_id).payloads == (XML_PAYLOAD,)


def test_as4_ds_ta02(bed: Bed, profile: ProfileKeys) -> None:
    """Point to point. Prerequisite: C2's P-Mode names C3 as Responder.Party but not its encryption certificate
    or address; C3 is registered in discovery. Predicate: C2's message has To/PartyId set to the discovered C3,
    and C3 answers with a non-repudiation receipt."""
    exchange = _sent(bed, profile, "ds-ta02", "DYNAMIC_SENDER_P2P", DS_POINT_TO_POINT, properties=())
    assert _to(exchange) == PartyId(DS_DISCOVERED, DS_POINT_TO_POINT.partition("::")[0])
    _receipted(exchange)
    assert bed.notification(str(exchange.capture.message_id)).signal_type == "Receipt"


def test_as4_ds_ta03(bed: Bed, profile: ProfileKeys) -> None:
    """Receipt from another certificate. Prerequisite: as TA01, but discovery registers a certificate other than
    the one C3 signs with (C3 can still decrypt with it). Predicate: C3 takes the message and answers with a
    receipt, which C2 fails to accept, and C2 reports an error to the producer."""
    exchange = _sent(bed, profile, "ds-ta03", "DYNAMIC_SENDER", DS_STALE, properties=_final_recipient(DS_STALE))
    _receipted(exchange)
    notified = bed.notification(str(exchange.capture.message_id))
    assert (notified.signal_type, notified.error_code) == ("Error", ErrorCode.INVALID_RECEIPT.code)
