"""The one grammar for durations and sizes in every settings file (pure: no I/O).

Durations: a number of seconds (``30``, ``0.5``, ``"30"``); units, largest first, each at most once
(``500ms``, ``30s``, ``5m``, ``1h30m``, ``7d``, ``1.5h``); or ISO 8601 (``PT5M``, ``PT1H30M``, ``P7D``, ``P1W``,
``PT0.5S``). ``m`` is minutes, ``ms`` milliseconds. Years and months are refused: their length varies.

Sizes: a number of bytes (``1048576``, ``"1048576"``), or a number with a unit: ``B``; SI ``kB`` (also ``KB``),
``MB``, ``GB``, ``TB`` (powers of 1000); IEC ``KiB``, ``MiB``, ``GiB``, ``TiB`` (powers of 1024). ``64MiB``,
``1.5GiB``, ``512 KiB``. Units are case-sensitive (``mb`` would be millibits); the result must be whole bytes.

Both refuse negative values, booleans, NaN and infinity, with a ValueError saying what was expected.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal

DURATION_EXAMPLES = "a duration like 30s, 5m, 1h30m, 500ms or PT5M"
SIZE_EXAMPLES = "a size like 64MiB, 1GB, 512KiB or a number of bytes"

_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
# Largest unit first; each at most once. "ms" before "m" so that "500ms" is not read as minutes.
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_COMPOUND = re.compile(
    rf"^(?:(?P<d>{_NUMBER})d)?(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m(?!s))?"
    rf"(?:(?P<s>{_NUMBER})s)?(?:(?P<ms>{_NUMBER})ms)?$"
)
_ISO = re.compile(
    rf"^P(?:(?P<w>{_NUMBER})W|(?:(?P<d>{_NUMBER})D)?(?:T(?=[\d.])(?:(?P<h>{_NUMBER})H)?(?:(?P<m>{_NUMBER})M)?"
    rf"(?:(?P<s>{_NUMBER})S)?)?)$"
)
_ISO_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}

_SIZE = re.compile(rf"^(?P<number>{_NUMBER})\s*(?P<unit>[A-Za-z]*)$")
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}


def parse_duration(value: object) -> timedelta:
    """A non-negative duration from a settings value (see the module docstring); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {DURATION_EXAMPLES}")
    if isinstance(value, int | float):
        return _seconds(float(value), value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not {DURATION_EXAMPLES}")
    text = value.strip()
    if re.fullmatch(_NUMBER, text):
        return _seconds(float(text), value)
    match = _ISO.match(text) if text.startswith("P") else _COMPOUND.match(text)
    if match is None or not text or text == "P" or not any(match.groupdict().values()):
        if text.startswith("P") and (re.search(r"\dY", text) or re.match(r"P[^T]*\dM", text)):
            raise ValueError(f"{value!r}: ISO 8601 years and months have no fixed length; use days (P30D)")
        raise ValueError(f"{value!r} is not {DURATION_EXAMPLES}")
    units = _ISO_SECONDS if text.startswith("P") else _UNIT_SECONDS
    total = sum(float(number) * units[unit] for unit, number in match.groupdict().items() if number is not None)
    return _seconds(total, value)


def _seconds(seconds: float, given: object) -> timedelta:
    if math.isnan(seconds):
        raise ValueError(f"{given!r} is not {DURATION_EXAMPLES}")
    if seconds < 0:
        raise ValueError(f"{given!r} is not {DURATION_EXAMPLES} (not negative)")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{given!r} is longer than any duration this program can wait") from None


def parse_size(value: object) -> int:
    """A non-negative number of bytes from a settings value (see the module docstring); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {SIZE_EXAMPLES}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is not {SIZE_EXAMPLES} (not negative)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not {SIZE_EXAMPLES}")
        return _whole(Decimal(value), 1, value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not {SIZE_EXAMPLES}")
    match = _SIZE.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not {SIZE_EXAMPLES}")
    unit = match.group("unit")
    if unit not in _SIZE_UNITS:
        known = ", ".join(u for u in _SIZE_UNITS if u)
        raise ValueError(f"{value!r}: unknown unit {unit!r} (known: {known})")
    # Decimal, so that 0.3MB is exactly 300000 bytes rather than whatever binary floating point makes of it.
    return _whole(Decimal(match.group("number")), _SIZE_UNITS[unit], value)


def _whole(number: Decimal, multiplier: int, given: object) -> int:
    if not number.is_finite() or number < 0:
        raise ValueError(f"{given!r} is not {SIZE_EXAMPLES} (not negative)")
    total = number * multiplier
    if total != total.to_integral_value():
        raise ValueError(f"{given!r} is not a whole number of bytes")
    return int(total)


def format_duration(duration: timedelta) -> str:
    """A duration as this grammar writes it back, in seconds (``90s``, ``0.5s``), for error messages."""
    return f"{duration.total_seconds():g}s"
