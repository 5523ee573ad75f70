"""Structured logs: one JSON object per line, with the message in hand and the trace it belongs to.

A service that serves (``accesspoint serve``, ``far serve``, ``smp serve``, ``operator serve``) calls
:func:`configure_logging` with its settings' ``logging`` table; the other CLI commands keep the human format.
Each line carries ``time``, ``level``, ``logger``, ``log_type`` (business, security or audit), ``message`` and,
where known, ``message_id``, ``conversation_id``, ``pmode``, ``trace_id`` and ``span_id``::

    with log_context(message_id=user.message_id, conversation_id=user.conversation_id):
        log.info("received")          # {"message": "received", "message_id": "…", "conversation_id": "…", …}
    log.warning("bad signature", extra={"log_type": LogType.SECURITY})

Only the fields named here are written: whatever else a caller passes in ``extra`` (a header, a token, a payload)
never reaches the log, and an exception is written as its type and traceback, which the code keeps free of keys.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import IO

from opentelemetry import trace


class LogType(StrEnum):
    """What a log line is about, so each kind can be kept and shipped as its own stream (as Harmony does)."""

    BUSINESS = "business"  # messages received, sent, delivered, failed
    SECURITY = "security"  # signatures, certificates, tokens refused
    AUDIT = "audit"  # who changed what


class LogFormat(StrEnum):
    """How lines are written: JSON for machines (the default of a serving process), text for people."""

    JSON = "json"
    TEXT = "text"


# The fields a context may set: identifiers of the exchange, never its content.
CONTEXT_FIELDS = ("message_id", "conversation_id", "ref_to_message_id", "pmode", "partner")
_NOTHING: Mapping[str, str] = MappingProxyType({})
_CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("log_context", default=_NOTHING)
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add identifiers to every line logged in the block (and in tasks it starts); None leaves a field out."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"not a log context field: {sorted(unknown)} (known: {', '.join(CONTEXT_FIELDS)})")
    merged = {**_CONTEXT.get(), **{key: value for key, value in fields.items() if value is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_context() -> Mapping[str, str]:
    """The identifiers the log context holds now."""
    return _CONTEXT.get()


_LOG_TYPES = frozenset(LogType)
# json.dumps with any argument but the defaults makes an encoder per call; the formatter runs per log line.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: the fixed fields, the log context and the current trace."""

    def format(self, record: logging.LogRecord) -> str:
        kind = getattr(record, "log_type", LogType.BUSINESS)
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "log_type": str(kind) if kind in _LOG_TYPES else str(LogType.BUSINESS),
            "message": record.getMessage(),
        }
        line.update(_CONTEXT.get())
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(line)


def parse_level(text: str) -> int:
    """``debug``, ``info``, ``warning``, ``error`` (any case) as a logging level; ValueError otherwise."""
    level = logging.getLevelNamesMapping().get(text.upper())
    if level is None or text.upper() not in LEVELS:
        raise ValueError(f"{text!r} is not a log level ({', '.join(lv.lower() for lv in LEVELS)})")
    return level


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure_logging(level: int, form: LogFormat = LogFormat.JSON, stream: IO[str] | None = None) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr) in ``form``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if form is LogFormat.JSON else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log would write every request path (ids included) at INFO; the metrics count them instead.
    logging.getLogger("aiohttp.access").setLevel(max(level, logging.WARNING))
