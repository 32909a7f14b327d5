"""hookstage.payload: the Ango samples parse, round-trip exactly, and bad input is named."""

from __future__ import annotations

import copy
import json
import pickle
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookstage import payload
from hookstage.payload import (
    BoundingBox,
    GroupRelation,
    PayloadError,
    RotatedBoundingBox,
    SingleRelation,
    Snapshot,
    export_view,
    format_timestamp,
    parse,
    parse_many,
    parse_timestamp,
    render,
    to_dict,
    to_json,
    webhook_view,
)

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"
SEED = SAMPLES / "webhook-seed-2023.json"
ANGO_2025 = SAMPLES / "webhook-ango-2025.json"
EXPORT = SAMPLES / "export-ango.json"
WEBHOOK_STAGE = "0b6a8f2e-3c1d-4e5f-9a7b-1c2d3e4f5a6b"


def load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def key_orders(value: Any, path: str = "$") -> list[tuple[str, list[str]]]:
    """Every object's keys in order, with where the object sits."""
    if isinstance(value, dict):
        found = [(path, list(value))]
        for key, item in value.items():
            found += key_orders(item, f"{path}.{key}")
        return found
    if isinstance(value, list):
        return [entry for i, item in enumerate(value) for entry in key_orders(item, f"{path}[{i}]")]
    return []


def assert_same_json(actual: Any, expected: Any) -> None:
    """Equal values, equal key order everywhere, and ints still ints (5 != 5.0 in bytes)."""
    assert actual == expected
    assert key_orders(actual) == key_orders(expected)
    assert orjson.dumps(actual) == orjson.dumps(expected)


def seed_with(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = load(SEED)
    record.update(changes)
    return record


def errors_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(PayloadError) as caught:
        parse(orjson.dumps(data) if not isinstance(data, bytes | str) else data)
    return caught.value.errors


# -- the samples ------------------------------------------------------------------------------


def test_seed_sample_parses_into_typed_fields() -> None:
    record = parse(SEED.read_bytes())

    assert record.assetId == "65141af7a9e78800154eeb54"
    assert record.externalId == "Symbol Secondary Usage - White.png"
    assert (record.metadata.width, record.metadata.height) == (445, 95)
    assert record.batches == ["Batch 1"]
    assert record.task.stage == "Label"
    assert record.task.stageId == "Label"
    assert record.task.totalDuration == 11643
    assert record.task.brushDataUrl is None
    [tool] = record.task.tools
    assert tool.geometry_key == "bounding-box"
    assert isinstance(tool.geometry, BoundingBox)
    assert tool.geometry.x == 194.4620486366986
    assert tool.metadata is not None
    assert tool.metadata.createdIn == "Label"


def test_seed_sample_round_trips_to_equal_json_in_the_same_key_order() -> None:
    raw = SEED.read_bytes()

    assert_same_json(orjson.loads(to_json(parse(raw))), orjson.loads(raw))


@pytest.mark.parametrize("path", [SEED, ANGO_2025], ids=lambda p: p.name)
def test_webhook_samples_round_trip(path: Path) -> None:
    assert_same_json(to_dict(parse(path.read_bytes())), load(path))


def test_ango_2025_sample_has_its_extra_fields() -> None:
    record = parse(ANGO_2025.read_bytes())

    assert record.projectId == "6541f0c2a9e7880015aa0001"
    assert record.categorySchema is not None
    assert [tool["tool"] for tool in record.categorySchema["tools"]] == ["bounding-box", "polygon"]
    assert record.overlay == []
    assert record.batchNames == ["Batch 1"]
    assert record.task.type == "default"
    assert record.task.stageName == "Webhook"
    assert (record.task.duration, record.task.idleDuration) == (8120, 1200)
    assert record.task.tools[0].geometry_key == "bounding-box"
    assert record.task.tools[1].polygon == [[10, 900], [1900, 880], [1910, 1070], [5, 1075]]
    assert record.task.classifications[0].answer == "Sunny"


def test_every_export_sample_record_parses_and_round_trips() -> None:
    raw = EXPORT.read_bytes()

    records = parse_many(raw)

    assert_same_json([to_dict(record) for record in records], load(EXPORT))
    for item in load(EXPORT):
        assert_same_json(to_dict(parse(orjson.dumps(item))), item)


def test_export_sample_geometries_classifications_and_relations_are_typed() -> None:
    [record] = parse_many(EXPORT.read_bytes())
    task = record.task

    assert record.contextData == {"camera": "front", "city": "Milan"}
    assert "stageId" not in to_dict(task)
    kinds = [tool.geometry_key for tool in task.tools]
    assert kinds == ["rotated-bounding-box", "point", "polyline", "segmentation"]
    rotated = task.tools[0].geometry
    assert isinstance(rotated, RotatedBoundingBox)
    assert rotated.rotation == -15.5
    assert len(rotated.corners) == 4
    assert task.tools[1].point == [640.5, 360.25]
    assert task.tools[3].segmentation is not None
    assert task.tools[3].segmentation.zones[0].holes == [[[140, 140], [160, 140], [160, 160]]]
    nested = task.tools[0].classifications[0]
    assert nested.answer == ["Parked", "Damaged"]
    assert nested.classifications[0].answer == "minor scratch"
    single, group = task.relations
    assert isinstance(single, SingleRelation)
    assert (single.from_, single.direction) == ("e03c4d5e6f708192a3b4c5d", "straight")
    assert isinstance(group, GroupRelation)
    assert len(group.group) == 2
    assert task.stageHistory is not None
    assert [entry.stageId for entry in task.stageHistory] == ["Start", "Label"]
    assert task.stageHistory[0].completedBy is None
    assert task.stageHistory[1].completedBy == "annotator@example.com"


# -- exact round trip -------------------------------------------------------------------------


def test_ints_stay_ints_and_floats_stay_floats() -> None:
    record = seed_with(metadata={"width": 445.0, "height": 95, "frameRate": 29.97})
    record["task"]["tools"][0]["bounding-box"] = {"x": 5, "y": 5.0, "height": -0.0, "width": 1e300}

    out = to_json(parse(orjson.dumps(record)))

    assert b'"width":445.0,"height":95,' in out
    assert b'"x":5,"y":5.0,"height":-0.0,"width":1e+300' in out
    assert_same_json(orjson.loads(out), record)


def test_absent_fields_stay_absent_and_explicit_nulls_stay() -> None:
    record = seed_with(contextData=None)
    record["task"]["tools"][0]["page"] = None

    parsed = parse(orjson.dumps(record))
    out = to_dict(parsed)

    assert out["contextData"] is None
    assert out["task"]["tools"][0]["page"] is None
    assert "stageHistory" not in out["task"]
    assert "projectId" not in out
    assert_same_json(
        to_dict(parse(SEED.read_bytes()))["task"]["tools"][0], load(SEED)["task"]["tools"][0]
    )


def test_unknown_fields_are_kept_at_every_level_in_place() -> None:
    record: dict[str, Any] = {"first": {"nested": [1, 2.5]}}
    record.update(load(EXPORT)[0])
    record["zz-last"] = None
    task = record["task"]
    task["new-task-field"] = [{"a": 1}]
    tool = task["tools"][0]
    tool["rotated-bounding-box"]["z"] = 3
    tool["classifications"][0]["classifications"][0]["confidence"] = 0.97
    tool["object_id"] = "an unknown key that looks like a Python name"
    task["relations"][0] = {"weight": 1, **task["relations"][0]}
    task["relations"][1]["kind"] = "set"
    task["stageHistory"][1]["reviewer"] = {"score": 4}

    parsed = parse(orjson.dumps(record))

    assert_same_json(to_dict(parsed), record)
    assert parsed.model_extra == {"first": {"nested": [1, 2.5]}, "zz-last": None}
    assert parsed.task.tools[0].objectId == "e03c4d5e6f708192a3b4c5d"


def test_model_dump_gives_the_same_exact_form() -> None:
    parsed = parse(orjson.dumps(load(EXPORT)[0]))

    assert_same_json(parsed.model_dump(mode="json"), to_dict(parsed))
    assert orjson.loads(parsed.model_dump_json()) == to_dict(parsed)


def test_changes_after_parsing_are_serialised() -> None:
    parsed = parse(SEED.read_bytes())
    tool = parsed.task.tools[0]

    tool.title = "Logo"
    tool.page = 2
    out = to_dict(parsed)["task"]["tools"][0]

    assert out["title"] == "Logo"
    assert list(out) == [
        "bounding-box",
        "objectId",
        "classifications",
        "metadata",
        "schemaId",
        "title",
        "page",
    ]


def test_unknown_fields_added_after_parsing_go_last() -> None:
    parsed = parse(SEED.read_bytes())
    box = parsed.task.tools[0].bounding_box
    assert box is not None

    box.label = "logo"  # type: ignore[attr-defined]  # an unknown field, on purpose
    out = to_dict(parsed)["task"]["tools"][0]["bounding-box"]

    assert list(out) == ["x", "y", "height", "width", "label"]
    assert out["label"] == "logo"


def test_models_built_in_python_serialise_in_the_order_given() -> None:
    box = BoundingBox(width=4, x=1, y=2.5, height=3)

    assert to_json(box) == b'{"width":4,"x":1,"y":2.5,"height":3}'


def test_a_record_deeper_than_orjson_writes_still_round_trips() -> None:
    inner: dict[str, Any] = classification("text", "leaf")
    for _ in range(200):  # 400 JSON levels: orjson reads them but writes at most 255
        inner = classification("text", "x") | {"classifications": [inner]}
    record = seed_with()
    record["task"]["classifications"] = [inner]
    body = json.dumps(record, separators=(",", ":")).encode()

    assert to_json(parse(body)) == body


def test_to_dict_shares_nothing_with_the_model() -> None:
    parsed = parse(SEED.read_bytes())

    out = to_dict(parsed)
    out["task"]["tools"].clear()
    out["dataset"].append("x")

    assert len(parsed.task.tools) == 1
    assert parsed.dataset == []


def test_a_mapping_is_parsed_without_sharing_the_callers_objects() -> None:
    record = seed_with(contextData={"tags": ["a"]})

    parsed = parse(record)
    record["contextData"]["tags"].append("b")

    assert parsed.contextData == {"tags": ["a"]}
    assert_same_json(to_dict(parsed), seed_with(contextData={"tags": ["a"]}))


def test_models_copy_and_pickle_with_their_key_order() -> None:
    parsed = parse(orjson.dumps(load(EXPORT)[0]))
    expected = to_dict(parsed)

    for clone in (copy.deepcopy(parsed), parsed.model_copy(), pickle.loads(pickle.dumps(parsed))):
        assert_same_json(to_dict(clone), expected)


def test_parse_many_reads_ndjson_and_skips_blank_lines() -> None:
    seed = orjson.dumps(load(SEED))
    other = orjson.dumps(load(EXPORT)[0])

    records = parse_many(seed + b"\n\n" + other + b"\r\n")

    assert [r.assetId for r in records] == ["65141af7a9e78800154eeb54", "65141af7a9e78800154eeb55"]
    assert parse_many("") == []
    assert parse_many(b"[]") == []


# -- bad input --------------------------------------------------------------------------------


def test_a_bad_point_is_named_by_its_path_and_what_was_expected() -> None:
    record = seed_with()
    polygon = {"polygon": [[0, 0], [1, 1], [2, 2, 2]], "objectId": "o", "schemaId": "s"}
    record["task"]["tools"] += [dict(record["task"]["tools"][0]) for _ in range(2)]
    record["task"]["tools"].append({**polygon, "title": "", "classifications": []})

    errors = errors_of(record)

    assert errors == [
        ("task.tools[3].polygon[2]", "expected a pair of numbers [x, y], got a list of 3 items")
    ]


def test_the_error_message_lists_every_bad_field() -> None:
    record = seed_with(assetId=7, batches="Batch 1")
    del record["task"]["taskId"]
    record["task"]["tools"][0]["bounding-box"]["x"] = "194"

    with pytest.raises(PayloadError) as caught:
        parse(orjson.dumps(record))

    assert isinstance(caught.value, ValueError)
    assert caught.value.errors == [
        ("assetId", "expected a string, got a number"),
        ("batches", "expected a list, got a string"),
        ("task.taskId", "required field is missing"),
        ("task.tools[0].bounding-box.x", "expected a number, got a string"),
    ]
    message = str(caught.value)
    for path, expected in caught.value.errors:
        assert f"{path}: {expected}" in message


def set_at(record: Any, where: str, value: Any) -> None:
    """Put a value at a path written like the error paths: `task.tools[0].point`."""
    steps: list[Any] = [
        int(index) if index else key for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", where)
    ]
    for step in steps[:-1]:
        record = record[step]
    record[steps[-1]] = value


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        ("metadata.width", "1280", "expected a number, got a string"),
        ("contextData", [], "expected an object, got a list of 0 items"),
        ("task.totalDuration", 45210.0, "expected an integer, got a number"),
        ("task.tools[0].page", -1, "expected a value >= 0"),
        ("task.tools[0].rotated-bounding-box", None, "expected a geometry, got null"),
        ("task.tools[0].rotated-bounding-box.rotation", True, "expected a number, got a boolean"),
        (
            "task.tools[1].point",
            [1, "2"],
            "expected a pair of numbers [x, y], got [a number, a string]",
        ),
        ("task.tools[2].polyline[1]", "0,0", "expected a pair of numbers [x, y], got a string"),
        (
            "task.tools[3].segmentation.zones[0].holes[0][1]",
            [1],
            "expected a pair of numbers [x, y], got a list of 1 item",
        ),
        (
            "task.classifications[0].answer",
            "Day",
            "expected a list of strings for a multi-dropdown answer, got a string",
        ),
        (
            "task.relations[0].direction",
            "sideways",
            "expected 'straight', 'reverse' or 'bidirectional', got a string",
        ),
        ("task.relations[1].group", "a", "expected a list, got a string"),
        ("task.stageHistory[0].duration", None, "expected an integer, got null"),
        ("task.stageHistory[1].completedBy", 5, "expected a string, got a number"),
    ],
)
def test_a_bad_value_is_named_by_where_it_is(where: str, value: Any, expected: str) -> None:
    record = load(EXPORT)[0]
    set_at(record, where, value)

    assert errors_of(record) == [(where, expected)]


def test_a_tool_has_exactly_one_geometry() -> None:
    two = seed_with()
    two["task"]["tools"][0]["point"] = [1, 2]
    none = seed_with()
    del none["task"]["tools"][0]["bounding-box"]
    allowed = "bounding-box, rotated-bounding-box, polygon, polyline, point, segmentation, ner, pdf"

    assert errors_of(two) == [
        (
            "task.tools[0]",
            f"expected exactly one geometry key ({allowed}, spline), found bounding-box, point",
        )
    ]
    assert errors_of(none) == [
        ("task.tools[0]", f"expected exactly one geometry key ({allowed}, spline), found none")
    ]


def test_rotated_box_needs_four_corners() -> None:
    record = load(EXPORT)[0]
    record["task"]["tools"][0]["rotated-bounding-box"]["corners"].pop()

    assert errors_of(record) == [
        (
            "task.tools[0].rotated-bounding-box.corners",
            "expected 4 corners [[x, y], ...], got a list of 3 items",
        )
    ]


def classification(tool: str, answer: Any) -> dict[str, Any]:
    return {
        "answer": answer,
        "objectId": "o",
        "schemaId": "s",
        "title": "t",
        "tool": tool,
        "classifications": [],
    }


@pytest.mark.parametrize(
    ("tool", "answer", "expected"),
    [
        (
            "radio",
            ["Sunny"],
            "expected a string for a radio answer, got a list of 1 item",
        ),
        (
            "single-dropdown",
            None,
            "expected a string for a single-dropdown answer, got null",
        ),
        ("text", 3, "expected a string for a text answer, got a number"),
        (
            "checkbox",
            "Sunny",
            "expected a list of strings for a checkbox answer, got a string",
        ),
        (
            "multi-dropdown",
            ["a", 1],
            "expected a list of strings for a multi-dropdown answer, got a list of 2 items",
        ),
    ],
)
def test_answers_must_fit_their_tool(tool: str, answer: Any, expected: str) -> None:
    record = seed_with()
    record["task"]["tools"][0]["classifications"] = [classification(tool, answer)]

    assert errors_of(record) == [("task.tools[0].classifications[0].answer", expected)]


@pytest.mark.parametrize("answer", [{"value": 1}, [1, 2], 7.5, None, "x"])
def test_other_classification_tools_take_any_json_answer(answer: Any) -> None:
    record = seed_with()
    record["task"]["classifications"] = [classification("rank", answer)]

    assert_same_json(to_dict(parse(orjson.dumps(record))), record)


def test_a_medical_brush_object_carries_no_geometry() -> None:
    record = seed_with()
    tool = record["task"]["tools"][0]
    del tool["bounding-box"]
    tool["medical-brush"] = True

    parsed = parse(orjson.dumps(record))

    assert parsed.task.tools[0].geometry_key is None
    assert parsed.task.tools[0].geometry is None
    assert_same_json(to_dict(parsed), record)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"asset": "\xff\xfe"}', "invalid JSON"),
        ("\ud800", "invalid JSON"),
        (b"", "invalid JSON"),
        (b"[1, 2]", "expected an object, got a list of 2 items"),
        (b"null", "expected an object, got null"),
    ],
)
def test_unreadable_input_is_a_payload_error(data: bytes | str, expected: str) -> None:
    [(path, message)] = errors_of(data)

    assert path == "$"
    assert expected in message


def test_non_json_mappings_and_other_types_are_payload_errors() -> None:
    with pytest.raises(PayloadError, match="not JSON-compatible"):
        parse(seed_with(contextData={"what": object()}))
    with pytest.raises(PayloadError, match="not JSON-compatible"):
        parse(seed_with(contextData={1: "non-string key"}))
    with pytest.raises(PayloadError, match="expected JSON text or a mapping, got int"):
        parse(42)  # type: ignore[arg-type]


def test_error_messages_never_echo_input_values() -> None:
    secret = "X-Amz-Signature=2fa60de18d538aa7"
    record = seed_with(assetId=[secret], metadata={"width": secret})
    record["task"]["totalDuration"] = secret
    record["task"]["relations"] = [
        {"from": "a", "to": "b", "objectId": "o", "schemaId": "s", "direction": secret, "title": ""}
    ]

    with pytest.raises(PayloadError) as caught:
        parse(orjson.dumps(record))

    assert len(caught.value.errors) == 4
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value.errors)


def test_parse_many_prefixes_paths_with_the_record_index() -> None:
    good = orjson.dumps(load(SEED))
    bad = orjson.dumps(seed_with(assetId=None))

    with pytest.raises(PayloadError) as in_array:
        parse_many(b"[" + good + b"," + bad + b"]")
    with pytest.raises(PayloadError) as in_lines:
        parse_many(good + b"\n\n" + bad + b"\n{oops\n")

    assert in_array.value.errors == [("[1].assetId", "expected a string, got null")]
    assert in_lines.value.errors[0][0] == "[3]"
    assert "invalid JSON" in in_lines.value.errors[0][1]
    with pytest.raises(PayloadError) as not_a_list:
        parse_many(b"[1")
    assert not_a_list.value.errors[0][0] == "$"


def test_payload_error_pickles_with_its_errors() -> None:
    error = PayloadError([("task.taskId", "required field is missing")])

    clone = pickle.loads(pickle.dumps(error))

    assert clone.errors == error.errors
    assert (
        str(clone) == str(error) == "invalid Ango payload: task.taskId: required field is missing"
    )


def test_a_long_error_list_is_shortened_in_the_message_only() -> None:
    error = PayloadError([(f"[{i}]", "expected an object, got null") for i in range(25)])

    assert len(error.errors) == 25
    assert str(error).endswith("; and 15 more")


def test_deep_nesting_is_a_payload_error() -> None:
    record = seed_with()
    inner: dict[str, Any] = classification("text", "leaf")
    for _ in range(300):
        inner = classification("text", "x") | {"classifications": [inner]}
    record["task"]["classifications"] = [inner]
    # orjson writes at most 255 levels: build the text by hand.
    text = orjson.dumps(classification("text", "leaf"))
    head = orjson.dumps(classification("text", "x")).removesuffix(b"[]}") + b"["
    for _ in range(300):
        text = head + text + b"]}"
    body = orjson.dumps(seed_with()).replace(
        b'"classifications":[],"relations"', b'"classifications":[' + text + b'],"relations"'
    )

    assert any(m == "nested too deeply" for _, m in errors_of(body))
    with pytest.raises(PayloadError, match="not JSON-compatible"):
        parse(record)


# -- timestamps -------------------------------------------------------------------------------


def test_format_timestamp_is_utc_with_milliseconds_and_z() -> None:
    moment = datetime(2023, 9, 28, 11, 37, 33, 733999, tzinfo=timezone(timedelta(hours=2)))

    assert format_timestamp(moment) == "2023-09-28T09:37:33.733Z"
    assert format_timestamp(datetime(5, 1, 2, tzinfo=UTC)) == "0005-01-02T00:00:00.000Z"
    with pytest.raises(ValueError, match="aware"):
        format_timestamp(datetime(2023, 9, 28))


def test_parse_timestamp_reads_the_ango_form() -> None:
    moment = parse_timestamp("2023-09-28T09:37:33.733Z")

    assert moment == datetime(2023, 9, 28, 9, 37, 33, 733000, tzinfo=UTC)
    assert format_timestamp(moment) == "2023-09-28T09:37:33.733Z"
    for bad in ("yesterday", "2023-09-28T09:37:33.733"):
        with pytest.raises(PayloadError, match="ISO-8601"):
            parse_timestamp(bad)


def test_timestamps_in_records_are_kept_exactly_as_given() -> None:
    record = seed_with()
    record["task"]["updatedAt"] = "2023-09-28T09:37:33Z"

    assert to_dict(parse(orjson.dumps(record)))["task"]["updatedAt"] == "2023-09-28T09:37:33Z"


# -- views ------------------------------------------------------------------------------------


def seed_snapshot() -> Snapshot:
    """What an engine would hold for the seed's task (its batch ID is made up)."""
    sample = load(SEED)
    task = sample["task"]
    return Snapshot(
        asset_url=sample["asset"],
        asset_id=sample["assetId"],
        external_id=sample["externalId"],
        project_id="6541f0c2a9e7880015aa0001",
        dataset=sample["dataset"],
        metadata=sample["metadata"],
        batches=[("6541f0c2a9e7880015aa0b01", "Batch 1")],
        task_id=task["taskId"],
        stage_id="Label",
        stage_name="Label",
        updated_at=task["updatedAt"],
        updated_by=task["updatedBy"],
        total_duration=task["totalDuration"],
        tools=task["tools"],
        classifications=task["classifications"],
        relations=task["relations"],
    )


def test_the_seed_body_is_rebuilt_from_a_snapshot() -> None:
    view = webhook_view(
        seed_snapshot(),
        format="ango-2023",
        webhook_stage_id=WEBHOOK_STAGE,
        webhook_stage_name="Webhook",
    )

    assert_same_json(orjson.loads(render(view)), load(SEED))


def test_the_export_sample_is_rebuilt_from_a_snapshot() -> None:
    sample = load(EXPORT)[0]
    task = sample["task"]
    snapshot = Snapshot(
        asset_url=sample["asset"],
        asset_id=sample["assetId"],
        external_id=sample["externalId"],
        project_id="p",
        metadata=sample["metadata"],
        context_data=sample["contextData"],
        batches=[("6541f0c2a9e7880015aa0b01", "Batch 1")],
        task_id=task["taskId"],
        stage_id="Complete",
        stage_name="Complete",
        updated_at=task["updatedAt"],
        updated_by=task["updatedBy"],
        total_duration=task["totalDuration"],
        tools=task["tools"],
        classifications=task["classifications"],
        relations=task["relations"],
        stage_history=task["stageHistory"],
    )

    assert_same_json(orjson.loads(render(export_view(snapshot))), sample)


def test_the_2025_sample_is_rebuilt_from_a_snapshot() -> None:
    sample = load(ANGO_2025)
    task = sample["task"]
    snapshot = Snapshot(
        asset_url=sample["asset"],
        asset_id=sample["assetId"],
        external_id=sample["externalId"],
        project_id=sample["projectId"],
        category_schema=sample["categorySchema"],
        metadata=sample["metadata"],
        batches=[("6541f0c2a9e7880015aa0b01", "Batch 1")],
        task_id=task["taskId"],
        stage_id="Label",
        stage_name="Label",
        updated_at=task["updatedAt"],
        updated_by=task["updatedBy"],
        duration=8120,
        idle_duration=1200,
        total_duration=11643,
        total_idle_duration=1200,
        tools=task["tools"],
        classifications=task["classifications"],
    )

    view = webhook_view(
        snapshot, format="ango-2025", webhook_stage_id=WEBHOOK_STAGE, webhook_stage_name="Webhook"
    )

    assert_same_json(orjson.loads(render(view)), sample)


def test_the_2023_webhook_differs_from_the_export_only_by_batches_and_stage_id() -> None:
    snapshot = Snapshot(
        **{
            **snapshot_fields(seed_snapshot()),
            "context_data": {"k": "v"},
            "stage_history": [{"stage": "Start"}],
        }
    )

    export = export_view(snapshot)
    webhook = webhook_view(
        snapshot, format="ango-2023", webhook_stage_id=WEBHOOK_STAGE, webhook_stage_name="Webhook"
    )

    assert export["batches"] == ["6541f0c2a9e7880015aa0b01"]
    assert webhook["batches"] == ["Batch 1"]
    assert "stageId" not in export["task"]
    assert webhook["task"]["stage"] == webhook["task"]["stageId"] == "Label"
    webhook_task = {k: v for k, v in webhook["task"].items() if k != "stageId"}
    assert_same_json({**webhook, "batches": export["batches"], "task": webhook_task}, export)
    assert list(export) == [
        "asset",
        "assetId",
        "dataset",
        "externalId",
        "metadata",
        "batches",
        "contextData",
        "task",
    ]
    assert list(export["task"])[-1] == "stageHistory"


def snapshot_fields(snapshot: Snapshot) -> dict[str, Any]:
    return {name: getattr(snapshot, name) for name in Snapshot.__dataclass_fields__}


def test_the_2025_webhook_names_the_webhook_stage_and_both_batch_forms() -> None:
    view = webhook_view(
        seed_snapshot(),
        format="ango-2025",
        webhook_stage_id=WEBHOOK_STAGE,
        webhook_stage_name="Ship it",
    )

    assert view["batches"] == ["6541f0c2a9e7880015aa0b01"]
    assert view["batchNames"] == ["Batch 1"]
    assert view["task"]["stage"] == view["task"]["stageId"] == WEBHOOK_STAGE
    assert view["task"]["stageName"] == "Ship it"
    assert "contextData" not in view
    assert "stageHistory" not in view["task"]


def test_views_parse_back_exactly() -> None:
    snapshot = seed_snapshot()
    bodies = [render(export_view(snapshot))] + [
        render(webhook_view(snapshot, format=f, webhook_stage_id="W", webhook_stage_name="W"))
        for f in payload.PAYLOAD_FORMATS
    ]

    for body in bodies:
        assert to_json(parse(body)) == body


def test_render_is_compact_and_refuses_what_json_cannot_carry() -> None:
    body = render(export_view(seed_snapshot()))

    assert b": " not in body
    assert b", " not in body
    assert body.startswith(b'{"asset":"https://angohub-private-assets')
    with pytest.raises(PayloadError, match="not JSON-compatible"):
        render({"what": object()})


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="ango-2023, ango-2025"):
        webhook_view(
            seed_snapshot(),
            format="ango-1999",  # type: ignore[arg-type]
            webhook_stage_id="W",
            webhook_stage_name="W",
        )


def test_views_do_not_change_the_snapshot() -> None:
    snapshot = seed_snapshot()
    before = copy.deepcopy(snapshot_fields(snapshot))

    view = webhook_view(snapshot, format="ango-2025", webhook_stage_id="W", webhook_stage_name="W")
    view["task"]["tools"].append({})
    view["metadata"]["width"] = 0

    assert snapshot_fields(snapshot) == before


def test_the_models_publish_a_json_schema() -> None:
    schema = payload.Record.model_json_schema()

    tool = schema["$defs"]["Tool"]["properties"]
    assert "bounding-box" in tool
    assert tool["point"]["anyOf"][0] == {
        "type": "array",
        "items": {"type": "number"},
        "minItems": 2,
        "maxItems": 2,
    }
    assert "taskId" in schema["$defs"]["Task"]["required"]
