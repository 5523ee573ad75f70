"""Two access points in one event loop: two-way push-and-push, pull (serving and pulling), asynchronous signals."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.model import UserMessage
from accesspoint.core.namespaces import SoapVersion
from accesspoint.core.signals import build_error_signal
from accesspoint.msh.receiving import accept_user_message, policy_for_key, pull_request, signed_signal
from accesspoint.security.inbound import read_memory_part
from accesspoint.security.keys import KeyPair, load_key_pair
from accesspoint.testing import services
from pmode import load_pmodes
from tests.inmemory import Node, Pair
from tests.test_msh import CERTS
from tests.test_msh_support import PULL_MPC, error_codes, submission

SOAP12 = f"{SoapVersion.V12.content_type}; charset=UTF-8"

Databases = dict[str, str]


@pytest.fixture(params=["sqlite", "postgresql"])
async def databases(request: pytest.FixtureRequest) -> AsyncIterator[Databases]:
    """Each peer's database: its default SQLite file, or a database each on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield {}
        return
    server: services.PostgresServer = request.getfixturevalue("postgres_server")
    names = [await services.create_postgres_database(server) for _ in ("se", "be")]
    try:
        yield {"se": server.url(names[0]), "be": server.url(names[1])}
    finally:
        for name in names:
            await services.drop_postgres_database(server, name)


@functools.cache
def _keys(name: str) -> KeyPair:
    # Loaded once per session: loading an RSA key checks it, ~0.1 s of CPU each time.
    return load_key_pair(CERTS / f"{name}.key.pem", None, certificate=CERTS / f"{name}.pem")


def pull_request_from(keys: KeyPair, mpc: str = PULL_MPC) -> bytes:
    """A PullRequest signed with keys."""
    return signed_signal(pull_request(mpc, at=datetime.now(UTC)), keys, policy_for_key(keys), SoapVersion.V12)


async def _pull(node: Node, keys: KeyPair, mpc: str = PULL_MPC) -> tuple[int, str, bytes]:
    """POST a PullRequest signed with keys to the node."""
    return await node.post_as4(pull_request_from(keys, mpc), SOAP12)


def _error_signal(keys: KeyPair, ref: str, code: ErrorCode) -> bytes:
    error = EbmsError(code, "refused by the test partner", ref_to_message_id=ref)
    signal = build_error_signal([error], message_id=f"{uuid.uuid4()}@be", now=datetime.now(UTC), ref_to_message_id=ref)
    return signed_signal(signal, keys, policy_for_key(keys), SoapVersion.V12)


def _on_databases(pair: Pair, databases: Databases) -> None:
    for side, node in (("se", pair.se), ("be", pair.be)):
        if side in databases:
            pair.configure(node, database=databases[side])


async def test_two_way_push_and_push_reply_is_correlated_with_its_request(
    pair_factory: Callable[..., Pair], databases: Databases
) -> None:
    """Belgium answers Sweden's request through the API with ref_to_message_id; Sweden finds the reply by it."""
    pair = pair_factory()
    _on_databases(pair, databases)
    sweden, belgium = pair.se, pair.be
    await belgium.start()
    await sweden.start()
    request = submission("se-be-request-reply", b"<q/>", "req@se", conversation_id="c-1")
    status, sent = await sweden.api("POST", "/api/v1/messages", request)
    assert status == 202, sent
    assert (await sweden.until("req@se", {"delivered", "failed"}))["state"] == "delivered"
    received = await belgium.until("req@se", {"received"}, direction="in")
    assert received["action"] == "Request" and received["conversation_id"] == "c-1"

    status, problem = await belgium.api("POST", "/api/v1/messages", submission("se-be-request-reply", b"<a/>", "x@be"))
    assert status == 422 and "ref_to_message_id" in problem["detail"]

    reply = submission("se-be-request-reply", b"<a/>", "rep@be", ref_to_message_id="req@se")
    del reply["pmode"]  # the request's two-way P-Mode is taken
    status, queued = await belgium.api("POST", "/api/v1/messages", reply)
    assert status == 202, queued
    assert queued["ref_to_message_id"] == "req@se" and queued["conversation_id"] == "c-1"
    assert (await belgium.until("rep@be", {"delivered", "failed"}))["state"] == "delivered"

    (found,) = await sweden.messages(ref_to_message_id="req@se", direction="in")
    assert (found["message_id"], found["action"], found["conversation_id"]) == ("rep@be", "Reply", "c-1")
    assert [m["message_id"] for m in await sweden.messages(conversation_id="c-1")] == ["req@se", "rep@be"]


async def test_pull_serves_the_waiting_message_and_the_receipt_comes_back_asynchronously(
    pair_factory: Callable[..., Pair], databases: Databases
) -> None:
    """Sweden keeps a pull-leg message until Belgium's signed PullRequest takes it; Belgium's receipt delivers it."""
    pair = pair_factory()
    _on_databases(pair, databases)
    sweden, belgium = pair.se, pair.be
    await sweden.start()
    payload = os.urandom(2 * 1024 * 1024)  # past the 1 MiB the pull spool keeps in memory
    status, sent = await sweden.api("POST", "/api/v1/messages", submission("be-pulls-from-se", payload, "p1@se"))
    assert status == 202, sent
    # Nobody pushes it; a puller that is not the P-Mode's partner, or pulls another MPC, is refused.
    assert error_codes(*(await _pull(sweden, _keys("ap-sweden-sign")))[1:]) == [ErrorCode.FAILED_AUTHENTICATION.code]
    status, kind, body = await _pull(sweden, _keys("partner-115"), mpc="urn:example:mpc:nobody")
    assert status == 200 and error_codes(kind, body) == [ErrorCode.FAILED_AUTHENTICATION.code]
    assert (await sweden.message("p1@se"))["state"] == "submitted"
    await belgium.start()  # its pull loop runs at once, then every pull.interval of the clock
    delivered = await sweden.until("p1@se", {"delivered", "failed"})
    assert delivered["state"] == "delivered", delivered
    assert "partner-receipt" in {e["kind"] for e in delivered["evidence"]}
    assert any((h["detail"] or "").startswith("pulled on") for h in delivered["history"])
    received = await belgium.until("p1@se", {"received"}, direction="in")
    assert received["payloads"][0]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert {"raw-message", "our-receipt"} <= {e["kind"] for e in received["evidence"]}
    status, kind, body = await _pull(sweden, _keys("partner-115"))
    assert status == 200 and error_codes(kind, body) == [ErrorCode.EMPTY_MPC.code]


async def test_error_signal_for_a_sent_message_fails_it_with_its_code_and_forged_signals_are_refused(
    pair_factory: Callable[..., Pair],
) -> None:
    """An error signal signed by the partner fails the message it refers to; other signers get EBMS:0101."""
    sweden = pair_factory().se
    await sweden.start()
    assert (await sweden.api("POST", "/api/v1/messages", submission("be-pulls-from-se", b"<x/>", "e1@se")))[0] == 202
    status, kind, body = await _pull(sweden, _keys("partner-115"))
    pulled = read_message(kind, body).parsed.messaging.message
    assert status == 200 and isinstance(pulled, UserMessage) and pulled.message_id == "e1@se"
    assert (await sweden.message("e1@se"))["state"] == "awaiting_receipt"

    forged = _error_signal(_keys("ap-sweden-sign"), "e1@se", ErrorCode.DECOMPRESSION_FAILURE)
    status, kind, answer = await sweden.post_as4(forged, SOAP12)
    assert status == 200 and error_codes(kind, answer) == [ErrorCode.FAILED_AUTHENTICATION.code]
    assert (await sweden.message("e1@se"))["state"] == "awaiting_receipt"

    unknown = _error_signal(_keys("partner-115"), "never-sent@se", ErrorCode.DECOMPRESSION_FAILURE)
    status, kind, answer = await sweden.post_as4(unknown, SOAP12)
    assert status == 200 and error_codes(kind, answer) == [ErrorCode.VALUE_INCONSISTENT.code]

    genuine = _error_signal(_keys("partner-115"), "e1@se", ErrorCode.DECOMPRESSION_FAILURE)
    status, _kind, answer = await sweden.post_as4(genuine, SOAP12)
    assert (status, answer) == (200, b"")
    failed = await sweden.message("e1@se")
    assert failed["state"] == "failed" and failed["last_error"]["code"] == ErrorCode.DECOMPRESSION_FAILURE.code
    assert "error-signal" in {e["kind"] for e in failed["evidence"]}


async def test_pushed_message_is_delivered_when_its_receipt_comes_asynchronously(
    pair_factory: Callable[..., Pair],
) -> None:
    """A partner that answers the POST with an empty 200 and POSTs its signed receipt later delivers the message."""
    pair = pair_factory(backoff="10s")
    sweden = pair.se
    pmodes = load_pmodes(pair.be.folder / "pmodes.yaml")
    keys = _keys("partner-115")
    receipts: list[bytes] = []

    async def partner(request: web.Request) -> web.Response:
        received = read_message(request.headers["Content-Type"], await request.read())
        accepted = accept_user_message(
            received, pmodes, keys=[keys], at=datetime.now(UTC), revocation=None, read_part=read_memory_part
        )
        receipts.append(signed_signal(accepted.receipt, keys, accepted.route.security, SoapVersion.V12))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/as4", partner)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", pair.be.port).start()
    try:
        await sweden.start()
        assert (await sweden.api("POST", "/api/v1/messages", submission("se-to-be", b"<async/>", "a1@se")))[0] == 202
        waiting = await sweden.until("a1@se", {"awaiting_receipt"})
        assert waiting["attempts"] == 1 and len(receipts) == 1
        async with aiohttp.ClientSession() as session:
            headers = {"Content-Type": SOAP12}
            response = await session.post(f"{sweden.base}/as4", data=io.BytesIO(receipts[0]), headers=headers)
            assert (response.status, await response.read()) == (200, b"")
        sent = await sweden.message("a1@se")
        assert sent["state"] == "delivered", sent
        assert any(h["detail"] == "asynchronous receipt" for h in sent["history"])
        assert "partner-receipt" in {e["kind"] for e in sent["evidence"]}
    finally:
        await runner.cleanup()


async def test_synchronous_receipt_off_the_wire_format_does_not_deliver(pair_factory: Callable[..., Pair]) -> None:
    """A partner's signed synchronous receipt whose MessageId is no RFC 2822 msg-id: EBMS:0009, not delivered."""
    pair = pair_factory(retries=0)
    sweden = pair.se
    pmodes = load_pmodes(pair.be.folder / "pmodes.yaml")
    keys = _keys("partner-115")

    async def partner(request: web.Request) -> web.Response:
        received = read_message(request.headers["Content-Type"], await request.read())
        accepted = accept_user_message(
            received, pmodes, keys=[keys], at=datetime.now(UTC), revocation=None, read_part=read_memory_part
        )
        info = dataclasses.replace(accepted.receipt.message_info, message_id="no-at-sign")
        receipt = dataclasses.replace(accepted.receipt, message_info=info)
        body = signed_signal(receipt, keys, accepted.route.security, SoapVersion.V12)
        return web.Response(body=body, content_type=SoapVersion.V12.content_type)

    app = web.Application()
    app.router.add_post("/as4", partner)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", pair.be.port).start()
    try:
        await sweden.start()
        assert (await sweden.api("POST", "/api/v1/messages", submission("se-to-be", b"<w/>", "w1@se")))[0] == 202
        sent = await sweden.until("w1@se", {"failed"})
        assert sent["last_error"]["code"] == ErrorCode.INVALID_HEADER.code, sent
    finally:
        await runner.cleanup()


async def test_pulled_message_without_receipt_is_offered_again_then_fails_with_missing_receipt(
    pair_factory: Callable[..., Pair],
) -> None:
    """Reception awareness on pull: re-offered after the retry delay, EBMS:0301 once the retries are spent."""
    pair = pair_factory(retries=1, backoff="5s")
    sweden = pair.se
    keys = _keys("partner-115")

    async def pulled() -> str | None:
        status, kind, body = await _pull(sweden, keys)
        assert status == 200
        header = read_message(kind, body).parsed.messaging.message
        return header.message_id if isinstance(header, UserMessage) else None

    await sweden.start()
    assert (await sweden.api("POST", "/api/v1/messages", submission("be-pulls-from-se", b"<r/>", "again@se")))[0] == 202
    assert await pulled() == "again@se"
    assert await pulled() is None  # not offered again before the retry delay
    await pair.advance(timedelta(seconds=5))
    assert await pulled() == "again@se"
    await pair.advance(timedelta(seconds=10))
    assert await pulled() is None  # the retries are spent: failed, not offered
    failed = await sweden.message("again@se")
    assert (failed["state"], failed["last_error"]["code"]) == ("failed", ErrorCode.MISSING_RECEIPT.code)
    assert failed["attempts"] == 3
