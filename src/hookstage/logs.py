"""Logging set-up for the server: text for a terminal, or one JSON object per line for a
log pipeline (stdlib ``logging``, nothing else).

Delivery log lines carry their context as ``extra`` fields (``FIELDS``): the JSON form puts
each in its own key, the text form appends them as ``key=value``. What is logged is chosen
where it is logged: ids, stages, statuses, error classes and ``safe_url`` forms of URLs,
never a header, a body, a secret or a token; and the database drivers, whose debug records
show SQL parameters, are kept at warning.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

import orjson

__all__ = ["FIELDS", "FORMATS", "JsonFormatter", "TextFormatter", "configure", "safe_url"]

Format = Literal["text", "json"]
FORMATS: tuple[Format, ...] = ("text", "json")
FIELDS = (
    "delivery_id",
    "project_id",
    "stage_id",
    "task_id",
    "attempt",
    "status",
    "error_class",
    "duration_ms",
    "verdict",
    "retry_in_s",
    "endpoint",
    "circuit",
)
_LEVELS = ("debug", "info", "warning", "error", "critical")
# Libraries whose debug and info records carry SQL parameters, that is stored secrets and
# bodies: never below warning, whatever level is asked for.
_QUIET = ("aiosqlite", "sqlalchemy", "psycopg", "asyncpg")


def safe_url(url: str) -> str:
    """A URL fit for a log: scheme, host, port and path; no user, password, query or
    fragment (a token often rides in a query string)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(unreadable URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {key: record.__dict__[key] for key in FIELDS if key in record.__dict__}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the context
    fields present, and the exception's traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{key}={value}" for key, value in _context(record).items())
        if not context:
            return text
        head, newline, rest = text.partition("\n")  # keep a traceback below the line
        return f"{head} {context}{newline}{rest}"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so that configuring again replaces it instead of adding another."""


def configure(
    log_format: str = "text", level: str = "info", *, stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (default stderr) in
    ``log_format``; returns the handler. Raises ValueError naming a bad argument."""
    if log_format not in FORMATS:
        raise ValueError(f"log format: expected one of {', '.join(FORMATS)}, got {log_format!r}")
    if level.lower() not in _LEVELS:
        raise ValueError(f"log level: expected one of {', '.join(_LEVELS)}, got {level!r}")
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = max(logging.WARNING, logging.getLevelName(level.upper()))
    for name in _QUIET:
        logging.getLogger(name).setLevel(quiet)
    return handler
