"""Many processes on one PostgreSQL database, as a deployment runs them: two API servers
(`hookstage serve --no-dispatch`) and three `hookstage worker`s, workers killed with SIGKILL
and started again at random while thousands of tasks are submitted through both servers.

Every delivery arrives at least once, always with its one id and its exact bytes; every
task is moved once, though each is submitted through both servers at the same moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hookstage.cipher import new_key
from hookstage.client import ApiError, Client
from hookstage.demo import DEMO_SCHEMA, demo_workflow, labeled
from hookstage.engine import Engine
from hookstage.store import Store, open_store
from hookstage.store.tables import deliveries, delivery_bodies, tasks
from tests.support.fleet import Fleet, Member, fleet
from tests.support.inbox import Inbox, listening

TASKS = 2000
RACED = 8  # every 8th task is submitted through both servers at once
SEED = 20240601
SECRET = "scale-out-secret-0123456789"
WORKER = ("worker", "--lease", "5", "--allow-egress", "loopback", "--pool-size", "3")
SETTLE_WITHIN = 90.0


def _assets(count: int) -> list[dict[str, Any]]:
    return [
        {"externalId": f"frame-{n:05d}.jpg", "data": f"https://assets.example.com/{n}.jpg",
         "batches": [f"Batch {n % 4}"], "metadata": {"width": 640, "height": 480}}
        for n in range(count)
    ]  # fmt: skip


async def _states(store: Store) -> Counter[str]:
    async with store.read() as conn:
        query = sa.select(deliveries.c.state, sa.func.count()).group_by(deliveries.c.state)
        return Counter({state: int(n) for state, n in (await conn.execute(query)).all()})


async def _chaos(
    crew: Fleet, workers: list[Member], rng: random.Random, stop: asyncio.Event
) -> int:
    """Kill a random worker now and then and start another in its place; the next kill
    waits until the new one delivers (so two are always up, and restarts cannot pile up)."""
    kills = 0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(1.0, 3.0))
        if stop.is_set():
            return kills
        slot = rng.randrange(len(workers))
        await crew.kill(workers[slot])
        workers[slot] = crew.start("worker", *WORKER)
        kills += 1
        await crew.ready(workers[slot], "delivering from")


async def _submit(
    servers: tuple[Client, Client], task_id: str, n: int, room: asyncio.Semaphore
) -> list[Any]:
    """Submit task number n through one server, or, every RACED-th, through both at once."""
    first, second = servers if n % 2 else servers[::-1]
    calls = [first.submit(task_id, labeled(n), user="ann@example.com", duration=1000)]
    if n % RACED == 0:
        calls.append(second.submit(task_id, labeled(n + 1), user="bob@example.com"))
    async with room:
        return list(await asyncio.gather(*calls, return_exceptions=True))


async def _settled(store: Store, crew: Fleet) -> None:
    deadline = time.monotonic() + SETTLE_WITHIN
    while (states := await _states(store))["delivered"] < TASKS:
        assert time.monotonic() < deadline, f"{states}\n{crew.logs()}"
        await asyncio.sleep(0.2)


async def test_servers_and_workers_killed_at_random_lose_and_repeat_nothing(
    postgres_database: str, tmp_path: Path
) -> None:
    inbox = Inbox()
    store = await open_store(postgres_database)
    _, key = await Engine(store).create_key("scale-test", "admin")
    env = {"HOOKSTAGE_SECRET_KEY": new_key(), "HOOKSTAGE_ALLOW_EGRESS": "loopback"}
    rng = random.Random(SEED)
    try:
        async with (
            listening(inbox, SECRET) as hook_url,
            fleet(postgres_database, tmp_path, env) as crew,
        ):
            first, second = [await crew.serve("--no-dispatch") for _ in range(2)]
            workers = [crew.start("worker", *WORKER) for _ in range(3)]
            async with Client(first.url, key) as a, Client(second.url, key) as b:
                project = await a.create_project(
                    "scale", DEMO_SCHEMA, demo_workflow(hook_url, SECRET)
                )
                items = _assets(TASKS)
                for start in range(0, TASKS, 500):
                    await (a, b)[start // 500 % 2].import_assets(
                        project["id"], items[start : start + 500]
                    )
                task_ids = [t["taskId"] for t in await b.tasks(project["id"], stage="Label")]
                assert len(task_ids) == TASKS

                stop = asyncio.Event()
                chaos = asyncio.create_task(_chaos(crew, workers, rng, stop))
                room = asyncio.Semaphore(16)
                outcomes = await asyncio.gather(
                    *(_submit((a, b), t, n, room) for n, t in enumerate(task_ids))
                )
                await _settled(store, crew)
                stop.set()
                kills = await chaos
            # SIGTERM: a worker finishes and leaves; none may hang or crash on the way out.
            exits = [await crew.stop(m) for m in crew.members if m.running]
            assert exits == [0] * len(exits), crew.logs()

        for n, outcome in enumerate(outcomes):
            # One submit moved the task; the one that raced it was refused with a 409.
            moved = [r for r in outcome if not isinstance(r, BaseException)]
            refused = [r for r in outcome if isinstance(r, ApiError) and r.status == 409]
            assert (len(moved), len(refused)) == (1, 0 if n % RACED else 1), outcome
        assert kills >= 3
        await _check_delivered_once_each(store, inbox, project["id"])
    finally:
        await store.close()


async def _check_delivered_once_each(store: Store, inbox: Inbox, project_id: str) -> None:
    async with store.read() as conn:
        stored = dict(
            (await conn.execute(
                sa.select(deliveries.c.id, delivery_bodies.c.body).join(
                    delivery_bodies, delivery_bodies.c.delivery_id == deliveries.c.id
                )
            )).all()
        )  # fmt: skip
        per_task = Counter((await conn.execute(sa.select(deliveries.c.task_id))).scalars())
        moved = (
            await conn.execute(
                sa.select(tasks.c.stage_id, tasks.c.version, tasks.c.stage_history).where(
                    tasks.c.project_id == project_id
                )
            )
        ).all()
    assert len(stored) == TASKS
    assert set(per_task.values()) == {1}  # one Webhook entry, one delivery, per task
    # Moved once: Start (at import), Label (the one submit that won), then the Webhook.
    for stage_id, version, history in moved:
        assert (stage_id, version) == ("review", 2)
        assert [entry["stageId"] for entry in history] == ["Start", "Label", "webhook"]

    arrived: defaultdict[str, list[bytes]] = defaultdict(list)
    for request in inbox.received:
        assert request.verdict == "valid", request.reason
        arrived[dict(request.headers)["X-Hookstage-Delivery"]].append(request.body)
    assert set(arrived) == set(stored)  # every one arrived, and nothing else did
    for delivery_id, bodies in arrived.items():
        assert set(bodies) == {bytes(stored[delivery_id])}  # repeats are the same bytes
