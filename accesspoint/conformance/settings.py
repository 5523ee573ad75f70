"""Settings of ``accesspoint conformance serve``: one YAML (or TOML) file, checked on load (errors name the field).

::

    listen: {host: 127.0.0.1, port: 8090}     # the test driver's Submit endpoint (/as4) and the webhook (/events)
    access_point: {url: http://127.0.0.1:8080, token: a-backend-token-16+}
    webhook_secret: the-secret-of-the-access-points-webhook
    sut: {party_id: c2, type: urn:oasis:names:tc:ebcore:partyid-type:unregistered}
    test_driver: {endpoint: https://testbed.example/as4, party_id: minder, type: urn:...:unregistered}
    timeout: 30                               # seconds, for each call to the access point or the driver
    max_message_size: 10485760                # the largest Submit taken, in bytes

The access point sends its events here: its settings name ``http://<listen>/events`` as a webhook with the
same secret (events ``message-received``, ``message-refused``, ``receipt``, ``error``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from accesspoint.conformance.protocol import SUT_ROLE, TEST_DRIVER_ROLE, party
from accesspoint.core.model import Party
from accesspoint.core.namespaces import PartyIdType


class SettingsError(ValueError):
    """A settings file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class ConformanceSettings:
    """Where the adapter listens, which access point it drives and whom it reports to."""

    file: Path
    host: str
    port: int
    api_url: str
    api_token: str
    webhook_secret: str
    sut: Party  # how the test driver addresses this access point (role .../sut)
    driver: Party  # the test driver (role .../testdriver)
    driver_endpoint: str
    timeout: float = 30.0
    max_message_size: int = 10 * 1024 * 1024


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise SettingsError(f"{path}: cannot read the settings: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of settings")
    return data


def _table(data: dict[str, Any], key: str, where: str, known: set[str], required: set[str]) -> dict[str, Any]:
    value = data.get(key, {} if not required else None)
    if not isinstance(value, dict):
        raise SettingsError(f"{where}: field {key}: expected a mapping with {', '.join(sorted(required or known))}")
    unknown = sorted(set(value) - known)
    if unknown:
        raise SettingsError(f"{where}: field {key}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
    for name in sorted(required):
        if not isinstance(value.get(name), str | int) or value.get(name) == "":
            raise SettingsError(f"{where}: field {key}.{name}: required")
    return value


def _url(value: str, where: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{where}: {value!r} is not an http(s) URL")
    return value.rstrip("/")


def _positive(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise SettingsError(f"{where}: {value!r} is not a positive number")
    return float(value)


def load_settings(path: str | Path) -> ConformanceSettings:
    """Read and check a settings file; SettingsError names the file and field of the first mistake."""
    file = Path(path).resolve()
    data = _read(file)
    known = {"listen", "access_point", "webhook_secret", "sut", "test_driver", "timeout", "max_message_size"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"{file}: field {unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
    listen = _table(data, "listen", str(file), {"host", "port"}, set())
    port = listen.get("port", 8090)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise SettingsError(f"{file}: field listen.port: {port!r} is not a TCP port")
    access_point = _table(data, "access_point", str(file), {"url", "token"}, {"url", "token"})
    secret = data.get("webhook_secret")
    if not isinstance(secret, str) or len(secret) < 16:
        raise SettingsError(f"{file}: field webhook_secret: the access point's webhook secret (16 or more characters)")
    sut = _table(data, "sut", str(file), {"party_id", "type"}, {"party_id"})
    driver = _table(data, "test_driver", str(file), {"endpoint", "party_id", "type"}, {"endpoint", "party_id"})
    unregistered = PartyIdType.EBCORE_UNREGISTERED.value
    size = data.get("max_message_size", 10 * 1024 * 1024)
    return ConformanceSettings(
        file=file,
        host=str(listen.get("host", "127.0.0.1")),
        port=port,
        api_url=_url(str(access_point["url"]), f"{file}: field access_point.url"),
        api_token=str(access_point["token"]),
        webhook_secret=secret,
        sut=party(str(sut["party_id"]), SUT_ROLE, str(sut.get("type", unregistered)) or None),
        driver=party(str(driver["party_id"]), TEST_DRIVER_ROLE, str(driver.get("type", unregistered)) or None),
        driver_endpoint=_url(str(driver["endpoint"]), f"{file}: field test_driver.endpoint"),
        timeout=_positive(data.get("timeout", 30), f"{file}: field timeout"),
        max_message_size=int(_positive(size, f"{file}: field max_message_size")),
    )
