"""How long an idle dispatcher waits for a nudge (`dispatcher.idle_wait`): never zero, since
a turn that waits nothing and claims nothing would run again without yielding to the event
loop (it froze a server's loop for the rest of a quiet spell, up to a poll, when a fruitless
claim's wait had passed), and never past the first end still ahead."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from hookstage.dispatcher import idle_wait

T0 = 1_700_000_000.0
EPSILON = 1e-6  # an epoch time's rounding

# Whole milliseconds: an epoch time cannot hold a finer offset.
offsets = st.integers(min_value=-10_000, max_value=10_000).map(lambda ms: ms / 1000)
maybe = st.none() | offsets


@given(
    poll=st.floats(min_value=0.001, max_value=60.0),
    quiet=offsets,
    fruitless=maybe,
    probe_in=st.floats(min_value=0.001, max_value=60.0) | st.just(math.inf),
)
def test_it_waits_more_than_nothing_and_no_longer_than_the_first_end_ahead(
    poll: float, quiet: float, fruitless: float | None, probe_in: float
) -> None:
    ends = [T0 + poll, T0 + quiet, None if fruitless is None else T0 + fruitless]
    wait = idle_wait(T0, ends, probe_in)
    assert wait > 0
    assert wait <= min(poll, probe_in) + EPSILON
    for end in (quiet, fruitless):
        if end is not None and end > 0:
            assert wait <= end + EPSILON  # a quiet spell or a fruitless wait ends on time
    candidates = (poll, quiet, fruitless, probe_in)
    assert any(math.isclose(wait, end, abs_tol=EPSILON) for end in candidates if end)


def test_a_fruitless_wait_that_passed_does_not_end_a_quiet_spell() -> None:
    # The case that spun: the fruitless claim's wait over, the quiet spell not.
    assert idle_wait(T0, [T0 + 1.0, T0 + 0.25, T0 - 0.5], math.inf) == 0.25
