"""The engine's other moves and what every commit does, on SQLite and PostgreSQL: requeue,
waking the dispatcher after a commit that enqueued, and steps racing for one task."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from hookstage.engine import Conflict, Engine, Invalid, NotFound, Submission, timestamp
from hookstage.store import Store, open_store
from tests.support.engine import World, assets, car, labeled, standard_flow

# -- requeue --------------------------------------------------------------------------------


async def test_requeue_sends_a_task_back_and_records_it(world: World) -> None:
    project_id, task_id = await world.one_task()
    await world.engine.submit(task_id, labeled(1), user="ann@example.com")
    at = world.clock.advance(60)

    back = await world.engine.requeue(task_id, "Label", user="manager@example.com")
    assert back == await world.engine.get_task(task_id)
    assert back.stage_id == "Label"
    left = back.stage_history[-1]
    assert (left["stage"], left["stageId"], left["completedBy"]) == (
        "Review",
        "review",
        "manager@example.com",
    )
    assert left["completedAt"] == timestamp(at)
    assert back.annotations["tools"] == labeled(1).tools  # the work is kept
    assert len(await world.engine.list_deliveries(project_id)) == 1

    await world.engine.submit(task_id, labeled(2), user="ann@example.com")
    assert len(await world.engine.list_deliveries(project_id)) == 2


async def test_requeue_into_a_webhook_stage_fires_it(world: World) -> None:
    project_id, task_id = await world.one_task()
    moved = await world.engine.requeue(task_id, "webhook", user="manager@example.com")
    assert moved.stage_id == "review"
    [body] = await world.bodies(project_id)
    assert body["task"]["taskId"] == task_id
    assert body["task"]["tools"] == []
    assert len(world.wakes) == 1


async def test_requeue_to_an_unknown_stage_names_the_known_ones(world: World) -> None:
    _, task_id = await world.one_task()
    before = await world.engine.get_task(task_id)
    with pytest.raises(NotFound) as refused:
        await world.engine.requeue(task_id, "Labelling", user="manager@example.com")
    for known in ("'Start'", "'Label'", "'webhook'", "'review'", "'Complete'"):
        assert known in refused.value.message
    assert "'Labelling'" in refused.value.message
    assert await world.engine.get_task(task_id) == before


# -- waking the dispatcher ------------------------------------------------------------------


async def test_on_enqueue_runs_after_the_commit_of_each_step_that_enqueued(
    store: Store, database: str
) -> None:
    seen: list[int] = []
    url = sa.make_url(database)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    other = sa.create_engine(url, poolclass=sa.NullPool)

    def committed() -> None:
        # Another connection already sees the deliveries: the step had committed.
        with other.connect() as conn:
            seen.append(conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar_one())

    try:
        engine = Engine(store, on_enqueue=committed)
        project = await engine.create_project(
            name="p",
            category_schema={"tools": [], "classifications": [], "relations": []},
            workflow_json=standard_flow(),
        )
        first, second = (await engine.import_assets(project.id, assets(2))).created
        assert seen == []  # the import entered no Webhook stage
        with pytest.raises(Invalid):
            await engine.submit(first, Submission(tools=[car(1)]), user="ann@example.com")
        assert seen == []  # refused: nothing committed
        await engine.submit(first, Submission(), user="ann@example.com")
        assert seen == [1]
        await engine.review(first, accept=False, user="rev@example.com")
        await engine.requeue(second, "review", user="manager@example.com")
        assert seen == [1]  # to Label, to Review: no Webhook entered
        await engine.submit(first, Submission(), user="ann@example.com")
        assert seen == [1, 2]
    finally:
        other.dispose()


# -- concurrency ----------------------------------------------------------------------------


async def test_two_submits_of_one_task_at_once_make_one_move(world: World) -> None:
    project_id, task_id = await world.one_task()
    before = await world.engine.get_task(task_id)
    results = await asyncio.gather(
        world.engine.submit(task_id, labeled(1), user="ann@example.com"),
        world.engine.submit(task_id, labeled(2), user="bob@example.com"),
        return_exceptions=True,
    )
    [won] = [r for r in results if not isinstance(r, BaseException)]
    [lost] = [r for r in results if isinstance(r, BaseException)]
    assert isinstance(lost, Conflict)
    assert won == await world.engine.get_task(task_id)
    assert won.version == before.version + 1
    [body] = await world.bodies(project_id)
    assert body["task"]["updatedBy"] == won.updated_by


async def test_two_engines_on_one_database_submit_one_task_once(
    world: World, database: str
) -> None:
    """As two `serve` processes would: separate stores, separate connections."""
    project_id, task_id = await world.one_task()
    before = await world.engine.get_task(task_id)
    other_store = await open_store(database)
    try:
        other = Engine(other_store)
        results = await asyncio.gather(
            *(
                engine.submit(task_id, labeled(n), user=f"user{n}@example.com")
                for n, engine in enumerate([world.engine, other, world.engine, other])
            ),
            return_exceptions=True,
        )
    finally:
        await other_store.close()
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    assert len(await world.engine.list_deliveries(project_id)) == 1
    assert (await world.engine.get_task(task_id)).version == before.version + 1


async def test_submits_of_different_tasks_at_once_all_go_through(world: World) -> None:
    project = await world.project()
    ids = await world.imported(project.id, assets(6))
    await asyncio.gather(
        *(world.engine.submit(t, labeled(n), user="ann@example.com") for n, t in enumerate(ids))
    )
    assert await world.engine.count_tasks(project.id) == {"review": 6}
    infos = await world.engine.list_deliveries(project.id)
    assert sorted(i.task_id for i in infos) == sorted(ids)
