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

[[far.tokens]]           # an operator's token: reads, and writes its own record and holders only
name = "brevladan-ett"
token = "…"
scopes = ["read", "write:operator=5568402266"]

[[far.tokens]]           # a supervisor's: approves, suspends and revokes operators (no write scope implies it)
name = "pts"
token = "…"
scopes = ["read", "approve"]

[far.admin]              # optional: GET /metrics on its own listener, for a token with the metrics scope
port = 9465
tokens = [{name = "prometheus", token = "…", scopes = ["metrics"]}]

[far.logging]            # level (info), format: json (default) or text
level = "info"

[far.tls]                # optional: serve HTTPS (TLS 1.2+; min_version, max_version, ciphers, client_ca)
certificate = "far.pem"
key = "far.key"

[[far.clients]]          # with tls.client_ca: a client certificate identifies its holder, as a token would
name = "brevladan-ett-tls"
certificate = "op1-client.pem"
scopes = ["read", "write:operator=5568402266"]

[far.eid]                # whose e-ID signatures over agreement texts count (register, switch, preferences)
anchors = ["eid-ca.pem"]
max_age = "10m"          # how old an assertion may be

[far.registers]          # population register (age, guardians) and business register (signatories, roles)
url = "http://127.0.0.1:8490"   # `accesspoint far registers` serves a reference one
timeout = "5s"

[far.minors]
own_mailbox_age = 16     # from this age a holder registers alone
consent_age = 13         # from this age with a guardian's consent; younger: no mailbox
senders_told = "no-mailbox"   # or "minor": what isReachable says about an unregistered minor

[far.dormancy]           # optional: mark recipients dormant after a period without activity
after = "730d"
interval = "1h"
```

A relative SQLite path is taken relative to the configuration file; the rules are
:mod:`accesspoint.servicekit.settings`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from accesspoint.security.keys import KeyLoadError, load_certificates
from accesspoint.servicekit.observability import OBSERVABILITY_KEYS, Observability, read_observability
from accesspoint.servicekit.settings import Section, SettingsReader, read_document
from accesspoint.servicekit.tls import TlsSettings
from accesspoint.servicekit.tokens import BearerToken, Scope
from far.access import ClientCertificate
from far.identifiers import Policy
from far.parties import PartyPolicy

DEFAULT_DATABASE = "sqlite+aiosqlite:///far.db"
SCOPES = frozenset({"read", "write", "approve"})  # approve: operator approvals (far/access.py)
KNOWN = frozenset(
    {
        "database",
        "host",
        "port",
        "check_digits",
        "sender_icds",
        "tokens",
        "tls",
        "clients",
        "eid",
        "registers",
        "minors",
        "dormancy",
        *OBSERVABILITY_KEYS,
    }
)
# What a scope may be narrowed to: an operator's writes (far/access.py), a sender's (far/sender_api.py).
KINDS = ("operator", "sender")
MINORS_TOLD = ("no-mailbox", "minor")


@dataclass(frozen=True)
class MinorsPolicy:
    """Who is old enough for a mailbox: alone from ``own_mailbox_age``, with a guardian's consent from
    ``consent_age``; ``senders_told``: ``no-mailbox`` or ``minor`` for an unregistered minor."""

    own_mailbox_age: int = 16
    consent_age: int = 13
    senders_told: str = "no-mailbox"


@dataclass(frozen=True)
class Dormancy:
    """Recipients without reported activity for ``after`` become dormant; the job runs every ``interval``."""

    after: timedelta
    interval: timedelta = timedelta(hours=1)


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
    clients: tuple[ClientCertificate, ...] = ()
    eid_anchors: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    eid_max_age: timedelta = timedelta(minutes=10)
    registers: str | None = None
    registers_timeout: timedelta = timedelta(seconds=5)
    minors: MinorsPolicy = MinorsPolicy()
    dormancy: Dormancy | None = None

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
    eid = far.section("eid", known={"anchors", "max_age"})
    registers = far.section("registers", known={"url", "timeout"})
    minors = far.section("minors", known={"own_mailbox_age", "consent_age", "senders_told"})
    dormancy = far.section("dormancy", known={"after", "interval"})
    own_age = minors.integer("own_mailbox_age", 16, minimum=0, maximum=120)
    consent_age = minors.integer("consent_age", 13, minimum=0, maximum=120)
    if consent_age > own_age:
        minors.mistake("consent_age", f"must not be above own_mailbox_age ({own_age})")
    return FarSettings(
        database=far.database("database", DEFAULT_DATABASE),
        host=far.string("host", "127.0.0.1", min_length=1),
        port=far.port("port", 8470),
        check_digits=far.boolean("check_digits", True),
        sender_icds=_icds(far),
        tokens=far.tokens("tokens", actions=SCOPES, kinds=KINDS),
        tls=far.tls("tls"),
        observability=read_observability(far),
        clients=_clients(far),
        eid_anchors=_anchors(eid),
        eid_max_age=eid.duration("max_age", "10m", positive=True),
        registers=registers.url("url"),
        registers_timeout=registers.duration("timeout", "5s", positive=True),
        minors=MinorsPolicy(
            own_age, consent_age, minors.choice("senders_told", "no-mailbox", {t: t for t in MINORS_TOLD})
        ),
        dormancy=Dormancy(
            dormancy.duration("after", "730d", positive=True), dormancy.duration("interval", "1h", positive=True)
        )
        if dormancy.has("after")
        else None,
    )


def _clients(far: Section) -> tuple[ClientCertificate, ...]:
    found = []
    for entry in far.sections("clients", known={"name", "certificate", "scopes"}):
        name = entry.string("name", required=True)
        path = entry.path("certificate", required=True)
        texts = entry.strings("scopes", what="scopes (read, write, write:operator=<orgnr>)")
        try:
            granted = frozenset(Scope.parse(text) for text in texts)
        except ValueError as exc:
            entry.mistake("scopes", str(exc))
            continue
        wrong = [str(s) for s in granted if s.action not in SCOPES or s.kind not in (None, *KINDS)]
        if not texts or wrong:
            entry.mistake("scopes", f"{(wrong or ['nothing'])[0]!r}: read, write or write:operator=<orgnr>")
            continue
        if path is None:
            continue
        try:
            found.append(ClientCertificate.load(name, path, granted))
        except (OSError, ValueError) as exc:
            entry.mistake("certificate", f"{path} holds no certificate ({exc})")
    return tuple(found)


def _anchors(eid: Section) -> tuple[x509.Certificate, ...]:
    found: list[x509.Certificate] = []
    for index, name in enumerate(eid.strings("anchors", what="certificate files")):
        try:
            found += load_certificates(eid.reader.base / name)
        except (KeyLoadError, OSError, ValueError) as exc:
            eid.mistake(f"anchors[{index}]", str(exc))
    return tuple(found)


def _icds(far: Section) -> frozenset[str]:
    icds = far.strings("sender_icds", what="ISO 6523 ICDs")
    for icd in icds:
        if len(icd) != 4 or not icd.isdigit():
            far.mistake("sender_icds", f"an ICD is 4 digits, not {icd[:16]!r}")
    return frozenset(icds)
