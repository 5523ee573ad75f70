"""The console in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium), one browser
session: failed logins are slowed and alerted; an admin logs in, finds a failed message, reads its timeline,
resends it and sees it delivered, downloads its receipt, sees the certificate warning and the alert, suspends a
mailbox operator in FaR (in this event loop) with a reason; a forged form
(a tampered token, or another site's page) is refused; logging out ends the session on the server. Screenshots go
to tests/artifacts/console/ (not committed)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from accesspoint.store import Direction, EvidenceKind
from accesspoint.testing import services
from far.service import OperatorStatus
from tests.conftest import REPO, unavailable
from tests.console_support import (
    ADMIN,
    RunningConsole,
    RunningFar,
    expiring_anchor,
    start_console,
    start_far,
    until,
    with_ping,
    write_settings,
)
from tests.inmemory import Pair
from tests.test_far_support import KIVRA
from tests.test_msh import CERTS
from tests.test_msh_support import submission

pytestmark = pytest.mark.timeout(120)

ARTIFACTS = REPO / "tests" / "artifacts" / "console"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WAIT = 15.0


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile and downloads into a folder of its own."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        unavailable("chromium and chromium-driver are not installed (scripts/ensure-system-packages.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="console-chromium-"))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    # An explicit driver path keeps Selenium Manager from looking for one on the network.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def running(
    pair_factory: Callable[..., Pair], tmp_path: Path
) -> AsyncIterator[tuple[Pair, RunningConsole, RunningFar]]:
    """Sweden with a console (an extra trust anchor expiring in 20 days) over FaR in this loop; Belgium not started
    yet."""
    pair = pair_factory(retries=0)
    with_ping(pair, anchors=[str(CERTS / "ca.pem"), str(expiring_anchor(tmp_path, days=20))], retries=0)
    far = await start_far(tmp_path)
    await pair.se.start()
    settings = write_settings(tmp_path, login={"delay": "200ms", "alert_after": 3}, far=far.console_settings())
    console = await start_console(pair.se, settings)
    try:
        yield pair, console, far
    finally:
        await console.server.close()
        await far.close()


def _local(base: str) -> str:
    """The console's URL by the name localhost: Chromium keeps Secure cookies over plain HTTP only for localhost,
    a potentially trustworthy origin (the console's cookies are always Secure)."""
    return base.replace("127.0.0.1", "localhost")


async def run(call: Callable[..., Any], *args: Any) -> Any:
    """A Selenium call off the event loop, which must keep serving the pages the browser asks for."""
    return await asyncio.to_thread(call, *args)


def _by(kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def _wait(driver: Any) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(driver, WAIT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))


def _text(driver: Any, css: str) -> str:
    """The text of the element on the page shown (read again should the page be replaced meanwhile)."""
    return str(_wait(driver).until(lambda shown: shown.find_element(_by("CSS_SELECTOR"), css).text))


def _replaced(page: Any) -> Callable[[Any], bool]:
    """A wait condition: the element's document has been replaced. ChromeDriver says so either as a stale element or,
    while the next document is being attached, as an inspector error that the node is not in the document
    (Selenium's ``staleness_of`` knows only the first)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def gone(_driver: Any) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return gone


def _click(driver: Any, kind: str, value: str) -> None:
    """Click what navigates, and wait until the next page has replaced this one."""
    page = driver.find_element(_by("TAG_NAME"), "html")
    driver.find_element(_by(kind), value).click()
    _wait(driver).until(_replaced(page))
    # The old page is gone as soon as the next one starts loading (a POST's redirect may still follow): wait
    # until the page that stays has loaded, so the next step does not touch a document being replaced.
    _wait(driver).until(lambda shown: shown.execute_script("return document.readyState") == "complete")


def _login(driver: Any, base: str, user: tuple[str, str]) -> None:
    driver.get(base + "/login")
    driver.find_element(_by("ID"), "name").send_keys(user[0])
    driver.find_element(_by("ID"), "password").send_keys(user[1])
    _click(driver, "ID", "login")


async def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


async def test_an_admin_works_through_the_console_in_a_browser(
    browser: Any, running: tuple[Pair, RunningConsole, RunningFar]
) -> None:
    """Failed logins are slowed and alerted; the admin finds a failed message, resends it, sees it delivered and
    downloads its receipt byte for byte; suspends a mailbox operator in FaR with a reason; forged forms are refused;
    logging out ends the session."""
    pair, console, far = running
    base = _local(console.base)
    message_id = "browser-1@se.example"
    status, document = await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", b"letter", message_id))
    assert status == 202, document

    # Three wrong passwords (while the message fails): each answer comes later and says so; the third alerts.
    took = []
    for _ in range(3):
        started = time.monotonic()
        await run(_login, browser, base, (ADMIN[0], "a wrong password!"))
        assert "Wrong user name or password" in await run(_text, browser, "#login-error")
        took.append(time.monotonic() - started)
    assert "delayed 0.4 s" in await run(_text, browser, "#login-error")
    assert took[2] >= 0.4 and took[1] >= 0.2
    await run(browser.save_screenshot, str(ARTIFACTS / "login-slowed.png"))

    await pair.se.until(message_id, {"failed"})
    await run(_login, browser, base, ADMIN)
    assert "ada (admin)" in await run(_text, browser, "#who")
    assert "1 certificate(s) expire within 60 days" in await run(_text, browser, "#certificate-warning")

    def search() -> None:
        field = browser.find_element(_by("ID"), "message_id")
        field.clear()
        field.send_keys(message_id)
        _click(browser, "ID", "search-button")

    await run(search)
    assert "1 message(s) match" in await run(_text, browser, "#count")
    await run(browser.save_screenshot, str(ARTIFACTS / "messages.png"))
    await run(_click, browser, "LINK_TEXT", message_id)
    assert await run(_text, browser, "#state") == "failed"
    timeline = await run(_text, browser, "#timeline")
    assert "submitted sending" in timeline and "sending failed" in timeline

    await pair.be.start()
    await run(_click, browser, "ID", "resend")
    assert "resend done" in await run(_text, browser, "#note")

    def state_after_reload() -> str:
        browser.refresh()
        return _text(browser, "#state")

    await until(lambda: run(state_after_reload), lambda state: state == "delivered", "the resent message delivered")
    await run(browser.save_screenshot, str(ARTIFACTS / "message-delivered.png"))

    (receipt,) = await pair.se.store.evidence(Direction.OUT, message_id, EvidenceKind.PARTNER_RECEIPT)
    kept = b"".join([chunk async for chunk in pair.se.store.read(receipt)])
    await run(lambda: browser.find_element(_by("ID"), "download-partner-receipt").click())
    downloaded = browser.downloads / f"partner-receipt-{receipt.pk}.bin"
    await until(lambda: _read(downloaded), lambda data: data is not None, "the downloaded receipt")
    assert downloaded.read_bytes() == kept

    await run(browser.get, base + "/certificates")
    row = await run(_text, browser, "tr.cert-expiring")
    assert "Soon Expiring Test CA" in row and "expiring" in row
    await run(browser.get, base + "/alerts")
    alerts = await run(_text, browser, "#alerts")
    assert "3 failed console logins for 'ada'" in alerts and "login-failures" in alerts

    # FaR's operators with their approval: the admin suspends one with a reason, FaR records it as the console's
    # decision for ada, and the page shows the new status with who decided and why.
    await run(browser.get, base + "/far")
    assert "approved" in await run(_text, browser, f"#operator-{KIVRA.id}")
    await run(_click, browser, "LINK_TEXT", KIVRA.name)
    assert await run(_text, browser, "#approval-status") == "approved"

    def suspend() -> None:
        from selenium.webdriver.support.select import Select

        Select(browser.find_element(_by("ID"), "approval-choice")).select_by_value("suspended")
        browser.find_element(_by("ID"), "approval-reason-input").send_keys("supervisory audit overdue")
        _click(browser, "ID", "decide")

    await run(suspend)
    assert "operator suspended" in await run(_text, browser, "#note")
    assert await run(_text, browser, "#approval-status") == "suspended"
    assert await run(_text, browser, "#approval-decided-by") == "console-approver for ada"
    assert "supervisory audit overdue" in await run(_text, browser, "#operator-audit")
    await run(browser.save_screenshot, str(ARTIFACTS / "far-operator-suspended.png"))
    assert (await far.service.get_approval(KIVRA.id)).status is OperatorStatus.SUSPENDED
    assert [e.outcome for e in await console.console.audit.latest(action="operator-approval")] == ["done"]

    # A tampered token: the page's own form, its hidden csrf field changed.
    await run(browser.get, base + "/pmodes")

    def tamper_and_submit() -> None:
        field = browser.find_element(_by("CSS_SELECTOR"), "form[action='/pmodes/reload'] input[name=csrf]")
        browser.execute_script("arguments[0].value = 'forged';", field)
        _click(browser, "ID", "reload")

    await run(tamper_and_submit)
    assert "refused: the form's CSRF token is missing or wrong" in await run(_text, browser, "body")

    # Another site's page with a form that posts to the console (a classic CSRF).
    form = (
        f'<form method="post" action="{base}/pmodes/reload"><input type="hidden" name="csrf" value="guess">'
        '<button id="go" type="submit">win a prize</button></form>'
    )

    async def evil_page(_request: web.Request) -> web.Response:
        return web.Response(text=form, content_type="text/html")

    evil = web.Application()
    evil.router.add_get("/", evil_page)
    server = TestServer(evil, host="127.0.0.1", port=services.free_port())
    await server.start_server()
    try:
        await run(browser.get, f"http://127.0.0.1:{server.port}/")
        await run(_click, browser, "ID", "go")
        assert "refused" in await run(_text, browser, "body")
    finally:
        await server.close()
    refused = await console.console.audit.latest(action="csrf-refused")
    assert [entry.actor for entry in refused] == ["anonymous", "ada"]
    assert "Origin" in refused[0].detail["why"] and "token" in refused[1].detail["why"]
    assert await console.console.audit.latest(action="pmodes-reload") == []

    # Logging out ends the session on the server: its cookie, put back, opens nothing.
    await run(browser.get, base + "/messages")
    held = await run(browser.get_cookie, "console_session")
    await run(_click, browser, "ID", "logout")
    assert await run(_text, browser, "h1") == "Log in"
    await run(browser.add_cookie, {k: held[k] for k in ("name", "value", "path", "secure", "httpOnly", "sameSite")})
    await run(browser.get, base + "/messages")
    assert "/login?next=" in await run(lambda: browser.current_url)
    assert [entry.actor for entry in await console.console.audit.latest(action="logout")] == ["ada"]
