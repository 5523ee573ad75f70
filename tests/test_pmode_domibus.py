"""Domibus P-Mode import: every Harmony sample converts, values match the XML, and the unmappable is reported."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from lxml import etree

from accesspoint.security.algorithms import SignatureAlgorithm
from accesspoint.security.policy import TokenReference
from pmode import Binding, Direction, Mep, PModeError, load_document, load_pmodes
from pmode.document import dump_yaml
from pmode.domibus import DomibusImport, import_domibus, import_domibus_file
from tests.conftest import INTEROP, interop_path

PMODES = "domibus/harmony/pmodes"
SAMPLES = sorted(p.name for p in (INTEROP / PMODES).glob("*.xml")) or ["domibus-gw-sample-pmode-blue.xml"]
EXAMPLES = Path(__file__).resolve().parent.parent / "pmode" / "examples"
DB = "{http://domibus.eu/configuration}"


def _xml(name: str) -> etree._Element:
    return etree.parse(str(interop_path(f"{PMODES}/{name}"))).getroot()


def _named(root: etree._Element, tag: str) -> dict[str, etree._Element]:
    return {e.get("name"): e for e in root.iter(tag) if isinstance(e.tag, str)}


def _imported(name: str) -> DomibusImport:
    return import_domibus_file(interop_path(f"{PMODES}/{name}"))


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_imports_and_loads(name: str) -> None:
    """Each Domibus sample converts into a document that loads as our P-Modes (certificates aside)."""
    result = _imported(name)
    pmodes = load_document(result.document, file=name, base=Path.cwd(), require_certificates=False)
    assert [p.id for p in pmodes] == list(result.pmode_ids)
    root = _xml(name)
    assert list(pmodes.local_parties) == [root.get("party")]
    assert result.unmapped, "every sample has something (at least certificates) to report"


@pytest.mark.parametrize("name", SAMPLES)
def test_parties_and_identifiers_match_the_xml(name: str) -> None:
    """Every Domibus party keeps its endpoint and its PartyIds with the partyIdType's value."""
    root = _xml(name)
    types = {t.get("name"): t.get("value") for t in root.iter("partyIdType")}
    parties = _imported(name).document["parties"]
    for party in root.iter("party"):
        converted = parties[party.get("name")]
        assert converted["endpoint"] == party.get("endpoint")
        expected = [{"value": i.get("partyId"), "type": types[i.get("partyIdType")]} for i in party.iter("identifier")]
        assert converted["party_ids"] == expected


@pytest.mark.parametrize("name", SAMPLES)
def test_legs_match_the_xml(name: str) -> None:
    """Service, action, compression, MPC, properties, security, reliability and retry of each P-Mode follow its leg."""
    root = _xml(name)
    result = _imported(name)
    pmodes = load_document(result.document, file=name, base=Path.cwd(), require_certificates=False)
    services, actions = _named(root, "service"), _named(root, "action")
    securities, awareness = _named(root, "security"), _named(root, "receptionAwareness")
    reliabilities, mpcs = _named(root, "reliability"), _named(root, "mpc")
    properties, property_sets = _named(root, "property"), _named(root, "propertySet")
    for pmode in pmodes:
        process_name, leg_name, _pair = pmode.id.split(".", 2)
        process = _named(root, "process")[process_name]
        xml_leg = _named(root, "legConfiguration")[leg_name]
        (leg,) = pmode.legs
        service = services[xml_leg.get("service")]
        assert (leg.service.value, leg.service.type) == (service.get("value"), service.get("type"))
        assert leg.action == actions[xml_leg.get("action")].get("value")
        assert leg.compression == (xml_leg.get("compressPayloads") == "true")
        assert leg.mpc == mpcs[xml_leg.get("defaultMpc")].get("qualifiedName")
        required = {
            properties[ref.get("property")].get("key")
            for ref in property_sets[xml_leg.get("propertySet")].iter("propertyRef")
            if properties[ref.get("property")].get("required") == "true"
        }
        assert set(leg.required_properties) == required
        security = securities[xml_leg.get("security")]
        assert security.get("signatureMethod") == "RSA_SHA256"
        assert leg.security.signature_algorithm is SignatureAlgorithm.RSA_SHA256
        expected_reference = {
            "eDeliveryAS4Policy.xml": TokenReference.SUBJECT_KEY_IDENTIFIER,
            "eDeliveryAS4Policy_BST.xml": TokenReference.BST_X509V3,
        }[security.get("policy")]
        assert leg.security.token_reference is expected_reference
        non_repudiation = reliabilities[xml_leg.get("reliability")].get("nonRepudiation") == "true"
        assert leg.security.require_signed_receipts is non_repudiation
        timeout, count, strategy = awareness[xml_leg.get("receptionAwareness")].get("retry").split(";")
        if strategy == "CONSTANT":
            assert leg.reception_awareness.retries == int(count)
            assert leg.reception_awareness.backoff_base == timedelta(minutes=int(timeout)) / int(count)
            assert leg.reception_awareness.backoff_max == leg.reception_awareness.backoff_base
        else:
            assert strategy == "SEND_ONCE" and leg.reception_awareness.retries == 0
        assert pmode.mep is Mep.ONE_WAY and pmode.binding is Binding.PUSH
        roles = {r.get("name"): r.get("value") for r in root.iter("role")}
        assert pmode.initiator.role == roles[process.get("initiatorRole")]
        assert pmode.responder.role == roles[process.get("responderRole")]
        ours = root.get("party")
        assert leg.direction is (Direction.OUTGOING if pmode.initiator.party.name == ours else Direction.INCOMING)


def test_blue_sample_makes_both_directions_of_both_legs() -> None:
    """blue_gw's process (blue and red on both sides, two legs) gives 4 P-Modes and skips the self-exchanges."""
    result = _imported("domibus-gw-sample-pmode-blue.xml")
    assert sorted(result.pmode_ids) == [
        "tc1Process.pushTestcase1tc1Action.blue_gw-red_gw",
        "tc1Process.pushTestcase1tc1Action.red_gw-blue_gw",
        "tc1Process.testServiceCase.blue_gw-red_gw",
        "tc1Process.testServiceCase.red_gw-blue_gw",
    ]
    items = {note.item for note in result.unmapped}
    assert "process[@name='tc1Process'] blue_gw -> blue_gw" in items
    assert "errorHandling[@name='demoErrorHandling']" in items
    assert "splitting[@name='default']" in items
    assert "party[@name='red_gw']" in items  # its certificate lives in Domibus' truststore
    assert "agreement[@name='agreement1']" in items  # defined, used by no process
    assert "mpc[@name='defaultMpc']/@retention_sent" in items
    first = result.document["pmodes"][0]
    assert first["retention"] == {"messages": "forever", "payloads": "10d"}  # retention_undownloaded=14400 minutes
    assert first["legs"][0]["payload"] == {"max_parts": 2, "max_size": 2147483647}


def test_two_way_sample_without_processes_reports_it() -> None:
    """The two-way sample has every process commented out: no P-Mode, and the report says so for each leg."""
    result = _imported("domibus-gw-sample-pmode-blue-twoway.xml")
    assert result.pmode_ids == ()
    items = {note.item for note in result.unmapped}
    assert {"process", "legConfiguration[@name='leg1']", "legConfiguration[@name='leg2']"} <= items


@pytest.mark.parametrize(
    ("name", "side", "ours"),
    [
        ("oasis-dyn-PMode-domibus-senderDYN.xml", "responder", "sender"),
        ("oasis-dyn-PMode-domibus-receiverDYN.xml", "initiator", "receiver"),
    ],
)
def test_dynamic_discovery_samples_get_a_dynamic_partner(name: str, side: str, ours: str) -> None:
    """A process listing only this party gets a dynamic party on the other side, discovered rather than configured."""
    result = _imported(name)
    (pmode,) = result.document["pmodes"]
    assert pmode[side]["party"] == f"dynamic-{side}"
    assert result.document["parties"][f"dynamic-{side}"] == {"endpoint": "dynamic"}
    other = "initiator" if side == "responder" else "responder"
    assert pmode[other]["party"] == ours
    assert any(note.item.endswith(f"{side}Parties") for note in result.unmapped)


def test_imported_document_validates_once_certificates_are_added(tmp_path: Path) -> None:
    """Adding the partner's certificate (Domibus' truststore entry) makes the import a complete, valid file."""
    shutil.copytree(EXAMPLES / "certs", tmp_path / "certs")
    document = _imported("domibus-gw-sample-pmode-blue.xml").document
    (tmp_path / "blue.yaml").write_text(dump_yaml(document))
    with pytest.raises(PModeError) as caught:
        load_pmodes(tmp_path / "blue.yaml")
    assert {p.field for p in caught.value.problems} == {
        "legs[0].security.trust.pin_partner",
        "legs[0].security.encrypt",
    }
    document["parties"]["red_gw"]["signing_certificate"] = "certs/partner-115.pem"
    (tmp_path / "blue.yaml").write_text(dump_yaml(document))
    pmodes = load_pmodes(tmp_path / "blue.yaml")
    assert len(pmodes) == 4


def test_not_a_domibus_file_is_refused() -> None:
    """XML of another kind, or not XML, is a PModeError naming the file."""
    with pytest.raises(PModeError) as caught:
        import_domibus(b"<other/>", file="x.xml")
    assert "not a Domibus P-Mode" in caught.value.problems[0].message
    with pytest.raises(PModeError) as caught:
        import_domibus(b"<db:configuration", file="x.xml")
    assert caught.value.problems[0].file == "x.xml"


def test_unknown_policy_and_retry_are_reported_not_dropped() -> None:
    """A policy file and a retry strategy we do not know fall back to defaults and are listed as unmapped."""
    data = interop_path(f"{PMODES}/domibus-gw-sample-pmode-blue.xml").read_bytes()
    data = data.replace(b'policy="eDeliveryAS4Policy.xml"', b'policy="custom.xml"')
    data = data.replace(b'retry="12;4;CONSTANT"', b'retry="12;4;PROGRESSIVE"')
    data = data.replace(b'compressPayloads="true"/>', b'compressPayloads="true" splitting="default"/>', 1)
    result = import_domibus(data)
    reasons = {note.item: note.reason for note in result.unmapped}
    assert "unknown" in reasons["security[@name='eDeliveryAS4Policy']/@policy"]
    assert "not understood" in reasons["receptionAwareness[@name='receptionAwareness']/@retry"]
    assert "split and join" in reasons["legConfiguration[@name='pushTestcase1tc1Action']/@splitting"]
