"""Automatic and held routing through the engine: Logic rules and Hold stages, on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from hookstage.engine import Invalid, NotFound, Submission
from tests.support.engine import (
    CAR,
    OCCLUDED,
    OCCLUDED_YES,
    WEATHER,
    World,
    asset,
    car,
    stage,
    weather,
    webhook,
)

# -- Logic ----------------------------------------------------------------------------------


def logic_flow(rules: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start -> Label -> Logic, each output to its own end stage `out0`, `out1`, ..."""
    outs = [f"out{i}" for i in range(len(rules) + 1)]
    return [
        stage("Start", "Start", "Label"),
        stage("Label", "Label", "logic"),
        stage("logic", "Logic", *outs, rules=list(rules)),
        *(stage(out, "Complete") for out in outs),
    ]


def present(schema_id: str, *, present: bool = True) -> dict[str, Any]:
    return {"kind": "annotation", "schemaId": schema_id, "present": present}


NOTHING = Submission()
A_CAR = Submission(tools=[car(1)])
OCCLUDED_CAR = Submission(tools=[car(1, occluded="Yes")])
VISIBLE_CAR = Submission(tools=[car(1, occluded="No")])
SUNNY = Submission(classifications=[weather(1)])
ANN = "ann@example.com"
NIGHT = {"kind": "batch", "batches": ["night"]}
BY_BOB = {"kind": "annotator", "emails": ["bob@example.com"]}


def case(
    rules: list[dict[str, Any]],
    submission: Submission,
    output: str,
    *,
    user: str = ANN,
    batches: Sequence[str] = (),
) -> Any:
    return pytest.param(rules, submission, user, list(batches), output)


@pytest.mark.parametrize(
    ("rules", "submission", "user", "batches", "output"),
    [
        case([present(CAR)], A_CAR, "out0"),
        case([present(CAR)], NOTHING, "out1"),
        case([present(CAR)], SUNNY, "out1"),
        case([present(CAR, present=False)], NOTHING, "out0"),
        case([present(CAR, present=False)], A_CAR, "out1"),
        case([present(WEATHER)], SUNNY, "out0"),
        # A classification nested in a tool counts, and so does a chosen option.
        case([present(OCCLUDED)], OCCLUDED_CAR, "out0"),
        case([present(OCCLUDED)], A_CAR, "out1"),
        case([present(OCCLUDED_YES)], OCCLUDED_CAR, "out0"),
        case([present(OCCLUDED_YES)], VISIBLE_CAR, "out1"),
        case([{"kind": "annotator", "emails": ["Ann@Example.com"]}], NOTHING, "out0"),
        case([BY_BOB], NOTHING, "out1"),
        case([BY_BOB], NOTHING, "out0", user="BOB@example.com"),
        case([NIGHT], NOTHING, "out0", batches=["city", "night"]),
        case([NIGHT], NOTHING, "out1", batches=["day"]),
        case([NIGHT], NOTHING, "out1"),
        # The first rule that holds wins; none holding takes the last output.
        case([BY_BOB, present(CAR)], A_CAR, "out1"),
        case([BY_BOB, present(CAR)], A_CAR, "out0", user="bob@example.com"),
        case([BY_BOB, present(CAR)], SUNNY, "out2"),
    ],
)
async def test_a_logic_rule_routes_the_submitted_task(
    world: World,
    *,
    rules: list[dict[str, Any]],
    submission: Submission,
    user: str,
    batches: list[str],
    output: str,
) -> None:
    project = await world.project(logic_flow(rules))
    [task_id] = await world.imported(project.id, [asset(1, batches=batches)])
    moved = await world.engine.submit(task_id, submission, user=user)

    assert moved.stage_id == output
    assert [h["stageId"] for h in moved.stage_history] == ["Start", "Label", "logic"]


@pytest.mark.parametrize(("percent", "output"), [(100, "out0"), (0, "out1")])
async def test_a_sample_of_all_or_none_takes_every_task_or_none(
    world: World, percent: int, output: str
) -> None:
    project = await world.project(logic_flow([{"kind": "sample", "percent": percent}]))
    ids = await world.imported(project.id, [asset(n) for n in range(12)])
    for task_id in ids:
        await world.engine.submit(task_id, NOTHING, user=ANN)
    assert await world.engine.count_tasks(project.id) == {output: 12}


async def test_logic_sends_each_task_to_the_webhook_its_rule_picks(world: World) -> None:
    flow = [
        stage("Start", "Start", "Label"),
        stage("Label", "Label", "logic"),
        stage("logic", "Logic", "cars", "others", rules=[present(CAR)]),
        webhook("cars", "Complete", name="Cars"),
        webhook("others", "Complete", name="Others", format="ango-2025"),
        stage("Complete", "Complete"),
    ]
    project = await world.project(flow)
    with_car, without = await world.imported(project.id, [asset(1), asset(2)])
    await world.engine.submit(with_car, A_CAR, user=ANN)
    await world.engine.submit(without, SUNNY, user=ANN)

    [to_cars] = await world.bodies(project.id, stage_id="cars")
    [to_others] = await world.bodies(project.id, stage_id="others")
    assert to_cars["task"]["taskId"] == with_car
    assert to_cars["task"]["stageId"] == "Label"  # ango-2023: the stage whose work it carries
    assert to_others["task"]["taskId"] == without
    assert to_others["task"]["stageName"] == "Others"  # ango-2025: the Webhook stage itself
    assert await world.engine.count_tasks(project.id) == {"Complete": 2}
    assert len(world.wakes) == 2


async def test_logic_after_start_routes_at_import_by_batch(world: World) -> None:
    flow = [
        stage("Start", "Start", "logic"),
        stage("logic", "Logic", "night-shift", "Label", rules=[NIGHT]),
        stage("night-shift", "Label", "Complete"),
        stage("Label", "Label", "Complete"),
        stage("Complete", "Complete"),
    ]  # fmt: skip
    project = await world.project(flow)
    night = await world.imported(
        project.id, [asset(1, batches=["night"]), asset(2, batches=["day", "night"])]
    )
    day = await world.imported(project.id, [asset(3, batches=["day"]), asset(4, batches=[])])

    assert sorted(
        t.id for t in await world.engine.list_tasks(project.id, stage="night-shift")
    ) == sorted(night)
    assert sorted(t.id for t in await world.engine.list_tasks(project.id, stage="Label")) == sorted(
        day
    )


# -- Hold -----------------------------------------------------------------------------------


def hold_flow(**settings: Any) -> list[dict[str, Any]]:
    return [
        stage("Start", "Start", "hold"),
        stage("hold", "Hold", "Label", name="Waiting room", **settings),
        stage("Label", "Label", "Complete"),
        stage("Complete", "Complete"),
    ]


async def held_world(world: World, **settings: Any) -> tuple[str, list[str], list[str]]:
    """A project with two night tasks and two day tasks, all held."""
    project = await world.project(hold_flow(**settings))
    night = await world.imported(project.id, [asset(n, batches=["night"]) for n in (1, 2)])
    day = await world.imported(project.id, [asset(n, batches=["day"]) for n in (3, 4)])
    return project.id, night, day


async def at(world: World, project_id: str, stage_id: str) -> list[str]:
    return sorted(t.id for t in await world.engine.list_tasks(project_id, stage=stage_id))


async def test_held_tasks_wait_until_released(world: World) -> None:
    project_id, night, day = await held_world(world)
    assert await world.engine.count_tasks(project_id) == {"hold": 4}

    released_at = world.clock.advance(3600)
    released = await world.engine.release(project_id, "hold", user="lead@example.com")
    assert sorted(released) == sorted(night + day)
    assert await world.engine.count_tasks(project_id) == {"Label": 4}
    task = await world.engine.get_task(night[0])
    left = task.stage_history[-1]
    assert (left["stage"], left["stageId"], left["completedBy"]) == (
        "Waiting room",
        "hold",
        "lead@example.com",
    )
    assert task.updated_at == released_at
    assert await world.engine.release(project_id, "hold", user="lead@example.com") == []


async def test_release_of_named_tasks_takes_only_those_still_held(world: World) -> None:
    project_id, night, day = await held_world(world)
    released = await world.engine.release(
        project_id, "hold", user="lead@example.com", task_ids=[night[0], day[1]]
    )
    assert sorted(released) == sorted([night[0], day[1]])
    assert await at(world, project_id, "hold") == sorted([night[1], day[0]])
    again = await world.engine.release(
        project_id, "hold", user="lead@example.com", task_ids=[night[0], night[1]]
    )
    assert again == [night[1]]  # night[0] had left already


async def test_release_of_one_batch(world: World) -> None:
    project_id, night, day = await held_world(world)
    released = await world.engine.release(project_id, "hold", user="lead@example.com", batch="day")
    assert sorted(released) == sorted(day)
    assert await at(world, project_id, "hold") == sorted(night)


async def test_release_batches_limits_a_release_of_all(world: World) -> None:
    project_id, night, day = await held_world(world, releaseBatches=["night"])
    released = await world.engine.release(project_id, "hold", user="lead@example.com")
    assert sorted(released) == sorted(night)
    assert await at(world, project_id, "hold") == sorted(day)
    # A task named by id leaves whatever its batch.
    named = await world.engine.release(
        project_id, "hold", user="lead@example.com", task_ids=[day[0]]
    )
    assert named == [day[0]]


async def test_release_into_a_webhook_enqueues_one_delivery_per_task(world: World) -> None:
    flow = [
        stage("Start", "Start", "hold"),
        stage("hold", "Hold", "hook"),
        webhook("hook", "Label"),
        stage("Label", "Label", "Complete"),
        stage("Complete", "Complete"),
    ]
    project = await world.project(flow)
    ids = await world.imported(project.id, [asset(n) for n in range(3)])
    assert world.wakes == []
    await world.engine.release(project.id, "hold", user="lead@example.com")
    infos = await world.engine.list_deliveries(project.id, stage_id="hook")
    assert sorted(i.task_id for i in infos) == sorted(ids)
    assert len(world.wakes) == 1


async def test_release_needs_a_hold_stage(world: World) -> None:
    project_id, _, _ = await held_world(world)
    with pytest.raises(Invalid, match="'Label' is a Label stage"):
        await world.engine.release(project_id, "Label", user="lead@example.com")
    with pytest.raises(NotFound, match="'hold'"):
        await world.engine.release(project_id, "holding", user="lead@example.com")
    assert await world.engine.count_tasks(project_id) == {"hold": 4}


async def test_a_sample_sends_a_task_the_same_way_on_its_second_pass(world: World) -> None:
    flow = [
        stage("Start", "Start", "Label"),
        stage("Label", "Label", "logic"),
        stage("logic", "Logic", "check-a", "check-b", rules=[{"kind": "sample", "percent": 50}]),
        stage("check-a", "Review", "Complete", "Label"),
        stage("check-b", "Review", "Complete", "Label"),
        stage("Complete", "Complete"),
    ]
    project = await world.project(flow)
    ids = await world.imported(project.id, [asset(n) for n in range(10)])
    first = {t: (await world.engine.submit(t, NOTHING, user=ANN)).stage_id for t in ids}
    for task_id in ids:
        await world.engine.review(task_id, accept=False, user="rev@example.com")
    second = {t: (await world.engine.submit(t, A_CAR, user=ANN)).stage_id for t in ids}
    assert second == first


async def test_a_gate_webhook_keeps_the_task_in_the_stage(world: World) -> None:
    flow = [
        stage("Start", "Start", "Label"),
        stage("Label", "Label", "hook"),
        webhook("hook", "Complete", "failed", mode="gate"),
        stage("Complete", "Complete"),
        stage("failed", "Label", "Complete"),
    ]
    project = await world.project(flow)
    [task_id] = await world.imported(project.id, [asset(1)])
    moved = await world.engine.submit(task_id, A_CAR, user=ANN)
    assert moved.stage_id == "hook"
    [info] = await world.engine.list_deliveries(project.id)
    assert (info.task_id, info.stage_id) == (task_id, "hook")
