"""The conformance test service itself: what it refuses, and that production P-Modes cannot carry it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from accesspoint.conformance import protocol
from accesspoint.conformance.protocol import BusinessMessage
from accesspoint.core.envelope import parse_envelope
from accesspoint.core.errors import ErrorCode
from accesspoint.core.model import PartyId, Property, Service, SignalMessage
from accesspoint.core.namespaces import CONFORMANCE_TEST_SERVICE
from pmode import PModeError, load_pmodes
from tests.conformance.bed import DRIVER_ID, XML_PAYLOAD, Bed, ProfileKeys, new_message_id
from tests.conftest import REPO


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:  # it holds the connection
            return exc.code, exc.read()


def _submit_raw(bed: Bed, packed_body: bytes, content_type: str) -> SignalMessage:
    status, body = _post(bed.adapters["c2"], packed_body, {"Content-Type": content_type})
    assert status == 200
    answer = parse_envelope(body).header
    assert isinstance(answer, SignalMessage)
    return answer


def _submit(bed: Bed, message: BusinessMessage, *, action: str | None = None) -> tuple[str, SignalMessage]:
    submission_id = new_message_id("service-submission")
    packed = protocol.submit(
        message,
        driver=protocol.party(DRIVER_ID, protocol.TEST_DRIVER_ROLE),
        sut=protocol.party("sut-c2", protocol.SUT_ROLE),
        message_id=submission_id,
        conversation_id="1",
        now=datetime.now(UTC),
    )
    body = packed.to_bytes()
    if action is not None:
        body = body.replace(b">Submit</eb:Action>", f">{action}</eb:Action>".encode())
    return submission_id, _submit_raw(bed, body, packed.content_type)


def test_a_submit_is_answered_with_a_receipt_for_it(bed: Bed, profile: ProfileKeys) -> None:
    """An accepted Submit gets an unsigned receipt referring to the Submit, not to the AS4 message it asks for."""
    message = bed.business(profile, "SIMPLE_ONEWAY", "service-receipt")
    submission_id, answer = _submit(bed, message)
    assert answer.receipt is not None and answer.message_info.ref_to_message_id == submission_id
    bed.delivery(str(message.message_id))


def test_a_submit_no_pmode_fits_is_answered_with_the_access_points_refusal(bed: Bed, profile: ProfileKeys) -> None:
    """A Submit for a Service no P-Mode has gets EBMS:0004 carrying the REST API's problem detail."""
    message = BusinessMessage(Service("SRV_UNKNOWN"), "ACT_UNKNOWN", PartyId(profile.c3_party), payloads=(XML_PAYLOAD,))
    submission_id, answer = _submit(bed, message)
    (error,) = answer.errors
    assert (error.error_code, error.ref_to_message_in_error) == (ErrorCode.OTHER.code, submission_id)
    assert error.detail is not None and "no single outgoing P-Mode leg fits" in error.detail


def test_a_submit_without_its_instructions_is_refused(bed: Bed) -> None:
    """A Submit without ToPartyId gets EBMS:0003 naming what is missing; nothing is submitted."""
    packed = protocol.backend_message(  # a Submit with the instruction left out
        protocol.Action.SUBMIT,
        [Property("Service", "SRV_SIMPLE_ONEWAY"), Property("Action", "ACT_SIMPLE_ONEWAY")],
        [XML_PAYLOAD],
        sender=protocol.party(DRIVER_ID, protocol.TEST_DRIVER_ROLE),
        receiver=protocol.party("sut-c2", protocol.SUT_ROLE),
        message_id=new_message_id("service-incomplete"),
        conversation_id="1",
        now=datetime.now(UTC),
    )
    (error,) = _submit_raw(bed, packed.to_bytes(), packed.content_type).errors
    assert error.error_code == ErrorCode.VALUE_INCONSISTENT.code
    assert error.detail == "MessageProperties lack ToPartyId"


def test_only_submit_is_taken(bed: Bed, profile: ProfileKeys) -> None:
    """A Deliver sent to the Submit endpoint is refused with EBMS:0001."""
    message = bed.business(profile, "SIMPLE_ONEWAY", "service-deliver")
    _, answer = _submit(bed, message, action="Deliver")
    assert [e.error_code for e in answer.errors] == [ErrorCode.VALUE_NOT_RECOGNIZED.code]
    assert bed.exchanges(str(message.message_id)) == []


def test_events_without_the_webhook_signature_are_refused(bed: Bed) -> None:
    """An event whose HMAC does not match the shared secret is refused with 401 and acted on never."""
    event = {"id": "forged", "event": "receipt", "data": {"message_id": "forged@example"}}
    events = bed.adapters["c2"].removesuffix("/as4") + "/events"
    status, _ = _post(
        events, json.dumps(event).encode(), {"Content-Type": "application/json", "X-Accesspoint-Signature": "sha256=0"}
    )
    assert status == 401
    assert bed.notifications("forged@example") == []


def test_backend_hrefs_without_cid_name_the_content_id() -> None:
    """A Submit whose PartInfo href is a bare Content-ID (as test beds wrote them) is read with its payload."""
    packed = protocol.submit(
        BusinessMessage(Service("S"), "A", PartyId("c3"), payloads=(XML_PAYLOAD,)),
        driver=protocol.party(DRIVER_ID, protocol.TEST_DRIVER_ROLE),
        sut=protocol.party("sut", protocol.SUT_ROLE),
        message_id="bare-href@test",
        conversation_id="1",
        now=datetime.now(UTC),
    )
    body = packed.to_bytes().replace(b'href="cid:xmlpayload@minder"', b'href="xmlpayload@minder"')
    read = protocol.read_backend_message(packed.content_type, body)
    assert read.payloads == (XML_PAYLOAD,)


@pytest.mark.parametrize("network", ["edelivery-1.15", "edelivery-2.0", "peppol", "sdk"])
def test_production_profiles_refuse_the_conformance_service(bed: Bed, network: str, tmp_path: Path) -> None:
    """A P-Mode that would take the conformance test service's (unsigned) messages is refused on every network."""
    document = json.loads((bed.folder / "c3" / "pmodes.yaml").read_text())
    pmode = next(p for p in document["pmodes"] if p["id"] == "SIMPLE_ONEWAY-1.15")
    pmode.update(network=network, id="backend")
    pmode["legs"][0]["service"] = CONFORMANCE_TEST_SERVICE
    document["pmodes"] = [pmode]
    (tmp_path / "pmodes.yaml").write_text(json.dumps(document))
    with pytest.raises(PModeError) as refused:
        load_pmodes(tmp_path / "pmodes.yaml")
    assert ("backend", "legs[0].service") in [(p.pmode, p.field) for p in refused.value.problems]


def test_serve_refuses_settings_that_cannot_work(tmp_path: Path) -> None:
    """``accesspoint conformance serve`` stops at once with exit 2 and the field to fix."""
    (tmp_path / "conformance.yaml").write_text(json.dumps({"access_point": {"url": "ftp://x", "token": "t"}}))
    result = subprocess.run(
        [sys.executable, "-m", "accesspoint", "conformance", "serve", "--config", str(tmp_path / "conformance.yaml")],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "invalid-config" and "field webhook_secret" in error["reason"]


def test_the_service_reaches_the_access_point_only_through_its_public_interfaces() -> None:
    """accesspoint.conformance imports no part of the running access point (msh, store, routing, security):
    it talks to it over the REST API and its webhooks only."""
    import ast

    forbidden = ("accesspoint.msh", "accesspoint.store", "accesspoint.routing", "accesspoint.security")
    imported = set()
    for path in (REPO / "accesspoint" / "conformance").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add((path.name, node.module))
            elif isinstance(node, ast.Import):
                imported.update((path.name, alias.name) for alias in node.names)
    assert any(module == "aiohttp" for _, module in imported)  # the HTTP client it uses instead
    assert [(f, m) for f, m in imported if m.startswith(forbidden)] == []
