"""The circuit breaker: closed -> open -> half-open -> closed, driven by a clock we hold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstage.circuit import (
    Circuit,
    CircuitPolicy,
    Signal,
    State,
    admit,
    blocked,
    record,
    signal_of,
)

T0 = 1_700_000_000.0
POLICY = CircuitPolicy(failures=3, cooldown=10.0, max_cooldown=40.0)

signals = st.sampled_from(list(Signal))
steps = st.lists(
    st.tuples(st.sampled_from(["admit", "record"]), signals, st.floats(0, 30)), max_size=60
)


def _fail(circuit: Circuit, times: int, now: float = T0) -> Circuit:
    for _ in range(times):
        circuit = record(circuit, POLICY, Signal.FAILURE, now)
    return circuit


def test_it_opens_after_n_failures_in_a_row_and_a_success_resets_the_count() -> None:
    almost = _fail(Circuit(), 2)
    assert almost.state is State.CLOSED
    assert record(almost, POLICY, Signal.SUCCESS, T0) == Circuit()
    opened = _fail(Circuit(), 3)
    assert (opened.state, opened.opened_at, opened.cooldown) == (State.OPEN, T0, 10.0)
    assert opened.probe_at == T0 + 10


def test_open_refuses_until_the_cooldown_then_lets_exactly_one_probe_go() -> None:
    opened = _fail(Circuit(), 3)
    assert admit(opened, T0 + 9.99) == (opened, False)
    assert blocked(opened, T0 + 9.99)
    probing, first = admit(opened, T0 + 10)
    assert first
    assert (probing.state, probing.probing) == (State.HALF_OPEN, True)
    assert blocked(probing, T0 + 11)
    assert admit(probing, T0 + 11) == (probing, False)


def test_a_successful_probe_closes_a_failed_one_doubles_the_cooldown_up_to_the_max() -> None:
    probing, _ = admit(_fail(Circuit(), 3), T0 + 10)
    assert record(probing, POLICY, Signal.SUCCESS, T0 + 11) == Circuit()
    again = record(probing, POLICY, Signal.FAILURE, T0 + 11)
    assert (again.state, again.opened_at, again.cooldown) == (State.OPEN, T0 + 11, 20.0)
    for _ in range(5):
        probing, _ = admit(again, again.opened_at + again.cooldown)
        again = record(probing, POLICY, Signal.FAILURE, again.opened_at + again.cooldown)
    assert again.cooldown == POLICY.max_cooldown


def test_answers_to_attempts_sent_before_it_opened_change_nothing() -> None:
    opened = _fail(Circuit(), 3)
    assert record(opened, POLICY, Signal.SUCCESS, T0 + 1) == opened
    assert record(opened, POLICY, Signal.FAILURE, T0 + 1) == opened


def test_a_probe_that_says_nothing_lets_another_go() -> None:
    probing, _ = admit(_fail(Circuit(), 3), T0 + 10)
    freed = record(probing, POLICY, Signal.NEUTRAL, T0 + 11)
    assert (freed.state, freed.probing) == (State.HALF_OPEN, False)
    assert admit(freed, T0 + 11)[1]
    assert record(Circuit(failures=2), POLICY, Signal.NEUTRAL, T0) == Circuit(failures=2)


@pytest.mark.parametrize(
    ("status", "error_class", "signal"),
    [
        (200, None, Signal.SUCCESS),
        (204, None, Signal.SUCCESS),
        (302, None, Signal.SUCCESS),
        (404, None, Signal.SUCCESS),
        (410, None, Signal.SUCCESS),
        (429, None, Signal.FAILURE),
        (500, None, Signal.FAILURE),
        (503, None, Signal.FAILURE),
        (None, "timeout", Signal.FAILURE),
        (None, "connect-timeout", Signal.FAILURE),
        (None, "refused", Signal.FAILURE),
        (None, "reset", Signal.FAILURE),
        (None, "tls", Signal.FAILURE),
        (None, "dns", Signal.FAILURE),
        (None, "cancelled", Signal.NEUTRAL),
        (None, "internal", Signal.NEUTRAL),
        (None, "egress-refused", Signal.NEUTRAL),
    ],
)
def test_what_counts_as_the_endpoint_failing(
    status: int | None, error_class: str | None, signal: Signal
) -> None:
    assert signal_of(status, error_class) is signal


@given(steps=steps)
def test_invariants_hold_along_any_history(steps: list[tuple[str, Signal, float]]) -> None:
    circuit, now = Circuit(), T0
    for action, signal, later in steps:
        now += later
        if action == "admit":
            before = circuit
            circuit, admitted = admit(circuit, now)
            # Closed always admits; a blocked circuit never does; admitting never closes.
            assert admitted == (before.state is State.CLOSED or not blocked(before, now))
        else:
            circuit = record(circuit, POLICY, signal, now)
        assert circuit.failures >= 0
        assert circuit.state is not State.CLOSED or circuit.failures < POLICY.failures
        if circuit.state is not State.CLOSED:
            assert POLICY.cooldown <= circuit.cooldown <= POLICY.max_cooldown
        assert circuit.probing == (circuit.state is State.HALF_OPEN and circuit.probing)


@given(failures=st.integers(1, 20), successes_between=st.integers(0, 5))
def test_only_failures_in_a_row_open_it(failures: int, successes_between: int) -> None:
    policy = CircuitPolicy(failures=failures, cooldown=1.0, max_cooldown=1.0)
    circuit = Circuit()
    for _ in range(successes_between):
        for _ in range(failures - 1):
            circuit = record(circuit, policy, Signal.FAILURE, T0)
        circuit = record(circuit, policy, Signal.SUCCESS, T0)
    assert circuit.state is State.CLOSED
    for _ in range(failures):
        circuit = record(circuit, policy, Signal.FAILURE, T0)
    assert circuit.state is State.OPEN


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failures": 0}, "failures"),
        ({"cooldown": 0}, "cooldown"),
        ({"cooldown": 10, "max_cooldown": 5}, "max_cooldown"),
    ],
)
def test_a_bad_policy_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CircuitPolicy(**kwargs)  # type: ignore[arg-type]
