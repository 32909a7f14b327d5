"""A step's two statements on its task (store.tasks), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from hookstage.engine import Conflict
from hookstage.store import tasks as task_rows
from tests.support.engine import World, asset


async def test_a_task_reads_back_as_it_was_imported(world: World) -> None:
    _, task_id = await world.one_task()
    async with world.store.read() as conn:
        found = await task_rows.load(conn, task_id)
        missing = await task_rows.load(conn, "no-such-task")
    assert found is not None
    task, stamp, batched = found
    assert (task["id"], task["stage_id"], batched) == (task_id, "Label", True)
    assert task["asset_metadata"] == {"width": 1280, "height": 720}
    assert task["context_data"] == {"camera": "front", "n": 1}
    assert stamp == (await world.engine.get_project(task["project_id"])).updated_at
    assert missing is None


async def test_a_write_at_a_version_the_task_has_left_fails_and_changes_nothing(
    world: World,
) -> None:
    _, task_id = await world.one_task()
    async with world.store.read() as conn:
        found = await task_rows.load(conn, task_id)
    assert found is not None
    task = found[0]
    moved = {name: task[name] for name in task_rows.WRITTEN}
    moved |= {"stage_id": "Review", "annotations": {"tools": [{"n": 1}]}, "version": 9}

    async def write(version: int) -> None:
        async with world.store.transaction() as conn:
            await task_rows.update(
                conn, task_id, moved, expected_version=version, otherwise=lambda: Conflict("!")
            )

    with pytest.raises(Conflict, match="!"):
        await write(task["version"] + 1)
    unchanged = await world.engine.get_task(task_id)
    assert (unchanged.stage_id, unchanged.version) == ("Label", task["version"])
    await write(task["version"])
    written = await world.engine.get_task(task_id)
    assert (written.stage_id, written.version) == ("Review", 9)
    assert written.annotations == {"tools": [{"n": 1}]}


async def test_batches_are_read_for_many_tasks_at_once(world: World) -> None:
    project = await world.project()
    first, second = await world.imported(
        project.id, [asset(1, batches=["night", "city"]), asset(2, batches=["day"])]
    )
    # More ids than one statement binds: the second task's are read by a later statement.
    ids = [first, *(f"missing-{n}" for n in range(1500)), second]
    async with world.store.read() as conn:
        found = await task_rows.batches_of(conn, ids)
    names = {task_id: [name for _, name in links] for task_id, links in found.items()}
    assert names == {first: ["night", "city"], second: ["day"]}
