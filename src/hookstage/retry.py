"""Retry policy: pure (attempt, outcome, now, rand) -> decision. No I/O, no clock.

A delivery is delivered by any 2xx answer; everything else (3xx included: redirects are
not followed) is a failure, retried on a fixed schedule with jitter until the schedule is
exhausted. A 429 or 503 answer may say when to come back (``Retry-After``); it is honoured
within the schedule's bounds. A 410 Gone says the endpoint is gone for good: the delivery is
not failed but waits (DISABLE) until a person enables the endpoint again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hookstage.transport import Outcome

__all__ = [
    "GONE",
    "Decision",
    "RetryPolicy",
    "Verdict",
    "decide",
    "is_success",
    "parse_retry_after",
]

# Svix's schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
_HINTED_STATUSES = frozenset({429, 503})
GONE = 410


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again. ``schedule[i]`` is the delay before attempt ``i + 1`` (the first
    entry is the initial send, normally 0), so there are ``len(schedule)`` attempts in all.
    Each delay is spread by ``± jitter`` (a fraction) so retries of a burst do not align."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ValueError("schedule: expected at least one delay (the first attempt)")
        if any(delay < 0 for delay in self.schedule):
            raise ValueError("schedule: delays must be seconds >= 0")
        if any(later < earlier for earlier, later in pairwise(self.schedule)):
            raise ValueError("schedule: delays must not decrease")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter: expected a fraction in [0, 1), got {self.jitter!r}")

    @property
    def max_attempts(self) -> int:
        return len(self.schedule)

    @property
    def max_delay(self) -> float:
        return self.schedule[-1]


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give-up"
    # The endpoint answered 410 Gone: disable it; the delivery waits, due again once enabled.
    DISABLE = "disable"


@dataclass(frozen=True)
class Decision:
    """What to do after an attempt; ``retry_at`` (epoch seconds) is set for RETRY and
    DISABLE (for DISABLE: when the attempt ended; the delivery is due once enabled)."""

    verdict: Verdict
    retry_at: float | None = None

    @classmethod
    def delivered(cls) -> Decision:
        return cls(Verdict.DELIVERED)

    @classmethod
    def retry(cls, at: float) -> Decision:
        return cls(Verdict.RETRY, at)

    @classmethod
    def give_up(cls) -> Decision:
        return cls(Verdict.GIVE_UP)

    @classmethod
    def disable(cls, at: float) -> Decision:
        return cls(Verdict.DISABLE, at)


def is_success(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def decide(
    policy: RetryPolicy, *, attempt: int, outcome: Outcome, now: float, rand: float
) -> Decision:
    """Decide after attempt number ``attempt`` (1-based) ended with ``outcome`` at ``now``.

    ``rand`` is a uniform draw in [0, 1) that places the delay within the jitter band.
    """
    if attempt < 1:
        raise ValueError(f"attempt: expected a 1-based attempt number, got {attempt}")
    if not 0 <= rand < 1:
        raise ValueError(f"rand: expected a number in [0, 1), got {rand!r}")
    if is_success(outcome.status):
        return Decision.delivered()
    if outcome.status == GONE:
        # Before the budget check: a Gone endpoint is a person's to fix, not a retry's.
        return Decision.disable(now)
    if attempt >= policy.max_attempts:
        return Decision.give_up()
    scheduled = policy.schedule[attempt]
    delay = scheduled * (1 + policy.jitter * (2 * rand - 1))
    if outcome.status in _HINTED_STATUSES:
        hinted = parse_retry_after(outcome.header("Retry-After"), now=now)
        if hinted is not None:
            delay = min(max(hinted, scheduled), policy.max_delay)
    return Decision.retry(now + delay)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date).

    None when absent or unreadable; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses as naive
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
