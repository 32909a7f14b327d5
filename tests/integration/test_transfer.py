"""Moving an installation to another database (`hookstage copy`): SQLite to PostgreSQL and
back; what the engine reads afterwards is what it read before, and it goes on working."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hookstage.engine import Engine
from hookstage.retry import Decision
from hookstage.store import Store, StoreError, open_store
from hookstage.store.tables import projects
from hookstage.store.transfer import copied_tables, copy_database
from tests.support.engine import World, assets, finish, labeled, opened
from tests.support.postgres import Postgres


@dataclass
class Before:
    """What a user sees of the installation, and a key's value to sign in with."""

    project_id: str
    key_value: str
    seen: dict[str, Any]


async def _seen(engine: Engine, project_id: str) -> dict[str, Any]:
    listed = await engine.list_deliveries(project_id)
    return {
        "export": [view async for view in engine.export(project_id)],
        "deliveries": [await engine.get_delivery(d.id) for d in listed],
        "log": await engine.stage_log(project_id, "webhook"),
        "keys": await engine.list_keys(),
        "project": await engine.get_project(project_id),
    }


async def _fill(world: World) -> Before:
    project = await world.project()
    ids = await world.imported(project.id, assets(5, batches=["night", "city"]))
    for n, task_id in enumerate(ids[:3]):
        await world.engine.submit(task_id, labeled(n), user="ann@example.com")
    world.clock.advance(5)
    [first, second, _] = [d.id for d in await world.engine.list_deliveries(project.id)]
    await finish(
        world.store,
        {first: Decision.delivered(), second: Decision.retry(world.clock.now + 60)},
        now=world.clock.now,
    )
    _, key_value = await world.engine.create_key("ci@example.com", "manager")
    return Before(project.id, key_value, await _seen(world.engine, project.id))


@contextlib.asynccontextmanager
async def _open(path: str | Path) -> AsyncIterator[Store]:
    store = await open_store(path)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["sqlite-to-postgresql", "postgresql-to-sqlite"])
async def ends(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_database: str
) -> AsyncIterator[tuple[Store, Store]]:
    """(source, target): an installation's database and an empty one."""
    async with (
        _open(tmp_path / "hookstage.sqlite") as sqlite,
        _open(postgres_database) as postgresql,
    ):
        yield (sqlite, postgresql) if request.param.startswith("sqlite") else (postgresql, sqlite)


async def test_the_copy_reads_as_the_original_and_goes_on_working(
    ends: tuple[Store, Store],
) -> None:
    source, target = ends
    async with opened(source) as world:
        before = await _fill(world)
    progress: dict[str, tuple[int, int]] = {}

    copied = await copy_database(
        source, target, page=2, progress=lambda t, done, total: progress.update({t: (done, total)})
    )

    async with opened(target) as moved:
        assert await _seen(moved.engine, before.project_id) == before.seen
        key = await moved.engine.authenticate(before.key_value)
        assert key is not None
        assert key.role == "manager"
        # New rows after the copied ones: the attempts' ids go on (a PostgreSQL sequence).
        moved.clock.advance(120)
        pending = await moved.engine.list_deliveries(before.project_id, state="pending")
        await finish(
            moved.store, {d.id: Decision.delivered() for d in pending}, now=moved.clock.now
        )
        assert {d.state for d in await moved.engine.list_deliveries(before.project_id)} == {
            "delivered"
        }
    assert copied["tasks"] == 5
    assert copied["attempts"] == 2
    assert set(copied) == {t.name for t in copied_tables()}
    assert "workers" not in copied
    assert all(done == total for done, total in progress.values())
    assert {t: total for t, (_, total) in progress.items()} == copied


async def test_a_target_with_rows_is_refused_and_left_as_it_was(ends: tuple[Store, Store]) -> None:
    source, target = ends
    async with opened(source) as world:
        await _fill(world)
    async with opened(target) as other:
        kept = await other.project(name="already here")
    with pytest.raises(StoreError, match=r"not empty \(table projects has rows\)"):
        await copy_database(source, target)
    async with target.read() as conn:
        assert (await conn.execute(projects.select())).all()[0].id == kept.id
    async with opened(target) as other:
        assert [p.id for p in await other.engine.list_projects()] == [kept.id]


async def test_a_copy_that_fails_midway_leaves_the_target_empty(postgres: Postgres) -> None:
    """The target is written in one transaction: a failure keeps nothing, and the copy can be
    run again."""
    source_url, target_url = postgres.fresh(), postgres.fresh()
    try:
        async with _open(source_url) as source, _open(target_url) as target:
            async with opened(source) as world:
                await _fill(world)

            def fail_at_tasks(table: str, done: int, _total: int) -> None:
                if table == "tasks" and done:
                    raise RuntimeError("the network went away")

            with pytest.raises(RuntimeError, match="network"):
                await copy_database(source, target, page=2, progress=fail_at_tasks)
            assert (await copy_database(source, target))["tasks"] == 5
    finally:
        postgres.drop(source_url)
        postgres.drop(target_url)
