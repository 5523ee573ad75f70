"""``accesspoint operator check URL``: the conformance battery against an operator's access point, run in-process
against a reference access point on a test server, and against a reference operator (its access point with the
mailbox operator as its backend, in this event loop) for the business answer."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from accesspoint import operator_check as check
from accesspoint.cli import main
from accesspoint.msh.app import create_app
from accesspoint.msh.config import load_config
from accesspoint.testing import services
from operators.service import Operator
from operators.settings import load_settings
from tests.conftest import REPO
from tests.inmemory import Pair
from tests.test_msh_support import pair
from tests.test_operators_twoway import SECRET, TWO_WAY
from tests.test_operators_twoway import _settings as operator_settings

NOT_THE_OPERATOR = REPO / "pmode" / "examples" / "certs" / "ca.pem"


@pytest.fixture
async def operator_url(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The operator's access point (Belgium's settings) in this process, and the checking side's settings file."""
    sweden, belgium = pair(tmp_path)
    async with TestClient(TestServer(create_app(load_config(belgium.folder / "server.yaml")))) as client:
        yield str(client.make_url("/as4")), sweden.folder / "server.yaml"


async def _check(
    capsys: pytest.CaptureFixture[str], url: str, config: Path, *extra: str, pmode: str = "se-to-be"
) -> tuple[int, dict[str, Any]]:
    argv = ["operator", "check", url, "--config", str(config), "--pmode", pmode, *extra]
    code = await asyncio.to_thread(main, argv)  # the CLI runs its own event loop
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
async def mailbox_operator(pair_factory: Callable[..., Pair], tmp_path: Path) -> AsyncIterator[tuple[str, Path, Path]]:
    """A reference operator: Belgium's access point with the mailbox operator as its backend (which answers every
    delivery on the two-way P-Mode's reply leg, signed with its own key); Sweden's settings for the check, whose
    listen address is where Belgium's P-Modes send Sweden's answers (Sweden itself is not started). Yields the AS4
    URL, the check's settings file and the operator's answer certificate."""
    pair = pair_factory()
    port = services.free_port()
    hook = {"url": f"http://127.0.0.1:{port}/hooks/accesspoint", "events": ["message-received"], "secret": SECRET}
    pair.configure(pair.be, webhooks=[hook])
    await pair.be.start()
    folder = tmp_path / "operator"
    folder.mkdir()
    operator = Operator(load_settings(operator_settings(folder, port, pair.be.port)), clock=pair.clock.now)
    server = TestServer(operator.application(), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield pair.be_url, pair.se.folder / "server.yaml", folder / "operator.pem"
    finally:
        await server.close()


async def test_a_conforming_operator_receipts_the_letter_answers_it_signed_and_refuses_the_forged_one(
    mailbox_operator: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0: the test letter gets a receipt signed by the operator's access point, then the operator's business
    answer (rejected: a test letter is in no network's envelope) signed with its answer certificate; the forged
    letter EBMS:0101."""
    url, config, answers = mailbox_operator
    code, report = await _check(capsys, url, config, "--answer-cert", str(answers), pmode=TWO_WAY)
    assert code == 0 and report["ok"] and (report["passed"], report["failed"]) == (3, 0), report
    letter, answer, forged = report["cases"]
    assert (letter["form"], letter["case"], letter["passed"]) == (TWO_WAY, "test-letter", True)
    assert "receipt signed by" in letter["detail"]
    assert (answer["form"], answer["case"], answer["passed"]) == (TWO_WAY, "business-answer", True)
    assert answer["message_id"] == letter["message_id"]
    assert answer["detail"].startswith("rejected (") and "signed by CN=Test Mailbox AB" in answer["detail"]
    assert (forged["case"], forged["passed"]) == ("forged", True) and "EBMS:0101" in forged["detail"]


async def test_a_business_answer_not_signed_with_the_operators_answer_certificate_fails(
    mailbox_operator: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 when the operator's answer does not verify with the certificate it must be signed with (here the
    default: the access point's registered one, which is not the operator's answer key)."""
    url, config, _answers = mailbox_operator
    code, report = await _check(capsys, url, config, pmode=TWO_WAY)
    assert code == 1 and not report["ok"]
    letter, answer, _forged = report["cases"]
    assert letter["passed"] and not answer["passed"]
    assert "does not verify with the operator's certificate" in answer["detail"]


async def test_no_business_answer_in_time_or_on_a_one_way_form_fails(
    operator_url: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """An access point that receipts but never answers fails the business answer at the timeout; a one-way form
    cannot be answered and says which P-Mode to check instead."""
    code, report = await _check(capsys, *operator_url, "--answer-timeout", "0.5", pmode=TWO_WAY)
    assert code == 1
    letter, answer, _forged = report["cases"]
    assert letter["passed"] and not answer["passed"] and answer["detail"] == "no business answer within 0.5 s"
    code, report = await _check(capsys, *operator_url)
    assert code == 1 and [c["case"] for c in report["cases"] if not c["passed"]] == ["business-answer"]
    assert "se-to-be is one-way" in report["cases"][1]["detail"]


async def test_a_receipt_not_signed_by_the_registered_certificate_fails_the_check(
    operator_url: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 when the receipt's signer is not the operator's registered certificate (--operator-cert)."""
    code, report = await _check(capsys, *operator_url, "--operator-cert", str(NOT_THE_OPERATOR))
    assert code == 1 and not report["ok"]
    letter = report["cases"][0]
    assert not letter["passed"] and "no valid receipt: EBMS:0302" in letter["detail"]


async def test_an_access_point_that_receipts_a_forged_letter_fails(
    operator_url: tuple[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forged case fails when what was sent got a receipt (here: the forgery left out, so it is receipted)."""
    monkeypatch.setattr(check, "forge", lambda body: body)
    code, report = await _check(capsys, *operator_url)
    assert code == 1
    forged = report["cases"][2]
    assert not forged["passed"] and "the forged letter was receipted" in forged["detail"]


def test_forging_changes_only_the_signature_value() -> None:
    """forge() alters one base64 character inside the first SignatureValue; an unsigned body is a ValueError."""
    body = b"<a><ds:SignatureValue>QUJDRA==</ds:SignatureValue></a>"
    forged = check.forge(body)
    changed = [i for i, (a, b) in enumerate(zip(body, forged, strict=True)) if a != b]
    assert len(changed) == 1 and body.index(b"QUJD") <= changed[0] < body.index(b"</ds:SignatureValue>")
    with pytest.raises(ValueError, match="not signed"):
        check.forge(b"<a/>")


async def test_nobody_listening_is_exit_3_and_an_unknown_pmode_is_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No case can be sent: exit 3 naming why; a P-Mode the settings do not have: 64."""
    sweden, _belgium = pair(tmp_path)
    config = sweden.folder / "server.yaml"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening
        code, report = await _check(capsys, f"http://127.0.0.1:{sock.getsockname()[1]}/as4", config)
    assert code == 3 and report["error"]["code"] == "unreachable" and report["failed"] == 3
    argv = ["operator", "check", "http://127.0.0.1:9/as4", "--config", str(config), "--pmode", "nope"]
    assert await asyncio.to_thread(main, argv) == 64
    assert "no outgoing P-Mode 'nope'" in json.loads(capsys.readouterr().out)["error"]["reason"]
