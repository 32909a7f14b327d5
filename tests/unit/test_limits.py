"""The JSON shape limit: any parsed JSON gets an answer, and the answer names the limit."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hookstage.api.limits import MAX_DEPTH, MAX_STRING, json_problem

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=40,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(_json)
def test_ordinary_json_is_within_the_limits(value: Any) -> None:
    assert json_problem(value) is None


def _nested(depth: int, leaf: Any = "leaf") -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@given(st.integers(1, MAX_DEPTH + 40))
def test_nesting_is_refused_exactly_past_the_limit(depth: int) -> None:
    value = _nested(depth)
    assert _depth(value) == depth
    found = json_problem(value)
    if depth <= MAX_DEPTH:
        assert found is None
    else:
        assert found is not None
        path, message = found
        assert path.startswith("body")
        assert message == f"nests deeper than the limit of {MAX_DEPTH} levels"


def test_a_hostile_depth_is_answered_without_recursion() -> None:
    found = json_problem(_nested(200_000))
    assert found is not None
    assert "limit of 64 levels" in found[1]


@given(st.integers(0, 3))
def test_a_string_or_key_past_the_limit_is_refused_where_it_is(extra: int) -> None:
    long = "x" * (MAX_STRING + extra)
    as_value = json_problem({"tasks": [{"note": long}]})
    as_key = json_problem({"meta": {long: 1}})
    if extra == 0:
        assert as_value is None
        assert as_key is None
    else:
        assert as_value == (
            "body.tasks[0].note",
            f"is a string longer than the limit of {MAX_STRING} characters",
        )
        assert as_key == (
            "body.meta",
            f"has a key longer than the limit of {MAX_STRING} characters",
        )
