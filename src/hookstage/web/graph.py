"""The workflow drawn as a graph: a layered layout (pure) and its SVG.

Stages are boxes in columns by their longest distance from Start over the forward wires.
A wire that skips columns runs through a slot kept free in each column it crosses, so it
never passes over a box; a wire that goes back (a Review's reject to Label) loops under
every box. Labels (accept/reject, Logic rules, else) sit on their wires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from itertools import pairwise

from markupsafe import Markup

from hookstage import schema, workflow

__all__ = ["Box", "Layout", "Node", "Wire", "from_workflow", "layout", "render"]

BOX_W, BOX_H = 150.0, 56.0
SLOT_H = 18.0  # the room a passing wire takes in a column
GAP_Y = 22.0
MIN_GAP_X = 64.0
MARGIN = 28.0  # room left of the first column and right of the last for wires going back
LOOP_OFF, LOOP_STEP = 10.0, 5.0
CHANNEL = 24.0  # between the loops of wires going back
LABEL_CHARS = 36
CHAR_W = 6.4  # an average 11px character, for sizing the gaps the labels sit in

Point = tuple[float, float]


@dataclass(frozen=True)
class Node:
    """A stage as the graph shows it."""

    id: str
    name: str
    type: str
    count: int


@dataclass(frozen=True)
class Box:
    node: Node
    x: float
    y: float
    column: int
    width: float = BOX_W
    height: float = BOX_H

    @property
    def bottom(self) -> float:
        return self.y + self.height

    @property
    def right(self) -> float:
        return self.x + self.width


@dataclass(frozen=True)
class Wire:
    """One output of a stage: forward wires run through ``points`` left to right (a smooth
    curve between each pair); a wire going back is one curve under the boxes."""

    source: str
    target: str
    label: str
    back: bool
    points: tuple[Point, ...]
    label_at: Point


@dataclass(frozen=True)
class Layout:
    boxes: tuple[Box, ...]
    wires: tuple[Wire, ...]
    width: float
    height: float


@dataclass
class _Slot:
    """A box, or the place a long wire passes through a column (``node`` None)."""

    node: str | None
    column: int
    wire: int = -1
    x: float = 0.0
    y: float = 0.0

    @property
    def height(self) -> float:
        return BOX_H if self.node is not None else SLOT_H


def from_workflow(
    flow: workflow.Workflow,
    counts: Mapping[str, int],
    category_schema: schema.CategorySchema | None = None,
) -> Layout:
    """The layout of a workflow; Logic rules name schema entries by title when known."""
    titles = _titles(category_schema) if category_schema is not None else {}
    nodes = [Node(s.id, s.name, s.type.value, counts.get(s.id, 0)) for s in flow.stages.values()]
    edges = [(a, b, _titled(label, titles)) for a, b, label in workflow.edges(flow)]
    return layout(nodes, edges, start=flow.start)


def _titles(category_schema: schema.CategorySchema) -> dict[str, str]:
    found: dict[str, str] = {t.schema_id: t.title for t in category_schema.tools}
    found.update({r.schema_id: r.title for r in category_schema.relations})
    for sid in category_schema.schema_ids:
        classification = category_schema.classification(sid)
        if classification is not None:
            found[sid] = classification.title
            found.update({o.schema_id: o.value for o in classification.options})
    return {k: v for k, v in found.items() if v}


def _titled(label: str, titles: Mapping[str, str]) -> str:
    first, _, rest = label.partition(" ")
    return f"{titles[first]} {rest}" if first in titles and rest else label


# -- layout -----------------------------------------------------------------------------------


def layout(
    nodes: Sequence[Node], edges: Sequence[tuple[str, str, str]], *, start: str | None = None
) -> Layout:
    """Place ``nodes`` and route ``edges`` (source id, target id, label).

    Edges naming unknown nodes are left out. Pure: the same input gives the same picture.
    """
    ids = [n.id for n in nodes]
    known = set(ids)
    wires = [(a, b, label) for a, b, label in edges if a in known and b in known]
    back = _back_edges(ids, wires, start)
    column = _columns(ids, [w for i, w in enumerate(wires) if i not in back])
    slots = _slots(ids, wires, back, column)
    layers = _order(slots, ids, wires)
    gaps = _gap_widths(wires, back, column, max(column.values(), default=0))
    xs = _column_x(gaps)
    height = _place(layers, xs)
    by_node = {s.node: s for layer in layers for s in layer if s.node is not None}
    by_id = {n.id: n for n in nodes}
    boxes = tuple(
        Box(by_id[n], xs[column[n]], by_node[n].y, column[n])
        for n in sorted(ids, key=lambda n: (column[n], by_node[n].y))
    )
    placed = {b.node.id: b for b in boxes}
    passing = [s for layer in layers for s in layer if s.node is None]
    routed = _route(wires, back, placed, passing, height)
    bottom = max([height, *(w.label_at[1] + 12 for w in routed if w.back)])
    width = (xs[-1] + BOX_W + MARGIN) if xs else 2 * MARGIN
    return Layout(boxes, tuple(routed), width, bottom + MARGIN)


def _back_edges(
    ids: Sequence[str], wires: Sequence[tuple[str, str, str]], start: str | None
) -> set[int]:
    """Indexes of the wires that close a cycle, found by a depth-first walk from Start."""
    out: dict[str, list[int]] = {n: [] for n in ids}
    for i, (a, _, _) in enumerate(wires):
        out[a].append(i)
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    back: set[int] = set()
    roots = ([start] if start in out else []) + list(ids)
    for root in roots:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(out[root]))]
        while stack:
            node, pending = stack[-1]
            index = next(pending, None)
            if index is None:
                state[node] = 2
                stack.pop()
                continue
            target = wires[index][1]
            if state.get(target) == 1:
                back.add(index)
            elif target not in state:
                state[target] = 1
                stack.append((target, iter(out[target])))
    return back


def _columns(ids: Sequence[str], forward: Sequence[tuple[str, str, str]]) -> dict[str, int]:
    """Longest distance from a source over forward wires (they form no cycle)."""
    incoming = {n: 0 for n in ids}
    out: dict[str, list[str]] = {n: [] for n in ids}
    for a, b, _ in forward:
        incoming[b] += 1
        out[a].append(b)
    column = dict.fromkeys(ids, 0)
    ready = [n for n in ids if incoming[n] == 0]
    while ready:
        node = ready.pop(0)
        for target in out[node]:
            column[target] = max(column[target], column[node] + 1)
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return column


def _slots(
    ids: Sequence[str],
    wires: Sequence[tuple[str, str, str]],
    back: set[int],
    column: Mapping[str, int],
) -> list[_Slot]:
    slots = [_Slot(n, column[n]) for n in ids]
    for i, (a, b, _) in enumerate(wires):
        if i not in back:
            slots.extend(_Slot(None, c, wire=i) for c in range(column[a] + 1, column[b]))
    return slots


def _order(
    slots: list[_Slot], ids: Sequence[str], wires: Sequence[tuple[str, str, str]]
) -> list[list[_Slot]]:
    """Slots per column, each column ordered by where its slots' predecessors sit in the
    column before (barycentre sweeps): fewer crossings, shorter wires."""
    count = max((s.column for s in slots), default=-1) + 1
    layers: list[list[_Slot]] = [[] for _ in range(count)]
    for slot in slots:
        layers[slot.column].append(slot)
    rank = {n: i for i, n in enumerate(ids)}
    for layer in layers:
        layer.sort(key=lambda s: rank[s.node] if s.node is not None else len(rank) + s.wire)
    before = _predecessors(slots, wires)
    for _ in range(2):
        for previous, layer in pairwise(layers):
            where = {id(s): i for i, s in enumerate(previous)}
            keys: dict[int, float] = {}
            for place, slot in enumerate(layer):
                mean = _mean([where[id(p)] for p in before.get(id(slot), [])])
                # A slot with nothing before it keeps its place.
                keys[id(slot)] = place if mean is None else mean
            layer.sort(key=lambda s: keys[id(s)])
    return layers


def _predecessors(
    slots: Sequence[_Slot], wires: Sequence[tuple[str, str, str]]
) -> dict[int, list[_Slot]]:
    """For each slot (by id()), the slots one column left that wire into it."""
    nodes = {s.node: s for s in slots if s.node is not None}
    passing = {(s.wire, s.column): s for s in slots if s.node is None}
    found: dict[int, list[_Slot]] = {}
    for i, (a, b, _) in enumerate(wires):
        chain = [nodes[a]]
        column = nodes[a].column + 1
        while (i, column) in passing:
            chain.append(passing[i, column])
            column += 1
        if nodes[b].column != column:
            continue  # a wire going back, or one between slots of one column
        chain.append(nodes[b])
        for left, right in pairwise(chain):
            found.setdefault(id(right), []).append(left)
    return found


def _mean(values: Sequence[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _gap_widths(
    wires: Sequence[tuple[str, str, str]], back: set[int], column: Mapping[str, int], last: int
) -> list[float]:
    """The gap after each column is wide enough for the labels of wires leaving it."""
    widths = [MIN_GAP_X] * last
    for i, (a, _, label) in enumerate(wires):
        c = column[a]
        if i not in back and label and c < last:
            widths[c] = max(widths[c], len(_short(label)) * CHAR_W + 28)
    return widths


def _column_x(gaps: Sequence[float]) -> list[float]:
    xs = [MARGIN]
    for gap in gaps:
        xs.append(xs[-1] + BOX_W + gap)
    return xs


def _place(layers: Sequence[list[_Slot]], xs: Sequence[float]) -> float:
    """Stack each column's slots, centred on the tallest column; returns the content bottom."""
    heights = [sum(s.height for s in layer) + GAP_Y * (len(layer) - 1) for layer in layers]
    tallest = max(heights, default=0.0)
    for layer, height, x in zip(layers, heights, xs, strict=True):
        y = MARGIN + (tallest - height) / 2
        for slot in layer:
            slot.x, slot.y = x, y
            y += slot.height + GAP_Y
    return MARGIN + tallest


def _route(
    wires: Sequence[tuple[str, str, str]],
    back: set[int],
    boxes: Mapping[str, Box],
    passing: Sequence[_Slot],
    content_bottom: float,
) -> list[Wire]:
    outputs: dict[str, list[int]] = {}
    inputs: dict[str, list[int]] = {}
    for i, (a, b, _) in enumerate(wires):
        if i not in back:
            outputs.setdefault(a, []).append(i)
            inputs.setdefault(b, []).append(i)
    through: dict[int, list[_Slot]] = {}
    for slot in passing:
        through.setdefault(slot.wire, []).append(slot)
    routed: list[Wire] = []
    loops = 0
    for i, (a, b, label) in enumerate(wires):
        if i in back:
            channel = content_bottom + CHANNEL * (loops + 1)
            routed.append(_loop(boxes[a], boxes[b], label, channel, loops))
            loops += 1
            continue
        start = _port(boxes[a], outputs[a].index(i), len(outputs[a]), right=True)
        end = _port(boxes[b], inputs[b].index(i), len(inputs[b]), right=False)
        middle: list[Point] = []
        for slot in sorted(through.get(i, []), key=lambda s: s.column):
            y = slot.y + SLOT_H / 2
            middle += [(slot.x - 4, y), (slot.x + BOX_W + 4, y)]
        points = (start, *middle, end)
        routed.append(Wire(a, b, label, False, points, _middle(points[0], points[1])))
    return routed


def _port(box: Box, index: int, count: int, *, right: bool) -> Point:
    y = box.y + box.height * (index + 1) / (count + 1)
    return (box.right if right else box.x, y)


def _middle(a: Point, b: Point) -> Point:
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


def _loop(source: Box, target: Box, label: str, channel: float, index: int) -> Wire:
    """A wire going back: out of the source's right side, down the gap beside its column,
    left under every box, up the gap before the target's column, into its left side.
    Gaps hold no box, so the loop crosses wires at most, never a stage."""
    off = LOOP_OFF + LOOP_STEP * (index % 3)
    start = (source.right, source.y + source.height * 0.8)
    end = (target.x, target.y + target.height * 0.8)
    right, left = source.right + off, target.x - off
    points = (start, (right, start[1]), (right, channel), (left, channel), (left, end[1]), end)
    return Wire(source.node.id, target.node.id, label, True, points, ((left + right) / 2, channel))


# -- drawing ----------------------------------------------------------------------------------

_COLOURS = {
    "Start": ("#eef1f4", "#57606a"),
    "Complete": ("#eef7ee", "#1a7f37"),
    "Archive": ("#f3f3f3", "#6e7781"),
    "Label": ("#ecf4ff", "#0969da"),
    "Review": ("#f5f0ff", "#8250df"),
    "Logic": ("#fff8e6", "#9a6700"),
    "Hold": ("#fff1e5", "#bc4c00"),
    "Webhook": ("#e7f8f2", "#0a7c62"),
}


def render(plan: Layout, href: Callable[[Node], str | None] = lambda _: None) -> Markup:
    """The layout as an inline SVG; each box links to ``href(node)`` when it gives one."""
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" role="img"'
        f' aria-label="workflow graph" width="{plan.width:.0f}" height="{plan.height:.0f}"'
        f' viewBox="0 0 {plan.width:.0f} {plan.height:.0f}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"'
        ' markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"'
        ' fill="#8c959f"/></marker></defs>',
    ]
    parts.extend(_wire_svg(w) for w in plan.wires)
    parts.extend(_box_svg(b, href(b.node)) for b in plan.boxes)
    parts.extend(_label_svg(w) for w in plan.wires if w.label)
    parts.append("</svg>")
    # Every piece of text above went through escape().
    return Markup("".join(parts))  # noqa: S704


def _path(points: Sequence[Point], back: bool) -> str:
    d = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    if back:
        d.extend(_corners(points))
        return " ".join(d)
    for (x0, y0), (x1, y1) in pairwise(points):
        bend = (x1 - x0) / 2
        d.append(f"C{x0 + bend:.1f},{y0:.1f} {x1 - bend:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
    return " ".join(d)


def _corners(points: Sequence[Point], radius: float = 8.0) -> list[str]:
    """Straight runs with rounded corners through ``points[1:]``."""
    out: list[str] = []
    for before, (x, y), after in zip(points, points[1:], points[2:], strict=False):
        r = min(radius, _distance(before, (x, y)) / 2, _distance((x, y), after) / 2)
        ax, ay = _toward((x, y), before, r)
        bx, by = _toward((x, y), after, r)
        out.append(f"L{ax:.1f},{ay:.1f} Q{x:.1f},{y:.1f} {bx:.1f},{by:.1f}")
    out.append(f"L{points[-1][0]:.1f},{points[-1][1]:.1f}")
    return out


def _distance(a: Point, b: Point) -> float:
    return float(((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5)


def _toward(origin: Point, other: Point, length: float) -> Point:
    span = _distance(origin, other)
    if span == 0:
        return origin
    t = length / span
    return (origin[0] + (other[0] - origin[0]) * t, origin[1] + (other[1] - origin[1]) * t)


def _wire_svg(wire: Wire) -> str:
    kind, dashes = ("wire back", ' stroke-dasharray="5 4"') if wire.back else ("wire", "")
    title = f"{wire.source} → {wire.target}" + (f": {wire.label}" if wire.label else "")
    return (
        f'<path class="{kind}" d="{_path(wire.points, wire.back)}" fill="none" stroke="#8c959f"'
        f' stroke-width="1.5"{dashes} marker-end="url(#arrow)"><title>{escape(title)}</title>'
        "</path>"
    )


def _label_svg(wire: Wire) -> str:
    x, y = wire.label_at
    return (
        f'<text class="wire-label" x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle"'
        ' font-size="11" fill="#57606a" stroke="#fff" stroke-width="4"'
        f' paint-order="stroke">{escape(_short(wire.label))}</text>'
    )


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _box_svg(box: Box, link: str | None) -> str:
    node = box.node
    fill, edge = _COLOURS.get(node.type, ("#f6f8fa", "#57606a"))
    tasks = f"{node.count:,} task{'' if node.count == 1 else 's'}"
    inner = (
        f'<g class="stage" data-stage="{escape(node.id)}">'
        f"<title>{escape(node.name)} ({escape(node.type)}): {tasks}</title>"
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.0f}"'
        f' height="{box.height:.0f}" rx="8" fill="{fill}" stroke="{edge}" stroke-width="1.5"/>'
        f'<text x="{box.x + 12:.1f}" y="{box.y + 23:.1f}" font-size="13" font-weight="600"'
        f' fill="#1f2328">{escape(_short(node.name, 20))}</text>'
        f'<text x="{box.x + 12:.1f}" y="{box.y + 42:.1f}" font-size="11.5" fill="{edge}">'
        f'{escape(node.type)} · <tspan class="count">{tasks}</tspan></text></g>'
    )
    if link is None:
        return inner
    return f'<a href="{escape(link)}">{inner}</a>'
