"""Settings files for every service: read TOML or YAML, check each field, report every mistake at once.

A service reads its section through typed readers that record a mistake and carry on with the default, so one
run names every mistake (``file: far.port: must be 0 to 65535``), then :meth:`SettingsReader.done` raises
:class:`SettingsError` listing them all::

    reader = SettingsReader(base=path.parent)
    far = reader.section(read_document(path).get("far"), f"{path}: far", known={"host", "port"})
    settings = FarSettings(host=far.string("host", "127.0.0.1"), port=far.port("port", 8470))
    reader.done()

Durations and sizes follow :mod:`accesspoint.servicekit.units`; tokens :mod:`accesspoint.servicekit.tokens`;
relative paths (and relative SQLite database paths) are taken from the settings file's folder.
"""

from __future__ import annotations

import ssl
import tomllib
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from accesspoint.servicekit.tls import VERSIONS, TlsSettings
from accesspoint.servicekit.tokens import MIN_TOKEN_LENGTH, TOKEN_CHARACTERS, BearerToken, Scope
from accesspoint.servicekit.units import parse_duration, parse_size

_Choice = TypeVar("_Choice")
_Parsed = TypeVar("_Parsed", int, timedelta)


class SettingsError(ValueError):
    """A configuration that cannot be used; ``problems`` lists each mistake as ``file: field: what``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def read_document(path: Path) -> dict[str, Any]:
    """A settings file as a mapping: TOML for ``.toml``, YAML (JSON included) otherwise."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise SettingsError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise SettingsError([f"{path}: not UTF-8: {exc.reason}"]) from None
    toml = path.suffix.lower() == ".toml"
    try:
        document = tomllib.loads(text) if toml else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise SettingsError([f"{path}: not valid {'TOML' if toml else 'YAML'}: {exc}"]) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise SettingsError([f"{path}: the top level must be a mapping"])
    return document


class SettingsReader:
    """Collects the mistakes of one settings file; relative paths are taken from ``base``."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = base or Path.cwd()
        self.mistakes: list[str] = []

    def mistake(self, field: str, what: str) -> None:
        """Record that ``field`` (its full name, ``file: section.key``) is wrong and why."""
        self.mistakes.append(f"{field}: {what}")

    def section(
        self, value: object, path: str, *, known: Collection[str] | None = None, required: bool = False
    ) -> Section:
        """A mapping named ``path`` (``file: far``); unknown keys are mistakes when ``known`` is given."""
        if value is None:
            if required:
                self.mistake(path, "required, a table")
            return Section(self, path, {})
        if not isinstance(value, dict):
            self.mistake(path, "must be a table")
            return Section(self, path, {})
        section = Section(self, path, value)
        if known is not None:
            for key in sorted(set(value) - set(known), key=str):
                self.mistake(section.field(str(key)), f"unknown setting (known: {', '.join(sorted(known))})")
        return section

    def done(self) -> None:
        """Raise SettingsError naming every mistake found, if any."""
        if self.mistakes:
            raise SettingsError(list(self.mistakes))


class Section:
    """One table of a settings file and typed readers for its keys (each records its mistakes)."""

    def __init__(self, reader: SettingsReader, name: str, values: dict[str, Any]) -> None:
        self.reader = reader
        self.name = name  # the full name, "file: far"
        self.values = values

    # ------------------------------------------------------------------------------------------- basics

    def field(self, key: str) -> str:
        """The full name of a key: ``file: far.port``; a section named as a prefix (ending in a space or a colon,
        ``file: field `` for a file whose top level is the settings) takes the key as it is."""
        return f"{self.name}{key}" if self.name.endswith((" ", ":")) else f"{self.name}.{key}"

    def has(self, key: str) -> bool:
        """Whether the key is set (a YAML null counts as not set)."""
        return self.values.get(key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value, unchecked."""
        value = self.values.get(key)
        return default if value is None else value

    def mistake(self, key: str, what: str) -> None:
        """Record that ``key`` is wrong and why."""
        self.reader.mistake(self.field(key), what)

    def section(self, key: str, *, known: Collection[str] | None = None, required: bool = False) -> Section:
        """A nested table (empty when absent)."""
        return self.reader.section(self.values.get(key), self.field(key), known=known, required=required)

    def sections(self, key: str, *, known: Collection[str] | None = None) -> list[Section]:
        """An array of tables (``[[far.tokens]]``); each item is a section named ``key[index]``."""
        items = self.values.get(key)
        if items is None:
            return []
        if not isinstance(items, list):
            self.mistake(key, "must be an array of tables")
            return []
        return [
            self.reader.section(item, f"{self.field(key)}[{index}]", known=known, required=True)
            for index, item in enumerate(items)
        ]

    # --------------------------------------------------------------------------------------- scalars

    def string(self, key: str, default: str = "", *, required: bool = False, min_length: int = 0) -> str:
        """A string (at least ``min_length`` characters; required ones at least one)."""
        value = self.values.get(key)
        if value is None:
            if required:
                self.mistake(key, "required, a string" + (f" of at least {min_length} characters" * (min_length > 1)))
            return default
        shortest = max(min_length, 1 if required else 0)
        if not isinstance(value, str) or len(value) < shortest:
            self.mistake(key, "must be a string" + (f" of at least {shortest} characters" * (shortest > 1)))
            return default
        return value

    def optional_string(self, key: str) -> str | None:
        """A non-empty string, or None when absent."""
        if not self.has(key):
            return None
        return self.string(key, required=True) or None

    def integer(self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        """An integer within the bounds given."""
        value = self.values.get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            self.mistake(key, "must be an integer")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"{minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            self.mistake(key, f"must be {bounds}")
            return default
        return value

    def port(self, key: str, default: int) -> int:
        """A TCP port (0: any free one)."""
        return self.integer(key, default, minimum=0, maximum=65535)

    def boolean(self, key: str, default: bool) -> bool:
        """true or false."""
        value = self.values.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.mistake(key, "must be true or false")
            return default
        return value

    def duration(self, key: str, default: str | timedelta, *, positive: bool = False) -> timedelta:
        """A duration (``30s``, ``5m``, ``1h30m``, ``PT5M``, seconds as a number)."""
        fallback = default if isinstance(default, timedelta) else parse_duration(default)
        return self._parsed(key, parse_duration, fallback, timedelta(0) if positive else None, "longer than zero")

    def size(self, key: str, default: int | str, *, positive: bool = False) -> int:
        """A size in bytes (``64MiB``, ``1GB``, bytes as a number)."""
        return self._parsed(key, parse_size, parse_size(default), 0 if positive else None, "more than zero bytes")

    def _parsed(
        self, key: str, parse: Callable[[object], _Parsed], fallback: _Parsed, above: _Parsed | None, what: str
    ) -> _Parsed:
        value = self.values.get(key)
        if value is None:
            return fallback
        try:
            parsed = parse(value)
        except ValueError as exc:
            self.mistake(key, str(exc))
            return fallback
        if above is not None and not parsed > above:
            self.mistake(key, f"{value!r} must be {what}")
            return fallback
        return parsed

    def choice(self, key: str, default: _Choice, options: Mapping[str, _Choice]) -> _Choice:
        """One of ``options`` by its name."""
        value = self.values.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or value not in options:
            self.mistake(key, f"{value!r} is not one of {', '.join(options)}")
            return default
        return options[value]

    def strings(self, key: str, default: tuple[str, ...] = (), *, what: str = "strings") -> tuple[str, ...]:
        """A list of non-empty strings."""
        value = self.values.get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.mistake(key, f"must be a list of {what}")
            return default
        return tuple(value)

    def url(self, key: str, *, required: bool = False, schemes: Collection[str] = ("http", "https")) -> str | None:
        """An absolute URL with one of ``schemes`` and a host."""
        value = self.values.get(key)
        if value is None:
            if required:
                self.mistake(key, f"required, a {'/'.join(schemes)} URL")
            return None
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in schemes or not parts.hostname:
            self.mistake(key, f"{value!r} is not a {'/'.join(schemes)} URL with a host")
            return None
        return str(value)

    def path(self, key: str, *, required: bool = False, exists: bool = True) -> Path | None:
        """A path relative to the settings file's folder (which must exist unless ``exists`` is False)."""
        value = self.values.get(key)
        if value is None:
            if required:
                self.mistake(key, "required, a path")
            return None
        if not isinstance(value, str) or not value:
            self.mistake(key, "must be a path")
            return None
        path = self.reader.base / value
        if exists and not path.exists():
            self.mistake(key, f"{path} does not exist")
            return None
        return path

    def database(self, key: str, default: str) -> str:
        """A SQLAlchemy database URL; a relative SQLite path is taken from the settings file's folder."""
        return sqlite_relative(self.string(key, default, min_length=1), self.reader.base)

    # ---------------------------------------------------------------------------------------- tokens, TLS

    def tokens(
        self,
        key: str,
        *,
        actions: Collection[str],
        kinds: Collection[str] = (),
        default_scopes: Collection[str] | None = None,
        names: bool = True,
    ) -> tuple[BearerToken, ...]:
        """Bearer tokens: a list of secrets (every action), or of tables ``{name, token, scopes}``.

        ``scopes`` are among ``actions``, narrowed only by ``kinds`` (:mod:`accesspoint.servicekit.tokens`);
        left out, a table gets ``default_scopes`` (else every action). ``names``: a table must name its holder.
        """
        items = self.values.get(key)
        if items is None:
            return ()
        if not isinstance(items, list):
            self.mistake(key, "must be a list of secrets or of tables {name, token, scopes}")
            return ()
        every = sorted(actions) if default_scopes is None else sorted(default_scopes)
        found: list[BearerToken] = []
        for index, item in enumerate(items):
            at = f"{key}[{index}]"
            if isinstance(item, str):
                if self._secret(at, item):
                    found.append(BearerToken(at, item, frozenset(Scope(a) for a in every)))
                continue
            entry = self.reader.section(item, self.field(at), known={"name", "token", "scopes"}, required=True)
            if not isinstance(item, dict):
                continue
            name = entry.string("name", required=names) or at
            secret = entry.values.get("token")
            ok = self._secret(f"{at}.token", secret)
            granted = self._scopes(entry, entry.get("scopes", every), actions, kinds)
            if ok and granted is not None and isinstance(secret, str):
                found.append(BearerToken(name, secret, granted))
        secrets_seen: dict[str, int] = {}
        for index, token in enumerate(found):
            if token.secret in secrets_seen:
                self.mistake(key, f"entries {secrets_seen[token.secret]} and {index} have the same token")
            secrets_seen.setdefault(token.secret, index)
        return tuple(found)

    def secret(self, key: str, *, required: bool = False) -> str | None:
        """A shared secret of at least 16 visible ASCII characters (a bearer token to present, say)."""
        value = self.values.get(key)
        if value is None and not required:
            return None
        return value if self._secret(key, value) and isinstance(value, str) else None

    def _secret(self, key: str, value: object) -> bool:
        if not isinstance(value, str) or len(value) < MIN_TOKEN_LENGTH:
            self.mistake(key, f"required, a secret of at least {MIN_TOKEN_LENGTH} characters")
            return False
        if TOKEN_CHARACTERS.match(value) is None:
            # An Authorization header carries visible ASCII unchanged; a space or a non-ASCII letter never matches.
            self.mistake(key, "only visible ASCII characters (no spaces)")
            return False
        return True

    def _scopes(
        self, entry: Section, value: object, actions: Collection[str], kinds: Collection[str]
    ) -> frozenset[Scope] | None:
        allowed = sorted(actions) + [f"{a}:{k}=…" for a in sorted(actions) for k in sorted(kinds)]
        if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
            entry.mistake("scopes", f"a non-empty list among {allowed}")
            return None
        try:
            parsed = frozenset(Scope.parse(text) for text in value)
        except ValueError as exc:
            entry.mistake("scopes", str(exc))
            return None
        wrong = [str(s) for s in sorted(parsed, key=str) if s.action not in actions or s.kind not in (None, *kinds)]
        if wrong:
            entry.mistake("scopes", f"{wrong[0]!r} is not among {allowed}")
            return None
        return parsed

    def tls(self, key: str, *, client_ca: bool = True) -> TlsSettings | None:
        """``{certificate, key, client_ca?, min_version?, max_version?, ciphers?}``, loaded as the server will."""
        if not self.has(key):
            return None
        names = {"certificate", "key", "min_version", "max_version", "ciphers", *(["client_ca"] if client_ca else [])}
        table = self.section(key, known=names)
        certificate, private_key = table.path("certificate", required=True), table.path("key", required=True)
        authority = table.path("client_ca") if client_ca else None
        minimum = table.choice("min_version", ssl.TLSVersion.TLSv1_2, VERSIONS)
        maximum = table.choice("max_version", None, VERSIONS)
        if maximum is not None and maximum < minimum:
            table.mistake("max_version", f"{table.get('max_version')!r} is below min_version")
        ciphers = table.optional_string("ciphers")
        # Loaded here as the server will load them, so a wrong file or cipher list stops the start rather than the
        # first handshake.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if ciphers is not None:
            try:
                context.set_ciphers(ciphers)
            except ssl.SSLError:
                table.mistake("ciphers", f"OpenSSL knows none of the ciphers in {ciphers!r}")
        if certificate is None or private_key is None:
            return None
        try:
            context.load_cert_chain(certificate, private_key, password=_no_password)
        except ssl.SSLError as exc:
            table.mistake("key", f"{private_key} is not the unencrypted private key of {certificate} ({exc.reason})")
        if authority is not None:
            try:
                context.load_verify_locations(cafile=authority)
            except ssl.SSLError as exc:
                table.mistake("client_ca", f"{authority} holds no CA certificate OpenSSL can read ({exc.reason})")
        return TlsSettings(certificate, private_key, authority, minimum, maximum, ciphers)


def _no_password() -> bytes:
    # Keeps OpenSSL from prompting on the terminal for the password of an encrypted key.
    return b""


def sqlite_relative(url: str, base: Path) -> str:
    """A SQLite URL whose relative file path is taken from ``base``; any other URL unchanged."""
    scheme, sep, rest = url.partition(":///")
    if not sep or scheme.split("+")[0] != "sqlite":
        return url
    path, query_sep, query = rest.partition("?")
    if not path or path.startswith("/") or path == ":memory:":
        return url
    return f"{scheme}:///{(base / path).resolve()}{query_sep}{query}"
