"""The category schema (Ango Hub's shape) and the check of a submission against it.

A category schema lists the ``tools`` (objects drawn on the asset), the ``classifications``
(questions about the whole asset) and the ``relations`` a project allows, each with a
``schemaId``; tools and classifications nest classifications. :func:`parse_schema` checks
one and raises one :class:`SchemaError` listing every problem; :func:`to_json` gives it
back, keys we do not interpret (colours, shortcuts) included. :func:`check_annotations`
checks annotations in export format and returns every problem with its path
(``tools[3].polygon[2]``).

Pure: no I/O. Decisions where Ango's documentation is silent:

- Tool and classification types we do not know are accepted; their geometry or answer is
  not checked (brush masks, for one, travel as ``brushDataUrl``, not as tools).
- Option schemaIds share the schemaId space: no two items, options included, share one.
- ``required`` is enforced for top-level classifications only, and means answered
  (an empty text or an empty list is not an answer).
- Relations may point at the objectId of any tool or classification in the submission.
- ``rotated-bounding-box`` needs x, y, width, height and rotation; ``corners``, when
  given, must be four points.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Final, TypeAlias

__all__ = [
    "MAX_DEPTH",
    "CategorySchema",
    "ClassificationSchema",
    "OptionSchema",
    "Problem",
    "RelationSchema",
    "SchemaError",
    "ToolSchema",
    "check_annotations",
    "parse_schema",
    "present_schema_ids",
    "to_json",
]

MAX_DEPTH: Final = 16
"""How deep classifications may nest, in a schema and in a submission."""

_SINGLE_ANSWER: Final = frozenset({"radio", "single-dropdown"})
_MULTI_ANSWER: Final = frozenset({"checkbox", "multi-dropdown"})
_DIRECTIONS: Final = ("straight", "reverse", "bidirectional")
# Keys of a tool object that are never its geometry, whatever a schema calls its tools.
_TOOL_KEYS: Final = frozenset(
    {"objectId", "schemaId", "title", "classifications", "page", "metadata"}
    | {"interpolationStopped", "answer", "tool"}
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong, at ``path`` (``tools[2].schemaId``; "" for the whole)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SchemaError(ValueError):
    """A category schema is invalid; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        lines = [str(p) for p in self.problems]
        if len(lines) == 1:
            text = f"invalid category schema: {lines[0]}"
        else:
            text = f"invalid category schema ({len(lines)} problems):\n" + "\n".join(
                f"- {line}" for line in lines
            )
        super().__init__(text)


# -- the model ------------------------------------------------------------------------------


def _no_extra() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True)
class OptionSchema:
    value: str
    schema_id: str
    extra: Mapping[str, object] = field(default_factory=_no_extra, hash=False)


@dataclass(frozen=True)
class ClassificationSchema:
    schema_id: str
    tool: str
    title: str = ""
    required: bool = False
    options: tuple[OptionSchema, ...] = ()
    classifications: tuple[ClassificationSchema, ...] = ()
    extra: Mapping[str, object] = field(default_factory=_no_extra, hash=False)


@dataclass(frozen=True)
class ToolSchema:
    schema_id: str
    tool: str
    title: str = ""
    classifications: tuple[ClassificationSchema, ...] = ()
    extra: Mapping[str, object] = field(default_factory=_no_extra, hash=False)


@dataclass(frozen=True)
class RelationSchema:
    schema_id: str
    tool: str
    title: str = ""
    extra: Mapping[str, object] = field(default_factory=_no_extra, hash=False)


@dataclass(frozen=True)
class CategorySchema:
    tools: tuple[ToolSchema, ...] = ()
    classifications: tuple[ClassificationSchema, ...] = ()
    relations: tuple[RelationSchema, ...] = ()
    extra: Mapping[str, object] = field(default_factory=_no_extra, hash=False)

    def tool(self, schema_id: str) -> ToolSchema | None:
        return self._tools.get(schema_id)

    def relation(self, schema_id: str) -> RelationSchema | None:
        return self._relations.get(schema_id)

    def classification(self, schema_id: str) -> ClassificationSchema | None:
        """The classification with this schemaId, at any depth, under a tool or not."""
        return self._classifications.get(schema_id)

    @cached_property
    def schema_ids(self) -> frozenset[str]:
        """Every schemaId: tools, relations, classifications at any depth, their options."""
        options = (o.schema_id for c in self._classifications.values() for o in c.options)
        return frozenset([*self._tools, *self._relations, *self._classifications, *options])

    @cached_property
    def _tools(self) -> Mapping[str, ToolSchema]:
        return {t.schema_id: t for t in self.tools}

    @cached_property
    def _relations(self) -> Mapping[str, RelationSchema]:
        return {r.schema_id: r for r in self.relations}

    @cached_property
    def _classifications(self) -> Mapping[str, ClassificationSchema]:
        found: dict[str, ClassificationSchema] = {}
        stack = [*self.classifications, *(c for t in self.tools for c in t.classifications)]
        while stack:
            item = stack.pop()
            found.setdefault(item.schema_id, item)
            stack.extend(item.classifications)
        return found


# -- parsing --------------------------------------------------------------------------------


class _Issues:
    """Problems found so far, and the schemaIds claimed (with where) to catch duplicates."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.claimed: dict[str, str] = {}

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def claim(self, schema_id: str, path: str) -> None:
        """``path`` (an item's) uses ``schema_id``: reported if an earlier item did."""
        if not schema_id:
            return  # already reported as missing
        first = self.claimed.setdefault(schema_id, path)
        if first != path:
            self.add(f"{path}.schemaId", f"{_short(schema_id)} is already the schemaId of {first}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _extra(raw: Mapping[object, object], known: frozenset[str]) -> Mapping[str, object]:
    return MappingProxyType(
        {k: copy.deepcopy(v) for k, v in raw.items() if isinstance(k, str) and k not in known}
    )


def _text(raw: Mapping[object, object], key: str, path: str, issues: _Issues) -> str:
    """A required non-empty string."""
    value = raw.get(key)
    if isinstance(value, str) and value:
        return value
    issues.add(f"{path}.{key}", "expected a non-empty string")
    return ""


def _title(raw: Mapping[object, object], path: str, issues: _Issues) -> str:
    value = raw.get("title", "")
    if isinstance(value, str):
        return value
    issues.add(f"{path}.title", "expected a string")
    return ""


def _items(value: object, path: str, issues: _Issues) -> Iterator[tuple[str, dict[object, object]]]:
    """The objects of a list, each with its path; anything else reported, in list order."""
    if value is None:
        return
    if not isinstance(value, list):
        issues.add(path, "expected a list")
        return
    for i, item in enumerate(value):
        if isinstance(item, dict):
            yield f"{path}[{i}]", item
        else:
            issues.add(f"{path}[{i}]", "expected an object")


_KNOWN_TOP: Final = frozenset({"tools", "classifications", "relations"})
_KNOWN_TOOL: Final = frozenset({"schemaId", "tool", "title", "classifications"})
_KNOWN_CLASSIFICATION: Final = _KNOWN_TOOL | {"required", "options"}
_KNOWN_OPTION: Final = frozenset({"value", "schemaId"})
_KNOWN_RELATION: Final = frozenset({"schemaId", "tool", "title"})


def parse_schema(data: object) -> CategorySchema:
    """A validated CategorySchema from its JSON, or SchemaError listing every problem.

    Any input, however malformed, gives a CategorySchema or a SchemaError, never another
    error.
    """
    if not isinstance(data, dict):
        raise SchemaError([Problem("", "expected an object {tools, classifications, relations}")])
    issues = _Issues()
    tools = tuple(
        _tool(raw, path, issues) for path, raw in _items(data.get("tools"), "tools", issues)
    )
    classifications = _classifications(data, "", issues, depth=0)
    relations = tuple(
        _relation(raw, path, issues)
        for path, raw in _items(data.get("relations"), "relations", issues)
    )
    if issues.problems:
        raise SchemaError(issues.problems)
    return CategorySchema(tools, classifications, relations, _extra(data, _KNOWN_TOP))


def _tool(raw: Mapping[object, object], path: str, issues: _Issues) -> ToolSchema:
    schema_id = _text(raw, "schemaId", path, issues)
    issues.claim(schema_id, path)
    return ToolSchema(
        schema_id=schema_id,
        tool=_text(raw, "tool", path, issues),
        title=_title(raw, path, issues),
        classifications=_classifications(raw, path, issues, depth=1),
        extra=_extra(raw, _KNOWN_TOOL),
    )


def _classifications(
    raw: Mapping[object, object], parent: str, issues: _Issues, *, depth: int
) -> tuple[ClassificationSchema, ...]:
    path = f"{parent}.classifications" if parent else "classifications"
    if depth > MAX_DEPTH:
        issues.add(path, f"classifications nest deeper than {MAX_DEPTH} levels")
        return ()
    return tuple(
        _classification(item, item_path, issues, depth)
        for item_path, item in _items(raw.get("classifications"), path, issues)
    )


def _classification(
    raw: Mapping[object, object], path: str, issues: _Issues, depth: int
) -> ClassificationSchema:
    schema_id = _text(raw, "schemaId", path, issues)
    issues.claim(schema_id, path)
    tool = _text(raw, "tool", path, issues)
    required = raw.get("required", False)
    if not isinstance(required, bool):
        issues.add(f"{path}.required", "expected true or false")
        required = False
    return ClassificationSchema(
        schema_id=schema_id,
        tool=tool,
        title=_title(raw, path, issues),
        required=required,
        options=_options(raw, path, tool, issues),
        classifications=_classifications(raw, path, issues, depth=depth + 1),
        extra=_extra(raw, _KNOWN_CLASSIFICATION),
    )


def _options(
    raw: Mapping[object, object], parent: str, tool: str, issues: _Issues
) -> tuple[OptionSchema, ...]:
    path = f"{parent}.options"
    found: list[OptionSchema] = []
    values: set[str] = set()
    for item_path, item in _items(raw.get("options"), path, issues):
        value = item.get("value")
        if not isinstance(value, str):
            issues.add(f"{item_path}.value", "expected a string")
            continue
        if value in values:
            issues.add(f"{item_path}.value", f"{_short(value)} is already an option")
        values.add(value)
        schema_id = _text(item, "schemaId", item_path, issues)
        issues.claim(schema_id, item_path)
        found.append(OptionSchema(value, schema_id, _extra(item, _KNOWN_OPTION)))
    if tool in _SINGLE_ANSWER | _MULTI_ANSWER and raw.get("options") in (None, []):
        issues.add(path, f"a {tool} needs at least one option")
    return tuple(found)


def _relation(raw: Mapping[object, object], path: str, issues: _Issues) -> RelationSchema:
    schema_id = _text(raw, "schemaId", path, issues)
    issues.claim(schema_id, path)
    return RelationSchema(
        schema_id=schema_id,
        tool=_text(raw, "tool", path, issues),
        title=_title(raw, path, issues),
        extra=_extra(raw, _KNOWN_RELATION),
    )


# -- back to JSON ---------------------------------------------------------------------------


def _with_extra(known: dict[str, object], extra: Mapping[str, object]) -> dict[str, object]:
    for key, value in extra.items():
        known.setdefault(key, copy.deepcopy(value))
    return known


def _classification_json(item: ClassificationSchema) -> dict[str, object]:
    known: dict[str, object] = {
        "title": item.title,
        "tool": item.tool,
        "schemaId": item.schema_id,
        "required": item.required,
        "classifications": [_classification_json(c) for c in item.classifications],
    }
    if item.options or item.tool in _SINGLE_ANSWER | _MULTI_ANSWER:
        known["options"] = [
            _with_extra({"value": o.value, "schemaId": o.schema_id}, o.extra) for o in item.options
        ]
    return _with_extra(known, item.extra)


def to_json(schema: CategorySchema) -> dict[str, object]:
    """The schema as JSON in Ango's shape; ``parse_schema`` of it gives an equal schema."""
    tools = [
        _with_extra(
            {
                "title": t.title,
                "tool": t.tool,
                "schemaId": t.schema_id,
                "classifications": [_classification_json(c) for c in t.classifications],
            },
            t.extra,
        )
        for t in schema.tools
    ]
    relations = [
        _with_extra({"title": r.title, "tool": r.tool, "schemaId": r.schema_id}, r.extra)
        for r in schema.relations
    ]
    known: dict[str, object] = {
        "tools": tools,
        "classifications": [_classification_json(c) for c in schema.classifications],
        "relations": relations,
    }
    return _with_extra(known, schema.extra)


# -- geometry -------------------------------------------------------------------------------

_Add: TypeAlias = Callable[[str, str], None]
_Shape: TypeAlias = Callable[[object, str, _Add], None]


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _is_point(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_number(c) for c in value)


def _points(minimum: int, what: str) -> _Shape:
    def check(value: object, path: str, add: _Add) -> None:
        if not isinstance(value, list):
            add(path, f"expected a list of at least {minimum} points [x, y]")
            return
        if len(value) < minimum:
            add(path, f"has {len(value)} points: a {what} needs at least {minimum}")
        bad = [i for i, point in enumerate(value) if not _is_point(point)]
        if bad:
            more = f" ({len(bad) - 1} more bad points follow)" if len(bad) > 1 else ""
            add(f"{path}[{bad[0]}]", f"expected a point [x, y] of two numbers{more}")

    return check


def _numbers(value: object, path: str, add: _Add, keys: Sequence[str]) -> None:
    if not isinstance(value, dict):
        add(path, f"expected an object {{{', '.join(keys)}}}")
        return
    for key in keys:
        if not _is_number(value.get(key)):
            add(f"{path}.{key}", "expected a number")


def _bounding_box(value: object, path: str, add: _Add) -> None:
    _numbers(value, path, add, ("x", "y", "height", "width"))


def _rotated_bounding_box(value: object, path: str, add: _Add) -> None:
    _numbers(value, path, add, ("x", "y", "width", "height", "rotation"))
    if not isinstance(value, dict):
        return
    rotation = value.get("rotation")
    if isinstance(rotation, int | float) and _is_number(rotation) and not -180 <= rotation <= 180:
        add(f"{path}.rotation", "expected degrees from -180 to 180")
    corners = value.get("corners")
    if corners is not None and not (
        isinstance(corners, list) and len(corners) == 4 and all(_is_point(c) for c in corners)
    ):
        add(f"{path}.corners", "expected four points [x, y]")


def _point(value: object, path: str, add: _Add) -> None:
    if not _is_point(value):
        add(path, "expected a point [x, y] of two numbers")


_ring = _points(3, "ring")


def _segmentation(value: object, path: str, add: _Add) -> None:
    zones = value.get("zones") if isinstance(value, dict) else None
    if not isinstance(zones, list) or not zones:
        add(path, "expected {zones: [{region, holes}, ...]} with at least one zone")
        return
    for i, zone in enumerate(zones):
        where = f"{path}.zones[{i}]"
        if not isinstance(zone, dict):
            add(where, "expected an object {region, holes}")
            continue
        _ring(zone.get("region"), f"{where}.region", add)
        holes = zone.get("holes", [])
        if not isinstance(holes, list):
            add(f"{where}.holes", "expected a list of rings")
            continue
        for j, hole in enumerate(holes):
            _ring(hole, f"{where}.holes[{j}]", add)


def _is_offset(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _ner(value: object, path: str, add: _Add) -> None:
    if not isinstance(value, dict):
        add(path, "expected an object {start, end, selection}")
        return
    start, end = value.get("start"), value.get("end")
    for key, offset in (("start", start), ("end", end)):
        if not _is_offset(offset):
            add(f"{path}.{key}", "expected a character offset (a whole number, 0 or more)")
    if isinstance(start, int) and isinstance(end, int) and 0 <= end < start:
        add(f"{path}.end", "is before start")
    if not isinstance(value.get("selection"), str):
        add(f"{path}.selection", "expected the selected text (a string)")


def _pdf(value: object, path: str, add: _Add) -> None:
    if not isinstance(value, dict):
        add(path, "expected an object {position, content}")
        return
    position = value.get("position")
    where = f"{path}.position"
    if not isinstance(position, dict):
        add(where, "expected an object {boundingRect, rects, pageNumber}")
    else:
        page = position.get("pageNumber")
        if not _is_offset(page) or page == 0:
            add(f"{where}.pageNumber", "expected a page number (a whole number, 1 or more)")
        if not isinstance(position.get("boundingRect"), dict):
            add(f"{where}.boundingRect", "expected an object")
        rects = position.get("rects")
        if not isinstance(rects, list) or not all(isinstance(r, dict) for r in rects):
            add(f"{where}.rects", "expected a list of objects")
    content = value.get("content")
    if not isinstance(content, dict) or not any(
        isinstance(content.get(k), str) for k in ("text", "image")
    ):
        add(f"{path}.content", "expected {text} or {image}")


_SHAPES: Final[Mapping[str, _Shape]] = {
    "bounding-box": _bounding_box,
    "rotated-bounding-box": _rotated_bounding_box,
    "polygon": _points(3, "polygon"),
    "polyline": _points(2, "polyline"),
    "point": _point,
    "segmentation": _segmentation,
    "ner": _ner,
    "pdf": _pdf,
}


# -- checking a submission ------------------------------------------------------------------


def check_annotations(
    schema: CategorySchema, tools: object, classifications: object, relations: object
) -> list[Problem]:
    """Every problem with a submission's annotations (export format), in document order.

    Never raises: any input gives a list, empty when the submission is valid.
    """
    checker = _Checker(schema)
    checker.tools(tools)
    checker.top_classifications(classifications)
    checker.relations(relations)
    return checker.problems


def _answered(answer: object) -> bool:
    return answer is not None and answer not in ("", [])


class _Checker:
    def __init__(self, schema: CategorySchema) -> None:
        self.schema = schema
        self.problems: list[Problem] = []
        # objectId -> path of its first use; relations may point at these.
        self.annotations: dict[str, str] = {}
        self.relation_ids: dict[str, str] = {}
        geometry = set(_SHAPES) | {t.tool for t in schema.tools}
        self.geometry = frozenset(geometry - _TOOL_KEYS)

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def _list(self, value: object, path: str) -> Iterator[tuple[str, dict[object, object]]]:
        if not isinstance(value, list):
            self.add(path, "expected a list")
            return
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield f"{path}[{i}]", item
            else:
                self.add(f"{path}[{i}]", "expected an object")

    def _object_id(self, raw: Mapping[object, object], path: str, registry: dict[str, str]) -> None:
        object_id = raw.get("objectId")
        if not isinstance(object_id, str) or not object_id:
            self.add(f"{path}.objectId", "expected a non-empty string")
            return
        first = self.annotations.get(object_id) or self.relation_ids.get(object_id)
        if first is not None:
            self.add(f"{path}.objectId", f"{_short(object_id)} is already the objectId of {first}")
            return
        registry[object_id] = path

    def _schema_id(self, raw: Mapping[object, object], path: str) -> str | None:
        schema_id = raw.get("schemaId")
        if isinstance(schema_id, str) and schema_id:
            return schema_id
        self.add(f"{path}.schemaId", "expected a non-empty string")
        return None

    # tools

    def tools(self, value: object) -> None:
        for path, raw in self._list(value, "tools"):
            self._object_id(raw, path, self.annotations)
            spec = self._tool_spec(raw, path)
            if spec is not None:
                self._geometry(raw, path, spec)
            scope = spec.classifications if spec is not None else None
            self.classifications(raw.get("classifications", []), path, scope, depth=1)

    def _tool_spec(self, raw: Mapping[object, object], path: str) -> ToolSchema | None:
        schema_id = self._schema_id(raw, path)
        if schema_id is None:
            return None
        spec = self.schema.tool(schema_id)
        if spec is None:
            self.add(
                f"{path}.schemaId", f"{_short(schema_id)} is not a tool of the category schema"
            )
        return spec

    def _geometry(self, raw: Mapping[object, object], path: str, spec: ToolSchema) -> None:
        keys = [k for k in raw if k in self.geometry]
        kind = spec.tool
        shape = _SHAPES.get(kind)
        if shape is None:
            # A tool whose geometry we do not know: only refuse another tool's geometry.
            keys = [k for k in keys if k != kind]
        elif len(keys) == 1 and keys[0] == kind:
            shape(raw[kind], f"{path}.{kind}", self.add)
            return
        elif not keys:
            self.add(path, f"has no geometry: expected a {kind!r} key")
            return
        if len(keys) > 1:
            listed = ", ".join(str(k) for k in keys)
            self.add(path, f"has {len(keys)} geometry keys ({listed}): expected one, {kind!r}")
        elif keys:
            title = spec.title or spec.schema_id
            self.add(f"{path}.{keys[0]}", f"is {keys[0]} geometry, but {title!r} is a {kind}")

    # classifications

    def top_classifications(self, value: object) -> None:
        self.classifications(value, "", self.schema.classifications, depth=0)
        answered = {
            raw["schemaId"]
            for raw in (value if isinstance(value, list) else [])
            if isinstance(raw, dict)
            and isinstance(raw.get("schemaId"), str)
            and _answered(raw.get("answer"))
        }
        for spec in self.schema.classifications:
            if spec.required and spec.schema_id not in answered:
                title = spec.title or spec.schema_id
                self.add("classifications", f"{title!r} ({spec.schema_id}) is required: answer it")

    def classifications(
        self,
        value: object,
        parent: str,
        scope: Sequence[ClassificationSchema] | None,
        *,
        depth: int,
    ) -> None:
        """Check a list of classifications; ``scope`` None: their schema is unknown."""
        path = f"{parent}.classifications" if parent else "classifications"
        if depth > MAX_DEPTH:
            self.add(path, f"classifications nest deeper than {MAX_DEPTH} levels")
            return
        allowed = {c.schema_id: c for c in scope} if scope is not None else None
        for item_path, raw in self._list(value, path):
            self._object_id(raw, item_path, self.annotations)
            spec = self._classification_spec(raw, item_path, allowed)
            if spec is not None:
                self._answer(raw, item_path, spec)
            nested = spec.classifications if spec is not None else None
            self.classifications(raw.get("classifications", []), item_path, nested, depth=depth + 1)

    def _classification_spec(
        self,
        raw: Mapping[object, object],
        path: str,
        allowed: Mapping[str, ClassificationSchema] | None,
    ) -> ClassificationSchema | None:
        schema_id = self._schema_id(raw, path)
        if schema_id is None or allowed is None:
            return None
        spec = allowed.get(schema_id)
        if spec is None:
            self.add(
                f"{path}.schemaId", f"{_short(schema_id)} is not a classification allowed here"
            )
            return None
        tool = raw.get("tool")
        if tool is not None and tool != spec.tool:
            self.add(f"{path}.tool", f"is {_short(tool)}, but the schema says {spec.tool!r}")
        return spec

    def _answer(self, raw: Mapping[object, object], path: str, spec: ClassificationSchema) -> None:
        answer = raw.get("answer")
        values = [o.value for o in spec.options]
        where = f"{path}.answer"
        if spec.tool == "text" and not isinstance(answer, str):
            self.add(where, "expected a string")
        elif spec.tool in _SINGLE_ANSWER and not (isinstance(answer, str) and answer in values):
            self.add(where, f"expected one of {_choices(values)}; got {_short(answer)}")
        elif spec.tool in _MULTI_ANSWER:
            self._multi_answer(answer, where, values)

    def _multi_answer(self, answer: object, path: str, values: Sequence[str]) -> None:
        if not isinstance(answer, list):
            self.add(path, f"expected a list of options from {_choices(values)}")
            return
        seen: set[str] = set()
        for i, item in enumerate(answer):
            if not isinstance(item, str) or item not in values:
                self.add(f"{path}[{i}]", f"expected one of {_choices(values)}; got {_short(item)}")
            elif item in seen:
                self.add(f"{path}[{i}]", f"{_short(item)} is chosen twice")
            else:
                seen.add(item)

    # relations

    def relations(self, value: object) -> None:
        for path, raw in self._list(value, "relations"):
            self._object_id(raw, path, self.relation_ids)
            spec = self._relation_spec(raw, path)
            pair, group = "from" in raw or "to" in raw, "group" in raw
            kind = spec.tool if spec is not None else None
            if pair == group:
                both = "has both from/to and group" if pair else "has neither from/to nor group"
                self.add(path, f"{both}: expected from and to (single) or group")
            elif (kind, pair) in (("group", True), ("single", False)):
                self.add(path, f"does not match the schema's relation, which is a {kind}")
            elif pair:
                self._pair(raw, path)
            else:
                self._group(raw.get("group"), f"{path}.group")

    def _relation_spec(self, raw: Mapping[object, object], path: str) -> RelationSchema | None:
        schema_id = self._schema_id(raw, path)
        if schema_id is None:
            return None
        spec = self.schema.relation(schema_id)
        if spec is None:
            self.add(
                f"{path}.schemaId", f"{_short(schema_id)} is not a relation of the category schema"
            )
        return spec

    def _reference(self, value: object, path: str) -> None:
        if not isinstance(value, str):
            self.add(path, "expected the objectId of a tool or classification")
        elif value not in self.annotations:
            self.add(path, f"{_short(value)} is not the objectId of a tool or classification here")

    def _pair(self, raw: Mapping[object, object], path: str) -> None:
        self._reference(raw.get("from"), f"{path}.from")
        self._reference(raw.get("to"), f"{path}.to")
        direction = raw.get("direction")
        if direction is not None and direction not in _DIRECTIONS:
            self.add(f"{path}.direction", f"expected one of {', '.join(_DIRECTIONS)}")

    def _group(self, value: object, path: str) -> None:
        if not isinstance(value, list) or not value:
            self.add(path, "expected a non-empty list of objectIds")
            return
        for i, item in enumerate(value):
            self._reference(item, f"{path}[{i}]")


def _choices(values: Sequence[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:10])
    more = f" and {len(values) - 10} more" if len(values) > 10 else ""
    return f"[{shown}{more}]"


# -- routing facts --------------------------------------------------------------------------


def present_schema_ids(
    tools: object, classifications: object, schema: CategorySchema | None = None
) -> frozenset[str]:
    """The schemaIds of the tools and classifications (any depth) in a submission.

    With ``schema``, the schemaIds of chosen options too, so a Logic rule can test an
    answer. Tolerates malformed input: what is not understood is skipped.
    """
    found: set[str] = set()
    _collect(tools, found, schema, 0)
    _collect(classifications, found, schema, 0)
    return frozenset(found)


def _collect(value: object, found: set[str], schema: CategorySchema | None, depth: int) -> None:
    if depth > MAX_DEPTH or not isinstance(value, list):
        return
    for raw in value:
        if not isinstance(raw, dict):
            continue
        schema_id = raw.get("schemaId")
        if isinstance(schema_id, str):
            found.add(schema_id)
            found.update(_chosen_options(schema, schema_id, raw.get("answer")))
        _collect(raw.get("classifications"), found, schema, depth + 1)


def _chosen_options(schema: CategorySchema | None, schema_id: str, answer: object) -> Iterator[str]:
    spec = schema.classification(schema_id) if schema is not None else None
    if spec is None:
        return
    chosen = answer if isinstance(answer, list) else [answer]
    for option in spec.options:
        if option.value in chosen:
            yield option.schema_id
