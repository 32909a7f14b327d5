"""The statements every step runs: read its task with its project's stamp (and the task's
batches), and write the task back at the version it read.

They run for every submit, review and requeue: written out in SQL and run through the
driver, each cost ~130 us less than through SQLAlchemy. A step reads with `loading` (one
`Store.read_once`) and writes with `updating` (in one `Store.write`, conditioned on the
version and the project's stamp it read); `load` and `update` are the same statements
inside a transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage.store import Statement, execute_later, fetch, read_json, sql_for, write_json
from hookstage.store.tables import tasks

__all__ = [
    "COLUMNS",
    "WRITTEN",
    "batches_of",
    "load",
    "loaded",
    "loading",
    "project_stamp",
    "update",
    "updating",
]

COLUMNS = tuple(column.name for column in tasks.c)
_JSON = tuple(column.name for column in tasks.c if isinstance(column.type, sa.JSON))

# Built from the table's own column names, no input: S608 does not apply.
_LOAD = f"""
SELECT {", ".join(f"tasks.{name}" for name in COLUMNS)}, projects.updated_at,
    EXISTS (SELECT 1 FROM task_batches WHERE task_batches.task_id = tasks.id)
FROM tasks JOIN projects ON projects.id = tasks.project_id
WHERE tasks.id = ?
"""  # noqa: S608

# What a step changes, in the order `update` binds them.
WRITTEN = (
    "stage_id",
    "work_stage_id",
    "annotations",
    "stage_history",
    "updated_at",
    "updated_by",
    "total_duration",
    "entered_at",
    "version",
)
_SET = ", ".join(f"{name} = {{json}}" if name in _JSON else f"{name} = ?" for name in WRITTEN)
_UPDATE = f"UPDATE tasks SET {_SET} WHERE id = ? AND version = ?"  # noqa: S608


async def load(conn: AsyncConnection, task_id: str) -> tuple[dict[str, Any], float, bool] | None:
    """The task's columns by name, its project's `updated_at`, and whether it is in any
    batch; None if there is no such task."""
    dialect = conn.dialect.name
    rows = await fetch(conn, sql_for(_LOAD, dialect), (task_id,))
    return _task_of(dialect, rows[0]) if rows else None


def _task_of(dialect: str, row: Any) -> tuple[dict[str, Any], float, bool]:
    *values, stamp, batched = row
    task = dict(zip(COLUMNS, values, strict=True))
    if dialect == "sqlite":  # psycopg decodes JSON columns itself
        for name in _JSON:
            if task[name] is not None:
                task[name] = read_json(task[name])
    return task, stamp, bool(batched)


def loading(dialect: str, task_id: str) -> list[Statement]:
    """`load` and the task's `batches_of` as statements for `Store.read_once`; read what
    their rows say with `loaded`."""
    batches = _BATCHES_OF.format(ids="?")
    return [
        Statement(sql_for(_LOAD, dialect), (task_id,)),
        Statement(sql_for(batches, dialect), (task_id,)),
    ]


def loaded(
    dialect: str, found: list[list[Any]]
) -> tuple[dict[str, Any], float, list[tuple[str, str]]] | None:
    """The task's columns, its project's `updated_at` and its batches from the rows of
    `loading`'s statements; None if there is no such task."""
    rows, batches = found
    if not rows:
        return None
    task, stamp, _ = _task_of(dialect, rows[0])
    return task, stamp, [(batch_id, name) for _, batch_id, name in batches]


_BATCHES_OF = """
SELECT task_batches.task_id, batches.id, batches.name
FROM task_batches JOIN batches ON batches.id = task_batches.batch_id
WHERE task_batches.task_id IN ({ids})
ORDER BY task_batches.task_id, task_batches.position
"""


async def batches_of(conn: AsyncConnection, ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Each task's batches, (id, name), in the order the task lists them; tasks in none are
    left out."""
    by_task: dict[str, list[tuple[str, str]]] = {}
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = ids[start : start + _IDS_PER_STATEMENT]
        statement = sql_for(_BATCHES_OF.format(ids=", ".join("?" * len(chunk))), conn.dialect.name)
        for task_id, batch_id, name in await fetch(conn, statement, tuple(chunk)):
            by_task.setdefault(task_id, []).append((batch_id, name))
    return by_task


# Well under SQLite's limit of 32,766 bound values a statement.
_IDS_PER_STATEMENT = 1000

_PROJECT_STAMP = "SELECT updated_at FROM projects WHERE id = ?"


async def project_stamp(conn: AsyncConnection, project_id: str) -> float | None:
    """The project's `updated_at` (None: no such project)."""
    rows = await fetch(conn, sql_for(_PROJECT_STAMP, conn.dialect.name), (project_id,))
    return float(rows[0][0]) if rows else None


async def update(
    conn: AsyncConnection,
    task_id: str,
    values: Mapping[str, Any],
    *,
    expected_version: int,
    otherwise: Callable[[], Exception],
) -> None:
    """Write ``values`` (`WRITTEN`) to the task if it is still at ``expected_version``; if it
    is not, the transaction fails with ``otherwise()``. On SQLite the transaction holds the
    database since it read the task, so that cannot happen, and the write goes with the
    transaction's next trip; on PostgreSQL another transaction may have moved it."""
    statement = updating(
        conn.dialect.name, task_id, values, expected_version=expected_version, otherwise=otherwise
    )
    await execute_later(conn, statement.sql, statement.parameters, check=statement.check)


def updating(
    dialect: str,
    task_id: str,
    values: Mapping[str, Any],
    *,
    expected_version: int,
    otherwise: Callable[[], Exception],
    stamp: float | None = None,
) -> Statement:
    """`update` as a statement for `Store.write`. With ``stamp``, the task is written only
    if its project's `updated_at` is still ``stamp`` as well (for a step that read both
    before its transaction)."""

    def check(changed: int) -> None:
        if changed != 1:
            raise otherwise()

    bound = [write_json(values[n]) if n in _JSON else values[n] for n in WRITTEN]
    if stamp is None:
        return Statement(sql_for(_UPDATE, dialect), (*bound, task_id, expected_version), check)
    parameters = (*bound, task_id, expected_version, stamp)
    return Statement(sql_for(_UPDATE + _STAMPED, dialect), parameters, check)


_STAMPED = " AND (SELECT updated_at FROM projects WHERE projects.id = tasks.project_id) = ?"
