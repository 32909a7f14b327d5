"""Workflow: what the engine costs per step, against the same writes in plain sqlite3.

``hookstage.engine.Engine`` on a SQLite file (WAL, synchronous=FULL), no HTTP and no
sending: a project Start -> Label -> Webhook -> Review -> Complete, and N tasks taken one at
a time through each step:

- import: ``import_assets`` in chunks of 100 (Start -> Label), per task;
- submit: ``submit`` (Label -> Webhook, which renders and enqueues the delivery in the same
  transaction -> Review);
- review: ``review`` accepting (Review -> Complete).

A second project without the Webhook stage (Label -> Review) is submitted too: the
difference is what the Webhook stage adds to a submit. Baseline in the same run: the rows
the engine wrote, written again with plain sqlite3 on another file with the same schema
and pragmas, one transaction per step (read the task, update it, insert the delivery and
its body), nothing else: the floor a durable commit per step sets on this disk.

    .venv/bin/python -m benchmarks.bench_workflow [--quick]
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    IMG,
    Figure,
    Plot,
    Result,
    Span,
    fmt,
    main_for,
    measure,
    plot_bars,
)
from hookstage.demo import DEMO_SCHEMA, demo_assets, demo_workflow, labeled
from hookstage.engine import Engine, Submission
from hookstage.store import open_store

__all__ = ["run"]

HOOK = "https://hooks.example.com/bench"
SECRET = "bench-workflow-secret-0123"
CHUNK = 100
PLAIN = " (no Webhook stage)"


def _without_webhook() -> list[dict[str, Any]]:
    return [
        {"id": "Start", "type": "Start", "name": "Start", "next": ["Label"]},
        {"id": "Label", "type": "Label", "name": "Label", "next": ["review"]},
        {"id": "review", "type": "Review", "name": "Review", "next": ["Complete", "Label"]},
        {"id": "Complete", "type": "Complete", "name": "Complete", "next": []},
    ]


@dataclass(frozen=True)
class _Cost:
    step: str
    count: int
    engine: Span
    floor: Span

    def per(self, seconds: float) -> float:
        return seconds / self.count * 1000


# -- the engine --------------------------------------------------------------------------------


class _Tally:
    """Wall-clock and CPU seconds added up per step."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    async def time(self, step: str, work: Awaitable[Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = await work
        self.wall[step] = self.wall.get(step, 0.0) + time.perf_counter() - wall
        self.cpu[step] = self.cpu.get(step, 0.0) + time.process_time() - cpu
        return outcome

    def spans(self) -> dict[str, Span]:
        return {step: Span(self.wall[step], self.cpu[step]) for step in self.wall}


async def _engine_steps(engine: Engine, count: int) -> dict[str, Span]:
    """Both projects' tasks, taking turns, so that drift (the machine, the file growing)
    weighs on each alike."""
    projects = {
        "": await engine.create_project(
            name="workflow", category_schema=DEMO_SCHEMA, workflow_json=demo_workflow(HOOK, SECRET)
        ),
        PLAIN: await engine.create_project(
            name="no webhook", category_schema=DEMO_SCHEMA, workflow_json=_without_webhook()
        ),
    }
    assets = demo_assets(count)
    ids: dict[str, list[str]] = {suffix: [] for suffix in projects}
    tally = _Tally()
    for start in range(0, count, CHUNK):
        for suffix, project in projects.items():
            chunk = engine.import_assets(project.id, assets[start : start + CHUNK])
            ids[suffix] += (await tally.time("import" + suffix, chunk)).created
    submission = Submission(**labeled(1))
    for n in range(count):
        for suffix in projects:
            work = engine.submit(
                ids[suffix][n], submission, user="labeler@example.com", duration_ms=1500
            )
            await tally.time("submit" + suffix, work)
    for task_id in ids[""]:
        work = engine.review(task_id, accept=True, user="reviewer@example.com", duration_ms=900)
        await tally.time("review", work)
    return tally.spans()


# -- the floor: the same rows in plain sqlite3 ---------------------------------------------


class _Floor:
    """One connection, the store's pragmas, one transaction per step."""

    def __init__(self, db: Path, source: Path) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.source = sqlite3.connect(source)
        self.source.row_factory = sqlite3.Row
        rows = self.source.execute("SELECT * FROM projects").fetchall()
        self._insert("projects", [dict(row) for row in rows])

    def _insert(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        names = list(rows[0])
        sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        self.conn.executemany(sql, [tuple(row[n] for n in names) for row in rows])

    def template(self, sql: str) -> dict[str, Any]:
        return dict(self.source.execute(sql).fetchone())

    def imports(self, count: int, task: dict[str, Any]) -> Span:
        def rows(n: int) -> list[dict[str, Any]]:
            numbers = range(n * CHUNK, min(count, (n + 1) * CHUNK))
            return [{**task, **_names(i)} for i in numbers]

        with measure() as span:
            for n in range(-(-count // CHUNK)):
                self.conn.execute("BEGIN IMMEDIATE")
                self._insert("tasks", rows(n))
                self.conn.execute("COMMIT")
        return span()

    def moves(self, count: int, task: dict[str, Any], delivery: dict[str, Any] | None) -> Span:
        body = None
        if delivery is not None:
            body = self.source.execute(
                "SELECT body FROM delivery_bodies WHERE delivery_id = ?", (delivery["id"],)
            ).fetchone()[0]
        keep = ("id", "asset_id", "project_id", "external_id", "data_url", "created_at")
        values = {k: v for k, v in task.items() if k not in keep}
        assignments = ", ".join(f"{k} = ?" for k in values)
        with measure() as span:
            for i in range(count):
                task_id = _names(i)["id"]
                self.conn.execute("BEGIN IMMEDIATE")
                row = self.conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
                self.conn.execute(
                    f"UPDATE tasks SET {assignments} WHERE id = ? AND version = ?",
                    (*values.values(), task_id, row["version"]),
                )
                if delivery is not None:
                    new = {**delivery, "id": f"dlv_floor_{i:020d}", "task_id": task_id}
                    self._insert("deliveries", [new])
                    self._insert("delivery_bodies", [{"delivery_id": new["id"], "body": body}])
                self.conn.execute("COMMIT")
        return span()

    def close(self) -> None:
        self.conn.close()
        self.source.close()


def _names(i: int) -> dict[str, Any]:
    return {"id": f"t{i:023d}", "asset_id": f"a{i:023d}", "external_id": f"floor-{i:06d}.jpg"}


def _floor(db: Path, source: Path, count: int) -> dict[str, Span]:
    floor = _Floor(db, source)
    try:
        label = floor.template("SELECT * FROM tasks WHERE stage_id = 'Complete' LIMIT 1")
        # The row as import left it, as submit left it, and as review left it (Complete).
        imported = {**label, "stage_id": "Label", "work_stage_id": "Label", "version": 1}
        delivery = floor.template("SELECT * FROM deliveries LIMIT 1")
        return {
            "import": floor.imports(count, imported),
            "submit": floor.moves(count, {**label, "stage_id": "review"}, delivery),
            "review": floor.moves(count, label, None),
        }
    finally:
        floor.close()


# -- the run -----------------------------------------------------------------------------------


async def _measure(count: int) -> tuple[list[_Cost], Span]:
    with tempfile.TemporaryDirectory(prefix="bench-workflow-") as tmp:
        source = Path(tmp) / "engine.sqlite"
        store = await open_store(source)
        try:
            ours = await _engine_steps(Engine(store), count)
        finally:
            await store.close()
        floor_db = Path(tmp) / "floor.sqlite"
        await (await open_store(floor_db)).close()  # the same schema, migrated
        floors = _floor(floor_db, source, count)
    costs = [
        _Cost(step, count, ours[step], floors[step]) for step in ("import", "submit", "review")
    ]
    return costs, ours["submit" + PLAIN]


async def run(quick: bool) -> Result:
    count = 200 if quick else 500
    costs, plain = await _measure(count)
    whole = _Cost(
        "whole task (import + submit + review)",
        count,
        Span(sum(c.engine.wall for c in costs), sum(c.engine.cpu for c in costs)),
        Span(sum(c.floor.wall for c in costs), sum(c.floor.cpu for c in costs)),
    )
    result = Result(
        "workflow",
        "Workflow: the engine per step, against plain sqlite3",
        ["step", "engine ms/task", "engine CPU ms/task", "plain sqlite3 ms/task", "engine / plain"],
    )
    for cost in [*costs, whole]:
        result.rows.append(
            [
                cost.step,
                fmt(cost.per(cost.engine.wall)),
                fmt(cost.per(cost.engine.cpu)),
                fmt(cost.per(cost.floor.wall)),
                f"{cost.engine.wall / cost.floor.wall:.1f}x",
            ]
        )
    submit = next(c for c in costs if c.step == "submit")
    without = _Cost("submit" + PLAIN, count, plain, plain)
    result.rows.insert(
        2, [without.step, fmt(without.per(plain.wall)), fmt(without.per(plain.cpu)), "", ""]
    )
    result.figures += [
        Figure("engine tasks/s through the workflow", count / whole.engine.wall, "/s", digits=0),
        Figure("engine / plain sqlite3, whole task", whole.engine.wall / whole.floor.wall, "x"),
        Figure(
            "the Webhook stage's share of a submit",
            submit.per(submit.engine.wall) - without.per(plain.wall),
            " ms",
        ),
    ]
    result.notes.append(
        f"{count:,} tasks per project, one step at a time, each its own transaction with fsync;"
        " the two projects take turns."
    )
    path = IMG / "bench_workflow.png"
    bars = {f"{c.step}: engine": c.per(c.engine.wall) for c in costs}
    bars |= {f"{c.step}: plain sqlite3": c.per(c.floor.wall) for c in costs}
    if plot_bars(
        path, title="Time per task and step", ylabel="ms per task", bars=dict(sorted(bars.items()))
    ):
        result.plots.append(Plot(path, "ms per task per step, engine vs plain sqlite3"))
    return result


if __name__ == "__main__":
    main_for(run)
