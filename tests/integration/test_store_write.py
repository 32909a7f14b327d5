"""One-trip writes and reads (`Store.write`, `Store.read_once`) on SQLite and PostgreSQL, and
steps, which read before they write, losing their write to a change made meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from hookstage.engine import Conflict, Engine
from hookstage.store import Duplicate, Statement, Store, open_store, sql_for
from hookstage.store.tables import batches, projects
from tests.support.engine import World, labeled, standard_flow

T0 = 1_700_000_000.0

_ADD = "INSERT INTO batches (id, project_id, name) VALUES (?, ?, ?)"


def _add(store: Store, *rows: tuple[str, str]) -> Statement:
    return Statement(sql_for(_ADD, store.dialect), [(i, "p1", name) for i, name in rows])


async def _project(store: Store) -> None:
    async with store.transaction() as conn:
        await conn.execute(
            projects.insert().values(
                id="p1", name="P", category_schema={}, workflow={}, created_at=T0, updated_at=T0
            )
        )


async def _names(store: Store) -> dict[str, str]:
    async with store.read() as conn:
        rows = await conn.execute(sa.select(batches.c.id, batches.c.name))
        return {batch_id: name for batch_id, name in rows.all()}


async def test_a_write_runs_its_statements_in_order_and_gives_their_rows(store: Store) -> None:
    await _project(store)
    rename = "UPDATE batches SET name = ? WHERE id = ? RETURNING id, name"
    found = await store.write(
        [
            _add(store, ("b1", "one"), ("b2", "two")),
            Statement(sql_for(rename, store.dialect), ("uno", "b1")),
            Statement(sql_for("SELECT count(*) FROM batches", store.dialect)),
        ]
    )
    assert [[tuple(row) for row in rows] for rows in found] == [[], [("b1", "uno")], [(2,)]]
    assert await _names(store) == {"b1": "uno", "b2": "two"}


async def test_a_check_that_refuses_fails_the_whole_write_and_keeps_nothing(store: Store) -> None:
    await _project(store)

    class Refused(Exception):
        pass

    seen: list[int] = []

    def exactly_one(changed: int) -> None:
        seen.append(changed)
        if changed != 1:
            raise Refused(f"changed {changed} rows")

    missing = Statement(
        sql_for("UPDATE batches SET name = ? WHERE id = ?", store.dialect),
        ("x", "nope"),
        exactly_one,
    )
    with pytest.raises(Refused, match="changed 0 rows"):
        await store.write([_add(store, ("b1", "one")), missing])
    assert seen == [0]
    assert await _names(store) == {}
    await store.write([_add(store, ("b1", "one"))])  # the store goes on
    assert await _names(store) == {"b1": "one"}


async def test_a_key_taken_is_a_duplicate_and_the_write_keeps_nothing(store: Store) -> None:
    await _project(store)
    await store.write([_add(store, ("b1", "one"))])
    with pytest.raises(Duplicate):
        await store.write([_add(store, ("b2", "two")), _add(store, ("b1", "again"))])
    assert await _names(store) == {"b1": "one"}


async def test_writes_at_once_each_succeed_or_fail_as_if_alone(store: Store) -> None:
    # On SQLite the writes after the first go in one trip, committed together, while the
    # first is under way: one refusing or taking a taken key must fail alone.
    await _project(store)
    await store.write([_add(store, ("b0", "zero"))])

    class Refused(Exception):
        pass

    def refuse(_changed: int) -> None:
        raise Refused("no")

    outcomes = await asyncio.gather(
        store.write([_add(store, ("b1", "one"))]),
        store.write([_add(store, ("b2", "two"))]),
        store.write(
            [_add(store, ("b3", "three")), Statement(_add(store).sql, [("b7", "p1", "x")], refuse)]
        ),
        store.write([_add(store, ("b4", "four"))]),
        store.write([_add(store, ("b5", "five")), _add(store, ("b0", "again"))]),
        store.write([_add(store, ("b6", "six"))]),
        return_exceptions=True,
    )

    assert [type(o).__name__ if isinstance(o, Exception) else o for o in outcomes] == [
        [[]],
        [[]],
        "Refused",
        [[]],
        "Duplicate",
        [[]],
    ]
    assert await _names(store) == {
        "b0": "zero",
        "b1": "one",
        "b2": "two",
        "b4": "four",
        "b6": "six",
    }


async def test_read_once_gives_each_statement_s_rows(store: Store) -> None:
    await _project(store)
    await store.write([_add(store, ("b1", "one"), ("b2", "two"))])
    found = await store.read_once(
        [
            Statement(sql_for("SELECT name FROM batches ORDER BY id", store.dialect)),
            Statement(sql_for("SELECT id FROM batches WHERE name = ?", store.dialect), ("two",)),
        ]
    )
    assert [[tuple(row) for row in rows] for rows in found] == [[("one",), ("two",)], [("b2",)]]


# -- steps losing their write ---------------------------------------------------------------


@dataclass
class _Meddling(Store):
    """The same database; runs ``meddle`` before each of the next ``times`` writes."""

    meddle: Callable[[], Awaitable[Any]] | None = None
    times: int = 0

    async def write(self, statements: list[Statement]) -> list[list[Any]]:
        if self.meddle is not None and self.times > 0:
            self.times -= 1
            await self.meddle()
        return await super().write(statements)


@contextlib.asynccontextmanager
async def _meddled(
    world: World, database: str, meddle: Callable[[], Awaitable[Any]], times: int
) -> AsyncIterator[Engine]:
    """An engine on its own store, whose steps' writes each come after ``meddle`` (done
    with the world's engine)."""
    opened = await open_store(database, migrate=False)
    store = _Meddling(opened.engine, meddle=meddle, times=times)
    try:
        yield Engine(store, clock=world.clock)
    finally:
        await store.close()


async def test_a_step_whose_workflow_changed_after_its_read_moves_by_the_new_one(
    world: World, database: str
) -> None:
    project_id, task_id = await world.one_task()
    newer = standard_flow(format="ango-2025")

    async def reformat() -> None:
        world.clock.advance(1)  # a new `updated_at`, the step's condition
        await world.engine.update_workflow(project_id, newer)

    async with _meddled(world, database, reformat, times=1) as engine:
        moved = await engine.submit(task_id, labeled(1), user="ann@example.com")
    assert moved.stage_id == "review"
    [body] = await world.bodies(project_id)
    assert "batchNames" in body  # rendered again, as ango-2025, after the update
    assert body["task"]["stageName"] == "Webhook"


async def test_a_step_whose_task_moved_after_its_read_reads_it_again(
    world: World, database: str
) -> None:
    project_id, task_id = await world.one_task()
    before = await world.engine.get_task(task_id)

    async def submit_first() -> None:
        await world.engine.submit(task_id, labeled(2), user="bob@example.com")

    async with _meddled(world, database, submit_first, times=1) as engine:
        with pytest.raises(Conflict, match="Review"):  # read again: not at Label any more
            await engine.submit(task_id, labeled(1), user="ann@example.com")
    after = await world.engine.get_task(task_id)
    assert (after.version, after.updated_by) == (before.version + 1, "bob@example.com")
    assert len(await world.bodies(project_id)) == 1


async def test_a_step_that_keeps_losing_gives_up_with_a_conflict(
    world: World, database: str
) -> None:
    project_id, task_id = await world.one_task()

    async def touch() -> None:
        await world.engine.requeue(task_id, "Label", user="manager@example.com")

    async with _meddled(world, database, touch, times=10) as engine:
        with pytest.raises(Conflict, match="being changed by others"):
            await engine.submit(task_id, labeled(1), user="ann@example.com")
        assert engine.store.times == 10 - 3  # type: ignore[attr-defined]  # three tries
    task = await world.engine.get_task(task_id)
    assert task.stage_id == "Label"
    assert await world.bodies(project_id) == []
