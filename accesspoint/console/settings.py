"""The console's settings: one TOML or YAML file with a ``console`` table, every mistake named with its field.

```toml
[console]
host = "127.0.0.1"          # its own listener: never the AS4 endpoint's
port = 8090
database = "sqlite:///console.db"   # users, sessions, audit, alerts, incidents (default: beside the store)
secure_cookies = true       # the session cookie is Secure (HttpOnly and SameSite=Strict always)
session_idle = "30m"        # a session unused this long is over
session_max = "12h"         # and any session after this long
status_tokens = ["a-monitoring-secret-16+"]   # bearer tokens that may read GET /status (besides a session)

[console.tls]               # optional: HTTPS (TLS 1.2+)
certificate = "console.pem"
key = "console.key"

[console.login]             # failed logins slow the next attempt rather than lock an account an attacker names
delay = "250ms"             # after the first failure; doubled for each further one
delay_max = "10s"
window = "15m"              # failures older than this are forgotten
alert_after = 5             # an alert at this many failures in the window (per user name, and per address)

[console.certificates]
warn_before = "60d"         # warnings (page and alert) from this long before a certificate's not-after
interval = "1h"             # how often certificates are looked at for alerts

[console.monitoring]        # connection checks: ebMS test-service pings over the P-Modes chosen on its page
interval = "2h"
timeout = "5m"              # a ping not delivered by then has failed
failures = 2                # consecutive failures before an alert

[console.alerts]
dedup = "1h"                # the same alert again within this is counted, not sent again
rate = 20                   # deliveries per channel per `per`; the rest wait their turn
per = "1h"
[console.alerts.smtp]
host = "smtp.example"; port = 587; starttls = true; username = "…"; password = "…"
sender = "accesspoint@example"; recipients = ["ops@example"]
[[console.alerts.webhooks]]
url = "https://ops.example/alerts"; secret = "a-webhook-secret-16+"   # HMAC-SHA256 like the access point's

[[console.watch]]           # outage checks: a GET that must answer below 500 (FaR, the SMP …)
name = "FaR"; url = "http://far:8470/health"; interval = "1m"; failures = 3

[console.far]               # FaR's pages, over FaR's REST API with a read token
url = "http://far:8470"; token = "…"
approval_token = "…"        # optional: a FaR token with the approve scope; admins then decide operator approvals
[console.operator]          # the mailbox operator's pages, over its mailbox API
url = "http://operator:8480"; token = "…"

[console.incidents]         # default notification deadlines after eIDAS Art. 19(2), counted from awareness
supervisory_body = "24h"
affected_parties = "24h"    # "without undue delay"
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from accesspoint.servicekit.settings import Section, SettingsReader, read_document
from accesspoint.servicekit.tls import TlsSettings
from accesspoint.servicekit.tokens import BearerToken

KNOWN = frozenset(
    {
        "host", "port", "database", "secure_cookies", "session_idle", "session_max", "status_tokens", "tls", "login",
        "certificates", "monitoring", "alerts", "watch", "far", "operator", "incidents",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """How failed logins are answered: slower each time, and an alert past a count."""

    delay: timedelta = timedelta(milliseconds=250)
    delay_max: timedelta = timedelta(seconds=10)
    window: timedelta = timedelta(minutes=15)
    alert_after: int = 5

    def delay_after(self, failures: int) -> timedelta:
        """The wait before an attempt is answered when ``failures`` failed within the window."""
        if failures <= 0:
            return timedelta(0)
        wait: timedelta = self.delay * 2 ** min(failures - 1, 30)
        return min(wait, self.delay_max)


@dataclass(frozen=True, slots=True)
class Smtp:
    """Where alert e-mails go."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AlertWebhook:
    """A URL alerts are POSTed to, signed with HMAC-SHA256 under the secret."""

    url: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Channels, deduplication and the rate limit of alert deliveries."""

    smtp: Smtp | None = None
    webhooks: tuple[AlertWebhook, ...] = ()
    dedup: timedelta = timedelta(hours=1)
    rate: int = 20
    per: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Watch:
    """A service whose outage is alerted: a GET of ``url`` must answer below 500 within ``timeout``."""

    name: str
    url: str
    interval: timedelta = timedelta(minutes=1)
    failures: int = 3
    timeout: timedelta = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class Remote:
    """A service the console shows pages of, over its REST API with a bearer token."""

    url: str
    token: str = field(repr=False)
    # FaR only: a token with FaR's ``approve`` scope, which lets admins approve, suspend and revoke operators from
    # the console; without it the console shows each operator's approval read-only.
    approval_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Monitoring:
    """Connection checks: how often, how long a ping may take, how many failures make an alert."""

    interval: timedelta = timedelta(hours=2)
    timeout: timedelta = timedelta(minutes=5)
    failures: int = 2


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Default notification deadlines of an incident, counted from when it became known (eIDAS Art. 19(2))."""

    supervisory_body: timedelta = timedelta(hours=24)
    affected_parties: timedelta = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """Everything the console needs besides the access point it runs beside."""

    host: str = "127.0.0.1"
    port: int = 8090
    database: str | None = None  # None: console.db in the access point's storage folder
    secure_cookies: bool = True
    session_idle: timedelta = timedelta(minutes=30)
    session_max: timedelta = timedelta(hours=12)
    status_tokens: tuple[BearerToken, ...] = ()
    tls: TlsSettings | None = None
    login: LoginPolicy = field(default_factory=LoginPolicy)
    warn_before: timedelta = timedelta(days=60)
    certificate_interval: timedelta = timedelta(hours=1)
    monitoring: Monitoring = field(default_factory=Monitoring)
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    watch: tuple[Watch, ...] = ()
    far: Remote | None = None
    operator: Remote | None = None
    deadlines: Deadlines = field(default_factory=Deadlines)

    def database_url(self, storage: Path) -> str:
        """The console's database: as set, else a SQLite file beside the access point's store."""
        return self.database or f"sqlite:///{storage / 'console.db'}"


def load_settings(path: Path) -> ConsoleSettings:
    """The settings in ``path`` (TOML or YAML, a ``console`` table); SettingsError naming every mistake."""
    reader = SettingsReader(base=path.parent)
    section = reader.section(read_document(path).get("console"), f"{path}: console", known=KNOWN, required=True)
    settings = read_settings(section)
    reader.done()
    return settings


def read_settings(console: Section) -> ConsoleSettings:
    """The settings of one ``console`` table (its mistakes recorded in its reader)."""
    login = console.section("login", known={"delay", "delay_max", "window", "alert_after"})
    certificates = console.section("certificates", known={"warn_before", "interval"})
    monitoring = console.section("monitoring", known={"interval", "timeout", "failures"})
    incidents = console.section("incidents", known={"supervisory_body", "affected_parties"})
    database = console.database("database", "") if console.has("database") else None
    return ConsoleSettings(
        host=console.string("host", "127.0.0.1"),
        port=console.port("port", 8090),
        database=database or None,
        secure_cookies=console.boolean("secure_cookies", True),
        session_idle=console.duration("session_idle", "30m", positive=True),
        session_max=console.duration("session_max", "12h", positive=True),
        status_tokens=console.tokens("status_tokens", actions={"status"}),
        tls=console.tls("tls"),
        login=LoginPolicy(
            delay=login.duration("delay", "250ms", positive=True),
            delay_max=login.duration("delay_max", "10s", positive=True),
            window=login.duration("window", "15m", positive=True),
            alert_after=login.integer("alert_after", 5, minimum=1),
        ),
        warn_before=certificates.duration("warn_before", "60d", positive=True),
        certificate_interval=certificates.duration("interval", "1h", positive=True),
        monitoring=Monitoring(
            interval=monitoring.duration("interval", "2h", positive=True),
            timeout=monitoring.duration("timeout", "5m", positive=True),
            failures=monitoring.integer("failures", 2, minimum=1),
        ),
        alerts=_alerts(console.section("alerts", known={"dedup", "rate", "per", "smtp", "webhooks"})),
        watch=tuple(_watch(item) for item in console.sections("watch", known=WATCH)),
        far=_remote(console, "far"),
        operator=_remote(console, "operator"),
        deadlines=Deadlines(
            supervisory_body=incidents.duration("supervisory_body", "24h", positive=True),
            affected_parties=incidents.duration("affected_parties", "24h", positive=True),
        ),
    )


WATCH = {"name", "url", "interval", "failures", "timeout"}
SMTP = {"host", "port", "sender", "recipients", "starttls", "username", "password"}


def _alerts(alerts: Section) -> AlertPolicy:
    smtp = None
    if alerts.has("smtp"):
        table = alerts.section("smtp", known=SMTP)
        recipients = table.strings("recipients", what="e-mail addresses")
        if not recipients:
            table.mistake("recipients", "required, a list of e-mail addresses")
        smtp = Smtp(
            host=table.string("host", required=True),
            port=table.port("port", 25),
            sender=table.string("sender", required=True),
            recipients=recipients,
            starttls=table.boolean("starttls", False),
            username=table.optional_string("username"),
            password=table.optional_string("password"),
        )
    hooks = []
    for item in alerts.sections("webhooks", known={"url", "secret"}):
        url, secret = item.url("url", required=True), item.secret("secret", required=True)
        if url is not None and secret is not None:
            hooks.append(AlertWebhook(url, secret))
    return AlertPolicy(
        smtp=smtp,
        webhooks=tuple(hooks),
        dedup=alerts.duration("dedup", "1h", positive=True),
        rate=alerts.integer("rate", 20, minimum=1),
        per=alerts.duration("per", "1h", positive=True),
    )


def _watch(item: Section) -> Watch:
    return Watch(
        name=item.string("name", required=True),
        url=item.url("url", required=True) or "",
        interval=item.duration("interval", "1m", positive=True),
        failures=item.integer("failures", 3, minimum=1),
        timeout=item.duration("timeout", "5s", positive=True),
    )


def _remote(console: Section, key: str) -> Remote | None:
    if not console.has(key):
        return None
    table = console.section(key, known={"url", "token", "approval_token"} if key == "far" else {"url", "token"})
    url, token = table.url("url", required=True), table.secret("token", required=True)
    approval = table.secret("approval_token") if key == "far" else None
    return None if url is None or token is None else Remote(url.rstrip("/"), token, approval)
