"""SQLite through hookstage's driver (one trip to the connection's thread per statement):
rows, counts, errors and locks behave as sqlite3's own."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hookstage.store import Duplicate, Store, open_store
from hookstage.store.tables import api_keys


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(tmp_path / "db.sqlite")
    yield store
    await store.close()


def _key(n: int) -> dict[str, object]:
    return {"id": f"k{n}", "name": f"key {n}", "key_hash": f"{n:064x}", "role": "admin"}


async def test_rows_and_counts_come_back_as_written(sqlite_store: Store) -> None:
    async with sqlite_store.transaction() as conn:
        await conn.execute(api_keys.insert(), [{**_key(n), "created_at": n} for n in range(5)])
        done = await conn.execute(
            api_keys.update().where(api_keys.c.created_at >= 3).values(role="labeler")
        )
        assert done.rowcount == 2
    async with sqlite_store.read() as conn:
        rows = (await conn.execute(sa.select(api_keys.c.id, api_keys.c.role))).all()
        one = (await conn.execute(sa.select(api_keys.c.id).where(api_keys.c.id == "k1"))).one()
        none = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == "x"))).first()
    admins = [("k0", "admin"), ("k1", "admin"), ("k2", "admin")]
    assert sorted(rows) == [*admins, ("k3", "labeler"), ("k4", "labeler")]
    assert (one, none) == (("k1",), None)


async def test_a_failed_transaction_leaves_nothing_and_the_connection_works_on(
    sqlite_store: Store,
) -> None:
    async with sqlite_store.transaction() as conn:
        await conn.execute(api_keys.insert().values(**_key(1), created_at=1))

    async def both() -> None:
        async with sqlite_store.transaction() as conn:
            await conn.execute(api_keys.insert().values(**_key(2), created_at=2))
            await conn.execute(api_keys.insert().values(**_key(1), created_at=3))

    with pytest.raises(Duplicate):
        await both()
    for _ in range(10):  # every pooled connection, whichever the failure went through
        async with sqlite_store.read() as conn:
            ids = (await conn.execute(sa.select(api_keys.c.id))).scalars().all()
        assert ids == ["k1"]


async def test_a_writer_waits_for_another_process_s_lock(
    sqlite_store: Store, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, other.rollback)
    started = time.monotonic()
    async with sqlite_store.transaction() as conn:
        await conn.execute(api_keys.insert().values(**_key(1), created_at=1))
    assert time.monotonic() - started >= 0.25
    other.close()
    async with sqlite_store.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(api_keys))).scalar() == 1
