"""Every `serve` and `worker` process reports itself (a heartbeat): the workers table,
`GET /api/workers` and `/metrics` show the ones alive; one that stops cleanly leaves."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx

from hookstage import __version__, service
from hookstage.store import Store, open_store
from hookstage.store.workers import Worker, alive, beat, leave, prune

T0 = 1_700_000_000.0
DEADLINE = 15.0


def _worker(worker_id: str, *, beat_seconds: float = 5.0, seen_at: float = T0) -> Worker:
    return Worker(
        id=worker_id,
        kind="worker",
        host="host-a",
        pid=1234,
        version="0.1.0",
        dispatching=True,
        beat_seconds=beat_seconds,
        started_at=T0,
        seen_at=seen_at,
    )


async def _alive(store: Store, now: float) -> list[str]:
    async with store.read() as conn:
        return [w.id for w in await alive(conn, now=now)]


async def test_a_process_is_alive_until_it_misses_three_of_its_beats(store: Store) -> None:
    slow, quick = _worker("slow", beat_seconds=5.0), _worker("quick", beat_seconds=1.0)
    async with store.transaction() as conn:
        await beat(conn, slow)
        await beat(conn, quick)
        await beat(conn, replace(slow, seen_at=T0 + 10))  # a later beat moves it on
    assert await _alive(store, T0 + 3) == ["quick", "slow"]
    assert await _alive(store, T0 + 3.5) == ["slow"]
    assert await _alive(store, T0 + 25) == ["slow"]
    assert await _alive(store, T0 + 25.5) == []


async def test_a_process_that_leaves_is_gone_and_old_rows_are_pruned(store: Store) -> None:
    async with store.transaction() as conn:
        await beat(conn, _worker("stopped"))
        await beat(conn, _worker("killed", seen_at=T0 - 86400))
        await beat(conn, _worker("running"))
        await leave(conn, "stopped")
        assert await prune(conn, before=T0 - 3600) == 1
    assert await _alive(store, T0) == ["running"]


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def test_serve_and_worker_processes_are_listed_while_they_run(database: str) -> None:
    config = service.ServiceConfig(database=database, port=0, dispatch=False, heartbeat_seconds=1)
    async with service.running(config) as api_process:
        _, key = await api_process.engine.create_key("ops", "read-only")
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        worker = asyncio.create_task(service.work(config, on_ready=ready.set_result))
        try:
            worker_id = await asyncio.wait_for(ready, DEADLINE)
            async with httpx.AsyncClient(
                base_url=api_process.url, headers={"Authorization": f"Bearer {key}"}
            ) as http:
                listed: list[dict[str, Any]] = []

                async def both_listed() -> bool:
                    listed[:] = (await http.get("/api/workers")).json()["workers"]
                    return len(listed) == 2

                await _until(both_listed)
                by_kind = {w["kind"]: w for w in listed}
                assert by_kind["worker"]["id"] == worker_id
                assert by_kind["worker"]["dispatching"] is True
                assert by_kind["serve"]["dispatching"] is False
                for shown in listed:
                    assert shown["pid"] == os.getpid()
                    assert shown["host"] == socket.gethostname()
                    assert shown["version"] == __version__
                    assert shown["heartbeatSeconds"] == 1
                scraped = (await http.get("/metrics")).text
                assert 'hookstage_processes{kind="worker",dispatching="true"} 1' in scraped
                assert 'hookstage_processes{kind="serve",dispatching="false"} 1' in scraped
                assert f'hookstage_process_seen_age_seconds{{worker="{worker_id}"' in scraped

                worker.cancel()  # as SIGTERM does in `hookstage worker`
                with contextlib.suppress(asyncio.CancelledError):
                    await worker

                async def worker_gone() -> bool:
                    shown = (await http.get("/api/workers")).json()["workers"]
                    return [w["kind"] for w in shown] == ["serve"]

                await _until(worker_gone)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
    store = await open_store(database)
    try:
        assert await _alive(store, time.time()) == []  # serve left too
    finally:
        await store.close()
