"""A running service with a delivery that failed, for the dashboard's tests.

The service runs in the test's event loop on a real socket, with a dispatcher that tries
each delivery once (so a failure is final at once) against a real receiver whose answer the
test sets (`receiver.status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from hookstage import service
from hookstage.demo import DEMO_SCHEMA, demo_assets, demo_workflow, labeled
from hookstage.dispatcher import Dispatcher, Endpoint
from hookstage.engine import Submission
from hookstage.retry import RetryPolicy
from hookstage.store.deliveries import DeliveryDetail

__all__ = ["SECRET", "WITHIN", "Dashboard", "Receiver", "running_dashboard", "wait_for"]

SECRET = "dashboard-stage-secret-7f3a9c2e"
WITHIN = 20.0


@dataclass
class Receiver:
    """Answers every webhook with ``status``; counts what it got."""

    status: int = 500
    received: int = 0

    async def hook(self, request: web.Request) -> web.Response:
        await request.read()
        self.received += 1
        if self.status >= 400:
            return web.Response(status=self.status, text="receiver says no: model offline")
        return web.json_response({"ok": True})


@dataclass
class Dashboard:
    url: str
    svc: service.Service
    receiver: Receiver
    project_id: str
    task_id: str
    delivery_id: str
    keys: dict[str, str] = field(default_factory=dict)  # role -> key value


@contextlib.asynccontextmanager
async def _receiving(receiver: Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/hook"
    finally:
        await runner.cleanup()


async def wait_for(svc: service.Service, delivery_id: str, attempts: int) -> DeliveryDetail:
    """The delivery once it has ``attempts`` attempts and is finished (polled, deadline)."""
    deadline = time.monotonic() + WITHIN
    while True:
        found = await svc.engine.get_delivery(delivery_id)
        if len(found.attempt_log) >= attempts and found.state != "pending":
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery {delivery_id}: {found.state}, {found.attempt_log}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_dashboard(tmp_path: Path) -> AsyncIterator[Dashboard]:
    """A project (Start -> Label -> Webhook -> Review -> Complete) with three tasks, one of
    them labelled and its delivery failed (the receiver answered 500)."""
    receiver = Receiver()
    async with _receiving(receiver) as hook_url:
        config = service.ServiceConfig(
            database=str(tmp_path / "hookstage.sqlite"), port=0, dispatch=False
        )
        async with service.running(config) as svc:
            engine = svc.engine

            async def resolve(project_id: str, stage_id: str) -> Endpoint | None:
                settings = await engine.webhook_settings(project_id, stage_id)
                return None if settings is None else service.endpoint(settings)

            dispatcher = Dispatcher(
                svc.store, resolve=resolve, policy=RetryPolicy(schedule=(0,)), poll_seconds=0.2
            )
            engine.on_enqueue = dispatcher.wake
            runner = asyncio.create_task(dispatcher.run())
            try:
                yield await _populate(svc, receiver, hook_url)
            finally:
                await dispatcher.stop(grace=1.0)
                await runner


async def _populate(svc: service.Service, receiver: Receiver, hook_url: str) -> Dashboard:
    engine = svc.engine
    keys = {role: (await engine.create_key(role, role))[1] for role in ("manager", "read-only")}
    project = await engine.create_project(
        name="Streets", category_schema=DEMO_SCHEMA, workflow_json=demo_workflow(hook_url, SECRET)
    )
    created = (await engine.import_assets(project.id, demo_assets(3))).created
    task_id = created[0]
    await engine.submit(task_id, Submission(**labeled(1)), user="ann@example.com", duration_ms=900)
    [delivery] = await engine.list_deliveries(project.id, task_id=task_id)
    await wait_for(svc, delivery.id, 1)
    return Dashboard(svc.url, svc, receiver, project.id, task_id, delivery.id, keys)
