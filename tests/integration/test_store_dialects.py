"""What the store does for many processes on one database: unique-key races, migrations run
at once, claims that skip what another worker holds, and NOTIFY waking the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from hookstage.store import Duplicate, Store, insert_missing, notify, open_store
from hookstage.store import deliveries as outbox
from hookstage.store.tables import batches, projects
from tests.support.delivery import (
    DEADLINE,
    Dispatchers,
    Receiver,
    WatchedStore,
    enqueue,
    hub,
    receiving,
    seeded_store,
)
from tests.support.postgres import Postgres

T0 = 1_700_000_000.0


async def _project(store: Store, project_id: str = "p1") -> None:
    async with store.transaction() as conn:
        await conn.execute(
            projects.insert().values(
                id=project_id, name="P", category_schema={}, workflow={}, created_at=T0,
                updated_at=T0,
            )
        )  # fmt: skip


async def _batch_ids(store: Store) -> dict[str, str]:
    async with store.read() as conn:
        rows = await conn.execute(sa.select(batches.c.name, batches.c.id))
        return {name: batch_id for name, batch_id in rows.all()}


# -- both databases ---------------------------------------------------------------------------


async def test_a_unique_key_taken_is_a_duplicate_and_nothing_is_kept(store: Store) -> None:
    await _project(store)

    async def batch_then_the_same_project() -> None:
        async with store.transaction() as conn:
            await conn.execute(batches.insert().values(id="b2", project_id="p1", name="other"))
            await conn.execute(projects.insert().values(
                id="p1", name="again", category_schema={}, workflow={}, created_at=T0,
                updated_at=T0,
            ))  # fmt: skip

    with pytest.raises(Duplicate):
        await batch_then_the_same_project()
    assert await _batch_ids(store) == {}


async def test_insert_missing_skips_the_rows_whose_key_is_taken(store: Store) -> None:
    await _project(store)
    async with store.transaction() as conn:
        await insert_missing(conn, batches, [{"id": "b1", "project_id": "p1", "name": "night"}])
        await insert_missing(
            conn,
            batches,
            [
                {"id": "b2", "project_id": "p1", "name": "night"},  # the name is taken
                {"id": "b3", "project_id": "p1", "name": "day"},
            ],
        )
    assert await _batch_ids(store) == {"night": "b1", "day": "b3"}


# -- PostgreSQL: many processes at once -------------------------------------------------------


async def test_processes_starting_at_once_on_a_new_database_migrate_it_once(
    postgres: Postgres,
) -> None:
    url = postgres.empty()
    try:
        stores = await asyncio.gather(*(open_store(url) for _ in range(4)))
        for opened in stores:
            await _project(opened, f"p-{id(opened)}")
            await opened.close()
    finally:
        postgres.drop(url)


@pytest.fixture
async def pg_store(postgres_database: str) -> AsyncIterator[Store]:
    async with seeded_store(postgres_database) as opened:
        yield opened


async def test_a_claim_skips_what_another_worker_holds_instead_of_waiting(
    pg_store: Store,
) -> None:
    ids = await enqueue(pg_store, 6)
    now = time.time()
    async with pg_store.transaction() as first:
        held = await outbox.claim(first, now=now, lease_seconds=60, worker="a", limit=3)
        # Still uncommitted: "a" holds the row locks of its three.
        async with asyncio.timeout(DEADLINE), pg_store.transaction() as second:
            other = await outbox.claim(second, now=now, lease_seconds=60, worker="b", limit=6)
    assert sorted(c.id for c in held) == ids[:3]  # the oldest due
    assert sorted(c.id for c in other) == ids[3:]


Listen = Callable[..., asyncio.Task[None]]


@pytest.fixture
async def listener(postgres_database: str) -> AsyncIterator[Listen]:
    """Starts `notify.listen` on the test's database; every listener stops at teardown."""
    started: list[asyncio.Task[None]] = []

    def start(wake: Callable[[], None], **options: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(notify.listen(postgres_database, wake, **options))
        started.append(task)
        return task

    yield start
    for task in started:
        task.cancel()
    await asyncio.gather(*started, return_exceptions=True)


class Wakes:
    """Counts wake-ups, and lets a test wait for a count (with a deadline)."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()
        self.listening = 0

    def __call__(self) -> None:
        self.count += 1
        self.changed.set()

    def on_listening(self) -> None:
        self.listening += 1
        self.changed.set()

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not check():
                self.changed.clear()
                await self.changed.wait()


async def test_a_commit_that_enqueues_wakes_a_listener_and_a_rollback_does_not(
    pg_store: Store, listener: Listen
) -> None:
    wakes = Wakes()
    listener(wakes, on_listening=wakes.on_listening)
    await wakes.until(lambda: wakes.listening == 1 and wakes.count == 1)  # one on connecting

    class Undone(Exception):
        pass

    async def announce_then_roll_back() -> None:
        async with pg_store.transaction() as conn:
            await notify.announce(conn)
            raise Undone

    with pytest.raises(Undone):
        await announce_then_roll_back()
    await enqueue(pg_store, 2)  # one transaction: one notification
    await wakes.until(lambda: wakes.count >= 2)
    # Notifications come in commit order: had the rollback sent one, it would be counted.
    assert wakes.count == 2


async def test_a_listener_whose_connection_is_killed_listens_again(
    pg_store: Store, postgres_database: str, listener: Listen
) -> None:
    wakes = Wakes()
    listener(wakes, on_listening=wakes.on_listening, backoff_seconds=(0.05, 0.1))
    await wakes.until(lambda: wakes.listening == 1)
    async with pg_store.transaction() as conn:
        killed = await conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": notify.LISTENER_NAME},
        )
        assert killed.scalars().all() == [True]
    await wakes.until(lambda: wakes.listening == 2)
    before = wakes.count
    await enqueue(pg_store, 1)
    await wakes.until(lambda: wakes.count > before)


async def test_a_delivery_enqueued_by_another_process_is_sent_without_waiting_for_the_poll(
    pg_store: Store, postgres_database: str, listener: Listen
) -> None:
    """A worker polling hourly, woken by NOTIFY alone: the API process that enqueues is
    another process, whose in-process wake cannot reach it."""
    other_process = await open_store(postgres_database)
    start = Dispatchers(pg_store)
    receiver: Receiver
    try:
        async with receiving() as receiver:
            watched = WatchedStore(pg_store.engine)
            dispatcher = await start({"hook": hub(receiver.url)}, on=watched, poll_seconds=3600)
            async with watched.changed:  # its first look found nothing: it waits for an hour
                await asyncio.wait_for(
                    watched.changed.wait_for(lambda: watched.finished > 0), DEADLINE
                )
            listener(dispatcher.wake)
            [delivery_id] = await enqueue(other_process, 1)
            await receiver.wait_for(1)
            assert receiver.ids() == [delivery_id]
            await start.stop_all()
    finally:
        await other_process.close()
