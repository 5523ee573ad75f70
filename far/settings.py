"""FaR's settings: a frozen dataclass loaded from a TOML file, every problem reported with its field path.

```toml
[far]
database = "sqlite+aiosqlite:///far.db"   # or postgresql+asyncpg://user@host/db
host = "127.0.0.1"
port = 8470
check_digits = true      # false: accept schema-valid numbers that fail the Luhn check (some test data)

[[far.tokens]]           # bearer tokens of the REST API (the SOAP endpoint relies on mutual TLS in front)
name = "registry-admin"  # recorded as the actor in the audit table
token = "…"              # at least 16 characters
scopes = ["read", "write"]
```

A relative SQLite path is taken relative to the configuration file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from far.identifiers import Policy

DEFAULT_DATABASE = "sqlite+aiosqlite:///far.db"
SCOPES = frozenset({"read", "write"})
MIN_TOKEN_LENGTH = 16


class SettingsError(ValueError):
    """A configuration that cannot be used; ``problems`` lists each as ``file: field: what``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Token:
    """A REST API bearer token: who it is (the audit actor), the secret, and what it may do."""

    name: str
    token: str = field(repr=False)
    scopes: frozenset[str] = SCOPES


@dataclass(frozen=True)
class FarSettings:
    """Where FaR keeps its data, where it listens, how strictly it checks identifiers, and who may call it."""

    database: str = DEFAULT_DATABASE
    host: str = "127.0.0.1"
    port: int = 8470
    check_digits: bool = True
    tokens: tuple[Token, ...] = ()

    @property
    def policy(self) -> Policy:
        """The identifier policy these settings ask for."""
        return Policy(check_digits=self.check_digits)


def _sqlite_relative(url: str, base: Path) -> str:
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base / url[len(prefix) :]).resolve())
    return url


def load_settings(path: Path) -> FarSettings:
    """Read and check a settings file; raise SettingsError listing every problem."""
    where = str(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError([f"{where}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"{where}: not TOML: {exc}"]) from None
    return parse_settings(document.get("far", {}), where=where, base=path.parent)


def parse_settings(table: Any, *, where: str = "settings", base: Path | None = None) -> FarSettings:
    """Check the ``[far]`` table of a settings document."""
    problems: list[str] = []
    if not isinstance(table, dict):
        raise SettingsError([f"{where}: far: must be a table"])
    known = {"database", "host", "port", "check_digits", "tokens"}
    problems += [f"{where}: far.{key}: unknown setting" for key in sorted(set(table) - known)]
    values: dict[str, Any] = {}
    for key, kind in (("database", str), ("host", str), ("port", int), ("check_digits", bool)):
        if key in table:
            value = table[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                problems.append(f"{where}: far.{key}: must be a {kind.__name__}")
            else:
                values[key] = value
    if "port" in values and not 0 <= values["port"] <= 65535:
        problems.append(f"{where}: far.port: must be 0 to 65535")
    if "database" in values and base is not None:
        values["database"] = _sqlite_relative(values["database"], base)
    values["tokens"] = tuple(_tokens(table.get("tokens", []), where, problems))
    if problems:
        raise SettingsError(problems)
    return FarSettings(**values)


def _tokens(items: Any, where: str, problems: list[str]) -> list[Token]:
    if not isinstance(items, list):
        problems.append(f"{where}: far.tokens: must be an array of tables")
        return []
    tokens = []
    for index, item in enumerate(items):
        at = f"{where}: far.tokens[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{at}: must be a table")
            continue
        problems += [f"{at}.{key}: unknown setting" for key in sorted(set(item) - {"name", "token", "scopes"})]
        name, secret, scopes = item.get("name"), item.get("token"), item.get("scopes", sorted(SCOPES))
        if not isinstance(name, str) or not name:
            problems.append(f"{at}.name: required, a string")
        if not isinstance(secret, str) or len(secret) < MIN_TOKEN_LENGTH:
            problems.append(f"{at}.token: required, a string of at least {MIN_TOKEN_LENGTH} characters")
        if not isinstance(scopes, list) or not set(scopes) <= SCOPES:
            problems.append(f"{at}.scopes: a list among {sorted(SCOPES)}")
        elif isinstance(name, str) and name and isinstance(secret, str) and len(secret) >= MIN_TOKEN_LENGTH:
            tokens.append(Token(name, secret, frozenset(scopes)))
    return tokens
