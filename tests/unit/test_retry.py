"""The retry policy: success is 2xx, the schedule with jitter, Retry-After within bounds."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstage.retry import Decision, RetryPolicy, Verdict, decide, parse_retry_after
from hookstage.transport import Outcome

NOW = 1_700_000_000.0
POLICY = RetryPolicy()

attempts = st.integers(min_value=1, max_value=POLICY.max_attempts - 1)
draws = st.floats(min_value=0, max_value=1, exclude_max=True)
failures = (
    st.one_of(
        st.integers(min_value=100, max_value=199),
        st.integers(min_value=300, max_value=599),
    )
    .filter(lambda status: status != 410)  # Gone disables: see below
    .map(Outcome)
)
errors = st.sampled_from(["timeout", "connect", "refused", "reset", "tls", "dns"]).map(
    lambda name: Outcome.failure(name, "it broke")
)


def _delay(decision: Decision) -> float:
    assert decision.verdict is Verdict.RETRY
    assert decision.retry_at is not None
    return decision.retry_at - NOW


def test_the_default_schedule_is_immediately_then_5s_5min_30min_2h_5h_10h_10h() -> None:
    assert POLICY.schedule == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert POLICY.jitter == 0.2


@given(status=st.integers(min_value=200, max_value=299), attempt=attempts, rand=draws)
def test_any_2xx_is_delivered(status: int, attempt: int, rand: float) -> None:
    decision = decide(POLICY, attempt=attempt, outcome=Outcome(status), now=NOW, rand=rand)
    assert decision == Decision.delivered()


@pytest.mark.parametrize("status", [301, 302, 304, 307, 308])
def test_a_redirect_is_a_failure(status: int) -> None:
    decision = decide(POLICY, attempt=1, outcome=Outcome(status), now=NOW, rand=0.5)
    assert decision.verdict is Verdict.RETRY


@given(outcome=st.one_of(failures, errors), attempt=attempts, rand=draws)
def test_a_failure_retries_within_20_percent_of_the_schedule(
    outcome: Outcome, attempt: int, rand: float
) -> None:
    delay = _delay(decide(POLICY, attempt=attempt, outcome=outcome, now=NOW, rand=rand))
    scheduled = POLICY.schedule[attempt]
    assert delay >= 0
    assert scheduled * 0.8 <= delay <= scheduled * 1.2


@given(attempt=attempts)
def test_delays_grow_in_expectation(attempt: int) -> None:
    # rand = 0.5 is the middle of the jitter band: the expected delay.
    outcome = Outcome(500)
    here = _delay(decide(POLICY, attempt=attempt, outcome=outcome, now=NOW, rand=0.5))
    assert here == POLICY.schedule[attempt]
    if attempt + 1 < POLICY.max_attempts:
        after = _delay(decide(POLICY, attempt=attempt + 1, outcome=outcome, now=NOW, rand=0.5))
        assert after >= here


@given(
    schedule=st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=12).map(
        lambda delays: tuple(sorted(delays))
    ),
    outcome=st.one_of(failures, errors),
    rand=draws,
)
def test_gives_up_exactly_when_the_schedule_is_exhausted(
    schedule: tuple[float, ...], outcome: Outcome, rand: float
) -> None:
    policy = RetryPolicy(schedule=schedule)
    verdicts = [
        decide(policy, attempt=n, outcome=outcome, now=NOW, rand=rand).verdict
        for n in range(1, len(schedule) + 2)
    ]
    assert verdicts[: len(schedule) - 1] == [Verdict.RETRY] * (len(schedule) - 1)
    assert verdicts[len(schedule) - 1 :] == [Verdict.GIVE_UP, Verdict.GIVE_UP]


@given(attempt=st.integers(min_value=1, max_value=50), rand=draws)
def test_410_gone_disables_at_any_attempt_and_waits_from_now(attempt: int, rand: float) -> None:
    # Even past the schedule: a Gone endpoint is a person's to fix, the delivery waits.
    decision = decide(POLICY, attempt=attempt, outcome=Outcome(410), now=NOW, rand=rand)
    assert decision == Decision.disable(NOW)
    assert decision.verdict is Verdict.DISABLE


def test_the_default_policy_makes_eight_attempts() -> None:
    outcome = Outcome(500)
    assert decide(POLICY, attempt=7, outcome=outcome, now=NOW, rand=0.5).retry_at == NOW + 36000
    assert decide(POLICY, attempt=8, outcome=outcome, now=NOW, rand=0.5) == Decision.give_up()


@pytest.mark.parametrize("status", [429, 503])
@given(seconds=st.integers(min_value=0, max_value=10**7), attempt=attempts, rand=draws)
def test_retry_after_seconds_is_honoured_within_the_schedule_bounds(
    status: int, seconds: int, attempt: int, rand: float
) -> None:
    outcome = Outcome(status, {"retry-after": str(seconds)})
    delay = _delay(decide(POLICY, attempt=attempt, outcome=outcome, now=NOW, rand=rand))
    assert delay == min(max(seconds, POLICY.schedule[attempt]), POLICY.max_delay)


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.fromtimestamp(NOW + 600, UTC), usegmt=True)
    outcome = Outcome(429, {"Retry-After": when})
    assert _delay(decide(POLICY, attempt=2, outcome=outcome, now=NOW, rand=0.9)) == 600


def test_retry_after_is_ignored_on_other_statuses() -> None:
    outcome = Outcome(500, {"Retry-After": "3600"})
    assert _delay(decide(POLICY, attempt=1, outcome=outcome, now=NOW, rand=0.5)) == 5


@given(value=st.text(max_size=40))
def test_parse_retry_after_never_raises_and_is_never_negative(value: str) -> None:
    parsed = parse_retry_after(value, now=NOW)
    assert parsed is None or parsed >= 0


def test_parse_retry_after_reads_both_forms() -> None:
    assert parse_retry_after("120", now=NOW) == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 0  # in the past
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after(None, now=NOW) is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"schedule": ()}, "schedule"),
        ({"schedule": (0, -1)}, "schedule"),
        ({"schedule": (0, 10, 5)}, "schedule"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_a_bad_policy_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="attempt"):
        decide(POLICY, attempt=0, outcome=Outcome(500), now=NOW, rand=0.5)
    with pytest.raises(ValueError, match="rand"):
        decide(POLICY, attempt=1, outcome=Outcome(500), now=NOW, rand=1.0)
