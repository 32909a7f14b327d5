"""A Webhook stage's delivery state through the API and the CLI: 410 Gone disables the
endpoint (shown by `GET .../stages/{stage}`), a manager enables it (API or `hookstage
enable`), and `hookstage rerun --wait` re-sends with progress, safely repeatable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hookstage import service
from hookstage.client import ApiError, Client
from hookstage.demo import DEMO_SCHEMA
from tests.support.delivery import Receiver, receiving, until
from tests.support.process import run_cli


@dataclass
class Setup:
    svc: service.Service
    api: Client
    key: str
    receiver: Receiver
    project_id: str

    async def stage(self) -> Any:
        return await self.api.call("GET", f"/api/projects/{self.project_id}/stages/hook")

    async def cli(self, *args: str) -> tuple[int, str]:
        done = await asyncio.to_thread(
            run_cli, *args, "--project", self.project_id, "--url", self.svc.url, "--key", self.key
        )
        return done.returncode, done.stdout + done.stderr


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    config = service.ServiceConfig(
        database=str(tmp_path / "db.sqlite"), port=0, allow_egress=("loopback",)
    )
    async with receiving() as receiver, service.running(config) as svc:
        _, key = await svc.engine.create_key("test", "admin")
        async with Client(svc.url, key) as api:
            flow = [
                {"id": "Start", "type": "Start", "name": "Start", "next": ["hook"]},
                {"id": "hook", "type": "Webhook", "name": "Hook", "next": ["Complete"],
                 "url": receiver.url},
                {"id": "Complete", "type": "Complete", "name": "Complete", "next": []},
            ]  # fmt: skip
            project = await api.create_project("p", DEMO_SCHEMA, flow)
            yield Setup(svc, api, key, receiver, project["id"])


async def test_410_shows_the_endpoint_disabled_until_a_manager_enables_it(setup: Setup) -> None:
    setup.receiver.status = 410  # gone: every request in flight gets it too
    assets = [{"externalId": f"a-{n}.png", "data": "https://example.com/a.png"} for n in range(3)]
    await setup.api.import_assets(setup.project_id, assets)

    async def disabled() -> bool:
        return bool((await setup.stage())["endpoint"]["state"] == "disabled")

    await until(disabled)
    shown = await setup.stage()
    reason = shown["endpoint"]["disabledReason"]
    assert "answered 410 Gone to delivery dlv_" in reason
    assert reason.rsplit(" ", 1)[-1] in setup.receiver.ids()
    assert shown["deliveries"] == {"pending": 3, "delivered": 0, "failed": 0}
    assert shown["mode"] == "pass"

    _, labeler = await setup.svc.engine.create_key("labeler", "labeler")
    async with Client(setup.svc.url, labeler) as weak:
        with pytest.raises(ApiError) as refused:
            await weak.call("POST", f"/api/projects/{setup.project_id}/stages/hook/enable")
    assert refused.value.status == 403

    setup.receiver.status = 200  # the receiver's owner fixed it
    code, output = await setup.cli("enable", "--stage", "hook")
    assert code == 0, output
    assert "enabled" in output

    async def delivered() -> bool:
        return bool((await setup.stage())["deliveries"]["delivered"] == 3)

    await until(delivered)
    shown = await setup.stage()
    assert shown["endpoint"]["state"] == "enabled"
    assert shown["endpoint"]["enabledAt"] is not None
    assert len(set(setup.receiver.ids())) == 3


async def test_rerun_waits_with_progress_and_is_safe_to_repeat(setup: Setup) -> None:
    assets = [{"externalId": f"b-{n}.png", "data": "https://example.com/b.png"} for n in range(2)]
    await setup.api.import_assets(setup.project_id, assets)
    await setup.receiver.wait_for(2)

    async def delivered() -> bool:
        return bool((await setup.stage())["deliveries"]["delivered"] == 2)

    await until(delivered)
    code, output = await setup.cli("rerun", "--stage", "hook", "--wait")
    assert code == 0, output
    assert "queued 2 deliveries; the stage now has 2 delivered, 0 failed, 0 pending" in output
    assert len(setup.receiver.requests) == 4
    assert sorted(setup.receiver.ids()[2:]) == sorted(setup.receiver.ids()[:2])  # same ids

    code, output = await setup.cli("rerun", "--stage", "hook", "--only-failed")
    assert (code, output.strip()) == (0, "queued 0 deliveries")
    assert len(setup.receiver.requests) == 4
