"""The server's settings: one YAML or TOML file, typed and validated on load (errors name the file and field).

Paths are relative to the settings file. Everything but ``pmodes`` and ``keys`` has a default::

    listen: {host: 0.0.0.0, port: 8443}
    pmodes: pmodes.yaml
    keys: {signing: [{key: sign.key.pem, certificate: sign.pem}], decryption: [...]}
    storage: data                      # database (SQLite by default), payload files, webhook outbox
    database: postgresql+asyncpg://... # optional; redis: redis://... shares the send queue (with database, instance)
    api_tokens: [a-secret-of-16-chars-or-more]
    send: {workers: 16, per_partner: 16, timeout: 30s, lease: 2m}  # per_partner: N or {min: 0, max: N}
    #     partners: {partner-115: {min: 1, max: 4}}   # a P-Mode party's own limits (by its name in the P-Modes)
    replies: {workers: 8}              # received replies (operators' answers) checked and relayed at once
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
    admin: {host: 127.0.0.1, port: 9464, tokens: [{name: prometheus, token: ..., scopes: [metrics]}]}  # /metrics
    logging: {level: info, format: json}
    tracing: {partners: false}         # true: traceparent to and from AS4 partners (OTEL_* variables export)
"""

from __future__ import annotations

import logging
import re
import ssl
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from accesspoint.msh.holder_encryption import HolderKeySource
from accesspoint.msh.holder_encryption import parse_source as parse_holder_key_source
from accesspoint.msh.limits import BodyLimits
from accesspoint.msh.send_plan import Limits
from accesspoint.routing.settings import RoutingSettings, parse_discovery, parse_routing
from accesspoint.security.algorithms import SignatureAlgorithm
from accesspoint.security.keys import KeyLoadError, KeyPair, load_key_pair
from accesspoint.security.pkcs11 import HardwareKeys, Pkcs11ConfigError, open_hardware_keys
from accesspoint.security.policy import SecurityPolicy
from accesspoint.servicekit.observability import OBSERVABILITY_KEYS, Observability, read_observability
from accesspoint.servicekit.settings import SettingsReader
from accesspoint.servicekit.tls import VERSIONS
from accesspoint.servicekit.tokens import BearerToken, Scope
from accesspoint.servicekit.units import parse_duration, parse_size
from accesspoint.store.db import Durability
from smp.client import DiscoverySettings

log = logging.getLogger("accesspoint.msh.config")
T = TypeVar("T")


SEND_WORKERS = 16  # the default of send.workers
REPLY_WORKERS = 8  # the default of replies.workers


class ConfigError(ValueError):
    """A settings file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """This access point's keys: signing keys per algorithm family (1.15 RSA, 2.0 Ed25519) and decryption keys."""

    signing: tuple[KeyPair, ...]
    decryption: tuple[KeyPair, ...] = ()
    # keys.pkcs11: keys in a token, looked up again now and then (rollover without restart); they come first.
    hardware: HardwareKeys | None = None

    def _signing(self) -> tuple[KeyPair, ...]:
        return self.signing if self.hardware is None else (*self.hardware.signing_keys(), *self.signing)

    def signing_key(self, policy: SecurityPolicy | None = None) -> KeyPair:
        """The signing key that suits the policy's signature algorithm (the first one when no policy is given)."""
        signing = self._signing()
        if policy is None:
            return signing[0]
        for pair in signing:
            if _suits(pair, policy.signature_algorithm):
                return pair
        raise ConfigError(f"no signing key for {policy.signature_algorithm.value}")

    def decryption_keys(self) -> tuple[KeyPair, ...]:
        """Every key that may decrypt: the decryption keys (a token's, checked at start, then files'), then the RSA
        signing keys in files (1.15 uses one for both; a token's signing key decrypts only when listed)."""
        hardware = () if self.hardware is None else tuple(self.hardware.decryption_keys())
        rsa_signing = tuple(p for p in self.signing if isinstance(p.private_key, rsa.RSAPrivateKey))
        return hardware + self.decryption + rsa_signing


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
    # an incoming user message was refused with an ebMS error and its P-Mode leg has error_handling.notify_consumer
    MESSAGE_REFUSED = "message-refused"
    RECEIPT = "receipt"
    ERROR = "error"
    END_TO_END_RECEIPT = "end-to-end-receipt"  # the recipient's operator's verified answer to a sent message
    MAILING_COMPLETED = "mailing-completed"  # every recipient of a mass mailing settled (msh/mailings.py)


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
    """The server's TLS certificate and key; with client_ca, clients must present a certificate it issued.

    ``min_version`` and ``ciphers`` (an OpenSSL cipher list for TLS 1.2; TLS 1.3 suites are all AEAD) narrow what
    the listening socket accepts; None keeps Python's default list (ECDHE/DHE with AES or ChaCha20, no SHA-1).
    """

    certificate: Path
    key: Path
    client_ca: Path | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    ciphers: str | None = None


JSON_SUBMISSION_LIMIT = 8 * 1024**2  # bytes: a larger JSON submission is refused (413) in favour of multipart


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
    api_tokens: tuple[BearerToken, ...]  # each with its scopes (a plain secret: every action on everything)
    instance: str = "ap"
    redis_url: str | None = None
    send_workers: int = 16
    # Replies checked (and, at a router, relayed) at once: each job mostly waits on the database, one at a time
    # held a mass mailing's signed answers to a few a second.
    reply_workers: int = REPLY_WORKERS
    # Send workers of one receiving party: kept at least (once started) and at most; send.partners by party name.
    send_per_partner: Limits = field(default_factory=lambda: Limits(0, SEND_WORKERS))
    send_partners: dict[str, Limits] = field(default_factory=dict)
    send_timeout: timedelta = timedelta(seconds=30)
    lease: timedelta = timedelta(minutes=2)
    durability: Durability = Durability.POWER_LOSS  # what a committed message survives (store/db.py)
    max_message_size: int = 2 * 1024**3
    # Messages whose parts together are larger are secured, opened and hashed in a worker thread in one hop.
    offload_threshold: int = 256 * 1024
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
    # holder_keys: where submissions that ask for encryption to the mailbox holder find the holder's key (FaR)
    holder_keys: HolderKeySource | None = None
    # limits: request bodies taken in at once (bytes, large requests), stalled bodies, JSON submissions, headers
    body_limits: BodyLimits = field(default_factory=BodyLimits)
    json_submission_limit: int = JSON_SUBMISSION_LIMIT  # larger payloads go as multipart/form-data, streamed
    header_timeout: timedelta = timedelta(seconds=15)  # a request's headers must be in within this (slowloris)
    idempotency_retention: timedelta = timedelta(days=7)  # how long a submission's answer is kept for retries
    # admin (the /metrics listener), logging (level, format), tracing (partners): servicekit.observability
    observability: Observability = field(default_factory=Observability)


def _duration(value: object, where: str) -> timedelta:
    """A positive duration in the shared grammar (30s, 5m, 1h30m, 7d, PT5M, seconds as a number)."""
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if duration <= timedelta(0):
        # A zero interval would turn the pull, purge and webhook loops into busy loops; a zero lease or timeout
        # could never let a send finish.
        raise ConfigError(f"{where}: {value!r} must be longer than zero")
    return duration


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


class _Mistakes:
    """Every mistake of a settings file, so one run of the file names all of them (as the other services do)."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def read(self, parse: Callable[[], T], fallback: T) -> T:
        """What ``parse`` gives, or ``fallback`` after noting its ConfigError."""
        try:
            return parse()
        except ConfigError as exc:
            self.found.append(str(exc))
            return fallback

    def note(self, message: str) -> None:
        self.found.append(message)


def load_config(path: str | Path) -> ServerConfig:
    """Read and validate a settings file; ConfigError names the file and field of every mistake, one a line."""
    file = Path(path).resolve()
    data = _read(file)
    base = file.parent
    mistakes = _Mistakes()
    at = f"{file}: field"
    known = {
        "listen", "pmodes", "database", "storage", "keys", "api_tokens", "instance", "redis", "send", "replies",
        "durability",
        "max_message_size", "revocation", "evidence_retention", "pull", "webhooks", "tls", "tls_trust",
        "tls_client", "retention", "discovery", "routing", "end_to_end", "offload_threshold", "limits",
        "idempotency_retention", "holder_keys", *OBSERVABILITY_KEYS,
    }  # fmt: skip
    for name in sorted(set(data) - known):
        mistakes.note(f"{at} {name}: unknown setting (known: {', '.join(sorted(known))})")
    listen: dict[str, Any] = mistakes.read(lambda: _fields(data.get("listen"), f"{at} listen", {"host", "port"}), {})
    port = listen.get("port", 8080)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        mistakes.note(f"{at} listen.port: {port!r} is not a TCP port")
        port = 8080
    if "pmodes" not in data:
        mistakes.note(f"{at} pmodes: required (the P-Mode file)")
    key_fields = {"signing", "decryption", "pkcs11"}
    keys: dict[str, Any] = mistakes.read(lambda: _fields(data.get("keys"), f"{at} keys", key_fields), {})
    if "signing" not in keys and "pkcs11" not in keys:
        mistakes.note(f"{at} keys.signing: required (or keys.pkcs11)")
    signing = _key_pairs(base, keys.get("signing", []), f"{at} keys.signing", mistakes)
    decryption = _key_pairs(base, keys.get("decryption", []), f"{at} keys.decryption", mistakes)
    hardware = mistakes.read(lambda: _hardware(base, keys.get("pkcs11"), f"{at} keys.pkcs11"), None)
    storage = base / str(data.get("storage", "data"))
    database = mistakes.read(lambda: _database(data.get("database"), f"{at} database"), None)
    tokens: tuple[BearerToken, ...] = mistakes.read(
        lambda: tuple(_api_tokens(data.get("api_tokens", []), f"{at} api_tokens")), ()
    )
    send: dict[str, Any] = mistakes.read(
        lambda: _fields(data.get("send"), f"{at} send", {"workers", "per_partner", "partners", "timeout", "lease"}), {}
    )
    workers = mistakes.read(lambda: _positive(send.get("workers", SEND_WORKERS), f"{at} send.workers"), SEND_WORKERS)
    per_partner = mistakes.read(
        lambda: _limits_of(send.get("per_partner", workers), f"{at} send.per_partner", workers), Limits(0, workers)
    )
    partners: dict[str, Limits] = mistakes.read(
        lambda: _partners(send.get("partners"), f"{at} send.partners", workers), {}
    )
    replies: dict[str, Any] = mistakes.read(lambda: _fields(data.get("replies"), f"{at} replies", {"workers"}), {})
    reply_workers = mistakes.read(
        lambda: _positive(replies.get("workers", REPLY_WORKERS), f"{at} replies.workers"), REPLY_WORKERS
    )
    pull: dict[str, Any] = mistakes.read(lambda: _fields(data.get("pull"), f"{at} pull", {"interval"}), {})
    retention: dict[str, Any] = mistakes.read(
        lambda: _fields(data.get("retention"), f"{at} retention", {"interval"}), {}
    )
    tls_trust = None if data.get("tls_trust") is None else base / str(data["tls_trust"])
    if tls_trust is not None:
        mistakes.read(lambda: _trust_bundle(tls_trust, f"{at} tls_trust"), None)
    discovery = mistakes.read(
        lambda: _routing_part(parse_discovery, base, data.get("discovery"), f"{at} discovery"), None
    )
    routing = mistakes.read(lambda: _routing_part(parse_routing, base, data.get("routing"), f"{at} routing"), None)

    def duration(value: object, field_name: str, default: str) -> timedelta:
        return mistakes.read(lambda: _duration(value, f"{at} {field_name}"), parse_duration(default))

    config = ServerConfig(
        file=file,
        host=str(listen.get("host", "127.0.0.1")),
        port=port,
        pmodes=base / str(data.get("pmodes", "pmodes.yaml")),
        database_url=database or f"sqlite:///{storage / 'accesspoint.db'}",
        storage=storage,
        keys=KeyRing(signing, decryption, hardware),
        api_tokens=tuple(tokens),
        instance=mistakes.read(lambda: _instance(data.get("instance", "ap"), f"{at} instance"), "ap"),
        redis_url=mistakes.read(lambda: _redis(data.get("redis"), f"{at} redis"), None),
        send_workers=workers,
        reply_workers=reply_workers,
        send_per_partner=per_partner,
        send_partners=partners,
        durability=mistakes.read(
            lambda: _durability(data.get("durability", Durability.POWER_LOSS.value), f"{at} durability"),
            Durability.POWER_LOSS,
        ),
        send_timeout=duration(send.get("timeout", "30s"), "send.timeout", "30s"),
        lease=duration(send.get("lease", "2m"), "send.lease", "2m"),
        max_message_size=mistakes.read(
            lambda: _size(data.get("max_message_size", 2 * 1024**3), f"{at} max_message_size"), 2 * 1024**3
        ),
        offload_threshold=mistakes.read(
            lambda: _size(data.get("offload_threshold", 256 * 1024), f"{at} offload_threshold"), 256 * 1024
        ),
        revocation=mistakes.read(lambda: _flag(data.get("revocation", True), f"{at} revocation"), True),
        evidence_retention=duration(data.get("evidence_retention", "3650d"), "evidence_retention", "3650d"),
        pull_interval=duration(pull.get("interval", "5s"), "pull.interval", "5s"),
        webhooks=mistakes.read(lambda: _webhooks(data.get("webhooks"), f"{at} webhooks"), ()),
        tls=mistakes.read(lambda: _tls(base, data.get("tls"), f"{at} tls"), None),
        tls_trust=tls_trust,
        tls_client=mistakes.read(lambda: _tls(base, data.get("tls_client"), f"{at} tls_client", client_ca=False), None),
        purge_interval=duration(retention.get("interval", "1h"), "retention.interval", "1h"),
        discovery=discovery,
        routing=routing,
        operator_certificates=mistakes.read(
            lambda: _operator_certificates(base, data.get("end_to_end"), f"{at} end_to_end"), ()
        ),
        holder_keys=mistakes.read(lambda: _holder_keys(data.get("holder_keys"), f"{at} holder_keys"), None),
        idempotency_retention=duration(data.get("idempotency_retention", "7d"), "idempotency_retention", "7d"),
        **mistakes.read(lambda: _limits(data.get("limits"), f"{at} limits"), _default_limits()),
        observability=mistakes.read(lambda: _observability(file, data), Observability()),
    )
    if not mistakes.found:
        mistakes.read(lambda: _check_together(config, data), None)
    if mistakes.found:
        raise ConfigError("\n".join(mistakes.found))
    return config


def _key_pairs(base: Path, entries: object, where: str, mistakes: _Mistakes) -> tuple[KeyPair, ...]:
    listed = entries if isinstance(entries, list) else [entries]
    found = [mistakes.read(partial(_key_pair, base, entry, f"{where}[{i}]"), None) for i, entry in enumerate(listed)]
    return tuple(pair for pair in found if pair is not None)


def _default_limits() -> dict[str, Any]:
    return {"body_limits": BodyLimits(), "json_submission_limit": JSON_SUBMISSION_LIMIT}


def _hardware(base: Path, value: object, where: str) -> HardwareKeys | None:
    try:
        return open_hardware_keys(base, value, where)
    except Pkcs11ConfigError as exc:
        raise ConfigError(str(exc)) from None


def _routing_part(parse: Callable[[Path, Any, str], T], base: Path, value: object, where: str) -> T:
    try:
        return parse(base, value, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _observability(file: Path, data: dict[str, Any]) -> Observability:
    """The admin listener, logging and tracing tables, read as every service reads them."""
    reader = SettingsReader(file.parent)
    section = reader.section({k: data[k] for k in OBSERVABILITY_KEYS if k in data}, f"{file}: field ")
    observability = read_observability(section)
    if reader.mistakes:
        raise ConfigError(reader.mistakes[0])
    return observability


def _holder_keys(value: object, where: str) -> HolderKeySource | None:
    try:
        return parse_holder_key_source(value, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _limits(value: object, where: str) -> dict[str, Any]:
    """``limits: {spool, large_requests, large_request, json_submission, header_timeout, body_timeout,
    retry_after}``: sizes as bytes or with a unit (64MiB), durations as elsewhere."""
    given = _fields(
        value, where,
        {"spool", "large_requests", "large_request", "json_submission", "header_timeout", "body_timeout",
         "retry_after"},
    )  # fmt: skip
    defaults = BodyLimits()

    def size(name: str, default: int) -> int:
        return _size(given.get(name, default), f"{where}.{name}")

    large_requests = given.get("large_requests", defaults.max_large)
    if isinstance(large_requests, bool) or not isinstance(large_requests, int) or large_requests < 1:
        raise ConfigError(f"{where}.large_requests: {large_requests!r} is not a positive integer")
    limits = BodyLimits(
        max_bytes=size("spool", defaults.max_bytes),
        max_large=large_requests,
        large=size("large_request", defaults.large),
        retry_after=_duration(given.get("retry_after", "10s"), f"{where}.retry_after"),
        idle_timeout=_duration(given.get("body_timeout", "60s"), f"{where}.body_timeout"),
    )
    return {
        "body_limits": limits,
        "json_submission_limit": size("json_submission", JSON_SUBMISSION_LIMIT),
        "header_timeout": _duration(given.get("header_timeout", "15s"), f"{where}.header_timeout"),
    }


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


def _check_together(config: ServerConfig, data: dict[str, Any]) -> None:
    """The rules that tie one setting to another; each error names the field to change."""
    file = config.file
    if config.send_timeout >= config.lease:
        # A worker holds a message for one lease; a send still running when it runs out is taken over by
        # another worker (or instance), which sends the message a second time while the first is still at it.
        raise ConfigError(
            f"{file}: field send.timeout: {_seconds(config.send_timeout)} is not shorter than send.lease "
            f"({_seconds(config.lease)}): a send could outlast its lease and another worker would take the message "
            "over mid-send"
        )
    if config.redis_url is not None:
        # Instances sharing the Redis queue take over each other's messages: whichever claims one must find its
        # row in the same database and its payload files in the same storage folder; SQLite is one host's file.
        if make_url(config.database_url).get_backend_name() != "postgresql":
            raise ConfigError(
                f"{file}: field database: instances sharing a Redis queue must share the database: set database to "
                "the PostgreSQL URL they all use (and storage to the folder they all mount)"
            )
        if "instance" not in data:
            raise ConfigError(
                f"{file}: field instance: required with redis: each instance sharing the queue needs a name of its "
                "own (its Redis consumer and the owner of the leases it takes)"
            )
    if config.body_limits.max_bytes < config.max_message_size:
        raise ConfigError(
            f"{file}: field limits.spool: {config.body_limits.max_bytes} bytes cannot take in one message of "
            f"max_message_size ({config.max_message_size} bytes): raise limits.spool or lower max_message_size"
        )
    if not config.api_tokens:
        log.warning("%s: no api_tokens: the backend API (/api/v1) refuses every request", file)


def _seconds(duration: timedelta) -> str:
    return f"{duration.total_seconds():g}s"


def _fields(value: object, where: str, known: set[str]) -> dict[str, Any]:
    """A mapping with only the known fields (a misspelt one would otherwise be silently left at its default)."""
    mapping = _mapping(value, where)
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
    return mapping


def _database(value: object, where: str) -> str | None:
    """A SQLAlchemy URL of SQLite or PostgreSQL, or None for the default (SQLite under storage)."""
    if value is None:
        return None
    try:
        backend = make_url(str(value)).get_backend_name()
    except ArgumentError:
        raise ConfigError(f"{where}: {value!r} is not a database URL (sqlite:///FILE or postgresql://...)") from None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"{where}: {backend} is not supported (sqlite or postgresql)")
    return str(value)


def _redis(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{where}: {value!r} is not a Redis URL (redis://, rediss:// or unix://)")
    return value


_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: what an Authorization header carries unchanged


def _instance(value: object, where: str) -> str:
    if not isinstance(value, str) or _INSTANCE.match(value) is None:
        raise ConfigError(f"{where}: {value!r} is not a name of 1-64 letters, digits, '.', '_' or '-'")
    return value


API_ACTIONS = ("submit", "read", "acknowledge")
API_RESOURCES = ("pmode", "party")  # what a scope may narrow an action to: a P-Mode id, a From or To party


def _api_tokens(value: object, where: str) -> tuple[BearerToken, ...]:
    """Secrets (every action on every message), or ``{token, name, scopes}`` where each scope is ``action`` or
    ``action:pmode=<id>`` / ``action:party=<type::value>`` (servicekit's scopes; actions submit, read, acknowledge)."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: a list of secrets, each at least 16 characters")
    tokens: list[BearerToken] = []
    for index, entry in enumerate(value):
        at = f"{where}[{index}]"
        name, secret, scopes = f"api_tokens[{index}]", entry, list(API_ACTIONS)
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"token", "name", "scopes"})
            if unknown:
                raise ConfigError(f"{at}.{unknown[0]}: unknown setting (known: name, scopes, token)")
            secret, name, scopes = entry.get("token"), str(entry.get("name", name)), entry.get("scopes", scopes)
            if not isinstance(scopes, list) or not scopes:
                raise ConfigError(f"{at}.scopes: a list of scopes like submit, read:pmode=<id>, read:party=<id>")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError(f"{at}: a secret of at least 16 characters")
        if _TOKEN.match(secret) is None:
            # The server strips the header's whitespace: a token with a space or a non-ASCII letter never matches.
            raise ConfigError(f"{at}: only visible ASCII characters (no spaces)")
        tokens.append(BearerToken(name, secret, frozenset(_scope(text, f"{at}.scopes") for text in scopes)))
    return tuple(tokens)


def _scope(text: object, where: str) -> Scope:
    try:
        scope = Scope.parse(str(text))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if scope.action not in API_ACTIONS:
        raise ConfigError(f"{where}: {scope.action!r} is no action of the API ({', '.join(API_ACTIONS)})")
    if scope.kind is not None and scope.kind not in API_RESOURCES:
        raise ConfigError(f"{where}: {scope} narrows to {scope.kind!r}; the API knows {', '.join(API_RESOURCES)}")
    return scope


def _size(value: object, where: str) -> int:
    """A positive size in the shared grammar (2GiB, 64MiB, 1GB, bytes as a number)."""
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if size < 1:
        raise ConfigError(f"{where}: {value!r} is not a positive number of bytes")
    return size


def _positive(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: a positive integer")
    return value


def _limits_of(value: object, where: str, workers: int) -> Limits:
    """``N`` (at most N at once) or ``{min: M, max: N}``; a maximum above send.workers is held to it."""
    given = {"max": value} if isinstance(value, int) and not isinstance(value, bool) else _fields(
        value, where, {"min", "max"}
    )  # fmt: skip
    if not given:
        raise ConfigError(f"{where}: a positive integer or {{min: M, max: N}}")
    maximum = _positive(given.get("max", workers), f"{where}.max" if isinstance(value, dict) else where)
    minimum = given.get("min", 0)
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
        raise ConfigError(f"{where}.min: a whole number, zero or more")
    if minimum > maximum:
        raise ConfigError(f"{where}.min: {minimum} is more than max ({maximum})")
    return Limits(min(minimum, workers), min(maximum, workers))


def _partners(value: object, where: str, workers: int) -> dict[str, Limits]:
    """``{party name: N or {min, max}}``; the minimums together must fit in send.workers."""
    given = _mapping(value, where)
    limits = {str(name): _limits_of(entry, f"{where}.{name}", workers) for name, entry in given.items()}
    kept = sum(entry.minimum for entry in limits.values())
    if kept > workers:
        raise ConfigError(f"{where}: the minimums add up to {kept}, more than send.workers ({workers})")
    return limits


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not true or false")
    return value


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
    hooks: list[Webhook] = []
    for index, entry in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ConfigError(f"{at}.url: required")
        _fields(entry, at, {"url", "events", "secret", "backoff", "backoff_max", "max_attempts"})
        url = urlsplit(entry["url"])
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"{at}.url: {entry['url']!r} is not an http(s) URL")
        earlier = [hook.url for hook in hooks]
        if entry["url"] in earlier:
            # Each webhook's outbox folder is named after its URL: two would deliver each other's events twice.
            raise ConfigError(f"{at}.url: {entry['url']!r} is already webhooks[{earlier.index(entry['url'])}]")
        secret = entry.get("secret")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError(f"{at}.secret: a secret of at least 16 characters")
        events = entry.get("events", [e.value for e in WebhookEvent])
        try:
            if not isinstance(events, list) or not events:
                raise ValueError(events)
            chosen = frozenset(WebhookEvent(e) for e in events)
        except (TypeError, ValueError):
            known = ", ".join(e.value for e in WebhookEvent)
            raise ConfigError(f"{at}.events: {events!r} (a non-empty list of: {known})") from None
        attempts = entry.get("max_attempts", 50)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"{at}.max_attempts: a positive integer")
        backoff = _duration(entry.get("backoff", "5s"), f"{at}.backoff")
        backoff_max = _duration(entry.get("backoff_max", "10m"), f"{at}.backoff_max")
        if backoff_max < backoff:
            raise ConfigError(
                f"{at}.backoff_max: {_seconds(backoff_max)} is shorter than backoff ({_seconds(backoff)}), "
                "the first retry's delay it caps"
            )
        hooks.append(
            Webhook(
                url=entry["url"],
                events=chosen,
                secret=secret,
                backoff=backoff,
                backoff_max=backoff_max,
                max_attempts=attempts,
            )
        )
    return tuple(hooks)


def _tls(base: Path, value: object, where: str, *, client_ca: bool = True) -> TlsConfig | None:
    """Certificate and key (and for the server, the clients' CA), each a file, the key the certificate's."""
    if value is None:
        return None
    names = ("certificate", "key", "client_ca") if client_ca else ("certificate", "key")
    if not isinstance(value, dict) or "certificate" not in value or "key" not in value:
        raise ConfigError(f"{where}: expected {{{', '.join(f'{n}: FILE' for n in names)}}}")
    _fields(value, where, set(names) | ({"min_version", "ciphers"} if client_ca else set()))
    paths = {name: base / str(value[name]) for name in names if value.get(name)}
    for name, path in paths.items():
        if not path.is_file():
            raise ConfigError(f"{where}.{name}: {path} is not a file")
    # Loaded here as the server and the sender will load them, so a wrong file stops the start, not the first
    # handshake. The password callback keeps OpenSSL from prompting on the terminal for an encrypted key.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(paths["certificate"], paths["key"], password=lambda: b"")
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{where}.key: {paths['key']} is not the unencrypted private key of {paths['certificate']} ({exc.reason})"
        ) from None
    if "client_ca" in paths:
        _trust_bundle(paths["client_ca"], f"{where}.client_ca")
    version = str(value.get("min_version", "1.2"))
    if version not in VERSIONS:
        raise ConfigError(f"{where}.min_version: {value['min_version']!r} (known: {', '.join(VERSIONS)})")
    ciphers = value.get("ciphers")
    if ciphers is not None:
        try:
            if not isinstance(ciphers, str):
                raise ssl.SSLError("not a string")
            context.set_ciphers(ciphers)
        except ssl.SSLError:
            raise ConfigError(f"{where}.ciphers: {ciphers!r} selects no cipher suite OpenSSL knows") from None
    return TlsConfig(paths["certificate"], paths["key"], paths.get("client_ca"), VERSIONS[version], ciphers)


def _trust_bundle(path: Path, where: str) -> None:
    """A PEM (or DER) file of CA certificates that OpenSSL accepts as trust anchors."""
    if not path.is_file():
        raise ConfigError(f"{where}: {path} is not a file")
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        raise ConfigError(f"{where}: {path} holds no CA certificate OpenSSL can read ({exc.reason})") from None
