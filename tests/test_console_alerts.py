"""The console's alerts and incidents: delivered by a local SMTP server (aiosmtpd) and a webhook, deduplicated and
rate limited; raised by failed logins, permanent send failures, expiring certificates, partners failing their
connection checks and outages; an incident opened from an alert, closed, and its timeline exported."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from accesspoint.console.alerts import Kind, Level
from accesspoint.console.settings import Watch
from accesspoint.store import Direction
from accesspoint.testing import services
from tests.console_support import (
    ADMIN,
    WEBHOOK_SECRET,
    ConsoleClient,
    RunningConsole,
    SmtpSink,
    WebhookSink,
    expiring_anchor,
    start_console,
    until,
    with_ping,
    write_settings,
)
from tests.inmemory import Pair
from tests.test_msh import CERTS
from tests.test_msh_support import submission

pytestmark = pytest.mark.timeout(120)

Running = tuple[Pair, RunningConsole, ConsoleClient, SmtpSink, WebhookSink]


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A local SMTP server that keeps what it is sent."""
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookSink]:
    """A webhook receiver that checks each body's signature."""
    sink = WebhookSink()
    await sink.server.start_server()
    try:
        yield sink
    finally:
        await sink.server.close()


@pytest.fixture
async def running(
    request: pytest.FixtureRequest,
    pair_factory: Callable[..., Pair],
    tmp_path: Path,
    smtp: SmtpSink,
    webhook: WebhookSink,
) -> AsyncIterator[Running]:
    """Sweden with a console whose alerts go to the SMTP server and the webhook (2 per hour each); parametrized
    with a number of days, an extra trust anchor expires that soon."""
    pair = pair_factory(retries=0)
    anchors = [str(CERTS / "ca.pem")]
    if getattr(request, "param", None) is not None:
        anchors.append(str(expiring_anchor(tmp_path, days=request.param)))
    with_ping(pair, anchors=anchors, retries=0)
    await pair.se.start()
    settings = write_settings(
        tmp_path,
        alerts={
            "rate": 2,
            "per": "1h",
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp.port,
                "sender": "ap@se.example",
                "recipients": ["ops@se.example"],
            },
            "webhooks": [{"url": webhook.url, "secret": WEBHOOK_SECRET}],
        },
        watch=[{"name": "FaR", "url": f"http://127.0.0.1:{services.free_port()}/health", "failures": 2}],
    )
    console = await start_console(pair.se, settings)
    client = ConsoleClient(console.base)
    try:
        yield pair, console, client, smtp, webhook
    finally:
        await client.close()
        await console.server.close()


async def test_alerts_are_mailed_and_posted_once_deduplicated_and_held_by_the_rate_limit(running: Running) -> None:
    """Two alerts reach the SMTP server and the webhook (signed); the same alert again is counted, not sent; a third
    waits for the rate window to move on, then goes."""
    pair, console, _client, smtp, webhook = running
    alerts = console.console.alerts
    for number in (1, 2, 3):
        await alerts.raise_alert(Kind.OUTAGE, f"service-{number}", Level.HIGH, f"service {number} down", "detail")
    again, new = await alerts.raise_alert(Kind.OUTAGE, "service-1", Level.HIGH, "service 1 down", "detail")
    assert not new and again.count == 2
    await until(lambda: _count(smtp.messages, webhook.received), lambda n: n == (2, 2), "two alerts on each channel")
    assert [m["Subject"] for m in smtp.messages] == [
        "[accesspoint high] service 1 down",
        "[accesspoint high] service 2 down",
    ]
    assert smtp.messages[0]["To"] == "ops@se.example" and webhook.refused == 0
    assert [event["data"]["key"] for event in webhook.received] == ["service-1", "service-2"]
    held = await alerts.deliveries((await alerts.latest())[0].id)
    assert {d["state"] for d in held} == {"pending"}
    await pair.advance(timedelta(minutes=61))
    # (The watched service's outage, looked at again after the clock moved, may follow it.)
    await until(lambda: _count(smtp.messages, webhook.received), lambda n: min(n) >= 3, "the third alert")
    assert smtp.messages[2]["Subject"].endswith("service 3 down")


async def _count(mails: list[Any], posts: list[Any]) -> tuple[int, int]:
    return len(mails), len(posts)


async def test_failed_logins_are_slowed_and_alerted_but_the_account_stays_usable(running: Running) -> None:
    """Each failed login is answered later than the one before; the third raises an alert that reaches the webhook;
    the right password still logs in (no lockout), after the wait."""
    _pair, console, client, _smtp, webhook = running
    took = []
    for _ in range(3):
        started = time.monotonic()
        assert await client.login((ADMIN[0], "a wrong password!")) == 401
        took.append(time.monotonic() - started)
    # 0, then 100 ms, then 200 ms of delay before the answer (lower bounds: a loaded machine only adds to them).
    assert took[1] >= 0.1 and took[2] >= 0.2
    event = await until(
        lambda: _first(webhook.received, "login-failures"), lambda e: e is not None, "the login-failures alert"
    )
    assert event["data"]["subject"].startswith("3 failed console logins for 'ada'")
    started = time.monotonic()
    assert await client.login(ADMIN) == 303
    assert time.monotonic() - started >= 0.4
    refused = await console.console.audit.latest(action="login")
    assert [entry.outcome for entry in refused] == ["done", "refused", "refused", "refused"]
    assert refused[1].detail["waited_ms"] == 200


async def _first(events: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((e for e in events if e["data"]["kind"] == kind), None)


async def test_a_permanent_failure_opens_an_incident_that_is_closed_and_its_timeline_exported(running: Running) -> None:
    """A message that fails for good raises a send-failed alert for its partner; an admin opens an incident from it,
    records an action and the supervisory body's notification, closes it and exports the timeline."""
    pair, console, client, smtp, _webhook = running
    checks = console.console.checks
    await checks.failed_messages()  # the cursor starts (at the console's start it did already)
    status, document = await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", b"x", "lost-1@se.example"))
    assert status == 202, document
    await pair.se.until("lost-1@se.example", {"failed"})
    assert await checks.failed_messages() == 1
    (alert,) = [a for a in await console.console.alerts.latest() if a.kind == "send-failed"]
    assert alert.key.endswith("AP-BE-0115") and "lost-1@se.example" in alert.body
    await until(lambda: _mailed(smtp.messages, "failed permanently"), bool, "the send-failed mail")

    await client.login(ADMIN)
    status, _, location = await client.post(f"/alerts/{alert.id}/incident")
    assert status == 303 and location.startswith("/incidents/")
    path = location
    await client.get(path)
    assert (await client.post(path + "/change", {"change": "action", "text": "partner called: their AP was down"}))[
        0
    ] == 303
    assert (await client.post(path + "/change", {"change": "notify", "who": "supervisory-body", "text": "PTS ref 42"}))[
        0
    ] == 303
    assert (await client.post(path + "/change", {"change": "close", "text": "resent, all delivered"}))[0] == 303
    assert (await client.post(path + "/change", {"change": "note", "text": "too late"}))[2].endswith("closed-already")

    status, text, _ = await client.request("GET", path + "/timeline.json")
    exported = json.loads(text)
    incident = exported["incident"]
    assert incident["status"] == "closed" and incident["affected"] == [alert.key]
    aware = datetime.fromisoformat(incident["aware_at"])
    assert datetime.fromisoformat(incident["supervisory_due"]) - aware == timedelta(hours=24)
    assert incident["supervisory_notified_at"] is not None and incident["parties_notified_at"] is None
    kinds = [event["kind"] for event in exported["timeline"]]
    assert kinds == ["opened", "action", "notified-supervisory-body", "closed"]
    assert f"alert-{alert.id}" in exported["timeline"][0]["text"]
    status, text, _ = await client.request("GET", path + "/timeline.csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["incident", "at", "actor", "kind", "text"] and [r[3] for r in rows[1:]] == kinds
    assert (await console.console.alerts.get(alert.id)).incident_id == int(path.rsplit("/", 1)[1])  # type: ignore[union-attr]


async def _mailed(mails: list[Any], words: str) -> bool:
    # A long Subject comes folded (RFC 5322 2.2.3): unfolding removes the line breaks.
    return any(words in str(m["Subject"]).replace("\r\n", "").replace("\n", "") for m in mails)


@pytest.mark.parametrize("running", [30], indirect=True)
async def test_a_certificate_within_sixty_days_of_expiry_is_warned_and_alerted_once(running: Running) -> None:
    """A trust anchor expiring in 30 days is listed as expiring, a banner says so on every page, and one alert is
    raised (looking again within the reminder period raises none)."""
    _pair, console, client, _smtp, webhook = running
    await client.login(ADMIN)
    _status, page = await client.get("/certificates")
    row = next(line for line in page.splitlines() if "Soon Expiring Test CA" in line)
    assert 'class="cert-expiring"' in row and ("<td>29</td>" in row or "<td>30</td>" in row)
    _status, page = await client.get("/messages")
    assert 'id="certificate-warning"' in page and "1 certificate(s) expire within 60 days" in page
    await until(lambda: _first(webhook.received, "certificate-expiring"), lambda e: e is not None, "the expiry alert")
    assert await console.console.checks.certificates() == 0


async def test_a_partner_failing_its_connection_checks_in_a_row_is_alerted(running: Running) -> None:
    """A monitored partner answers a ping (ok); down, two pings fail and a connection-failed alert is raised."""
    pair, console, client, _smtp, _webhook = running
    checks = console.console.checks
    await client.login(ADMIN)
    _status, page = await client.get("/monitoring")
    assert "se-ping-be" in page
    assert (await client.post("/monitoring/se-ping-be/monitor", {"enabled": "1"}))[0] == 303
    assert await checks.monitored() == ["se-ping-be"]
    await pair.be.start()
    check = await checks.ping("se-ping-be")
    await pair.se.until(check.message_id or "", {"delivered"})
    assert await checks.settle_checks() == 1
    received = await pair.be.store.get(Direction.IN, check.message_id or "")
    assert received is not None and received.state.value == "acknowledged"  # a ping never reaches the backend
    await pair.be.stop()
    for _ in range(2):
        failing = await checks.ping("se-ping-be")
        await pair.se.until(failing.message_id or "", {"failed"})
        await checks.settle_checks()
    assert [c.outcome for c in await checks.history("se-ping-be")] == ["failed", "failed", "ok"]
    (alert,) = [a for a in await console.console.alerts.latest() if a.kind == "connection-failed"]
    assert "partner-115 failed 2 connection check(s) in a row" in alert.subject


async def test_a_watched_service_that_stops_answering_is_alerted(running: Running) -> None:
    """A watched URL nobody answers raises a service-outage alert after its failures in a row, not before."""
    _pair, console, _client, _smtp, _webhook = running
    watched = console.console.settings.watch[0]
    assert isinstance(watched, Watch)
    checks = console.console.checks
    checks._watch_failures.clear()  # the checks' first round at start looked once already
    assert await checks.watch(watched) is False
    assert not [a for a in await console.console.alerts.latest() if a.kind == "service-outage"]
    assert await checks.watch(watched) is False
    (alert,) = [a for a in await console.console.alerts.latest() if a.kind == "service-outage"]
    assert alert.key == "FaR" and "not answering" in alert.subject
