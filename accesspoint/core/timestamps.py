"""xsd:dateTime as ebMS uses it: UTC on output, any valid offset (or none, meaning UTC) on input."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from accesspoint.core.errors import EbmsError, ErrorCode

_XSD_DATETIME = re.compile(r"-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?P<fraction>\.\d+)?(?P<zone>Z|[+-]\d{2}:\d{2})?")


def parse_timestamp(text: str) -> datetime:
    """Parse an eb:Timestamp; a value without a zone is UTC (ebMS 3 section 5.2.2.1); EBMS:0009 if invalid."""
    value = text.strip()
    match = _XSD_DATETIME.fullmatch(value)
    if match is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"eb:Timestamp {value[:64]!r} is not an xsd:dateTime")
    fraction = match.group("fraction")
    if fraction and len(fraction) > 7:
        # Python keeps microseconds; longer fractions (e.g. .NET's 7 digits) are truncated, not refused.
        value = value.replace(fraction, fraction[:7], 1)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"eb:Timestamp {value[:64]!r} is not a valid date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def format_timestamp(moment: datetime) -> str:
    """Format a moment as an ebMS timestamp in UTC with a ``Z`` (milliseconds, or microseconds if needed)."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    utc = moment.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond % 1000 == 0 else "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"
