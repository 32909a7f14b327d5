"""A circuit breaker per endpoint: a pure state machine (``now`` is an input, no I/O).

- closed: every attempt goes; ``failures`` failed attempts in a row open it.
- open: no attempt goes until ``cooldown`` seconds have passed; then one probe goes
  (half-open).
- half-open: the probe alone is out; its success closes the circuit, its failure opens it
  again for twice the cool-down (up to ``max_cooldown``).

A failure is what says the endpoint itself is unwell: a timeout, a refused, reset or broken
connection, a TLS or DNS failure, a 5xx or a 429. Any other answer (2xx, 3xx, 4xx) shows it
is up. What says nothing about the endpoint (our own shutdown, an internal error, an
address the egress guard refused) is neutral.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = [
    "CLOSED",
    "Circuit",
    "CircuitPolicy",
    "Signal",
    "State",
    "admit",
    "blocked",
    "record",
    "signal_of",
]

# The transport's error classes that point at the endpoint or the way to it.
_ENDPOINT_ERRORS = frozenset(
    {"timeout", "connect-timeout", "connect", "refused", "reset", "tls", "dns", "protocol"}
)


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Signal(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"


@dataclass(frozen=True)
class CircuitPolicy:
    """``failures`` in a row open the circuit for ``cooldown`` seconds; a failed probe
    doubles the cool-down, up to ``max_cooldown``."""

    failures: int = 5
    cooldown: float = 30.0
    max_cooldown: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.failures, bool) or self.failures < 1:
            raise ValueError(f"failures: expected a whole number >= 1, got {self.failures!r}")
        if not self.cooldown > 0:
            raise ValueError(f"cooldown: expected seconds > 0, got {self.cooldown!r}")
        if not self.max_cooldown >= self.cooldown:
            raise ValueError(
                f"max_cooldown: expected seconds >= cooldown ({self.cooldown:g}),"
                f" got {self.max_cooldown!r}"
            )


@dataclass(frozen=True)
class Circuit:
    """One endpoint's circuit. ``failures`` counts failures in a row (closed); ``opened_at``
    and ``cooldown`` place the next probe (open); ``probing``: the probe is out (half-open)."""

    state: State = State.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    cooldown: float = 0.0
    probing: bool = False

    @property
    def probe_at(self) -> float | None:
        """When an open circuit lets its probe go (None unless open)."""
        return self.opened_at + self.cooldown if self.state is State.OPEN else None


# The circuit of an endpoint with nothing against it (immutable: one serves every endpoint).
CLOSED = Circuit()


def signal_of(status: int | None, error_class: str | None) -> Signal:
    """What one attempt's outcome says about the endpoint."""
    if status is not None:
        return Signal.FAILURE if status >= 500 or status == 429 else Signal.SUCCESS
    return Signal.FAILURE if error_class in _ENDPOINT_ERRORS else Signal.NEUTRAL


def blocked(circuit: Circuit, now: float) -> bool:
    """Whether ``admit`` would refuse every attempt at ``now`` (claims may skip the endpoint)."""
    if circuit.state is State.OPEN:
        return now < circuit.opened_at + circuit.cooldown
    return circuit.state is State.HALF_OPEN and circuit.probing


def admit(circuit: Circuit, now: float) -> tuple[Circuit, bool]:
    """May an attempt go at ``now``? Returns the circuit after the answer: letting the
    probe of an open circuit go makes it half-open."""
    if circuit.state is State.CLOSED:
        return circuit, True
    if blocked(circuit, now):
        return circuit, False
    return replace(circuit, state=State.HALF_OPEN, probing=True), True


def record(circuit: Circuit, policy: CircuitPolicy, signal: Signal, now: float) -> Circuit:
    """The circuit after an attempt to its endpoint ended with ``signal`` at ``now``."""
    if signal is Signal.NEUTRAL:
        # A probe that ended saying nothing leaves room for another.
        return replace(circuit, probing=False) if circuit.state is State.HALF_OPEN else circuit
    if circuit.state is State.OPEN:
        return circuit  # answers to attempts sent before it opened change nothing
    if signal is Signal.SUCCESS:
        return CLOSED
    if circuit.state is State.HALF_OPEN:
        cooldown = min(circuit.cooldown * 2, policy.max_cooldown)
        return Circuit(State.OPEN, circuit.failures, now, cooldown)
    failures = circuit.failures + 1
    if failures >= policy.failures:
        return Circuit(State.OPEN, failures, now, policy.cooldown)
    return replace(circuit, failures=failures)
