"""``accesspoint operator check URL``: the conformance battery against an operator's access point, run in-process
against a reference access point (the operator's) on a test server."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from accesspoint import operator_check as check
from accesspoint.cli import main
from accesspoint.msh.app import create_app
from accesspoint.msh.config import load_config
from tests.conftest import REPO
from tests.test_msh_support import pair

NOT_THE_OPERATOR = REPO / "pmode" / "examples" / "certs" / "ca.pem"


@pytest.fixture
async def operator_url(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The operator's access point (Belgium's settings) in this process, and the checking side's settings file."""
    sweden, belgium = pair(tmp_path)
    async with TestClient(TestServer(create_app(load_config(belgium.folder / "server.yaml")))) as client:
        yield str(client.make_url("/as4")), sweden.folder / "server.yaml"


async def _check(
    capsys: pytest.CaptureFixture[str], url: str, config: Path, *extra: str
) -> tuple[int, dict[str, Any]]:
    argv = ["operator", "check", url, "--config", str(config), "--pmode", "se-to-be", *extra]
    code = await asyncio.to_thread(main, argv)  # the CLI runs its own event loop
    return code, json.loads(capsys.readouterr().out)


async def test_a_conforming_operator_receipts_the_test_letter_and_refuses_the_forged_one(
    operator_url: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0: the test letter gets a receipt signed by the operator's certificate, the forged one EBMS:0101."""
    code, report = await _check(capsys, *operator_url)
    assert code == 0 and report["ok"] and (report["passed"], report["failed"]) == (2, 0), report
    letter, forged = report["cases"]
    assert (letter["form"], letter["case"], letter["passed"]) == ("se-to-be", "test-letter", True)
    assert "receipt signed by" in letter["detail"]
    assert (forged["case"], forged["passed"]) == ("forged", True) and "EBMS:0101" in forged["detail"]


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
    forged = report["cases"][1]
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
    assert code == 3 and report["error"]["code"] == "unreachable" and report["failed"] == 2
    argv = ["operator", "check", "http://127.0.0.1:9/as4", "--config", str(config), "--pmode", "nope"]
    assert await asyncio.to_thread(main, argv) == 64
    assert "no outgoing P-Mode 'nope'" in json.loads(capsys.readouterr().out)["error"]["reason"]
