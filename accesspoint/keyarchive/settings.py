"""The key archive's settings (``accesspoint keyarchive serve --config archive.toml``), every mistake named at once.

```toml
[keyarchive]
database = "sqlite+aiosqlite:///archive.db"
host = "127.0.0.1"
port = 8490
eid_anchors = ["eid-ca.pem"]          # the e-ID CAs whose certificates authenticate holders

[keyarchive.hsm]                      # where the master keys live (PKCS#11; SoftHSM2 in tests)
module = "/usr/lib/softhsm/libsofthsm2.so"
token = "archive"
pin_env = "ARCHIVE_PIN"               # the user PIN from the environment (or pin = "…")
master_label = "archive-master"

[keyarchive.limits]                   # within window: releases and failed e-ID logins per holder, acts per admin
releases = 5
failures = 10
admin_acts = 20
window = "1h"

[[keyarchive.tokens]]                 # administrators (scope "admin"); two different ones act together
name = "admin-anna"
token = "…"
scopes = ["admin"]

[keyarchive.admin]                    # optional: Prometheus /metrics on a listener of its own, as every service's
port = 9467
tokens = [{name = "prometheus", token = "…", scopes = ["metrics"]}]
```

``logging`` and ``tracing`` are read as for every service (``accesspoint.servicekit.observability``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from accesspoint.keyarchive.master import TokenSettings
from accesspoint.keyarchive.service import Limits
from accesspoint.servicekit.observability import OBSERVABILITY_KEYS, Observability, read_observability
from accesspoint.servicekit.settings import Section, SettingsReader, read_document
from accesspoint.servicekit.tls import TlsSettings
from accesspoint.servicekit.tokens import BearerToken

KNOWN = frozenset({"database", "host", "port", "eid_anchors", "hsm", "limits", "tokens", "tls"}) | OBSERVABILITY_KEYS


@dataclass(frozen=True)
class ArchiveSettings:
    """Everything ``keyarchive serve`` needs."""

    hsm: TokenSettings
    eid_anchors: tuple[x509.Certificate, ...]
    database: str = "sqlite+aiosqlite:///archive.db"
    host: str = "127.0.0.1"
    port: int = 8490
    master_label: str = "archive-master"
    limits: Limits = field(default_factory=Limits)
    tokens: tuple[BearerToken, ...] = ()
    tls: TlsSettings | None = None
    observability: Observability = field(default_factory=Observability)  # admin listener (/metrics), logging


def load_settings(path: Path) -> ArchiveSettings:
    """Read and check a settings file; SettingsError lists every mistake."""
    reader = SettingsReader(path.parent)
    section = reader.section(read_document(path).get("keyarchive"), f"{path}: keyarchive", known=KNOWN)
    settings = read_settings(section)
    reader.done()
    return settings


def _anchors(section: Section) -> tuple[x509.Certificate, ...]:
    found: list[x509.Certificate] = []
    for index, name in enumerate(section.strings("eid_anchors", what="PEM files of e-ID CAs")):
        path = section.reader.base / name
        try:
            found.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except (OSError, ValueError) as exc:
            section.mistake("eid_anchors", f"[{index}] {name}: not a readable PEM certificate ({exc})")
    if not found:
        section.mistake("eid_anchors", "at least one e-ID CA certificate (PEM)")
    return tuple(found)


def read_settings(section: Section) -> ArchiveSettings:
    """The settings in a ``keyarchive`` section."""
    hsm = section.section("hsm", known={"module", "token", "pin", "pin_env", "master_label"}, required=True)
    pin = hsm.optional_string("pin")
    pin_env = hsm.optional_string("pin_env")
    if pin_env is not None:
        pin = os.environ.get(pin_env)
        if pin is None:
            hsm.mistake("pin_env", f"the environment variable {pin_env} is not set")
    elif pin is None:
        hsm.mistake("pin_env", "required (or pin): the token's user PIN")
    limits = section.section("limits", known={"releases", "failures", "admin_acts", "window"})
    return ArchiveSettings(
        hsm=TokenSettings(Path(hsm.string("module", required=True)), hsm.string("token", required=True), pin or ""),
        eid_anchors=_anchors(section),
        database=section.database("database", "sqlite+aiosqlite:///archive.db"),
        host=section.string("host", "127.0.0.1", min_length=1),
        port=section.port("port", 8490),
        master_label=hsm.string("master_label", "archive-master", min_length=1),
        limits=Limits(
            releases=limits.integer("releases", 5, minimum=1),
            failures=limits.integer("failures", 10, minimum=1),
            admin_acts=limits.integer("admin_acts", 20, minimum=1),
            window=limits.duration("window", "1h", positive=True),
        ),
        tokens=section.tokens("tokens", actions=frozenset({"admin"})),
        tls=section.tls("tls"),
        observability=read_observability(section),
    )
