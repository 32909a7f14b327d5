"""Annotations drawn over the asset: every geometry in the image's own pixels."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hookstage.web import overlay

SVG = "{http://www.w3.org/2000/svg}"


def drawn(tools: list[Any], url: str | None = "https://a.example/x.jpg") -> ET.Element:
    found = overlay.draw(tools, size=(1280, 720), image_url=url)
    assert found is not None
    return ET.fromstring(found.svg)


def shapes(root: ET.Element, tag: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if "shape" in (e.get("class") or "")]


def test_a_box_drawn_right_to_left_is_the_same_box() -> None:
    root = drawn([{"bounding-box": {"x": 110, "y": 60, "width": -100, "height": -40},
                   "objectId": "o1", "schemaId": "car", "title": "Car"}])  # fmt: skip
    [rect] = shapes(root, "rect")
    assert [rect.get(k) for k in ("x", "y", "width", "height")] == ["10", "20", "100", "40"]
    assert root.get("viewBox") == "0 0 1280 720"
    [image] = root.iter(f"{SVG}image")
    assert image.get("href") == "https://a.example/x.jpg"


def test_a_rotated_box_uses_its_corners_or_turns_about_its_centre() -> None:
    corners = [[0, 0], [10, 0], [10, 5], [0, 5]]
    root = drawn([{"rotated-bounding-box": {"x": 0, "y": 0, "width": 10, "height": 5,
                                            "rotation": 90, "corners": corners}}])  # fmt: skip
    [polygon] = shapes(root, "polygon")
    assert polygon.get("points") == "0,0 10,0 10,5 0,5"
    root = drawn([{"rotated-bounding-box": {"x": 0, "y": 0, "width": 10, "height": 4,
                                            "rotation": 90}}])  # fmt: skip
    [polygon] = shapes(root, "polygon")
    points = [
        tuple(round(float(v), 6) for v in p.split(",")) for p in polygon.get("points", "").split()
    ]
    assert points == [(7.0, -3.0), (7.0, 7.0), (3.0, 7.0), (3.0, -3.0)]


def test_polygons_polylines_points_and_zones_with_holes() -> None:
    root = drawn([
        {"polygon": [[0, 0], [5, 0], [5, 5]], "objectId": "p", "schemaId": "road"},
        {"polyline": [[0, 0], [9, 9]], "objectId": "l", "schemaId": "lane"},
        {"point": [3, 4], "objectId": "d", "schemaId": "ped"},
        {"segmentation": {"zones": [{"region": [[0, 0], [10, 0], [10, 10], [0, 10]],
                                     "holes": [[[2, 2], [4, 2], [4, 4]]]}]},
         "objectId": "s", "schemaId": "sky"},
        {"ner": {"start": 0, "end": 3, "selection": "abc"}, "objectId": "n", "schemaId": "x"},
    ])  # fmt: skip
    assert len(shapes(root, "polygon")) == 1
    assert shapes(root, "polyline")[0].get("fill") == "none"
    [point] = shapes(root, "circle")
    assert (point.get("cx"), point.get("cy")) == ("3", "4")
    [zone] = shapes(root, "path")
    assert zone.get("d", "").count("M") == 2
    assert zone.get("fill-rule") == "evenodd"


def test_only_web_urls_are_shown_and_without_a_size_the_shapes_give_one() -> None:
    assert overlay.shown_url("javascript:alert(1)") is None
    assert overlay.shown_url("https://a.example/x.png") == "https://a.example/x.png"
    found = overlay.draw([{"point": [100, 50]}], size=None, image_url=None)
    assert found is not None
    assert ET.fromstring(found.svg).get("viewBox") == "0 0 105 52.5"
    assert overlay.draw([], size=None, image_url=None) is None


def test_what_counts_as_an_image() -> None:
    assert overlay.is_image("https://a.example/x", {"width": 10, "height": 10})
    assert overlay.is_image("https://a.example/x.JPG", {})
    assert not overlay.is_image("https://a.example/v.mp4", {"width": 10, "height": 10,
                                                            "frameTotal": 9})  # fmt: skip
    assert not overlay.is_image("https://a.example/doc.pdf", {})


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
geometry = st.sampled_from(overlay.DRAWN)


@given(st.lists(st.dictionaries(geometry | st.text(), json_values, max_size=3), max_size=5))
def test_any_tools_give_well_formed_svg_or_nothing(tools: list[dict[str, Any]]) -> None:
    found = overlay.draw(tools, size=(640, 480), image_url='https://a.example/"x".png')
    assert found is not None
    ET.fromstring(found.svg)
