"""Server settings for pull, webhooks, TLS and retention: defaults, and mistakes named by file and field."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from accesspoint.cli import main
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


def _tls_files(folder: Path) -> None:
    """A TLS certificate with its key (tls.pem, tls.key), another key (other.key), a CA (ca.pem), junk (junk.pem)."""
    shutil.copy(CERTS / "partner-115.pem", folder / "tls.pem")
    shutil.copy(CERTS / "partner-115.key.pem", folder / "tls.key")
    shutil.copy(CERTS / "ap-sweden-sign.key.pem", folder / "other.key")
    shutil.copy(CERTS / "ca.pem", folder / "ca.pem")
    (folder / "junk.pem").write_text("not a certificate\n")


def test_defaults_leave_webhooks_and_tls_off(tmp_path: Path) -> None:
    """Without the new settings: no webhooks, plain HTTP, system CAs, 5 s pulls, hourly purge."""
    config = _load(tmp_path)
    assert (config.webhooks, config.tls, config.tls_trust, config.tls_client) == ((), None, None, None)
    assert (config.pull_interval, config.purge_interval) == (timedelta(seconds=5), timedelta(hours=1))


def test_webhooks_tls_pull_and_retention_are_read_relative_to_the_file(tmp_path: Path) -> None:
    """Every field is read; paths resolve against the settings file's folder."""
    _tls_files(tmp_path)
    hook = {"url": "https://backend.example/hook", "events": ["receipt"], "secret": "s" * 16, "backoff": "250ms"}
    config = _load(
        tmp_path,
        webhooks=[hook],
        tls={"certificate": "tls.pem", "key": "tls.key", "client_ca": "ca.pem"},
        tls_trust="ca.pem",
        pull={"interval": "2s"},
        retention={"interval": "10m"},
    )
    (webhook,) = config.webhooks
    assert (webhook.events, webhook.backoff) == (frozenset({WebhookEvent.RECEIPT}), timedelta(milliseconds=250))
    assert config.tls is not None and config.tls.client_ca == tmp_path / "ca.pem"
    assert config.tls_trust == tmp_path / "ca.pem"
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


def test_every_mistake_of_a_file_is_named_at_once(tmp_path: Path) -> None:
    """Five mistakes in one file: all five reported, one a line, in order, each with the file and its field."""
    with pytest.raises(ConfigError) as caught:
        _load(
            tmp_path,
            colour="blue",
            listen={"port": 99999},
            send={"workers": 0, "lease": "soon"},
            webhooks={"url": "x"},
        )
    lines = str(caught.value).splitlines()
    assert all(line.startswith(str(tmp_path / "server.yaml")) for line in lines)
    fields = ("field colour", "field listen.port", "field send.workers", "field send.lease", "field webhooks")
    assert [next(f for f in fields if f in line) for line in lines] == list(fields)


def test_replies_are_checked_eight_at_once_unless_configured(tmp_path: Path) -> None:
    """``replies.workers`` sizes how many received replies are checked at once (8 when not set)."""
    assert _load(tmp_path).reply_workers == 8
    assert _load(tmp_path, replies={"workers": 32}).reply_workers == 32


def test_durability_defaults_to_power_loss_and_names_a_wrong_value(tmp_path: Path) -> None:
    """``durability`` is power-loss unless set to process-crash; anything else names the field and the choices."""
    assert _load(tmp_path).durability is Durability.POWER_LOSS
    assert _load(tmp_path, durability="process-crash").durability is Durability.PROCESS_CRASH
    with pytest.raises(ConfigError, match="field durability: 'fast' \\(known: power-loss, process-crash\\)"):
        _load(tmp_path, durability="fast")


POSTGRES = "postgresql://ap@db.example/accesspoint"
HOOK = {"url": "https://backend.example/hook", "secret": "s" * 16}
TOKEN = "t" * 16


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        # a send must end within the lease that holds the message
        ({"send": {"timeout": "2m", "lease": "2m"}}, "field send.timeout: 120s is not shorter than send.lease (120s)"),
        ({"send": {"timeout": "5m"}}, "field send.timeout: 300s is not shorter than send.lease (120s)"),
        ({"send": {"lease": "0s"}}, "field send.lease: '0s' must be longer than zero"),
        ({"send": {"timout": "10s"}}, "field send.timout: unknown setting"),
        ({"send": {"workers": True}}, "field send.workers"),
        ({"send": {"per_partner": 0}}, "field send.per_partner: a positive integer"),
        ({"replies": {"workers": 0}}, "field replies.workers: a positive integer"),
        ({"replies": {"worker": 4}}, "field replies.worker: unknown setting"),
        # instances sharing Redis share the database (and storage), each under its own name
        ({"redis": "redis://cache:6379/0", "instance": "se-1"}, "field database: instances sharing a Redis queue"),
        ({"redis": "redis://cache", "instance": "se-1", "database": "sqlite:///ap.db"}, "field database: instances"),
        ({"redis": "redis://cache", "database": POSTGRES}, "field instance: required with redis"),
        ({"redis": "http://cache", "database": POSTGRES, "instance": "se-1"}, "field redis: 'http://cache'"),
        ({"database": "mysql://ap@db/ap"}, "field database: mysql is not supported"),
        ({"database": "not a url"}, "field database: 'not a url' is not a database URL"),
        ({"instance": "se 1"}, "field instance: 'se 1' is not a name"),
        # TLS files exist, load, and the key is the certificate's
        ({"tls": {"certificate": "tls.pem", "key": "other.key"}}, "field tls.key: "),
        ({"tls": {"certificate": "tls.pem", "key": "tls.key", "client_ca": "junk.pem"}}, "field tls.client_ca: "),
        ({"tls": {"certificate": "tls.pem", "key": "tls.key", "cilent_ca": "ca.pem"}}, "field tls.cilent_ca: unknown"),
        (
            {"tls_client": {"certificate": "tls.pem", "key": "tls.key", "client_ca": "ca.pem"}},
            "field tls_client.client_ca",
        ),
        ({"tls_trust": "junk.pem"}, "field tls_trust: "),
        ({"tls_trust": "missing.pem"}, "field tls_trust: "),
        # API tokens: long enough, and sendable in an Authorization header
        ({"api_tokens": "t" * 16}, "field api_tokens: a list"),
        ({"api_tokens": [TOKEN, "short"]}, "field api_tokens[1]: a secret of at least 16 characters"),
        ({"api_tokens": ["a token with spaces"]}, "field api_tokens[0]: only visible ASCII"),
        # webhooks: an http(s) URL with a host, each once, something to tell, a cap above the first delay
        ({"webhooks": [{**HOOK, "url": "https://"}]}, "field webhooks[0].url"),
        (
            {"webhooks": [HOOK, {**HOOK, "events": ["error"]}]},
            "field webhooks[1].url: 'https://backend.example/hook' is already webhooks[0]",
        ),
        ({"webhooks": [{**HOOK, "events": []}]}, "field webhooks[0].events"),
        (
            {"webhooks": [{**HOOK, "backoff": "1m", "backoff_max": "10s"}]},
            "field webhooks[0].backoff_max: 10s is shorter",
        ),
        ({"webhooks": [{**HOOK, "secrte": "x"}]}, "field webhooks[0].secrte: unknown setting"),
        ({"webhooks": [{**HOOK, "max_attempts": 0}]}, "field webhooks[0].max_attempts"),
        # the rest: positive intervals and sizes, real booleans, known keys
        ({"pull": {"interval": 0}}, "field pull.interval: 0 must be longer than zero"),
        ({"retention": {"interval": "0s"}}, "field retention.interval"),
        ({"evidence_retention": "0d"}, "field evidence_retention"),
        ({"max_message_size": "2 gigabytes"}, "field max_message_size: '2 gigabytes': unknown unit"),
        ({"max_message_size": 0}, "field max_message_size: 0 is not a positive number of bytes"),
        ({"send": {"lease": "2 minutes"}}, "field send.lease: '2 minutes' is not a duration like 30s, 5m, 1h30m"),
        ({"revocation": "false"}, "field revocation: 'false' is not true or false"),
        ({"listen": {"port": True}}, "field listen.port"),
        ({"listen": {"address": "127.0.0.1"}}, "field listen.address: unknown setting"),
        ({"keys": {**BASE["keys"], "decrypt": []}}, "field keys.decrypt: unknown setting"),
    ],
)
def test_settings_that_cannot_work_together_are_refused_naming_the_field(
    tmp_path: Path, settings: dict[str, Any], field: str
) -> None:
    """A setting at odds with another, or with its own file, stops the load with the file and the field to fix."""
    _tls_files(tmp_path)
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, **settings)
    assert str(caught.value).startswith(f"{tmp_path / 'server.yaml'}: ")
    assert field in str(caught.value)


def test_a_cluster_instance_with_postgresql_redis_and_a_short_send_loads(tmp_path: Path) -> None:
    """Redis with a shared PostgreSQL database and a name of its own, and a send shorter than its lease, is valid."""
    _tls_files(tmp_path)
    config = _load(
        tmp_path,
        database=POSTGRES,
        redis="redis://cache:6379/0",
        instance="se-1",
        storage="/srv/shared",
        send={"timeout": "20s", "lease": "21s"},
        tls={"certificate": "tls.pem", "key": "tls.key"},
        tls_client={"certificate": "tls.pem", "key": "tls.key"},
        api_tokens=[TOKEN],
        webhooks=[HOOK, {**HOOK, "url": "http://other.example/hook", "backoff": 2, "backoff_max": "2s"}],
    )
    assert (config.instance, config.database_url, config.redis_url) == ("se-1", POSTGRES, "redis://cache:6379/0")
    assert (config.send_timeout, config.lease) == (timedelta(seconds=20), timedelta(seconds=21))
    assert config.storage == Path("/srv/shared")


def test_durations_and_sizes_take_the_shared_grammar(tmp_path: Path) -> None:
    """Compound and ISO 8601 durations and IEC or SI sizes read as every other service reads them."""
    config = _load(
        tmp_path,
        send={"timeout": "PT1M30S", "lease": "1h30m"},
        max_message_size="64MiB",
        evidence_retention="P3650D",
        retention={"interval": "1h"},
    )
    assert (config.send_timeout, config.lease) == (timedelta(seconds=90), timedelta(hours=1, minutes=30))
    assert config.max_message_size == 64 * 2**20 and config.evidence_retention == timedelta(days=3650)
    assert _load(tmp_path, max_message_size="2GB").max_message_size == 2 * 10**9


def test_no_api_token_is_allowed_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without api_tokens the server starts, and the log says the backend API refuses every request."""
    with caplog.at_level(logging.WARNING, logger="accesspoint.msh.config"):
        assert _load(tmp_path).api_tokens == ()
    assert "no api_tokens" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="accesspoint.msh.config"):
        _load(tmp_path, api_tokens=[TOKEN])
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"send": {"timeout": "3m", "lease": "2m"}}, "field send.timeout"),
        ({"redis": "redis://cache", "instance": "se-1"}, "field database"),
        ({"tls": {"certificate": "tls.pem", "key": "other.key"}}, "field tls.key"),
    ],
)
def test_serve_with_such_settings_exits_2_with_a_json_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: dict[str, Any], field: str
) -> None:
    """``accesspoint serve`` refuses before it starts: exit 2, one JSON document naming the file and field."""
    _tls_files(tmp_path)
    path = tmp_path / "server.yaml"
    path.write_text(json.dumps({**BASE, **settings}))
    assert main(["serve", "--config", str(path)]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["error"]["code"] == "invalid-config"
    assert document["error"]["reason"].startswith(f"{path}: {field}")
