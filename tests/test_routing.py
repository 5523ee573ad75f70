"""The router's sans-I/O decision: every route and every refusal, from header facts and FaR's answer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import (
    CollaborationInfo,
    MessageInfo,
    Party,
    PartyId,
    PartyInfo,
    Property,
    Service,
    UserMessage,
)
from accesspoint.routing.decision import (
    FarFailure,
    MessageFacts,
    Refusal,
    RouteKind,
    RoutingDecision,
    classify,
    decide,
    decide_routes,
    forward_route,
    no_agreement,
    sender_party,
)
from accesspoint.routing.outbound import (
    DISCOVERY,
    PartnerResolver,
    RouteRecords,
    RouteTarget,
    RouteUnavailable,
    addressed,
)
from accesspoint.routing.settings import NetworkDiscovery, parse_discovery, parse_routing
from accesspoint.routing.shell import Routing
from accesspoint.servicekit.settings import SettingsError
from accesspoint.store import (
    Database,
    Direction,
    DuplicateMessage,
    EvidenceKind,
    MessageStore,
    NewEvidence,
    NewPayload,
    StoredMessage,
)
from accesspoint.store import MessageInfo as StoreInfo
from accesspoint.store.clock import ManualClock
from accesspoint.store.hooks import TransactionHook
from accesspoint.store.routes import RouteTargets
from far.identifiers import with_check_digit
from far.model import AccountStatus, create_engine, upgrade_schema
from far.service import FarService, Operator, OperatorStatus, Reachability, Reason, Routes
from pmode import PModeSet, load_pmodes
from pmode.model import INITIATOR_ROLE as INITIATOR
from pmode.model import RESPONDER_ROLE as RESPONDER
from tests.conftest import REPO
from tests.inmemory import eventually

CERTS = REPO / "pmode" / "examples" / "certs"
UNREGISTERED = "urn:oasis:names:tc:ebcore:partyid-type:unregistered"
SENDER = with_check_digit("202100544")  # a Swedish authority's organisationsnummer
PERSON = "19" + with_check_digit("7802022389"[:9])
OPERATOR = Operator(with_check_digit("556840226"), "Mailbox AB", "AP-OPERATOR-1", "https://op.example/as4")


def facts(recipient: str | None, sender: str | None = f"0007:{SENDER}", **extra: object) -> MessageFacts:
    """A message to ``recipient`` from ``sender`` (iso6523-actorid-upis when it has an ICD)."""
    kind = "iso6523-actorid-upis" if sender and ":" in sender else None
    return MessageFacts("m@x", recipient, original_sender=sender, original_sender_type=kind, **extra)  # type: ignore[arg-type]


def reachable(recipient: str = PERSON, endpoint: str | None = OPERATOR.endpoint) -> Reachability:
    """FaR's answer for a recipient with a mailbox at OPERATOR."""
    return Reachability(recipient, True, None, OPERATOR, endpoint or DISCOVERY, True)


def unreachable(reason: Reason, recipient: str = PERSON) -> Reachability:
    """FaR's answer for a recipient that cannot be reached."""
    return Reachability(recipient, False, reason, None, None, reason is not Reason.SENDER_REFUSED)


def test_a_message_without_final_recipient_stays_for_the_backend() -> None:
    """No finalRecipient: the message is this access point's own (local), no FaR needed."""
    assert classify(facts(None)).kind is RouteKind.LOCAL
    assert decide(facts(None)).kind is RouteKind.LOCAL


@pytest.mark.parametrize(
    "recipient",
    [PERSON, "19" + with_check_digit("780262238"), "16" + SENDER, "SE/NO/12345678"],
    ids=["personnummer", "samordningsnummer", "organisation", "eidas"],
)
def test_digital_post_asks_far_and_goes_to_the_operator(recipient: str) -> None:
    """A Swedish person or company (or eIDAS id) is digital post: FaR is asked, the operator is the target."""
    destination = classify(facts(recipient))
    assert (destination.kind, destination.recipient, destination.sender) == (
        RouteKind.OPERATOR,
        recipient,
        f"0007:{SENDER}",
    )
    assert destination.needs_far
    decision = decide(facts(recipient), reachable(recipient))
    assert (decision.kind, decision.operator, decision.endpoint) == (RouteKind.OPERATOR, OPERATOR, OPERATOR.endpoint)
    assert not decision.refused
    assert "Mailbox AB" in decision.describe()


def test_an_operator_found_through_discovery_keeps_the_discovery_endpoint() -> None:
    """FaR's endpoint "discovery" is carried to the decision (the operator is found through SMP later)."""
    decision = decide(facts(PERSON), reachable(endpoint=DISCOVERY))
    assert decision.endpoint == DISCOVERY and "found through SMP" in decision.describe()


@pytest.mark.parametrize("reason", list(Reason))
def test_every_far_refusal_is_ebms_0004_with_the_reason(reason: Reason) -> None:
    """An unreachable recipient or refused sender: EBMS:0004 whose detail starts with FaR's reason."""
    decision = decide(facts(PERSON), unreachable(reason))
    assert decision.refused and decision.reason == reason.value
    error = decision.error()
    assert error.error_code is ErrorCode.OTHER and error.code == "EBMS:0004"
    assert error.detail.startswith(f"{reason.value}: {PERSON}")
    assert error.ref_to_message_id == "m@x"


def test_far_unavailable_is_a_clear_refusal_not_silence() -> None:
    """FaR down: EBMS:0004 far-unavailable, telling the sender to try again later."""
    decision = decide(facts(PERSON), FarFailure(unavailable=True, detail="connection refused"))
    assert decision.refused and decision.reason == Refusal.FAR_UNAVAILABLE
    assert decision.error().detail.startswith("far-unavailable: ") and "try again later" in decision.error().detail
    assert decide(facts(PERSON), None).reason == Refusal.FAR_UNAVAILABLE


def test_far_refusing_the_question_is_an_invalid_sender() -> None:
    """FaR refuses the request itself (a sender it does not accept as input): invalid-sender."""
    decision = decide(facts(PERSON), FarFailure(unavailable=False, detail="sender: wrong check digit"))
    assert decision.reason == Refusal.INVALID_SENDER and "wrong check digit" in decision.detail


@pytest.mark.parametrize("sender", [None, "urn:no:authority", "0088:5798000000001", "0007:1234567890"])
def test_digital_post_from_something_that_is_not_an_orgnr_is_refused(sender: str | None) -> None:
    """originalSender must be a Swedish organisationsnummer: otherwise invalid-sender, without asking FaR."""
    destination = classify(facts(PERSON, sender))
    assert destination.kind is RouteKind.REFUSED and destination.reason == Refusal.INVALID_SENDER
    assert not destination.needs_far
    assert decide(facts(PERSON, sender)).error().detail.startswith("invalid-sender: ")


@pytest.mark.parametrize("given", [SENDER, "16" + SENDER, f"0007:{SENDER}", f"iso6523-actorid-upis::0007:{SENDER}"])
def test_sender_party_forms(given: str) -> None:
    """A Swedish sender is read from 10 digits, 16 + 10 digits, 0007:… and scheme::0007:… as 0007:<orgnr>."""
    assert sender_party(given, None) == f"0007:{SENDER}"


def test_foreign_senders_are_read_as_their_party_ids() -> None:
    """A Finnish (0216, or the older 0212) and a Norwegian originalSender are senders too, typed or not."""
    assert sender_party("0212:0112038-9", "iso6523-actorid-upis") == "0216:003701120389"
    assert sender_party("iso6523-actorid-upis::0192:974760673", None) == "0192:974760673"
    assert sender_party("0192:974760674", None) is None  # wrong check digit: invalid-sender


def test_sdk_message_to_a_swedish_organisation_goes_to_sdk_discovery() -> None:
    """An SDK message (XHE / SDK P-Mode) to 0007 or 0203 is routed through SDK's SMP."""
    for icd in ("0007", "0203"):
        decision = decide(facts(f"{icd}:{SENDER}", sdk=True, final_recipient_type="iso6523-actorid-upis"))
        assert decision.kind is RouteKind.SDK
        assert decision.participant == f"iso6523-actorid-upis::{icd}:{SENDER}"


def test_foreign_participant_goes_to_bdxl_and_smp() -> None:
    """Any other scheme::value participant (and 0007 outside SDK) is found through BDXL + SMP."""
    assert decide(facts("iso6523-actorid-upis::0088:5798000000001")).kind is RouteKind.PARTICIPANT
    assert decide(facts("iso6523-actorid-upis::0007:" + SENDER)).kind is RouteKind.PARTICIPANT


def test_a_recipient_that_fits_no_route_is_refused() -> None:
    """A finalRecipient that is neither Swedish nor scheme::value: unknown-recipient."""
    decision = decide(facts("somebody"))
    assert decision.refused and decision.reason == Refusal.UNKNOWN_RECIPIENT


@pytest.mark.parametrize("sender", [SENDER, "0192:974760673", "not-a-sender"])
def test_a_mailing_batch_is_decided_as_each_letter_would_be(sender: str) -> None:
    """decide_routes gives, row for row and in order, the decision decide() gives each recipient (repeats too)."""
    discovered = Operator(with_check_digit("556780750"), "Other AB", "AP-OPERATOR-2", None)
    routes = Routes(
        [(OPERATOR, str(OPERATOR.endpoint)), (discovered, DISCOVERY)],
        [0, "no-mailbox", 1, "invalid-identifier", "sender-refused", 0, "operator-suspended", 1, "invalid-identifier",
         "invalid-identifier", 0],
    )  # fmt: skip
    people = ["19" + with_check_digit(f"7802{day:02d}238") for day in range(1, 9)]
    recipients = [*people, "bogus", "iso6523-actorid-upis::0088:5798000000001", people[0]]
    decided = decide_routes(sender, recipients, routes)
    assert len(decided) == len(recipients)
    for index, (recipient, decision) in enumerate(zip(recipients, decided, strict=True)):
        expected = decide(MessageFacts(recipient, recipient, original_sender=sender), routes.answer(recipient, index))
        if isinstance(decision, int):
            assert expected.kind is RouteKind.OPERATOR
            assert (expected.operator, expected.endpoint) == routes.operators[decision]
        else:
            assert expected.kind is not RouteKind.OPERATOR and decision == expected
    assert any(isinstance(d, int) for d in decided) is (sender != "not-a-sender")


# ------------------------------------------------------------------------------------ forwarding P-Modes


def _pmodes(tmp_path: Path) -> Path:
    security = {"trust": {"anchors": [str(CERTS / "ca.pem")], "revocation": "off"}}
    leg = {"service": {"value": "urn:example:post", "type": "urn:example:t"}, "action": "Deliver", "security": security}
    document = {
        "version": 1,
        "self": "ap-sweden",
        "parties": {
            "ap-sweden": {"party_ids": [{"value": "AP-SE-0001", "type": UNREGISTERED}], "endpoint": "http://se/as4"},
            "operator": {
                "party_ids": [{"value": "AP-OPERATOR-1", "type": UNREGISTERED}],
                "endpoint": "dynamic",
                "signing_certificate": str(CERTS / "partner-115.pem"),
            },
            "network": {"endpoint": "dynamic"},
            "nordic": {"party_ids": [{"value": "AP-BE-0115", "type": UNREGISTERED}], "endpoint": "http://no/as4",
                       "signing_certificate": str(CERTS / "partner-115.pem")},
        },
        "pmodes": [
            {"id": "from-nordic", "network": "edelivery-1.15", "initiator": {"party": "nordic"},
             "responder": {"party": "ap-sweden"}, "legs": [leg]},
            {"id": "to-operator", "network": "edelivery-1.15", "initiator": {"party": "ap-sweden"},
             "responder": {"party": "operator"}, "legs": [leg]},
            {"id": "to-network", "network": "edelivery-1.15", "initiator": {"party": "ap-sweden"},
             "responder": {"party": "network"}, "legs": [leg]},
        ],
    }  # fmt: skip
    path = tmp_path / "pmodes.yaml"
    path.write_text(json.dumps(document))
    return path


def test_forward_route_names_the_operator_party_or_the_dynamic_partner(tmp_path: Path) -> None:
    """To an operator: the P-Mode whose receiver is the operator's party; to a participant: a dynamic one."""
    pmodes = load_pmodes(_pmodes(tmp_path))
    to_operator = decide(facts(PERSON), reachable())
    route = forward_route(to_operator, pmodes, action="Deliver")
    assert route is not None and route.pmode.id == "to-operator"
    forced = forward_route(to_operator, pmodes, action="Deliver", pmode_id="to-network")
    assert forced is not None and forced.pmode.id == "to-network"
    foreign = decide(facts("iso6523-actorid-upis::0088:5798000000001"))
    route = forward_route(foreign, pmodes, action="Deliver")
    assert route is not None and route.pmode.id == "to-network" and route.dynamic
    assert forward_route(foreign, pmodes, action="Other") is None
    stranger = Operator("5560000000", "Other AB", "AP-UNKNOWN", "https://x/as4")
    elsewhere = RoutingDecision(RouteKind.OPERATOR, "m@x", PERSON, operator=stranger, endpoint="https://x/as4")
    assert forward_route(elsewhere, pmodes, action="Deliver") is None
    refusal = no_agreement(elsewhere)
    assert refusal.reason == Refusal.NO_AGREEMENT and "Other AB" in refusal.error().detail


async def test_a_route_target_is_kept_with_its_message_and_earlier_files_are_taken_in(tmp_path: Path) -> None:
    """A target written with its message is read back as written; targets an older version kept as JSON files
    are taken into the database once (the files removed), without overwriting one recorded there."""
    store = await MessageStore.open(f"sqlite:///{tmp_path / 'ap.db'}", tmp_path / "files")
    records = RouteRecords(RouteTargets(store.db))
    target = RouteTarget("fwd-1", "m1", OPERATOR.id, OPERATOR.name, OPERATOR.party_id, "https://op/as4")
    try:
        assert await records.get("fwd-1") is None
        now = datetime.now(UTC)
        await store.submit(StoreInfo("fwd-1"), [], now=now, hooks=[records.hook(target, now=now)])
        assert await records.get("fwd-1") == target
        assert "Mailbox AB" in target.describe() and "https://op/as4" in target.describe()
        folder = tmp_path / "routing"
        folder.mkdir()
        older = RouteTarget("fwd-2", "m2", OPERATOR.id, OPERATOR.name, OPERATOR.party_id, "https://op2/as4")
        for name, kept in (("a", older), ("b", replace(target, endpoint="https://elsewhere/as4"))):
            fields = {
                "message_id": kept.message_id, "original_message_id": kept.original_message_id,
                "operator_id": kept.operator_id, "operator_name": kept.operator_name, "party_id": kept.party_id,
                "endpoint": kept.endpoint,
            }  # fmt: skip
            (folder / f"{name}.json").write_text(json.dumps(fields))
        assert await records.adopt_folder(folder) == 1
        assert await records.get("fwd-2") == older and await records.get("fwd-1") == target
        assert list(folder.iterdir()) == []
    finally:
        await store.close()


def test_routing_and_discovery_settings_name_their_mistakes(tmp_path: Path) -> None:
    """Each bad setting is reported with its field."""
    where = "server.yaml: field routing"
    with pytest.raises(ValueError, match=r"routing\.far: required"):
        parse_routing(tmp_path, {"token": "x" * 16}, where)
    with pytest.raises(ValueError, match=r"routing\.token"):
        parse_routing(tmp_path, {"far": "http://far", "token": "short"}, where)
    with pytest.raises(ValueError, match=r"routing\.bogus: unknown setting"):
        parse_routing(tmp_path, {"far": "http://far", "bogus": 1}, where)
    settings = parse_routing(tmp_path, {"far": "http://far:8470/", "pmodes": ["in"], "timeout": "500ms"}, where)
    assert settings is not None and settings.far_url == "http://far:8470" and settings.pmodes == ("in",)
    assert settings.timeout.total_seconds() == 0.5
    in_process = parse_routing(tmp_path, {"far": {"database": "sqlite+aiosqlite:///far.db"}}, where)
    assert in_process is not None and in_process.far_settings.database.endswith(str(tmp_path / "far.db"))
    with pytest.raises(ValueError, match=r"discovery\.zone: required"):
        parse_discovery(tmp_path, {"smp_trust": "x.pem"}, "field discovery")
    with pytest.raises(ValueError, match=r"discovery\.dns"):
        parse_discovery(
            tmp_path, {"zone": "z", "smp_trust": str(CERTS / "ca.pem"), "dns": "nowhere"}, "field discovery"
        )
    discovery = parse_discovery(
        tmp_path, {"zone": "z.", "smp_trust": str(CERTS / "ca.pem"), "dns": "127.0.0.1:53"}, "d"
    )
    assert discovery is not None and discovery.zone == "z" and discovery.nameserver == ("127.0.0.1", 53)


def test_routing_settings_report_every_mistake_and_take_the_shared_durations(tmp_path: Path) -> None:
    """All of routing's mistakes come at once, a FaR table's included; 5m and PT5S are durations here too."""
    where = "server.yaml: field routing"
    with pytest.raises(SettingsError) as caught:
        parse_routing(tmp_path, {"far": {"port": -1}, "token": "short", "timeout": "soon", "bogus": 1}, where)
    assert [p.removeprefix(f"{where}.").split(":")[0] for p in caught.value.problems] == [
        "bogus",
        "far.port",
        "token",
        "timeout",
    ]
    for text, seconds in (("5m", 300), ("PT5S", 5), ("1m30s", 90)):
        settings = parse_routing(tmp_path, {"far": "http://far", "timeout": text}, where)
        assert settings is not None and settings.timeout.total_seconds() == seconds


async def test_a_network_may_have_its_own_discovery_zone(tmp_path: Path) -> None:
    """discovery.networks.sdk: SDK partners are looked up in SDK's zone, every other network in the default one."""
    trust = str(CERTS / "ca.pem")
    section = {"zone": "peppol.example", "smp_trust": trust, "networks": {"sdk": {"zone": "sdk.example"}}}
    settings = parse_discovery(tmp_path, section, "field discovery")
    assert isinstance(settings, NetworkDiscovery)
    sdk = settings.for_network("sdk")
    assert (sdk.zone, sdk.smp_trust) == ("sdk.example", settings.smp_trust)  # the truststore is inherited
    resolver = PartnerResolver(settings, _records(tmp_path))
    try:
        sdk_client, peppol_client = resolver.client("sdk"), resolver.client("peppol")
        assert sdk_client is not None and peppol_client is not None
        assert (sdk_client.settings.zone, peppol_client.settings.zone) == ("sdk.example", "peppol.example")
        assert resolver.client("edelivery-1.15") is peppol_client  # one client, one cache, for the rest
    finally:
        await resolver.close()
    with pytest.raises(ValueError, match=r"discovery\.networks\.sdk\.bogus: unknown setting"):
        parse_discovery(tmp_path, {**section, "networks": {"sdk": {"bogus": 1}}}, "field discovery")
    assert PartnerResolver(None, _records(tmp_path)).client("sdk") is None


async def test_far_in_process_answers_and_far_unreachable_is_a_failure(tmp_path: Path) -> None:
    """FaR run in-process from a settings mapping answers; a FaR URL nobody listens on gives FarFailure."""
    in_process = parse_routing(tmp_path, {"far": {"database": "sqlite+aiosqlite:///far.db"}}, "routing")
    assert in_process is not None
    routing = Routing(None, _records(tmp_path), routing=in_process)
    try:
        assert routing.far is not None
        answer = await routing.far.is_reachable(SENDER, PERSON)
        assert isinstance(answer, Reachability) and answer.reason is Reason.NO_MAILBOX
        assert decide(facts(PERSON), answer).error().detail.startswith("no-mailbox: ")
    finally:
        await routing.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        down = parse_routing(tmp_path, {"far": f"http://127.0.0.1:{port}", "timeout": "2s"}, "routing")
        assert down is not None
        routing = Routing(None, _records(tmp_path), routing=down)
        try:
            assert routing.far is not None
            failure = await routing.far.is_reachable(SENDER, PERSON)
            assert isinstance(failure, FarFailure) and failure.unavailable
        finally:
            await routing.close()


async def test_a_forwarded_message_goes_to_the_endpoint_its_route_record_names(tmp_path: Path) -> None:
    """The operator's endpoint comes from the record (FaR), its certificate from the P-Mode; none is an error."""
    pmodes = load_pmodes(_pmodes(tmp_path))
    store = await MessageStore.open(f"sqlite:///{tmp_path / 'ap.db'}", tmp_path / "files")
    records = RouteRecords(RouteTargets(store.db))
    resolver = PartnerResolver(None, records)
    routes = {r.pmode.id: r for r in pmodes.routes()}
    header = UserMessage(
        message_info=MessageInfo(message_id="fwd-1", timestamp=datetime.now(UTC)),
        party_info=PartyInfo(routes["to-operator"].from_party, routes["to-operator"].to_party),
        collaboration_info=CollaborationInfo(
            service=Service("urn:example:post"), action="Deliver", conversation_id="c"
        ),
    )
    target = RouteTarget("fwd-1", "m1", OPERATOR.id, OPERATOR.name, "AP-OPERATOR-1", "https://op.example/as4")
    now = datetime.now(UTC)
    await store.submit(StoreInfo("fwd-1"), [], now=now, hooks=[records.hook(target, now=now)])
    await store.close()
    resolved = await resolver.resolve("fwd-1", header, routes["to-operator"], at=datetime.now(UTC))
    assert resolved.endpoint == "https://op.example/as4"
    assert resolved.partner_signing_certificate == routes["to-operator"].partner.signing_certificate
    assert addressed(header, resolved).party_info.receiver.party_ids[0].value == "AP-OPERATOR-1"
    with pytest.raises(EbmsError, match="no signing_certificate for operator Mailbox AB"):
        await resolver.resolve("fwd-1", header, routes["to-network"], at=datetime.now(UTC))
    with pytest.raises(EbmsError, match="no discovery settings"):  # no record: discovery, which is not set up
        await resolver.resolve("fwd-2", header, routes["to-network"], at=datetime.now(UTC))


async def test_a_route_target_is_remembered_once_committed_and_a_duplicate_replaces_nothing(tmp_path: Path) -> None:
    """A target committed with its message is read back without the database; a duplicate's is neither written nor
    remembered; a new process reads the stored one."""
    store = await MessageStore.open(f"sqlite:///{tmp_path / 'ap.db'}", tmp_path / "files")
    records = RouteRecords(RouteTargets(store.db))
    first = RouteTarget("fwd-1", "m1", OPERATOR.id, OPERATOR.name, "AP-OPERATOR-1", "https://op.example/as4")
    other = replace(first, endpoint="https://elsewhere.example/as4")
    now = datetime.now(UTC)
    try:
        await store.submit(StoreInfo("fwd-1"), [], now=now, hooks=[records.hook(first, now=now)])
        with pytest.raises(DuplicateMessage):
            await store.submit(StoreInfo("fwd-1"), [], now=now, hooks=[records.hook(other, now=now)])
        read: list[str] = []
        stored_get = records.targets.get

        async def counted(message_id: str) -> Any:
            read.append(message_id)
            return await stored_get(message_id)

        records.targets.get = counted  # type: ignore[method-assign]
        assert await records.get("fwd-1") == first and read == []
        restarted = RouteRecords(RouteTargets(store.db))
        assert await restarted.get("fwd-1") == first and await restarted.get("fwd-2") is None
    finally:
        await store.close()


async def test_far_questions_asked_meanwhile_go_in_one_request_each_answered_as_alone(tmp_path: Path) -> None:
    """Letters asking FaR at once are answered from one routes request, each with its own recipient's answer."""
    far_url, far = await _far_with_person(tmp_path)
    await far.engine.dispose()
    settings = parse_routing(tmp_path, {"far": {"database": far_url}}, "routing")
    routing = Routing(None, _records(tmp_path), routing=settings)
    assert routing.far is not None
    nobody = "19" + with_check_digit("121212121")  # no mailbox in FaR
    try:
        alone = [await routing.far.is_reachable(SENDER, r) for r in (PERSON, nobody)]
        lookup = routing.far._lookup
        assert isinstance(lookup, FarService)
        asked: list[Sequence[str]] = []
        routes = lookup.routes

        async def counted(sender: str, recipients: Sequence[str]) -> Routes:
            asked.append(list(recipients))
            return await routes(sender, recipients)

        lookup.routes = counted  # type: ignore[method-assign]
        together = await asyncio.gather(*(routing.far.is_reachable(SENDER, r) for r in [PERSON, nobody] * 5))
        assert asked == [[PERSON, nobody] * 5]
        assert together == alone * 5 and together[0] != together[1]
    finally:
        await routing.close()


def test_an_sdk_message_is_forwarded_on_the_sdk_pmode_with_a_dynamic_partner() -> None:
    """SDK's example P-Modes: a message to 0203:… arriving on sdk-receive goes out on sdk-push (SDK discovery)."""
    pmodes = load_pmodes(REPO / "pmode" / "examples" / "sdk.yaml")
    (incoming,) = [r for r in pmodes.routes() if r.pmode.id == "sdk-receive"]
    decision = decide(facts(f"0203:{SENDER}", final_recipient_type="iso6523-actorid-upis", sdk=True))
    assert decision.kind is RouteKind.SDK
    route = forward_route(decision, pmodes, action=incoming.leg.action)
    assert route is not None and route.pmode.id == "sdk-push" and route.dynamic
    assert route.pmode.transport_profile == "digg-transport-as4-v1_0"  # what SDK's SMP is asked for
    foreign = decide(facts(f"0203:{SENDER}", final_recipient_type="iso6523-actorid-upis"))
    assert forward_route(foreign, pmodes, action=incoming.leg.action) is None  # only SDK legs here


def _records(tmp_path: Path) -> RouteRecords:
    """Route records over a database that is never opened (for tests that do not read or write one)."""
    return RouteRecords(RouteTargets(Database(f"sqlite:///{tmp_path / 'unused.db'}")))


class _Submitter:
    """The access point as forwarding sees it: P-Modes, store, and a submit that stores and remembers."""

    def __init__(self, pmodes: PModeSet, store: MessageStore) -> None:
        self.pmodes = pmodes
        self.store: MessageStore | None = store
        self.submitted: list[dict[str, Any]] = []

    async def submit(
        self,
        document: dict[str, Any],
        files: Sequence[NewPayload] | None = None,
        *,
        hooks: Sequence[TransactionHook] = (),
    ) -> StoredMessage:
        self.submitted.append(document)
        assert self.store is not None
        info = StoreInfo(str(document["message_id"]))
        return await self.store.submit(info, list(files or ()), now=datetime.now(UTC), hooks=hooks)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _received(
    store: MessageStore, message_id: str, *, content: bytes = b"hello", **properties: str
) -> StoredMessage:
    header = UserMessage(
        message_info=MessageInfo(message_id=message_id, timestamp=datetime.now(UTC)),
        party_info=PartyInfo(
            Party((PartyId("AP-BE-0115", UNREGISTERED),), INITIATOR),
            Party((PartyId("AP-SE-0001", UNREGISTERED),), RESPONDER),
        ),
        collaboration_info=CollaborationInfo(
            service=Service("urn:example:post", "urn:example:t"), action="Deliver", conversation_id="c"
        ),
        message_properties=tuple(Property(k, v) for k, v in properties.items()),
    )
    raw = NewEvidence(EvidenceKind.RAW_MESSAGE, _once(serialize(build_envelope(header))), timedelta(days=1))
    info = StoreInfo(message_id, pmode_id="from-nordic", leg=0)
    payload = NewPayload("letter@x", "text/plain", _once(content))
    return (await store.receive(info, [payload], now=datetime.now(UTC), evidence=[raw])).message


async def _far_with_person(tmp_path: Path) -> tuple[str, FarService]:
    """FaR's database under ``tmp_path`` with OPERATOR and PERSON (secure, at OPERATOR): its URL and the service."""
    far_url = "sqlite+aiosqlite:///" + str(tmp_path / "far.db")
    engine = create_engine(far_url)
    await upgrade_schema(engine)
    far = FarService(engine)
    await far.put_operator(OPERATOR, actor="test")
    await far.put_recipient(PERSON, status=AccountStatus.SECURE, operator_id=OPERATOR.id, actor="test")
    return far_url, far


async def _forwarding_router(tmp_path: Path) -> tuple[MessageStore, Routing, _Submitter]:
    """A router's store, its routing (FaR from ``_far_with_person``) and the access point forwarding submits to."""
    far_url, far = await _far_with_person(tmp_path)
    await far.engine.dispose()
    store = await MessageStore.open(f"sqlite:///{tmp_path / 'ap.db'}", tmp_path / "files")
    settings = parse_routing(tmp_path, {"far": {"database": far_url}}, "routing")
    routing = Routing(None, RouteRecords(RouteTargets(store.db)), routing=settings)
    return store, routing, _Submitter(load_pmodes(_pmodes(tmp_path)), store)


async def test_a_message_received_but_not_forwarded_before_a_stop_is_forwarded_at_start(tmp_path: Path) -> None:
    """recover(): routable ones are forwarded once, local and now-unroutable ones stay, half-done ones are settled."""
    store, routing, access_point = await _forwarding_router(tmp_path)
    try:
        sender = {"originalSender": f"0007:{SENDER}"}
        routable = await _received(store, "m1", finalRecipient=PERSON, **sender)
        await _received(store, "m2")  # for the backend
        await _received(store, "m3", finalRecipient="19" + with_check_digit("900101123"), **sender)  # no mailbox
        half_done = await _received(store, "m4", finalRecipient=PERSON, **sender)
        await store.submit(StoreInfo("fwd-m4"), [], now=datetime.now(UTC))
        assert await routing.recover(access_point, now=datetime.now(UTC)) == 1
        assert [(d["message_id"], d["pmode"]) for d in access_point.submitted] == [("fwd-m1", "to-operator")]
        states = {m: (await store.get(Direction.IN, m)) for m in ("m1", "m2", "m3", "m4")}
        assert {m: s.state.value for m, s in states.items() if s} == {
            "m1": "delivered_to_backend", "m2": "received", "m3": "received", "m4": "delivered_to_backend",
        }  # fmt: skip
        history = await store.history(routable)
        assert "forwarded to operator Mailbox AB" in (history[-1].detail or "")
        assert (await store.history(half_done))[-1].detail == "forwarded as fwd-m4"
        target = await routing.records.get("fwd-m1")
        assert target is not None and target.endpoint == OPERATOR.endpoint
        assert await routing.recover(access_point, now=datetime.now(UTC)) == 0  # nothing twice
    finally:
        await routing.close()
        await store.close()


async def test_a_forwarded_payload_is_the_received_file_under_a_second_name_not_a_copy(tmp_path: Path) -> None:
    """A large payload is forwarded as a hard link to the received file (a 2 GiB letter needs no second 2 GiB);
    each name is deleted on its own, the other still reads whole."""
    store, routing, access_point = await _forwarding_router(tmp_path)
    letter = os.urandom(300 * 1024)  # past the inline limit: a file
    try:
        received = await _received(store, "big", content=letter, finalRecipient=PERSON, originalSender=f"0007:{SENDER}")
        assert await routing.recover(access_point, now=datetime.now(UTC) + timedelta(seconds=1)) == 1
        forwarded = await store.get(Direction.OUT, "fwd-big")
        assert forwarded is not None
        [kept] = await store.payloads(received)
        [sent] = await store.payloads(forwarded)
        assert kept.path is not None and sent.path is not None and kept.path != sent.path
        kept_file, sent_file = tmp_path / "files" / kept.path, tmp_path / "files" / sent.path
        assert (kept_file.stat().st_ino, kept_file.stat().st_nlink) == (sent_file.stat().st_ino, 2)
        assert (sent.size, sent.sha256) == (len(letter), hashlib.sha256(letter).hexdigest())
        await store.files.delete(kept.path)
        assert b"".join([chunk async for chunk in store.read(sent)]) == letter
    finally:
        await routing.close()
        await store.close()


async def test_a_forward_that_failed_after_the_receipt_is_retried_while_running(tmp_path: Path) -> None:
    """keep_forwarding(): a message received (and receipted) whose forward failed goes on a round later, once."""
    store, routing, access_point = await _forwarding_router(tmp_path)
    # The rounds' clock starts before the message is received: the start-up round's cutoff is before it.
    clock = ManualClock(datetime.now(UTC) - timedelta(seconds=1))
    every = timedelta(seconds=30)
    rounds = asyncio.create_task(routing.keep_forwarding(access_point, clock, every=every))
    try:
        await _received(store, "late", finalRecipient=PERSON, originalSender=f"0007:{SENDER}")
        await asyncio.sleep(0.2)  # the start-up round ran; the message came after its cutoff
        assert access_point.submitted == []
        await clock.advance(every)
        await clock.advance(every)  # this round's cutoff is past the message
        async def submitted() -> list[dict[str, Any]]:
            return list(access_point.submitted)

        await eventually(submitted, bool, "the forward")
        await clock.advance(every)
        await asyncio.sleep(0.2)
        assert [d["message_id"] for d in access_point.submitted] == ["fwd-late"]  # and only once
        assert (await store.get(Direction.IN, "late")).state.value == "delivered_to_backend"  # type: ignore[union-attr]
    finally:
        rounds.cancel()
        await asyncio.gather(rounds, return_exceptions=True)
        await routing.close()
        await store.close()


async def test_a_routed_submission_names_its_mistakes(tmp_path: Path) -> None:
    """route must be true, needs routing settings and a finalRecipient; without the key nothing changes."""
    pmodes = load_pmodes(_pmodes(tmp_path))
    plain = {"pmode": "to-operator", "properties": {}}
    bare = Routing(None, _records(tmp_path))
    assert (await bare.route_submission(pmodes, plain)).document is plain
    with pytest.raises(ValueError, match="no routing settings"):
        await bare.route_submission(pmodes, {"route": True})
    with pytest.raises(ValueError, match="route: true, or leave it out"):
        await bare.route_submission(pmodes, {"route": "yes"})
    settings = parse_routing(tmp_path, {"far": "http://127.0.0.1:9"}, "routing")
    routing = Routing(None, _records(tmp_path), routing=settings)
    try:
        with pytest.raises(ValueError, match="finalRecipient: required"):
            await routing.route_submission(pmodes, {"route": True, "properties": {"originalSender": SENDER}})
        with pytest.raises(ValueError, match="refused: invalid-sender"):
            await routing.route_submission(pmodes, {"route": True, "properties": {"finalRecipient": PERSON}})
        foreign = {"route": True, "action": "Deliver", "properties": {"finalRecipient": "iso6523-actorid-upis::0088:1"}}
        routed = (await routing.route_submission(pmodes, foreign)).document
        assert routed["pmode"] == "to-network" and "route" not in routed and routed["message_id"]
    finally:
        await routing.close()


def test_discovery_endpoint_policy_is_https_and_public_unless_the_settings_say_otherwise(tmp_path: Path) -> None:
    """allow_http and allow_networks are read (per network too); endpoints elsewhere are refused by default."""
    trust = str(CERTS / "ca.pem")
    strict = parse_discovery(tmp_path, {"zone": "z", "smp_trust": trust}, "field discovery")
    assert strict is not None and (strict.allow_http, strict.allowed_networks) == (False, ())
    section = {
        "zone": "z",
        "smp_trust": trust,
        "allow_http": True,
        "allow_networks": ["127.0.0.0/8", "::1"],
        "networks": {"peppol": {"allow_http": False, "allow_networks": []}},
    }
    settings = parse_discovery(tmp_path, section, "field discovery")
    assert isinstance(settings, NetworkDiscovery)
    resolver = PartnerResolver(settings, RouteRecords(tmp_path / "routing"))
    loopback = resolver.addresses("edelivery-1.15")
    assert loopback is not None and loopback.allow_http
    loopback.check_url("http://127.0.0.1:8080/as4")
    peppol = resolver.addresses("peppol")
    assert peppol is not None
    for url in ("http://ap.example/as4", "https://127.0.0.1/as4"):
        with pytest.raises(ValueError, match=r"not https|loopback"):
            peppol.check_url(url)
    assert PartnerResolver(None, RouteRecords(tmp_path)).addresses("peppol") is None
    with pytest.raises(ValueError, match=r"discovery\.allow_http: must be true or false"):
        parse_discovery(tmp_path, {**section, "allow_http": "yes"}, "field discovery")
    with pytest.raises(ValueError, match=r"discovery\.networks\.peppol\.allow_networks: 'intranet' is not"):
        bad = {**section, "networks": {"peppol": {"allow_networks": ["intranet"]}}}
        parse_discovery(tmp_path, bad, "field discovery")


async def test_a_letter_accepted_for_an_operator_suspended_since_fails_at_once_and_is_not_forwarded(
    tmp_path: Path,
) -> None:
    """Before each forwarding attempt FaR is asked: approved goes on to the record's endpoint; suspended or revoked
    is EBMS:0004 operator-suspended / operator-revoked (permanent, the reason in the detail); FaR down is retried;
    the receipt of what was sent is still checked against the operator."""
    far_url, far = await _far_with_person(tmp_path)
    pmodes = load_pmodes(_pmodes(tmp_path))
    route = next(r for r in pmodes.routes() if r.pmode.id == "to-operator")
    store = await MessageStore.open(f"sqlite:///{tmp_path / 'ap.db'}", tmp_path / "files")
    settings = parse_routing(tmp_path, {"far": {"database": far_url}, "sender_cache": "1ms"}, "routing")
    routing = Routing(None, RouteRecords(RouteTargets(store.db)), routing=settings)
    header = UserMessage(
        message_info=MessageInfo(message_id="fwd-m1", timestamp=datetime.now(UTC)),
        party_info=PartyInfo(route.from_party, route.to_party),
        collaboration_info=CollaborationInfo(
            service=Service("urn:example:post"), action="Deliver", conversation_id="c"
        ),
    )
    raw = NewEvidence(EvidenceKind.RAW_MESSAGE, _once(serialize(build_envelope(header))), timedelta(days=1))
    target = RouteTarget("fwd-m1", "m1", OPERATOR.id, OPERATOR.name, "AP-OPERATOR-1", "https://op.example/as4")
    now = datetime.now(UTC)
    hooks = [routing.records.hook(target, now=now)]
    message = await store.submit(StoreInfo("fwd-m1"), [], now=now, evidence=[raw], hooks=hooks)
    try:
        assert (await routing.resolve(store, message, route, at=now)).endpoint == "https://op.example/as4"
        await far.decide_operator(OPERATOR.id, OperatorStatus.SUSPENDED, reason="failed audit", actor="pts")
        with pytest.raises(EbmsError) as refused:
            await routing.resolve(store, message, route, at=now)
        assert refused.value.code == "EBMS:0004" and refused.value.detail.startswith("operator-suspended: ")
        assert "Mailbox AB" in refused.value.detail and "paper" in refused.value.detail
        assert routing.far is not None  # and a new letter to its holder is refused before the receipt
        answer = await routing.far.is_reachable(SENDER, PERSON)
        assert isinstance(answer, Reachability) and answer.reason is Reason.OPERATOR_SUSPENDED
        assert decide(facts(PERSON), answer).error().detail.startswith("operator-suspended: ")
        checked = await routing.resolve(store, message, route, at=now, sending=False)  # its receipt, say
        assert checked.endpoint == "https://op.example/as4"
        await far.decide_operator(OPERATOR.id, OperatorStatus.REVOKED, reason="failed audit", actor="pts")
        with pytest.raises(EbmsError) as revoked:
            await routing.resolve(store, message, route, at=now)
        assert revoked.value.detail.startswith("operator-revoked: ")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))  # bound, never listening: FaR does not answer, so the attempt is retried
            down = parse_routing(tmp_path, {"far": f"http://127.0.0.1:{sock.getsockname()[1]}"}, "routing")
            unanswered = Routing(None, routing.records, routing=down)
            with pytest.raises(RouteUnavailable, match="cannot say whether operator"):
                await unanswered.resolve(store, message, route, at=now)
            await unanswered.close()
    finally:
        await far.engine.dispose()
        await routing.close()
        await store.close()
