"""The Prometheus text we write, read back by the reference parser (prometheus-client)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from hookstage.metrics import (
    DeliveryMetrics,
    Family,
    Histogram,
    Sample,
    circuit_families,
    outcome_of,
    render,
    store_families,
)
from hookstage.store.deliveries import StageQueue
from hookstage.store.endpoints import EndpointStatus

NOW = 1_700_000_000.0


def _parsed(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> sorted labels -> value."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@given(
    value=st.text(max_size=30),
    number=st.floats(allow_nan=False) | st.integers(-(2**60), 2**60),
    help_text=st.text(max_size=30),
)
def test_any_label_value_and_number_survive_the_reference_parser(
    value: str, number: float, help_text: str
) -> None:
    text = render([Family("x_thing", "gauge", help_text, [Sample({"stage": value}, number)])])
    [family] = list(text_string_to_metric_families(text))
    [sample] = family.samples
    assert sample.labels == {"stage": value}
    assert sample.value == float(number) or math.isclose(sample.value, float(number))


@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=50))
def test_a_histogram_counts_each_value_in_every_bucket_at_or_above_it(
    values: list[float],
) -> None:
    histogram = Histogram((0.1, 1.0, 10.0))
    for value in values:
        histogram.observe(value)
    text = render([Family("lat", "histogram", "h", histogram.samples({"stage": "s"}))])
    parsed = _parsed(text)
    buckets = {dict(labels)["le"]: count for labels, count in parsed["lat_bucket"].items()}
    assert buckets == {
        "0.1": sum(v <= 0.1 for v in values),
        "1.0": sum(v <= 1.0 for v in values),
        "10.0": sum(v <= 10.0 for v in values),
        "+Inf": len(values),
    }
    assert parsed["lat_count"][(("stage", "s"),)] == len(values)
    assert math.isclose(parsed["lat_sum"][(("stage", "s"),)], sum(values), abs_tol=1e-6)


def test_delivery_metrics_count_attempts_by_outcome_and_latency_by_stage() -> None:
    counted = DeliveryMetrics()
    counted.attempt("p1", "hook", outcome_of(200, None))
    counted.attempt("p1", "hook", outcome_of(503, None))
    counted.attempt("p1", "hook", outcome_of(None, "timeout"))
    counted.attempt("p1", "hook", outcome_of(None, "timeout"))
    counted.delivered("p1", "hook", 0.2)
    circuits = circuit_families({("p1", "hook"): "open"})
    parsed = _parsed(render([*counted.families(), *circuits]))
    stage = (("project", "p1"), ("stage", "hook"))
    assert parsed["hookstage_attempts_total"] == {
        (("outcome", "2xx"), *stage): 1,
        (("outcome", "5xx"), *stage): 1,
        (("outcome", "timeout"), *stage): 2,
    }
    assert parsed["hookstage_delivery_latency_seconds_count"] == {stage: 1}
    assert parsed["hookstage_circuit_state"] == {
        (*stage, ("state", "closed")): 0,
        (*stage, ("state", "half-open")): 0,
        (*stage, ("state", "open")): 1,
    }


def test_store_families_show_states_queue_depth_oldest_age_and_disabled_endpoints() -> None:
    queues = [
        StageQueue("p1", "hook", {"pending": 3, "delivered": 5, "failed": 1}, 2, NOW - 90),
        StageQueue("p1", "idle", {"pending": 0, "delivered": 4, "failed": 0}, 0, None),
    ]
    disabled = [EndpointStatus("p1", "gone", NOW - 5, "410 Gone")]
    parsed = _parsed(render(store_families(queues, disabled, now=NOW)))
    hook = (("project", "p1"), ("stage", "hook"))
    idle = (("project", "p1"), ("stage", "idle"))
    assert parsed["hookstage_deliveries"][(*hook, ("state", "delivered"))] == 5
    assert parsed["hookstage_queue_depth"] == {hook: 2, idle: 0}
    assert parsed["hookstage_queue_oldest_due_age_seconds"] == {hook: 90, idle: 0}
    assert parsed["hookstage_endpoint_disabled"] == {(("project", "p1"), ("stage", "gone")): 1}


@pytest.mark.parametrize(
    ("status", "error_class", "label"),
    [(204, None, "2xx"), (302, None, "3xx"), (410, None, "4xx"), (None, "refused", "refused")],
)
def test_outcome_labels(status: int | None, error_class: str | None, label: str) -> None:
    assert outcome_of(status, error_class) == label


def test_histogram_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="bounds"):
        Histogram((1.0, 0.5))
