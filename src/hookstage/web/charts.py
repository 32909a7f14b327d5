"""Small server-rendered charts: pure functions from numbers to inline SVG.

No script, no library: the page shows them without JavaScript, and each bar or point
carries a ``<title>`` so hovering tells the exact figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Series", "bars", "lines", "nice_ceiling"]

WIDTH, HEIGHT = 560.0, 160.0
LEFT, RIGHT, TOP, BOTTOM = 56.0, 8.0, 22.0, 22.0


@dataclass(frozen=True)
class Series:
    """One named run of values (None: nothing to show there), drawn in ``colour``."""

    name: str
    values: Sequence[float | None]
    colour: str


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is at least ``value`` (1 for nothing)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def bars(
    stacks: Sequence[Series],
    *,
    ticks: Sequence[tuple[int, str]],
    tips: Sequence[str],
    label: str,
    unit: str = "",
    empty: str = "nothing yet",
) -> Markup:
    """Stacked bars, one per index of the series' values (missing values count as 0).

    ``ticks`` puts a label under the bar at an index; ``tips[i]`` is bar i's hover text.
    """
    count = max((len(s.values) for s in stacks), default=0)
    totals = [sum(_at(s.values, i) for s in stacks) for i in range(count)]
    top = nice_ceiling(max(totals, default=0))
    parts = _frame(label, top, unit, ticks, count)
    slot = _plot_width() / max(count, 1)
    for i in range(count):
        parts.append(f'<g class="bar"><title>{escape(tips[i] if i < len(tips) else "")}</title>')
        base = 0.0
        for series in stacks:
            value = _at(series.values, i)
            if value > 0:
                y0, y1 = _y(base, top), _y(base + value, top)
                parts.append(
                    f'<rect x="{LEFT + i * slot + 1:.1f}" y="{y1:.1f}"'
                    f' width="{max(slot - 2, 1):.1f}" height="{y0 - y1:.1f}"'
                    f' fill="{escape(series.colour)}"/>'
                )
            base += value
        parts.append("</g>")
    return _close(parts, empty if not any(totals) else None, stacks)


def lines(
    series: Sequence[Series],
    *,
    ticks: Sequence[tuple[int, str]],
    tips: Sequence[str],
    label: str,
    unit: str = "",
    empty: str = "nothing yet",
) -> Markup:
    """One line per series over the indexes of its values; a None breaks the line."""
    count = max((len(s.values) for s in series), default=0)
    known = [v for s in series for v in s.values if v is not None]
    top = nice_ceiling(max(known, default=0))
    parts = _frame(label, top, unit, ticks, count)
    slot = _plot_width() / max(count, 1)
    for item in series:
        points = [
            (LEFT + (i + 0.5) * slot, _y(v, top), v)
            for i, v in enumerate(item.values)
            if v is not None
        ]
        parts.append(
            f'<path class="line" d="{_runs(item.values, slot, top)}" fill="none"'
            f' stroke="{escape(item.colour)}" stroke-width="1.75"/>'
        )
        for x, y, value in points:
            index = round((x - LEFT) / slot - 0.5)
            tip = tips[index] if index < len(tips) else ""
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.25" fill="{escape(item.colour)}">'
                f"<title>{escape(item.name)} {_number(value)}{escape(unit)} · {escape(tip)}"
                "</title></circle>"
            )
    return _close(parts, empty if not known else None, series)


def _at(values: Sequence[float | None], index: int) -> float:
    value = values[index] if index < len(values) else None
    return value if value is not None and value > 0 else 0.0


def _plot_width() -> float:
    return WIDTH - LEFT - RIGHT


def _y(value: float, top: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / top)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _runs(values: Sequence[float | None], slot: float, top: float) -> str:
    """An SVG path of the values, a new run after every gap."""
    out: list[str] = []
    pen_down = False
    for i, value in enumerate(values):
        if value is None:
            pen_down = False
            continue
        out.append(f"{'L' if pen_down else 'M'}{LEFT + (i + 0.5) * slot:.1f},{_y(value, top):.1f}")
        pen_down = True
    return " ".join(out) or "M0,0"


def _frame(
    label: str, top: float, unit: str, ticks: Sequence[tuple[int, str]], count: int
) -> list[str]:
    slot = _plot_width() / max(count, 1)
    axis_y = HEIGHT - BOTTOM
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img"'
        f' aria-label="{escape(label)}" viewBox="0 0 {WIDTH:.0f} {HEIGHT:.0f}"'
        f' width="{WIDTH:.0f}" height="{HEIGHT:.0f}" font-size="10" fill="#656d76">',
        f"<title>{escape(label)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _y(top * fraction, top)
        parts.append(
            f'<line x1="{LEFT:.0f}" x2="{WIDTH - RIGHT:.0f}" y1="{y:.1f}" y2="{y:.1f}"'
            f' stroke="#d0d7de" stroke-width="{1 if fraction == 0 else 0.5}"/>'
            f'<text x="{LEFT - 4:.0f}" y="{y + 3:.1f}" text-anchor="end">'
            f"{_number(top * fraction)}{escape(unit)}</text>"
        )
    for index, text in ticks:
        x = LEFT + (index + 0.5) * slot
        parts.append(
            f'<text x="{x:.1f}" y="{axis_y + 14:.1f}" text-anchor="middle">{escape(text)}</text>'
        )
    return parts


def _close(parts: list[str], empty: str | None, series: Sequence[Series]) -> Markup:
    if empty is not None:
        parts.append(
            f'<text class="empty" x="{LEFT + _plot_width() / 2:.1f}" y="{HEIGHT / 2:.1f}"'
            f' text-anchor="middle" font-size="12">{escape(empty)}</text>'
        )
    x = WIDTH - RIGHT
    for item in reversed(series):
        parts.append(
            f'<text x="{x:.1f}" y="{TOP - 9:.1f}" text-anchor="end" fill="{escape(item.colour)}"'
            f' font-weight="600">{escape(item.name)}</text>'
        )
        x -= len(item.name) * 6.5 + 12
    parts.append("</svg>")
    # Every piece of text above went through escape().
    return Markup("".join(parts))  # noqa: S704
