"""What an access point answers to what it refuses: a signed ebMS error signal with HTTP 200, nothing stored;
a SOAP Fault with HTTP 500 only when not even an error signal can be built."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from lxml import etree

from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.errors import ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.model import CollaborationInfo, MessageInfo, PartyInfo, Service, SignalMessage, UserMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.msh import receive_pipeline
from accesspoint.msh.app import INBOUND, create_app
from accesspoint.msh.config import load_config
from accesspoint.security.outbound import Payload, SecuredMessage, secure_message
from accesspoint.security.revocation import RevocationResult, RevocationStatus
from accesspoint.security.signing import find_signature
from accesspoint.security.trust import PATH_REASONS, TrustError, TrustFailure
from accesspoint.testing.pki import issue, make_ca
from pmode import Route, load_pmodes
from tests.inmemory import Node, Pair
from tests.test_msh_exchange import SOAP12, _keys
from tests.test_msh_support import error_codes

Client = Callable[..., Awaitable[TestClient[Any, Any]]]


def _signed_error(content_type: str, body: bytes) -> list[str]:
    """The codes of a signed error signal (AssertionError when unsigned or not an error signal)."""
    assert find_signature(read_message(content_type, body).parsed) is not None
    return error_codes(content_type, body)


def _user_message(
    route: Route, message_id: str, *, service: str | None = None, action: str | None = None, ref: str | None = None
) -> UserMessage:
    return UserMessage(
        message_info=MessageInfo(message_id=message_id, timestamp=datetime.now(UTC), ref_to_message_id=ref),
        party_info=PartyInfo(sender=route.from_party, receiver=route.to_party),
        collaboration_info=CollaborationInfo(
            service=route.leg.service if service is None else Service(service),
            action=action or route.leg.action,
            conversation_id="conv-1",
            agreement_ref=route.agreement_ref,
        ),
        mpc=route.leg.mpc,
    )


async def test_refused_messages_get_signed_error_signals_with_http_200_and_nothing_is_stored(
    pair_factory: Callable[..., Pair], tmp_path: Path
) -> None:
    """Garbage, a wrong Content-Type, no or two agreeing P-Modes and a tampered signature: EBMS errors, nothing kept."""
    pair = pair_factory()
    sweden, belgium = pair.se, pair.be
    route = _route(sweden, "se-to-be", tmp_path)
    agreed = json.loads((belgium.folder / "pmodes.yaml").read_text())
    (push,) = [p for p in agreed["pmodes"] if p["id"] == "se-to-be"]
    for twin in ("twice-a", "twice-b"):  # two P-Modes that both agree with a Twice message: ambiguous
        agreed["pmodes"].append({**push, "id": twin, "legs": [{**push["legs"][0], "action": "Twice"}]})
    (belgium.folder / "pmodes.yaml").write_text(json.dumps(agreed))
    pmodes = load_pmodes(belgium.folder / "pmodes.yaml")
    await belgium.start()
    status, kind, body = await belgium.post_as4(b"this is not XML", SOAP12)
    assert status == 200 and _signed_error(kind, body) == [ErrorCode.INVALID_HEADER.code]

    envelope = serialize(build_envelope(_user_message(route, "ct@se")))
    status, kind, body = await belgium.post_as4(envelope, "text/plain")
    assert status == 200 and _signed_error(kind, body) == [ErrorCode.MIME_INCONSISTENCY.code]

    unknown = _user_message(route, "unknown@se", service="urn:example:service:unknown", action="Unknown")
    twice = _user_message(route, "twice@se", action="Twice")
    for message, code in ((unknown, ErrorCode.VALUE_NOT_RECOGNIZED), (twice, ErrorCode.OTHER)):
        assert pmodes.match_incoming(message).error_code is code  # EBMS:0001 none, EBMS:0004 ambiguous
        status, kind, body = await belgium.post_as4(serialize(build_envelope(message)), SOAP12)
        assert status == 200 and _signed_error(kind, body) == [code.code]

    secured = _secured(route, "signed@se", "ap-sweden-sign")
    original = b"".join(secured.packed.body)
    assert original.count(b">conv-1<") == 1
    tampered = original.replace(b">conv-1<", b">conv-2<")
    status, kind, body = await belgium.post_as4(tampered, secured.packed.content_type)
    assert status == 200 and _signed_error(kind, body) == [ErrorCode.FAILED_AUTHENTICATION.code]

    assert await belgium.messages(direction="in") == []
    status, kind, body = await belgium.post_as4(original, secured.packed.content_type)
    assert status == 200 and read_message(kind, body).parsed.messaging.kind == "receipt"  # the original is taken
    assert [m["message_id"] for m in await belgium.messages(direction="in")] == ["signed@se"]


def _secured(route: Route, message_id: str, key: str, ref: str | None = None) -> SecuredMessage:
    """A signed and encrypted message on the route, as its sender (the key's owner) would send it."""
    return secure_message(
        _user_message(route, message_id, ref=ref),
        [Payload("letter@x", "application/xml", lambda: [b"<letter/>"])],
        route.security,
        signing_key=_keys(key),
        recipient_certificate=route.partner_encryption_certificate,
    )


def _route(peer: Node, pmode_id: str, folder: Path) -> Route:
    """The peer's outgoing leg of that P-Mode, from its own P-Mode file."""
    (folder / f"{peer.folder.name}-view.yaml").write_text((peer.folder / "pmodes.yaml").read_text())
    route = load_pmodes(folder / f"{peer.folder.name}-view.yaml").match_submission(pmode_id=pmode_id).route
    assert route is not None
    return route


async def test_messages_that_travel_against_their_leg_are_refused(
    pair_factory: Callable[..., Pair], tmp_path: Path
) -> None:
    """A reply to no request sent gets EBMS:0003; a message pushed on a pull leg EBMS:0010; neither is stored."""
    pair = pair_factory()
    sweden, belgium = pair.se, pair.be
    reply_route = _route(belgium, "se-be-request-reply", tmp_path)
    assert reply_route.leg.action == "Reply"
    pull_route = _route(sweden, "be-pulls-from-se", tmp_path)
    await sweden.start()
    await belgium.start()
    stray = _secured(reply_route, "stray@be", "partner-115", ref="never-sent@se")
    status, kind, body = await sweden.post_as4(b"".join(stray.packed.body), stray.packed.content_type)
    assert status == 200 and _signed_error(kind, body) == [ErrorCode.VALUE_INCONSISTENT.code]

    pushed = _secured(pull_route, "pushed@se", "ap-sweden-sign")
    status, kind, body = await belgium.post_as4(b"".join(pushed.packed.body), pushed.packed.content_type)
    assert status == 200 and _signed_error(kind, body) == [ErrorCode.PROCESSING_MODE_MISMATCH.code]
    assert await sweden.messages(direction="in") == await belgium.messages(direction="in") == []


async def test_internal_error_before_parsing_is_a_soap_fault_with_http_500(
    aiohttp_client: Client, pair_factory: Callable[..., Pair]
) -> None:
    """When reading the request itself breaks, no signal can be built: SOAP 1.2 Receiver fault, HTTP 500."""
    belgium = pair_factory().be
    app = create_app(load_config(belgium.folder / "server.yaml"))

    async def broken(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    client = await aiohttp_client(app)
    app[INBOUND].read = broken  # type: ignore[method-assign]
    response = await client.post("/as4", data=b"<x/>", headers={"Content-Type": SOAP12})
    assert response.status == 500
    assert response.headers["Content-Type"].startswith(SoapVersion.V12.content_type)
    root = etree.fromstring(await response.read())
    ns = {"s": SoapVersion.V12.value}
    assert root.findtext("s:Body/s:Fault/s:Code/s:Value", namespaces=ns) == "soap:Receiver"
    assert "disk" not in (await response.text())


async def test_a_signer_whose_revocation_status_cannot_be_learnt_now_is_asked_to_try_again_later(
    pair_factory: Callable[..., Pair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hard-fail with the responder unreachable: HTTP 503 with a SOAP Receiver fault, and nothing stored."""
    pair = pair_factory()
    sweden, belgium = pair.se, pair.be
    unknown = RevocationResult(RevocationStatus.UNKNOWN, "ocsp http://ocsp.example: unreachable", transient=True)

    async def unreachable(*_args: object) -> None:
        raise TrustError(TrustFailure.REVOCATION_UNKNOWN, "status unknown (hard-fail)", revocation=unknown)

    monkeypatch.setattr(receive_pipeline.ReceivePipeline, "verify", unreachable)
    await belgium.start()
    secured = _secured(_route(sweden, "se-to-be", pair.se.folder.parent), "later@se", "ap-sweden-sign")
    status, kind, body = await belgium.post_as4(b"".join(secured.packed.body), secured.packed.content_type)
    assert (status, kind.split(";")[0]) == (503, SoapVersion.V12.content_type)
    root = etree.fromstring(body)
    ns = {"s": SoapVersion.V12.value}
    assert root.findtext("s:Body/s:Fault/s:Code/s:Value", namespaces=ns) == "soap:Receiver"
    assert await belgium.messages(direction="in") == []


async def test_the_error_signal_names_the_certificate_path_reason_of_an_untrusted_signer(
    pair_factory: Callable[..., Pair], tmp_path: Path
) -> None:
    """POST /as4 signed by a certificate of a CA Belgium does not trust: the signed EBMS:0101 error's detail says
    untrusted issuer and names no certificate; nothing is stored."""
    pair = pair_factory()
    await pair.be.start()
    route = _route(pair.se, "se-to-be", tmp_path)
    stranger = issue(make_ca("Stranger CA"), "AP-SE-STRANGER")
    secured = secure_message(
        _user_message(route, "stranger@se"),
        [Payload("letter@x", "application/xml", lambda: [b"<letter/>"])],
        route.security,
        signing_key=stranger,
        recipient_certificate=route.partner_encryption_certificate,
    )
    status, kind, body = await pair.be.post_as4(b"".join(secured.packed.body), secured.packed.content_type)
    assert status == 200 and _signed_error(kind, body) == [ErrorCode.FAILED_AUTHENTICATION.code]
    signal = read_message(kind, body).parsed.messaging.message
    assert isinstance(signal, SignalMessage)
    (error,) = signal.errors
    assert error.detail == PATH_REASONS[TrustFailure.UNTRUSTED_ISSUER]
    assert b"STRANGER" not in body and b"Stranger CA" not in body
    assert await pair.be.messages(direction="in") == []
