"""The dashboard's queries on a real database (SQLite, then PostgreSQL: the `world` fixture):
a stage's hour minute by minute, attempts of many deliveries at once, batch names."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookstage.store import stats
from hookstage.store.tables import attempts
from tests.support.engine import World, asset, labeled

NOW = 1_700_000_030.0  # half a minute into a minute
SINCE = (NOW // 60 - 59) * 60


async def delivery(world: World, n: int = 1) -> tuple[str, str]:
    """A project whose one labelled task made one delivery: (project id, delivery id)."""
    project = await world.project(name=f"p{n}")
    [task] = await world.imported(project.id, [asset(n)])
    await world.engine.submit(task, labeled(n), user="ann@example.com")
    [found] = await world.engine.list_deliveries(project.id)
    return project.id, found.id


def attempt(
    delivery_id: str, started_at: float, duration: float, status: int | None
) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "number": 1,
        "started_at": started_at,
        "duration_ms": duration,
        "status_code": status,
        "error_class": None if status is not None else "timeout",
        "error": None,
        "response_headers": None,
        "response_body": b"ok" if status is not None else None,
    }


async def add(world: World, rows: Sequence[dict[str, Any]]) -> None:
    async with world.store.transaction() as conn:
        await conn.execute(attempts.insert(), list(rows))


async def test_an_hour_of_a_stage_minute_by_minute(world: World) -> None:
    project_id, delivery_id = await delivery(world)
    _, elsewhere = await delivery(world, 2)
    current = NOW - 20
    await add(
        world,
        [
            *(attempt(delivery_id, current, d, 200) for d in (40, 10, 1000, 30)),
            attempt(delivery_id, current + 1, 20, 500),
            attempt(delivery_id, SINCE, 7, None),  # the first second of the hour
            attempt(delivery_id, SINCE - 0.5, 9, 200),  # before it
            attempt(elsewhere, current, 5, 200),  # another project's stage
        ],
    )
    async with world.store.read() as conn:
        hour = await stats.per_minute(conn, project_id, "webhook", now=NOW)
    assert len(hour) == 60
    assert [m.start for m in hour] == [SINCE + 60 * i for i in range(60)]
    first, last = hour[0], hour[-1]
    assert (first.attempts, first.delivered, first.failed, first.p50_ms) == (1, 0, 1, 7)
    assert (last.attempts, last.delivered, last.failed) == (5, 4, 1)
    assert (last.p50_ms, last.p95_ms) == (30, 1000)  # ranks 3 and 5 of 10, 20, 30, 40, 1000
    assert all(m.attempts == 0 and m.p50_ms is None for m in hour[1:-1])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(durations=st.lists(st.floats(0, 60_000, allow_nan=False), min_size=1, max_size=40))
async def test_percentiles_are_nearest_rank(world: World, durations: list[float]) -> None:
    async with world.store.transaction() as conn:
        await conn.execute(attempts.delete())
    project_id, delivery_id = await delivery(world, len(await world.engine.list_projects()) + 1)
    await add(world, [attempt(delivery_id, NOW - 1, d, 200) for d in durations])
    async with world.store.read() as conn:
        last = (await stats.per_minute(conn, project_id, "webhook", now=NOW, minutes=1))[0]
    ordered = sorted(durations)
    n = len(ordered)
    assert last.p50_ms == ordered[math.ceil(0.5 * n) - 1]
    assert last.p95_ms == ordered[math.ceil(0.95 * n) - 1]


async def test_attempts_of_many_deliveries_in_one_read(world: World) -> None:
    _, first = await delivery(world, 1)
    _, second = await delivery(world, 2)
    await add(world, [attempt(first, NOW, 5, 500), attempt(first, NOW + 5, 6, 200)])
    async with world.store.transaction() as conn:
        await conn.execute(
            attempts.update()
            .where(attempts.c.started_at == NOW + 5)
            .values(response_body=b"x" * 10_000)
        )
    async with world.store.read() as conn:
        found = await stats.attempts_of(conn, [first, second], response_start=100)
    assert [a.status_code for a in found[first]] == [500, 200]
    assert found[first][1].response_body == b"x" * 100
    assert found[second] == []


async def test_batch_names_in_order(world: World) -> None:
    project = await world.project()
    await world.imported(project.id, [asset(1, batches=["night", "city"]), asset(2)])
    async with world.store.read() as conn:
        assert await stats.batch_names(conn, project.id) == ["Batch 1", "city", "night"]
