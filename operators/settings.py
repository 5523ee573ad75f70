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

[operator.far]                      # FaR, where the operator writes for its holders (optional)
url = "http://127.0.0.1:8470"
token = "…"                         # scopes read and write:operator=<our orgnr>

[operator.eid]                      # whose e-ID signatures open mailboxes and log holders in
anchors = ["eid-ca.pem"]
max_age = "10m"                     # how old an assertion may be
session = "1h"                      # how long a login lasts

[operator.portability]              # moving mailboxes between operators over AS4
batch_letters = 500                 # letters per transfer message at most
batch_size = "64MiB"                # and bytes (a larger letter goes alone)
retry = "5s"                        # how often unfinished moves are looked at

[[operator.peers]]                  # other operators: their AS4 P-Mode from here, their signing certificate
id = "165590123456"
pmode = "op1-to-op2"
certificate = "op2.pem"

[operator.notifications]            # tell holders that mail arrived (never what it says)
smtp = { host = "127.0.0.1", port = 25, sender = "brevladan@example.se" }
sms = { record = "sms.jsonl" }      # a recording channel (tests, development); a real gateway plugs in here
push = { record = "push.jsonl" }

[operator.retention]
closed_mailboxes = "90d"            # a closed mailbox's mail is erased this long after it closed
interval = "1h"
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
KNOWN = (
    frozenset(
        {
            "id",
            "name",
            "host",
            "port",
            "database",
            "mailboxes",
            "keys",
            "access_point",
            "trust",
            "tokens",
            "tls",
            "storage",
            "far",
            "eid",
            "portability",
            "peers",
            "notifications",
            "retention",
            "soap_max_size",
        }
    )
    | TWO_WAY_KNOWN
    | OBSERVABILITY_KEYS
)
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
class FarLink:
    """FaR's REST API and the operator's token there (``write:operator=<orgnr>``)."""

    url: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class Peer:
    """Another operator: its id (16 + orgnr), the P-Mode that reaches its access point, its signing certificate."""

    id: str
    pmode: str
    certificate: x509.Certificate = field(repr=False)


@dataclass(frozen=True)
class Portability:
    """How mailboxes move: at most ``batch_letters`` letters and ``batch_size`` bytes a transfer message."""

    batch_letters: int = 500
    batch_size: int = 64 * 1024 * 1024
    retry: timedelta = timedelta(seconds=5)


@dataclass(frozen=True)
class Notifications:
    """Channels: SMTP (host, port, sender), and SMS and push recording to JSON-lines files (or None: off)."""

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_sender: str = "no-reply@localhost"
    sms_record: Path | None = None
    push_record: Path | None = None


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
    storage: Path = Path("mail")
    far: FarLink | None = None
    eid_anchors: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    eid_max_age: timedelta = timedelta(minutes=10)
    session_lifetime: timedelta = timedelta(hours=1)
    portability: Portability = Portability()
    peers: tuple[Peer, ...] = ()
    notifications: Notifications = Notifications()
    closed_retention: timedelta = timedelta(days=90)
    retention_interval: timedelta = timedelta(hours=1)
    two_way: TwoWaySettings = field(default_factory=TwoWaySettings)  # operators/twoway_settings.py
    observability: Observability = field(default_factory=Observability)  # admin listener (/metrics), logging

    @property
    def orgnr(self) -> str:
        """The organisationsnummer (FaR's operator id): the id without ``16``."""
        return self.id[2:] if len(self.id) == 12 and self.id.startswith("16") else self.id

    def peer(self, operator: str) -> Peer | None:
        """The peer with that id (``16`` + orgnr or the bare orgnr)."""
        wanted = operator if operator.startswith("16") and len(operator) == 12 else f"16{operator}"
        return next((p for p in self.peers if p.id == wanted), None)


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
    storage = table.path("storage", exists=False) or reader.base / "mail"
    far = table.section("far", known={"url", "token"})
    far_link = (
        FarLink(far.url("url", required=True) or "", far.secret("token", required=True) or "")
        if table.has("far")
        else None
    )
    eid = table.section("eid", known={"anchors", "max_age", "session"})
    portability = table.section("portability", known={"batch_letters", "batch_size", "retry"})
    notifications = table.section("notifications", known={"smtp", "sms", "push"})
    retention = table.section("retention", known={"closed_mailboxes", "interval"})
    peers = tuple(
        peer
        for item in table.sections("peers", known={"id", "pmode", "certificate"})
        if (peer := _peer(item)) is not None
    )
    eid_anchors = _certificates(eid, "anchors")
    moving = Portability(
        portability.integer("batch_letters", 500, minimum=1, maximum=100_000),
        portability.size("batch_size", "64MiB", positive=True),
        portability.duration("retry", "5s", positive=True),
    )
    notify = _notifications(notifications)
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
        storage=storage,
        far=far_link,
        eid_anchors=eid_anchors,
        eid_max_age=eid.duration("max_age", "10m", positive=True),
        session_lifetime=eid.duration("session", "1h", positive=True),
        portability=moving,
        peers=peers,
        notifications=notify,
        closed_retention=retention.duration("closed_mailboxes", "90d", positive=True),
        retention_interval=retention.duration("interval", "1h", positive=True),
        two_way=two_way,
        observability=observability,
    )


def _peer(item: Section) -> Peer | None:
    operator = item.string("id", required=True)
    pmode = item.string("pmode", required=True)
    path = item.path("certificate", required=True)
    if not operator or not pmode or path is None:
        return None
    try:
        return Peer(operator, pmode, load_certificates(path)[0])
    except (KeyLoadError, OSError, ValueError, IndexError) as exc:
        item.mistake("certificate", f"{path}: {exc}")
        return None


def _notifications(section: Section) -> Notifications:
    smtp = section.section("smtp", known={"host", "port", "sender"})
    sms = section.section("sms", known={"record"})
    push = section.section("push", known={"record"})
    return Notifications(
        smtp_host=smtp.optional_string("host"),
        smtp_port=smtp.port("port", 25),
        smtp_sender=smtp.string("sender", "no-reply@localhost", min_length=3),
        sms_record=sms.path("record", exists=False),
        push_record=push.path("record", exists=False),
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
