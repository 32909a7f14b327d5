"""The Ango export format: typed models, parsing, exact re-serialisation, and the two views.

Receivers call `parse` (or `parse_many`) on a webhook body or an export and get typed models
back; `to_dict` / `to_json` give back the same JSON, key for key and in the same order, with
every unknown field kept. The engine builds one `Snapshot` per task and renders it with
`export_view` or `webhook_view`, then `render` (compact orjson) for the bytes it stores.

Bad input raises `PayloadError` (a `ValueError`) and nothing else; its `errors` name the path
of each bad field (`task.tools[3].polygon[2]`) and what was expected. Messages never echo
input values, only their JSON kind: a body may carry signed URLs or other secrets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, TypeAlias

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

__all__ = [
    "GEOMETRY_KEYS",
    "PAYLOAD_FORMATS",
    "AnnotationMetadata",
    "AssetMetadata",
    "BoundingBox",
    "Classification",
    "GroupRelation",
    "Ner",
    "PayloadError",
    "PayloadFormat",
    "Pdf",
    "PdfContent",
    "PdfPosition",
    "PdfRect",
    "Record",
    "Relation",
    "RotatedBoundingBox",
    "Segmentation",
    "SingleRelation",
    "Snapshot",
    "StageHistoryEntry",
    "Task",
    "Tool",
    "Zone",
    "export_view",
    "format_timestamp",
    "parse",
    "parse_many",
    "parse_timestamp",
    "render",
    "to_dict",
    "to_json",
    "webhook_view",
]

PayloadFormat: TypeAlias = Literal["ango-2023", "ango-2025"]
PAYLOAD_FORMATS: tuple[PayloadFormat, ...] = ("ango-2023", "ango-2025")

# "spline" and "medical-brush" are not in the contract's table but current Ango docs list them
# on tools; knowing them keeps real Ango webhooks parseable.
GEOMETRY_KEYS: tuple[str, ...] = (
    "bounding-box",
    "rotated-bounding-box",
    "polygon",
    "polyline",
    "point",
    "segmentation",
    "ner",
    "pdf",
    "spline",
)
_MEDICAL_BRUSH = "medical-brush"
_GEOMETRY_FIELDS = {key: key.replace("-", "_") for key in GEOMETRY_KEYS}

_STRING_ANSWER_TOOLS = frozenset({"radio", "single-dropdown", "text"})
_LIST_ANSWER_TOOLS = frozenset({"checkbox", "multi-dropdown"})
_SHOWN_ERRORS = 10


# ---------------------------------------------------------------------------------------------
# The error


class PayloadError(ValueError):
    """Input is not a valid Ango record. `errors` lists (path, message) for every bad field."""

    def __init__(self, errors: Iterable[tuple[str, str]]) -> None:
        self.errors: list[tuple[str, str]] = list(errors)
        shown = "; ".join(f"{path}: {message}" for path, message in self.errors[:_SHOWN_ERRORS])
        hidden = len(self.errors) - _SHOWN_ERRORS
        more = f"; and {hidden} more" if hidden > 0 else ""
        super().__init__(f"invalid Ango payload: {shown}{more}")

    def __reduce__(self) -> tuple[type[PayloadError], tuple[list[tuple[str, str]]]]:
        return (type(self), (self.errors,))


_KINDS = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    dict: "an object",
}


def _kind(value: object) -> str:
    """The JSON kind of a value, for messages: never the value itself (it may be a secret)."""
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    return _KINDS.get(type(value), type(value).__name__)


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
_FIXED = {
    "missing": "required field is missing",
    "recursion_depth_exceeded": "nested too deeply",
}
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
# Tags of the relation union: pydantic puts them in error locations, users never see them.
_SINGLE_TAG = "<single relation>"
_GROUP_TAG = "<group relation>"


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if part in (_SINGLE_TAG, _GROUP_TAG):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{orjson.dumps(part).decode()}]"
    return out or "$"


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind in _FIXED:
        return _FIXED[kind]
    ctx = error.get("ctx") or {}
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
    elif kind == "literal_error":
        expected = str(ctx.get("expected"))
    elif kind == "greater_than_equal":
        return f"expected a value >= {ctx.get('ge')}"
    else:  # our own "payload" errors, and any other: pydantic's message names no value
        return str(error["msg"])
    return f"expected {expected}, got {_kind(error.get('input'))}"


def _translate(exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for error in exc.errors(include_url=False):
        seen[(_path(prefix + tuple(error["loc"])), _message(error))] = None
    return list(seen)


# ---------------------------------------------------------------------------------------------
# Leaf types. Numbers keep their JSON type: int stays int and float stays float, because a
# pydantic `float` would turn 5 into 5.0 and break the exact round trip.

_Number: TypeAlias = int | float


class _Leaf:
    """A plain validator with no Python serializer: the stored value is already JSON."""

    def __init__(self, check: core_schema.NoInfoValidatorFunction, schema: JsonSchemaValue):
        self._check = check
        self._schema = schema

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(self._check)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return dict(self._schema)


def _number(value: Any) -> _Number:
    if type(value) is int or type(value) is float:
        return value
    raise PydanticCustomError("payload", "expected a number, got {got}", {"got": _kind(value)})


def _pair(value: Any) -> list[_Number]:
    got = _kind(value)
    if type(value) is list and len(value) == 2:
        x, y = value
        if (type(x) is int or type(x) is float) and (type(y) is int or type(y) is float):
            return value
        got = f"[{_kind(x)}, {_kind(y)}]"
    raise PydanticCustomError(
        "payload", "expected a pair of numbers [x, y], got {got}", {"got": got}
    )


_Num = Annotated[_Number, _Leaf(_number, {"type": "number"})]
_Pair = Annotated[
    list[_Number],
    _Leaf(_pair, {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}),
]
_Timestamp: TypeAlias = str  # kept exactly as given; `parse_timestamp` reads it


# ---------------------------------------------------------------------------------------------
# Models


class _Node(BaseModel):
    """Base of every model: keeps unknown fields, input key order, and which keys were given.

    Fields are named as their JSON keys (`taskId`, `objectId`), so the Ango docs read
    straight onto the models; keys that are not Python names get one: `from` is `from_`,
    `bounding-box` is `bounding_box`, `rotated-bounding-box` and `medical-brush` likewise.

    Serialising (`to_dict`, `to_json`, and also `model_dump`) gives back exactly the keys
    that were given, in their input order; `model_dump` options such as `exclude` do not apply.
    """

    model_config = ConfigDict(
        extra="allow",
        strict=True,  # lax mode would turn "5" into 5 or 5.0 into 5: the round trip must be exact
        validate_by_alias=True,
        validate_by_name=False,  # a "from_" key in the input is an unknown field, not `from`
        serialize_by_alias=True,
    )

    @model_validator(mode="wrap")
    @classmethod
    def _remember_key_order(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        node = handler(data)
        if type(data) is dict:
            # Stored in pydantic's own slot for private values: declaring a PrivateAttr instead
            # costs a third of the parse time (pydantic initialises it for every model).
            memo = {_KEYS: tuple(data), _SIZES: _sizes(node)}
            object.__setattr__(node, "__pydantic_private__", memo)
        return node

    @model_serializer(mode="plain")
    def _as_json(self) -> dict[str, Any]:
        return _plain(self)


_KEYS = "_input_key_order"
_SIZES = "_sizes_after_parse"
_FIELDS: dict[type[_Node], dict[str, str]] = {}


def _sizes(node: _Node) -> tuple[int, int]:
    # Setting a field that was absent, or adding or removing an unknown one, changes these.
    return len(node.__pydantic_fields_set__), len(node.__pydantic_extra__ or ())


def _fields(cls: type[_Node]) -> dict[str, str]:
    """JSON key -> field name, in declaration order."""
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = {info.alias or name: name for name, info in cls.model_fields.items()}
        _FIELDS[cls] = fields
    return fields


def _plain(node: _Node) -> dict[str, Any]:
    """The JSON object of a node: given fields and unknown fields, in input key order."""
    memo = node.__pydantic_private__
    if not memo:
        return _every_given(node, ())
    if memo[_SIZES] != _sizes(node):
        return _every_given(node, memo[_KEYS])
    fields = _fields(type(node))
    values = node.__dict__
    extra = node.__pydantic_extra__ or {}
    out: dict[str, Any] = {}
    for key in memo[_KEYS]:
        name = fields.get(key)
        out[key] = extra[key] if name is None else _value(values[name])
    return out


def _every_given(node: _Node, keys: tuple[str, ...]) -> dict[str, Any]:
    """The slow path, for nodes built in Python or changed after parsing."""
    given = node.__pydantic_fields_set__
    extra = node.__pydantic_extra__ or {}
    values = node.__dict__
    out = {
        key: _value(values[name])
        for key, name in _fields(type(node)).items()
        # pydantic counts unknown fields in fields_set by their key: "stage_id" given as an
        # unknown field must not make the stageId field look given.
        if name in given and (name not in extra or key in keys)
    }
    out.update(extra)
    ordered = {key: out[key] for key in keys if key in out}
    ordered.update(out)  # keys given in the input keep their place; the rest go last
    return ordered


def _value(value: Any) -> Any:
    # Field values are JSON already except nested models; lists hold one kind of item.
    if type(value) is list:
        if value and isinstance(value[0], _Node):
            return [_plain(item) for item in value]
        return value
    if isinstance(value, _Node):
        return _plain(value)
    return value


class AnnotationMetadata(_Node):
    """Who made an annotation, when, in which stage."""

    createdAt: _Timestamp
    createdBy: str
    createdIn: str
    updatedAt: _Timestamp | None = None
    updatedBy: str | None = None
    updatedIn: str | None = None


class BoundingBox(_Node):
    """Pixels, origin top-left; width and height may be negative."""

    x: _Num
    y: _Num
    height: _Num
    width: _Num


class RotatedBoundingBox(_Node):
    x: _Num
    y: _Num
    width: _Num
    height: _Num
    rotation: _Num  # degrees, -180..180 (not enforced: float noise at the ends is common)
    corners: list[_Pair]

    @field_validator("corners")
    @classmethod
    def _four_corners(cls, corners: list[list[_Number]]) -> list[list[_Number]]:
        if len(corners) != 4:
            raise PydanticCustomError(
                "payload",
                "expected 4 corners [[x, y], ...], got {got}",
                {"got": _kind(corners)},
            )
        return corners


class Zone(_Node):
    region: list[_Pair]
    holes: list[list[_Pair]] = Field(default_factory=list)


class Segmentation(_Node):
    zones: list[Zone]


class Ner(_Node):
    start: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(ge=0)]
    selection: str


class PdfRect(_Node):
    x1: _Num
    y1: _Num
    x2: _Num
    y2: _Num
    width: _Num
    height: _Num


class PdfPosition(_Node):
    boundingRect: PdfRect
    rects: list[PdfRect]
    pageNumber: int


class PdfContent(_Node):
    """`{text}` for a text selection or `{image}` for an area."""

    text: str | None = None
    image: str | None = None


class Pdf(_Node):
    position: PdfPosition
    content: PdfContent


class Classification(_Node):
    """A classification answer; nested ones hang under tools and other classifications."""

    tool: str  # declared before `answer` so the answer check can see it
    answer: Any
    objectId: str
    schemaId: str
    title: str
    classifications: list[Classification]
    page: Annotated[int, Field(ge=0)] | None = None
    metadata: AnnotationMetadata | None = None

    @field_validator("answer")
    @classmethod
    def _answer_fits_tool(cls, answer: Any, info: ValidationInfo) -> Any:
        tool = info.data.get("tool")
        if tool in _STRING_ANSWER_TOOLS and type(answer) is not str:
            raise PydanticCustomError(
                "payload",
                "expected a string for a {tool} answer, got {got}",
                {"tool": tool, "got": _kind(answer)},
            )
        if tool in _LIST_ANSWER_TOOLS and not (
            type(answer) is list and all(type(item) is str for item in answer)
        ):
            raise PydanticCustomError(
                "payload",
                "expected a list of strings for a {tool} answer, got {got}",
                {"tool": tool, "got": _kind(answer)},
            )
        return answer


class Tool(_Node):
    """One annotation object: exactly one geometry key (see `GEOMETRY_KEYS`) and its data.

    The one exception is a voxel-brush object (`"medical-brush": true`): its mask travels in
    `medicalBrushDataUrl` and the tool only carries its nested classifications.
    """

    bounding_box: BoundingBox | None = Field(None, alias="bounding-box")
    rotated_bounding_box: RotatedBoundingBox | None = Field(None, alias="rotated-bounding-box")
    polygon: list[_Pair] | None = None
    polyline: list[_Pair] | None = None
    point: _Pair | None = None
    segmentation: Segmentation | None = None
    ner: Ner | None = None
    pdf: Pdf | None = None
    spline: Any = None  # shape not documented: kept as given
    medical_brush: bool | None = Field(None, alias=_MEDICAL_BRUSH)
    objectId: str
    schemaId: str
    title: str
    classifications: list[Classification]
    page: Annotated[int, Field(ge=0)] | None = None
    metadata: AnnotationMetadata | None = None
    interpolationStopped: bool | None = None

    @field_validator(
        "bounding_box",
        "rotated_bounding_box",
        "polygon",
        "polyline",
        "point",
        "segmentation",
        "ner",
        "pdf",
        "spline",
        mode="before",
    )
    @classmethod
    def _geometry_not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("payload", "expected a geometry, got null")
        return value

    @model_validator(mode="after")
    def _exactly_one_geometry(self) -> Self:
        found = self.geometry_keys()
        if len(found) == 1 or (not found and self.medical_brush is True):
            return self
        raise PydanticCustomError(
            "payload",
            "expected exactly one geometry key ({allowed}), found {found}",
            {
                "allowed": ", ".join(GEOMETRY_KEYS),
                "found": ", ".join(found) if found else "none",
            },
        )

    def geometry_keys(self) -> list[str]:
        """The geometry keys this tool carries (exactly one once validated, or none for a
        medical-brush object)."""
        # A given geometry is never null (refused above); an absent one is None.
        return [key for key in GEOMETRY_KEYS if getattr(self, _GEOMETRY_FIELDS[key]) is not None]

    @property
    def geometry_key(self) -> str | None:
        """`"bounding-box"`, `"polygon"`, ...; None for a medical-brush object."""
        keys = self.geometry_keys()
        return keys[0] if keys else None

    @property
    def geometry(self) -> Any:
        """The geometry value (a model, a list of pairs, a pair, or raw JSON for spline)."""
        key = self.geometry_key
        return None if key is None else getattr(self, _GEOMETRY_FIELDS[key])


class SingleRelation(_Node):
    from_: str = Field(alias="from")
    to: str
    objectId: str
    schemaId: str
    direction: Literal["straight", "reverse", "bidirectional"]
    title: str
    page: Annotated[int, Field(ge=0)] | None = None


class GroupRelation(_Node):
    group: list[str]
    objectId: str
    schemaId: str
    title: str
    page: Annotated[int, Field(ge=0)] | None = None


def _relation_kind(value: Any) -> str:
    # Called on raw input when validating and on the model when serialising.
    group = isinstance(value, GroupRelation) or (isinstance(value, dict) and "group" in value)
    return _GROUP_TAG if group else _SINGLE_TAG


Relation: TypeAlias = Annotated[
    Annotated[SingleRelation, Tag(_SINGLE_TAG)] | Annotated[GroupRelation, Tag(_GROUP_TAG)],
    Discriminator(_relation_kind),
]


class StageHistoryEntry(_Node):
    """The task as it left one stage."""

    stage: str
    stageId: str
    duration: int
    completedAt: _Timestamp
    completedBy: str | None = None
    tools: list[Tool]
    classifications: list[Classification]
    relations: list[Relation]
    brushDataUrl: str | None
    medicalBrushDataUrl: str | None = None


class Task(_Node):
    type: str | None = None
    taskId: str
    stage: str
    stageId: str | None = None
    stageName: str | None = None
    updatedAt: _Timestamp | None
    updatedBy: str | None
    duration: int | None = None
    blurDuration: int | None = None
    idleDuration: int | None = None
    totalDuration: int
    totalBlurDuration: int | None = None
    totalIdleDuration: int | None = None
    tools: list[Tool]
    classifications: list[Classification]
    relations: list[Relation]
    brushDataUrl: str | None
    medicalBrushDataUrl: str | None
    stageHistory: list[StageHistoryEntry] | None = None


class AssetMetadata(_Node):
    """`{width, height}` for images; video adds `frameTotal` and `frameRate`."""

    width: _Num | None = None
    height: _Num | None = None
    frameTotal: int | None = None
    frameRate: _Num | None = None


class Record(_Node):
    """One asset with its task: a webhook body (ango-2023 or ango-2025) or an export item."""

    projectId: str | None = None
    categorySchema: dict[str, Any] | None = None
    asset: str
    assetId: str
    dataset: list[Any]
    overlay: list[Any] | None = None
    externalId: str
    metadata: AssetMetadata
    batches: list[str]
    batchNames: list[str] | None = None
    contextData: dict[str, Any] | None = None
    task: Task


# ---------------------------------------------------------------------------------------------
# Parsing and serialising


def _load(data: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> Any:
    if isinstance(data, bytes | bytearray | memoryview | str):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise PayloadError([("$", f"invalid JSON: {exc}")]) from exc
    if isinstance(data, Mapping):
        # A JSON round trip: the model then owns its values (no aliasing of the caller's lists)
        # and holds only what JSON can carry.
        try:
            return orjson.loads(orjson.dumps(dict(data)))
        except TypeError as exc:
            raise PayloadError([("$", f"not JSON-compatible: {exc}")]) from exc
    raise PayloadError([("$", f"expected JSON text or a mapping, got {type(data).__name__}")])


def _validate(value: Any, prefix: tuple[int | str, ...]) -> Record:
    if type(value) is not dict:
        raise PayloadError([(_path(prefix), f"expected an object, got {_kind(value)}")])
    try:
        return Record.model_validate(value)
    except ValidationError as exc:
        raise PayloadError(_translate(exc, prefix)) from exc


def parse(data: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> Record:
    """One record from JSON text (UTF-8 bytes or str) or an already-decoded mapping."""
    return _validate(_load(data), ())


def _records(data: bytes | str) -> list[tuple[int, Any]]:
    """(index, decoded value) pairs: a JSON array's items, or NDJSON lines (index = line - 1)."""
    if isinstance(data, str):
        try:
            data = data.encode()
        except UnicodeEncodeError as exc:
            raise PayloadError([("$", "invalid JSON: text is not valid Unicode")]) from exc
    if data.lstrip()[:1] == b"[":
        items = _load(data)
        return list(enumerate(items))
    out = []
    for number, line in enumerate(data.split(b"\n")):
        if line.strip():
            try:
                out.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise PayloadError([(f"[{number}]", f"invalid JSON: {exc}")]) from exc
    return out


def parse_many(data: bytes | str) -> list[Record]:
    """Records from a JSON array (an export) or NDJSON (one record a line; blank lines skipped).

    Error paths start with the record's index: `[2].task.taskId` (for NDJSON, the 0-based line).
    """
    records: list[Record] = []
    errors: list[tuple[str, str]] = []
    for index, value in _records(data):
        try:
            records.append(_validate(value, (index,)))
        except PayloadError as exc:
            errors.extend(exc.errors)
    if errors:
        raise PayloadError(errors)
    return records


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        if str(exc) != "Recursion limit reached":
            raise PayloadError([("$", f"not JSON-compatible: {exc}")]) from exc
    # orjson writes at most 255 levels but reads up to 1024: the standard library writes
    # what orjson read, up to Python's recursion limit.
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode()
    except (RecursionError, TypeError, ValueError) as exc:
        raise PayloadError([("$", f"not JSON-compatible: {exc}")]) from exc


def to_json(model: BaseModel) -> bytes:
    """Compact JSON equal to what was parsed: same keys in the same order, unknown fields
    kept, absent fields absent, explicit nulls kept, ints as ints and floats exact.

    Raises `PayloadError` only for what JSON cannot carry (values set after parsing, or
    nesting deeper than Python's recursion limit)."""
    if isinstance(model, _Node):
        return _dumps(_plain(model))
    return model.model_dump_json().encode()


def to_dict(model: BaseModel) -> dict[str, Any]:
    """`to_json` as fresh Python data (sharing nothing with the model)."""
    parsed: dict[str, Any] = orjson.loads(to_json(model))
    return parsed


# ---------------------------------------------------------------------------------------------
# Timestamps


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and Z, as Ango writes them: `2023-09-28T09:37:33.733Z`."""
    if moment.utcoffset() is None:
        raise ValueError("format_timestamp needs an aware datetime (a naive one has no zone)")
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """An aware datetime (UTC) from an ISO-8601 timestamp such as `2023-09-28T09:37:33.733Z`."""
    expected = "expected an ISO-8601 timestamp with a zone, like 2023-09-28T09:37:33.733Z"
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise PayloadError([("$", expected)]) from exc
    if moment.utcoffset() is None:
        raise PayloadError([("$", expected)])
    return moment.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# The two views, rendered from one task state


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """What the engine knows of one task at one moment: the single source of every body.

    `stage_id` / `stage_name` name the stage whose work the task carries (the seed's
    `"Label"`); the Webhook stage itself is given to `webhook_view`. `tools`,
    `classifications`, `relations` and `stage_history` hold plain JSON, as stored.
    """

    asset_url: str
    asset_id: str
    external_id: str
    project_id: str
    task_id: str
    stage_id: str
    stage_name: str
    dataset: Sequence[Any] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    context_data: Mapping[str, Any] | None = None
    batches: Sequence[tuple[str, str]] = ()  # (batch_id, batch_name)
    category_schema: Mapping[str, Any] = field(default_factory=dict)
    overlay: Sequence[Any] = ()
    task_type: str = "default"
    updated_at: str | None = None
    updated_by: str | None = None
    duration: int = 0
    blur_duration: int = 0
    idle_duration: int = 0
    total_duration: int = 0
    total_blur_duration: int = 0
    total_idle_duration: int = 0
    tools: Sequence[Any] = ()
    classifications: Sequence[Any] = ()
    relations: Sequence[Any] = ()
    brush_data_url: str | None = None
    medical_brush_data_url: str | None = None
    stage_history: Sequence[Any] | None = None  # None: the field is left out


def _annotations(snapshot: Snapshot) -> dict[str, Any]:
    view: dict[str, Any] = {
        "tools": list(snapshot.tools),
        "classifications": list(snapshot.classifications),
        "relations": list(snapshot.relations),
        "brushDataUrl": snapshot.brush_data_url,
        "medicalBrushDataUrl": snapshot.medical_brush_data_url,
    }
    if snapshot.stage_history is not None:
        view["stageHistory"] = list(snapshot.stage_history)
    return view


def _ango_2023(snapshot: Snapshot, *, batches: list[str], stage_id: bool) -> dict[str, Any]:
    task: dict[str, Any] = {"taskId": snapshot.task_id, "stage": snapshot.stage_name}
    if stage_id:
        task["stageId"] = snapshot.stage_id
    task["updatedAt"] = snapshot.updated_at
    task["updatedBy"] = snapshot.updated_by
    task["totalDuration"] = snapshot.total_duration
    task.update(_annotations(snapshot))
    view: dict[str, Any] = {
        "asset": snapshot.asset_url,
        "assetId": snapshot.asset_id,
        "dataset": list(snapshot.dataset),
        "externalId": snapshot.external_id,
        "metadata": dict(snapshot.metadata),
        "batches": batches,
    }
    if snapshot.context_data is not None:
        view["contextData"] = dict(snapshot.context_data)
    view["task"] = task
    return view


def export_view(snapshot: Snapshot) -> dict[str, Any]:
    """The export format: batches as IDs, no `task.stageId`."""
    batch_ids = [batch_id for batch_id, _ in snapshot.batches]
    return _ango_2023(snapshot, batches=batch_ids, stage_id=False)


def _ango_2025(snapshot: Snapshot, stage_id: str, stage_name: str) -> dict[str, Any]:
    task: dict[str, Any] = {
        "type": snapshot.task_type,
        "taskId": snapshot.task_id,
        "stage": stage_id,
        "stageId": stage_id,
        "stageName": stage_name,
        "updatedAt": snapshot.updated_at,
        "updatedBy": snapshot.updated_by,
        "duration": snapshot.duration,
        "blurDuration": snapshot.blur_duration,
        "idleDuration": snapshot.idle_duration,
        "totalDuration": snapshot.total_duration,
        "totalBlurDuration": snapshot.total_blur_duration,
        "totalIdleDuration": snapshot.total_idle_duration,
        **_annotations(snapshot),
    }
    view: dict[str, Any] = {
        "projectId": snapshot.project_id,
        "categorySchema": dict(snapshot.category_schema),
        "asset": snapshot.asset_url,
        "assetId": snapshot.asset_id,
        "dataset": list(snapshot.dataset),
        "overlay": list(snapshot.overlay),
        "externalId": snapshot.external_id,
        "metadata": dict(snapshot.metadata),
        "batches": [batch_id for batch_id, _ in snapshot.batches],
        "batchNames": [name for _, name in snapshot.batches],
    }
    if snapshot.context_data is not None:
        view["contextData"] = dict(snapshot.context_data)
    view["task"] = task
    return view


def webhook_view(
    snapshot: Snapshot,
    *,
    format: PayloadFormat,
    webhook_stage_id: str,
    webhook_stage_name: str,
) -> dict[str, Any]:
    """The body a Webhook stage sends.

    `ango-2023` (the seed's): the export with batches as names and `task.stageId` naming the
    stage whose work the task carries. `ango-2025`: batches as IDs plus `batchNames`,
    `projectId`, `categorySchema`, `overlay`, `task.type`, durations, and the task's stage
    fields naming the Webhook stage itself.
    """
    if format == "ango-2023":
        names = [name for _, name in snapshot.batches]
        return _ango_2023(snapshot, batches=names, stage_id=True)
    if format == "ango-2025":
        return _ango_2025(snapshot, webhook_stage_id, webhook_stage_name)
    raise ValueError(f"format: expected one of {', '.join(PAYLOAD_FORMATS)}, got {format!r}")


def render(view: Mapping[str, Any]) -> bytes:
    """The compact JSON bytes of a view: what is stored, signed and sent.

    Raises `PayloadError` if the view holds what JSON cannot carry."""
    return _dumps(view if type(view) is dict else dict(view))
