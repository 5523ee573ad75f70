"""Typed reads of a parsed P-Mode document that record every problem with its dotted field path."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from pmode.errors import Problem

E = TypeVar("E", bound=StrEnum)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def enum_aliases(member: StrEnum) -> set[str]:
    """The spellings a file may use for an Enum member: its value (URI), URI fragment and name."""
    value = str(member.value)
    names = {value, member.name.lower(), member.name.lower().replace("_", "-")}
    if "#" in value:
        names.add(value.rsplit("#", 1)[1])
    return names


def short_name(member: StrEnum) -> str:
    """The spelling written back to files: the URI fragment when there is one, else the value."""
    value = str(member.value)
    if "#" in value:
        return value.rsplit("#", 1)[1]
    if ":" in value:
        return member.name.lower().replace("_", "-")
    return value


def parse_enum(enum: type[E], text: str) -> E | None:
    """The member a spelling names (case-insensitive), or None."""
    wanted = text.strip().casefold()
    for member in enum:
        if wanted in {alias.casefold() for alias in enum_aliases(member)}:
            return member
    return None


def parse_duration(value: object) -> timedelta | None:
    """Seconds as a number, or ``"30s"``, ``"5m"``, ``"2h"``, ``"90d"``, ``"10y"``; None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return timedelta(seconds=value) if value >= 0 else None
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"])
    return None


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration (``"90d"``, ``"5m"``, ``"1.5s"``)."""
    seconds = value.total_seconds()
    for unit in ("y", "w", "d", "h", "m", "s"):
        count = seconds / _DURATION_UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


def parse_size(value: object) -> int | None:
    """Bytes as an integer, or ``"100MB"``, ``"2GiB"``; None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and (match := _SIZE.match(value)):
        return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    return None


def _kind(value: object) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)


@dataclass
class Context:
    """Where reads happen: the file, the P-Mode being read (if any), its folder, and the problems so far."""

    file: str
    base: Path
    problems: list[Problem] = field(default_factory=list)
    pmode: str | None = None

    def error(self, path: str, message: str) -> None:
        """Record one problem at a dotted field path."""
        self.problems.append(Problem(self.file, self.pmode, path, message))

    def resolve(self, text: str) -> Path:
        """A path from the file, relative to the file's folder; ``~`` or ``~user`` is a home folder where there is
        one, else the name as written (so its load fails with the field named, not an exception)."""
        path = Path(text)
        with contextlib.suppress(RuntimeError):  # no such user, or no HOME
            path = path.expanduser()
        return path if path.is_absolute() else self.base / path


class Fields:
    """One table of the document: typed getters that record problems and know which keys were read."""

    def __init__(self, ctx: Context, value: object, path: str) -> None:
        self.ctx = ctx
        self.path = path
        if value is None:
            value = {}
        if not isinstance(value, dict):
            ctx.error(path or "(document)", f"expected a table, found {_kind(value)}")
            value = {}
        self.data: dict[str, object] = value
        self._read: set[str] = set()

    def at(self, key: str) -> str:
        """The dotted path of a key of this table."""
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        """True when the key is present."""
        return key in self.data

    def raw(self, key: str) -> object:
        """The value as parsed, or None."""
        self._read.add(key)
        return self.data.get(key)

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        """A string value (numbers are accepted and turned into strings)."""
        value = self.raw(key)
        if value is None:
            if required:
                self.ctx.error(self.at(key), "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.ctx.error(self.at(key), f"expected a string, found {_kind(value)}")
            return default
        if isinstance(value, str) and not value.strip():
            self.ctx.error(self.at(key), "must not be empty")
            return default
        return str(value).strip()

    def flag(self, key: str, default: bool) -> bool:
        """A boolean value."""
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.ctx.error(self.at(key), f"expected true or false, found {value!r}")
            return default
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        """An integer at least ``minimum``."""
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.ctx.error(self.at(key), f"expected an integer, found {value!r}")
            return default
        if value < minimum:
            self.ctx.error(self.at(key), f"must be at least {minimum}, found {value}")
            return default
        return value

    def fraction(self, key: str, default: float) -> float:
        """A number between 0 and 1."""
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            self.ctx.error(self.at(key), f"expected a number from 0 to 1, found {value!r}")
            return default
        return float(value)

    def duration(self, key: str, default: timedelta | None, *, forever: bool = False) -> timedelta | None:
        """A duration (``"30s"``, ``"90d"``; a number is seconds); ``"forever"`` gives None where allowed."""
        value = self.raw(key)
        if value is None:
            return default
        if forever and value == "forever":
            return None
        parsed = parse_duration(value)
        if parsed is None:
            hint = ", or 'forever'" if forever else ""
            self.ctx.error(self.at(key), f"expected a duration such as '30s', '5m', '90d'{hint}, found {value!r}")
            return default
        return parsed

    def size(self, key: str, default: int) -> int:
        """A byte count (``"100MB"``, ``"2GiB"`` or an integer), above zero."""
        value = self.raw(key)
        if value is None:
            return default
        parsed = parse_size(value)
        if not parsed:
            self.ctx.error(self.at(key), f"expected a size such as '100MB' or '2GiB', found {value!r}")
            return default
        return parsed

    def choice(self, key: str, enum: type[E], default: E | None = None, *, required: bool = False) -> E | None:
        """An Enum member by value, URI fragment or name."""
        value = self.text(key, required=required)
        if value is None:
            return default
        member = parse_enum(enum, value)
        if member is None:
            known = ", ".join(sorted(short_name(m) for m in enum))
            self.ctx.error(self.at(key), f"{value!r} is not one of: {known}")
            return default
        return member

    def table(self, key: str) -> Fields:
        """A nested table (empty when absent)."""
        return Fields(self.ctx, self.raw(key), self.at(key))

    def items(self, key: str) -> Iterator[tuple[str, object]]:
        """The elements of a list with their paths (``legs[0]``); a single value counts as a list of one."""
        value = self.raw(key)
        if value is None:
            return
        if not isinstance(value, list):
            yield self.at(key), value
            return
        for index, item in enumerate(value):
            yield f"{self.at(key)}[{index}]", item

    def strings(self, key: str) -> tuple[str, ...]:
        """A list of strings (a single string counts as one)."""
        found: list[str] = []
        for path, item in self.items(key):
            if isinstance(item, str) and item.strip():
                found.append(item.strip())
            else:
                self.ctx.error(path, f"expected a string, found {_kind(item)}")
        return tuple(found)

    def finish(self) -> None:
        """Record every key nobody read as unknown (a typo must not silently fall back to a default)."""
        for key in self.data:
            if key not in self._read:
                self.ctx.error(self.at(str(key)), "unknown field")
