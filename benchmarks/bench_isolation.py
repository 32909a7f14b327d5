"""Isolation: a healthy endpoint's throughput with a black-holed endpoint beside it, against
the same endpoint alone, in one run.

Two Webhook stages of one project, each with its own endpoint: "healthy" (a receiver in its
own process that checks X-Hub-Signature and answers 200, after ``--delay-ms``) and "stuck"
(a process that accepts connections and reads requests, and never answers). Each scenario
gets a fresh SQLite file (WAL, synchronous=FULL) and one ``Dispatcher`` with its defaults
(concurrency 256, 64 per endpoint), and is timed until every healthy delivery is recorded
as delivered:

- alone: ``--count`` deliveries to the healthy stage only;
- black hole, 15 s timeout: the same, plus ``--stuck`` deliveries to the black hole, due
  first, whose requests hang for the whole run (the default timeout): they hold the stuck
  endpoint's slots and claims throughout;
- black hole, 1 s timeout: the same with a 1 s timeout, so attempts time out and the stuck
  endpoint's circuit opens during the run.

Each scenario runs ``--repeat`` times, alternating; the best time of each is reported.

    .venv/bin/python -m benchmarks.bench_isolation --count 20000 --stuck 2000 [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.bench_drain import SECRET, _body, _receiver_process, _run, _task_row
from hookstage.dispatcher import Dispatcher, Endpoint
from hookstage.signing import Signer
from hookstage.store import Store, open_store
from hookstage.store.deliveries import NewDelivery, counts, enqueue
from hookstage.store.tables import deliveries, projects, tasks

PROJECT = "bench-project"
HEALTHY, STUCK = "healthy", "stuck"
_CHUNK = 2000


# --- the black hole (a child process) ---------------------------------------------------------


async def _swallow(conn: Connection) -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    conn.send(f"http://127.0.0.1:{port}/hook")
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
    server.close()


def _black_hole_process(conn: Connection) -> None:
    _run(_swallow(conn))


@dataclass
class _Child:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    url: str

    def stop(self) -> None:
        self.conn.send("stop")
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


def _spawn(target: Callable[..., None], *args: Any) -> _Child:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(*args, child), daemon=True)
    process.start()
    if not parent.poll(30):
        process.kill()
        raise RuntimeError(f"{target.__name__} did not start")
    return _Child(process, parent, parent.recv())


# --- one scenario -------------------------------------------------------------------------------


async def _seed(store: Store, healthy: int, stuck: int) -> None:
    now = time.time()
    async with store.transaction() as conn:
        await conn.execute(
            projects.insert().values(
                id=PROJECT, name="bench", category_schema={}, workflow={}, created_at=now,
                updated_at=now,
            )
        )  # fmt: skip
    # The stuck stage's deliveries are due first: the claim meets them before any other.
    plan = [(STUCK, i, now - 60) for i in range(stuck)] + [
        (HEALTHY, stuck + i, now) for i in range(healthy)
    ]
    for start in range(0, len(plan), _CHUNK):
        part = plan[start : start + _CHUNK]
        async with store.transaction() as conn:
            await conn.execute(tasks.insert(), [_task_row(i, now) for _, i, _ in part])
            await enqueue(conn, [_delivery(stage, i, due, now) for stage, i, due in part])


def _delivery(stage: str, i: int, due: float, now: float) -> NewDelivery:
    row = _task_row(i, now)
    return NewDelivery(
        id=f"dlv_{i:024x}",
        project_id=PROJECT,
        stage_id=stage,
        task_id=row["id"],
        external_id=row["external_id"],
        body=_body(i),
        due_at=due,
        created_at=now,
    )


async def _scenario(healthy_url: str, hole: str | None, args: argparse.Namespace) -> float:
    """Seconds until every healthy delivery is delivered."""
    stuck = args.stuck if hole is not None else 0
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as tmp:
        store = await open_store(Path(tmp) / "db.sqlite")
        try:
            await _seed(store, args.count, stuck)
            return await _drain(store, healthy_url, hole, args)
        finally:
            await store.close()


async def _drain(
    store: Store, healthy_url: str, hole: str | None, args: argparse.Namespace
) -> float:
    signer = Signer(["hub"], secrets=[SECRET])
    endpoints = {HEALTHY: Endpoint(healthy_url, signer)}
    if hole is not None:
        url, timeout = hole.rsplit(" ", 1)
        endpoints[STUCK] = Endpoint(url, signer, timeout=float(timeout))

    async def resolve(project_id: str, stage_id: str) -> Endpoint | None:
        return endpoints.get(stage_id)

    dispatcher = Dispatcher(store, resolve=resolve)
    started = time.perf_counter()
    running = asyncio.create_task(dispatcher.run())
    try:
        # Poll with one index probe: a count of every delivery per poll cost ~15 ms of CPU
        # (measured), and so took more from the longer-running scenarios.
        while True:
            if not await _healthy_pending(store):
                seconds = time.perf_counter() - started
                break
            await asyncio.sleep(0.02)
    finally:
        await dispatcher.stop(grace=0)
        await running
    async with store.read() as conn:
        done = (await counts(conn, PROJECT, HEALTHY))["delivered"]
    if done != args.count:
        raise RuntimeError(f"healthy stage: {done} of {args.count} delivered")
    return seconds


async def _healthy_pending(store: Store) -> bool:
    # In the claim's index alone (ordered by due_at, it covers the query): the pending
    # entries up to the first healthy one, at most the black hole's before it.
    query = (
        sa.select(sa.literal(1))
        .where(
            deliveries.c.state == "pending",
            deliveries.c.project_id == PROJECT,
            deliveries.c.stage_id == HEALTHY,
        )
        .order_by(deliveries.c.due_at)
        .limit(1)
    )
    async with store.read() as conn:  # a read never waits for (or slows) the writer
        return (await conn.execute(query)).first() is not None


# --- the run ----------------------------------------------------------------------------------


async def _main(args: argparse.Namespace) -> None:
    receiver = _spawn(_receiver_process, args.delay_ms / 1000)
    black_hole = _spawn(_black_hole_process)
    scenarios: Sequence[tuple[str, str | None]] = (
        ("healthy alone", None),
        ("beside a black hole, 15 s timeout", f"{black_hole.url} 15"),
        ("beside a black hole, 1 s timeout", f"{black_hole.url} 1"),
    )
    best: dict[str, float] = {}
    try:
        for _ in range(args.repeat):
            for name, hole in scenarios:
                seconds = await _scenario(receiver.url, hole, args)
                best[name] = min(best.get(name, float("inf")), seconds)
    finally:
        receiver.stop()
        black_hole.stop()
    alone = best["healthy alone"]
    print(
        f"bench_isolation: {args.count} healthy deliveries, {args.stuck} to a black hole,"
        f" receiver delay {args.delay_ms:g} ms, best of {args.repeat}"
    )
    print(f"{'scenario':<36}{'healthy deliveries/s':>22}{'seconds':>10}{'vs alone':>10}")
    for name, _ in scenarios:
        seconds = best[name]
        print(f"{name:<36}{args.count / seconds:>22,.0f}{seconds:>10.2f}{alone / seconds:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20000, help="healthy deliveries")
    parser.add_argument("--stuck", type=int, default=2000, help="deliveries to the black hole")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="receiver's answer delay")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each scenario")
    args = parser.parse_args()
    if args.count < 1 or args.stuck < 1 or args.repeat < 1:
        parser.error("--count, --stuck and --repeat must be positive")
    _run(_main(args))


if __name__ == "__main__":
    main()
