"""Each limit on what one request may carry refuses with a 4xx that names it, and a refused
request stores nothing. Real sockets (uvicorn on port 0), a real SQLite file."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookstage.api import create_app
from hookstage.api.limits import (
    MAX_ANNOTATIONS,
    MAX_ASSETS,
    MAX_BODY,
    MAX_DEPTH,
    MAX_NAME,
    MAX_STRING,
)
from hookstage.demo import DEMO_SCHEMA, demo_assets, demo_workflow, labeled
from hookstage.engine import Engine
from hookstage.store import open_store
from tests.support.server import serve

SMALL_BODY = 64 * 1024


@dataclass
class Api:
    http: httpx.AsyncClient
    engine: Engine
    project_id: str
    task_id: str

    async def stored(self) -> tuple[int, int, int]:
        """Projects, tasks and deliveries: what a refused request must not change."""
        projects = await self.engine.list_projects()
        tasks = [sum((await self.engine.count_tasks(p.id)).values()) for p in projects]
        deliveries = len(await self.engine.list_deliveries(self.project_id))
        return len(projects), sum(tasks), deliveries

    async def refused(self, status: int, method: str, path: str, **kwargs: Any) -> str:
        before = await self.stored()
        response = await self.http.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        assert await self.stored() == before
        message: str = response.json()["error"]["message"]
        return message


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with _api(tmp_path, MAX_BODY) as found:
        yield found


@contextlib.asynccontextmanager
async def _api(tmp_path: Path, max_body: int) -> AsyncIterator[Api]:
    store = await open_store(tmp_path / "db.sqlite")
    try:
        engine = Engine(store)
        _, admin = await engine.create_key("admin", "admin")
        project = await engine.create_project(
            name="p",
            category_schema=DEMO_SCHEMA,
            workflow_json=demo_workflow("https://hooks.example.com/h", "s3cret-0123456789"),
        )
        [task_id] = (await engine.import_assets(project.id, demo_assets(1))).created
        app = create_app(engine, max_body=max_body)
        async with (
            serve(app) as url,
            httpx.AsyncClient(base_url=url, headers={"X-API-Key": admin}, timeout=30) as http,
        ):
            yield Api(http, engine, project.id, task_id)
    finally:
        await store.close()


def _assets(count: int) -> list[dict[str, str]]:
    return [{"externalId": f"a{n}", "data": "https://assets.example.com/a"} for n in range(count)]


async def test_a_body_over_the_limit_is_refused_with_413_naming_it(tmp_path: Path) -> None:
    async with _api(tmp_path, SMALL_BODY) as api:
        await _over_the_small_limit(api)


async def _over_the_small_limit(api: Api) -> None:
    path = f"/api/projects/{api.project_id}/assets"
    big = b"[" + b",".join(b'{"externalId":"x%d","data":"u"}' % n for n in range(4000)) + b"]"
    assert len(big) > SMALL_BODY
    message = await api.refused(
        413, "POST", path, content=big, headers={"content-type": "application/json"}
    )
    assert message.startswith(f"the request body is larger than the limit of {SMALL_BODY} bytes")
    assert "--max-body" in message

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    message = await api.refused(
        413, "POST", path, content=chunks(), headers={"content-type": "application/json"}
    )
    assert f"limit of {SMALL_BODY} bytes" in message


async def test_the_default_body_limit_is_10_mib(api: Api) -> None:
    body = {"name": "x" * (10 * 1024 * 1024), "workflow": []}
    message = await api.refused(413, "POST", "/api/projects", json=body)
    assert "limit of 10 MiB (10485760 bytes)" in message


async def test_too_many_tools_in_one_task_is_refused_naming_the_limit(api: Api) -> None:
    one = labeled(1)["tools"][0]
    body = {"tools": [one] * (MAX_ANNOTATIONS + 1)}
    message = await api.refused(422, "POST", f"/api/tasks/{api.task_id}/submit", json=body)
    assert "body.tools" in message
    assert str(MAX_ANNOTATIONS) in message


async def test_nesting_deeper_than_the_limit_is_refused(api: Api) -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        deep = {"child": deep}
    tool = {**labeled(1)["tools"][0], "extra": deep}
    message = await api.refused(
        422, "POST", f"/api/tasks/{api.task_id}/submit", json={"tools": [tool]}
    )
    assert message.startswith("body.tools[0].extra.child")
    assert message.endswith(f"nests deeper than the limit of {MAX_DEPTH} levels")

    # Deeper than a parser can follow: still a 4xx that names the limit, never a 500.
    hostile = "[" * 100_000 + "]" * 100_000
    message = await api.refused(
        400,
        "PUT",
        f"/api/projects/{api.project_id}/workflow",
        content=hostile,
        headers={"content-type": "application/json"},
    )
    assert f"limit of {MAX_DEPTH} levels" in message


async def test_a_string_longer_than_the_limit_is_refused(api: Api) -> None:
    asset = {**_assets(1)[0], "metadata": {"note": "n" * (MAX_STRING + 1)}}
    message = await api.refused(422, "POST", f"/api/projects/{api.project_id}/assets", json=[asset])
    assert message == (
        f"body[0].metadata.note: is a string longer than the limit of {MAX_STRING} characters"
    )


async def test_too_many_assets_in_one_import_is_refused(api: Api) -> None:
    message = await api.refused(
        422, "POST", f"/api/projects/{api.project_id}/assets", json=_assets(MAX_ASSETS + 1)
    )
    assert f"more than the limit of {MAX_ASSETS} per request" in message


async def test_names_longer_than_the_limit_are_refused(api: Api) -> None:
    name = "n" * (MAX_NAME + 1)
    message = await api.refused(
        422,
        "POST",
        "/api/projects",
        json={
            "name": name,
            "workflow": demo_workflow("https://h.example.com", "s3cret-0123456789"),
        },
    )
    assert f"at most {MAX_NAME} characters" in message
    message = await api.refused(422, "POST", "/api/keys", json={"name": name, "role": "read-only"})
    assert f"at most {MAX_NAME} characters" in message
