"""Deliveries per second with 1, 2 and 4 `hookstage worker` processes on one PostgreSQL
database, against one worker on SQLite, in one run; and the CPU each delivery costs.

For each setup, N deliveries of ~2 KB webhook bodies (one task each, one Webhook stage
signing with X-Hub-Signature) are written straight into a fresh database, then the worker
processes are started (`hookstage worker`, real processes) and deliver them to a receiver
in a process of its own (aiohttp on uvloop, checking every signature, answering 200 after
``--delay-ms``). Throughput is measured between 10% and 90% of the deliveries received
(start-up and the tail left out); so is CPU, from /proc: the workers', the database
server's (every PostgreSQL process; SQLite works inside the worker), and the receiver's
(shown apart: it is the other end, not hookstage's cost).

PostgreSQL runs durable here (fsync and synchronous_commit on, as SQLite runs with
synchronous=FULL), from the machine's binaries or the `pgserver` package. On a 2-core
machine, throughput flattens as soon as workers, database and receiver share two cores:
CPU per delivery is the figure that carries over to bigger machines.

    .venv/bin/python -m benchmarks.bench_scale [--count 20000] [--workers 1,2,4] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import multiprocessing
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from aiohttp import web
from tests.support.postgres import Postgres, running

from hookstage.engine import Engine
from hookstage.signing import hub_signature
from hookstage.store import Store, open_store
from hookstage.store.deliveries import NewDelivery, enqueue
from hookstage.store.tables import deliveries, tasks

SECRET = "bench-secret-0123456789"
STAGE = "hook"
_CHUNK = 2000
_TICK = os.sysconf("SC_CLK_TCK")


def _run(main: Coroutine[Any, Any, Any]) -> Any:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


# --- the receiver (a child process) -----------------------------------------------------------


async def _serve(delay: float, received: Synchronized[int], conn: Connection) -> None:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not hmac.compare_digest(
            hub_signature(SECRET, body), request.headers.get("X-Hub-Signature", "")
        ):
            return web.Response(status=401, text="bad signature")
        if delay:
            await asyncio.sleep(delay)  # the receiver's own work, simulated
        with received.get_lock():
            received.value += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
    await site.start()
    host, port = runner.addresses[0][:2]
    conn.send(f"http://{host}:{port}/hook")
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
    await runner.cleanup()


def _receiver_process(delay: float, received: Synchronized[int], conn: Connection) -> None:
    _run(_serve(delay, received, conn))


# --- CPU from /proc ---------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    # The fields after the command name, which may itself hold spaces and parentheses.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes (those gone count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat(pid)
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int(_stat(int(entry.name))[1]) == parent:
                    found.append(int(entry.name))
    return found


def _postmaster(url: str) -> int:
    """The server's main process: the parent of any backend."""
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            backend = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
            # While connected: a backend whose connection closed may be gone already.
            return int(_stat(backend)[1])
    finally:
        engine.dispose()


# --- the outbox -------------------------------------------------------------------------------


def _body(i: int) -> bytes:
    """A webhook-shaped body of about 2 KB, different for every delivery."""
    box = {"x": 194.46 + i % 100, "y": 30.24, "height": 7.89, "width": 12.79}
    tool = {
        "bounding-box": box,
        "objectId": f"{i:023x}",
        "schemaId": "7d38d842079133453b4b328",
        "title": "logo",
        "classifications": [],
        "metadata": {"createdAt": "2023-09-28T09:37:32.598Z", "createdBy": "a@example.com"},
    }
    task = {
        "taskId": f"{i:024x}", "stage": "Label", "stageId": "Label",
        "updatedAt": "2023-09-28T09:37:33.733Z", "updatedBy": "annotator@example.com",
        "totalDuration": 11643, "tools": [tool] * 6, "classifications": [], "relations": [],
        "brushDataUrl": None, "medicalBrushDataUrl": None,
    }  # fmt: skip
    return orjson.dumps(
        {
            "asset": f"https://assets.example.com/{i:08d}.png?X-Amz-Expires=120000&sig={'a' * 64}",
            "assetId": f"{i:024x}",
            "dataset": [],
            "externalId": f"image-{i:08d}.png",
            "metadata": {"width": 445, "height": 95},
            "batches": ["bench"],
            "task": task,
        }
    )


def _workflow(hook_url: str) -> list[dict[str, Any]]:
    auth = {"type": "secret", "secret": SECRET}
    return [
        {"id": "Start", "type": "Start", "name": "Start", "next": ["Label"]},
        {"id": "Label", "type": "Label", "name": "Label", "next": [STAGE]},
        {"id": STAGE, "type": "Webhook", "name": "Webhook", "next": ["Complete"],
         "url": hook_url, "auth": auth},
        {"id": "Complete", "type": "Complete", "name": "Complete", "next": []},
    ]  # fmt: skip


async def _seed(url: str, hook_url: str, count: int) -> None:
    store = await open_store(url)
    try:
        project = await Engine(store).create_project(
            name="bench",
            category_schema={"tools": [], "classifications": [], "relations": []},
            workflow_json=_workflow(hook_url),
        )
        now = time.time()
        for start in range(0, count, _CHUNK):
            numbers = range(start, min(start + _CHUNK, count))
            async with store.transaction() as conn:
                await conn.execute(tasks.insert(), [_task_row(project.id, i, now) for i in numbers])
                await enqueue(conn, [_delivery(project.id, i, now) for i in numbers])
    finally:
        await store.close()


def _task_row(project_id: str, i: int, now: float) -> dict[str, Any]:
    return {
        "id": f"t{i:023x}", "asset_id": f"a{i:023x}", "project_id": project_id,
        "external_id": f"image-{i:08d}.png", "data_url": f"https://assets.example.com/{i}.png",
        "dataset": [], "asset_metadata": {}, "stage_id": "Complete", "work_stage_id": "Label",
        "annotations": {}, "stage_history": [], "updated_at": now, "total_duration": 0,
        "entered_at": now, "created_at": now, "version": 1,
    }  # fmt: skip


def _delivery(project_id: str, i: int, now: float) -> NewDelivery:
    return NewDelivery(
        id=f"dlv_{i:024x}",
        project_id=project_id,
        stage_id=STAGE,
        task_id=f"t{i:023x}",
        external_id=f"image-{i:08d}.png",
        body=_body(i),
        due_at=now,
        created_at=now,
    )


async def _delivered(url: str) -> int:
    store: Store = await open_store(url, migrate=False)
    try:
        async with store.read() as conn:
            query = sa.select(sa.func.count()).where(deliveries.c.state == "delivered")
            return int((await conn.execute(query)).scalar_one())
    finally:
        await store.close()


# --- one setup --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    name: str
    workers: int
    per_second: float
    worker_ms: float  # CPU per delivery, all workers together
    database_ms: float  # CPU per delivery, the PostgreSQL server (0 on SQLite: in-process)
    receiver_ms: float


@contextlib.contextmanager
def _workers(url: str, number: int, concurrency: int, logs: Path) -> Iterator[list[int]]:
    env = {**os.environ, "HOOKSTAGE_LOG_LEVEL": "warning", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "hookstage.cli", "worker", "--db", url]
    command += ["--allow-egress", "loopback", "--concurrency", str(concurrency)]
    started = []
    try:
        for n in range(number):
            with (logs / f"worker-{n}.log").open("wb") as sink:
                started.append(
                    subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
                )
        yield [p.pid for p in started]
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_for(received: Synchronized[int], count: int, within: float, logs: Path) -> None:
    deadline = time.monotonic() + within
    while received.value < count:
        if time.monotonic() > deadline:
            shown = "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.log")))
            raise RuntimeError(f"only {received.value} of {count} arrived in time:\n{shown}")
        time.sleep(0.002)


@dataclass(frozen=True)
class Setup:
    name: str
    url: str
    workers: int
    database_pids: Callable[[], list[int]]


def _measure(setup: Setup, args: argparse.Namespace, hook_url: str, receiver: int,
             received: Synchronized[int]) -> Result:  # fmt: skip
    _run(_seed(setup.url, hook_url, args.count))
    received.value = 0
    low, high = args.count // 10, args.count - args.count // 10
    with tempfile.TemporaryDirectory(prefix="bench-scale-logs-") as tmp:
        logs = Path(tmp)
        with _workers(setup.url, setup.workers, args.concurrency, logs) as pids:
            _wait_for(received, low, 120, logs)
            before = time.perf_counter(), _cpu(pids), _cpu(setup.database_pids()), _cpu([receiver])
            _wait_for(received, high, 600, logs)
            after = time.perf_counter(), _cpu(pids), _cpu(setup.database_pids()), _cpu([receiver])
            _wait_for(received, args.count, 120, logs)
            deadline = time.monotonic() + 60
            while _run(_delivered(setup.url)) < args.count:  # every attempt recorded
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{setup.name}: not every delivery was recorded")
                time.sleep(0.05)
    counted = high - low
    per = [1000 * (b - a) / counted for a, b in zip(before[1:], after[1:], strict=True)]
    return Result(setup.name, setup.workers, counted / (after[0] - before[0]), *per)


# --- the run ----------------------------------------------------------------------------------


def _setups(server: Postgres, tmp: Path, numbers: Sequence[int]) -> Iterator[Setup]:
    yield Setup("SQLite", f"sqlite:///{tmp / 'bench.sqlite'}", 1, list)
    urls = [server.fresh() for _ in numbers]
    postmaster = _postmaster(urls[0])

    def server_processes() -> list[int]:
        return [postmaster, *_children(postmaster)]

    for number, url in zip(numbers, urls, strict=True):
        yield Setup("PostgreSQL", url, number, server_processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20000, help="deliveries per setup")
    parser.add_argument("--workers", default="1,2,4", help="worker counts on PostgreSQL")
    parser.add_argument("--concurrency", type=int, default=256, help="requests per worker")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="receiver's answer delay")
    args = parser.parse_args()
    numbers = [int(n) for n in args.workers.split(",")]
    if args.count < 100 or min(numbers) < 1:
        parser.error("--count must be 100 or more, --workers positive numbers")

    ctx = multiprocessing.get_context("spawn")
    received: Synchronized[int] = ctx.Value("q", 0)
    parent, child = ctx.Pipe()
    receiver = ctx.Process(
        target=_receiver_process, args=(args.delay_ms / 1000, received, child), daemon=True
    )
    receiver.start()
    results = []
    try:
        hook_url = parent.recv()
        with running(durable=True) as server, tempfile.TemporaryDirectory() as tmp:
            version = server.version
            for setup in _setups(server, Path(tmp), numbers):
                results.append(_measure(setup, args, hook_url, receiver.pid or 0, received))
    finally:
        parent.send("stop")
        receiver.join(timeout=10)
        if receiver.is_alive():
            receiver.kill()
    _report(args, results, version)


def _report(args: argparse.Namespace, results: list[Result], pg_version: int) -> None:
    print(
        f"bench_scale: {args.count} deliveries of ~2 KB per setup, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}, SQLite {sqlite3.sqlite_version},"
        f" PostgreSQL {pg_version // 10000}.{pg_version % 100},"
        f" receiver delay {args.delay_ms:g} ms,"
        f" worker concurrency {args.concurrency}, load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| database | workers | deliveries/s | CPU ms per delivery: workers | database |"
          " total | receiver (apart) |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        total = r.worker_ms + r.database_ms
        print(
            f"| {r.name} | {r.workers} | {r.per_second:,.0f} | {r.worker_ms:.2f} |"
            f" {r.database_ms:.2f} | {total:.2f} | {r.receiver_ms:.2f} |"
        )


if __name__ == "__main__":
    main()
