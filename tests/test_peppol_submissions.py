"""Peppol refuses untyped submissions: originalSender and finalRecipient must carry their identifier scheme as the
property's type, through the REST API and through ``accesspoint send``."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from accesspoint import cli
from accesspoint.cli import EXIT_REFUSED
from tests.inmemory import Pair
from tests.test_msh import CERTS, TOKEN

AP_TYPE = "urn:fdc:peppol.eu:2017:identifiers:ap"
SCHEME = "iso6523-actorid-upis"
SENDER, RECIPIENT = "0007:2021005448", "0088:5798000000001"
BILLING = {"value": "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0", "type": "cenbii-procid-ubl"}
INVOICE = (
    "busdox-docid-qns::urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice"
    "##urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0::2.1"
)
PAYLOAD = {"content_id": "invoice@se", "mime_type": "application/xml", "data": base64.b64encode(b"<sbd/>").decode()}


def _peppol(pair: Pair) -> None:
    """Sweden's P-Modes: one Peppol P-Mode to Belgium (the profile's defaults, the test CA as anchor)."""
    trust = {"anchors": [str(CERTS / "ca.pem")], "revocation": "soft-fail"}
    pair.se.write_pmodes({
        "version": 1,
        "self": "our-ap",
        "parties": {
            "our-ap": {"party_ids": [{"value": "POP000123", "type": AP_TYPE}], "endpoint": pair.se_url},
            "their-ap": {
                "party_ids": [{"value": "POP000115", "type": AP_TYPE}],
                "endpoint": pair.be_url,
                "signing_certificate": str(CERTS / "partner-115.pem"),
            },
        },
        "pmodes": [{
            "id": "peppol-invoice-out", "network": "peppol",
            "initiator": {"party": "our-ap"}, "responder": {"party": "their-ap"},
            "legs": [{"service": BILLING, "action": INVOICE, "security": {"trust": trust}}],
        }],
    })  # fmt: skip


def _submission(message_id: str, **properties: Any) -> dict[str, Any]:
    return {"pmode": "peppol-invoice-out", "message_id": message_id, "properties": properties, "payloads": [PAYLOAD]}


async def test_rest_refuses_a_peppol_submission_whose_party_property_lacks_its_type(
    pair_factory: Callable[..., Pair],
) -> None:
    """POST /api/v1/messages on a Peppol P-Mode: finalRecipient without a type, or originalSender missing, is 422
    with a problem naming the property, and nothing is stored; both typed, it is taken."""
    pair = pair_factory()
    _peppol(pair)
    await pair.se.start()
    typed = {"value": SENDER, "type": SCHEME}
    untyped = _submission("untyped@se", originalSender=typed, finalRecipient=RECIPIENT)
    status, problem = await pair.se.api("POST", "/api/v1/messages", untyped)
    assert status == 422, problem
    assert (problem["type"], problem["field"]) == (
        "urn:accesspoint:problem:invalid-submission",
        "properties.finalRecipient",
    )
    assert "properties.finalRecipient" in problem["detail"] and "type" in problem["detail"]
    missing = _submission("missing@se", finalRecipient={"value": RECIPIENT, "type": SCHEME})
    status, problem = await pair.se.api("POST", "/api/v1/messages", missing)
    assert (status, problem["field"]) == (422, "properties.originalSender")
    assert await pair.se.messages(direction="out") == []
    status, taken = await pair.se.api("POST", "/api/v1/messages", _submission(
        "typed@se", originalSender=typed, finalRecipient={"value": RECIPIENT, "type": SCHEME}
    ))  # fmt: skip
    assert status == 202, taken
    assert [m["message_id"] for m in await pair.se.messages(direction="out")] == ["typed@se"]


async def test_send_without_property_type_on_peppol_prints_a_json_error_and_exits_refused(
    pair_factory: Callable[..., Pair], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``accesspoint send --property finalRecipient=…`` without ``--property-type`` on a Peppol P-Mode exits 1 with
    a JSON error naming the property, and nothing is stored."""
    pair = pair_factory()
    _peppol(pair)
    await pair.se.start()
    invoice = tmp_path / "invoice.xml"
    invoice.write_bytes(b"<sbd/>")
    argv = [
        "send", str(invoice), "--api", pair.se.base, "--token", TOKEN, "--pmode", "peppol-invoice-out",
        "--property", f"originalSender={SENDER}", "--property-type", f"originalSender={SCHEME}",
        "--property", f"finalRecipient={RECIPIENT}",
    ]  # fmt: skip
    code = await asyncio.to_thread(cli.main, argv)  # the CLI's HTTP client blocks: off this loop, which serves
    document = json.loads(capsys.readouterr().out)
    assert code == EXIT_REFUSED == 1
    assert (document["ok"], document["status"], document["field"]) == (False, 422, "properties.finalRecipient")
    assert "properties.finalRecipient" in document["error"]["reason"]
    assert await pair.se.messages(direction="out") == []
