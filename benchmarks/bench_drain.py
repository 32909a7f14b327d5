"""How fast the Dispatcher drains the outbox, against a bare aiohttp sender, in one run.

N deliveries of ~2 KB webhook bodies are enqueued into a fresh SQLite file (WAL,
synchronous=FULL). A receiver runs in its own process (a minimal aiohttp handler on uvloop
that checks X-Hub-Signature and answers 200, after ``--delay-ms`` if given). Then, against
that receiver:

- baseline: a bare aiohttp + uvloop loop posting the same stored bodies, X-Hub-Signature
  computed per request, with the same concurrency, recording nothing;
- dispatcher: ``Dispatcher`` claiming, signing, sending and recording every attempt
  durably (group commits), until the outbox is empty.

    .venv/bin/python -m benchmarks.bench_drain --count 20000 [--concurrency 64] [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import tempfile
import time
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import sqlalchemy as sa
from aiohttp import web

from hookstage.dispatcher import Dispatcher, Endpoint
from hookstage.signing import Signer, hub_signature
from hookstage.store import Store, open_store
from hookstage.store.deliveries import NewDelivery, counts, enqueue, next_due_at
from hookstage.store.tables import delivery_bodies, projects, tasks

SECRET = "bench-secret"
PROJECT, STAGE = "bench-project", "bench-webhook"
_CHUNK = 2000


def _run(main: Coroutine[Any, Any, None]) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


# --- the receiver (a child process) -----------------------------------------------------------


async def _serve(delay: float, conn: Connection) -> None:
    async def hook(request: web.Request) -> web.Response:
        # The seed's check: a wrong signature fails the run (each sender wants 200s).
        signature = hub_signature(SECRET, await request.read())
        if not hmac.compare_digest(signature, request.headers.get("X-Hub-Signature", "")):
            return web.Response(status=401, text="bad signature")
        if delay:
            await asyncio.sleep(delay)  # the receiver's own work, simulated
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    host, port = runner.addresses[0][:2]
    conn.send(f"http://{host}:{port}/hook")
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
    await runner.cleanup()


def _receiver_process(delay: float, conn: Connection) -> None:
    _run(_serve(delay, conn))


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
    return orjson.dumps(
        {
            "asset": f"https://assets.example.com/{i:08d}.png?X-Amz-Expires=120000&sig={'a' * 64}",
            "assetId": f"{i:024x}",
            "dataset": [],
            "externalId": f"image-{i:08d}.png",
            "metadata": {"width": 445, "height": 95},
            "batches": ["bench"],
            "task": {
                "taskId": f"{i:024x}",
                "stage": "Label",
                "stageId": "Label",
                "updatedAt": "2023-09-28T09:37:33.733Z",
                "updatedBy": "annotator@example.com",
                "totalDuration": 11643,
                "tools": [tool] * 6,
                "classifications": [],
                "relations": [],
                "brushDataUrl": None,
                "medicalBrushDataUrl": None,
            },
        }
    )


async def _seed(store: Store, count: int) -> None:
    now = time.time()
    async with store.transaction() as conn:
        await conn.execute(
            projects.insert().values(
                id=PROJECT,
                name="bench",
                category_schema={},
                workflow={},
                created_at=now,
                updated_at=now,
            )
        )
    for start in range(0, count, _CHUNK):
        numbers = range(start, min(start + _CHUNK, count))
        async with store.transaction() as conn:
            await conn.execute(tasks.insert(), [_task_row(i, now) for i in numbers])
            await enqueue(conn, [_delivery(i, now) for i in numbers])


def _task_row(i: int, now: float) -> dict[str, Any]:
    return {
        "id": f"t{i:023x}",
        "asset_id": f"a{i:023x}",
        "project_id": PROJECT,
        "external_id": f"image-{i:08d}.png",
        "data_url": f"https://assets.example.com/{i:08d}.png",
        "dataset": [],
        "asset_metadata": {},
        "stage_id": "Review",
        "work_stage_id": "Label",
        "annotations": {},
        "stage_history": [],
        "updated_at": now,
        "total_duration": 0,
        "entered_at": now,
        "created_at": now,
        "version": 1,
    }


def _delivery(i: int, now: float) -> NewDelivery:
    return NewDelivery(
        id=f"dlv_{i:024x}",
        project_id=PROJECT,
        stage_id=STAGE,
        task_id=f"t{i:023x}",
        external_id=f"image-{i:08d}.png",
        body=_body(i),
        due_at=now,
        created_at=now,
    )


async def _stored_bodies(store: Store) -> list[tuple[str, bytes]]:
    async with store.transaction() as conn:
        rows = await conn.execute(sa.select(delivery_bodies.c.delivery_id, delivery_bodies.c.body))
        return [(row.delivery_id, bytes(row.body)) for row in rows]


# --- the two senders --------------------------------------------------------------------------


async def _baseline(url: str, bodies: list[tuple[str, bytes]], concurrency: int) -> float:
    work = iter(bodies)
    failed = 0

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal failed
        for delivery_id, body in work:  # one shared iterator: each body is sent once
            headers = {
                "Content-Type": "application/json",
                "X-Hookstage-Delivery": delivery_id,
                "X-Hub-Signature": hub_signature(SECRET, body),
            }
            async with http.post(url, data=body, headers=headers, allow_redirects=False) as r:
                await r.read()
                failed += r.status != 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"baseline: {failed} requests were not answered 200")
    return elapsed


async def _dispatch(store: Store, url: str, count: int, concurrency: int) -> float:
    endpoint = Endpoint(url, Signer(["hub"], secrets=[SECRET]))

    async def resolve(project_id: str, stage_id: str) -> Endpoint:
        return endpoint

    dispatcher = Dispatcher(
        store, resolve=resolve, concurrency=concurrency, per_endpoint=concurrency
    )
    started = time.perf_counter()
    running = asyncio.create_task(dispatcher.run())
    try:
        while True:  # poll the outcome: a read never waits for (or slows) the writer
            async with store.read() as conn:
                if await next_due_at(conn) is None:
                    break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        await dispatcher.stop(grace=5)
        await running
    async with store.read() as conn:
        states = await counts(conn, PROJECT, STAGE)
    if states["delivered"] != count:
        raise RuntimeError(f"dispatcher: {states} instead of {count} delivered")
    return elapsed


# --- the run ----------------------------------------------------------------------------------


async def _main(args: argparse.Namespace) -> None:
    # Here, not at the top: benchmarks.common imports this module (drain_receiver).
    from benchmarks.common import fast_receiver

    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        store = await open_store(Path(tmp) / "db.sqlite")
        try:
            async with fast_receiver(args.delay_ms / 1000) as (url, receiver):
                await _seed(store, args.count)
                bodies = await _stored_bodies(store)
                base = await _baseline(url, bodies, args.concurrency)
                drain = await _dispatch(store, url, args.count, args.concurrency)
        finally:
            await store.close()
    size = sum(len(body) for _, body in bodies) / len(bodies)
    print(
        f"bench_drain: {args.count} deliveries of {size:,.0f} B, concurrency {args.concurrency},"
        f" receiver: {receiver}, delay {args.delay_ms:g} ms"
    )
    print(f"{'sender':<34}{'deliveries/s':>14}{'seconds':>10}{'ratio':>8}")
    for name, seconds in (
        ("baseline (aiohttp, no recording)", base),
        ("dispatcher (every attempt stored)", drain),
    ):
        print(f"{name:<34}{args.count / seconds:>14,.0f}{seconds:>10.2f}{base / seconds:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20000, help="deliveries to drain")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="receiver's answer delay")
    args = parser.parse_args()
    if args.count < 1 or args.concurrency < 1:
        parser.error("--count and --concurrency must be positive")
    _run(_main(args))


if __name__ == "__main__":
    main()
