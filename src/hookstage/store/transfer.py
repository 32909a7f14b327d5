"""Copy a whole installation from one database to another: how a SQLite installation moves
to PostgreSQL (``hookstage copy``).

Every table is copied in dependency order (a row's parents first), page by page in the order
of its key, into an empty target, in one transaction there: a copy that fails leaves the
target as empty as it found it. The row counts are checked before it commits. The
``workers`` table is not copied: it describes the processes running now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage.store import Store, StoreError
from hookstage.store.tables import metadata, workers

__all__ = ["Progress", "copied_tables", "copy_database"]

# (table, rows copied so far, rows in all): called after every page.
Progress = Callable[[str, int, int], None]


def copied_tables() -> list[sa.Table]:
    """The tables a copy moves, parents before children."""
    return [table for table in metadata.sorted_tables if table is not workers]


async def copy_database(
    source: Store, target: Store, *, page: int = 1000, progress: Progress | None = None
) -> dict[str, int]:
    """Copy every row of ``source`` into ``target`` (both migrated to the same schema);
    returns the rows copied per table. StoreError, and nothing written, when the target has
    rows already or a count differs after the copy."""
    if page < 1:
        raise ValueError(f"page: expected 1 or more, got {page}")
    tables = copied_tables()
    async with source.read() as conn:
        totals = {table.name: await _count(conn, table) for table in tables}
    async with target.transaction() as conn:
        await _refuse_rows(conn, tables)
        for table in tables:
            await _copy_table(
                source, conn, table, page=page, total=totals[table.name], progress=progress
            )
        await _continue_sequences(conn, tables)
        if conn.dialect.name == "postgresql":
            # Statistics now, not at autovacuum's next look: without them the claim's plan
            # over a large copied backlog is a poor one.
            await conn.exec_driver_sql("ANALYZE")
        copied = {table.name: await _count(conn, table) for table in tables}
        if copied != totals:
            wrong = [name for name in totals if copied[name] != totals[name]]
            raise StoreError(
                "the copy does not match its source (rows changed during the copy?): "
                + ", ".join(f"{name} {copied[name]} of {totals[name]}" for name in wrong)
            )
    return copied


async def _count(conn: AsyncConnection, table: sa.Table) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def _refuse_rows(conn: AsyncConnection, tables: Sequence[sa.Table]) -> None:
    for table in tables:
        if (await conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1))).first():
            raise StoreError(
                f"the target database is not empty (table {table.name} has rows):"
                " copy into a new, empty database"
            )


async def _copy_table(
    source: Store,
    target: AsyncConnection,
    table: sa.Table,
    *,
    page: int,
    total: int,
    progress: Progress | None,
) -> None:
    key = list(table.primary_key.columns)
    done = 0
    last: tuple[Any, ...] | None = None
    if progress is not None:
        progress(table.name, done, total)
    while True:
        query = sa.select(table).order_by(*key).limit(page)
        if last is not None:
            query = query.where(sa.tuple_(*key) > sa.tuple_(*last))
        # Each page is a short read of its own: a SQLite source is never held for long.
        async with source.read() as conn:
            rows = [dict(row._mapping) for row in (await conn.execute(query)).all()]
        if not rows:
            return
        await target.execute(table.insert(), rows)
        done += len(rows)
        last = tuple(rows[-1][column.name] for column in key)
        if progress is not None:
            progress(table.name, done, total)


async def _continue_sequences(conn: AsyncConnection, tables: Sequence[sa.Table]) -> None:
    """On PostgreSQL, a serial key's sequence goes on after the copied ids (inserting the
    ids themselves does not move it)."""
    if conn.dialect.name != "postgresql":
        return  # SQLite's next rowid follows the largest one there
    for table in tables:
        key = list(table.primary_key.columns)
        if len(key) != 1 or key[0].autoincrement is not True:
            continue
        await conn.execute(
            sa.select(
                sa.func.setval(
                    sa.func.pg_get_serial_sequence(table.name, key[0].name),
                    sa.select(sa.func.coalesce(sa.func.max(key[0]), 0) + 1).scalar_subquery(),
                    False,
                )
            )
        )
