"""How fast the dashboard's task list is at 100k tasks, and which index each page uses.

A fresh SQLite file (WAL) gets one project and N tasks, written straight into the tables in
chunks (the rows `Engine.import_assets` would write, without its per-task checks, so that
100k take seconds, not minutes): tasks spread over Label, Review and Complete, in three
batches plus a rare one (1%). Then, median of repeated runs:

- `Engine.list_tasks` (one page of 50) first and deep (after 90% of the ids), unfiltered,
  by stage, by batch, by the rare batch; `Engine.count_tasks`;
- the whole page through HTTP (`GET /projects/{id}/tasks`, logged in), the same cases;
- the SQLite plan of each query (EXPLAIN QUERY PLAN): SEARCH ... USING INDEX is flat,
  USE TEMP B-TREE FOR ORDER BY sorts every matching row for each page.

Baseline in the same run: the same queries after adding `(project_id, id)`, the index the
unfiltered list lacks, to show what it would change.

    .venv/bin/python -m benchmarks.bench_tasks_page [--tasks 100000] [--runs 15]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from hookstage import service
from hookstage.demo import DEMO_SCHEMA, demo_workflow
from hookstage.engine import EMPTY_ANNOTATIONS, Engine, new_id
from hookstage.store import Store
from hookstage.store.tables import batches, task_batches, tasks

CHUNK = 5000
STAGES = ("Label", "review", "Complete", "Complete")
BATCHES = ("Drive 1", "Drive 2", "Drive 3")
RARE = "Audit"


async def fill(store: Store, project_id: str, count: int, now: float) -> None:
    batch_ids = {name: new_id(now) for name in (*BATCHES, RARE)}
    async with store.transaction() as conn:
        await conn.execute(
            batches.insert(),
            [{"id": i, "project_id": project_id, "name": n} for n, i in batch_ids.items()],
        )
    for start in range(0, count, CHUNK):
        rows, links = [], []
        for n in range(start, min(count, start + CHUNK)):
            task_id = new_id(now + n / 1000)
            rows.append(_task_row(task_id, project_id, n, now))
            links.append({"task_id": task_id, "batch_id": batch_ids[BATCHES[n % 3]], "position": 0})
            if n % 100 == 0:
                links.append({"task_id": task_id, "batch_id": batch_ids[RARE], "position": 1})
        async with store.transaction() as conn:
            await conn.execute(tasks.insert(), rows)
            await conn.execute(task_batches.insert(), links)


def _task_row(task_id: str, project_id: str, n: int, now: float) -> dict[str, Any]:
    stage = STAGES[n % len(STAGES)]
    return {
        "id": task_id,
        "asset_id": new_id(now),
        "project_id": project_id,
        "external_id": f"street-{n:06d}.jpg",
        "data_url": f"https://assets.example.com/street-{n:06d}.jpg",
        "dataset": [],
        "asset_metadata": {"width": 1920, "height": 1080},
        "context_data": {"camera": "front"},
        "stage_id": stage,
        "work_stage_id": stage,
        "annotations": EMPTY_ANNOTATIONS,
        "stage_history": [],
        "updated_at": now,
        "updated_by": None,
        "total_duration": 0,
        "entered_at": now,
        "created_at": now,
        "version": 1,
    }


async def median_ms(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    await call()  # warm the caches once
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def plans(store: Store, call: Callable[[], Awaitable[Any]]) -> list[str]:
    """The query plans of the statements `call` runs (the task query, not the batch lookup)."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM tasks" in statement:
            seen.append((statement, params))

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        await call()
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", record)
    found: list[str] = []
    async with store.engine.connect() as conn:
        for statement, params in seen:
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            found.extend(str(row[-1]) for row in rows.all())
    return found


Case = tuple[str, dict[str, str]]


async def measure(
    engine: Engine, http: httpx.AsyncClient, project_id: str, deep: str, runs: int
) -> list[tuple[str, float, float, list[str]]]:
    cases: list[Case] = [
        ("every stage, first page", {}),
        ("every stage, deep", {"after": deep}),
        ("stage Label, first page", {"stage": "Label"}),
        ("stage Label, deep", {"stage": "Label", "after": deep}),
        ("batch Drive 2, first page", {"batch": "Drive 2"}),
        ("batch Drive 2, deep", {"batch": "Drive 2", "after": deep}),
        (f"batch {RARE} (1%), first page", {"batch": RARE}),
    ]
    out = []
    for name, filters in cases:

        async def query(filters: dict[str, str] = filters) -> Any:
            return await engine.list_tasks(project_id, limit=51, **filters)

        async def page(filters: dict[str, str] = filters) -> Any:
            answer = await http.get(f"/projects/{project_id}/tasks", params=filters)
            answer.raise_for_status()

        engine_ms = await median_ms(query, runs)
        page_ms = await median_ms(page, runs)
        out.append((name, engine_ms, page_ms, await plans(engine.store, query)))
    return out


def report(title: str, rows: list[tuple[str, float, float, list[str]]]) -> None:
    print(f"\n{title}")
    print(f"  {'case':32} {'list_tasks':>11} {'HTTP page':>10}  plan of the task query")
    for name, engine_ms, page_ms, plan in rows:
        shown = "; ".join(p for p in plan if "tasks" in p or "TEMP" in p)
        print(f"  {name:32} {engine_ms:8.2f} ms {page_ms:7.2f} ms  {shown}")


async def main(count: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="hookstage-bench-") as tmp:
        config = service.ServiceConfig(
            database=str(Path(tmp) / "db.sqlite"), port=0, dispatch=False
        )
        async with service.running(config) as svc:
            engine = svc.engine
            project = await engine.create_project(
                name="bench",
                category_schema=DEMO_SCHEMA,
                workflow_json=demo_workflow("https://hooks.example.com/h", "s" * 24),
            )
            started = time.perf_counter()
            await fill(svc.store, project.id, count, engine.clock())
            print(f"{count:,} tasks written in {time.perf_counter() - started:.1f} s")
            async with svc.store.read() as conn:
                ids = sa.select(tasks.c.id).order_by(tasks.c.id)
                deep = (await conn.execute(ids.offset(count * 9 // 10).limit(1))).scalar_one()
            counted = await median_ms(lambda: engine.count_tasks(project.id), runs)
            print(f"count_tasks (tasks per stage, for the filter and the graph): {counted:.2f} ms")
            _, key = await engine.create_key("bench", "read-only")
            async with httpx.AsyncClient(base_url=svc.url, timeout=60) as http:
                await http.post("/login", data={"key": key})
                report("as shipped", await measure(engine, http, project.id, deep, runs))
                async with svc.store.transaction() as conn:
                    await conn.exec_driver_sql(
                        "CREATE INDEX ix_bench_tasks_project_id ON tasks (project_id, id)"
                    )
                report(
                    "with an index on tasks (project_id, id)",
                    await measure(engine, http, project.id, deep, runs),
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.tasks, arguments.runs))
