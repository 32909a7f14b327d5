"""Hand-off: a step claims the deliveries it fires in its own write, and this process's
dispatcher sends them at once, with no wake, turn or claim between (SQLite, PostgreSQL).
And the quiet turns it leaves: turns that only record, claiming nothing until something
may be due."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hookstage import service
from hookstage.demo import DEMO_SCHEMA, demo_assets, demo_workflow, labeled
from hookstage.dispatcher import Dispatcher, Endpoint
from hookstage.engine import Submission
from hookstage.store import Store
from hookstage.store import deliveries as outbox
from hookstage.store.deliveries import Claimed, Handoff, NewDelivery
from hookstage.store.endpoints import disable
from hookstage.store.tables import tasks
from tests.support.delivery import (
    BODY,
    Receiver,
    enqueue,
    get,
    hub,
    resolver,
    seeded_store,
    task_row,
    until,
    until_state,
)
from tests.support.dispatching import Start
from tests.support.inbox import Inbox, listening

SECRET = "stage-secret-0123456789"


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    async with seeded_store(database) as opened:
        yield opened


async def _running(dispatcher: Dispatcher) -> Dispatcher:
    async def running() -> bool:
        return bool(dispatcher.state()["running"])

    await until(running)
    return dispatcher


async def _write(
    store: Store, handoff: Handoff, *deliveries: tuple[str, str, str]
) -> list[Claimed]:
    """Enqueue (id, task, stage) deliveries, claiming them on ``handoff``, in one write."""
    now = time.time()
    fired = [
        NewDelivery(i, "p1", stage, task, "x.png", BODY, now, now) for i, task, stage in deliveries
    ]
    found = await store.write(
        [
            *outbox.enqueuing(store.dialect, fired),
            outbox.claiming_these(store.dialect, [d.id for d in fired], handoff),
        ]
    )
    return outbox.claimed_rows(found[-1], handoff)


async def _tasks(store: Store, *ids: str) -> None:
    async with store.transaction() as conn:
        await conn.execute(tasks.insert(), [task_row(i, time.time()) for i in ids])


@dataclass
class Served:
    svc: service.Service
    dispatcher: Dispatcher
    inbox: Inbox
    project_id: str


@pytest.fixture
async def served(database: str) -> AsyncIterator[Served]:
    """`serve` (API, engine, dispatcher) on the test's database, a project whose Webhook
    stage posts to a receiver, and one task at Label."""
    inbox = Inbox()
    async with listening(inbox, SECRET) as hook_url:
        config = service.ServiceConfig(database=database, port=0, allow_egress=("loopback",))
        async with service.running(config) as svc:
            assert svc.dispatcher is not None
            project = await svc.engine.create_project(
                name="p", category_schema=DEMO_SCHEMA, workflow_json=demo_workflow(hook_url, SECRET)
            )
            await svc.engine.import_assets(project.id, demo_assets(1))
            yield Served(svc, await _running(svc.dispatcher), inbox, project.id)


async def _submit(served: Served) -> str:
    [task] = await served.svc.engine.list_tasks(served.project_id, limit=1)
    await served.svc.engine.submit(task.id, Submission(**labeled(7)), user="ann", duration_ms=1)
    return task.id


async def _delivered(served: Served) -> outbox.DeliveryInfo:
    """The project's one delivery, once it is recorded delivered."""
    store = served.svc.store

    async def recorded() -> bool:
        async with store.read() as conn:
            found = await outbox.list_deliveries(conn, project_id=served.project_id)
        return [d.state for d in found] == ["delivered"]

    await until(recorded)
    async with store.read() as conn:
        [delivery] = await outbox.list_deliveries(conn, project_id=served.project_id)
    return delivery


def _room(dispatcher: Dispatcher) -> int:
    """How many deliveries the dispatcher would take from steps now."""
    held = []
    while (handoff := dispatcher.reserve([("p", "s")])) is not None:
        held.append(handoff)
    for handoff in held:
        dispatcher.unreserve(handoff)
    return len(held)


async def test_a_steps_delivery_is_this_processs_to_send_the_moment_the_step_returns(
    served: Served,
) -> None:
    await _submit(served)
    # Nothing has run since the step's write: only that write can have claimed it.
    assert served.dispatcher.state()["claimed"] == 1

    [received] = await served.inbox.wait_for(1)
    delivery = await _delivered(served)
    assert ("X-Hookstage-Delivery", delivery.id) in received.headers
    assert delivery.attempts == 1


async def test_steps_that_lose_their_write_give_their_room_back(served: Served) -> None:
    room = _room(served.dispatcher)
    [task] = await served.svc.engine.list_tasks(served.project_id, limit=1)
    submissions = [
        served.svc.engine.submit(task.id, Submission(**labeled(n)), user="ann", duration_ms=1)
        for n in range(3)
    ]
    # They read the same task: one moves it, the others lose their write, read again and
    # are refused (it is not at Label any more).
    outcomes = await asyncio.gather(*submissions, return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "Conflict", "Task"]

    await _delivered(served)
    assert served.dispatcher.state()["claimed"] == 0
    assert _room(served.dispatcher) == room


async def test_a_write_claims_only_what_a_claim_would_take(store: Store) -> None:
    [earlier] = await enqueue(store, 1)  # task hook-0's delivery to "hook", pending
    await _tasks(store, "fresh-task")
    async with store.transaction() as conn:
        await disable(conn, [("p1", "gone")], now=time.time(), reason="410 Gone")
    handoff = Handoff("me", time.time() + 60, 3)

    claimed = await _write(
        store,
        handoff,
        ("behind", "hook-0", "hook"),  # after `earlier`, to the same stage: it waits
        ("parked", "fresh-task", "gone"),  # its endpoint is disabled
        ("fresh", "fresh-task", "hook"),
    )

    assert [(c.id, c.worker, c.attempt, c.body) for c in claimed] == [("fresh", "me", 1, BODY)]
    fresh, behind, parked = [await get(store, i) for i in ("fresh", "behind", "parked")]
    assert (fresh.leased_by, fresh.attempts) == ("me", 1)
    assert (behind.leased_by, behind.attempts, parked.leased_by) == (None, 0, None)
    assert (await get(store, earlier)).leased_by is None


async def test_room_is_reserved_until_adopted_or_given_back(
    store: Store, receiver: Receiver, start: Start
) -> None:
    # Room for concurrency + 2 * batch claims: 3.
    dispatcher = await _running(
        await start({"hook": hub(receiver.url)}, concurrency=1, per_endpoint=1, batch=1)
    )
    held = dispatcher.reserve([("p1", "hook")] * 3)
    assert held is not None
    assert dispatcher.reserve([("p1", "hook")]) is None
    dispatcher.unreserve(held)
    assert dispatcher.reserve([("p1", "hook")] * 3) is not None


async def test_a_handoff_adopted_while_stopping_is_released_for_another_worker(
    store: Store, receiver: Receiver, start: Start
) -> None:
    endpoints: dict[str, Endpoint | None] = {"hook": hub(receiver.url)}
    dispatcher = await _running(await start(endpoints))
    handoff = dispatcher.reserve([("p1", "hook")])
    assert handoff is not None
    await _tasks(store, "t1")
    claimed = await _write(store, handoff, ("d1", "t1", "hook"))
    assert [c.id for c in claimed] == ["d1"]

    await dispatcher.stop(grace=0)
    assert dispatcher.reserve([("p1", "hook")]) is None
    await dispatcher.adopt(handoff, claimed, resolver(endpoints))

    released = await get(store, "d1")
    assert (released.state, released.leased_by, released.attempts) == ("pending", None, 0)
    assert released.due_at <= time.time()
    assert receiver.requests == []
    other = await _running(await start(endpoints))
    other.wake()
    await until_state(store, ["d1"], "delivered")
    assert receiver.ids() == ["d1"]


async def test_a_retry_and_a_wake_in_a_quiet_spell_go_at_once_not_at_the_next_poll(
    store: Store, receiver: Receiver, start: Start
) -> None:
    # A poll far past the deadline: only a claim at the right moment delivers in time.
    endpoints = {"hook": hub(receiver.url), "late": hub(receiver.url)}
    dispatcher = await _running(await start(endpoints, poll_seconds=3600))
    receiver.statuses.append(500)
    first = await enqueue(store, 1)
    dispatcher.wake()
    await until_state(store, first, "delivered")  # its retry was claimed when due
    assert (await get(store, first[0])).attempts == 2

    second = await enqueue(store, 1, stage="late")
    dispatcher.wake()
    await until_state(store, second, "delivered")
    assert receiver.ids() == [*first, *first, *second]


async def test_steps_cancelled_once_their_writes_are_queued_still_deliver_at_once(
    tmp_path: Path,
) -> None:
    # SQLite goes on with a write once it is queued (PostgreSQL rolls a cancelled one back).
    database = tmp_path / "db.sqlite"
    inbox = Inbox()
    async with listening(inbox, SECRET) as hook_url:
        config = service.ServiceConfig(
            database=str(database), port=0, allow_egress=("loopback",), lease_seconds=3600
        )
        async with service.running(config) as svc:
            assert svc.dispatcher is not None
            dispatcher = await _running(svc.dispatcher)
            engine = svc.engine
            project = await engine.create_project(
                name="p", category_schema=DEMO_SCHEMA, workflow_json=demo_workflow(hook_url, SECRET)
            )
            await engine.import_assets(project.id, demo_assets(5))
            first, *others = await engine.list_tasks(project.id)
            # A step first: it opens the writes' connection, so the others queue at once.
            await engine.submit(first.id, Submission(**labeled(1)), user="ann", duration_ms=1)

            async def recorded() -> bool:
                return bool(dispatcher.state()["claimed"] == 0)

            await until(recorded)
            room = _room(dispatcher)
            # Another connection holds SQLite's writer: the next write waits on it, and the
            # others queue behind that one.
            blocker = sqlite3.connect(database, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            steps = [
                asyncio.create_task(
                    engine.submit(t.id, Submission(**labeled(1)), user="ann", duration_ms=1)
                )
                for t in others
            ]

            async def all_queued() -> bool:  # each reserved room just before queueing
                return _room(dispatcher) == room - len(steps)

            await until(all_queued)
            for step in steps:
                step.cancel()
            assert all(
                isinstance(o, asyncio.CancelledError)
                for o in await asyncio.gather(*steps, return_exceptions=True)
            )
            blocker.rollback()
            blocker.close()

            async def all_delivered() -> bool:  # long before a lease of an hour ends
                async with svc.store.read() as conn:
                    found = await outbox.list_deliveries(conn, project_id=project.id)
                return len(found) == len(steps) + 1 and all(d.state == "delivered" for d in found)

            await until(all_delivered)
            async with svc.store.read() as conn:
                found = await outbox.list_deliveries(conn, project_id=project.id)
            assert {d.attempts for d in found} == {1}  # the given-back claim was not counted
            assert len(await inbox.wait_for(len(steps) + 1)) == len(steps) + 1
            assert _room(dispatcher) == room
