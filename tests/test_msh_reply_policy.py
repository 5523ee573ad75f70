"""A refused message is answered in its leg's profile: a 2.0 partner gets an Ed25519-signed error signal."""

from __future__ import annotations

from datetime import UTC, datetime

from lxml import etree

from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.model import CollaborationInfo, MessageInfo, Party, PartyId, PartyInfo, Service, UserMessage
from accesspoint.core.namespaces import NS, SoapVersion
from accesspoint.msh.config import KeyRing
from accesspoint.msh.receiving import error_response, reply_policy
from accesspoint.security.keys import load_key_pair
from accesspoint.security.policy import Profile
from pmode import load_pmodes
from tests.conftest import REPO

EXAMPLES = REPO / "pmode" / "examples"
UNREGISTERED = "urn:oasis:names:tc:ebcore:partyid-type:unregistered"
INITIATOR = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"
RESPONDER = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"


def _from_norway(action: str) -> bytes:
    user = UserMessage(
        message_info=MessageInfo(message_id="m@no", timestamp=datetime(2026, 11, 30, tzinfo=UTC)),
        party_info=PartyInfo(
            sender=Party((PartyId("AP-NO-0200", UNREGISTERED),), INITIATOR),
            receiver=Party((PartyId("AP-SE-0001", UNREGISTERED),), RESPONDER),
        ),
        collaboration_info=CollaborationInfo(
            service=Service("urn:example:service:letters", "urn:example:service-type"),
            action=action,
            conversation_id="c",
        ),
    )
    return serialize(build_envelope(user))


def _ring() -> KeyRing:
    certs = EXAMPLES / "certs"
    rsa = load_key_pair(certs / "ap-sweden-sign.key.pem", certificate=certs / "ap-sweden-sign.pem")
    ed25519 = load_key_pair(certs / "ap-sweden-sign-2.0.key.pem", certificate=certs / "ap-sweden-sign-2.0.pem")
    return KeyRing((rsa, ed25519))


def _signature_method(signal: bytes) -> str:
    method = etree.fromstring(signal).find(f".//{{{NS.DS}}}SignatureMethod")
    assert method is not None
    return str(method.get("Algorithm"))


def test_error_for_a_message_on_a_2_0_leg_is_signed_with_ed25519() -> None:
    """The unsigned message matches the 2.0 P-Mode no-to-se: its error signal is signed as 2.0 signs."""
    pmodes = load_pmodes(EXAMPLES / "pmodes.yaml")
    received = read_message("application/soap+xml", _from_norway("Deliver"))
    policy = reply_policy(received, pmodes)
    assert policy is not None and policy.profile is Profile.EDELIVERY_2_0
    error = EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, "the message is not signed", ref_to_message_id="m@no")
    ring = _ring()
    body = error_response(
        error, keys=ring.signing_key(policy), policy=policy, soap_version=SoapVersion.V12, at=datetime.now(UTC)
    )
    assert _signature_method(body).endswith("eddsa-ed25519")


def test_error_for_an_unmatched_message_falls_back_to_the_first_key() -> None:
    """No P-Mode matches (unknown action): no leg policy, so the default key's profile signs (RSA here)."""
    pmodes = load_pmodes(EXAMPLES / "pmodes.yaml")
    received = read_message("application/soap+xml", _from_norway("Unknown"))
    assert reply_policy(received, pmodes) is None
    assert reply_policy(None, pmodes) is None
    error = EbmsError(ErrorCode.VALUE_NOT_RECOGNIZED, "no P-Mode", ref_to_message_id="m@no")
    body = error_response(
        error, keys=_ring().signing_key(), policy=None, soap_version=SoapVersion.V12, at=datetime.now(UTC)
    )
    assert _signature_method(body).endswith("rsa-sha256")
