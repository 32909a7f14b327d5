"""Migrations: the schema they build is the one the code declares, and a database made by an
older release is brought forward with its data (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from hookstage.store import open_store
from hookstage.store.deliveries import claim
from hookstage.store.migration import alembic_config
from hookstage.store.tables import metadata
from tests.support.delivery import enqueue, seeded_store


def _differences(connection: sa.Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


def _index_columns(connection: sa.Connection, name: str) -> list[str | None]:
    found = sa.inspect(connection).get_indexes("deliveries")
    return next(index["column_names"] for index in found if index["name"] == name)


def _to_first_release(connection: sa.Connection) -> None:
    command.downgrade(alembic_config(connection), "0001")


async def test_the_migrated_schema_is_exactly_the_declared_one(database: str) -> None:
    store = await open_store(database)
    try:
        async with store.read() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        await store.close()


async def test_a_database_of_the_first_release_is_upgraded_with_its_deliveries(
    database: str,
) -> None:
    async with seeded_store(database) as store:
        [delivery_id] = await enqueue(store, 1)
        async with store.transaction() as conn:
            await conn.run_sync(_to_first_release)
            old = await conn.run_sync(_index_columns, "ix_deliveries_state_due")
    assert old == ["state", "due_at"]

    store = await open_store(database)  # migrates on open, as every command does
    try:
        async with store.transaction() as conn:
            new = await conn.run_sync(_index_columns, "ix_deliveries_state_due")
            claimed = await claim(conn, now=time.time() + 1, lease_seconds=30, worker="w", limit=10)
    finally:
        await store.close()
    assert new == ["state", "due_at", "project_id", "stage_id"]
    assert [c.id for c in claimed] == [delivery_id]
