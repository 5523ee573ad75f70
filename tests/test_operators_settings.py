"""The operator's settings file: TOML or YAML, every mistake named with its field; the CLI refuses a bad one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from accesspoint.servicekit.settings import SettingsError
from operators.settings import load_settings
from tests.conftest import REPO
from tests.test_msh import CERTS
from tests.test_operators_support import OPERATOR, write_key_pair


def _table(folder: Path) -> dict[str, object]:
    key, certificate = write_key_pair(OPERATOR, folder, "operator")
    return {
        "id": "165568402266",
        "name": "Test Mailbox AB",
        "database": "sqlite+aiosqlite:///mailbox.db",
        "mailboxes": ["197001011234"],
        "keys": {"key": key.name, "certificate": certificate.name},
        "access_point": {
            "url": "http://127.0.0.1:8080/",
            "token": "t" * 16,
            "webhook_secret": "s" * 16,
            "poll_interval": "500ms",
            "reply_pmode": "operator-answers",
            "workers": 3,
        },
        "trust": {"intermediaries": [str(CERTS / "ap-sweden-sign.pem")]},
        "tokens": [{"token": "m" * 16, "recipients": ["197001011234"]}],
    }


def test_yaml_settings_load_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    """A YAML file: database and key paths resolve beside it, durations parse, token scopes hold."""
    path = tmp_path / "operator.yaml"
    path.write_text(json.dumps({"operator": _table(tmp_path)}))
    settings = load_settings(path)
    assert settings.database == f"sqlite+aiosqlite:///{tmp_path / 'mailbox.db'}"
    assert settings.access_point.url == "http://127.0.0.1:8080"
    assert settings.access_point.poll_interval.total_seconds() == 0.5
    assert settings.access_point.reply_pmode == "operator-answers"
    assert settings.access_point.workers == 3
    assert settings.keys.certificate == OPERATOR.certificate
    assert len(settings.intermediaries) == 1
    (token,) = settings.tokens
    assert token.allows("read", recipient="197001011234") and not token.allows("read", recipient="165566778899")
    assert not token.allows("read")  # the deliveries API: only tokens that see every mailbox


def test_every_mistake_is_named(tmp_path: Path) -> None:
    """Unknown fields, short secrets, a bad port and a bad duration are all reported at once (TOML)."""
    write_key_pair(OPERATOR, tmp_path, "operator")
    path = tmp_path / "operator.toml"
    path.write_text(
        """[operator]
id = "165568402266"
name = "Test Mailbox AB"
port = 70000
colour = "blue"
keys = { key = "operator.key.pem", certificate = "operator.pem" }

[operator.access_point]
url = "ftp://x"
token = "short"
webhook_secret = "ssssssssssssssss"
poll_interval = "soon"
workers = 0
"""
    )
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    fields = {p.split(": ")[1] for p in caught.value.problems}
    assert fields == {
        "operator.colour",
        "operator.port",
        "operator.access_point.url",
        "operator.access_point.token",
        "operator.access_point.poll_interval",
        "operator.access_point.workers",
    }


def test_cli_refuses_a_bad_settings_file(tmp_path: Path) -> None:
    """``accesspoint operator serve`` with a file lacking the operator table: exit 2 and a JSON failure."""
    path = tmp_path / "operator.toml"
    path.write_text("[something]\n")
    result = subprocess.run(
        [sys.executable, "-m", "accesspoint", "operator", "serve", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["error"]["code"] == "config"
