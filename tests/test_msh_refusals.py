"""What a running access point answers to what it refuses: a signed ebMS error signal with HTTP 200, nothing stored;
a SOAP Fault with HTTP 500 only when not even an error signal can be built."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from lxml import etree

from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.errors import ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.model import CollaborationInfo, MessageInfo, PartyInfo, Service, UserMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.msh.config import load_config
from accesspoint.msh.server import AccessPoint
from accesspoint.security.outbound import Payload, secure_message
from accesspoint.security.signing import find_signature
from pmode import Route, load_pmodes
from tests.test_msh_exchange import SOAP12, _keys
from tests.test_msh_support import error_codes, pair, running

Client = Callable[..., Awaitable[TestClient[Any, Any]]]


def _signed_error(content_type: str, body: bytes) -> list[str]:
    """The codes of a signed error signal (AssertionError when unsigned or not an error signal)."""
    assert find_signature(read_message(content_type, body).parsed) is not None
    return error_codes(content_type, body)


def _user_message(route: Route, message_id: str, *, action: str | None = None) -> UserMessage:
    return UserMessage(
        message_info=MessageInfo(message_id=message_id, timestamp=datetime.now(UTC)),
        party_info=PartyInfo(sender=route.from_party, receiver=route.to_party),
        collaboration_info=CollaborationInfo(
            service=route.leg.service if action is None else Service("urn:example:service:unknown"),
            action=action or route.leg.action,
            conversation_id="conv-1",
            agreement_ref=route.agreement_ref,
        ),
        mpc=route.leg.mpc,
    )


def test_refused_messages_get_signed_error_signals_with_http_200_and_nothing_is_stored(tmp_path: Path) -> None:
    """Garbage, a wrong Content-Type, no agreeing P-Mode and a tampered signature: EBMS errors, nothing kept."""
    sweden, belgium = pair(tmp_path)
    (tmp_path / "sweden-view.yaml").write_text((sweden.folder / "pmodes.yaml").read_text())
    route = load_pmodes(tmp_path / "sweden-view.yaml").match_submission(pmode_id="se-to-be").route
    assert route is not None
    with running(belgium):
        status, kind, body = belgium.post_as4(b"this is not XML", SOAP12)
        assert status == 200 and _signed_error(kind, body) == [ErrorCode.INVALID_HEADER.code]

        envelope = serialize(build_envelope(_user_message(route, "ct@se")))
        status, kind, body = belgium.post_as4(envelope, "text/plain")
        assert status == 200 and _signed_error(kind, body) == [ErrorCode.MIME_INCONSISTENCY.code]

        unknown = _user_message(route, "unknown@se", action="Unknown")
        expected = load_pmodes(belgium.folder / "pmodes.yaml").match_incoming(unknown).error_code
        assert expected is ErrorCode.VALUE_NOT_RECOGNIZED
        status, kind, body = belgium.post_as4(serialize(build_envelope(unknown)), SOAP12)
        assert status == 200 and _signed_error(kind, body) == [expected.code]

        secured = secure_message(
            _user_message(route, "signed@se"),
            [Payload("letter@se", "application/xml", lambda: [b"<letter/>"])],
            route.security,
            signing_key=_keys("ap-sweden-sign"),
            recipient_certificate=route.partner_encryption_certificate,
        )
        original = b"".join(secured.packed.body)
        assert original.count(b">conv-1<") == 1
        tampered = original.replace(b">conv-1<", b">conv-2<")
        status, kind, body = belgium.post_as4(tampered, secured.packed.content_type)
        assert status == 200 and _signed_error(kind, body) == [ErrorCode.FAILED_AUTHENTICATION.code]

        assert belgium.messages(direction="in") == []
        status, kind, body = belgium.post_as4(original, secured.packed.content_type)
        assert status == 200 and read_message(kind, body).parsed.messaging.kind == "receipt"  # the original is taken
        assert [m["message_id"] for m in belgium.messages(direction="in")] == ["signed@se"]


async def test_internal_error_before_parsing_is_a_soap_fault_with_http_500(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    """When reading the request itself breaks, no signal can be built: SOAP 1.2 Receiver fault, HTTP 500."""
    _sweden, belgium = pair(tmp_path)
    access_point = AccessPoint(load_config(belgium.folder / "server.yaml"))

    async def broken(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    access_point._read = broken  # type: ignore[method-assign]
    client = await aiohttp_client(access_point.application())
    response = await client.post("/as4", data=b"<x/>", headers={"Content-Type": SOAP12})
    assert response.status == 500
    assert response.headers["Content-Type"].startswith(SoapVersion.V12.content_type)
    root = etree.fromstring(await response.read())
    ns = {"s": SoapVersion.V12.value}
    assert root.findtext("s:Body/s:Fault/s:Code/s:Value", namespaces=ns) == "soap:Receiver"
    assert "disk" not in (await response.text())
