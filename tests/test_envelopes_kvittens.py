"""SDK's Meddelandekvittens (UBL ApplicationResponse): DIGG's examples, README edits, round trips, in a signed XHE."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, time

import pytest
from lxml import etree

from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.kvittens import (
    CAC_NS,
    CBC_NS,
    RESPONSE_DOCUMENT_ID,
    ApplicationResponse,
    LineResponse,
    ReasonCode,
    ResponseCode,
    build_application_response,
    digg_response_findings,
    parse_application_response,
)
from accesspoint.envelopes.schemas import load_application_response_schema
from accesspoint.envelopes.xhe import Xhe, XheParty, XhePayload, build_xhe, sdk_scope, verify_xhe
from accesspoint.testing import pki
from tests.conftest import interop_path

A, B = f"{{{CAC_NS}}}", f"{{{CBC_NS}}}"
# README: every example is valid against the profile schema with 0 AppRes schematron failures.
EXAMPLES = {
    "Kvittens_AP-Accepterat.xml": (ResponseCode.ACCEPTED, []),
    "Kvittens_RE-AnnatFel.xml": (ResponseCode.REJECTED, [ReasonCode.BUSINESS_RULE, ReasonCode.BUSINESS_RULE]),
    "Kvittens_RE-SCHFel.xml": (ResponseCode.REJECTED, [ReasonCode.BUSINESS_RULE, ReasonCode.BUSINESS_RULE]),
    "Kvittens_RE-SIG.xml": (ResponseCode.REJECTED, [ReasonCode.SIGNATURE]),
    "Kvittens_RE-XSDFel.xml": (ResponseCode.REJECTED, [ReasonCode.SCHEMA]),
}


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return load_application_response_schema(interop_path("sdk/kvittens/xsd/Response-2.1.xsd"))


def _example(name: str) -> bytes:
    return interop_path(f"sdk/kvittens/examples/{name}").read_bytes()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_digg_example_validates_and_round_trips(name: str, schema: etree.XMLSchema) -> None:
    """Each DIGG receipt is schema- and rule-valid, parses to its code and reasons, and rebuilds to itself."""
    response = parse_application_response(_example(name), schema=schema)
    code, reasons = EXAMPLES[name]
    assert response.code is code
    assert [line.reason for line in response.lines] == reasons
    assert response.document_reference == "ID-FROM-XHE-12354689"
    assert response.issue_time == time(12, 0, tzinfo=UTC)
    rebuilt = build_application_response(response, schema=schema)
    assert schema.validate(etree.fromstring(rebuilt))
    assert parse_application_response(rebuilt, schema=schema) == response


def _set(path: str, value: str) -> Callable[[etree._Element], None]:
    def edit(root: etree._Element) -> None:
        element = root.find(path)
        assert element is not None
        element.text = value

    return edit


DOCUMENT_CODE = f"{A}DocumentResponse/{A}Response/{B}ResponseCode"
# The README's "Checked edits", each with the one rule that fires.
EDITS = [
    ("Kvittens_RE-SIG.xml", "accepted-with-lines", _set(DOCUMENT_CODE, "ACCEPTED"), ["R7-APP"]),
    ("Kvittens_AP-Accepterat.xml", "rejected-without-lines", _set(DOCUMENT_CODE, "REJECTED"), ["R8-APP"]),
    ("Kvittens_AP-Accepterat.xml", "maybe", _set(DOCUMENT_CODE, "MAYBE"), ["R5-APP"]),
    (
        "Kvittens_RE-SIG.xml",
        "line-code-xx",
        _set(f"{A}DocumentResponse/{A}LineResponse/{A}Response/{B}ResponseCode", "XX"),
        ["R6-APP"],
    ),
    (
        "Kvittens_AP-Accepterat.xml",
        "customization-2",
        _set(f"{B}CustomizationID", "urn:fdc:digg.se:edelivery:messagetype:response:2"),
        ["R3-APP"],
    ),
    ("Kvittens_AP-Accepterat.xml", "profile-other", _set(f"{B}ProfileID", "other"), ["R4-APP"]),
]


@pytest.mark.parametrize(
    ("base", "edit", "rules"), [(b, e, r) for b, _, e, r in EDITS], ids=[f"{b}:{i}" for b, i, _, _ in EDITS]
)
def test_digg_rule_fires_for_readme_edit(
    base: str, edit: Callable[[etree._Element], None], rules: list[str], schema: etree.XMLSchema
) -> None:
    """Each README edit stays schema-valid and is refused with exactly the rule the README names."""
    root = etree.fromstring(_example(base))
    edit(root)
    assert schema.validate(root)
    assert [f.rule for f in digg_response_findings(root)] == rules
    with pytest.raises(EnvelopeError) as caught:
        parse_application_response(etree.tostring(root), schema=schema)
    assert list(caught.value.rules) == rules


def test_element_outside_the_profile_fires_r1(schema: etree.XMLSchema) -> None:
    """A UBL element the profile leaves out (cbc:Note) fires R1-APP and fails the cut-down schema."""
    root = etree.fromstring(_example("Kvittens_AP-Accepterat.xml"))
    note = etree.Element(f"{B}Note")
    note.text = "x"
    root.find(f"{B}IssueTime").addnext(note)  # type: ignore[union-attr]
    with pytest.raises(EnvelopeError) as caught:
        parse_application_response(etree.tostring(root), schema=schema)
    assert "XSD" in caught.value.rules
    assert "R1-APP" in caught.value.rules


def test_empty_status_reason_fires_r2() -> None:
    """An empty StatusReason is refused (R2-APP)."""
    root = etree.fromstring(_example("Kvittens_RE-SIG.xml"))
    _set(f"{A}DocumentResponse/{A}LineResponse/{A}Response/{A}Status/{B}StatusReason", "")(root)
    assert [f.rule for f in digg_response_findings(root)] == ["R2-APP"]


REJECTED = ApplicationResponse(
    id="KVT-7",
    issue_date=date(2026, 11, 30),
    issue_time=time(12, 30, 5, tzinfo=UTC),
    sender="0007:2120000787",
    receiver="0203:sender.example.se",
    document_reference="8f0d4d84-4c4b-4f59-a4a8-3a1b5a0a9c11",
    code=ResponseCode.REJECTED,
    lines=(
        LineResponse(ReasonCode.SIGNATURE, "the signature does not verify"),
        LineResponse(ReasonCode.BUSINESS_RULE, "not-supported", "/message/body/file[1]", "not-supported"),
    ),
)


def test_rejected_receipt_round_trip(schema: etree.XMLSchema) -> None:
    """A REJECTED receipt we build is valid and parses back to itself."""
    data = build_application_response(REJECTED, schema=schema)
    assert parse_application_response(data, schema=schema) == REJECTED


def test_build_refuses_rejected_without_reasons() -> None:
    """A REJECTED receipt without a line response breaks R8-APP and is not built."""
    broken = dataclasses.replace(REJECTED, lines=())
    with pytest.raises(EnvelopeError) as caught:
        build_application_response(broken)
    assert caught.value.rules == ("R8-APP",)


def test_receipt_travels_in_a_signed_xhe(schema: etree.XMLSchema) -> None:
    """The receipt goes back in an XHE signed by the recipient, correlated by the original XHE's ID."""
    recipient = pki.issue(pki.make_ca("SDK CA"), "recipient.example.se")
    receipt = build_application_response(REJECTED, schema=schema)
    envelope = Xhe(
        id="1d6f0c41-7f3e-4b4e-9d2c-6a1f5e8b2c33",
        created=datetime(2026, 11, 30, 12, 30, 6, tzinfo=UTC),
        scope=sdk_scope(RESPONSE_DOCUMENT_ID + "::tm-base-ext-sigenc", "urn:fdc:digg.se:edelivery:federation:test"),
        from_party=XheParty(REJECTED.sender),
        to_party=XheParty(REJECTED.receiver),
        payload=XhePayload(
            "Q{urn:oasis:names:specification:ubl:schema:xsd:ApplicationResponse-2}ApplicationResponse",
            "application/xml",
            receipt,
        ),
    )
    verified = verify_xhe(build_xhe(envelope, keys=recipient), expected=recipient.certificate)
    answer = parse_application_response(verified.xhe.payload.content, schema=schema)
    assert answer == REJECTED
    assert answer.document_reference == "8f0d4d84-4c4b-4f59-a4a8-3a1b5a0a9c11"
