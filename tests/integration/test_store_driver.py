"""SQLite through hookstage's driver (one trip to the connection's thread per statement):
rows, counts, errors and locks behave as sqlite3's own."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from hookstage.store import (
    Duplicate,
    Statement,
    Store,
    StoreError,
    driver,
    execute_later,
    fetch,
    flush,
    open_store,
)
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


_INSERT_KEY = "INSERT INTO api_keys (id, name, key_hash, role, created_at) VALUES (?, ?, ?, ?, ?)"


def _key_row(n: int) -> tuple[object, ...]:
    key = _key(n)
    return (key["id"], key["name"], key["key_hash"], key["role"], n)


async def _key_ids(store: Store) -> list[str]:
    async with store.read() as conn:
        return list((await conn.execute(sa.select(api_keys.c.id))).scalars().all())


async def test_a_later_write_is_seen_by_the_next_statement_and_kept(sqlite_store: Store) -> None:
    async with sqlite_store.transaction() as conn:
        await execute_later(conn, _INSERT_KEY, _key_row(1))
        await execute_later(conn, _INSERT_KEY, [_key_row(2), _key_row(3)])
        seen = (await conn.execute(sa.select(api_keys.c.id))).scalars().all()
        await execute_later(conn, _INSERT_KEY, _key_row(4))  # only the commit follows it
    assert sorted(seen) == ["k1", "k2", "k3"]
    assert sorted(await _key_ids(sqlite_store)) == ["k1", "k2", "k3", "k4"]


async def test_a_later_write_that_fails_fails_its_whole_transaction(sqlite_store: Store) -> None:
    async with sqlite_store.transaction() as conn:
        await conn.execute(api_keys.insert().values(**_key(1), created_at=1))

    async def both() -> None:
        async with sqlite_store.transaction() as conn:
            await conn.execute(api_keys.insert().values(**_key(2), created_at=2))
            await execute_later(conn, _INSERT_KEY, _key_row(1))  # raised by the commit

    with pytest.raises(Duplicate):
        await both()
    for _ in range(10):  # every pooled connection works on
        assert await _key_ids(sqlite_store) == ["k1"]


async def test_a_transaction_that_fails_before_its_later_writes_run_drops_them(
    sqlite_store: Store,
) -> None:

    async def abandoned() -> None:
        async with sqlite_store.transaction() as conn:
            await execute_later(conn, _INSERT_KEY, _key_row(1))
            raise RuntimeError("the use case changed its mind")

    with pytest.raises(RuntimeError):
        await abandoned()
    async with sqlite_store.transaction() as conn:
        await execute_later(conn, _INSERT_KEY, _key_row(2))
    assert await _key_ids(sqlite_store) == ["k2"]


async def test_begin_and_later_writes_share_the_next_statement_s_trip(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    execute = driver.Connection._execute

    def counted(self: driver.Connection, function: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(function, "__name__", "?"))
        return execute(self, function, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(driver.Connection, "_execute", counted)
    async with sqlite_store.transaction():
        pass  # nothing run: nothing sent, not even the BEGIN
    assert trips == []
    async with sqlite_store.transaction() as conn:
        await execute_later(conn, _INSERT_KEY, _key_row(1))
        await conn.execute(sa.select(api_keys.c.id))
        await execute_later(conn, _INSERT_KEY, _key_row(2))
    assert trips == ["_run", "_commit"]
    assert sorted(await _key_ids(sqlite_store)) == ["k1", "k2"]


async def test_json_columns_keep_what_a_webhook_body_would_carry(sqlite_store: Store) -> None:
    # Written and read with orjson for speed, with json where orjson refuses or would read
    # inexactly (a lone surrogate, an integer beyond 64 bits); a number JSON has no text
    # for is null, as in a webhook's body.
    table = sa.Table("values_", sa.MetaData(), sa.Column("v", sa.JSON))
    written = [{"plain": [1, 2.5, "é"]}, {"lone": "\ud800"}, {"far": float("inf")}, {"n": 2**70}]
    async with sqlite_store.transaction() as conn:
        await conn.run_sync(table.metadata.create_all)
        await conn.execute(table.insert(), [{"v": v} for v in written])
    async with sqlite_store.read() as conn:
        read = (await conn.execute(sa.select(table.c.v))).scalars().all()
    assert read == [{"plain": [1, 2.5, "é"]}, {"lone": "\ud800"}, {"far": None}, {"n": 2**70}]


async def test_driver_errors_come_out_as_the_store_s_own(sqlite_store: Store) -> None:
    async with sqlite_store.transaction() as conn:
        await execute_later(conn, _INSERT_KEY, _key_row(1))

    async def duplicate() -> None:
        async with sqlite_store.transaction() as conn:
            await execute_later(conn, _INSERT_KEY, _key_row(1))
            await fetch(conn, "SELECT 1", ())  # runs the deferred insert first

    async def broken() -> None:
        async with sqlite_store.transaction() as conn:
            await fetch(conn, "SELECT * FROM no_such_table", ())

    with pytest.raises(Duplicate):
        await duplicate()
    with pytest.raises(StoreError, match="no_such_table"):
        await broken()
    assert await _key_ids(sqlite_store) == ["k1"]


async def test_a_write_inside_a_savepoint_stays_inside_it(sqlite_store: Store) -> None:
    # As the dispatcher's gate hook does: a savepoint whose failure the transaction survives.
    async with sqlite_store.transaction() as conn:
        await execute_later(conn, _INSERT_KEY, _key_row(1))
    async with sqlite_store.transaction() as conn:
        await execute_later(conn, _INSERT_KEY, _key_row(2))
        await flush(conn)  # the transaction's own writes fail it, not the savepoint
        with contextlib.suppress(Duplicate, sa.exc.IntegrityError):
            async with conn.begin_nested():
                await execute_later(conn, _INSERT_KEY, _key_row(3))
                await execute_later(conn, _INSERT_KEY, _key_row(1))  # taken
        await execute_later(conn, _INSERT_KEY, _key_row(4))
    assert sorted(await _key_ids(sqlite_store)) == ["k1", "k2", "k4"]


async def test_a_transaction_comes_after_every_write_sent_before_it(sqlite_store: Store) -> None:
    """SQLite: writes are sent to a connection of their own; a transaction through the pool
    waits for them to end instead of meeting their lock (or slipping in between them)."""
    store = sqlite_store

    def impatient(dbapi_conn: Any, _record: Any) -> None:
        # Meeting the writes' lock fails at once instead of in SQLite's busy handler.
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    sa.event.listen(store.engine.sync_engine, "connect", impatient)
    await store.engine.dispose()  # the pool's connections are opened again, impatient

    async def count() -> int:
        async with store.transaction() as conn:
            counted = await conn.execute(sa.select(sa.func.count()).select_from(api_keys))
            return int(counted.scalar_one())

    writes = [store.write([Statement(_INSERT_KEY, _key_row(n))]) for n in range(50)]
    *_, seen = await asyncio.gather(*writes, count())
    assert seen == 50


# --- transact_all: the writes of one trip, committed together ---------------------------------


@pytest.fixture
def raw(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, list[str]]]:
    """A sqlite3 connection as the writes' thread has it, and the statements it ran."""
    connection = sqlite3.connect(tmp_path / "raw.sqlite", isolation_level=None)
    connection.execute("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER)")
    ran: list[str] = []
    connection.set_trace_callback(ran.append)
    yield connection, ran
    connection.close()


def _put(key: str, n: int) -> Statement:
    return Statement("INSERT INTO t (id, n) VALUES (?, ?) RETURNING id, n", (key, n))


def _rows_in(connection: sqlite3.Connection) -> list[tuple[str, int]]:
    return list(connection.execute("SELECT id, n FROM t ORDER BY id"))


def test_writes_of_one_trip_commit_once_and_each_gets_its_own_rows(
    raw: tuple[sqlite3.Connection, list[str]],
) -> None:
    connection, ran = raw
    outcomes = driver.transact_all(
        connection,
        [[_put("a", 1)], [_put("b", 2), _put("c", 3)], [Statement("SELECT count(*) FROM t")]],
    )
    assert outcomes == [[[("a", 1)]], [[("b", 2)], [("c", 3)]], [[(3,)]]]
    assert [s for s in ran if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert _rows_in(connection) == [("a", 1), ("b", 2), ("c", 3)]


def test_a_write_that_fails_fails_alone_and_the_others_commit_once(
    raw: tuple[sqlite3.Connection, list[str]],
) -> None:
    connection, ran = raw

    def refuse(_changed: int) -> None:
        raise ValueError("refused")

    outcomes = driver.transact_all(
        connection,
        [
            [_put("a", 1)],
            [_put("b", 2), Statement("UPDATE t SET n = 0 WHERE id = 'a'", (), refuse)],
            [_put("c", 3)],
            [_put("a", 4)],  # a key the first write took
            [Statement("SELECT id, n FROM t ORDER BY id")],
        ],
    )

    assert outcomes[0] == [[("a", 1)]]
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2] == [[("c", 3)]]
    assert isinstance(outcomes[3], sqlite3.IntegrityError)
    assert outcomes[4] == [[("a", 1), ("c", 3)]]  # as if each had been alone, in order
    assert ran.count("COMMIT") == 1  # one rollback per failure, not a transaction per write
    assert _rows_in(connection) == [("a", 1), ("c", 3)]


def test_the_database_failing_fails_every_write_of_the_trip(
    raw: tuple[sqlite3.Connection, list[str]],
) -> None:
    connection, _ = raw
    outcomes = driver.transact_all(
        connection, [[_put("a", 1)], [Statement("INSERT INTO missing VALUES (1)")], [_put("b", 2)]]
    )
    assert [type(o) for o in outcomes] == [sqlite3.OperationalError] * 3
    assert _rows_in(connection) == []
