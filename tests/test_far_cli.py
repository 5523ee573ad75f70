"""``accesspoint far serve | import | reachable`` as real processes: exit codes and JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accesspoint.cli import main
from accesspoint.testing.processes import listens, wait_until
from accesspoint.testing.services import free_port
from tests.cli import as_process, in_process
from tests.test_far_support import BILLO, KIVRA, SENDER

TOKEN = "cli-test-token-0123456789"


def run(*args: str, env: dict[str, str] | None = None, process: bool = False) -> tuple[int, Any, str]:
    """Run ``accesspoint ARGS`` through ``main`` here, or as a process (``tests/cli.py``); return the exit code, the
    parsed stdout and stderr."""
    done = (as_process if process else in_process)(*args, env=env)
    return done.code, done.document, done.stderr


def call(url: str, method: str, body: dict[str, Any]) -> int:
    """An authenticated JSON request to the FaR server; the HTTP status."""
    data = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data, headers, method=method)  # noqa: S310 - http to our own server
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        status: int = answer.status
    return status


@pytest.fixture(scope="module")
def far_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A FaR server process with Kivra and Billo, and its config file."""
    folder = tmp_path_factory.mktemp("far")
    port = free_port()
    config = folder / "far.toml"
    config.write_text(
        f'[far]\ndatabase = "sqlite+aiosqlite:///far.db"\nport = {port}\n'
        f'[[far.tokens]]\nname = "cli"\ntoken = "{TOKEN}"\n'
    )
    log = folder / "far.log"
    with log.open("wb") as stderr:  # a file, not a pipe: the server's JSON log must never block it
        server = subprocess.Popen(
            [sys.executable, "-m", "accesspoint", "far", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(listens(port), server, "far serve", log=log)
        for operator in (KIVRA, BILLO):
            body = {"name": operator.name, "party_id": operator.party_id, "endpoint": operator.endpoint or "discovery"}
            assert call(f"{url}/api/v1/operators/{operator.id}", "PUT", body) == 201
        yield url, config
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=20)
    assert server.returncode == 0
    assert json.loads(out)["stopped"] is True


def test_import_then_reachable(far_server: tuple[str, Path], tmp_path: Path) -> None:
    """Recipients imported by the CLI are answered by the running server through ``far reachable``."""
    url, config = far_server
    people = tmp_path / "people.csv"
    people.write_text(
        "recipient,status,operator,refused_senders\n"
        f"197802022389,secure,{KIVRA.id},\n198112189876,secure,{BILLO.id},{SENDER}\n194004048569,none,,\n"
    )
    code, report, stderr = run("far", "import", str(people), "--config", str(config), process=True)
    assert (code, report["ok"], report["stored"]) == (0, True, 3)
    assert "100.0%" in stderr
    code, answer, _ = run(
        "far",
        "reachable",
        "--far",
        url,
        "--sender",
        SENDER,
        "197802022389",
        "198112189876",
        "194004048569",
        "191001012382",
        env={"FAR_TOKEN": TOKEN},
    )
    assert code == 0
    assert [tuple(a) for a in answer] == [
        ("recipient", "reachable", "reason", "operator", "endpoint", "sender_accepted")
    ] * 4
    assert [(a["recipient"], a["reachable"], a["reason"]) for a in answer] == [
        ("197802022389", True, None),
        ("198112189876", False, "sender-refused"),
        ("194004048569", False, "no-mailbox"),
        ("191001012382", False, "no-mailbox"),
    ]
    assert answer[0]["endpoint"] == KIVRA.endpoint and answer[0]["operator"]["name"] == "Kivra"
    assert answer[0]["sender_accepted"] is True


def test_import_with_bad_rows_exits_2_and_stores_nothing(far_server: tuple[str, Path], tmp_path: Path) -> None:
    """A bad row makes the import exit 2 with each bad line listed; the good rows are not stored."""
    url, config = far_server
    people = tmp_path / "people.jsonl"
    people.write_text('{"recipient": "201112192396", "operator": "5568402266"}\n{"recipient": "201112192397"}\n')
    code, report, _ = run("far", "import", str(people), "--config", str(config))
    assert code == 2 and report["ok"] is False and report["stored"] == 0
    assert [e["line"] for e in report["errors"]] == [2]
    _, answer, _ = run("far", "reachable", "--far", url, "--sender", SENDER, "201112192396", "--token", TOKEN)
    assert answer[0]["reason"] == "no-mailbox"


@pytest.mark.parametrize(
    "args",
    [
        ("--sender", "202100544", "197802022389"),  # nine digits
        ("--sender", "2021005448", "19780202238"),  # eleven digits
    ],
)
def test_reachable_bad_input_exits_2_before_asking(args: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """A sender that is not 10 digits or a recipient that is not 12 exits 2 without asking FaR."""
    code = main(["far", "reachable", "--far", "http://127.0.0.1:9", *args])
    assert code == 2 and json.loads(capsys.readouterr().out)["error"]["code"] == "bad-input"


def test_reachable_exits_2_when_far_refuses_the_request(far_server: tuple[str, Path]) -> None:
    """A request FaR refuses (here a sender with a wrong check digit) exits 2 with FaR's reason."""
    url, _ = far_server
    code, answer, _ = run("far", "reachable", "--far", url, "--token", TOKEN, "--sender", "2021005449", "197802022389")
    assert code == 2 and "check digit" in answer["error"]["reason"]


def test_reachable_exits_1_when_far_cannot_be_reached() -> None:
    """Nobody listening at --far: exit 1."""
    url = f"http://127.0.0.1:{free_port()}"
    code, answer, _ = run("far", "reachable", "--far", url, "--sender", SENDER, "197802022389")
    assert code == 1 and answer["error"]["code"] == "far-unreachable"


def test_serve_with_a_bad_config_exits_64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every problem of a bad config is reported, with the field path."""
    config = tmp_path / "far.toml"
    config.write_text('[far]\nport = "x"\ncolour = 1\n[[far.tokens]]\nname = "a"\ntoken = "short"\n')
    assert main(["far", "serve", "--config", str(config)]) == 64
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert len(problems) == 3
    assert any("far.tokens[0].token" in p for p in problems)
