"""The engine's steps (submit, review) on SQLite and PostgreSQL: where the task goes,
what its history says, and the deliveries they enqueue in the same transaction."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from hookstage import payload
from hookstage.engine import Conflict, Invalid, NotFound, Submission, timestamp
from tests.support.engine import (
    NEAR,
    World,
    assets,
    car,
    labeled,
    stage,
    standard_flow,
    weather,
)


def without(item: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != key}


def near(a: dict[str, Any], b: dict[str, Any], **changes: Any) -> dict[str, Any]:
    relation = {
        "from": a["objectId"],
        "to": b["objectId"],
        "objectId": "r" + a["objectId"][1:],
        "schemaId": NEAR,
        "direction": "straight",
        "title": "Near",
    } | changes
    return {k: v for k, v in relation.items() if v is not None}


# -- submit ---------------------------------------------------------------------------------


async def test_a_submit_moves_the_task_through_the_webhook_to_review(world: World) -> None:
    _, task_id = await world.one_task()
    before = await world.engine.get_task(task_id)
    imported_at = world.clock.now
    submitted_at = world.clock.advance(30)
    moved = await world.engine.submit(task_id, labeled(1), user="ann@example.com", duration_ms=1500)

    assert moved == await world.engine.get_task(task_id)
    assert (moved.stage_id, moved.version) == ("review", before.version + 1)
    assert moved.annotations["tools"] == labeled(1).tools
    assert (moved.updated_by, moved.updated_at, moved.total_duration) == (
        "ann@example.com",
        submitted_at,
        1500,
    )
    start, label, passed = moved.stage_history
    assert (start["stageId"], start["completedAt"]) == ("Start", timestamp(imported_at))
    assert label == {
        "stage": "Label",
        "stageId": "Label",
        "duration": 1500,
        "completedAt": timestamp(submitted_at),
        "completedBy": "ann@example.com",
        "tools": labeled(1).tools,
        "classifications": labeled(1).classifications,
        "relations": [],
        "brushDataUrl": None,
    }
    assert (passed["stage"], passed["stageId"], passed["duration"]) == ("Webhook", "webhook", 0)
    assert "completedBy" not in passed


async def test_a_submit_enqueues_exactly_one_webhook_in_the_seed_shape(world: World) -> None:
    project_id, task_id = await world.one_task()
    world.clock.advance(30)
    await world.engine.submit(task_id, labeled(1), user="ann@example.com", duration_ms=1500)

    [info] = await world.engine.list_deliveries(project_id)
    assert (info.stage_id, info.task_id, info.external_id) == (
        "webhook",
        task_id,
        "street-0001.jpg",
    )
    assert (info.state, info.attempts, info.due_at) == ("pending", 0, world.clock.now)
    detail = await world.engine.get_delivery(info.id)
    body = orjson.loads(detail.body)
    assert payload.parse(detail.body).task.taskId == task_id  # what a receiver reads
    assert body["batches"] == ["night", "city"]
    task = body["task"]
    assert (task["stage"], task["stageId"]) == ("Label", "Label")
    assert (task["updatedBy"], task["totalDuration"]) == ("ann@example.com", 1500)
    assert task["updatedAt"] == timestamp(world.clock.now)
    assert task["tools"] == labeled(1).tools
    assert task["classifications"] == labeled(1).classifications
    # The body is the task as it entered the stage: the Webhook stage is not in its history.
    assert [h["stageId"] for h in task["stageHistory"]] == ["Start", "Label"]
    assert body["contextData"] == {"camera": "front", "n": 1}
    assert world.wakes == [world.clock.now]


async def test_an_ango_2025_stage_sends_its_own_shape(world: World) -> None:
    project_id, task_id = await world.one_task(standard_flow(format="ango-2025"))
    await world.engine.submit(task_id, labeled(1), user="ann@example.com", duration_ms=700)

    [body] = await world.bodies(project_id)
    task = await world.engine.get_task(task_id)
    assert body["projectId"] == project_id
    assert body["batches"] == [batch_id for batch_id, _ in task.batches]
    assert body["batchNames"] == ["night", "city"]
    assert body["categorySchema"]["tools"][0]["title"] == "Car"
    assert (body["task"]["stageId"], body["task"]["stageName"]) == ("webhook", "Webhook")
    assert (body["task"]["duration"], body["task"]["totalDuration"]) == (700, 700)
    assert body["task"]["tools"] == labeled(1).tools


async def test_an_ango_2025_duration_is_the_labelers_even_after_a_logic_stage(
    world: World,
) -> None:
    flow = standard_flow(format="ango-2025")
    flow[1]["next"] = ["logic"]
    flow.append(
        stage("logic", "Logic", "webhook", "webhook", rules=[{"kind": "sample", "percent": 50}])
    )
    project_id, task_id = await world.one_task(flow)
    await world.engine.submit(task_id, labeled(1), user="ann@example.com", duration_ms=700)

    [body] = await world.bodies(project_id)
    assert [h["stageId"] for h in body["task"]["stageHistory"]] == ["Start", "Label", "logic"]
    assert (body["task"]["duration"], body["task"]["totalDuration"]) == (700, 700)


@pytest.mark.parametrize(
    ("submission", "path"),
    [
        (
            Submission(tools=[car(1) | {"bounding-box": {"x": 1, "y": 2, "height": 3}}]),
            "tools[0].bounding-box.width",
        ),
        (Submission(tools=[car(1) | {"schemaId": "no-such-tool"}]), "tools[0].schemaId"),
        (Submission(tools=[car(1, occluded="Maybe")]), "tools[0].classifications[0].answer"),
        (Submission(classifications=[weather(1, "Foggy")]), "classifications[0].answer"),
        (Submission(tools=[car(1), car(1)]), "tools[1].objectId"),
        # What the export format needs beyond the schema: a body a receiver can parse.
        (Submission(tools=[without(car(1), "title")]), "tools[0].title"),
        (Submission(tools=[without(car(1), "classifications")]), "tools[0].classifications"),
        (Submission(tools=[car(1) | {"page": -1}]), "tools[0].page"),
        (Submission(tools=[car(1) | {"metadata": "yesterday"}]), "tools[0].metadata"),
        (Submission(classifications=[without(weather(1), "tool")]), "classifications[0].tool"),
        (
            Submission(tools=[car(1), car(2)], relations=[near(car(1), car(2), direction=None)]),
            "relations[0].direction",
        ),
    ],
)
async def test_a_refused_submit_names_the_field_and_changes_nothing(
    world: World, submission: Submission, path: str
) -> None:
    project_id, task_id = await world.one_task()
    before = await world.engine.get_task(task_id)
    world.clock.advance(5)

    with pytest.raises(Invalid) as refused:
        await world.engine.submit(task_id, submission, user="ann@example.com", duration_ms=10)
    assert [p for p, _ in refused.value.problems] == [path]
    assert path in refused.value.message

    assert await world.engine.get_task(task_id) == before
    assert await world.engine.list_deliveries(project_id) == []
    assert world.wakes == []


async def test_only_a_task_at_label_or_start_can_be_submitted(world: World) -> None:
    project_id, task_id = await world.one_task()
    await world.engine.submit(task_id, labeled(1), user="ann@example.com")
    at_review = await world.engine.get_task(task_id)

    with pytest.raises(Conflict) as refused:
        await world.engine.submit(task_id, labeled(2), user="bob@example.com")
    assert "'Review'" in refused.value.message
    assert "Label or Start" in refused.value.message
    await world.engine.review(task_id, accept=True, user="rev@example.com")
    with pytest.raises(Conflict, match="'Complete'"):
        await world.engine.submit(task_id, labeled(2), user="bob@example.com")
    with pytest.raises(Conflict, match="'Complete'"):
        await world.engine.review(task_id, accept=True, user="rev@example.com")

    assert len(await world.engine.list_deliveries(project_id)) == 1
    assert (await world.engine.get_task(task_id)).version == at_review.version + 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user": "  "}, "user"),
        ({"user": "ann@example.com", "duration_ms": -1}, "duration"),
        ({"user": "ann@example.com", "duration_ms": 1.5}, "duration"),
    ],
)
async def test_a_submit_needs_a_user_and_a_whole_duration(
    world: World, kwargs: dict[str, Any], field: str
) -> None:
    _, task_id = await world.one_task()
    with pytest.raises(Invalid, match=field):
        await world.engine.submit(task_id, labeled(1), **kwargs)
    assert (await world.engine.get_task(task_id)).stage_id == "Label"


async def test_an_unknown_task_is_not_found(world: World) -> None:
    await world.one_task()
    with pytest.raises(NotFound, match="nope"):
        await world.engine.submit("nope", labeled(1), user="ann@example.com")


# -- review ---------------------------------------------------------------------------------


async def test_accept_takes_the_first_output_reject_the_second(world: World) -> None:
    project = await world.project()
    kept, sent_back = await world.imported(project.id, assets(2))
    for n, task_id in enumerate((kept, sent_back), start=1):
        await world.engine.submit(task_id, labeled(n), user="ann@example.com")

    fixed = Submission(tools=[car(9)], classifications=[weather(9, "Rainy")])
    accepted = await world.engine.review(
        kept, accept=True, user="rev@example.com", duration_ms=300, submission=fixed
    )
    rejected = await world.engine.review(sent_back, accept=False, user="rev@example.com")

    assert accepted.stage_id == "Complete"
    assert accepted.annotations["tools"] == fixed.tools  # the reviewer's correction is kept
    assert accepted.stage_history[-1]["stageId"] == "review"
    assert accepted.stage_history[-1]["completedBy"] == "rev@example.com"
    assert rejected.stage_id == "Label"
    assert rejected.annotations["tools"] == labeled(2).tools
    assert await world.engine.count_tasks(project.id) == {"Complete": 1, "Label": 1}
    assert len(await world.engine.list_deliveries(project.id)) == 2  # no new one


async def test_a_refused_review_changes_nothing(world: World) -> None:
    _, task_id = await world.one_task()
    await world.engine.submit(task_id, labeled(1), user="ann@example.com")
    before = await world.engine.get_task(task_id)
    bad = Submission(classifications=[weather(1, "Foggy")])
    with pytest.raises(Invalid, match=r"classifications\[0\]\.answer"):
        await world.engine.review(task_id, accept=True, user="rev@example.com", submission=bad)
    assert await world.engine.get_task(task_id) == before


async def test_a_rejected_task_labeled_again_is_delivered_again(world: World) -> None:
    project_id, task_id = await world.one_task()
    await world.engine.submit(task_id, labeled(1), user="ann@example.com", duration_ms=1000)
    world.clock.advance(10)
    await world.engine.review(task_id, accept=False, user="rev@example.com", duration_ms=250)
    world.clock.advance(10)
    again = await world.engine.submit(task_id, labeled(2), user="bob@example.com", duration_ms=2000)
    done = await world.engine.review(task_id, accept=True, user="rev@example.com", duration_ms=50)

    infos = await world.engine.list_deliveries(project_id, task_id=task_id, stage_id="webhook")
    assert len({i.id for i in infos}) == 2
    first, second = await world.bodies(project_id, task_id=task_id)
    assert first["task"]["tools"] == labeled(1).tools
    assert second["task"]["tools"] == labeled(2).tools
    assert (first["task"]["updatedBy"], second["task"]["updatedBy"]) == (
        "ann@example.com",
        "bob@example.com",
    )
    assert second["task"]["totalDuration"] == 1000 + 250 + 2000
    assert again.stage_id == "review"
    assert done.total_duration == 1000 + 250 + 2000 + 50
    assert [(h["stageId"], h["duration"]) for h in done.stage_history] == [
        ("Start", 0),
        ("Label", 1000),
        ("webhook", 0),
        ("review", 250),
        ("Label", 2000),
        ("webhook", 0),
        ("review", 50),
    ]
    assert len(world.wakes) == 2


async def test_every_accepted_submission_gives_a_body_a_receiver_parses(world: World) -> None:
    project_id, task_id = await world.one_task()
    full = Submission(
        tools=[car(1, occluded="Yes") | {"page": 0}, car(2)],
        classifications=[weather(1)],
        relations=[near(car(1), car(2))],
        brush_data_url="https://assets.example.com/mask.png",
    )
    await world.engine.submit(task_id, full, user="ann@example.com")
    [info] = await world.engine.list_deliveries(project_id)
    record = payload.parse((await world.engine.get_delivery(info.id)).body)
    assert [t.objectId for t in record.task.tools] == [car(1)["objectId"], car(2)["objectId"]]
    assert record.task.brushDataUrl == "https://assets.example.com/mask.png"
