"""hookstage.payload, by property: valid records round-trip exactly, anything else is a
PayloadError, and every view the engine renders parses back to the same bytes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookstage.payload import (
    GEOMETRY_KEYS,
    PAYLOAD_FORMATS,
    PayloadError,
    Record,
    Snapshot,
    export_view,
    format_timestamp,
    parse,
    parse_timestamp,
    render,
    to_json,
    webhook_view,
)

# Whole records are costly to generate: fewer examples for them, more for small inputs.
RECORD_SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
SETTINGS = settings(max_examples=150, deadline=None)

Strategy = st.SearchStrategy[Any]

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)
numbers = ints | floats
texts = st.text(max_size=8)
json_values: Strategy = st.recursive(
    st.none() | st.booleans() | ints | floats | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=4,
)
# Unknown keys, including ones spelled like a field's Python name or pydantic internals.
unknown_keys = texts | st.sampled_from(
    [
        "task_id",
        "object_id",
        "stage_id",
        "from_",
        "bounding_box",
        "_keys",
        "__dict__",
        "model_config",
    ]
)
timestamps = st.datetimes(timezones=st.just(UTC)).map(format_timestamp) | texts
pairs = st.lists(numbers, min_size=2, max_size=2)
pages = st.integers(min_value=0, max_value=10_000)


def nullable(strategy: Strategy) -> Strategy:
    return st.none() | strategy


@st.composite
def objects(
    draw: st.DrawFn,
    required: Mapping[str, Strategy],
    optional: Mapping[str, Strategy] = {},
    reserved: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """A JSON object: required keys, some optional ones, a few unknown ones, in any order."""
    items = [(key, draw(strategy)) for key, strategy in required.items()]
    items += [(key, draw(s)) for key, s in optional.items() if draw(st.booleans())]
    known = set(required) | set(optional) | reserved
    unknown = st.dictionaries(
        unknown_keys.filter(lambda k: k not in known), json_values, max_size=2
    )
    items += draw(unknown).items()
    return dict(draw(st.permutations(items)))


annotation_metadata = objects(
    {"createdAt": timestamps, "createdBy": texts, "createdIn": texts},
    {"updatedAt": nullable(timestamps), "updatedBy": nullable(texts), "updatedIn": nullable(texts)},
)
pdf_rects = objects({k: numbers for k in ("x1", "y1", "x2", "y2", "width", "height")})
GEOMETRIES: dict[str, Strategy] = {
    "bounding-box": objects({"x": numbers, "y": numbers, "height": numbers, "width": numbers}),
    "rotated-bounding-box": objects(
        {
            **{k: numbers for k in ("x", "y", "width", "height", "rotation")},
            "corners": st.lists(pairs, min_size=4, max_size=4),
        }
    ),
    "polygon": st.lists(pairs, max_size=4),
    "polyline": st.lists(pairs, max_size=4),
    "point": pairs,
    "segmentation": objects(
        {
            "zones": st.lists(
                objects(
                    {"region": st.lists(pairs, max_size=3)},
                    {"holes": st.lists(st.lists(pairs, max_size=3), max_size=2)},
                ),
                max_size=2,
            )
        }
    ),
    "ner": objects({"start": pages, "end": pages, "selection": texts}),
    "pdf": objects(
        {
            "position": objects(
                {
                    "boundingRect": pdf_rects,
                    "rects": st.lists(pdf_rects, max_size=2),
                    "pageNumber": ints,
                }
            ),
            "content": objects({}, {"text": nullable(texts), "image": nullable(texts)}),
        }
    ),
    "spline": json_values.filter(lambda v: v is not None),
}
STRING_TOOLS = ["radio", "single-dropdown", "text"]
LIST_TOOLS = ["checkbox", "multi-dropdown"]
other_tools = texts.filter(lambda t: t not in STRING_TOOLS + LIST_TOOLS)


def answers(tool: str) -> Strategy:
    if tool in STRING_TOOLS:
        return texts
    if tool in LIST_TOOLS:
        return st.lists(texts, max_size=3)
    return json_values


@st.composite
def classifications(draw: st.DrawFn, depth: int = 1) -> dict[str, Any]:
    tool = draw(st.sampled_from(STRING_TOOLS + LIST_TOOLS) | other_tools)
    children = st.lists(classifications(depth - 1), max_size=1) if depth > 0 else st.just([])
    return draw(
        objects(
            {
                "answer": answers(tool),
                "objectId": texts,
                "schemaId": texts,
                "title": texts,
                "tool": st.just(tool),
                "classifications": children,
            },
            {"page": nullable(pages), "metadata": annotation_metadata},
        )
    )


@st.composite
def tools(draw: st.DrawFn) -> dict[str, Any]:
    common: dict[str, Strategy] = {
        "objectId": texts,
        "schemaId": texts,
        "title": texts,
        "classifications": st.lists(classifications(), max_size=1),
    }
    optional: dict[str, Strategy] = {
        "page": nullable(pages),
        "metadata": annotation_metadata,
        "interpolationStopped": nullable(st.booleans()),
    }
    key = draw(st.sampled_from((*GEOMETRY_KEYS, "medical-brush")))
    if key == "medical-brush":  # a voxel-brush object: no geometry
        common["medical-brush"] = st.just(True)
    else:
        common[key] = GEOMETRIES[key]
        optional["medical-brush"] = nullable(st.booleans())
    reserved = frozenset((*GEOMETRY_KEYS, "medical-brush"))
    return draw(objects(common, optional, reserved))


ids = {"objectId": texts, "schemaId": texts, "title": texts}
relations = objects(
    {
        "from": texts,
        "to": texts,
        **ids,
        "direction": st.sampled_from(["straight", "reverse", "bidirectional"]),
    },
    {"page": nullable(pages)},
    reserved=frozenset({"group"}),
) | objects({"group": st.lists(texts, max_size=3), **ids}, {"page": nullable(pages)})
ANNOTATIONS: dict[str, Strategy] = {
    "tools": st.lists(tools(), max_size=2),
    "classifications": st.lists(classifications(), max_size=2),
    "relations": st.lists(relations, max_size=2),
}
history_entries = objects(
    {
        "stage": texts,
        "stageId": texts,
        "duration": ints,
        "completedAt": timestamps,
        "tools": st.lists(tools(), max_size=1),
        "classifications": st.lists(classifications(depth=0), max_size=1),
        "relations": st.lists(relations, max_size=1),
        "brushDataUrl": nullable(texts),
    },
    {"completedBy": nullable(texts), "medicalBrushDataUrl": nullable(texts)},
)
tasks = objects(
    {
        "taskId": texts,
        "stage": texts,
        "updatedAt": nullable(timestamps),
        "updatedBy": nullable(texts),
        "totalDuration": ints,
        **ANNOTATIONS,
        "brushDataUrl": nullable(texts),
        "medicalBrushDataUrl": nullable(texts),
    },
    {
        "type": nullable(texts),
        "stageId": nullable(texts),
        "stageName": nullable(texts),
        **{k: nullable(ints) for k in ("duration", "blurDuration", "idleDuration")},
        **{k: nullable(ints) for k in ("totalBlurDuration", "totalIdleDuration")},
        "stageHistory": nullable(st.lists(history_entries, max_size=1)),
    },
)
records = objects(
    {
        "asset": texts,
        "assetId": texts,
        "dataset": st.lists(json_values, max_size=2),
        "externalId": texts,
        "metadata": objects(
            {},
            {
                "width": nullable(numbers),
                "height": nullable(numbers),
                "frameTotal": nullable(ints),
                "frameRate": nullable(numbers),
            },
        ),
        "batches": st.lists(texts, max_size=2),
        "task": tasks,
    },
    {
        "projectId": nullable(texts),
        "categorySchema": nullable(st.dictionaries(texts, json_values, max_size=3)),
        "overlay": nullable(st.lists(json_values, max_size=2)),
        "batchNames": nullable(st.lists(texts, max_size=2)),
        "contextData": nullable(st.dictionaries(texts, json_values, max_size=3)),
    },
)


def exact(value: Any) -> bytes:
    """Bytes that differ whenever values, key order, or int-vs-float differ."""
    return orjson.dumps(value)


@RECORD_SETTINGS
@given(records)
def test_valid_records_round_trip_exactly(record: dict[str, Any]) -> None:
    body = orjson.dumps(record)

    parsed = parse(body)

    assert isinstance(parsed, Record)
    assert to_json(parsed) == body
    assert exact(parsed.model_dump(mode="json")) == body
    assert to_json(parse(record)) == body


# -- anything else is a PayloadError ---------------------------------------------------------


def places(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a JSON value."""
    found: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += [(value, key), *places(item)]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += [(value, index), *places(item)]
    return found


@st.composite
def damaged_records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record with one value replaced by arbitrary JSON, or one key removed."""
    record: dict[str, Any] = draw(records)
    container, key = draw(st.sampled_from(places(record)))
    if isinstance(container, dict) and draw(st.booleans()):
        del container[key]
    else:
        container[key] = draw(json_values)
    return record


def parses_exactly_or_fails_cleanly(body: bytes | str) -> None:
    try:
        parsed = parse(body)
    except PayloadError as exc:
        errors = exc.errors
    else:
        assert to_json(parsed) == orjson.dumps(orjson.loads(body))
        return
    assert errors
    assert all(isinstance(p, str) and isinstance(m, str) and p and m for p, m in errors)


@RECORD_SETTINGS
@given(damaged_records())
def test_a_damaged_record_parses_exactly_or_raises_payload_error(record: dict[str, Any]) -> None:
    parses_exactly_or_fails_cleanly(orjson.dumps(record))


@SETTINGS
@given(json_values)
def test_arbitrary_json_raises_only_payload_error(value: Any) -> None:
    parses_exactly_or_fails_cleanly(orjson.dumps(value))


@SETTINGS
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_arbitrary_bytes_and_text_raise_only_payload_error(data: bytes | str) -> None:
    with contextlib.suppress(PayloadError):
        parse(data)


@SETTINGS
@given(st.dictionaries(texts, json_values | st.builds(object) | st.sets(ints), max_size=3))
def test_arbitrary_mappings_raise_only_payload_error(data: dict[str, Any]) -> None:
    with contextlib.suppress(PayloadError):
        parse(data)


# -- timestamps -------------------------------------------------------------------------------


@SETTINGS
@given(st.datetimes(timezones=st.timezones()))
def test_timestamps_format_and_parse_back_to_the_millisecond(moment: datetime) -> None:
    text = format_timestamp(moment)

    assert text.endswith("Z")
    assert len(text) == len("2023-09-28T09:37:33.733Z")
    back = parse_timestamp(text)
    assert abs(back - moment).total_seconds() < 0.001
    assert format_timestamp(back) == text


# -- views ------------------------------------------------------------------------------------


def snapshot_from(record: dict[str, Any], batch_names: list[str]) -> Snapshot:
    """What an engine would hold for a generated (valid) record's task."""
    task = record["task"]
    history = task.get("stageHistory")
    return Snapshot(
        asset_url=record["asset"],
        asset_id=record["assetId"],
        external_id=record["externalId"],
        project_id=record.get("projectId") or "p",
        task_id=task["taskId"],
        stage_id=task.get("stageId") or "Label",
        stage_name=task["stage"],
        dataset=record["dataset"],
        metadata=record["metadata"],
        context_data=record.get("contextData"),
        batches=list(zip(record["batches"], batch_names, strict=False)),
        category_schema=record.get("categorySchema") or {},
        updated_at=task["updatedAt"],
        updated_by=task["updatedBy"],
        total_duration=task["totalDuration"],
        tools=task["tools"],
        classifications=task["classifications"],
        relations=task["relations"],
        brush_data_url=task["brushDataUrl"],
        medical_brush_data_url=task["medicalBrushDataUrl"],
        stage_history=history,
    )


snapshots = st.builds(snapshot_from, records, st.lists(texts, min_size=2, max_size=2))
ViewFn = Callable[[Snapshot], dict[str, Any]]


def views() -> list[ViewFn]:
    out: list[ViewFn] = [export_view]
    for name in PAYLOAD_FORMATS:
        out.append(
            partial(webhook_view, format=name, webhook_stage_id="id", webhook_stage_name="Webhook")
        )
    return out


@RECORD_SETTINGS
@given(snapshots)
def test_every_view_renders_a_record_that_parses_back_to_the_same_bytes(snapshot: Snapshot) -> None:
    for view in views():
        body = render(view(snapshot))

        assert to_json(parse(body)) == body


@RECORD_SETTINGS
@given(snapshots)
def test_ango_2023_is_the_export_but_for_batches_and_stage_id(snapshot: Snapshot) -> None:
    export = export_view(snapshot)
    webhook = webhook_view(
        snapshot, format="ango-2023", webhook_stage_id="hook-id", webhook_stage_name="Webhook"
    )

    assert export["batches"] == [batch_id for batch_id, _ in snapshot.batches]
    assert webhook["batches"] == [name for _, name in snapshot.batches]
    assert webhook["task"].pop("stageId") == snapshot.stage_id
    webhook["batches"] = export["batches"]
    assert exact(webhook) == exact(export)
