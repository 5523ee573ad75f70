"""The server's settings: one YAML or TOML file, typed and validated on load (errors name the file and field).

Paths are relative to the settings file. Everything but ``pmodes`` and ``keys`` has a default::

    listen: {host: 0.0.0.0, port: 8443}
    pmodes: pmodes.yaml
    keys: {signing: [{key: sign.key.pem, certificate: sign.pem}], decryption: [...]}
    storage: data                      # database (SQLite by default), payload files, webhook outbox
    database: postgresql+asyncpg://... # optional; redis: redis://... shares the send queue
    api_tokens: [a-secret-of-16-chars-or-more]
    send: {workers: 4, timeout: 30s, lease: 2m}
    pull: {interval: 5s}               # how often to pull from partners whose legs are pull
    retention: {interval: 1h}          # how often to purge; how long to keep is each P-Mode's retention
    tls: {certificate: tls.pem, key: tls.key, client_ca: clients-ca.pem}  # client_ca: client certs required
    tls_trust: partners-ca.pem         # the CAs the sender trusts for HTTPS (else the system's)
    tls_client: {certificate: c.pem, key: c.key}  # what the sender presents (else tls's)
    durability: power-loss             # or process-crash: survives kill -9 of the process, not a power cut
    webhooks:
      - {url: https://backend/hook, events: [message-received, receipt, error], secret: ..., backoff: 5s}
    discovery: {zone: sml.example, dns: 127.0.0.1:53, scheme: peppol, smp_trust: smp-ca.pem}  # dynamic partners
    routing: {far: http://far:8470, token: ..., pmodes: [...]}  # the router (accesspoint/routing/settings.py)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from accesspoint.routing.settings import RoutingSettings, parse_discovery, parse_routing
from accesspoint.security.algorithms import SignatureAlgorithm
from accesspoint.security.keys import KeyLoadError, KeyPair, load_key_pair
from accesspoint.security.policy import SecurityPolicy
from accesspoint.store.db import Durability
from smp.client import DiscoverySettings


class ConfigError(ValueError):
    """A settings file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """This access point's keys: signing keys per algorithm family (1.15 RSA, 2.0 Ed25519) and decryption keys."""

    signing: tuple[KeyPair, ...]
    decryption: tuple[KeyPair, ...] = ()

    def signing_key(self, policy: SecurityPolicy | None = None) -> KeyPair:
        """The signing key that suits the policy's signature algorithm (the first one when no policy is given)."""
        if policy is None:
            return self.signing[0]
        for pair in self.signing:
            if _suits(pair, policy.signature_algorithm):
                return pair
        raise ConfigError(f"no signing key for {policy.signature_algorithm.value}")

    def decryption_keys(self) -> tuple[KeyPair, ...]:
        """Every key that may decrypt: the decryption keys, then the RSA signing keys (1.15 uses one for both)."""
        return self.decryption + tuple(p for p in self.signing if isinstance(p.private_key, rsa.RSAPrivateKey))


def _suits(pair: KeyPair, algorithm: SignatureAlgorithm) -> bool:
    key = pair.private_key
    if algorithm is SignatureAlgorithm.ED25519:
        return isinstance(key, ed25519.Ed25519PrivateKey)
    if "ecdsa" in algorithm.value:
        return isinstance(key, ec.EllipticCurvePrivateKey)
    return isinstance(key, rsa.RSAPrivateKey)


class WebhookEvent(StrEnum):
    """What a webhook can be told about."""

    MESSAGE_RECEIVED = "message-received"
    RECEIPT = "receipt"
    ERROR = "error"
    END_TO_END_RECEIPT = "end-to-end-receipt"  # the recipient's operator's verified answer to a sent message


@dataclass(frozen=True, slots=True)
class Webhook:
    """A backend URL that gets a JSON event, signed with HMAC-SHA256 under its secret, for each chosen event."""

    url: str
    events: frozenset[WebhookEvent]
    secret: str
    backoff: timedelta = timedelta(seconds=5)  # first retry; doubles up to backoff_max
    backoff_max: timedelta = timedelta(minutes=10)
    max_attempts: int = 50


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The server's TLS certificate and key; with client_ca, clients must present a certificate it issued."""

    certificate: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``accesspoint serve`` needs; paths are resolved relative to the settings file."""

    file: Path
    host: str
    port: int
    pmodes: Path
    database_url: str
    storage: Path
    keys: KeyRing
    api_tokens: tuple[str, ...]
    instance: str = "ap"
    redis_url: str | None = None
    send_workers: int = 4
    send_timeout: timedelta = timedelta(seconds=30)
    lease: timedelta = timedelta(minutes=2)
    durability: Durability = Durability.POWER_LOSS  # what a committed message survives (store/db.py)
    max_message_size: int = 2 * 1024**3
    revocation: bool = True
    evidence_retention: timedelta = timedelta(days=3650)
    pull_interval: timedelta = timedelta(seconds=5)
    webhooks: tuple[Webhook, ...] = ()
    tls: TlsConfig | None = None
    tls_trust: Path | None = None  # CA bundle the sender trusts for HTTPS (else the system's)
    tls_client: TlsConfig | None = None  # certificate the sender presents (else tls's, when configured)
    purge_interval: timedelta = timedelta(hours=1)
    discovery: DiscoverySettings | None = None  # dynamic partners: BDXL + SMP (accesspoint/routing/settings.py)
    routing: RoutingSettings | None = None  # the router: FaR, routed P-Modes, forwarding
    # end_to_end.operators: operators whose signed answers count (besides the P-Modes' party certificates)
    operator_certificates: tuple[x509.Certificate, ...] = ()


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: object, where: str) -> timedelta:
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value).strip())
    if match is None:
        raise ConfigError(f"{where}: {value!r} is not a duration like 30s, 5m, 2h or 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _durability(value: object, where: str) -> Durability:
    try:
        return Durability(str(value))
    except ValueError:
        known = ", ".join(d.value for d in Durability)
        raise ConfigError(f"{where}: {value!r} (known: {known})") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _key_pair(base: Path, entry: object, where: str) -> KeyPair:
    if not isinstance(entry, dict) or "key" not in entry:
        raise ConfigError(f"{where}: expected {{key: FILE, certificate: FILE, password: ...}}")
    password = entry.get("password")
    certificate = entry.get("certificate")
    try:
        return load_key_pair(
            base / str(entry["key"]),
            None if password is None else str(password).encode(),
            certificate=None if certificate is None else base / str(certificate),
        )
    except KeyLoadError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | Path) -> ServerConfig:
    """Read and validate a settings file; ConfigError names the file and field of the first mistake."""
    file = Path(path).resolve()
    data = _read(file)
    base = file.parent
    known = {
        "listen", "pmodes", "database", "storage", "keys", "api_tokens", "instance", "redis", "send", "durability",
        "max_message_size", "revocation", "evidence_retention", "pull", "webhooks", "tls", "tls_trust",
        "tls_client", "retention", "discovery", "routing", "end_to_end",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{file}: field {unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
    listen = data.get("listen") or {}
    if not isinstance(listen, dict):
        raise ConfigError(f"{file}: field listen: expected {{host, port}}")
    port = listen.get("port", 8080)
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{file}: field listen.port: {port!r} is not a TCP port")
    if "pmodes" not in data:
        raise ConfigError(f"{file}: field pmodes: required (the P-Mode file)")
    keys = data.get("keys")
    if not isinstance(keys, dict) or "signing" not in keys:
        raise ConfigError(f"{file}: field keys.signing: required")
    entries = keys["signing"] if isinstance(keys["signing"], list) else [keys["signing"]]
    signing = tuple(_key_pair(base, entry, f"{file}: field keys.signing[{i}]") for i, entry in enumerate(entries))
    decryption = tuple(
        _key_pair(base, entry, f"{file}: field keys.decryption[{i}]")
        for i, entry in enumerate(keys.get("decryption", []))
    )
    storage = base / str(data.get("storage", "data"))
    database = str(data.get("database") or f"sqlite:///{storage / 'accesspoint.db'}")
    tokens = data.get("api_tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) and len(t) >= 16 for t in tokens):
        raise ConfigError(f"{file}: field api_tokens: a list of secrets, each at least 16 characters")
    send = data.get("send") or {}
    workers = send.get("workers", 4)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{file}: field send.workers: a positive integer")
    pull = _mapping(data.get("pull"), f"{file}: field pull")
    retention = _mapping(data.get("retention"), f"{file}: field retention")
    tls_trust = data.get("tls_trust")
    try:
        discovery = parse_discovery(base, data.get("discovery"), f"{file}: field discovery")
        routing = parse_routing(base, data.get("routing"), f"{file}: field routing")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return ServerConfig(
        file=file,
        host=str(listen.get("host", "127.0.0.1")),
        port=port,
        pmodes=base / str(data["pmodes"]),
        database_url=database,
        storage=storage,
        keys=KeyRing(signing, decryption),
        api_tokens=tuple(tokens),
        instance=str(data.get("instance", "ap")),
        redis_url=data.get("redis"),
        send_workers=workers,
        durability=_durability(data.get("durability", Durability.POWER_LOSS.value), f"{file}: field durability"),
        send_timeout=_duration(send.get("timeout", "30s"), f"{file}: field send.timeout"),
        lease=_duration(send.get("lease", "2m"), f"{file}: field send.lease"),
        max_message_size=int(data.get("max_message_size", 2 * 1024**3)),
        revocation=bool(data.get("revocation", True)),
        evidence_retention=_duration(data.get("evidence_retention", "3650d"), f"{file}: field evidence_retention"),
        pull_interval=_duration(pull.get("interval", "5s"), f"{file}: field pull.interval"),
        webhooks=_webhooks(data.get("webhooks"), f"{file}: field webhooks"),
        tls=_tls(base, data.get("tls"), f"{file}: field tls"),
        tls_trust=None if tls_trust is None else base / str(tls_trust),
        tls_client=_tls(base, data.get("tls_client"), f"{file}: field tls_client"),
        purge_interval=_duration(retention.get("interval", "1h"), f"{file}: field retention.interval"),
        discovery=discovery,
        routing=routing,
        operator_certificates=_operator_certificates(base, data.get("end_to_end"), f"{file}: field end_to_end"),
    )


def _operator_certificates(base: Path, value: object, where: str) -> tuple[x509.Certificate, ...]:
    """``end_to_end: {operators: [FILE, ...]}``: the PEM certificates of operators whose answers are verified."""
    settings = _mapping(value, where)
    if set(settings) - {"operators"}:
        raise ConfigError(f"{where}: unknown setting {sorted(set(settings) - {'operators'})[0]} (known: operators)")
    entries = settings.get("operators", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}.operators: a list of PEM certificate files")
    found: list[x509.Certificate] = []
    for index, entry in enumerate(entries):
        try:
            found.extend(x509.load_pem_x509_certificates((base / str(entry)).read_bytes()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}.operators[{index}]: {entry}: not a readable PEM certificate ({exc})") from None
    return tuple(found)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    return value


def _webhooks(value: object, where: str) -> tuple[Webhook, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of {{url, events, secret}}")
    hooks = []
    for index, entry in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ConfigError(f"{at}.url: required")
        if not entry["url"].startswith(("http://", "https://")):
            raise ConfigError(f"{at}.url: {entry['url']!r} is not an http(s) URL")
        secret = entry.get("secret")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError(f"{at}.secret: a secret of at least 16 characters")
        events = entry.get("events", [e.value for e in WebhookEvent])
        try:
            chosen = frozenset(WebhookEvent(e) for e in events)
        except (TypeError, ValueError):
            known = ", ".join(e.value for e in WebhookEvent)
            raise ConfigError(f"{at}.events: {events!r} (known: {known})") from None
        attempts = entry.get("max_attempts", 50)
        if not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"{at}.max_attempts: a positive integer")
        hooks.append(
            Webhook(
                url=entry["url"],
                events=chosen,
                secret=secret,
                backoff=_duration(entry.get("backoff", "5s"), f"{at}.backoff"),
                backoff_max=_duration(entry.get("backoff_max", "10m"), f"{at}.backoff_max"),
                max_attempts=attempts,
            )
        )
    return tuple(hooks)


def _tls(base: Path, value: object, where: str) -> TlsConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict) or "certificate" not in value or "key" not in value:
        raise ConfigError(f"{where}: expected {{certificate: FILE, key: FILE, client_ca: FILE}}")
    paths = {name: base / str(value[name]) for name in ("certificate", "key", "client_ca") if value.get(name)}
    for name, path in paths.items():
        if not path.is_file():
            raise ConfigError(f"{where}.{name}: {path} is not a file")
    return TlsConfig(paths["certificate"], paths["key"], paths.get("client_ca"))
