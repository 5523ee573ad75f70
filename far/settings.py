"""FaR's settings: a frozen dataclass loaded from a TOML file, every mistake reported with its field path.

```toml
[far]
database = "sqlite+aiosqlite:///far.db"   # or postgresql+asyncpg://user@host/db
host = "127.0.0.1"
port = 8470
check_digits = true      # false: accept schema-valid numbers that fail the Luhn check (some test data)
sender_icds = ["0088"]   # ISO 6523 ICDs of senders beyond the Nordic and Baltic ones far/parties.py knows

[[far.tokens]]           # bearer tokens of the REST API (the SOAP endpoint relies on mutual TLS in front)
name = "registry-admin"  # recorded as the actor in the audit table
token = "…"              # at least 16 visible ASCII characters
scopes = ["read", "write"]

[far.admin]              # optional: GET /metrics on its own listener, for a token with the metrics scope
port = 9465
tokens = [{name = "prometheus", token = "…", scopes = ["metrics"]}]

[far.logging]            # level (info), format: json (default) or text
level = "info"

[far.tls]                # optional: serve HTTPS (TLS 1.2+; min_version, max_version, ciphers, client_ca)
certificate = "far.pem"
key = "far.key"
```

A relative SQLite path is taken relative to the configuration file; the rules are
:mod:`accesspoint.servicekit.settings`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from accesspoint.servicekit.observability import OBSERVABILITY_KEYS, Observability, read_observability
from accesspoint.servicekit.settings import Section, SettingsReader, read_document
from accesspoint.servicekit.tls import TlsSettings
from accesspoint.servicekit.tokens import BearerToken
from far.identifiers import Policy
from far.parties import PartyPolicy

DEFAULT_DATABASE = "sqlite+aiosqlite:///far.db"
SCOPES = frozenset({"read", "write"})
KNOWN = frozenset({"database", "host", "port", "check_digits", "sender_icds", "tokens", "tls", *OBSERVABILITY_KEYS})


@dataclass(frozen=True)
class FarSettings:
    """Where FaR keeps its data, where it listens, how strictly it checks identifiers, and who may call it."""

    database: str = DEFAULT_DATABASE
    host: str = "127.0.0.1"
    port: int = 8470
    check_digits: bool = True
    sender_icds: frozenset[str] = frozenset()
    tokens: tuple[BearerToken, ...] = ()
    tls: TlsSettings | None = None
    observability: Observability = field(default_factory=Observability)  # admin listener (/metrics), logging, tracing

    @property
    def policy(self) -> Policy:
        """The identifier policy these settings ask for."""
        return Policy(check_digits=self.check_digits)

    @property
    def parties(self) -> PartyPolicy:
        """What the sender register accepts as a party id (far/parties.py)."""
        return PartyPolicy(extra_icds=self.sender_icds, check_digits=self.check_digits)


def load_settings(path: Path) -> FarSettings:
    """Read and check a settings file; SettingsError lists every mistake."""
    reader = SettingsReader(path.parent)
    settings = read_settings(reader.section(read_document(path).get("far"), f"{path}: far", known=KNOWN))
    reader.done()
    return settings


def read_settings(far: Section) -> FarSettings:
    """The settings in a ``far`` section, its mistakes recorded in the section's reader."""
    return FarSettings(
        database=far.database("database", DEFAULT_DATABASE),
        host=far.string("host", "127.0.0.1", min_length=1),
        port=far.port("port", 8470),
        check_digits=far.boolean("check_digits", True),
        sender_icds=_icds(far),
        tokens=far.tokens("tokens", actions=SCOPES, kinds=("sender",)),
        tls=far.tls("tls"),
        observability=read_observability(far),
    )


def _icds(far: Section) -> frozenset[str]:
    icds = far.strings("sender_icds", what="ISO 6523 ICDs")
    for icd in icds:
        if len(icd) != 4 or not icd.isdigit():
            far.mistake("sender_icds", f"an ICD is 4 digits, not {icd[:16]!r}")
    return frozenset(icds)
