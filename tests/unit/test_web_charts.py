"""The charts: numbers in, SVG out, the figures readable on hover."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from hookstage.web import charts

SVG = "{http://www.w3.org/2000/svg}"


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_the_axis_top_is_the_next_one_two_or_five(value: float) -> None:
    top = charts.nice_ceiling(value)
    assert top >= value
    mantissa = top / 10 ** math.floor(math.log10(top))
    assert round(mantissa, 9) in (1, 2, 5)
    assert top < max(value, 1) * 5.0001


def bar_heights(svg: str) -> list[float]:
    root = ET.fromstring(svg)
    return [
        sum(float(r.get("height", 0)) for r in g.iter(f"{SVG}rect"))
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "bar"
    ]


def test_stacked_bars_are_as_tall_as_their_totals_and_say_them_on_hover() -> None:
    svg = charts.bars(
        [
            charts.Series("delivered", [4, 0, 10], "#2da44e"),
            charts.Series("failed", [1, 0, 0], "#cf222e"),
        ],
        ticks=[(0, "12:00"), (2, "now")],
        tips=["a", "<b>", "c"],
        label="attempts",
    )
    heights = bar_heights(svg)
    assert heights[1] == 0
    assert math.isclose(heights[0] / heights[2], 5 / 10, rel_tol=0.02)
    root = ET.fromstring(svg)
    assert [t.text for t in root.iter(f"{SVG}title")][1:] == ["a", "<b>", "c"]
    assert "12:00" in svg
    assert "now" in svg


def test_an_empty_chart_says_so() -> None:
    svg = charts.bars(
        [charts.Series("delivered", [0, 0], "#000")], ticks=[], tips=[], label="x", empty="quiet"
    )
    root = ET.fromstring(svg)
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "empty"] == ["quiet"]


def test_a_line_breaks_where_there_is_no_value() -> None:
    svg = charts.lines(
        [charts.Series("p50", [10.0, 20.0, None, 5.0, 7.0, None], "#00f")],
        ticks=[],
        tips=["t"] * 6,
        label="latency",
        unit=" ms",
    )
    root = ET.fromstring(svg)
    [path] = [p for p in root.iter(f"{SVG}path") if p.get("class") == "line"]
    assert re.findall(r"[ML]", path.get("d", "")) == ["M", "L", "M", "L"]
    assert len(list(root.iter(f"{SVG}circle"))) == 4


@given(st.lists(st.one_of(st.none(), st.floats(0, 1e6)), max_size=70))
def test_any_numbers_make_a_well_formed_chart(values: list[float | None]) -> None:
    series = [charts.Series("p95", values, "#f00")]
    ET.fromstring(charts.lines(series, ticks=[(0, "a")], tips=[], label="l"))
    ET.fromstring(charts.bars(series, ticks=[(0, "a")], tips=[], label="b"))
