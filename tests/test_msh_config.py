"""Server settings for pull, webhooks, TLS and retention: defaults, and mistakes named by file and field."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from accesspoint.msh.config import ConfigError, WebhookEvent, load_config
from accesspoint.store.db import Durability
from tests.test_msh import CERTS

BASE: dict[str, Any] = {
    "pmodes": "pmodes.yaml",
    "keys": {"signing": {"key": str(CERTS / "partner-115.key.pem"), "certificate": str(CERTS / "partner-115.pem")}},
}


def _load(tmp_path: Path, **settings: Any) -> Any:
    path = tmp_path / "server.yaml"
    path.write_text(json.dumps({**BASE, **settings}))
    return load_config(path)


def test_defaults_leave_webhooks_and_tls_off(tmp_path: Path) -> None:
    """Without the new settings: no webhooks, plain HTTP, system CAs, 5 s pulls, hourly purge."""
    config = _load(tmp_path)
    assert (config.webhooks, config.tls, config.tls_trust, config.tls_client) == ((), None, None, None)
    assert (config.pull_interval, config.purge_interval) == (timedelta(seconds=5), timedelta(hours=1))


def test_webhooks_tls_pull_and_retention_are_read_relative_to_the_file(tmp_path: Path) -> None:
    """Every field is read; paths resolve against the settings file's folder."""
    (tmp_path / "tls.pem").write_text("x")
    (tmp_path / "tls.key").write_text("x")
    hook = {"url": "https://backend.example/hook", "events": ["receipt"], "secret": "s" * 16, "backoff": "250ms"}
    config = _load(
        tmp_path,
        webhooks=[hook],
        tls={"certificate": "tls.pem", "key": "tls.key", "client_ca": "tls.pem"},
        tls_trust="tls.pem",
        pull={"interval": "2s"},
        retention={"interval": "10m"},
    )
    (webhook,) = config.webhooks
    assert (webhook.events, webhook.backoff) == (frozenset({WebhookEvent.RECEIPT}), timedelta(milliseconds=250))
    assert config.tls is not None and config.tls.client_ca == tmp_path / "tls.pem"
    assert config.tls_trust == tmp_path / "tls.pem"
    assert (config.pull_interval, config.purge_interval) == (timedelta(seconds=2), timedelta(minutes=10))


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"webhooks": {"url": "x"}}, "field webhooks: expected a list"),
        ({"webhooks": [{"url": "ftp://x", "secret": "s" * 16}]}, "field webhooks[0].url"),
        ({"webhooks": [{"url": "http://x", "secret": "short"}]}, "field webhooks[0].secret"),
        ({"webhooks": [{"url": "http://x", "secret": "s" * 16, "events": ["sent"]}]}, "field webhooks[0].events"),
        ({"webhooks": [{"url": "http://x", "secret": "s" * 16, "backoff": "soon"}]}, "webhooks[0].backoff"),
        ({"tls": {"certificate": "missing.pem", "key": "missing.key"}}, "field tls.certificate"),
        ({"tls": "cert.pem"}, "field tls: expected"),
        ({"pull": {"interval": "often"}}, "field pull.interval"),
        ({"retention": []}, "field retention: expected a mapping"),
    ],
)
def test_mistakes_name_the_file_and_the_field(tmp_path: Path, settings: dict[str, Any], field: str) -> None:
    """Each mistake is reported with the settings file and the field path."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, **settings)
    assert str(caught.value).startswith(str(tmp_path / "server.yaml"))
    assert field in str(caught.value)


def test_durability_defaults_to_power_loss_and_names_a_wrong_value(tmp_path: Path) -> None:
    """``durability`` is power-loss unless set to process-crash; anything else names the field and the choices."""
    assert _load(tmp_path).durability is Durability.POWER_LOSS
    assert _load(tmp_path, durability="process-crash").durability is Durability.PROCESS_CRASH
    with pytest.raises(ConfigError, match="field durability: 'fast' \\(known: power-loss, process-crash\\)"):
        _load(tmp_path, durability="fast")
