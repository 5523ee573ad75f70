"""The reference operator's settings: one TOML or YAML file with an ``operator`` table, checked on load.

```toml
[operator]
id = "165568402266"                 # the operator's organisation id (16 + organisationsnummer)
name = "Test Mailbox AB"
host = "127.0.0.1"
port = 8480
database = "sqlite+aiosqlite:///mailbox.db"   # relative paths are taken from this file's folder
mailboxes = ["197001011234", "165566778899", "0203:kommun.example.se"]
soap_max_size = 50331648            # bytes: the largest Service v3 deliverSecure request taken in (48 MiB)

[operator.keys]                     # signs the end-to-end receipts
key = "operator.key.pem"
certificate = "operator.pem"

[operator.access_point]             # the access point this operator is the backend of
url = "http://127.0.0.1:8080"
token = "…"                         # its backend API token
webhook_secret = "…"                # the secret of its message-received webhook (HMAC-SHA256)
poll_interval = "5s"                # also search the API for received messages this often ("0s": webhooks only)
reply_pmode = "operator-answers"    # optional: the P-Mode of the answers (default: the delivery's two-way P-Mode)

[operator.trust]
intermediaries = ["ap-sweden-sign.pem"]    # who may seal Mina meddelanden deliveries (pinned)
sender_anchors = ["senders-ca.pem"]        # CAs of the senders' end-to-end signing certificates
minameddelanden_contracts = "../shared/interop/minameddelanden/contracts"   # optional: XSD validation
xhe_schema = "…/XHE-1.0.xsd"                                                # optional

[[operator.tokens]]                 # mailbox API bearer tokens; recipients = ["*"] sees every mailbox
token = "…"
recipients = ["197001011234"]
```
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from accesspoint.security.keys import KeyLoadError, KeyPair, load_certificates, load_key_pair
from operators.soap import SOAP_MAX_SIZE

MIN_SECRET = 16
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class SettingsError(ValueError):
    """A configuration that cannot be used; ``problems`` lists each as ``file: field: what``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class ApiToken:
    """A mailbox API bearer token and the mailboxes it may read (``*``: all)."""

    token: str = field(repr=False)
    recipients: frozenset[str] = frozenset({"*"})

    def may_read(self, recipient: str) -> bool:
        """Whether this token may read that mailbox."""
        return "*" in self.recipients or recipient in self.recipients


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
    tokens: tuple[ApiToken, ...] = ()
    intermediaries: tuple[x509.Certificate, ...] = ()
    sender_anchors: tuple[x509.Certificate, ...] = ()
    minameddelanden_contracts: Path | None = None
    xhe_schema: Path | None = None
    soap_max_size: int = SOAP_MAX_SIZE  # bytes: the largest Service v3 deliverSecure request taken in


def _duration(value: object) -> timedelta | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value).strip())
    return None if match is None else timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_text("utf-8")
    except OSError as exc:
        raise SettingsError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        document = tomllib.loads(raw) if path.suffix.lower() == ".toml" else yaml.safe_load(raw)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise SettingsError([f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}"]) from None
    if not isinstance(document, dict):
        raise SettingsError([f"{path}: the top level must be a mapping"])
    return document


def load_settings(path: str | Path) -> OperatorSettings:
    """Read and check a settings file; SettingsError lists every problem."""
    file = Path(path).resolve()
    table = _read(file).get("operator")
    if not isinstance(table, dict):
        raise SettingsError([f"{file}: operator: required, a table"])
    return parse_settings(table, where=str(file), base=file.parent)


class _Checker:
    def __init__(self, where: str, base: Path) -> None:
        self.where, self.base, self.problems = where, base, list[str]()

    def fail(self, name: str, what: str) -> None:
        self.problems.append(f"{self.where}: operator.{name}: {what}")

    def string(self, table: dict[str, Any], key: str, name: str, *, minimum: int = 1) -> str:
        value = table.get(key)
        if not isinstance(value, str) or len(value) < minimum:
            self.fail(name, "required, a string" + (f" of at least {minimum} characters" if minimum > 1 else ""))
            return ""
        return value

    def certificates(self, values: object, name: str) -> tuple[x509.Certificate, ...]:
        if values is None:
            return ()
        if not isinstance(values, list):
            self.fail(name, "a list of certificate files")
            return ()
        found: list[x509.Certificate] = []
        for index, item in enumerate(values):
            try:
                found += load_certificates(self.base / str(item))
            except (KeyLoadError, OSError, ValueError) as exc:
                self.fail(f"{name}[{index}]", str(exc))
        return tuple(found)

    def folder(self, value: object, name: str) -> Path | None:
        if value is None:
            return None
        path = self.base / str(value)
        if not path.exists():
            self.fail(name, f"{path} does not exist")
        return path


def parse_settings(table: dict[str, Any], *, where: str = "settings", base: Path | None = None) -> OperatorSettings:
    """Check the ``operator`` table."""
    check = _Checker(where, base or Path.cwd())
    known = {"id", "name", "host", "port", "database", "mailboxes", "keys", "access_point", "trust", "tokens"}
    known.add("soap_max_size")
    for key in sorted(set(table) - known):
        check.fail(key, "unknown setting")
    operator_id = check.string(table, "id", "id")
    name = check.string(table, "name", "name")
    port = table.get("port", 8480)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        check.fail("port", "a TCP port (0 to 65535)")
    database = str(table.get("database", "sqlite+aiosqlite:///mailbox.db"))
    prefix = "sqlite+aiosqlite:///"
    if database.startswith(prefix) and not database.startswith(prefix + "/") and ":memory:" not in database:
        database = prefix + str((check.base / database[len(prefix) :]).resolve())
    mailboxes = table.get("mailboxes", [])
    if not isinstance(mailboxes, list) or not all(isinstance(m, str) and m for m in mailboxes):
        check.fail("mailboxes", "a list of recipient identifiers")
        mailboxes = []
    keys_table = table.get("keys")
    keys: KeyPair | None = None
    if not isinstance(keys_table, dict) or "key" not in keys_table or "certificate" not in keys_table:
        check.fail("keys", "required: {key, certificate, password?}")
    else:
        password = keys_table.get("password")
        try:
            keys = load_key_pair(
                check.base / str(keys_table["key"]),
                None if password is None else str(password).encode(),
                certificate=check.base / str(keys_table["certificate"]),
            )
        except KeyLoadError as exc:
            check.fail("keys", str(exc))
    link_table = table.get("access_point")
    link: AccessPointLink | None = None
    if not isinstance(link_table, dict):
        check.fail("access_point", "required: {url, token, webhook_secret, poll_interval?}")
    else:
        url = check.string(link_table, "url", "access_point.url")
        if url and not url.startswith(("http://", "https://")):
            check.fail("access_point.url", f"{url!r} is not an http(s) URL")
        token = check.string(link_table, "token", "access_point.token", minimum=MIN_SECRET)
        secret = check.string(link_table, "webhook_secret", "access_point.webhook_secret", minimum=MIN_SECRET)
        interval = _duration(link_table.get("poll_interval", "5s"))
        if interval is None:
            check.fail("access_point.poll_interval", "a duration like 500ms, 5s or 1m")
        reply_pmode = link_table.get("reply_pmode")
        if reply_pmode is not None and not (isinstance(reply_pmode, str) and reply_pmode):
            check.fail("access_point.reply_pmode", "a P-Mode id")
            reply_pmode = None
        link = AccessPointLink(url.rstrip("/"), token, secret, interval or timedelta(seconds=5), reply_pmode)
    trust = table.get("trust") or {}
    if not isinstance(trust, dict):
        check.fail("trust", "a table")
        trust = {}
    tokens: list[ApiToken] = []
    token_items = table.get("tokens", [])
    for index, item in enumerate(token_items if isinstance(token_items, list) else [None]):
        if not isinstance(item, dict):
            check.fail(f"tokens[{index}]", "a table {token, recipients}")
            continue
        secret = check.string(item, "token", f"tokens[{index}].token", minimum=MIN_SECRET)
        recipients = item.get("recipients", ["*"])
        if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
            check.fail(f"tokens[{index}].recipients", "a list of recipient identifiers, or ['*']")
            recipients = []
        tokens.append(ApiToken(secret, frozenset(recipients)))
    intermediaries = check.certificates(trust.get("intermediaries"), "trust.intermediaries")
    anchors = check.certificates(trust.get("sender_anchors"), "trust.sender_anchors")
    contracts = check.folder(trust.get("minameddelanden_contracts"), "trust.minameddelanden_contracts")
    xhe_schema = check.folder(trust.get("xhe_schema"), "trust.xhe_schema")
    soap_max_size = table.get("soap_max_size", SOAP_MAX_SIZE)
    if not isinstance(soap_max_size, int) or isinstance(soap_max_size, bool) or soap_max_size < 1:
        check.fail("soap_max_size", "a positive number of bytes")
    if check.problems or keys is None or link is None:
        raise SettingsError(check.problems)
    return OperatorSettings(
        id=operator_id,
        name=name,
        keys=keys,
        access_point=link,
        host=str(table.get("host", "127.0.0.1")),
        port=port,
        database=database,
        mailboxes=tuple(mailboxes),
        tokens=tuple(tokens),
        intermediaries=intermediaries,
        sender_anchors=anchors,
        minameddelanden_contracts=contracts,
        xhe_schema=xhe_schema,
        soap_max_size=soap_max_size,
    )
