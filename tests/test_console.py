"""The admin console over an in-process access point pair, through its HTTP pages (no browser): sessions and
cookies, CSRF, roles, the audit, resend and dead-letter with the same MessageId, the status, P-Mode history."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from accesspoint import cli
from accesspoint.console.accounts import hash_password, password_matches
from accesspoint.console.app import CONSOLE
from accesspoint.console.serve import RUNNER, beside_from
from accesspoint.console.settings import load_settings
from accesspoint.msh.app import create_app
from accesspoint.msh.config import load_config
from accesspoint.servicekit.settings import SettingsError
from accesspoint.store import Direction, MessageState
from accesspoint.testing import services
from tests.console_support import (
    ADMIN,
    STATUS_TOKEN,
    VIEWER,
    ConsoleClient,
    RunningConsole,
    start_console,
    with_ping,
    write_settings,
)
from tests.inmemory import Pair
from tests.test_msh_support import submission

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def running(
    pair_factory: Callable[..., Pair], tmp_path: Path
) -> AsyncIterator[tuple[Pair, RunningConsole, ConsoleClient]]:
    """Sweden with a console, Belgium beside it (not started: each test starts it when it wants it)."""
    pair = pair_factory(retries=0)
    with_ping(pair, retries=0)
    await pair.se.start()
    console = await start_console(pair.se, write_settings(tmp_path))
    client = ConsoleClient(console.base)
    try:
        yield pair, console, client
    finally:
        await client.close()
        await console.server.close()


async def _send(pair: Pair, message_id: str) -> None:
    status, document = await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", b"letter", message_id))
    assert status == 202, document


def test_settings_name_every_mistake(tmp_path: Path) -> None:
    """A console settings file with several mistakes is refused naming each with its field."""
    path = tmp_path / "console.yaml"
    path.write_text(json.dumps({"console": {"port": 70000, "session_idle": "soon", "colour": "blue",
                                            "alerts": {"smtp": {"host": "mail"}}}}))  # fmt: skip
    with pytest.raises(SettingsError) as refused:
        load_settings(path)
    text = str(refused.value)
    for field in ("console.port", "console.session_idle", "console.colour", "console.alerts.smtp.sender",
                  "console.alerts.smtp.recipients"):  # fmt: skip
        assert field in text, text


def test_passwords_are_scrypt_hashes_that_only_their_password_matches() -> None:
    """A stored password is a salted scrypt hash: the password matches it, another does not, two hashes differ."""
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert password_matches(stored, "correct horse battery")
    assert not password_matches(stored, "correct horse battery!")
    assert hash_password("correct horse battery") != stored


async def test_pages_need_a_session_with_strict_cookies_that_ends_when_idle(
    running: tuple[Pair, RunningConsole, ConsoleClient],
) -> None:
    """Without a session pages redirect to the login; the session cookie is HttpOnly, Secure and SameSite=Strict;
    a wrong password is 401; a session unused past session_idle is over."""
    pair, _console, client = running
    status, _ = await client.get("/messages")
    assert status == 303
    assert await client.login((ADMIN[0], "not the password")) == 401
    assert "console_session" not in client.cookies
    assert await client.login(ADMIN) == 303
    cookie = next(c for c in client.set_cookie if c.startswith("console_session="))
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Strict" in cookie
    status, page = await client.get("/messages")
    assert status == 200 and "ada (admin)" in page
    await pair.advance(timedelta(minutes=31))
    status, _ = await client.get("/messages")
    assert status == 303


async def test_a_post_without_the_sessions_csrf_token_or_from_another_origin_is_refused_and_audited(
    running: tuple[Pair, RunningConsole, ConsoleClient],
) -> None:
    """A logged-in POST with a missing or wrong CSRF token, or another site's Origin, is 403 and audited."""
    _pair, console, client = running
    await client.login(ADMIN)
    status, _, _ = await client.post("/pmodes/reload", csrf="")
    assert status == 403
    status, _, _ = await client.post("/pmodes/reload", csrf="forged-token")
    assert status == 403
    status, _, _ = await client.request("POST", "/pmodes/reload", {"csrf": client.csrf},
                                        {"Origin": "https://evil.example"})  # fmt: skip
    assert status == 403
    status, _, _ = await client.post("/pmodes/reload")
    assert status == 303
    refused = await console.console.audit.latest(action="csrf-refused")
    assert len(refused) == 3 and {entry.actor for entry in refused} == {ADMIN[0]}


async def test_a_viewer_reads_but_may_not_act(running: tuple[Pair, RunningConsole, ConsoleClient]) -> None:
    """A viewer sees the messages but a resend or the audit log is 403, and the refusal is audited."""
    pair, console, client = running
    await _send(pair, "viewer-1@se.example")
    await pair.se.until("viewer-1@se.example", {"failed"})
    await client.login(VIEWER)
    status, page = await client.get("/messages")
    assert status == 200 and "viewer-1@se.example" in page and "Resend selected" not in page
    status, _, _ = await client.post(f"/messages/out/{quote('viewer-1@se.example')}/resend")
    assert status == 403
    assert (await client.get("/audit"))[0] == 403
    message = await pair.se.store.get(Direction.OUT, "viewer-1@se.example")
    assert message is not None and message.state is MessageState.FAILED
    forbidden = await console.console.audit.latest(action="forbidden")
    assert [entry.actor for entry in forbidden] == [VIEWER[0], VIEWER[0]]


async def test_a_failed_message_resent_from_the_console_is_delivered_once_under_its_message_id(
    running: tuple[Pair, RunningConsole, ConsoleClient],
) -> None:
    """A message that failed while the partner was down is resent (same MessageId, attempts afresh), delivered once;
    parked in dead-letter it is left alone until resent; each action is audited."""
    pair, console, client = running
    await _send(pair, "resend-1@se.example")
    await _send(pair, "resend-2@se.example")
    for message_id in ("resend-1@se.example", "resend-2@se.example"):
        await pair.se.until(message_id, {"failed"})
    await client.login(ADMIN)
    status, page = await client.get("/messages?state=failed")
    assert status == 200 and "2 message(s) match" in page
    # Park one: it leaves the failed ones and nothing sends it.
    status, _, location = await client.post(f"/messages/out/{quote('resend-2@se.example')}/dead-letter")
    assert status == 303 and "dead-letter-done" in location
    await pair.be.start()
    status, _, location = await client.post(f"/messages/out/{quote('resend-1@se.example')}/resend")
    assert status == 303 and "moved=1" in location
    delivered = await pair.se.until("resend-1@se.example", {"delivered"})
    assert delivered["attempts"] == 1
    assert [m.message_id for m in await pair.be.store.search(direction=Direction.IN)] == ["resend-1@se.example"]
    parked = await pair.se.store.get(Direction.OUT, "resend-2@se.example")
    assert parked is not None and parked.state is MessageState.DEAD_LETTER
    # The matching set: every failed or parked message of the filter, here the parked one.
    status, _, location = await client.post("/messages/resend-matching", {"state": "dead_letter"})
    assert status == 303 and "moved=1" in location
    await pair.se.until("resend-2@se.example", {"delivered"})
    status, page = await client.get(f"/messages/out/{quote('resend-1@se.example')}")
    assert "resent by ada" in page and "partner-receipt" in page
    actions = [entry.action for entry in await console.console.audit.latest()]
    assert actions[:3] == ["resend", "resend", "dead-letter"]


async def test_a_receipt_downloads_as_stored_with_its_digest(
    running: tuple[Pair, RunningConsole, ConsoleClient],
) -> None:
    """The partner's receipt downloads byte for byte as kept, with its SHA-256, and the download is audited."""
    pair, console, client = running
    await pair.be.start()
    await _send(pair, "receipt-1@se.example")
    await pair.se.until("receipt-1@se.example", {"delivered"})
    (kept,) = await pair.se.store.evidence(Direction.OUT, "receipt-1@se.example", _partner_receipt())
    stored = b"".join([chunk async for chunk in pair.se.store.read(kept)])
    await client.login(ADMIN)
    status, body, response = await client.request(
        "GET", f"/messages/out/{quote('receipt-1@se.example')}/evidence/{kept.pk}"
    )
    assert status == 200 and body.encode() == stored
    assert response.headers["X-Evidence-SHA256"] == kept.sha256
    assert "attachment" in response.headers["Content-Disposition"]
    assert (await console.console.audit.latest(action="evidence-download"))[0].target == "out:receipt-1@se.example"


def _partner_receipt() -> Any:
    from accesspoint.store import EvidenceKind

    return EvidenceKind.PARTNER_RECEIPT


async def test_status_needs_a_token_and_tells_queues_certificates_and_partners(
    running: tuple[Pair, RunningConsole, ConsoleClient],
) -> None:
    """GET /status is 401 without credentials; with a status token it gives the access point's status (the queue,
    the oldest pending message, every certificate's not-after, the last delivery per partner: the document of the
    admin listener's /status) with the open alerts and incidents."""
    pair, console, client = running
    status, _, _ = await client.request("GET", "/status")
    assert status == 401
    await pair.be.start()
    await _send(pair, "status-1@se.example")
    await pair.se.until("status-1@se.example", {"delivered"})
    status, text, _ = await client.request("GET", "/status", headers={"Authorization": f"Bearer {STATUS_TOKEN}"})
    assert status == 200
    document = json.loads(text)
    queues = document["queues"]
    assert queues["by_state"]["submitted"]["count"] == 0 and queues["oldest_pending"] is None
    assert queues["dead_letter"] == 0
    belgium = next(p for p in document["partners"] if p["party"].endswith("AP-BE-0115"))
    assert belgium["last_delivered"] is not None
    assert {c["use"] for c in document["certificates"]} >= {"our signing key", "party partner-115: signing"}
    assert all(c["status"] == "ok" for c in document["certificates"])
    assert (document["alerts_open"], document["incidents_open"]) == (0, 0)
    admin = await console.console.status.document(console.console.settings.warn_before)
    assert {k: v for k, v in document.items() if k not in ("at", "alerts_open", "incidents_open")} == {
        k: v for k, v in admin.items() if k != "at"
    }


async def test_pmode_history_keeps_each_version_with_its_diff(
    running: tuple[Pair, RunningConsole, ConsoleClient],
) -> None:
    """A reload after the P-Mode file changed keeps the new version; its page shows the lines that changed."""
    pair, console, client = running
    await client.login(ADMIN)
    path = pair.se.folder / "pmodes.yaml"
    document = json.loads(path.read_text())
    document["pmodes"][0]["id"] = "se-to-be-renamed"
    path.write_text(json.dumps(document, indent=1))
    status, _, location = await client.post("/pmodes/reload")
    assert status == 303 and "reloaded" in location
    assert pair.se.ctx.agreements.current.get("se-to-be-renamed") is not None
    status, page = await client.get("/pmodes")
    assert "se-to-be-renamed" in page
    versions = await console.console.db.run(
        lambda c: c.exec_driver_sql("SELECT id FROM console_pmode_versions ORDER BY id").all()
    )
    assert len(versions) == 2
    status, page = await client.get(f"/pmodes/versions/{versions[-1][0]}")
    added = [line for line in page.splitlines() if line.startswith('<span class="add">+') and "renamed" in line]
    removed = [line for line in page.splitlines() if line.startswith('<span class="del">-') and "se-to-be&#34;" in line]
    assert status == 200 and added and removed


async def test_the_console_serves_on_its_own_listener_beside_the_access_point_with_a_user_set_from_the_command_line(
    pair_factory: Callable[..., Pair],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``accesspoint console-user`` refuses a weak password and sets an admin from stdin, audited; the console then
    serves beside the started access point on its own port, that admin logs in, and it stops with the access point."""
    pair = pair_factory(retries=0)
    with_ping(pair, retries=0)
    console_port = services.free_port()
    settings_file = write_settings(tmp_path, port=console_port)
    server_file = pair.se.folder / "server.yaml"
    command = ["console-user", ADMIN[0], "--role", "admin", "--console", str(settings_file)]
    command += ["--config", str(server_file)]

    monkeypatch.setattr("sys.stdin", io.StringIO("too short\n"))
    assert await asyncio.to_thread(cli.main, command) == cli.EXIT_MALFORMED
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "invalid-user"
    monkeypatch.setattr("sys.stdin", io.StringIO(ADMIN[1] + "\n"))
    assert await asyncio.to_thread(cli.main, command) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"ok": True, "user": ADMIN[0], "role": "admin"}

    app = create_app(load_config(server_file), clock=pair.se.clock)
    beside_from(settings_file)(app)
    server = TestServer(app, host="127.0.0.1", port=pair.se.port)
    await server.start_server()
    client = ConsoleClient(f"http://127.0.0.1:{console_port}")
    try:
        assert await client.login(ADMIN) == 303
        status, page = await client.get("/messages")
        assert status == 200 and "ada (admin)" in page
        (entry,) = await app[RUNNER].app[CONSOLE].audit.latest(action="user-set")
        assert (entry.actor, entry.target, entry.detail) == ("command-line", ADMIN[0], {"role": "admin"})
        async with client.http.get(f"{pair.se.base}/healthz") as answer:
            assert answer.status == 200  # the access point's own listener, without the console's pages
        async with client.http.get(f"{pair.se.base}/login") as answer:
            assert answer.status == 404
    finally:
        await server.close()
    with pytest.raises(aiohttp.ClientConnectorError):
        await client.get("/login")
    await client.close()
