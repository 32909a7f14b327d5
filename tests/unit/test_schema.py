"""The category schema, and annotations checked against it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookstage import schema as sc
from hookstage.schema import CategorySchema, SchemaError

Json = dict[str, Any]

# The categorySchema of the ango-2025 webhook sample, as Ango writes it.
SAMPLE_SCHEMA: Json = {
    "tools": [
        {
            "title": "Car",
            "tool": "bounding-box",
            "required": False,
            "schemaId": "7d38d842079133453b4b328",
            "ocrEnabled": False,
            "classifications": [],
            "multiple": False,
            "color": "#f44336",
            "shortcutKey": "1",
        },
        {
            "title": "Road",
            "tool": "polygon",
            "required": False,
            "schemaId": "8a11b2c3d4e5f60718293a4",
            "ocrEnabled": False,
            "classifications": [],
            "multiple": False,
            "color": "#2196f3",
            "shortcutKey": "2",
        },
    ],
    "classifications": [
        {
            "title": "Weather",
            "tool": "radio",
            "required": True,
            "schemaId": "9b22c3d4e5f607182930a4b",
            "frameSpecific": False,
            "classifications": [],
            "multiple": False,
            "options": [
                {"value": "Sunny", "schemaId": "9b22c3d4e5f607182930a4c"},
                {"value": "Rainy", "schemaId": "9b22c3d4e5f607182930a4d"},
            ],
        }
    ],
    "relations": [],
}

# A schema for every tool of the export sample (samples/export-ango.json), plus ner and pdf.
EXPORT_SCHEMA: Json = {
    "tools": [
        {
            "title": "Car",
            "tool": "rotated-bounding-box",
            "schemaId": "7d38d842079133453b4b328",
            "classifications": [
                {
                    "title": "State",
                    "tool": "checkbox",
                    "schemaId": "0a1b2c3d4e5f6071829304a",
                    "options": [
                        {"value": "Parked", "schemaId": "opt-parked"},
                        {"value": "Damaged", "schemaId": "opt-damaged"},
                        {"value": "Moving", "schemaId": "opt-moving"},
                    ],
                    "classifications": [
                        {"title": "Notes", "tool": "text", "schemaId": "1b2c3d4e5f607182930a4b5"}
                    ],
                }
            ],
        },
        {"title": "Light", "tool": "point", "schemaId": "2c3d4e5f607182930a4b5c6"},
        {"title": "Lane", "tool": "polyline", "schemaId": "3d4e5f607182930a4b5c6d7"},
        {"title": "Sky", "tool": "segmentation", "schemaId": "4e5f607182930a4b5c6d7e8"},
        {"title": "Box", "tool": "bounding-box", "schemaId": "box"},
        {"title": "Road", "tool": "polygon", "schemaId": "road"},
        {"title": "Name", "tool": "ner", "schemaId": "name"},
        {"title": "Quote", "tool": "pdf", "schemaId": "quote"},
        {"title": "Paint", "tool": "brush", "schemaId": "paint"},
    ],
    "classifications": [
        {
            "title": "Scene",
            "tool": "multi-dropdown",
            "schemaId": "5f607182930a4b5c6d7e8f9",
            "options": [
                {"value": "Day", "schemaId": "opt-day"},
                {"value": "Night", "schemaId": "opt-night"},
                {"value": "Urban", "schemaId": "opt-urban"},
            ],
        },
        {
            "title": "Weather",
            "tool": "single-dropdown",
            "schemaId": "weather",
            "options": [{"value": "Sunny", "schemaId": "opt-sunny"}],
        },
        {"title": "Comment", "tool": "text", "schemaId": "comment"},
    ],
    "relations": [
        {"title": "waits at", "tool": "single", "schemaId": "607182930a4b5c6d7e8f9a0"},
        {"title": "background", "tool": "group", "schemaId": "7182930a4b5c6d7e8f9a0b1"},
    ],
}

# The task of the export sample.
EXPORT_TOOLS: list[Json] = [
    {
        "rotated-bounding-box": {
            "x": 400,
            "y": 300,
            "width": 120,
            "height": 60,
            "rotation": -15.5,
            "corners": [[392.1, 258.4], [507.7, 226.3], [523.8, 284.1], [408.2, 316.2]],
        },
        "objectId": "e03c4d5e6f708192a3b4c5d",
        "schemaId": "7d38d842079133453b4b328",
        "title": "Car",
        "classifications": [
            {
                "answer": ["Parked", "Damaged"],
                "objectId": "f14d5e6f708192a3b4c5d6e",
                "schemaId": "0a1b2c3d4e5f6071829304a",
                "title": "State",
                "tool": "checkbox",
                "classifications": [
                    {
                        "answer": "minor scratch",
                        "objectId": "a25e6f708192a3b4c5d6e7f",
                        "schemaId": "1b2c3d4e5f607182930a4b5",
                        "title": "Notes",
                        "tool": "text",
                        "classifications": [],
                    }
                ],
            }
        ],
    },
    {
        "point": [640.5, 360.25],
        "objectId": "b36f708192a3b4c5d6e7f80",
        "schemaId": "2c3d4e5f607182930a4b5c6",
        "title": "Light",
        "classifications": [],
    },
    {
        "polyline": [[0, 700], [640, 500], [1280, 700]],
        "objectId": "c47081920a3b4c5d6e7f801",
        "schemaId": "3d4e5f607182930a4b5c6d7",
        "title": "Lane",
        "classifications": [],
    },
    {
        "segmentation": {
            "zones": [
                {
                    "region": [[100, 100], [200, 100], [200, 200], [100, 200]],
                    "holes": [[[140, 140], [160, 140], [160, 160]]],
                }
            ]
        },
        "objectId": "d58192a30b4c5d6e7f80912",
        "schemaId": "4e5f607182930a4b5c6d7e8",
        "title": "Sky",
        "classifications": [],
    },
]
EXPORT_CLASSIFICATIONS: list[Json] = [
    {
        "answer": ["Day", "Urban"],
        "objectId": "e69a3b4c5d6e7f8091a2b3c",
        "schemaId": "5f607182930a4b5c6d7e8f9",
        "title": "Scene",
        "tool": "multi-dropdown",
        "classifications": [],
    }
]
EXPORT_RELATIONS: list[Json] = [
    {
        "from": "e03c4d5e6f708192a3b4c5d",
        "to": "b36f708192a3b4c5d6e7f80",
        "objectId": "f7ab4c5d6e7f8091a2b3c4d",
        "schemaId": "607182930a4b5c6d7e8f9a0",
        "direction": "straight",
        "title": "waits at",
    },
    {
        "group": ["c47081920a3b4c5d6e7f801", "d58192a30b4c5d6e7f80912"],
        "objectId": "08bc5d6e7f8091a2b3c4d5e",
        "schemaId": "7182930a4b5c6d7e8f9a0b1",
        "title": "background",
    },
]
MORE_TOOLS: list[Json] = [
    {
        "bounding-box": {"x": 1, "y": 2, "height": 3, "width": -4},
        "objectId": "o-box",
        "schemaId": "box",
    },
    {"polygon": [[0, 0], [1, 0], [1, 1]], "objectId": "o-road", "schemaId": "road"},
    {"ner": {"start": 3, "end": 8, "selection": "hello"}, "objectId": "o-name", "schemaId": "name"},
    {
        "pdf": {
            "position": {
                "boundingRect": {"x1": 1, "y1": 2, "x2": 3, "y2": 4, "width": 600, "height": 800},
                "rects": [{"x1": 1, "y1": 2, "x2": 3, "y2": 4}],
                "pageNumber": 1,
            },
            "content": {"text": "a quote"},
        },
        "objectId": "o-quote",
        "schemaId": "quote",
        "page": 0,
    },
    {"objectId": "o-paint", "schemaId": "paint", "classifications": []},
]


def export_schema() -> CategorySchema:
    return sc.parse_schema(EXPORT_SCHEMA)


def check(
    tools: object = (),
    classifications: object = (),
    relations: object = (),
) -> list[tuple[str, str]]:
    found = sc.check_annotations(
        export_schema(),
        copy.deepcopy(list(tools)) if isinstance(tools, tuple) else tools,
        list(classifications) if isinstance(classifications, tuple) else classifications,
        list(relations) if isinstance(relations, tuple) else relations,
    )
    return [(p.path, p.message) for p in found]


def paths(**kwargs: Any) -> list[str]:
    return [path for path, _ in check(**kwargs)]


def schema_problems(data: object) -> list[tuple[str, str]]:
    with pytest.raises(SchemaError) as caught:
        sc.parse_schema(data)
    return [(p.path, p.message) for p in caught.value.problems]


# -- the schema -----------------------------------------------------------------------------


def test_the_sample_schema_parses() -> None:
    schema = sc.parse_schema(SAMPLE_SCHEMA)
    assert [t.tool for t in schema.tools] == ["bounding-box", "polygon"]
    weather = schema.classifications[0]
    assert (weather.title, weather.tool, weather.required) == ("Weather", "radio", True)
    assert [o.value for o in weather.options] == ["Sunny", "Rainy"]
    assert schema.tool("7d38d842079133453b4b328") == schema.tools[0]
    assert schema.classification("9b22c3d4e5f607182930a4b") == weather
    assert schema.relation("7d38d842079133453b4b328") is None
    assert "9b22c3d4e5f607182930a4d" in schema.schema_ids


def test_to_json_gives_the_schema_back_unknown_keys_included() -> None:
    schema = sc.parse_schema(SAMPLE_SCHEMA)
    assert sc.to_json(schema) == SAMPLE_SCHEMA
    assert sc.parse_schema(sc.to_json(schema)) == schema
    exported = export_schema()
    assert sc.parse_schema(json.loads(json.dumps(sc.to_json(exported)))) == exported


def test_nested_classifications_are_found_at_any_depth() -> None:
    schema = export_schema()
    notes = schema.classification("1b2c3d4e5f607182930a4b5")
    assert notes is not None
    assert notes.tool == "text"
    assert {"opt-parked", "1b2c3d4e5f607182930a4b5", "paint"} <= schema.schema_ids


def test_an_empty_schema_is_valid() -> None:
    assert sc.parse_schema({}) == CategorySchema()
    assert (
        sc.parse_schema({"tools": [], "classifications": [], "relations": []}) == CategorySchema()
    )


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"tools": "box"}, "tools", "expected a list"),
        ({"tools": [5]}, "tools[0]", "expected an object"),
        ({"tools": [{"tool": "point"}]}, "tools[0].schemaId", "expected a non-empty string"),
        ({"tools": [{"schemaId": "a"}]}, "tools[0].tool", "expected a non-empty string"),
        (
            {"tools": [{"schemaId": "a", "tool": "point", "title": 3}]},
            "tools[0].title",
            "expected a string",
        ),
        (
            {"tools": [{"schemaId": "a", "tool": "point", "classifications": {}}]},
            "tools[0].classifications",
            "expected a list",
        ),
        (
            {"classifications": [{"schemaId": "c", "tool": "text", "required": "yes"}]},
            "classifications[0].required",
            "expected true or false",
        ),
        (
            {"classifications": [{"schemaId": "c", "tool": "radio"}]},
            "classifications[0].options",
            "a radio needs at least one option",
        ),
        (
            {"classifications": [{"schemaId": "c", "tool": "checkbox", "options": []}]},
            "classifications[0].options",
            "a checkbox needs at least one option",
        ),
        (
            {
                "classifications": [
                    {"schemaId": "c", "tool": "radio", "options": [{"value": 1, "schemaId": "o"}]}
                ]
            },
            "classifications[0].options[0].value",
            "expected a string",
        ),
        (
            {
                "classifications": [
                    {
                        "schemaId": "c",
                        "tool": "radio",
                        "options": [
                            {"value": "A", "schemaId": "o1"},
                            {"value": "A", "schemaId": "o2"},
                        ],
                    }
                ]
            },
            "classifications[0].options[1].value",
            "'A' is already an option",
        ),
        ({"relations": [{"schemaId": "r"}]}, "relations[0].tool", "expected a non-empty string"),
    ],
)
def test_schema_problems_name_the_path(change: Json, path: str, message: str) -> None:
    assert (path, message) in schema_problems(change)


def test_duplicate_schema_ids_are_refused_wherever_they_are() -> None:
    data = {
        "tools": [
            {"title": "A", "tool": "point", "schemaId": "x"},
            {
                "title": "B",
                "tool": "point",
                "schemaId": "y",
                "classifications": [{"tool": "text", "schemaId": "x"}],
            },
            {"title": "C", "tool": "point", "schemaId": "x"},
        ],
        "classifications": [
            {"tool": "radio", "schemaId": "z", "options": [{"value": "v", "schemaId": "y"}]}
        ],
        "relations": [{"tool": "single", "schemaId": "z"}],
    }
    assert schema_problems(data) == [
        ("tools[1].classifications[0].schemaId", "'x' is already the schemaId of tools[0]"),
        ("tools[2].schemaId", "'x' is already the schemaId of tools[0]"),
        ("classifications[0].options[0].schemaId", "'y' is already the schemaId of tools[1]"),
        ("relations[0].schemaId", "'z' is already the schemaId of classifications[0]"),
    ]


def test_every_schema_problem_is_reported_at_once() -> None:
    data = {"tools": [{"tool": "point"}, 3], "classifications": "no", "relations": [{}]}
    found = [path for path, _ in schema_problems(data)]
    assert found == [
        "tools[0].schemaId",
        "tools[1]",
        "classifications",
        "relations[0].schemaId",
        "relations[0].tool",
    ]
    with pytest.raises(SchemaError, match=r"invalid category schema \(5 problems\):\n- tools"):
        sc.parse_schema(data)


def test_a_schema_that_is_not_an_object() -> None:
    assert schema_problems([]) == [("", "expected an object {tools, classifications, relations}")]


def test_nesting_is_bounded() -> None:
    deep: Json = {"tool": "text", "schemaId": "leaf"}
    for level in range(sc.MAX_DEPTH + 2):
        deep = {"tool": "text", "schemaId": f"c{level}", "classifications": [deep]}
    problems = schema_problems({"classifications": [deep]})
    assert len(problems) == 1
    assert problems[0][1] == f"classifications nest deeper than {sc.MAX_DEPTH} levels"


# -- annotations ----------------------------------------------------------------------------


def test_the_export_sample_is_valid() -> None:
    assert check(EXPORT_TOOLS, EXPORT_CLASSIFICATIONS, EXPORT_RELATIONS) == []


def test_the_webhook_sample_is_valid_for_its_schema() -> None:
    tools = [
        {
            "bounding-box": {"x": 194.46, "y": 30.24, "height": 87.9, "width": -120.8},
            "objectId": "b792278d6a89cedb0235598",
            "schemaId": "7d38d842079133453b4b328",
            "title": "Car",
            "classifications": [],
            "metadata": {"createdAt": "2025-03-14T10:21:58.001Z", "createdIn": "Label"},
        },
        {
            "polygon": [[10, 900], [1900, 880], [1910, 1070], [5, 1075]],
            "objectId": "c81a2b3c4d5e6f708192a3b",
            "schemaId": "8a11b2c3d4e5f60718293a4",
            "title": "Road",
            "classifications": [],
        },
    ]
    answers = [
        {
            "answer": "Sunny",
            "objectId": "d92b3c4d5e6f708192a3b4c",
            "schemaId": "9b22c3d4e5f607182930a4b",
            "title": "Weather",
            "tool": "radio",
            "classifications": [],
        }
    ]
    schema = sc.parse_schema(SAMPLE_SCHEMA)
    assert sc.check_annotations(schema, tools, answers, []) == []
    missing = sc.check_annotations(schema, tools, [], [])
    assert [str(p) for p in missing] == [
        "classifications: 'Weather' (9b22c3d4e5f607182930a4b) is required: answer it"
    ]
    empty = [{**answers[0], "answer": ""}]
    assert [p.path for p in sc.check_annotations(schema, tools, empty, [])] == [
        "classifications[0].answer",
        "classifications",
    ]


def test_other_geometries_and_unknown_tool_types_are_valid() -> None:
    assert check(MORE_TOOLS) == []


def test_unknown_extra_keys_are_allowed() -> None:
    tools = [{**MORE_TOOLS[0], "color": "red", "interpolationStopped": False, "page": 2}]
    assert check(tools) == []


def tool(key: str, geometry: object, schema_id: str | None = None) -> Json:
    ids = {
        "bounding-box": "box",
        "polygon": "road",
        "polyline": "3d4e5f607182930a4b5c6d7",
        "point": "2c3d4e5f607182930a4b5c6",
        "rotated-bounding-box": "7d38d842079133453b4b328",
        "segmentation": "4e5f607182930a4b5c6d7e8",
        "ner": "name",
        "pdf": "quote",
    }
    return {
        key: geometry,
        "objectId": "o1",
        "schemaId": schema_id or ids[key],
        "classifications": [],
    }


@pytest.mark.parametrize(
    ("item", "path", "message"),
    [
        (
            tool("point", [1, 2], "nope"),
            "tools[0].schemaId",
            "'nope' is not a tool of the category schema",
        ),
        (
            tool("point", [1, 2], "comment"),
            "tools[0].schemaId",
            "'comment' is not a tool of the category schema",
        ),
        (
            {"objectId": "o1", "schemaId": "box"},
            "tools[0]",
            "has no geometry: expected a 'bounding-box' key",
        ),
        (
            tool("point", [1, 2], "box"),
            "tools[0].point",
            "is point geometry, but 'Box' is a bounding-box",
        ),
        (
            {**tool("point", [1, 2]), "polygon": [[0, 0], [1, 1], [2, 2]]},
            "tools[0]",
            "has 2 geometry keys (point, polygon): expected one, 'point'",
        ),
        (
            tool("polygon", [[0, 0], [1, 1], [2, 2]], "paint"),
            "tools[0].polygon",
            "is polygon geometry, but 'Paint' is a brush",
        ),
        (
            tool("bounding-box", {"x": 1, "y": 2, "height": 3}),
            "tools[0].bounding-box.width",
            "expected a number",
        ),
        (
            tool("bounding-box", {"x": 1, "y": 2, "height": 3, "width": True}),
            "tools[0].bounding-box.width",
            "expected a number",
        ),
        (
            tool("bounding-box", [1, 2, 3, 4]),
            "tools[0].bounding-box",
            "expected an object {x, y, height, width}",
        ),
        (tool("point", [1]), "tools[0].point", "expected a point [x, y] of two numbers"),
        (tool("point", [1, "2"]), "tools[0].point", "expected a point [x, y] of two numbers"),
        (
            tool("point", [1, float("inf")]),
            "tools[0].point",
            "expected a point [x, y] of two numbers",
        ),
        (
            tool("polygon", [[0, 0], [1, 1]]),
            "tools[0].polygon",
            "has 2 points: a polygon needs at least 3",
        ),
        (
            tool("polygon", {"points": []}),
            "tools[0].polygon",
            "expected a list of at least 3 points [x, y]",
        ),
        (
            tool("polygon", [[0, 0], [1, 1], [2], [3, 3], [4]]),
            "tools[0].polygon[2]",
            "expected a point [x, y] of two numbers (1 more bad points follow)",
        ),
        (
            tool("polyline", [[0, 0]]),
            "tools[0].polyline",
            "has 1 points: a polyline needs at least 2",
        ),
        (
            tool(
                "rotated-bounding-box", {"x": 1, "y": 1, "width": 2, "height": 2, "rotation": 270}
            ),
            "tools[0].rotated-bounding-box.rotation",
            "expected degrees from -180 to 180",
        ),
        (
            tool(
                "rotated-bounding-box",
                {"x": 1, "y": 1, "width": 2, "height": 2, "rotation": 0, "corners": [[0, 0]]},
            ),
            "tools[0].rotated-bounding-box.corners",
            "expected four points [x, y]",
        ),
        (
            tool("rotated-bounding-box", {"x": 1, "y": 1, "width": 2, "height": 2}),
            "tools[0].rotated-bounding-box.rotation",
            "expected a number",
        ),
        (
            tool("segmentation", {"zones": []}),
            "tools[0].segmentation",
            "expected {zones: [{region, holes}, ...]} with at least one zone",
        ),
        (
            tool("segmentation", {"zones": [3]}),
            "tools[0].segmentation.zones[0]",
            "expected an object {region, holes}",
        ),
        (
            tool(
                "segmentation",
                {"zones": [{"region": [[0, 0], [1, 0], [1, 1]], "holes": [[[0, 0], [1, 1]]]}]},
            ),
            "tools[0].segmentation.zones[0].holes[0]",
            "has 2 points: a ring needs at least 3",
        ),
        (
            tool("segmentation", {"zones": [{"region": [[0, 0], [1, 0], [1, 1]], "holes": {}}]}),
            "tools[0].segmentation.zones[0].holes",
            "expected a list of rings",
        ),
        (
            tool("ner", {"start": 5, "end": 2, "selection": "x"}),
            "tools[0].ner.end",
            "is before start",
        ),
        (
            tool("ner", {"start": -1, "end": 2, "selection": "x"}),
            "tools[0].ner.start",
            "expected a character offset (a whole number, 0 or more)",
        ),
        (
            tool("ner", {"start": 0, "end": 2}),
            "tools[0].ner.selection",
            "expected the selected text (a string)",
        ),
        (tool("pdf", {"position": {}}), "tools[0].pdf.content", "expected {text} or {image}"),
        (
            tool(
                "pdf",
                {
                    "position": {"boundingRect": {}, "rects": [], "pageNumber": 0},
                    "content": {"image": "x"},
                },
            ),
            "tools[0].pdf.position.pageNumber",
            "expected a page number (a whole number, 1 or more)",
        ),
        (tool("pdf", "quote"), "tools[0].pdf", "expected an object {position, content}"),
        (
            {**tool("point", [1, 2]), "objectId": ""},
            "tools[0].objectId",
            "expected a non-empty string",
        ),
        (
            {**tool("point", [1, 2]), "schemaId": 5},
            "tools[0].schemaId",
            "expected a non-empty string",
        ),
        (
            {
                **tool("point", [1, 2]),
                "classifications": [{"objectId": "c", "schemaId": "comment", "answer": "x"}],
            },
            "tools[0].classifications[0].schemaId",
            "'comment' is not a classification allowed here",
        ),
    ],
)
def test_tool_problems_name_the_path(item: Json, path: str, message: str) -> None:
    assert (path, message) in check([item])


def test_tools_that_are_not_a_list_or_not_objects() -> None:
    assert check(tools={"a": 1}) == [("tools", "expected a list")]
    assert check(tools=[3]) == [("tools[0]", "expected an object")]


def nested(answer: object, notes: object = "fine") -> list[Json]:
    car = copy.deepcopy(EXPORT_TOOLS[0])
    state = car["classifications"][0]
    state["answer"] = answer
    state["classifications"][0]["answer"] = notes
    return [car]


@pytest.mark.parametrize(
    ("tools", "classifications", "path", "message"),
    [
        (
            nested("Parked"),
            [],
            "tools[0].classifications[0].answer",
            "expected a list of options from ['Parked', 'Damaged', 'Moving']",
        ),
        (
            nested(["Parked", "Flying"]),
            [],
            "tools[0].classifications[0].answer[1]",
            "expected one of ['Parked', 'Damaged', 'Moving']; got 'Flying'",
        ),
        (
            nested(["Parked", "Parked"]),
            [],
            "tools[0].classifications[0].answer[1]",
            "'Parked' is chosen twice",
        ),
        (
            nested(["Parked"], ["a"]),
            [],
            "tools[0].classifications[0].classifications[0].answer",
            "expected a string",
        ),
        (
            [],
            [{"answer": "Rainy", "objectId": "c", "schemaId": "weather"}],
            "classifications[0].answer",
            "expected one of ['Sunny']; got 'Rainy'",
        ),
        (
            [],
            [{"answer": ["Sunny"], "objectId": "c", "schemaId": "weather"}],
            "classifications[0].answer",
            "expected one of ['Sunny']; got ['Sunny']",
        ),
        (
            [],
            [{"answer": "x", "objectId": "c", "schemaId": "comment", "tool": "radio"}],
            "classifications[0].tool",
            "is 'radio', but the schema says 'text'",
        ),
        (
            [],
            [{"answer": "x", "objectId": "c", "schemaId": "0a1b2c3d4e5f6071829304a"}],
            "classifications[0].schemaId",
            "'0a1b2c3d4e5f6071829304a' is not a classification allowed here",
        ),
        (
            [],
            [
                {
                    "answer": "x",
                    "objectId": "c",
                    "schemaId": "comment",
                    "classifications": [{"answer": "y", "objectId": "d", "schemaId": "comment"}],
                }
            ],
            "classifications[0].classifications[0].schemaId",
            "'comment' is not a classification allowed here",
        ),
        ([], "Sunny", "classifications", "expected a list"),
    ],
)
def test_classification_problems_name_the_path(
    tools: list[Json], classifications: object, path: str, message: str
) -> None:
    assert (path, message) in check(tools, classifications)


def test_classifications_under_an_unknown_schema_id_are_not_checked_further() -> None:
    answers = [
        {
            "answer": 5,
            "objectId": "c",
            "schemaId": "ghost",
            "classifications": [{"answer": [], "objectId": "d", "schemaId": "ghost2"}],
        }
    ]
    assert check(classifications=answers) == [
        ("classifications[0].schemaId", "'ghost' is not a classification allowed here")
    ]


def test_object_ids_are_unique_across_tools_classifications_and_relations() -> None:
    dup = EXPORT_TOOLS[1]["objectId"]
    answers = [{**EXPORT_CLASSIFICATIONS[0], "objectId": dup}]
    relations = [{**EXPORT_RELATIONS[0], "objectId": dup}]
    found = check(EXPORT_TOOLS, answers, relations)
    message = f"{dup!r} is already the objectId of tools[1]"
    assert found == [
        ("classifications[0].objectId", message),
        ("relations[0].objectId", message),
    ]


@pytest.mark.parametrize(
    ("relation", "path", "message"),
    [
        (
            {**EXPORT_RELATIONS[0], "to": "ghost"},
            "relations[0].to",
            "'ghost' is not the objectId of a tool or classification here",
        ),
        (
            {**EXPORT_RELATIONS[0], "from": None},
            "relations[0].from",
            "expected the objectId of a tool or classification",
        ),
        (
            {**EXPORT_RELATIONS[0], "direction": "sideways"},
            "relations[0].direction",
            "expected one of straight, reverse, bidirectional",
        ),
        (
            {**EXPORT_RELATIONS[0], "schemaId": "box"},
            "relations[0].schemaId",
            "'box' is not a relation of the category schema",
        ),
        (
            {**EXPORT_RELATIONS[0], "group": []},
            "relations[0]",
            "has both from/to and group: expected from and to (single) or group",
        ),
        (
            {"objectId": "r", "schemaId": "607182930a4b5c6d7e8f9a0"},
            "relations[0]",
            "has neither from/to nor group: expected from and to (single) or group",
        ),
        (
            {**EXPORT_RELATIONS[1], "schemaId": "607182930a4b5c6d7e8f9a0"},
            "relations[0]",
            "does not match the schema's relation, which is a single",
        ),
        (
            {**EXPORT_RELATIONS[0], "schemaId": "7182930a4b5c6d7e8f9a0b1"},
            "relations[0]",
            "does not match the schema's relation, which is a group",
        ),
        (
            {**EXPORT_RELATIONS[1], "group": []},
            "relations[0].group",
            "expected a non-empty list of objectIds",
        ),
        (
            {
                **EXPORT_RELATIONS[1],
                "group": ["c47081920a3b4c5d6e7f801", "f7ab4c5d6e7f8091a2b3c4d"],
            },
            "relations[0].group[1]",
            "'f7ab4c5d6e7f8091a2b3c4d' is not the objectId of a tool or classification here",
        ),
    ],
)
def test_relation_problems_name_the_path(relation: Json, path: str, message: str) -> None:
    assert (path, message) in check(EXPORT_TOOLS, EXPORT_CLASSIFICATIONS, [relation])


def test_a_relation_may_point_at_a_classification() -> None:
    relation = {**EXPORT_RELATIONS[0], "to": EXPORT_CLASSIFICATIONS[0]["objectId"]}
    assert check(EXPORT_TOOLS, EXPORT_CLASSIFICATIONS, [relation]) == []


def test_every_annotation_problem_is_reported_in_order() -> None:
    tools = [tool("point", [1]), {**tool("polygon", [[0, 0]]), "objectId": "o2"}]
    relations = [{**EXPORT_RELATIONS[0], "to": "ghost"}]
    assert paths(tools=tools, relations=relations) == [
        "tools[0].point",
        "tools[1].polygon",
        "relations[0].from",
        "relations[0].to",
    ]


# -- schema ids present ---------------------------------------------------------------------


def test_present_schema_ids_include_nested_classifications_and_chosen_options() -> None:
    plain = sc.present_schema_ids(EXPORT_TOOLS, EXPORT_CLASSIFICATIONS)
    assert plain == {
        "7d38d842079133453b4b328",
        "0a1b2c3d4e5f6071829304a",
        "1b2c3d4e5f607182930a4b5",
        "2c3d4e5f607182930a4b5c6",
        "3d4e5f607182930a4b5c6d7",
        "4e5f607182930a4b5c6d7e8",
        "5f607182930a4b5c6d7e8f9",
    }
    with_options = sc.present_schema_ids(EXPORT_TOOLS, EXPORT_CLASSIFICATIONS, export_schema())
    assert with_options - plain == {"opt-parked", "opt-damaged", "opt-day", "opt-urban"}


def test_present_schema_ids_skip_what_they_do_not_understand() -> None:
    junk: list[object] = [3, {"schemaId": 5}, {"schemaId": "ok", "classifications": "x"}]
    assert sc.present_schema_ids(junk, None) == {"ok"}


# -- properties -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
ids = st.sampled_from(["a", "b", "box", "road", "comment", "weather", "o1", "o2", ""])
annotation_like = st.fixed_dictionaries(
    {},
    optional={
        "objectId": ids | json_values,
        "schemaId": ids | json_values,
        "answer": st.sampled_from(["Sunny", "Day", ""])
        | st.lists(st.sampled_from(["Day", "Night"]))
        | json_values,
        "bounding-box": json_values,
        "polygon": st.lists(st.lists(st.integers(), max_size=3), max_size=4) | json_values,
        "point": json_values,
        "ner": json_values,
        "pdf": json_values,
        "segmentation": json_values,
        "classifications": json_values,
        "from": ids | json_values,
        "to": ids | json_values,
        "group": st.lists(ids) | json_values,
    },
)
annotation_lists = st.lists(annotation_like | json_values, max_size=3) | json_values
schema_like = st.fixed_dictionaries(
    {},
    optional={
        "tools": st.lists(
            st.fixed_dictionaries(
                {"schemaId": ids, "tool": st.sampled_from(["point", "polygon", "x"])},
                optional={"classifications": json_values, "title": json_values},
            )
            | json_values,
            max_size=3,
        ),
        "classifications": json_values,
        "relations": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(json_values | schema_like)
def test_any_input_gives_a_schema_or_a_schema_error(data: object) -> None:
    try:
        schema = sc.parse_schema(data)
    except SchemaError as error:
        problems = error.problems
    else:
        problems = ()
        assert sc.parse_schema(sc.to_json(schema)) == schema
    assert all(isinstance(p, sc.Problem) and p.message for p in problems)


@settings(max_examples=200, deadline=None)
@given(annotation_lists, annotation_lists, annotation_lists)
def test_checking_never_raises(tools: object, classifications: object, relations: object) -> None:
    found = sc.check_annotations(export_schema(), tools, classifications, relations)
    assert all(isinstance(p, sc.Problem) and p.message for p in found)
    sc.present_schema_ids(tools, classifications, export_schema())


coordinates = st.floats(-1e6, 1e6) | st.integers(-(10**6), 10**6)
points = st.lists(coordinates, min_size=2, max_size=2)
geometries: dict[str, st.SearchStrategy[Any]] = {
    "box": st.fixed_dictionaries(
        {"x": coordinates, "y": coordinates, "height": coordinates, "width": coordinates}
    ),
    "road": st.lists(points, min_size=3, max_size=8),
    "3d4e5f607182930a4b5c6d7": st.lists(points, min_size=2, max_size=8),
    "2c3d4e5f607182930a4b5c6": points,
    "4e5f607182930a4b5c6d7e8": st.fixed_dictionaries(
        {
            "zones": st.lists(
                st.fixed_dictionaries(
                    {"region": st.lists(points, min_size=3, max_size=5)},
                    optional={
                        "holes": st.lists(st.lists(points, min_size=3, max_size=4), max_size=2)
                    },
                ),
                min_size=1,
                max_size=3,
            )
        }
    ),
    "name": st.tuples(st.integers(0, 100), st.integers(0, 100), st.text(max_size=5)).map(
        lambda t: {"start": min(t[0], t[1]), "end": max(t[0], t[1]), "selection": t[2]}
    ),
}
keys = {
    "box": "bounding-box",
    "road": "polygon",
    "3d4e5f607182930a4b5c6d7": "polyline",
    "2c3d4e5f607182930a4b5c6": "point",
    "4e5f607182930a4b5c6d7e8": "segmentation",
    "name": "ner",
}


@st.composite
def valid_submissions(draw: st.DrawFn) -> tuple[list[Json], list[Json], list[Json]]:
    tools: list[Json] = []
    for i, schema_id in enumerate(draw(st.lists(st.sampled_from(sorted(geometries)), max_size=6))):
        geometry = draw(geometries[schema_id])
        tools.append({keys[schema_id]: geometry, "objectId": f"t{i}", "schemaId": schema_id})
    scene = draw(st.lists(st.sampled_from(["Day", "Night", "Urban"]), unique=True))
    answers: list[Json] = [
        {"answer": scene, "objectId": "c0", "schemaId": "5f607182930a4b5c6d7e8f9"}
    ]
    if draw(st.booleans()):
        answers.append({"answer": draw(st.text()), "objectId": "c1", "schemaId": "comment"})
    relations: list[Json] = []
    object_ids = [t["objectId"] for t in tools] + [a["objectId"] for a in answers]
    for i in range(draw(st.integers(0, 3))):
        members = draw(st.lists(st.sampled_from(object_ids), min_size=1, max_size=3))
        relations.append(
            {"group": members, "objectId": f"r{i}", "schemaId": "7182930a4b5c6d7e8f9a0b1"}
        )
    return tools, answers, relations


@settings(max_examples=200, deadline=None)
@given(valid_submissions())
def test_generated_valid_submissions_have_no_problems(
    submission: tuple[list[Json], list[Json], list[Json]],
) -> None:
    tools, answers, relations = submission
    assert sc.check_annotations(export_schema(), tools, answers, relations) == []
