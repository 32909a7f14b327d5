"""The engine's import and export use cases, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hookstage.engine import Conflict, ImportResult, Invalid, Submission, timestamp
from tests.support.engine import (
    World,
    asset,
    assets,
    labeled,
    stage,
    standard_flow,
    webhook,
)


async def exported(world: World, project_id: str, **filters: Any) -> list[dict[str, Any]]:
    return [view async for view in world.engine.export(project_id, **filters)]


# -- import ---------------------------------------------------------------------------------


async def test_imported_tasks_pass_start_and_wait_at_label(world: World) -> None:
    project = await world.project()
    result = await world.engine.import_assets(project.id, assets(3))

    assert len(result.created) == 3
    assert (result.skipped, result.deliveries) == ([], 0)
    assert await world.engine.count_tasks(project.id) == {"Label": 3}
    listed = await world.engine.list_tasks(project.id, stage="Label")
    assert sorted(t.id for t in listed) == sorted(result.created)
    task = await world.engine.get_task(result.created[0])
    assert (task.stage_id, task.external_id) == ("Label", "street-0001.jpg")
    assert task.data_url == "https://assets.example.com/street-0001.jpg"
    assert task.asset_metadata == {"width": 1280, "height": 720}
    assert task.context_data == {"camera": "front", "n": 1}
    assert [name for _, name in task.batches] == ["Batch 1"]
    [passed] = task.stage_history
    assert passed["stageId"] == "Start"
    assert passed["completedAt"] == timestamp(world.clock.now)
    assert "completedBy" not in passed
    assert world.wakes == []  # nothing was enqueued


async def test_without_auto_forward_tasks_wait_at_start_until_submitted(world: World) -> None:
    flow = standard_flow()
    flow[0]["autoForward"] = False
    project = await world.project(flow)
    [task_id] = await world.imported(project.id, assets(1))

    waiting = await world.engine.get_task(task_id)
    assert (waiting.stage_id, waiting.stage_history) == ("Start", [])
    moved = await world.engine.submit(task_id, Submission(), user="lead@example.com")
    assert moved.stage_id == "Label"
    assert [h["stageId"] for h in moved.stage_history] == ["Start"]
    assert moved.stage_history[0]["completedBy"] == "lead@example.com"


async def test_batches_are_created_by_name_and_reused(world: World) -> None:
    project = await world.project()
    [first] = await world.imported(project.id, [asset(1, batches=["night", "city"])])
    [second] = await world.imported(project.id, [asset(2, batches=["city", "rain"])])

    one, two = await world.engine.get_task(first), await world.engine.get_task(second)
    assert [name for _, name in one.batches] == ["night", "city"]  # in the order given
    assert [name for _, name in two.batches] == ["city", "rain"]
    assert one.batches[1] == two.batches[0]  # "city" is one batch, the same id
    assert len({batch_id for batch_id, _ in [*one.batches, *two.batches]}) == 3
    assert (await world.counts())[:2] == (2, 3)
    in_city = await world.engine.list_tasks(project.id, batch="city")
    assert sorted(t.id for t in in_city) == sorted([first, second])


async def test_assets_may_leave_out_the_optional_fields(world: World) -> None:
    project = await world.project()
    bare = {"externalId": "bare.jpg", "data": "https://assets.example.com/bare.jpg"}
    [task_id] = await world.imported(project.id, [bare])

    task = await world.engine.get_task(task_id)
    assert (task.context_data, task.batches, task.asset_metadata) == (None, [], {})
    [view] = await exported(world, project.id)
    assert "contextData" not in view
    assert view["batches"] == []


def _with(index: int, **changes: Any) -> list[dict[str, Any]]:
    """Four good assets in new batches, one of them changed (a None value removes the key)."""
    items = [asset(n, batches=[f"new batch {n}"]) for n in range(4)]
    items[index] = {k: v for k, v in (items[index] | changes).items() if v is not None}
    return items


@pytest.mark.parametrize(
    ("items", "path", "says"),
    [
        (_with(2, externalId=None), "[2].externalId", "non-empty string"),
        (_with(1, externalId=""), "[1].externalId", "non-empty string"),
        (_with(3, data=None), "[3].data", "URL"),
        (_with(0, data=""), "[0].data", "URL"),
        (_with(2, data=42), "[2].data", "URL"),
        (_with(1, batches="Batch 1"), "[1].batches", "list"),
        (_with(3, batches=["ok", 7]), "[3].batches", "batch names"),
        (_with(2, contextData=["not", "an", "object"]), "[2].contextData", "object"),
        (_with(2, externalId="street-0000.jpg"), "[2].externalId", "duplicate of [0]"),
    ],
)
async def test_a_bad_asset_is_named_and_nothing_is_imported(
    world: World, items: list[dict[str, Any]], path: str, says: str
) -> None:
    project = await world.project()
    with pytest.raises(Invalid) as refused:
        await world.engine.import_assets(project.id, items)

    [(where, message)] = refused.value.problems
    assert where == path
    assert says in message
    assert path in refused.value.message
    assert await world.counts() == (0, 0, 0)


async def test_every_bad_asset_is_named_at_once(world: World) -> None:
    project = await world.project()
    items = [asset(0), {"data": "x"}, "not an object", asset(0)]
    with pytest.raises(Invalid) as refused:
        await world.engine.import_assets(project.id, items)
    assert [p for p, _ in refused.value.problems] == ["[1].externalId", "[2]", "[3].externalId"]
    assert await world.counts() == (0, 0, 0)


async def test_an_asset_imported_before_is_a_conflict_unless_skipped(world: World) -> None:
    project = await world.project()
    await world.imported(project.id, assets(2))
    again = [asset(3, batches=["fresh"]), asset(2), asset(4)]

    with pytest.raises(Conflict) as refused:
        await world.engine.import_assets(project.id, again)
    assert "'street-0002.jpg'" in refused.value.message
    assert refused.value.problems == [("[1].externalId", "already imported")]
    assert await world.counts() == (2, 1, 0)  # "fresh" was not created either

    result = await world.engine.import_assets(project.id, again, skip_existing=True)
    assert result.skipped == ["street-0002.jpg"]
    made = [await world.engine.get_task(t) for t in result.created]
    assert [t.external_id for t in made] == ["street-0003.jpg", "street-0004.jpg"]
    assert await world.counts() == (4, 2, 0)


async def test_imports_of_one_external_id_at_once_make_one_task(world: World) -> None:
    """On PostgreSQL they run at once and the unique key decides: the others are refused
    as a Conflict (not a database error), and leave nothing behind."""
    project = await world.project()
    results = await asyncio.gather(
        *(world.engine.import_assets(project.id, [asset(1, batches=["new"])]) for _ in range(4)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, ImportResult)]
    lost = [r for r in results if not isinstance(r, ImportResult)]
    assert len(won) == 1
    assert all(isinstance(r, Conflict) for r in lost), lost
    assert await world.counts() == (1, 1, 0)


async def test_imports_into_one_new_batch_at_once_all_go_through(world: World) -> None:
    project = await world.project()
    await asyncio.gather(
        *(world.engine.import_assets(project.id, [asset(n, batches=["night"])]) for n in range(6))
    )
    assert await world.counts() == (6, 1, 0)
    listed = await world.engine.list_tasks(project.id, batch="night")
    assert len(listed) == 6


async def test_the_same_external_id_may_be_imported_into_another_project(world: World) -> None:
    first, second = await world.project(name="a"), await world.project(name="b")
    await world.imported(first.id, assets(2))
    assert len(await world.imported(second.id, assets(2))) == 2


async def test_a_start_leading_into_a_webhook_enqueues_at_import(world: World) -> None:
    flow = [
        stage("Start", "Start", "hook"),
        webhook("hook", "Label", name="On import"),
        stage("Label", "Label", "Complete"),
        stage("Complete", "Complete"),
    ]
    project = await world.project(flow)
    result = await world.engine.import_assets(project.id, assets(3, batches=["night"]))

    assert result.deliveries == 3
    assert world.wakes == [world.clock.now]  # one wake for the one commit
    bodies = await world.bodies(project.id, stage_id="hook")
    assert sorted(b["externalId"] for b in bodies) == [f"street-000{n}.jpg" for n in (1, 2, 3)]
    for body in bodies:
        assert body["batches"] == ["night"]
        assert (body["task"]["stage"], body["task"]["stageId"]) == ("Start", "Start")
        assert body["task"]["updatedBy"] is None
        assert [h["stageId"] for h in body["task"]["stageHistory"]] == ["Start"]
    assert await world.engine.count_tasks(project.id) == {"Label": 3}


# -- export ---------------------------------------------------------------------------------


async def test_export_gives_every_task_as_its_export_view(world: World) -> None:
    project = await world.project()
    ids = await world.imported(project.id, assets(3))
    await world.engine.submit(ids[0], labeled(1), user="ann@example.com", duration_ms=1200)

    views = await exported(world, project.id)
    assert [v["task"]["taskId"] for v in views] == sorted(ids)  # in id order
    for view in views:
        task = await world.engine.get_task(view["task"]["taskId"])
        assert view == world.engine.export_view(project, task)
        assert view["batches"] == [batch_id for batch_id, _ in task.batches]
        assert view["contextData"] == task.context_data
        assert "stageId" not in view["task"]
    done = next(v for v in views if v["task"]["taskId"] == ids[0])
    assert done["task"]["tools"] == labeled(1).tools
    assert (done["task"]["updatedBy"], done["task"]["totalDuration"]) == ("ann@example.com", 1200)


async def test_export_filters_by_stage_batch_and_time_of_change(world: World) -> None:
    project = await world.project()
    night = await world.imported(project.id, assets(3, batches=["night"]))
    day = await world.imported(project.id, [asset(n, batches=["day"]) for n in (4, 5)])
    changed_at = world.clock.advance(60)
    await world.engine.submit(night[0], labeled(1), user="ann@example.com")
    await world.engine.submit(day[0], labeled(4), user="ann@example.com")

    def ids(views: list[dict[str, Any]]) -> list[str]:
        return sorted(v["task"]["taskId"] for v in views)

    assert ids(await exported(world, project.id, stage="review")) == sorted([night[0], day[0]])
    assert ids(await exported(world, project.id, batch="night")) == sorted(night)
    assert ids(await exported(world, project.id, stage="Label", batch="night")) == sorted(night[1:])
    assert ids(await exported(world, project.id, updated_since=changed_at)) == sorted(
        [night[0], day[0]]
    )
    assert await exported(world, project.id, updated_since=changed_at + 1) == []
    assert await exported(world, project.id, batch="no such batch") == []


@pytest.mark.parametrize("page", [1, 3, 7, 500])
async def test_export_reads_page_by_page_without_losing_or_repeating(
    world: World, page: int
) -> None:
    project = await world.project()
    ids = await world.imported(project.id, assets(7))
    views = await exported(world, project.id, page=page)
    assert [v["task"]["taskId"] for v in views] == sorted(ids)


async def test_the_webhook_body_is_the_export_but_for_batches_and_stage_id(world: World) -> None:
    project = await world.project()
    [task_id] = await world.imported(project.id, [asset(1, batches=["night", "city"])])
    await world.engine.submit(task_id, labeled(1), user="ann@example.com", duration_ms=900)

    [body] = await world.bodies(project.id)
    task = await world.engine.get_task(task_id)
    # The body left as the task entered the Webhook stage; the task has since passed it, so
    # its history has one more entry.
    assert task.stage_history[-1]["stageId"] == "webhook"
    then = world.engine.export_view(project, task)
    then["task"]["stageHistory"].pop()

    assert body["batches"] == ["night", "city"]
    assert then["batches"] == [batch_id for batch_id, _ in task.batches]
    assert body["task"].pop("stageId") == "Label"
    body["batches"] = then["batches"]
    assert body == then


@pytest.mark.parametrize("page", [0, -1])
async def test_export_refuses_a_page_of_no_tasks(world: World, page: int) -> None:
    project = await world.project()
    await world.imported(project.id, assets(2))
    with pytest.raises(Invalid, match="page"):
        await exported(world, project.id, page=page)


@pytest.mark.parametrize("limit", [0, -1])
async def test_list_tasks_refuses_a_limit_below_one(world: World, limit: int) -> None:
    project = await world.project()
    await world.imported(project.id, assets(2))
    with pytest.raises(Invalid, match="limit"):
        await world.engine.list_tasks(project.id, limit=limit)


async def test_a_batch_named_twice_in_one_asset_is_refused(world: World) -> None:
    project = await world.project()
    with pytest.raises(Invalid) as refused:
        await world.engine.import_assets(project.id, [asset(0), asset(1, batches=["a", "b", "a"])])
    [(where, message)] = refused.value.problems
    assert where == "[1].batches"
    assert "'a'" in message
    assert await world.counts() == (0, 0, 0)


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"contextData": {"ids": [1, 2**64]}}, "[1].contextData.ids[1]"),
        ({"dataset": [-(2**63) - 1]}, "[1].dataset[0]"),
        ({"metadata": {"width": 10**30}}, "[1].metadata.width"),
    ],
)
async def test_an_integer_no_webhook_can_carry_is_refused_at_import(
    world: World, extra: dict[str, Any], path: str
) -> None:
    # Taken, it would fail every delivery of its task (orjson renders 64-bit integers).
    project = await world.project()
    with pytest.raises(Invalid) as refused:
        await world.engine.import_assets(project.id, [asset(0), asset(1, **extra)])
    [(where, message)] = refused.value.problems
    assert where == path
    assert "64 bits" in message
    assert await world.counts() == (0, 0, 0)


async def test_deeply_nested_context_data_is_taken(world: World) -> None:
    # Deeper than orjson writes (255 levels): the renderer falls back to json, so it is sent.
    deep: dict[str, Any] = {}
    for _ in range(300):
        deep = {"d": deep}
    project = await world.project()
    result = await world.engine.import_assets(project.id, [asset(1, contextData=deep)])
    task = await world.engine.get_task(result.created[0])
    assert task.context_data == deep


@pytest.mark.parametrize(
    ("metadata", "path"),
    [({"width": "wide"}, "[1].metadata.width"), ({"frameTotal": 2.5}, "[1].metadata.frameTotal")],
)
async def test_asset_metadata_must_be_what_a_receiver_parses(
    world: World, metadata: dict[str, Any], path: str
) -> None:
    project = await world.project()
    with pytest.raises(Invalid) as refused:
        await world.engine.import_assets(project.id, [asset(0), asset(1, metadata=metadata)])
    assert [p for p, _ in refused.value.problems] == [path]
    assert await world.counts() == (0, 0, 0)
