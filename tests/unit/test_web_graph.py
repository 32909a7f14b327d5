"""The workflow graph: where stages and wires land, and the SVG they make."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hookstage import schema, workflow
from hookstage.demo import DEMO_SCHEMA, demo_workflow
from hookstage.web import graph

ROAD = "8a11b2c3d4e5f60718293a4"


def flow_with_logic() -> list[dict[str, Any]]:
    return [
        {"id": "Start", "type": "Start", "name": "Start", "next": ["Label"]},
        {"id": "Label", "type": "Label", "name": "Label", "next": ["route"]},
        {"id": "route", "type": "Logic", "name": "Route", "next": ["review", "Complete"],
         "rules": [{"kind": "annotation", "schemaId": ROAD, "present": True}]},
        {"id": "review", "type": "Review", "name": "Review", "next": ["Complete", "Label"]},
        {"id": "Complete", "type": "Complete", "name": "Complete", "next": []},
    ]  # fmt: skip


def columns(plan: graph.Layout) -> dict[str, int]:
    return {box.node.id: box.column for box in plan.boxes}


def test_the_standard_flow_reads_left_to_right_with_reject_looping_back() -> None:
    flow = workflow.parse(demo_workflow("https://hooks.example.com/x", "s" * 20))
    plan = graph.from_workflow(flow, {"Label": 3, "review": 1})
    assert columns(plan) == {"Start": 0, "Label": 1, "webhook": 2, "review": 3, "Complete": 4}
    wires = {(w.source, w.target): w for w in plan.wires}
    assert (wires["review", "Complete"].label, wires["review", "Complete"].back) == (
        "accept",
        False,
    )
    assert (wires["review", "Label"].label, wires["review", "Label"].back) == ("reject", True)
    # The loop runs under every box.
    lowest = max(box.bottom for box in plan.boxes)
    assert wires["review", "Label"].label_at[1] > lowest


def test_logic_rules_name_the_schema_entry_by_its_title() -> None:
    flow = workflow.parse(flow_with_logic())
    plan = graph.from_workflow(flow, {}, schema.parse_schema(DEMO_SCHEMA))
    labels = {(w.source, w.target): w.label for w in plan.wires}
    assert labels["route", "review"] == "Road present"
    assert labels["route", "Complete"] == "else"


def test_a_wire_that_skips_columns_passes_no_box() -> None:
    flow = workflow.parse(flow_with_logic())
    plan = graph.from_workflow(flow, {})
    [skip] = [w for w in plan.wires if (w.source, w.target) == ("route", "Complete")]
    assert columns(plan)["Complete"] - columns(plan)["route"] == 2
    inner = skip.points[1:-1]
    assert len(inner) == 2  # in and out of the slot kept in the Review column
    for x, y in inner:
        assert not any(b.x <= x <= b.right and b.y <= y <= b.bottom for b in plan.boxes)


def test_the_svg_shows_counts_links_and_labels() -> None:
    flow = workflow.parse(demo_workflow("https://hooks.example.com/x", "s" * 20))
    plan = graph.from_workflow(flow, {"Label": 1, "Complete": 1234})
    svg = graph.render(plan, lambda node: f"/stages/{node.id}" if node.type == "Webhook" else None)
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}tspan")]
    assert "1 task" in texts
    assert "1,234 tasks" in texts
    links = [a.get("href") for a in root.iter("{http://www.w3.org/2000/svg}a")]
    assert links == ["/stages/webhook"]
    labels = [str(t.text) for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class")]
    assert sorted(labels) == ["accept", "reject"]


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[graph.Node], list[tuple[str, str, str]]]:
    count = draw(st.integers(1, 9))
    names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]))
    nodes = [
        graph.Node(f"s{i}", draw(names), "Label", draw(st.integers(0, 10**6))) for i in range(count)
    ]
    pairs = st.tuples(st.integers(0, count - 1), st.integers(0, count - 1), names)
    edges = [(f"s{a}", f"s{b}", label) for a, b, label in draw(st.lists(pairs, max_size=16))]
    return nodes, edges


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_any_graph_gets_one_box_per_stage_no_overlap_and_forward_wires_left_to_right(
    drawn: tuple[list[graph.Node], list[tuple[str, str, str]]],
) -> None:
    nodes, edges = drawn
    plan = graph.layout(nodes, edges, start="s0")
    assert sorted(b.node.id for b in plan.boxes) == sorted(n.id for n in nodes)
    assert len(plan.wires) == len(edges)
    for i, a in enumerate(plan.boxes):
        for b in plan.boxes[i + 1 :]:
            apart = a.right <= b.x or b.right <= a.x or a.bottom <= b.y or b.bottom <= a.y
            assert apart, (a, b)
    where = columns(plan)
    for wire in plan.wires:
        if not wire.back:
            assert where[wire.source] < where[wire.target]
        for x, y in wire.points:
            assert 0 <= x <= plan.width
            assert 0 <= y <= plan.height
    ET.fromstring(graph.render(plan, lambda n: f"/x?id={n.name}"))  # well-formed, escaped
