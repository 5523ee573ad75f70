"""P-Mode files: loading, every class of mistake named by file + P-Mode + field, YAML/TOML, profiles, reload."""

from __future__ import annotations

import copy
import shutil
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from accesspoint.core.compression import DecompressionLimits
from accesspoint.core.conformance import WireRule
from accesspoint.core.namespaces import DEFAULT_MPC, PartyIdType
from accesspoint.security.algorithms import KeyAgreement, SignatureAlgorithm
from accesspoint.security.keys import load_certificates
from accesspoint.security.policy import Profile, RevocationMode, TokenReference
from pmode import (
    Binding,
    Direction,
    PayloadFormat,
    PModeError,
    Problem,
    ReceptionAwareness,
    Side,
    load_if_changed,
    load_pmodes,
)
from pmode.document import dump_toml, dump_yaml
from pmode.profiles.peppol import PROFILE as PEPPOL

EXAMPLES = Path(__file__).resolve().parent.parent / "pmode" / "examples"
Document = dict[str, Any]


def example(name: str = "pmodes.yaml") -> Document:
    """A parsed example file, to be varied by a test."""
    loaded: Document = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder holding a copy of the example certificates, where test files are written."""
    shutil.copytree(EXAMPLES / "certs", tmp_path / "certs")
    return tmp_path


def write(folder: Path, document: Document, name: str = "pmodes.yaml") -> Path:
    """Write a document as YAML or TOML (by the name's suffix)."""
    path = folder / name
    path.write_text(dump_toml(document) if name.endswith(".toml") else dump_yaml(document))
    return path


def problems_of(folder: Path, document: Document, name: str = "pmodes.yaml") -> list[Problem]:
    """The problems loading reports (the test fails when the file loads)."""
    with pytest.raises(PModeError) as caught:
        load_pmodes(write(folder, document, name))
    return list(caught.value.problems)


def pmode(document: Document, pmode_id: str) -> Document:
    """The P-Mode of that id inside a document."""
    found: Document = next(p for p in document["pmodes"] if p["id"] == pmode_id)
    return found


def certificate(name: str) -> x509.Certificate:
    """An example certificate."""
    return load_certificates(EXAMPLES / "certs" / name)[0]


# ------------------------------------------------------------------------------------------------ valid files


def test_example_loads_with_1_15_and_2_0_partners() -> None:
    """The example defines 1.15 and 2.0 P-Modes whose legs carry the policies and directions the file says."""
    pmodes = load_pmodes(EXAMPLES / "pmodes.yaml")
    assert [p.id for p in pmodes] == ["se-to-be", "be-to-se", "se-no-request-reply", "no-to-se"]
    out = pmodes.get("se-to-be")
    assert out is not None and out.local is Side.INITIATOR
    leg = out.legs[0]
    assert leg.direction is Direction.OUTGOING and leg.sender is Side.INITIATOR
    assert leg.security.profile is Profile.EDELIVERY_1_15
    assert leg.security.signature_algorithm is SignatureAlgorithm.RSA_SHA256
    assert leg.security.token_reference is TokenReference.BST_X509V3
    assert leg.security.trust.anchors == (certificate("ca.pem"),)
    assert leg.security.trust.pinned == (certificate("partner-115.pem"),)
    assert leg.payload.max_size == 100 * 2**20 and leg.payload.max_parts == 10
    assert leg.payload.decompression_limit == 2**30
    assert leg.required_properties == ("originalSender", "finalRecipient")
    assert leg.reception_awareness.retries == 5
    assert leg.reception_awareness.backoff_max == timedelta(minutes=30)
    assert leg.reception_awareness.duplicate_window == timedelta(days=7)
    assert out.retention.evidence == timedelta(days=3650)
    assert out.partner.party.endpoint == "https://ap-be.example/as4"
    two_way = pmodes.get("se-no-request-reply")
    assert two_way is not None and two_way.binding is Binding.PUSH_AND_PUSH
    request, reply = two_way.legs
    assert (request.direction, reply.direction) == (Direction.OUTGOING, Direction.INCOMING)
    assert reply.sender is Side.RESPONDER
    assert request.security.profile is Profile.EDELIVERY_2_0
    assert request.security.signature_algorithm is SignatureAlgorithm.ED25519
    assert request.security.key_agreement is KeyAgreement.X25519
    assert request.security.token_reference is TokenReference.BST_PKIPATH
    assert two_way.partner.party.encryption_certificate == certificate("partner-20-enc.pem")


def test_defaults_fill_what_the_file_leaves_out() -> None:
    """A leg that names only service, action and trust gets the profile's MEP, MPC, compression and limits."""
    pmodes = load_pmodes(EXAMPLES / "pmodes.yaml")
    incoming = pmodes.get("no-to-se")
    assert incoming is not None
    leg = incoming.legs[0]
    assert leg.mpc == DEFAULT_MPC and leg.compression
    assert leg.payload.format is PayloadFormat.ANY
    assert leg.reception_awareness == ReceptionAwareness()
    assert leg.security.trust.revocation is RevocationMode.SOFT_FAIL
    assert leg.security.trust.pinned == (certificate("partner-20-sign.pem"),)


def test_wire_leniency_shared_id_and_decompression_ratio_load_as_written(folder: Path) -> None:
    """leniency names the relaxed wire rules, shared_id the agreed id; the ratio and floor default to 200 and 64 MiB."""
    document = example()
    pmode(document, "be-to-se").update({"leniency": {"soap11": True, "message_id": False}, "shared_id": True})
    pmode(document, "be-to-se")["legs"][0]["payload"] = {"decompression_ratio": 50, "decompression_floor": "1MiB"}
    loaded = load_pmodes(write(folder, document))
    incoming = loaded.get("be-to-se")
    assert incoming is not None
    assert incoming.leniency == frozenset({WireRule.SOAP11}) and incoming.shared_id
    assert incoming.legs[0].payload.decompression == DecompressionLimits(2**30, 50, 2**20)
    outgoing = loaded.get("se-to-be")
    assert outgoing is not None and outgoing.leniency == frozenset() and not outgoing.shared_id
    assert outgoing.legs[0].payload.decompression == DecompressionLimits(2**30, 200, 64 * 2**20)


def test_yaml_and_toml_examples_load_to_the_same_model() -> None:
    """The hand-written TOML example and the YAML example define identical P-Modes and parties."""
    from_yaml = load_pmodes(EXAMPLES / "pmodes.yaml")
    from_toml = load_pmodes(EXAMPLES / "pmodes.toml")
    assert from_yaml.pmodes == from_toml.pmodes
    assert from_yaml.parties == from_toml.parties


@pytest.mark.parametrize("name", ["pmodes.yaml", "partner.yaml", "peppol.yaml", "sdk.yaml"])
def test_every_example_survives_a_toml_round_trip(folder: Path, name: str) -> None:
    """Writing an example as TOML and as YAML again loads to the same model."""
    original = load_pmodes(EXAMPLES / name)
    for target in ("again.toml", "again.yaml"):
        again = load_pmodes(write(folder, example(name), target))
        assert again.pmodes == original.pmodes
        assert again.parties == original.parties


def test_peppol_profile_defaults() -> None:
    """Peppol P-Modes get SBDH payloads, the four-corner properties, CN binding and hard-fail revocation (the
    example, on the development CA, says soft-fail)."""
    pmodes = load_pmodes(EXAMPLES / "peppol.yaml")
    out = pmodes.get("peppol-invoice-out")
    assert out is not None and out.transport_profile == "peppol-transport-as4-v2_0"
    leg = out.legs[0]
    assert leg.payload.format is PayloadFormat.SBDH
    assert leg.required_properties == ("originalSender", "finalRecipient")
    assert leg.security.trust.bind_cn_to_party_id
    assert PEPPOL.security.trust.revocation is RevocationMode.HARD_FAIL
    assert leg.security.trust.revocation is RevocationMode.SOFT_FAIL  # its CA publishes no OCSP or CRL
    assert out.ourselves.party.party_ids[0].type == PartyIdType.PEPPOL_AP
    assert out.partner.party.dynamic and out.partner.party.endpoint is None


def test_sdk_profile_defaults() -> None:
    """SDK P-Modes use digg-transport-as4-v1_0, XHE payloads, 100 MB messages and CN binding."""
    pmodes = load_pmodes(EXAMPLES / "sdk.yaml")
    out = pmodes.get("sdk-push")
    assert out is not None and out.transport_profile == "digg-transport-as4-v1_0"
    leg = out.legs[0]
    assert leg.payload.format is PayloadFormat.XHE
    assert leg.payload.max_size >= 100_000_000
    assert leg.security.trust.bind_cn_to_party_id and leg.compression


def test_legacy_algorithm_passes_only_when_listed(folder: Path) -> None:
    """rsa-sha1 is refused under 1.15 unless the leg lists it under legacy_algorithms."""
    document = example()
    security = pmode(document, "se-to-be")["legs"][0]["security"]
    security.update({"signature_algorithm": "rsa-sha1", "legacy_algorithms": ["rsa-sha1"]})
    leg = load_pmodes(write(folder, document)).get("se-to-be").legs[0]  # type: ignore[union-attr]
    assert leg.security.signature_algorithm is SignatureAlgorithm.RSA_SHA1
    assert leg.security.allows(SignatureAlgorithm.RSA_SHA1)


def test_retry_delay_is_exponential_capped_and_jittered() -> None:
    """Delays double from the base, stop at the maximum, and jitter stays within its fraction."""
    awareness = ReceptionAwareness(backoff_base=timedelta(seconds=10), backoff_max=timedelta(seconds=60), jitter=0.5)
    assert [awareness.retry_delay(n).total_seconds() for n in range(5)] == [10, 20, 40, 60, 60]
    assert awareness.retry_delay(0, 0.0).total_seconds() == 5
    assert awareness.retry_delay(0, 0.999).total_seconds() == pytest.approx(14.99)


# ------------------------------------------------------------------------------------------------- mistakes

Change = Callable[[Document], None]


def _set(path: list[Any], value: Any) -> Change:
    """A change setting one field; the path starts with the P-Mode id."""

    def change(document: Document) -> None:
        target: Any = pmode(document, path[0])
        for key in path[1:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


MISTAKES: list[tuple[str, Change, str | None, str, str]] = [
    (
        "sha1_signature",
        _set(["se-to-be", "legs", 0, "security", "signature_algorithm"], "rsa-sha1"),
        "se-to-be",
        "legs[0].security.signature_algorithm",
        "'rsa-sha1' is not allowed by profile edelivery-1.15",
    ),
    (
        "2.0_algorithm_in_1.15",
        _set(["se-to-be", "legs", 0, "security", "signature_algorithm"], "ed25519"),
        "se-to-be",
        "legs[0].security.signature_algorithm",
        "'eddsa-ed25519' is not allowed by profile edelivery-1.15",
    ),
    (
        "unknown_algorithm",
        _set(["se-to-be", "legs", 0, "security", "digest_algorithm"], "md5"),
        "se-to-be",
        "legs[0].security.digest_algorithm",
        "'md5' is not one of",
    ),
    (
        "unknown_party",
        _set(["se-to-be", "responder", "party"], "nobody"),
        "se-to-be",
        "responder.party",
        "names the party 'nobody'",
    ),
    (
        "missing_action",
        lambda d: pmode(d, "be-to-se")["legs"][0].pop("action"),
        "be-to-se",
        "legs[0].action",
        "is required",
    ),
    (
        "typo",
        lambda d: pmode(d, "be-to-se")["legs"][0].update({"compresion": True}),
        "be-to-se",
        "legs[0].compresion",
        "unknown field",
    ),
    (
        "bad_duration",
        _set(["se-to-be", "legs", 0, "reception_awareness", "backoff_base"], "soon"),
        "se-to-be",
        "legs[0].reception_awareness.backoff_base",
        "expected a duration",
    ),
    (
        "backoff_above_max",
        _set(["se-to-be", "legs", 0, "reception_awareness", "backoff_base"], "1h"),
        "se-to-be",
        "legs[0].reception_awareness.backoff_base",
        "must not exceed backoff_max",
    ),
    (
        "bad_size",
        _set(["se-to-be", "legs", 0, "payload", "max_size"], "huge"),
        "se-to-be",
        "legs[0].payload.max_size",
        "expected a size",
    ),
    (
        "bad_jitter",
        _set(["se-to-be", "legs", 0, "reception_awareness", "jitter"], 2),
        "se-to-be",
        "legs[0].reception_awareness.jitter",
        "from 0 to 1",
    ),
    (
        "missing_certificate_file",
        lambda d: d["parties"]["partner-115"].update({"signing_certificate": "certs/absent.pem"}),
        None,
        "parties.partner-115.signing_certificate",
        "cannot load 'certs/absent.pem'",
    ),
    (
        "bad_endpoint",
        lambda d: d["parties"]["partner-115"].update({"endpoint": "ftp://ap-be.example"}),
        None,
        "parties.partner-115.endpoint",
        "expected an http(s) URL or 'dynamic'",
    ),
    (
        "binding_without_second_leg",
        lambda d: pmode(d, "se-no-request-reply")["legs"].pop(),
        "se-no-request-reply",
        "legs",
        "has 2 leg(s), found 1",
    ),
    (
        "mep_binding_mismatch",
        _set(["se-to-be", "binding"], "push-and-push"),
        "se-to-be",
        "binding",
        "does not go with MEP 'one-way'",
    ),
    (
        "unknown_network",
        _set(["se-to-be", "network"], "edelivery-3"),
        "se-to-be",
        "network",
        "'edelivery-3' is not one of",
    ),
    (
        "security_profile_of_other_network",
        _set(["se-to-be", "legs", 0, "security", "profile"], "2.0"),
        "se-to-be",
        "legs[0].security.profile",
        "uses security profile edelivery-1.15",
    ),
    (
        "setting_of_other_profile",
        _set(["no-to-se", "legs", 0, "security", "key_transport"], "rsa-oaep"),
        "no-to-se",
        "legs[0].security.key_transport",
        "is not used by security profile edelivery-2.0",
    ),
    (
        "nothing_to_trust",
        _set(["no-to-se", "legs", 0, "security", "trust"], {}),
        "no-to-se",
        "legs[0].security.trust",
        "nothing to verify the partner's signatures with",
    ),
    (
        "no_certificate_to_encrypt_to",
        lambda d: d["parties"]["partner-115"].pop("signing_certificate"),
        "se-to-be",
        "legs[0].security.encrypt",
        "has no encryption_certificate",
    ),
    (
        "2.0_encryption_certificate_of_wrong_key_type",
        lambda d: d["parties"]["partner-20"].update({"encryption_certificate": "certs/partner-115.pem"}),
        "se-no-request-reply",
        "legs[0].security.key_agreement",
        "RSAPublicKey key, which X25519 key agreement cannot use",
    ),
    (
        "ecdh_without_curve",
        _set(["se-no-request-reply", "legs", 0, "security", "key_agreement"], "ecdh-es"),
        "se-no-request-reply",
        "legs[0].security.key_agreement_curve",
        "is required with ECDH-ES",
    ),
    (
        "payloads_outlive_messages",
        _set(["se-to-be", "retention", "payloads"], "1y"),
        "se-to-be",
        "retention.payloads",
        "cannot be kept longer than their messages",
    ),
    (
        "duplicate_id",
        lambda d: d["pmodes"].append(copy.deepcopy(pmode(d, "be-to-se"))),
        None,
        "pmodes[4].id",
        "the P-Mode id 'be-to-se' is used twice",
    ),
    (
        "neither_side_is_us",
        _set(["se-to-be", "initiator", "party"], "partner-20"),
        "se-to-be",
        "initiator.party",
        "neither side is one of this access point's parties",
    ),
    (
        "leniency_not_relaxable",
        _set(["be-to-se", "leniency"], {"charset": True}),
        "be-to-se",
        "leniency.charset",
        "unknown field",
    ),
    (
        "shared_id_without_agreement",
        _set(["se-no-request-reply", "shared_id"], True),
        "se-no-request-reply",
        "shared_id",
        "needs an agreement",
    ),
    (
        "decompression_ratio_zero",
        _set(["se-to-be", "legs", 0, "payload", "decompression_ratio"], 0),
        "se-to-be",
        "legs[0].payload.decompression_ratio",
        "at least 1",
    ),
    ("self_undefined", lambda d: d.update({"self": "ghost"}), None, "self", "names the party 'ghost'"),
    ("wrong_version", lambda d: d.update({"version": 2}), None, "version", "reads version 1, found 2"),
]


@pytest.mark.parametrize(
    ("change", "pmode_id", "field", "message"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
@pytest.mark.parametrize("suffix", ["yaml", "toml"])
def test_each_mistake_names_file_pmode_and_field(
    folder: Path, change: Change, pmode_id: str | None, field: str, message: str, suffix: str
) -> None:
    """Each class of mistake is reported with the file, the P-Mode id and the dotted field, in YAML and TOML."""
    document = example()
    change(document)
    name = f"pmodes.{suffix}"
    problems = problems_of(folder, document, name)
    matching = [p for p in problems if p.field == field and p.pmode == pmode_id]
    assert matching, f"no problem at {pmode_id}/{field}: {problems}"
    assert any(message in p.message for p in matching), matching
    assert all(p.file == str(folder / name) for p in problems)
    where = f"pmode {pmode_id!r} field {field}" if pmode_id else f"field {field}"
    assert str(matching[0]).startswith(f"{folder / name}: {where}: ")


def test_error_message_reads_as_documented(folder: Path) -> None:
    """The rendered message has the form 'FILE: pmode 'ID' field FIELD: what is wrong'."""
    document = example("sdk.yaml")
    pmode(document, "sdk-push")["legs"][0]["security"]["signature_algorithm"] = "rsa-sha1"
    with pytest.raises(PModeError) as caught:
        load_pmodes(write(folder, document))
    expected = (
        f"{folder / 'pmodes.yaml'}: pmode 'sdk-push' field legs[0].security.signature_algorithm: "
        "'rsa-sha1' is not allowed by profile edelivery-1.15"
    )
    assert str(caught.value).startswith(expected)


def test_all_problems_are_collected_not_just_the_first(folder: Path) -> None:
    """Three mistakes in two P-Modes and a party come back together in one PModeError."""
    document = example()
    pmode(document, "se-to-be")["legs"][0]["security"]["signature_algorithm"] = "rsa-sha1"
    pmode(document, "no-to-se")["legs"][0]["action"] = ""
    document["parties"]["partner-20"]["endpoint"] = "not a url"
    problems = problems_of(folder, document)
    found = {(p.pmode, p.field) for p in problems}
    assert ("se-to-be", "legs[0].security.signature_algorithm") in found
    assert ("no-to-se", "legs[0].action") in found
    assert (None, "parties.partner-20.endpoint") in found


def test_syntax_error_names_the_file(folder: Path) -> None:
    """A file that is not YAML at all is one problem naming the file."""
    path = folder / "broken.yaml"
    path.write_text("pmodes: [unclosed\n")
    with pytest.raises(PModeError) as caught:
        load_pmodes(path)
    (problem,) = caught.value.problems
    assert problem.file == str(path) and problem.field == "(file)" and "not valid YAML" in problem.message


def test_toml_syntax_error_and_unknown_suffix(folder: Path) -> None:
    """Broken TOML and an unknown file type are reported as problems of the file."""
    (folder / "broken.toml").write_text("version = \n")
    (folder / "pmodes.json").write_text("{}")
    for name, text in (("broken.toml", "not valid TOML"), ("pmodes.json", "must end in .yaml")):
        with pytest.raises(PModeError) as caught:
            load_pmodes(folder / name)
        assert text in caught.value.problems[0].message


@pytest.mark.parametrize(
    ("network", "change", "field", "message"),
    [
        ("peppol", lambda p: p.update({"binding": "pull"}), "binding", "profile peppol allows push only"),
        (
            "peppol",
            lambda p: p["legs"][0].update({"payload": {"format": "any"}}),
            "legs[0].payload.format",
            "profile peppol carries 'sbdh'",
        ),
        (
            "peppol",
            lambda p: p["legs"][0].update({"properties": ["originalSender"]}),
            "legs[0].properties",
            "requires the message properties ['finalRecipient']",
        ),
        (
            "peppol",
            lambda p: p["legs"][0]["security"]["trust"].update({"bind_cn_to_party_id": False}),
            "legs[0].security.trust.bind_cn_to_party_id",
            "binds the certificate CN to the PartyId",
        ),
        (
            "peppol",
            lambda p: p["legs"][0]["security"].update({"token_reference": "ski"}),
            "legs[0].security.token_reference",
            "requires 'bst-x509v3'",
        ),
        (
            "sdk",
            lambda p: p["legs"][0].update({"service": {"value": "other", "type": "t"}}),
            "legs[0].service",
            "profile sdk uses service 'bdx:noprocess'",
        ),
        (
            "sdk",
            lambda p: p["legs"][0].update({"action": "Deliver"}),
            "legs[0].action",
            "start with 'busdox-docid-qns::'",
        ),
        (
            "sdk",
            lambda p: p["legs"][0].update({"payload": {"max_size": "10MB"}}),
            "legs[0].payload.max_size",
            "at least 100 MB",
        ),
        ("sdk", lambda p: p.update({"transport_profile": "x"}), "transport_profile", "'digg-transport-as4-v1_0'"),
        ("sdk", lambda p: p["legs"][0].update({"compression": False}), "legs[0].compression", "requires gzip"),
        (
            "sdk",
            lambda p: p["legs"][0].update({"mpc": "urn:example:mpc"}),
            "legs[0].mpc",
            "uses the default MPC only",
        ),
    ],
)
def test_network_profile_rules(folder: Path, network: str, change: Change, field: str, message: str) -> None:
    """Peppol and SDK validators name the field that breaks the network's rules."""
    document = example(f"{network}.yaml")
    first = document["pmodes"][0]
    change(first)
    problems = problems_of(folder, document)
    assert any(p.pmode == first["id"] and p.field == field and message in p.message for p in problems), problems


def test_peppol_party_id_type_is_enforced(folder: Path) -> None:
    """A Peppol P-Mode whose party has a PartyId of another type is refused at initiator.party."""
    document = example("peppol.yaml")
    document["parties"]["our-ap"]["party_ids"][0]["type"] = "urn:oasis:names:tc:ebcore:partyid-type:unregistered"
    problems = problems_of(folder, document)
    assert any(p.pmode == "peppol-invoice-out" and p.field == "initiator.party" for p in problems)
    assert any(p.pmode == "peppol-invoice-in" and p.field == "responder.party" for p in problems)


# ------------------------------------------------------------------------------------------------------ reload


def test_load_if_changed_reloads_only_on_change_and_keeps_old_set_on_bad_file(folder: Path) -> None:
    """Unchanged files keep the same set; a valid edit replaces it; a broken edit keeps the old one and says why."""
    path = write(folder, example())
    first = load_if_changed(path, None)
    assert first.changed and first.error is None
    same = load_if_changed(path, first.pmodes)
    assert not same.changed and same.pmodes is first.pmodes
    document = example()
    pmode(document, "be-to-se")["legs"][0]["action"] = "Deliver2"
    write(folder, document)
    edited = load_if_changed(path, first.pmodes)
    assert edited.changed and edited.pmodes.get("be-to-se").legs[0].action == "Deliver2"  # type: ignore[union-attr]
    document["version"] = 9
    write(folder, document)
    broken = load_if_changed(path, edited.pmodes)
    assert not broken.changed and broken.pmodes is edited.pmodes
    assert broken.error is not None and broken.error.problems[0].field == "version"


def test_load_if_changed_notices_a_rotated_certificate(folder: Path) -> None:
    """Replacing a certificate file the P-Modes name triggers a reload with the new certificate."""
    path = write(folder, example())
    first = load_if_changed(path, None).pmodes
    shutil.copy(folder / "certs" / "ap-sweden-sign.pem", folder / "certs" / "partner-115.pem")
    again = load_if_changed(path, first)
    assert again.changed
    assert again.pmodes.party("partner-115").signing_certificate == certificate("ap-sweden-sign.pem")  # type: ignore[union-attr]


def test_load_if_changed_without_previous_set_raises(folder: Path) -> None:
    """At start-up there is nothing to fall back on, so a bad file raises PModeError."""
    path = folder / "pmodes.yaml"
    path.write_text("version: 1\n")
    with pytest.raises(PModeError):
        load_if_changed(path, None)


def test_reload_keeps_old_set_when_file_vanishes(folder: Path) -> None:
    """A deleted file (mid-deploy) keeps the running set and reports the unreadable file."""
    path = write(folder, example())
    first = load_if_changed(path, None).pmodes
    path.unlink()
    result = load_if_changed(path, first)
    assert result.pmodes is first and result.error is not None
    assert "cannot read" in result.error.problems[0].message


def test_unknown_network_reports_only_the_network(folder: Path) -> None:
    """A P-Mode whose network is unknown is reported once, not with every other key flagged as unknown."""
    document = example()
    pmode(document, "se-to-be")["network"] = "edelivery-9"
    problems = problems_of(folder, document)
    assert [(p.pmode, p.field) for p in problems] == [("se-to-be", "network")]


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_SCALARS = st.one_of(
    _TEXT, st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.lists(_TEXT, max_size=3)
)
_TABLES = st.recursive(
    st.dictionaries(_TEXT, _SCALARS, max_size=4),
    lambda inner: st.dictionaries(
        _TEXT, st.one_of(_SCALARS, inner, st.lists(inner, min_size=1, max_size=2)), max_size=4
    ),
    max_leaves=12,
)


@given(_TABLES)
def test_toml_writer_round_trips_any_document(document: Document) -> None:
    """Whatever the keys and scalars, tables and arrays of tables, dump_toml gives TOML that reads back equal."""
    assert tomllib.loads(dump_toml(document)) == document


def test_peppol_agreement_is_the_tia(folder: Path) -> None:
    """Peppol P-Modes carry the TIA AgreementRef by default, and another agreement is refused."""
    out = load_pmodes(EXAMPLES / "peppol.yaml").get("peppol-invoice-out")
    assert out is not None and out.agreement is not None
    assert out.agreement.value == "urn:fdc:peppol.eu:2017:agreements:tia:ap_provider" and out.agreement.type is None
    document = example("peppol.yaml")
    document["pmodes"][0]["agreement"] = "urn:example:other"
    problems = problems_of(folder, document)
    assert [(p.pmode, p.field) for p in problems] == [("peppol-invoice-out", "agreement")]
