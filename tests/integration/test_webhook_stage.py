"""The Webhook stage end to end: API -> engine -> outbox (SQLite, PostgreSQL) -> dispatcher ->
a real receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from hookstage import service
from hookstage.client import ApiError, Client
from hookstage.demo import DEMO_SCHEMA, demo_assets, demo_workflow, labeled
from tests.support.inbox import WITHIN, Inbox, listening
from tests.support.samples import seed_signature

SECRET = "stage-secret-0123456789"


@dataclass
class World:
    api: Client
    svc: service.Service
    inbox: Inbox
    project_id: str


@pytest.fixture
async def world(database: str) -> AsyncIterator[World]:
    inbox = Inbox()
    async with listening(inbox, SECRET) as hook_url:
        config = service.ServiceConfig(database=database, port=0, allow_egress=("loopback",))
        async with service.running(config) as svc:
            _, key = await svc.engine.create_key("test", "admin")
            async with Client(svc.url, key) as api:
                project = await api.create_project(
                    "p", DEMO_SCHEMA, demo_workflow(hook_url, SECRET)
                )
                await api.import_assets(project["id"], demo_assets(3))
                yield World(api, svc, inbox, project["id"])


async def _label_one(world: World) -> tuple[str, dict[str, Any]]:
    task_id = (await world.api.tasks(world.project_id, stage="Label"))[0]["taskId"]
    annotations = labeled(7)
    await world.api.submit(task_id, annotations, user="ann@example.com", duration=4321)
    return task_id, annotations


async def test_a_submitted_task_arrives_signed_as_the_export_plus_two_differences(
    world: World,
) -> None:
    task_id, annotations = await _label_one(world)
    (arrived,) = await world.inbox.wait_for(1)

    assert arrived.verdict == "valid"
    headers = dict(arrived.headers)
    assert headers["X-Hub-Signature"] == seed_signature(arrived.body, SECRET)
    webhook = orjson.loads(arrived.body)
    export = [
        orjson.loads(line)
        async for line in world.api.lines(
            f"/api/projects/{world.project_id}/export", params={"format": "ndjson"}
        )
    ]
    exported = next(e for e in export if e["task"]["taskId"] == task_id)
    # The export is read after the task moved on to Review: its history has one more entry,
    # the Webhook stage it passed; the webhook left as the task entered that stage.
    passed = exported["task"]["stageHistory"].pop()
    assert (passed["stageId"], passed["stage"], passed["duration"]) == ("webhook", "Webhook", 0)
    batch_ids = exported["batches"]
    batch_names = webhook["batches"]
    assert [b.startswith("Batch ") for b in batch_names] == [True] * len(batch_ids)
    assert webhook["task"].pop("stageId") == "Label"
    assert "stageId" not in exported["task"]
    webhook["batches"] = batch_ids
    assert webhook == exported
    assert webhook["task"]["tools"] == annotations["tools"]
    assert webhook["task"]["updatedBy"] == "ann@example.com"
    assert webhook["task"]["totalDuration"] == 4321

    task = await world.api.call("GET", f"/api/tasks/{task_id}")
    assert task["currentStage"]["id"] == "review"


async def test_the_same_delivery_id_and_bytes_on_redelivery(world: World) -> None:
    await _label_one(world)
    (first,) = await world.inbox.wait_for(1)
    delivery_id = dict(first.headers)["X-Hookstage-Delivery"]
    # Redelivery is of a finished delivery: until its answer is recorded, it still pends.
    await _recorded(world, delivery_id, attempts=1)
    await world.api.call("POST", f"/api/deliveries/{delivery_id}/redeliver")
    again = (await world.inbox.wait_for(2))[1]
    assert dict(again.headers)["X-Hookstage-Delivery"] == delivery_id
    assert dict(again.headers)["X-Hookstage-Attempt"] == "2"
    assert again.body == first.body
    detail = await _recorded(world, delivery_id, attempts=2)
    assert [a["statusCode"] for a in detail["attemptLog"]] == [200, 200]
    log = await world.api.call(
        "GET",
        f"/api/projects/{world.project_id}/stages/webhook/log",
        params={"format": "json"},
    )
    assert len(log) == 2
    assert all("[200]" in line and "street-000" in line for line in log)


async def _recorded(world: World, delivery_id: str, *, attempts: int) -> Any:
    """The delivery once `attempts` attempts are recorded (they are written in groups)."""
    async with asyncio.timeout(WITHIN):
        while True:
            detail = await world.api.call("GET", f"/api/deliveries/{delivery_id}")
            if len(detail["attemptLog"]) >= attempts:
                return detail
            await asyncio.sleep(0.02)  # polling the API: the recording happens elsewhere


async def test_a_step_that_fails_validation_changes_nothing_and_sends_nothing(
    world: World,
) -> None:
    task_id = (await world.api.tasks(world.project_id, stage="Label"))[0]["taskId"]
    before = await world.api.call("GET", f"/api/tasks/{task_id}")
    bad = labeled(1)
    bad["tools"][0]["bounding-box"] = {"x": 1, "y": 2}  # no width, no height
    with pytest.raises(ApiError) as refused:
        await world.api.submit(task_id, bad, user="ann@example.com", duration=10)
    assert refused.value.status == 422
    assert "tools[0]" in str(refused.value)

    assert await world.api.call("GET", f"/api/tasks/{task_id}") == before
    deliveries = await world.api.call("GET", f"/api/projects/{world.project_id}/deliveries")
    assert deliveries["deliveries"] == []
    # A valid submit afterwards is the first and only thing the receiver sees.
    await world.api.submit(task_id, labeled(1), user="ann@example.com", duration=10)
    (only,) = await world.inbox.wait_for(1)
    assert orjson.loads(only.body)["task"]["taskId"] == task_id
