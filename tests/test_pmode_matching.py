"""P-Mode matching: incoming user messages to a leg (or EBMS:0001 / EBMS:0004), submissions to a route."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from accesspoint.core.errors import ErrorCode
from accesspoint.core.model import (
    AgreementRef,
    CollaborationInfo,
    MessageInfo,
    Party,
    PartyId,
    PartyInfo,
    Service,
    UserMessage,
)
from accesspoint.core.namespaces import DEFAULT_MPC
from accesspoint.security.keys import load_certificates
from accesspoint.security.policy import Profile
from pmode import Direction, MatchStatus, PModeSet, Route, load_pmodes
from pmode.document import dump_yaml
from pmode.model import INITIATOR_ROLE, RESPONDER_ROLE

EXAMPLES = Path(__file__).resolve().parent.parent / "pmode" / "examples"
UNREGISTERED = "urn:oasis:names:tc:ebcore:partyid-type:unregistered"
LETTERS = Service("urn:example:service:letters", "urn:example:service-type")
AGREEMENT = AgreementRef("urn:example:agreement:se-be", "urn:example:agreement-type")


@pytest.fixture(scope="module")
def pmodes() -> PModeSet:
    """The example P-Modes (1.15 and 2.0 partners)."""
    return load_pmodes(EXAMPLES / "pmodes.yaml")


def message(
    *,
    sender: str = "AP-BE-0115",
    receiver: str = "AP-SE-0001",
    sender_role: str = INITIATOR_ROLE,
    receiver_role: str = RESPONDER_ROLE,
    service: Service = LETTERS,
    action: str = "Deliver",
    agreement: AgreementRef | None = AGREEMENT,
    mpc: str | None = None,
) -> UserMessage:
    """A received user message header with the given collaboration and parties."""
    return UserMessage(
        message_info=MessageInfo("m1@example", datetime(2026, 1, 1, tzinfo=UTC)),
        party_info=PartyInfo(
            sender=Party((PartyId(sender, UNREGISTERED),), sender_role),
            receiver=Party((PartyId(receiver, UNREGISTERED),), receiver_role),
        ),
        collaboration_info=CollaborationInfo(service, action, "conv-1", agreement),
        mpc=mpc,
    )


def test_incoming_message_finds_its_leg_and_security_policy(pmodes: PModeSet) -> None:
    """A message from the 1.15 partner matches be-to-se leg 1, whose policy pins that partner's certificate."""
    match = pmodes.match_incoming(message())
    assert match.status is MatchStatus.MATCHED and match.error_code is None and match.ebms_error() is None
    route = match.route
    assert route is not None and route.name == "be-to-se/1"
    assert route.leg.direction is Direction.INCOMING
    assert route.security.profile is Profile.EDELIVERY_1_15
    assert route.security.trust.pinned == tuple(load_certificates(EXAMPLES / "certs" / "partner-115.pem"))
    assert route.partner.name == "partner-115"


def test_reply_of_two_way_exchange_matches_second_leg(pmodes: PModeSet) -> None:
    """The 2.0 partner's Reply (responder to initiator) matches leg 2 of the push-and-push P-Mode."""
    reply = message(
        sender="AP-NO-0200",
        sender_role=RESPONDER_ROLE,
        receiver_role=INITIATOR_ROLE,
        service=Service("urn:example:service:lookup", "urn:example:service-type"),
        action="Reply",
        agreement=None,
    )
    route = pmodes.match_incoming(reply).route
    assert route is not None and route.name == "se-no-request-reply/2"
    assert route.security.profile is Profile.EDELIVERY_2_0


@pytest.mark.parametrize(
    ("changes", "criterion"),
    [
        ({"action": "Unknown"}, "action 'Unknown'"),
        ({"service": Service("urn:example:service:letters")}, "service"),
        ({"agreement": None}, "agreement None"),
        ({"agreement": AgreementRef("urn:example:other", "urn:example:agreement-type")}, "agreement"),
        ({"sender": "AP-XX-9999"}, "From 'AP-XX-9999'"),
        ({"sender_role": RESPONDER_ROLE}, "From 'AP-BE-0115'"),
        ({"receiver": "AP-SE-9999"}, "To 'AP-SE-9999'"),
        ({"mpc": "urn:example:other-mpc"}, "MPC 'urn:example:other-mpc'"),
    ],
)
def test_unmatched_message_gives_ebms_0001_naming_the_criterion(
    pmodes: PModeSet, changes: dict[str, Any], criterion: str
) -> None:
    """When no P-Mode agrees, the result is EBMS:0001 and its reason names the first criterion that failed."""
    match = pmodes.match_incoming(message(**changes))
    assert match.status is MatchStatus.NONE and match.route is None
    assert match.error_code is ErrorCode.VALUE_NOT_RECOGNIZED
    assert criterion in match.reason
    error = match.ebms_error(ref_to_message_id="m1@example")
    assert error is not None and error.code == "EBMS:0001" and error.ref_to_message_id == "m1@example"
    assert error.log_detail == match.reason


def test_explicit_default_mpc_matches_like_an_absent_one(pmodes: PModeSet) -> None:
    """eb:UserMessage/@mpc naming the default MPC matches a leg on the default MPC."""
    assert pmodes.match_incoming(message(mpc=DEFAULT_MPC)).status is MatchStatus.MATCHED


def test_agreement_pmode_attribute_is_ignored_where_the_id_is_not_shared(pmodes: PModeSet) -> None:
    """AgreementRef/@pmode means nothing to a P-Mode whose id is not shared (phase4 sends its own ids)."""
    for named in ("be-to-se", "no-to-se", "phase4-pmode-id"):
        agreement = AgreementRef(AGREEMENT.value, AGREEMENT.type, pmode=named)
        match = pmodes.match_incoming(message(agreement=agreement))
        assert match.status is MatchStatus.MATCHED and match.route is not None
        assert match.route.pmode.id == "be-to-se"


def _with_shared_ids(tmp_path: Path, *, twin: bool = False) -> PModeSet:
    """The examples with be-to-se's id shared with the partner (and a shared-id twin that fits the same messages)."""
    shutil.copytree(EXAMPLES / "certs", tmp_path / "certs")
    document = yaml.safe_load((EXAMPLES / "pmodes.yaml").read_text())
    original = next(p for p in document["pmodes"] if p["id"] == "be-to-se")
    original["shared_id"] = True
    if twin:
        document["pmodes"].append(dict(original, id="be-to-se-twin"))
    (tmp_path / "pmodes.yaml").write_text(dump_yaml(document))
    return load_pmodes(tmp_path / "pmodes.yaml")


def test_refuses_agreement_pmode_naming_another_pmode_than_the_shared_id_one(tmp_path: Path) -> None:
    """A shared-id P-Mode: its own id or none matches; another id is EBMS:0010 referring to the message."""
    shared = _with_shared_ids(tmp_path)
    for named in ("be-to-se", None):
        match = shared.match_incoming(message(agreement=AgreementRef(AGREEMENT.value, AGREEMENT.type, pmode=named)))
        assert match.status is MatchStatus.MATCHED
    other = AgreementRef(AGREEMENT.value, AGREEMENT.type, pmode="phase4-pmode-id")
    match = shared.match_incoming(message(agreement=other))
    assert match.status is MatchStatus.MISMATCH and match.route is None
    error = match.ebms_error(ref_to_message_id="m1@example")
    assert error is not None and error.error_code is ErrorCode.PROCESSING_MODE_MISMATCH
    assert error.ref_to_message_id == "m1@example" and "phase4-pmode-id" in error.log_detail


def test_agreement_pmode_attribute_picks_among_shared_id_pmodes_that_fit_equally(tmp_path: Path) -> None:
    """Two shared-id P-Modes fit: @pmode names the one that governs; without it the match stays ambiguous."""
    shared = _with_shared_ids(tmp_path, twin=True)
    assert shared.match_incoming(message()).status is MatchStatus.AMBIGUOUS
    named = AgreementRef(AGREEMENT.value, AGREEMENT.type, pmode="be-to-se-twin")
    match = shared.match_incoming(message(agreement=named))
    assert match.status is MatchStatus.MATCHED and match.route is not None
    assert match.route.pmode.id == "be-to-se-twin"
    outgoing = shared.match_submission(pmode_id="se-to-be").route
    assert outgoing is not None and outgoing.agreement_ref is not None and outgoing.agreement_ref.pmode is None
    assert shared.routes(Direction.INCOMING)[0].agreement_ref == AgreementRef(
        AGREEMENT.value, AGREEMENT.type, pmode="be-to-se"
    )


def test_overlapping_pmodes_are_ambiguous_and_give_ebms_0004(tmp_path: Path) -> None:
    """Two P-Modes accepting the same message make the match ambiguous (our configuration's fault: EBMS:0004)."""
    shutil.copytree(EXAMPLES / "certs", tmp_path / "certs")
    document = yaml.safe_load((EXAMPLES / "pmodes.yaml").read_text())
    twin = dict(next(p for p in document["pmodes"] if p["id"] == "be-to-se"), id="be-to-se-twin")
    document["pmodes"].append(twin)
    (tmp_path / "pmodes.yaml").write_text(dump_yaml(document))
    match = load_pmodes(tmp_path / "pmodes.yaml").match_incoming(message())
    assert match.status is MatchStatus.AMBIGUOUS
    assert match.candidates == ("be-to-se/1", "be-to-se-twin/1")
    assert match.error_code is ErrorCode.OTHER
    error = match.ebms_error()
    assert error is not None and error.code == "EBMS:0004"


def test_submission_to_partner_gives_endpoint_certificate_and_header(pmodes: PModeSet) -> None:
    """A submission to the 1.15 partner's PartyId gives the route with endpoint, certificate and eb:From/To."""
    match = pmodes.match_submission(to_party="AP-BE-0115", action="Deliver")
    route = match.route
    assert route is not None and route.name == "se-to-be/1"
    assert route.endpoint == "https://ap-be.example/as4"
    assert route.partner_encryption_certificate == load_certificates(EXAMPLES / "certs" / "partner-115.pem")[0]
    assert route.from_party == Party((PartyId("AP-SE-0001", UNREGISTERED),), INITIATOR_ROLE)
    assert route.to_party == Party((PartyId("AP-BE-0115", UNREGISTERED),), RESPONDER_ROLE)
    assert route.agreement_ref == AgreementRef(AGREEMENT.value, AGREEMENT.type)
    assert not route.dynamic


def test_submission_by_pmode_id_and_2_0_encryption_certificate(pmodes: PModeSet) -> None:
    """Naming the P-Mode selects its outgoing leg; for 2.0 the separate X25519 certificate is the one to encrypt to."""
    route = pmodes.match_submission(pmode_id="se-no-request-reply").route
    assert route is not None and route.name == "se-no-request-reply/1" and route.leg.action == "Request"
    assert route.partner_encryption_certificate == load_certificates(EXAMPLES / "certs" / "partner-20-enc.pem")[0]
    assert route.partner_signing_certificate == load_certificates(EXAMPLES / "certs" / "partner-20-sign.pem")[0]
    assert route.agreement_ref is None


def test_submission_criteria_that_match_nothing_or_several(pmodes: PModeSet) -> None:
    """An unknown recipient matches nothing; an action shared by two partners alone is ambiguous."""
    none = pmodes.match_submission(to_party="AP-XX-0000", action="Deliver")
    assert none.status is MatchStatus.NONE and "To 'AP-XX-0000'" in none.reason
    assert pmodes.match_submission(action="Request").status is MatchStatus.MATCHED
    typed = pmodes.match_submission(service=LETTERS, to_party=PartyId("AP-BE-0115", UNREGISTERED))
    assert typed.status is MatchStatus.MATCHED
    several = pmodes.match_submission(service="urn:example:service:letters")
    assert several.status is MatchStatus.MATCHED  # only se-to-be sends letters; the other letters legs are incoming
    assert pmodes.match_submission().status is MatchStatus.AMBIGUOUS


def test_dynamic_partner_has_no_static_endpoint() -> None:
    """A Peppol submission to any PartyId matches the dynamic P-Mode, whose endpoint comes from discovery."""
    pmodes = load_pmodes(EXAMPLES / "peppol.yaml")
    route = pmodes.match_submission(to_party=PartyId("POP000999", "urn:fdc:peppol.eu:2017:identifiers:ap")).route
    assert route is not None and route.pmode.id == "peppol-invoice-out"
    assert route.dynamic and route.endpoint is None and route.partner_encryption_certificate is None
    incoming = message(
        sender="POP000999",
        receiver="POP000123",
        service=route.leg.service,
        action=route.leg.action,
        agreement=None,
    )
    # Our own PartyId must match exactly (type included), so a message of the wrong type is refused.
    assert pmodes.match_incoming(incoming).status is MatchStatus.NONE


def test_pull_legs(tmp_path: Path) -> None:
    """One-Way/Pull: as responder we serve the message on the leg's MPC; as initiator we pull from the partner."""
    shutil.copytree(EXAMPLES / "certs", tmp_path / "certs")
    document = yaml.safe_load((EXAMPLES / "pmodes.yaml").read_text())
    mpc = "urn:example:mpc:be"
    pull = {
        "id": "be-pulls",
        "network": "edelivery-1.15",
        "binding": "pull",
        "initiator": {"party": "partner-115"},
        "responder": {"party": "ap-sweden"},
        "legs": [
            {
                "service": {"value": "urn:example:service:letters", "type": "urn:example:service-type"},
                "action": "Collect",
                "mpc": mpc,
                "security": {"trust": {"pin_partner": True}},
            }
        ],
    }
    we_pull = {
        **pull,
        "id": "se-pulls",
        "initiator": {"party": "ap-sweden"},
        "responder": {"party": "partner-115"},
        "legs": [{**pull["legs"][0], "mpc": "urn:example:mpc:se"}],  # type: ignore[index]
    }
    document["pmodes"] += [pull, we_pull]
    (tmp_path / "pmodes.yaml").write_text(dump_yaml(document))
    pmodes = load_pmodes(tmp_path / "pmodes.yaml")
    (served,) = pmodes.pull_requests_to_serve(mpc)
    assert served.name == "be-pulls/1" and served.leg.direction is Direction.OUTGOING
    assert served.endpoint is None  # the partner pulls it: we never POST it
    assert pmodes.pull_requests_to_serve(DEFAULT_MPC) == []
    (pulling,) = pmodes.pull_requests_to_send()
    assert pulling.name == "se-pulls/1" and pulling.leg.direction is Direction.INCOMING
    assert pulling.endpoint == "https://ap-be.example/as4"  # where our PullRequest goes
    assert pulling.leg.mpc == "urn:example:mpc:se"


def _sent(route: Route) -> UserMessage:
    """The header an MSH builds from an outgoing route."""
    collaboration = CollaborationInfo(route.leg.service, route.leg.action, "conv-1", route.agreement_ref)
    return UserMessage(
        message_info=MessageInfo("m2@example", datetime(2026, 1, 1, tzinfo=UTC)),
        party_info=PartyInfo(route.from_party, route.to_party),
        collaboration_info=collaboration,
        mpc=None if route.leg.mpc == DEFAULT_MPC else route.leg.mpc,
    )


@pytest.mark.parametrize(("sender", "receiver"), [("pmodes.yaml", "partner.yaml"), ("partner.yaml", "pmodes.yaml")])
def test_every_message_one_peer_sends_matches_the_other_peers_leg(sender: str, receiver: str) -> None:
    """Each outgoing route's header, received by the example peer, matches the same P-Mode leg with equal security."""
    ours, theirs = load_pmodes(EXAMPLES / sender), load_pmodes(EXAMPLES / receiver)
    routes = ours.routes(Direction.OUTGOING)
    assert len(routes) in (2, 3)  # ours: se-to-be and the request; theirs: be-to-se, no-to-se and the reply
    for route in routes:
        match = theirs.match_incoming(_sent(route))
        assert match.route is not None, match.reason
        assert (match.route.pmode.id, match.route.leg.index) == (route.pmode.id, route.leg.index)
        mine, peer = route.security, match.route.security
        agreed = ("profile", "signature_algorithm", "digest_algorithm", "data_encryption", "token_reference")
        assert all(getattr(mine, name) == getattr(peer, name) for name in agreed), route.name
        agreement_key = "key_transport" if mine.profile is Profile.EDELIVERY_1_15 else "key_agreement"
        assert getattr(mine, agreement_key) == getattr(peer, agreement_key)
