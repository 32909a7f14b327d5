"""Times on the wire are ISO-8601 (`2024-05-01T12:00:00.000Z`); the engine keeps epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime

from hookstage import payload

__all__ = ["epoch", "iso"]


def epoch(moment: datetime | None) -> float | None:
    """Epoch seconds; a time given without a zone is taken as UTC."""
    if moment is None:
        return None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return payload.format_timestamp(datetime.fromtimestamp(seconds, UTC))
