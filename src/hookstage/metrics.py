"""Metrics in the Prometheus text format (version 0.0.4), written by hand: a few families
need no client library, and rendering stays a pure function of what is counted.

Two sources meet in ``GET /metrics``: what the database holds (deliveries by state, queue
depth and the age of the oldest due delivery per stage, disabled endpoints), read at scrape
time, and what this process's dispatcher counted since it started (attempts by outcome,
enqueue-to-delivered latency, circuit states), kept in ``DeliveryMetrics``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hookstage.store.deliveries import StageQueue
from hookstage.store.endpoints import EndpointStatus

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "DeliveryMetrics",
    "Family",
    "Histogram",
    "Sample",
    "circuit_families",
    "outcome_of",
    "render",
    "store_families",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds from enqueue to a 2xx: from a loopback answer to a day of retries.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 21600, 86400,
)  # fmt: skip
CIRCUIT_STATES = ("closed", "open", "half-open")

Kind = Literal["counter", "gauge", "histogram"]
Stage = tuple[str, str]


@dataclass(frozen=True)
class Sample:
    """One line: the family's name plus ``suffix`` (``_bucket``, ``_sum``, ``_count``)."""

    labels: Mapping[str, str]
    value: float
    suffix: str = ""


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    help: str
    samples: Sequence[Sample] = ()


def render(families: Iterable[Family]) -> str:
    """The exposition text: HELP and TYPE, then the samples, for every family."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        lines.extend(
            f"{family.name}{sample.suffix}{_labels(sample.labels)} {_number(sample.value)}"
            for sample in family.samples
        )
    return "\n".join(lines) + "\n"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape_value(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


@dataclass
class Histogram:
    """Observations counted into fixed upper bounds (``le``), plus their sum and count."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("bounds: expected distinct upper bounds in increasing order")
        if not self.counts:
            self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        index = bisect_left(self.bounds, value)  # the first bound >= value: le is inclusive
        if index < len(self.bounds):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def samples(self, labels: Mapping[str, str]) -> list[Sample]:
        found: list[Sample] = []
        running = 0
        for bound, number in zip(self.bounds, self.counts, strict=True):
            running += number
            found.append(Sample({**labels, "le": repr(float(bound))}, running, "_bucket"))
        found.append(Sample({**labels, "le": "+Inf"}, self.count, "_bucket"))
        found.append(Sample(labels, self.total, "_sum"))
        found.append(Sample(labels, self.count, "_count"))
        return found


def outcome_of(status: int | None, error_class: str | None) -> str:
    """An attempt's outcome as a label: its status class ("2xx" ... "5xx") when answered,
    else its error class ("timeout", "refused", ...)."""
    if status is not None:
        return f"{status // 100}xx" if 100 <= status <= 599 else "other"
    return error_class or "unknown"


def _stage(project_id: str, stage_id: str) -> dict[str, str]:
    return {"project": project_id, "stage": stage_id}


class DeliveryMetrics:
    """What one dispatcher counted since it started (Prometheus counters reset on restart)."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = bounds
        self._attempts: Counter[tuple[str, str, str]] = Counter()
        self._latency: dict[Stage, Histogram] = {}

    def attempt(self, project_id: str, stage_id: str, outcome: str) -> None:
        self._attempts[project_id, stage_id, outcome] += 1

    def delivered(self, project_id: str, stage_id: str, seconds: float) -> None:
        """A delivery succeeded ``seconds`` after it was enqueued."""
        histogram = self._latency.get((project_id, stage_id))
        if histogram is None:
            histogram = self._latency[project_id, stage_id] = Histogram(self._bounds)
        histogram.observe(max(seconds, 0.0))

    def families(self) -> list[Family]:
        attempts = [
            Sample({**_stage(project, stage), "outcome": outcome}, number)
            for (project, stage, outcome), number in sorted(self._attempts.items())
        ]
        latency = [
            sample
            for (project, stage), histogram in sorted(self._latency.items())
            for sample in histogram.samples(_stage(project, stage))
        ]
        return [
            Family(
                "hookstage_attempts_total",
                "counter",
                "Delivery attempts by this process, by outcome: status class or error class.",
                attempts,
            ),
            Family(
                "hookstage_delivery_latency_seconds",
                "histogram",
                "From enqueue to a 2xx answer, for deliveries this process delivered.",
                latency,
            ),
        ]


def circuit_families(circuits: Mapping[Stage, str]) -> list[Family]:
    """One gauge per stage and circuit state, 1 for the state its endpoint is in."""
    samples = [
        Sample({**_stage(project, stage), "state": state}, 1 if current == state else 0)
        for (project, stage), current in sorted(circuits.items())
        for state in CIRCUIT_STATES
    ]
    return [
        Family(
            "hookstage_circuit_state",
            "gauge",
            "The circuit breaker of each stage's endpoint in this process (1: in that state).",
            samples,
        )
    ]


def store_families(
    queues: Sequence[StageQueue], disabled: Sequence[EndpointStatus], *, now: float
) -> list[Family]:
    """Gauges from the database: the same whichever process is scraped."""
    by_state = [
        Sample({**_stage(q.project_id, q.stage_id), "state": state}, number)
        for q in queues
        for state, number in q.states.items()
    ]
    due = [Sample(_stage(q.project_id, q.stage_id), q.due) for q in queues]
    age = [
        Sample(_stage(q.project_id, q.stage_id), max(0.0, now - (q.oldest_due_at or now)))
        for q in queues
    ]
    off = [Sample(_stage(e.project_id, e.stage_id), 1) for e in disabled]
    return [
        Family("hookstage_deliveries", "gauge", "Deliveries by stage and state.", by_state),
        Family(
            "hookstage_queue_depth",
            "gauge",
            "Deliveries due now and not in flight, per stage.",
            due,
        ),
        Family(
            "hookstage_queue_oldest_due_age_seconds",
            "gauge",
            "How long the oldest delivery due now has been due, per stage (0: none due).",
            age,
        ),
        Family(
            "hookstage_endpoint_disabled",
            "gauge",
            "1 for each stage whose endpoint a 410 Gone disabled, until a person enables it.",
            off,
        ),
    ]
