"""Two real access point processes: two-way push-and-push, pull (serving and pulling), asynchronous signals."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

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
from tests.test_msh import CERTS
from tests.test_msh_support import PULL_MPC, Peer, error_codes, pair, running, submission

SOAP12 = f"{SoapVersion.V12.content_type}; charset=UTF-8"


Databases = dict[str, dict[str, str]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def databases(request: pytest.FixtureRequest) -> AsyncIterator[Databases]:
    """Settings for each peer's database: their default SQLite files, or a database each on a real PostgreSQL."""
    if request.param == "sqlite":
        yield {}
        return
    server: services.PostgresServer = request.getfixturevalue("postgres_server")
    names = [await services.create_postgres_database(server) for _ in ("se", "be")]
    try:
        yield {"se": {"database": server.url(names[0])}, "be": {"database": server.url(names[1])}}
    finally:
        for name in names:
            await services.drop_postgres_database(server, name)


def _keys(name: str) -> KeyPair:
    return load_key_pair(CERTS / f"{name}.key.pem", None, certificate=CERTS / f"{name}.pem")


def _pull(peer: Peer, keys: KeyPair, mpc: str = PULL_MPC) -> tuple[int, str, bytes]:
    """POST a PullRequest signed with keys to the peer."""
    request = pull_request(mpc, at=datetime.now(UTC))
    return peer.post_as4(signed_signal(request, keys, policy_for_key(keys), SoapVersion.V12), SOAP12)


def _error_signal(keys: KeyPair, ref: str, code: ErrorCode) -> bytes:
    error = EbmsError(code, "refused by the test partner", ref_to_message_id=ref)
    signal = build_error_signal([error], message_id=f"{uuid.uuid4()}@be", now=datetime.now(UTC), ref_to_message_id=ref)
    return signed_signal(signal, keys, policy_for_key(keys), SoapVersion.V12)


def test_two_way_push_and_push_reply_is_correlated_with_its_request(tmp_path: Path, databases: Databases) -> None:
    """Belgium answers Sweden's request through the API with ref_to_message_id; Sweden finds the reply by it."""
    sweden, belgium = pair(tmp_path, **databases)
    with running(belgium, sweden):
        status, sent = sweden.api(
            "POST", "/api/v1/messages", submission("se-be-request-reply", b"<q/>", "req@se", conversation_id="c-1")
        )
        assert status == 202, sent
        assert sweden.wait_state("req@se", {"delivered", "failed"})["state"] == "delivered"
        request = belgium.wait_state("req@se", {"received"}, direction="in")
        assert request["action"] == "Request" and request["conversation_id"] == "c-1"

        status, problem = belgium.api("POST", "/api/v1/messages", submission("se-be-request-reply", b"<a/>", "x@be"))
        assert status == 422 and "ref_to_message_id" in problem["detail"]

        reply = submission("se-be-request-reply", b"<a/>", "rep@be", ref_to_message_id="req@se")
        del reply["pmode"]  # the request's two-way P-Mode is taken
        status, queued = belgium.api("POST", "/api/v1/messages", reply)
        assert status == 202, queued
        assert queued["ref_to_message_id"] == "req@se" and queued["conversation_id"] == "c-1"
        assert belgium.wait_state("rep@be", {"delivered", "failed"})["state"] == "delivered"

        (found,) = sweden.messages(ref_to_message_id="req@se", direction="in")
        assert (found["message_id"], found["action"], found["conversation_id"]) == ("rep@be", "Reply", "c-1")
        assert [m["message_id"] for m in sweden.messages(conversation_id="c-1")] == ["req@se", "rep@be"]


def test_pull_serves_the_waiting_message_and_the_receipt_comes_back_asynchronously(
    tmp_path: Path, databases: Databases
) -> None:
    """Sweden keeps a pull-leg message until Belgium's signed PullRequest takes it; Belgium's receipt delivers it."""
    sweden, belgium = pair(tmp_path, **databases)
    with running(sweden):
        payload = os.urandom(2 * 1024 * 1024)  # past the 1 MiB the pull spool keeps in memory
        status, sent = sweden.api("POST", "/api/v1/messages", submission("be-pulls-from-se", payload, "p1@se"))
        assert status == 202, sent
        # Nobody pushes it; a puller that is not the P-Mode's partner, or pulls another MPC, is refused.
        assert error_codes(*_pull(sweden, _keys("ap-sweden-sign"))[1:]) == [ErrorCode.FAILED_AUTHENTICATION.code]
        status, kind, body = _pull(sweden, _keys("partner-115"), mpc="urn:example:mpc:nobody")
        assert status == 200 and error_codes(kind, body) == [ErrorCode.FAILED_AUTHENTICATION.code]
        assert sweden.api("GET", "/api/v1/messages/p1@se")[1]["state"] == "submitted"
        with running(belgium):
            delivered = sweden.wait_state("p1@se", {"delivered", "failed"})
            assert delivered["state"] == "delivered", delivered
            assert "partner-receipt" in {e["kind"] for e in delivered["evidence"]}
            assert any((h["detail"] or "").startswith("pulled on") for h in delivered["history"])
            received = belgium.wait_state("p1@se", {"received"}, direction="in")
            assert received["payloads"][0]["sha256"] == hashlib.sha256(payload).hexdigest()
            assert {"raw-message", "our-receipt"} <= {e["kind"] for e in received["evidence"]}
            status, kind, body = _pull(sweden, _keys("partner-115"))
            assert status == 200 and error_codes(kind, body) == [ErrorCode.EMPTY_MPC.code]


def test_error_signal_for_a_sent_message_fails_it_with_its_code_and_forged_signals_are_refused(
    tmp_path: Path,
) -> None:
    """An error signal signed by the partner fails the message it refers to; other signers get EBMS:0101."""
    sweden, _belgium = pair(tmp_path)
    with running(sweden):
        assert sweden.api("POST", "/api/v1/messages", submission("be-pulls-from-se", b"<x/>", "e1@se"))[0] == 202
        status, kind, body = _pull(sweden, _keys("partner-115"))
        pulled = read_message(kind, body).parsed.messaging.message
        assert status == 200 and isinstance(pulled, UserMessage) and pulled.message_id == "e1@se"
        assert sweden.api("GET", "/api/v1/messages/e1@se")[1]["state"] == "awaiting_receipt"

        forged = _error_signal(_keys("ap-sweden-sign"), "e1@se", ErrorCode.DECOMPRESSION_FAILURE)
        status, kind, answer = sweden.post_as4(forged, SOAP12)
        assert status == 200 and error_codes(kind, answer) == [ErrorCode.FAILED_AUTHENTICATION.code]
        assert sweden.api("GET", "/api/v1/messages/e1@se")[1]["state"] == "awaiting_receipt"

        unknown = _error_signal(_keys("partner-115"), "never-sent@se", ErrorCode.DECOMPRESSION_FAILURE)
        status, kind, answer = sweden.post_as4(unknown, SOAP12)
        assert status == 200 and error_codes(kind, answer) == [ErrorCode.VALUE_INCONSISTENT.code]

        genuine = _error_signal(_keys("partner-115"), "e1@se", ErrorCode.DECOMPRESSION_FAILURE)
        status, _kind, answer = sweden.post_as4(genuine, SOAP12)
        assert (status, answer) == (200, b"")
        failed = sweden.api("GET", "/api/v1/messages/e1@se")[1]
        assert failed["state"] == "failed" and failed["last_error"]["code"] == ErrorCode.DECOMPRESSION_FAILURE.code
        assert "error-signal" in {e["kind"] for e in failed["evidence"]}


async def test_pushed_message_is_delivered_when_its_receipt_comes_asynchronously(tmp_path: Path) -> None:
    """A partner that answers the POST with an empty 200 and POSTs its signed receipt later delivers the message."""
    sweden, belgium = pair(tmp_path, backoff="10s")
    pmodes = load_pmodes(belgium.folder / "pmodes.yaml")
    keys = _keys("partner-115")
    answers: list[tuple[int, bytes]] = []

    async def send_receipt(receipt: bytes) -> None:
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as session:
            response = await session.post(f"{sweden.base}/as4", data=receipt, headers={"Content-Type": SOAP12})
            answers.append((response.status, await response.read()))

    async def partner(request: web.Request) -> web.Response:
        received = read_message(request.headers["Content-Type"], await request.read())
        accepted = accept_user_message(
            received, pmodes, keys=[keys], at=datetime.now(UTC), revocation=None, read_part=read_memory_part
        )
        receipt = signed_signal(accepted.receipt, keys, accepted.route.security, SoapVersion.V12)
        tasks.append(asyncio.create_task(send_receipt(receipt)))
        return web.Response(status=200)

    tasks: list[asyncio.Task[None]] = []
    app = web.Application()
    app.router.add_post("/as4", partner)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", belgium.port).start()
    try:
        with running(sweden):
            body = submission("se-to-be", b"<async/>", "a1@se")
            assert (await asyncio.to_thread(sweden.api, "POST", "/api/v1/messages", body))[0] == 202
            sent = await asyncio.to_thread(sweden.wait_state, "a1@se", {"delivered", "failed"})
            assert sent["state"] == "delivered", sent
            assert sent["attempts"] == 1 and answers == [(200, b"")]
            assert any(h["detail"] == "asynchronous receipt" for h in sent["history"])
            assert "partner-receipt" in {e["kind"] for e in sent["evidence"]}
    finally:
        await asyncio.gather(*tasks)
        await runner.cleanup()


def test_pulled_message_without_receipt_is_offered_again_then_fails_with_missing_receipt(tmp_path: Path) -> None:
    """Reception awareness on pull: re-offered after the retry delay, EBMS:0301 once the retries are spent."""
    sweden, _belgium = pair(tmp_path, retries=1, backoff="500ms")
    keys = _keys("partner-115")

    def pulled() -> str | None:
        status, kind, body = _pull(sweden, keys)
        assert status == 200
        header = read_message(kind, body).parsed.messaging.message
        return header.message_id if isinstance(header, UserMessage) else None

    with running(sweden):
        assert sweden.api("POST", "/api/v1/messages", submission("be-pulls-from-se", b"<r/>", "again@se"))[0] == 202
        assert pulled() == "again@se"
        assert pulled() is None  # not offered again before the retry delay
        time.sleep(0.6)
        assert pulled() == "again@se"
        time.sleep(1.1)
        assert pulled() is None  # the retries are spent: failed, not offered
        failed = sweden.api("GET", "/api/v1/messages/again@se")[1]
        assert (failed["state"], failed["last_error"]["code"]) == ("failed", ErrorCode.MISSING_RECEIPT.code)
        assert failed["attempts"] == 3
