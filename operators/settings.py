"""The reference operator's settings: one TOML or YAML file with an ``operator`` table, checked on load.

```toml
[operator]
id = "165568402266"                 # the operator's organisation id (16 + organisationsnummer)
name = "Test Mailbox AB"
host = "127.0.0.1"
port = 8480
database = "sqlite+aiosqlite:///mailbox.db"   # relative paths are taken from this file's folder
mailboxes = ["197001011234", "165566778899", "0203:kommun.example.se"]
soap_max_size = "48MiB"             # the largest Service v3 deliverSecure request taken in (unauthenticated)

[operator.keys]                     # signs the end-to-end receipts
key = "operator.key.pem"
certificate = "operator.pem"

[operator.access_point]             # the access point this operator is the backend of
url = "http://127.0.0.1:8080"
token = "…"                         # its backend API token
webhook_secret = "…"                # the secret of its message-received webhook (HMAC-SHA256)
poll_interval = "5s"                # also search the API for received messages this often ("0s": webhooks only)
reply_pmode = "operator-answers"    # optional: the P-Mode of the answers (default: the delivery's two-way P-Mode)
workers = 8                         # deliveries handled at once (each waits on the access point's API)

[operator.trust]
intermediaries = ["ap-sweden-sign.pem"]    # who may seal Mina meddelanden deliveries (pinned)
sender_anchors = ["senders-ca.pem"]        # CAs of the senders' end-to-end signing certificates
minameddelanden_contracts = "../shared/interop/minameddelanden/contracts"   # optional: XSD validation
xhe_schema = "…/XHE-1.0.xsd"                                                # optional

[[operator.tokens]]                 # mailbox API bearer tokens; recipients = ["*"] sees every mailbox
token = "…"
recipients = ["197001011234"]

[operator.tls]                      # optional: serve HTTPS (TLS 1.2+; min_version, max_version, ciphers, client_ca)
certificate = "operator-tls.pem"
key = "operator-tls.key"
```

Read with :mod:`accesspoint.servicekit.settings`: every mistake is named at once with its field. A mailbox token's
``recipients`` become its scopes, ``read:recipient=<id>`` each (``read`` for ``*``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from accesspoint.security.keys import KeyLoadError, KeyPair, load_certificates, load_key_pair
from accesspoint.servicekit.observability import OBSERVABILITY_KEYS, Observability, read_observability
from accesspoint.servicekit.settings import Section, SettingsReader, read_document
from accesspoint.servicekit.tls import TlsSettings
from accesspoint.servicekit.tokens import BearerToken, Scope
from operators.soap import SOAP_MAX_SIZE
from operators.twoway_settings import KNOWN as TWO_WAY_KNOWN
from operators.twoway_settings import TwoWaySettings, read_two_way

MIN_SECRET = 16
KNOWN = frozenset(
    {"id", "name", "host", "port", "database", "mailboxes", "keys", "access_point", "trust", "tokens", "tls",
     "soap_max_size"}
) | TWO_WAY_KNOWN | OBSERVABILITY_KEYS
LINK_KEYS = frozenset({"url", "token", "webhook_secret", "poll_interval", "reply_pmode", "workers"})
TRUST_KEYS = frozenset({"intermediaries", "sender_anchors", "minameddelanden_contracts", "xhe_schema"})


@dataclass(frozen=True)
class AccessPointLink:
    """How to reach the operator's own access point."""

    url: str
    token: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    poll_interval: timedelta = timedelta(seconds=5)
    # The P-Mode the answers go out on. Unset: the delivery's own two-way P-Mode (its reply leg), which the access
    # point picks from ref_to_message_id; set it when deliveries come on a one-way P-Mode (a router forwarding).
    reply_pmode: str | None = None
    # Deliveries handled at once: each spends most of its time waiting on the access point's API (read, download,
    # submit the answer, acknowledge), so one at a time leaves both idle.
    workers: int = 8


@dataclass(frozen=True)
class OperatorSettings:
    """Everything ``accesspoint operator serve`` needs."""

    id: str
    name: str
    keys: KeyPair = field(repr=False)
    access_point: AccessPointLink
    host: str = "127.0.0.1"
    port: int = 8480
    database: str = "sqlite+aiosqlite:///mailbox.db"
    mailboxes: tuple[str, ...] = ()
    tokens: tuple[BearerToken, ...] = ()
    intermediaries: tuple[x509.Certificate, ...] = ()
    sender_anchors: tuple[x509.Certificate, ...] = ()
    minameddelanden_contracts: Path | None = None
    xhe_schema: Path | None = None
    tls: TlsSettings | None = None
    soap_max_size: int = SOAP_MAX_SIZE  # bytes: the largest Service v3 deliverSecure request taken in
    two_way: TwoWaySettings = field(default_factory=TwoWaySettings)  # operators/twoway_settings.py
    observability: Observability = field(default_factory=Observability)  # admin listener (/metrics), logging


def load_settings(path: str | Path) -> OperatorSettings:
    """Read and check a settings file (TOML or YAML); SettingsError lists every mistake."""
    file = Path(path).resolve()
    reader = SettingsReader(file.parent)
    table = reader.section(read_document(file).get("operator"), f"{file}: operator", known=KNOWN, required=True)
    operator_id = table.string("id", required=True)
    name = table.string("name", required=True)
    port = table.port("port", 8480)
    host = table.string("host", "127.0.0.1", min_length=1)
    database = table.database("database", "sqlite+aiosqlite:///mailbox.db")
    mailboxes = table.strings("mailboxes", what="recipient identifiers")
    keys = _keys(table.section("keys", known={"key", "certificate", "password"}, required=True))
    link = _link(table.section("access_point", known=LINK_KEYS, required=True))
    trust = table.section("trust", known=TRUST_KEYS)
    tokens = tuple(_token(item) for item in table.sections("tokens", known={"token", "recipients"}))
    intermediaries = _certificates(trust, "intermediaries")
    anchors = _certificates(trust, "sender_anchors")
    contracts = trust.path("minameddelanden_contracts")
    xhe_schema = trust.path("xhe_schema")
    tls = table.tls("tls")
    soap_max_size = table.size("soap_max_size", SOAP_MAX_SIZE, positive=True)
    two_way = read_two_way(table, _certificates)
    observability = read_observability(table)
    reader.done()
    assert keys is not None, "missing keys are a mistake done() raised"
    return OperatorSettings(
        id=operator_id,
        name=name,
        keys=keys,
        access_point=link,
        host=host,
        port=port,
        database=database,
        mailboxes=mailboxes,
        tokens=tuple(token for token in tokens if token is not None),
        intermediaries=intermediaries,
        sender_anchors=anchors,
        minameddelanden_contracts=contracts,
        xhe_schema=xhe_schema,
        tls=tls,
        soap_max_size=soap_max_size,
        two_way=two_way,
        observability=observability,
    )


def _keys(keys: Section) -> KeyPair | None:
    key, certificate = keys.path("key", required=True), keys.path("certificate", required=True)
    if key is None or certificate is None:
        return None
    password = keys.get("password")
    try:
        return load_key_pair(key, None if password is None else str(password).encode(), certificate=certificate)
    except KeyLoadError as exc:
        keys.mistake("key", str(exc))
        return None


def _link(link: Section) -> AccessPointLink:
    url = link.url("url", required=True) or ""
    return AccessPointLink(
        url=url.rstrip("/"),
        token=link.secret("token", required=True) or "",
        webhook_secret=link.string("webhook_secret", required=True, min_length=MIN_SECRET),
        # "0s": no polling, webhooks only.
        poll_interval=link.duration("poll_interval", "5s"),
        reply_pmode=link.optional_string("reply_pmode"),
        workers=link.integer("workers", 8, minimum=1, maximum=1024),
    )


def _token(item: Section) -> BearerToken | None:
    """``{token, recipients}``: the mailboxes the token may read become its scopes (``*``: every mailbox)."""
    secret = item.secret("token", required=True)
    recipients = item.strings("recipients", ("*",), what="recipient identifiers, or ['*']")
    if secret is None:
        return None
    scopes = frozenset(Scope("read") if r == "*" else Scope("read", "recipient", r) for r in recipients)
    return BearerToken(item.name.rsplit(".", 1)[-1], secret, scopes)


def _certificates(trust: Section, key: str) -> tuple[x509.Certificate, ...]:
    files = trust.strings(key, what="certificate files")
    found: list[x509.Certificate] = []
    for index, name in enumerate(files):
        try:
            found += load_certificates(trust.reader.base / name)
        except (KeyLoadError, OSError, ValueError) as exc:
            trust.mistake(f"{key}[{index}]", str(exc))
    return tuple(found)
