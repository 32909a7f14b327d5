"""A task's annotations drawn over its asset: pure, tools in export format -> SVG.

Bounding boxes (negative sizes allowed), rotated boxes, polygons, polylines, points and
segmentation zones are drawn in the image's own pixel space (the viewBox is the image's
width and height), so the shapes sit where the labeler put them at any display size.
Geometry that is not a shape on an image (NER spans, PDF selections) is left to the list.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from markupsafe import Markup

__all__ = ["DRAWN", "Drawing", "colour_of", "draw", "image_size", "is_image", "shown_url"]

DRAWN = (
    "bounding-box",
    "rotated-bounding-box",
    "polygon",
    "polyline",
    "point",
    "segmentation",
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".svg", ".tif", ".tiff")
_PALETTE = ("#e5534b", "#2f81f7", "#2da44e", "#d29922", "#a371f7", "#db61a2", "#1b9aaa", "#bc4c00")
Point = tuple[float, float]


@dataclass(frozen=True)
class Drawing:
    """The SVG, and how many tools it shows."""

    svg: Markup
    shapes: int


def shown_url(url: object) -> str | None:
    """The URL if a browser may be pointed at it (http or https), else None."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in {"http", "https"} and parts.netloc else None


def image_size(metadata: Mapping[str, Any]) -> tuple[float, float] | None:
    found = _floats(metadata, ("width", "height"))
    if found is None or min(found) <= 0:
        return None
    return found[0], found[1]


def is_image(url: str, metadata: Mapping[str, Any]) -> bool:
    """An image has a width and a height and no frames; or at least an image file name."""
    if any(key in metadata for key in ("frameTotal", "frameRate")):
        return False
    path = urlsplit(url).path.lower() if shown_url(url) else ""
    return image_size(metadata) is not None or path.endswith(_IMAGE_SUFFIXES)


def draw(
    tools: Sequence[Any], *, size: tuple[float, float] | None, image_url: str | None
) -> Drawing | None:
    """The tools over the image (when ``image_url``), or None when there is nothing to draw.

    Without a size (no width and height in the metadata) the shapes' own extent is used.
    """
    shapes = [s for tool in tools if isinstance(tool, Mapping) for s in _shapes(tool)]
    if size is None:
        size = _extent(shapes)
    if size is None:
        return None
    width, height = size
    radius = max(width, height) / 160
    parts = [
        f'<svg class="overlay" xmlns="http://www.w3.org/2000/svg" role="img"'
        f' aria-label="annotations over the asset" viewBox="0 0 {width:g} {height:g}"'
        ' preserveAspectRatio="xMidYMid meet">',
        f'<rect class="canvas" width="{width:g}" height="{height:g}" fill="#eaeef2"/>',
    ]
    if image_url is not None:
        parts.append(
            f'<image href="{escape(image_url)}" width="{width:g}" height="{height:g}"'
            ' preserveAspectRatio="none"/>'
        )
    parts.extend(_svg(shape, radius) for shape in shapes)
    parts.append("</svg>")
    # Every value above is a number or went through escape().
    return Drawing(Markup("".join(parts)), len({s.object_id for s in shapes}))  # noqa: S704


@dataclass(frozen=True)
class _Shape:
    kind: str  # rect, polygon, polyline, point, path
    points: tuple[Point, ...]
    colour: str
    title: str
    object_id: str
    holes: tuple[tuple[Point, ...], ...] = ()


def _shapes(tool: Mapping[str, Any]) -> list[_Shape]:
    colour = colour_of(str(tool.get("schemaId", "")))
    title = f"{tool.get('title') or 'tool'} {tool.get('objectId', '')}".strip()
    object_id = str(tool.get("objectId", id(tool)))
    geometry = [(key, tool[key]) for key in DRAWN if key in tool]
    out: list[_Shape] = []
    for key, value in geometry:
        for kind, points, holes in _geometry(key, value):
            out.append(_Shape(kind, points, colour, title, object_id, holes))
    return out


def colour_of(schema_id: str) -> str:
    """A stable colour per schemaId, so one class looks the same on every task."""
    return _PALETTE[zlib.crc32(schema_id.encode("utf-8", "replace")) % len(_PALETTE)]


_Geometry = tuple[str, tuple[Point, ...], tuple[tuple[Point, ...], ...]]
_Reader = Callable[[Any], Iterable[_Geometry]]


def _geometry(key: str, value: Any) -> Iterable[_Geometry]:
    return _READERS[key](value)


def _lines(kind: str) -> _Reader:
    def read(value: Any) -> Iterable[_Geometry]:
        points = _points(value)
        if len(points) >= 2:
            yield kind, points, ()

    return read


def _dot(value: Any) -> Iterable[_Geometry]:
    point = _point(value)
    if point is not None:
        yield "point", (point,), ()


def _zones(value: Any) -> Iterable[_Geometry]:
    zones = value.get("zones") if isinstance(value, Mapping) else None
    for zone in zones if isinstance(zones, list) else []:
        if isinstance(zone, Mapping):
            region = _points(zone.get("region"))
            holes = tuple(_points(h) for h in zone.get("holes") or [])
            if len(region) >= 3:
                yield "path", region, tuple(h for h in holes if len(h) >= 3)


def _box(value: Any) -> Iterable[_Geometry]:
    found = _floats(value, ("x", "y", "width", "height"))
    if found is not None:
        x, y, w, h = found
        # Ango allows negative sizes (drawn right to left): normalise to a corner and a size.
        left, top = min(x, x + w), min(y, y + h)
        yield "rect", ((left, top), (left + abs(w), top + abs(h))), ()


def _rotated(value: Any) -> Iterable[_Geometry]:
    corners = _points(value.get("corners")) if isinstance(value, Mapping) else ()
    if len(corners) == 4:
        yield "polygon", corners, ()
        return
    found = _floats(value, ("x", "y", "width", "height"))
    if found is not None:
        x, y, w, h = found
        rotation = _floats(value, ("rotation",))
        angle = math.radians(rotation[0]) if rotation is not None else 0.0
        centre = (x + w / 2, y + h / 2)
        box = ((x, y), (x + w, y), (x + w, y + h), (x, y + h))
        yield "polygon", tuple(_turn(p, centre, angle) for p in box), ()


_READERS: Mapping[str, _Reader] = {
    "bounding-box": _box,
    "rotated-bounding-box": _rotated,
    "polygon": _lines("polygon"),
    "polyline": _lines("polyline"),
    "point": _dot,
    "segmentation": _zones,
}


def _floats(value: Any, keys: Sequence[str]) -> tuple[float, ...] | None:
    """The values at ``keys`` as floats, if ``value`` is an object where all are numbers."""
    if not isinstance(value, Mapping):
        return None
    found = [value.get(key) for key in keys]
    numbers = [float(v) for v in found if _number(v)]
    return tuple(numbers) if len(numbers) == len(keys) else None


def _turn(point: Point, centre: Point, angle: float) -> Point:
    dx, dy = point[0] - centre[0], point[1] - centre[1]
    cos, sin = math.cos(angle), math.sin(angle)
    return (centre[0] + dx * cos - dy * sin, centre[1] + dx * sin + dy * cos)


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _point(value: Any) -> Point | None:
    if isinstance(value, Sequence) and len(value) >= 2 and _number(value[0]) and _number(value[1]):
        return (float(value[0]), float(value[1]))
    return None


def _points(value: Any) -> tuple[Point, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return ()
    found = [_point(item) for item in value]
    return tuple(p for p in found if p is not None)


def _extent(shapes: Sequence[_Shape]) -> tuple[float, float] | None:
    xs = [p[0] for s in shapes for p in s.points]
    ys = [p[1] for s in shapes for p in s.points]
    if not xs or max(xs) <= 0 or max(ys) <= 0:
        return None
    return max(xs) * 1.05, max(ys) * 1.05


def _coords(points: Iterable[Point]) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in points)


def _svg(shape: _Shape, radius: float) -> str:
    paint = (
        f'stroke="{shape.colour}" stroke-width="2" vector-effect="non-scaling-stroke"'
        f' class="shape {shape.kind}" data-object="{escape(shape.object_id)}"'
    )
    fill = f'fill="{shape.colour}" fill-opacity="0.18"'
    title = f"<title>{escape(shape.title)}</title>"
    if shape.kind == "rect":
        (x0, y0), (x1, y1) = shape.points
        return (
            f'<rect x="{x0:g}" y="{y0:g}" width="{x1 - x0:g}" height="{y1 - y0:g}"'
            f" {fill} {paint}>{title}</rect>"
        )
    if shape.kind == "polygon":
        return f'<polygon points="{_coords(shape.points)}" {fill} {paint}>{title}</polygon>'
    if shape.kind == "polyline":
        return f'<polyline points="{_coords(shape.points)}" fill="none" {paint}>{title}</polyline>'
    if shape.kind == "point":
        ((x, y),) = shape.points
        return (
            f'<circle cx="{x:g}" cy="{y:g}" r="{radius:g}" fill="{shape.colour}"'
            f" {paint.replace(shape.colour, '#ffffff', 1)}>{title}</circle>"
        )
    rings = [shape.points, *shape.holes]
    d = " ".join(f"M{_coords(ring)} Z" for ring in rings)
    return f'<path d="{d}" fill-rule="evenodd" {fill} {paint}>{title}</path>'
