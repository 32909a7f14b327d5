"""What the dispatcher's tests share: receivers on real sockets (answering, black-holed),
a real SQLite store with a project, deliveries put straight into its outbox, dispatchers
started and stopped for a test, and polling with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage.dispatcher import Dispatcher, Endpoint
from hookstage.retry import RetryPolicy
from hookstage.signing import Signer
from hookstage.store import Statement, Store, open_store
from hookstage.store import deliveries as outbox
from hookstage.store.deliveries import NewDelivery
from hookstage.store.tables import projects, tasks

__all__ = [
    "BODY",
    "DEADLINE",
    "QUICK",
    "SECRET",
    "BlackHole",
    "Dispatchers",
    "Received",
    "Receiver",
    "WatchedStore",
    "black_holed",
    "closed_port",
    "enqueue",
    "get",
    "hub",
    "receiving",
    "resolver",
    "seeded_store",
    "task_row",
    "until",
    "until_state",
]

SECRET = "your_secret_key"
QUICK = RetryPolicy(schedule=(0, 0.01, 0.01), jitter=0)
# Seed-like bytes with unusual spacing and non-ASCII: any re-serialisation would show.
BODY = b'{"externalId": "Symbol Secondary Usage - White.png",  "x": 1.50, "n": "\xc3\xa9"}'
DEADLINE = 10.0


# --- receivers --------------------------------------------------------------------------------


@dataclass
class Received:
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver: records every request, answers from `statuses` (then `status`),
    after `gate` opens when one is set, and `seconds` later (a slow endpoint). `answers`
    holds extra headers per status."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    statuses: deque[int] = field(default_factory=deque)
    status: int = 200
    gate: asyncio.Event | None = None
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.headers.copy(), await request.read()))
        async with self.arrived:
            self.arrived.notify_all()
        if self.gate is not None:
            await self.gate.wait()
        if self.seconds:
            await asyncio.sleep(self.seconds)  # the endpoint's own pace, not a wait for state
        status = self.statuses.popleft() if self.statuses else self.status
        return web.Response(status=status, text="ok", headers=self.headers)

    async def wait_for(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.requests) >= count), DEADLINE
            )

    def ids(self) -> list[str]:
        return [r.headers["X-Hookstage-Delivery"] for r in self.requests]


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    found.url = f"http://{host}:{port}/hook"
    try:
        yield found
    finally:
        if found.gate is not None:
            found.gate.set()
        await runner.cleanup()


@dataclass
class BlackHole:
    """Accepts connections and reads requests, never answers."""

    url: str
    connections: int = 0


@contextlib.asynccontextmanager
async def black_holed() -> AsyncIterator[BlackHole]:
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hole.connections += 1
        writers.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hole = BlackHole(f"http://127.0.0.1:{port}/hook")
    try:
        yield hole
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- the store --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def seeded_store(path: str | Path) -> AsyncIterator[Store]:
    """A store at `path` (a file or a database URL) with project "p1" (deliveries only: no
    workflow)."""
    opened = await open_store(path)
    now = time.time()
    async with opened.transaction() as conn:
        await conn.execute(
            projects.insert().values(
                id="p1", name="P", category_schema={}, workflow={}, created_at=now, updated_at=now
            )
        )
    try:
        yield opened
    finally:
        await opened.close()


async def enqueue(
    store: Store, count: int, *, stage: str = "hook", body: bytes = BODY, due: float | None = None
) -> list[str]:
    """`count` deliveries to `stage`, one task each; returns their ids, oldest first."""
    now = time.time()
    due = now - count if due is None else due  # all due, in order
    ids = [f"dlv-{stage}-{i:04d}" for i in range(count)]
    async with store.transaction() as conn:
        await conn.execute(tasks.insert(), [task_row(f"{stage}-{i}", now) for i in range(count)])
        await outbox.enqueue(
            conn,
            [
                NewDelivery(ids[i], "p1", stage, f"{stage}-{i}", f"{i}.png", body, due + i, now)
                for i in range(count)
            ],
        )
    return ids


def task_row(task_id: str, now: float) -> dict[str, object]:
    """A task of project "p1" resting in Review, for deliveries to point at."""
    return {
        "id": task_id,
        "asset_id": f"a-{task_id}",
        "project_id": "p1",
        "external_id": f"{task_id}.png",
        "data_url": "https://example.com/a.png",
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


async def get(store: Store, delivery_id: str) -> outbox.DeliveryDetail:
    async with store.read() as conn:
        found = await outbox.get_delivery(conn, delivery_id)
    assert found is not None
    return found


async def until(check: Callable[[], Awaitable[bool]], within: float = DEADLINE) -> None:
    """Poll `check` until it holds, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def until_state(store: Store, ids: list[str], state: str) -> None:
    async def reached() -> bool:
        return all([(await get(store, i)).state == state for i in ids])

    await until(reached)


@dataclass
class WatchedStore(Store):
    """The same database; tells when a transaction has finished (a dispatcher's turn)."""

    finished: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with super().transaction() as conn:
            yield conn
        await self._finish()

    async def write(self, statements: list[Statement]) -> list[list[Any]]:
        found = await super().write(statements)
        if self.dialect != "postgresql":  # where it is a `transaction()`, counted there
            await self._finish()
        return found

    async def _finish(self) -> None:
        async with self.changed:
            self.finished += 1
            self.changed.notify_all()

    async def turns(self, count: int) -> None:
        """Wait until `count` more transactions have finished."""
        async with self.changed:
            target = self.finished + count
            await asyncio.wait_for(self.changed.wait_for(lambda: self.finished >= target), DEADLINE)


# --- dispatchers ------------------------------------------------------------------------------

Resolve = Callable[[str, str], Awaitable[Endpoint | None]]


def resolver(endpoints: dict[str, Endpoint | None]) -> Resolve:
    async def resolve(project_id: str, stage_id: str) -> Endpoint | None:
        assert project_id == "p1"
        return endpoints.get(stage_id)

    return resolve


class Dispatchers:
    """Starts dispatchers on a store (QUICK retries unless told); stops them all at exit."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.running: list[tuple[Dispatcher, asyncio.Task[None]]] = []

    async def __call__(
        self, endpoints: dict[str, Endpoint | None], *, on: Store | None = None, **options: object
    ) -> Dispatcher:
        options.setdefault("policy", QUICK)
        dispatcher = Dispatcher(on or self.store, resolve=resolver(endpoints), **options)  # type: ignore[arg-type]
        self.running.append((dispatcher, asyncio.create_task(dispatcher.run())))
        return dispatcher

    async def stop_all(self) -> None:
        for dispatcher, task in self.running:
            await dispatcher.stop(grace=0)
            await task


def hub(url: str, **options: object) -> Endpoint:
    return Endpoint(url, Signer(["hub"], secrets=[SECRET]), **options)  # type: ignore[arg-type]
