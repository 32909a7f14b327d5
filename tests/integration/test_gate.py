"""Gate mode end to end: engine + dispatcher (settle hook) + real receivers + a real
database (SQLite, then PostgreSQL).

A task in a gate Webhook stage waits for its delivery; the transaction that records the
receiver's 2xx moves it on; exhausted retries take the failure output, or leave it there,
visibly failed, until a person re-sends it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage.circuit import CircuitPolicy
from hookstage.dispatcher import Dispatcher, Endpoint
from hookstage.engine import Engine
from hookstage.retry import RetryPolicy
from hookstage.service import endpoint
from hookstage.store import Store, open_store
from hookstage.store.deliveries import AttemptResult
from hookstage.store.tables import deliveries, tasks
from tests.support.delivery import Receiver, receiving, until
from tests.support.engine import SCHEMA, asset, stage

QUICK = RetryPolicy(schedule=(0, 0.01, 0.01), jitter=0)


@dataclass
class Gate:
    store: Store
    engine: Engine
    hook: Receiver
    notify: Receiver
    dispatcher: Dispatcher | None = None
    settled: list[str] = field(default_factory=list)  # the stage of each attempt settled

    async def project(self, *, failure_output: bool) -> str:
        gate_next = ["notify", "failed"] if failure_output else ["notify"]
        flow: list[dict[str, Any]] = [
            stage("Start", "Start", "gate"),
            stage("gate", "Webhook", *gate_next, url=self.hook.url, mode="gate"),
            stage("notify", "Webhook", "Complete", url=self.notify.url),
            stage("failed", "Hold", "Complete"),
            stage("Complete", "Complete"),
        ]
        if not failure_output:
            flow = [s for s in flow if s["id"] != "failed"]
        made = await self.engine.create_project(
            name="gate", category_schema=SCHEMA, workflow_json=flow
        )
        return made.id

    async def start(self) -> Dispatcher:
        settled: list[str] = self.settled

        async def settle(conn: AsyncConnection, results: Sequence[AttemptResult]) -> None:
            settled.extend(r.stage_id or "?" for r in results)
            await self.engine.settle_gates(conn, results)

        async def resolve(project_id: str, stage_id: str) -> Endpoint | None:
            settings = await self.engine.webhook_settings(project_id, stage_id)
            return None if settings is None else endpoint(settings)

        self.dispatcher = Dispatcher(
            self.store,
            resolve=resolve,
            policy=QUICK,
            settle=settle,
            circuit=CircuitPolicy(failures=1000),
            poll_seconds=0.05,
        )
        self.engine.on_enqueue = self.dispatcher.wake
        self._task = asyncio.create_task(self.dispatcher.run())
        return self.dispatcher

    async def stop(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop(grace=0)
            await self._task

    async def stage_of(self, task_id: str) -> str:
        return (await self.engine.get_task(task_id)).stage_id

    async def until_stage(self, task_id: str, stage_id: str) -> None:
        async def there() -> bool:
            return await self.stage_of(task_id) == stage_id

        await until(there)


@pytest.fixture
async def gate(database: str) -> AsyncIterator[Gate]:
    store = await open_store(database)
    async with receiving() as hook, receiving() as notify:
        found = Gate(store, Engine(store), hook, notify)
        try:
            yield found
        finally:
            await found.stop()
            await store.close()


async def test_a_task_moves_on_only_in_the_transaction_that_records_the_2xx(gate: Gate) -> None:
    gate.hook.gate = asyncio.Event()  # the receiver holds its answer
    project_id = await gate.project(failure_output=True)
    [task_id] = (await gate.engine.import_assets(project_id, [asset(1)])).created
    assert await gate.stage_of(task_id) == "gate"
    await gate.start()
    await gate.hook.wait_for(1)
    assert await gate.stage_of(task_id) == "gate"  # sent, not yet answered: it waits

    seen: set[tuple[str, str]] = set()

    async def moved() -> bool:
        # One read: the delivery's state and the task's stage as one snapshot.
        async with gate.store.read() as conn:
            state = (
                await conn.execute(
                    sa.select(deliveries.c.state).where(
                        deliveries.c.task_id == task_id, deliveries.c.stage_id == "gate"
                    )
                )
            ).scalar_one()
            where = (
                await conn.execute(sa.select(tasks.c.stage_id).where(tasks.c.id == task_id))
            ).scalar_one()
        seen.add((state, where))
        return bool(where == "Complete")

    gate.hook.gate.set()
    await until(moved)
    # Never delivered while still waiting, never moved while not delivered.
    assert ("delivered", "gate") not in seen
    assert not {s for s in seen if s[0] != "delivered" and s[1] != "gate"}
    # Moving on entered the pass-mode Webhook after it: its delivery went out too.
    await gate.notify.wait_for(1)
    task = await gate.engine.get_task(task_id)
    assert [h["stageId"] for h in task.stage_history] == ["Start", "gate", "notify"]
    assert task.work_stage_id == "Start"  # a gate passes the work on, as a pass Webhook does

    # Only the gate's attempt was settled: nothing waits on a pass-mode stage's deliveries.
    async def notified() -> bool:
        async with gate.store.read() as conn:
            state = await conn.scalar(
                sa.select(deliveries.c.state).where(deliveries.c.stage_id == "notify")
            )
        return state == "delivered"

    await until(notified)
    assert gate.settled == ["gate"]


async def test_exhausted_retries_take_the_failure_output(gate: Gate) -> None:
    gate.hook.status = 500
    project_id = await gate.project(failure_output=True)
    [task_id] = (await gate.engine.import_assets(project_id, [asset(1)])).created
    await gate.start()
    await gate.until_stage(task_id, "failed")
    [delivery] = await gate.engine.list_deliveries(project_id, stage_id="gate")
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("failed", 3, 500)
    assert gate.notify.requests == []


async def test_without_a_failure_output_it_stays_visibly_failed_until_re_sent(
    gate: Gate,
) -> None:
    gate.hook.status = 500
    project_id = await gate.project(failure_output=False)
    [task_id, other_id] = (
        await gate.engine.import_assets(project_id, [asset(1), asset(2)])
    ).created
    await gate.start()

    async def both_failed() -> bool:
        found = await gate.engine.list_deliveries(project_id, stage_id="gate")
        return [d.state for d in found] == ["failed", "failed"]

    await until(both_failed)
    status = await gate.engine.stage_status(project_id, "gate")
    assert status.gate is not None
    assert (status.gate["failed"], status.gate["pending"]) == (2, 0)
    assert await gate.stage_of(task_id) == "gate"

    gate.hook.status = 200
    delivery = next(
        d
        for d in await gate.engine.list_deliveries(project_id, stage_id="gate")
        if d.task_id == task_id
    )
    assert await gate.engine.redeliver(delivery.id)
    await gate.until_stage(task_id, "Complete")
    assert await gate.stage_of(other_id) == "gate"  # not re-sent: still waiting for a person
    status = await gate.engine.stage_status(project_id, "gate")
    assert status.gate is not None
    assert status.gate["failed"] == 1
    await gate.notify.wait_for(1)


async def test_an_old_delivery_re_sent_does_not_move_a_task_that_entered_again(
    gate: Gate,
) -> None:
    project_id = await gate.project(failure_output=False)
    [task_id] = (await gate.engine.import_assets(project_id, [asset(1)])).created
    await gate.start()
    await gate.until_stage(task_id, "Complete")
    [first] = await gate.engine.list_deliveries(project_id, stage_id="gate")
    gate.hook.gate = asyncio.Event()  # the new entry's delivery will hang
    await gate.engine.requeue(task_id, "gate", user="manager@example.com")
    await gate.hook.wait_for(2)
    assert await gate.engine.redeliver(first.id)  # the delivery of the first entry, again
    assert await gate.stage_of(task_id) == "gate"
    gate.hook.gate.set()
    await gate.until_stage(task_id, "Complete")
    task = await gate.engine.get_task(task_id)
    # Through the gate twice, not three times: the re-sent first delivery moved nothing.
    assert [h["stageId"] for h in task.stage_history].count("gate") == 2
