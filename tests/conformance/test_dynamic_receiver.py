"""eDelivery AS4 Dynamic Receiver enhancement, AS4_DR_TA01-TA04 (TAD v1.2): C3 without a configured sender.

C3's P-Mode ``DYNAMIC_RECEIVER-<profile>`` names no initiator party (``endpoint: dynamic``, no PartyIds, no
certificate): it takes the message of any sender whose certificate chains to the trust anchor, asserts the
network's certificate policy and has the sender's PartyId (``c2``) as its CN. The interceptor re-signs C2's
message with certificates it issues itself, as the test bed does with the sender's keys.
"""

from __future__ import annotations

from collections.abc import Callable

from accesspoint.core.errors import ErrorCode, Severity
from accesspoint.core.model import UserMessage
from accesspoint.security.keys import KeyPair
from accesspoint.testing.pki import issue, make_ca
from tests.conformance.bed import (
    DYNAMIC_POLICY,
    DYNAMIC_SENDER_ID,
    XML_PAYLOAD,
    Bed,
    Capture,
    Exchange,
    Forward,
    ProfileKeys,
    opened_parts,
    resecure,
)

PMODE = "DYNAMIC_RECEIVER"


def _signed_by(bed: Bed, profile: ProfileKeys, label: str, signer: Callable[[], KeyPair]) -> Exchange:
    """C2's message on the dynamic receiver P-Mode, re-signed by the interceptor with ``signer``."""
    message = bed.business(profile, PMODE, label)
    keys = signer()

    def hook(capture: Capture) -> Forward | None:
        if capture.message_id != message.message_id:
            return None
        user, parts = opened_parts(profile, capture, PMODE)
        return Forward(replace=resecure(profile, "c3", PMODE, user, parts, signer=keys))

    with bed.hooked(hook):
        bed.submit(profile, message, label=label)
        return bed.exchange(str(message.message_id))


def _kind(profile: ProfileKeys) -> str:
    return "rsa" if profile.name == "1.15" else "ed25519"


def _sender(exchange: Exchange) -> UserMessage:
    user = exchange.capture.request.user_message
    assert user is not None
    return user


def _refused(exchange: Exchange) -> None:
    signal = exchange.answer.signal
    assert signal is not None, exchange.status
    (error,) = signal.errors
    assert (error.error_code, error.severity) == (ErrorCode.FAILED_AUTHENTICATION.code, Severity.FAILURE)
    assert error.ref_to_message_in_error == _sender(exchange).message_id


def test_as4_dr_ta01(bed: Bed, profile: ProfileKeys) -> None:
    """Trusted sender. Prerequisite: the RMSH's P-Mode has no Initiator.Party, only a trust anchor. Predicate: a
    message signed with a certificate that chains to the anchor (and meets the network's rules) is accepted."""
    exchange = _signed_by(
        bed, profile, "dr-ta01", lambda: issue(bed.ca, DYNAMIC_SENDER_ID, _kind(profile), policies=(DYNAMIC_POLICY,))
    )
    assert [p.value for p in _sender(exchange).party_info.sender.party_ids] == [DYNAMIC_SENDER_ID]
    signal = exchange.answer.signal
    assert 200 <= exchange.status < 300 and signal is not None and signal.receipt is not None, signal
    assert bed.delivery(_sender(exchange).message_id).payloads == (XML_PAYLOAD,)


def test_as4_dr_ta02(bed: Bed, profile: ProfileKeys) -> None:
    """Untrusted sender. Prerequisite: as TA01. Predicate: a message signed with a certificate that does not
    chain to the trust anchor gets an error (EBMS:0101)."""
    other = make_ca("Conformance Other CA")
    _refused(
        _signed_by(
            bed, profile, "dr-ta02", lambda: issue(other, DYNAMIC_SENDER_ID, _kind(profile), policies=(DYNAMIC_POLICY,))
        )
    )


def test_as4_dr_ta03(bed: Bed, profile: ProfileKeys) -> None:
    """Missing policy. Prerequisite: as TA01, the network requiring a certificate policy. Predicate: a message
    signed with a certificate from the anchor that lacks the required policy gets an error (EBMS:0101)."""
    _refused(_signed_by(bed, profile, "dr-ta03", lambda: issue(bed.ca, DYNAMIC_SENDER_ID, _kind(profile))))


def test_as4_dr_ta04(bed: Bed, profile: ProfileKeys) -> None:
    """PartyId not the subject's. Prerequisite: as TA01. Predicate: a message whose From PartyId does not match
    its signing certificate's subject gets an error (EBMS:0101)."""
    _refused(
        _signed_by(
            bed, profile, "dr-ta04", lambda: issue(bed.ca, "someone-else", _kind(profile), policies=(DYNAMIC_POLICY,))
        )
    )
