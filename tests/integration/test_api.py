"""The HTTP API over real sockets (uvicorn on port 0), on SQLite and on PostgreSQL.

No dispatcher runs here: deliveries are rows, and the one test that needs an attempt records
it the way a worker would.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from hookstage import workflow
from hookstage.api import create_app
from hookstage.engine import Engine
from hookstage.retry import Decision
from hookstage.store import deliveries as outbox
from hookstage.store import open_store
from tests.support.server import serve

SECRET = "stage-secret-never-in-a-response-7f3a"
HOOK_URL = "https://hooks.example.com/ango"
WEBHOOK = workflow.DEFAULT_WEBHOOK_ID
REVIEW = workflow.DEFAULT_REVIEW_ID
CAR = "7d38d842079133453b4b328"
WEATHER = "9b22c3d4e5f607182930a4b"
SCHEMA: dict[str, Any] = {
    "tools": [{"title": "Car", "tool": "bounding-box", "schemaId": CAR, "classifications": []}],
    "classifications": [
        {
            "title": "Weather",
            "tool": "radio",
            "schemaId": WEATHER,
            "classifications": [],
            "options": [
                {"value": "Sunny", "schemaId": "9b22c3d4e5f607182930a4c"},
                {"value": "Rainy", "schemaId": "9b22c3d4e5f607182930a4d"},
            ],
        }
    ],
    "relations": [],
}
HOLD_WORKFLOW: list[dict[str, Any]] = [
    {"id": "Start", "type": "Start", "name": "Start", "next": ["hold"]},
    {"id": "hold", "type": "Hold", "name": "Waiting room", "next": ["Label"]},
    {"id": "Label", "type": "Label", "name": "Label", "next": ["Complete"]},
    {"id": "Complete", "type": "Complete", "name": "Complete", "next": []},
]


def default_workflow() -> list[dict[str, object]]:
    built = workflow.default_workflow(HOOK_URL, secret=SECRET)
    return workflow.to_json(built, reveal_secrets=True)


def asset(n: int, batch: str = "Batch 1") -> dict[str, Any]:
    return {
        "externalId": f"street-{n:04d}.jpg",
        "data": f"https://assets.example.com/street-{n:04d}.jpg",
        "metadata": {"width": 1280, "height": 720},
        "batches": [batch],
        "contextData": {"camera": "front"},
    }


def labeled(n: int) -> dict[str, Any]:
    return {
        "tools": [
            {
                "bounding-box": {"x": 10.5 + n, "y": 20.25, "height": 8.0, "width": 12.0},
                "objectId": f"{n:023x}",
                "schemaId": CAR,
                "title": "Car",
                "classifications": [],
            }
        ],
        "classifications": [
            {
                "answer": "Sunny",
                "objectId": f"{n + 1_000_000:023x}",
                "schemaId": WEATHER,
                "title": "Weather",
                "tool": "radio",
                "classifications": [],
            }
        ],
        "relations": [],
    }


@dataclass
class Api:
    """A client of the running API, with the admin key, that keeps every response it got."""

    url: str
    engine: Engine
    admin: str
    http: httpx.AsyncClient
    anonymous: httpx.AsyncClient  # sends no key
    seen: list[httpx.Response] = field(default_factory=list)

    async def key(self, role: str, name: str | None = None) -> str:
        body = {"name": name or f"{role}@example.com", "role": role}
        created = await self.ok("POST", "/api/keys", json=body, status=201)
        value: str = created["key"]
        return value

    async def as_role(self, role: str, name: str | None = None) -> dict[str, str]:
        """Headers that replace the admin key with a new key of this role."""
        return {"Authorization": f"Bearer {await self.key(role, name)}"}

    async def ok(self, method: str, path: str, *, status: int = 200, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    async def fail(self, method: str, path: str, status: int, **kwargs: Any) -> dict[str, Any]:
        response = await self.http.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        error: dict[str, Any] = response.json()["error"]
        assert isinstance(error["message"], str)
        assert isinstance(error["problems"], list)
        return error

    async def project(self, flow: Any = None, name: str = "Streets") -> dict[str, Any]:
        body = {"name": name, "categorySchema": SCHEMA, "workflow": flow or default_workflow()}
        created: dict[str, Any] = await self.ok("POST", "/api/projects", json=body, status=201)
        return created

    async def imported(self, project_id: str, count: int, **kwargs: Any) -> list[str]:
        assets = [asset(n, **kwargs) for n in range(1, count + 1)]
        done = await self.ok("POST", f"/api/projects/{project_id}/assets", json=assets, status=201)
        ids: list[str] = done["taskIds"]
        return ids


def _shown(response: httpx.Response) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{headers}\n{response.text}"


@pytest.fixture
async def api(database: str) -> AsyncIterator[Api]:
    async with _running(database, None) as found:
        yield found


@contextlib.asynccontextmanager
async def _running(
    database: str, dispatcher_state: Callable[[], dict[str, Any]] | None
) -> AsyncIterator[Api]:
    store = await open_store(database)
    engine = Engine(store)
    _, admin = await engine.create_key("admin@example.com", "admin")
    seen: list[httpx.Response] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        seen.append(response)

    try:
        async with (
            serve(create_app(engine, dispatcher_state=dispatcher_state)) as url,
            httpx.AsyncClient(
                base_url=url,
                headers={"Authorization": f"Bearer {admin}"},
                event_hooks={"response": [keep]},
            ) as http,
            httpx.AsyncClient(base_url=url, event_hooks={"response": [keep]}) as anonymous,
        ):
            yield Api(url, engine, admin, http, anonymous, seen)
    finally:
        await store.close()
    # No response of the test, error or not, ever carried the stage secret or the admin key.
    for response in seen:
        assert SECRET not in _shown(response), response.request.url
        assert admin not in _shown(response), response.request.url


# -- health, docs ---------------------------------------------------------------------------


async def test_health_needs_no_key_and_shows_the_dispatcher(database: str) -> None:
    async with _running(database, lambda: {"running": True, "pending": 3}) as api:
        anonymous = api.anonymous
        health = await anonymous.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["dispatcher"] == {"running": True, "pending": 3}
        assert isinstance(health.json()["version"], str)
        schema = (await anonymous.get("/openapi.json")).json()
        assert "/api/tasks/{task_id}/submit" in schema["paths"]
        assert "/v2/project/{project_id}/rerun-webhook" in schema["paths"]
        docs = await anonymous.get("/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()


# -- projects -------------------------------------------------------------------------------


async def test_a_project_shows_its_workflow_with_the_secret_masked(api: Api) -> None:
    created = await api.project()
    shown = await api.ok("GET", f"/api/projects/{created['id']}")
    hook = next(s for s in shown["workflow"] if s["type"] == "Webhook")
    assert hook["auth"] == {"type": "secret", "secret": {"set": True, "last4": SECRET[-4:]}}
    assert hook["url"] == HOOK_URL
    assert shown["name"] == "Streets"
    assert shown["categorySchema"]["tools"][0]["schemaId"] == CAR
    assert shown["taskCounts"] == {s["id"]: 0 for s in default_workflow()}
    listed = await api.ok("GET", "/api/projects")
    assert [p["id"] for p in listed["projects"]] == [created["id"]]


async def test_a_workflow_saved_back_masked_keeps_its_secret(api: Api) -> None:
    project = await api.project()
    path = f"/api/projects/{project['id']}"
    flow = (await api.ok("GET", path))["workflow"]
    for stage in flow:
        if stage["id"] == REVIEW:
            stage["name"] = "Second look"
    saved = await api.ok("PUT", f"{path}/workflow", json=flow)
    assert [s["name"] for s in saved["stages"]][3] == "Second look"
    settings = await api.engine.webhook_settings(project["id"], WEBHOOK)
    assert isinstance(settings, workflow.WebhookSettings)
    assert isinstance(settings.auth, workflow.SecretAuth)
    assert settings.auth.secret.reveal() == SECRET

    # Refusals of a workflow that carries the secret name the problem, never the secret
    # (the fixture checks every response for it).
    broken = default_workflow()
    broken[2]["next"] = []
    error = await api.fail("PUT", f"{path}/workflow", 422, json=broken)
    assert error["problems"][0]["path"] == "body"
    moved = [
        {**s, "url": "https://elsewhere.example.com/"} if s["id"] == WEBHOOK else s for s in flow
    ]
    error = await api.fail("PUT", f"{path}/workflow", 422, json=moved)
    assert "secret" in error["problems"][0]["message"]
    await api.fail("PUT", "/api/projects/nope/workflow", 404, json=default_workflow())


async def test_a_bad_workflow_is_refused_naming_the_problem(api: Api) -> None:
    broken = default_workflow()
    broken[1]["next"] = ["nowhere"]
    error = await api.fail(
        "POST",
        "/api/projects",
        422,
        json={"name": "Broken", "categorySchema": SCHEMA, "workflow": broken},
    )
    assert error["problems"][0]["path"] == "body.workflow"
    assert "nowhere" in error["problems"][0]["message"]
    missing = await api.fail("POST", "/api/projects", 422, json={"name": "No workflow"})
    assert {"path": "body.workflow", "message": "required"} in missing["problems"]
    unnamed = {"name": 5, "categorySchema": SCHEMA, "workflow": default_workflow()}
    error = await api.fail("POST", "/api/projects", 422, json=unnamed)
    assert error["problems"] == [
        {"path": "body.name", "message": "expected a string, got a number"}
    ]
    bad_schema = {"name": "x", "categorySchema": {"tools": [{}]}, "workflow": default_workflow()}
    error = await api.fail("POST", "/api/projects", 422, json=bad_schema)
    assert "body.categorySchema.tools[0].schemaId" in [p["path"] for p in error["problems"]]
    assert (await api.ok("GET", "/api/projects"))["projects"] == []


# -- import and listing ----------------------------------------------------------------------


async def test_import_takes_json_or_ndjson_and_refuses_repeats(api: Api) -> None:
    project = await api.project()
    path = f"/api/projects/{project['id']}/assets"
    first = await api.ok("POST", path, json=[asset(1), asset(2), asset(3)], status=201)
    assert first["created"] == 3
    assert len(first["taskIds"]) == 3
    ndjson = b"\n".join(orjson.dumps(asset(n)) for n in (3, 4, 5)) + b"\n"
    headers = {"Content-Type": "application/x-ndjson"}
    repeat = await api.fail("POST", path, 409, content=ndjson, headers=headers)
    assert "street-0003.jpg" in repeat["message"]
    assert repeat["problems"] == [{"path": "body[0].externalId", "message": "already imported"}]
    skipped = await api.ok(
        "POST", path, content=ndjson, headers=headers, params={"skipExisting": "true"}, status=201
    )
    assert skipped["created"] == 2
    assert skipped["skipped"] == ["street-0003.jpg"]
    shown = await api.ok("GET", f"/api/projects/{project['id']}")
    assert shown["taskCounts"]["Label"] == 5
    assert shown["taskTotal"] == 5


async def test_import_errors_name_the_asset_and_import_nothing(api: Api) -> None:
    project = await api.project()
    path = f"/api/projects/{project['id']}/assets"
    bad = [asset(1), {"externalId": "no-url.jpg"}]
    error = await api.fail("POST", path, 422, json=bad)
    assert "body[1].data" in [p["path"] for p in error["problems"]]
    broken = b'{"externalId": "a.jpg", "data": "https://x.example/a.jpg"}\n{"externalId": '
    error = await api.fail(
        "POST", path, 400, content=broken, headers={"Content-Type": "application/x-ndjson"}
    )
    assert "line 2" in error["message"]
    error = await api.fail("POST", path, 422, json={"externalId": "a.jpg"})
    assert error["problems"] == [{"path": "body", "message": "expected a JSON list of assets"}]
    error = await api.fail(
        "POST", path, 415, content=b"a.jpg", headers={"Content-Type": "text/plain"}
    )
    assert "application/x-ndjson" in error["message"]
    tasks = await api.ok("GET", f"/api/projects/{project['id']}/tasks")
    assert tasks == {"tasks": [], "next": None}


async def test_tasks_list_by_stage_and_batch_in_pages(api: Api) -> None:
    project = await api.project()
    path = f"/api/projects/{project['id']}/assets"
    ids = await api.imported(project["id"], 4, batch="A")
    more = await api.ok("POST", path, json=[asset(n, batch="B") for n in (5, 6, 7)], status=201)
    ids += more["taskIds"]
    path = f"/api/projects/{project['id']}/tasks"
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = await api.ok("GET", path, params=params)
        pages.append([t["taskId"] for t in page["tasks"]])
        if page["next"] is None:
            break
        params["after"] = page["next"]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [task_id for page in pages for task_id in page] == sorted(ids)
    in_b = await api.ok("GET", path, params={"batch": "B"})
    assert sorted(t["externalId"] for t in in_b["tasks"]) == [
        f"street-{n:04d}.jpg" for n in range(5, 8)
    ]
    assert all(t["batches"] == ["B"] and t["stage"] == "Label" for t in in_b["tasks"])
    by_name = await api.ok("GET", path, params={"stage": "Label"})
    assert len(by_name["tasks"]) == 7
    assert (await api.ok("GET", path, params={"stage": "Complete"}))["tasks"] == []
    error = await api.fail("GET", path, 422, params={"stage": "Nope"})
    assert error["problems"][0]["path"] == "query.stage"
    error = await api.fail("GET", path, 422, params={"limit": 0})
    assert error["problems"][0]["path"] == "query.limit"


# -- steps ----------------------------------------------------------------------------------


async def test_submit_moves_the_task_on_and_enqueues_the_webhook(api: Api) -> None:
    project = await api.project()
    [task_id, _] = await api.imported(project["id"], 2)
    moved = await api.ok(
        "POST", f"/api/tasks/{task_id}/submit", json={**labeled(1), "duration": 1500}
    )
    assert moved["currentStage"]["id"] == REVIEW
    assert moved["task"]["updatedBy"] == "admin@example.com"
    assert moved["task"]["tools"] == labeled(1)["tools"]
    assert moved["task"]["totalDuration"] == 1500

    listed = await api.ok("GET", f"/api/projects/{project['id']}/deliveries")
    [info] = listed["deliveries"]
    assert (info["taskId"], info["stageId"], info["state"]) == (task_id, WEBHOOK, "pending")
    detail = await api.ok("GET", f"/api/deliveries/{info['id']}")
    body = orjson.loads(detail["body"])

    # The body is the export view of the task as it entered the Webhook stage, with the two
    # differences: batch names instead of ids, and task.stageId.
    export = await api.ok("GET", f"/api/tasks/{task_id}")
    history = [h for h in export["task"]["stageHistory"] if h["stageId"] != WEBHOOK]
    expected_task = {**export["task"], "stageId": "Label", "stageHistory": history}
    expected = {k: v for k, v in export.items() if k not in {"projectId", "currentStage", "task"}}
    assert body == {**expected, "batches": ["Batch 1"], "task": expected_task}
    assert export["batches"] != ["Batch 1"]
    assert "stageId" not in export["task"]
    assert list(body["task"]).index("stageId") == list(body["task"]).index("stage") + 1


async def test_review_accepts_or_rejects(api: Api) -> None:
    project = await api.project()
    first, second, third = await api.imported(project["id"], 3)
    for n, task_id in enumerate((first, second), start=1):
        await api.ok("POST", f"/api/tasks/{task_id}/submit", json=labeled(n))
    accepted = await api.ok(
        "POST", f"/api/tasks/{first}/review", json={"accept": True, "user": "rev@example.com"}
    )
    assert accepted["currentStage"]["name"] == "Complete"
    assert accepted["task"]["updatedBy"] == "rev@example.com"
    assert accepted["task"]["tools"] == labeled(1)["tools"]
    rejected = await api.ok(
        "POST", f"/api/tasks/{second}/review", json={"accept": "reject", "tools": []}
    )
    assert rejected["currentStage"]["id"] == "Label"
    assert rejected["task"]["tools"] == []
    error = await api.fail("POST", f"/api/tasks/{third}/review", 409, json={"accept": True})
    assert "Review" in error["message"]
    error = await api.fail("POST", f"/api/tasks/{first}/review", 422, json={"accept": "maybe"})
    assert error["problems"][0]["path"] == "body.accept"


async def test_requeue_and_release_move_tasks_between_stages(api: Api) -> None:
    project = await api.project(HOLD_WORKFLOW, name="Held")
    pid = project["id"]
    one, two, three = await api.imported(pid, 3)
    await api.ok("POST", f"/api/projects/{pid}/assets", json=[asset(9, batch="late")], status=201)
    counts = (await api.ok("GET", f"/api/projects/{pid}"))["taskCounts"]
    assert counts["hold"] == 4
    released = await api.ok(
        "POST", f"/api/projects/{pid}/stages/hold/release", json={"taskIds": [two]}
    )
    assert released == {"released": 1, "taskIds": [two]}
    by_batch = await api.ok(
        "POST", f"/api/projects/{pid}/stages/hold/release", json={"batch": "late"}
    )
    assert by_batch["released"] == 1
    rest = await api.ok("POST", f"/api/projects/{pid}/stages/hold/release")
    assert sorted(rest["taskIds"]) == sorted([one, three])
    error = await api.fail("POST", f"/api/projects/{pid}/stages/Label/release", 422, json={})
    assert "Hold" in error["message"]

    back = await api.ok("POST", f"/api/tasks/{two}/requeue", json={"stageId": "hold"})
    assert back["currentStage"] == {
        "id": "hold",
        "name": "Waiting room",
        "type": "Hold",
        "enteredAt": back["currentStage"]["enteredAt"],
    }
    assert back["task"]["stageHistory"][-1]["completedBy"] == "admin@example.com"
    await api.fail("POST", f"/api/tasks/{two}/requeue", 404, json={"stageId": "gone"})
    error = await api.fail("POST", f"/api/tasks/{two}/requeue", 422, json={})
    assert error["problems"] == [{"path": "body.stageId", "message": "required"}]


# -- export ---------------------------------------------------------------------------------


async def test_export_in_json_and_ndjson_equals_the_tasks(api: Api) -> None:
    project = await api.project()
    pid = project["id"]
    ids = await api.imported(pid, 5)
    await api.ok("POST", f"/api/tasks/{ids[0]}/submit", json=labeled(1))
    views = [await api.ok("GET", f"/api/tasks/{task_id}") for task_id in sorted(ids)]
    expected = [
        {k: v for k, v in v.items() if k not in {"projectId", "currentStage"}} for v in views
    ]

    as_json = await api.http.get(f"/api/projects/{pid}/export")
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json() == expected
    as_ndjson = await api.http.get(f"/api/projects/{pid}/export", params={"format": "ndjson"})
    assert as_ndjson.headers["content-type"] == "application/x-ndjson"
    assert [orjson.loads(line) for line in as_ndjson.content.splitlines()] == expected

    at_review = await api.ok("GET", f"/api/projects/{pid}/export", params={"stage": REVIEW})
    assert [row["task"]["taskId"] for row in at_review] == [ids[0]]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await api.ok("GET", f"/api/projects/{pid}/export", params={"updatedSince": later}) == []
    error = await api.fail(
        "GET", f"/api/projects/{pid}/export", 422, params={"updatedSince": "yesterday"}
    )
    assert error["problems"][0]["path"] == "query.updatedSince"
    await api.fail("GET", "/api/projects/nope/export", 404)


# -- keys and roles -------------------------------------------------------------------------


async def test_calls_without_a_valid_key_are_refused(api: Api) -> None:
    anonymous = api.anonymous
    for headers in ({}, {"Authorization": "Bearer hs_not-a-key"}, {"X-API-Key": "nope"}):
        response = await anonymous.get("/api/projects", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["error"]["message"]
    reader = await api.key("read-only")
    assert (await anonymous.get("/api/projects", headers={"X-API-Key": reader})).is_success
    keys = await api.ok("GET", "/api/keys")
    reader_id = next(k["id"] for k in keys["keys"] if k["role"] == "read-only")
    await api.ok("DELETE", f"/api/keys/{reader_id}", status=204)
    revoked = await anonymous.get("/api/projects", headers={"X-API-Key": reader})
    assert revoked.status_code == 401
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    expired = await api.ok(
        "POST",
        "/api/keys",
        json={"name": "old", "role": "admin", "expiresAt": past},
        status=201,
    )
    refused = await anonymous.get("/api/projects", headers={"X-API-Key": expired["key"]})
    assert refused.status_code == 401
    # Two different keys at once: which to believe is a guess, so neither is.
    other = await api.key("read-only")
    both = await api.http.get("/api/projects", headers={"X-API-Key": other})
    assert both.status_code == 401
    assert "different API keys" in both.json()["error"]["message"]
    ango = await anonymous.get("/api/projects", headers={"apikey": other})
    assert ango.is_success


async def test_keys_are_read_the_three_ways_openapi_shows(api: Api) -> None:
    anonymous = api.anonymous
    schema = (await anonymous.get("/openapi.json")).json()
    assert set(schema["components"]["securitySchemes"]) == {"Bearer", "X-API-Key", "apikey"}
    ways: list[dict[str, list[str]]] = [{"Bearer": []}, {"X-API-Key": []}, {"apikey": []}]
    paths = schema["paths"]
    keyed = [op for path, ops in paths.items() if path != "/healthz" for op in ops.values()]
    assert len(keyed) > 20
    assert all(op["security"] == ways for op in keyed)
    assert "security" not in paths["/healthz"]["get"]
    key = await api.key("read-only")
    for headers, status in [
        ({"Authorization": f"bearer {key}"}, 200),  # the scheme word in any case
        ({"Authorization": f"Basic {key}"}, 401),  # not a bearer credential: no key
        ({"Authorization": "Basic x", "X-API-Key": key}, 200),
        ({"Authorization": "Bearer", "apikey": key}, 200),
        ({"Authorization": f"Bearer  {key}", "X-API-Key": key}, 200),  # one key, spaced
    ]:
        response = await anonymous.get("/api/projects", headers=headers)
        assert response.status_code == status, headers


async def test_each_role_gets_only_its_calls(api: Api) -> None:
    project = await api.project()
    [task_id, other] = await api.imported(project["id"], 2)
    labeler = await api.as_role("labeler", "lab@example.com")
    reader = await api.as_role("read-only")
    manager = await api.as_role("manager")
    path = f"/api/projects/{project['id']}/assets"

    error = await api.fail("POST", path, 403, json=[asset(9)], headers=labeler)
    assert "manager" in error["message"]
    error = await api.fail("POST", f"/api/tasks/{task_id}/submit", 403, json={}, headers=reader)
    assert "labeler" in error["message"]
    error = await api.fail(
        "POST", "/api/keys", 403, json={"name": "x", "role": "admin"}, headers=manager
    )
    assert "admin" in error["message"]
    await api.fail("GET", "/api/keys", 403, headers=manager)

    submitted = await api.ok(
        "POST", f"/api/tasks/{task_id}/submit", json=labeled(1), headers=labeler
    )
    assert submitted["task"]["updatedBy"] == "lab@example.com"
    await api.ok("GET", f"/api/tasks/{other}", headers=reader)
    await api.ok("POST", path, json=[asset(9)], headers=manager, status=201)


async def test_key_values_are_shown_once(api: Api) -> None:
    created = await api.ok(
        "POST", "/api/keys", json={"name": "tool", "role": "labeler"}, status=201
    )
    assert created["key"].startswith("hs_")
    listed = await api.http.get("/api/keys")
    assert created["key"] not in listed.text
    assert {"tool", "admin@example.com"} == {k["name"] for k in listed.json()["keys"]}
    error = await api.fail("POST", "/api/keys", 422, json={"name": "x", "role": "root"})
    assert error["problems"][0]["path"] == "body.role"
    await api.fail("DELETE", "/api/keys/unknown", 404)


# -- bad input ------------------------------------------------------------------------------


async def test_a_bad_submission_names_the_field_and_changes_nothing(api: Api) -> None:
    project = await api.project()
    [task_id] = await api.imported(project["id"], 1)
    path = f"/api/tasks/{task_id}/submit"

    error = await api.fail("POST", path, 422, json={"tools": ["a box"]})
    assert error["problems"][0]["path"] == "body.tools[0]"
    assert "object" in error["problems"][0]["message"]
    error = await api.fail("POST", path, 422, json={**labeled(1), "duration": -5})
    assert error["problems"][0]["path"] == "body.duration"
    error = await api.fail("POST", path, 422, json={"tool": []})
    assert error["problems"] == [{"path": "body.tool", "message": "unknown field"}]
    wrong = labeled(1)
    wrong["tools"][0]["schemaId"] = "not-in-the-schema"
    error = await api.fail("POST", path, 422, json=wrong)
    assert error["problems"][0]["path"].startswith("body.tools[0]")
    error = await api.fail(
        "POST", path, 400, content=b'{"tools": [', headers={"Content-Type": "application/json"}
    )
    assert "malformed JSON" in error["message"]

    task = await api.ok("GET", f"/api/tasks/{task_id}")
    assert task["currentStage"]["id"] == "Label"
    assert task["task"]["tools"] == []
    deliveries = await api.ok("GET", f"/api/projects/{project['id']}/deliveries")
    assert deliveries["deliveries"] == []


async def test_unknown_things_answer_404_in_the_error_shape(api: Api) -> None:
    error = await api.fail("GET", "/api/tasks/nope", 404)
    assert "nope" in error["message"]
    await api.fail("GET", "/api/projects/nope", 404)
    await api.fail("GET", "/api/deliveries/nope", 404)
    await api.fail("GET", "/api/no-such-endpoint", 404)
    await api.fail("DELETE", "/api/projects", 405)


async def test_an_unexpected_failure_is_a_plain_500(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise RuntimeError(f"bug while holding {SECRET}")

    monkeypatch.setattr(api.engine, "list_projects", broken)
    error = await api.fail("GET", "/api/projects", 500)
    assert error["message"] == "internal error: the failure was logged on the server"


async def test_health_says_degraded_when_the_dispatcher_cannot_tell(database: str) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no state")

    async with _running(database, broken) as api:
        health = await api.http.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"


# -- deliveries -----------------------------------------------------------------------------


async def test_deliveries_log_redeliver_and_rerun(api: Api) -> None:
    project = await api.project()
    pid = project["id"]
    first, second = await api.imported(pid, 2)
    for n, task_id in enumerate((first, second), start=1):
        await api.ok("POST", f"/api/tasks/{task_id}/submit", json=labeled(n))
    listed = (await api.ok("GET", f"/api/projects/{pid}/deliveries"))["deliveries"]
    assert {d["taskId"] for d in listed} == {first, second}
    delivered = next(d["id"] for d in listed if d["taskId"] == first)

    # A worker's attempt, recorded as the dispatcher records it.
    now = time.time()
    async with api.engine.store.transaction() as conn:
        claimed = await outbox.claim(conn, now=now, lease_seconds=30, worker="w1", limit=1)
        assert [c.id for c in claimed] == [delivered]
        await outbox.record(
            conn,
            [
                outbox.AttemptResult(
                    lease=claimed[0].lease,
                    started_at=now,
                    duration_ms=12.5,
                    status_code=200,
                    error_class=None,
                    error=None,
                    response_headers={"content-type": "text/plain"},
                    response_body=b"ok",
                    decision=Decision.delivered(),
                )
            ],
        )

    detail = await api.ok("GET", f"/api/deliveries/{delivered}")
    assert detail["state"] == "delivered"
    assert detail["attemptLog"][0]["statusCode"] == 200
    assert detail["attemptLog"][0]["responseBody"] == "ok"
    only_pending = await api.ok(
        "GET", f"/api/projects/{pid}/deliveries", params={"state": "pending"}
    )
    assert [d["taskId"] for d in only_pending["deliveries"]] == [second]
    by_task = await api.ok("GET", f"/api/projects/{pid}/deliveries", params={"task": first})
    assert [d["id"] for d in by_task["deliveries"]] == [delivered]

    log = await api.http.get(f"/api/projects/{pid}/stages/{WEBHOOK}/log")
    assert log.headers["content-type"].startswith("text/plain")
    [line] = log.text.splitlines()
    assert line.endswith("][200] street-0001.jpg")
    as_json = await api.ok(
        "GET", f"/api/projects/{pid}/stages/{WEBHOOK}/log", params={"format": "json"}
    )
    assert as_json == [line]
    await api.fail("GET", f"/api/projects/{pid}/stages/Label/log", 422)

    pending = next(d["id"] for d in listed if d["taskId"] == second)
    again = await api.ok("POST", f"/api/deliveries/{pending}/redeliver")
    assert again["queued"] is False
    again = await api.ok("POST", f"/api/deliveries/{delivered}/redeliver")
    assert again["queued"] is True
    assert (await api.ok("GET", f"/api/deliveries/{delivered}"))["state"] == "pending"

    rerun = await api.ok("POST", f"/api/projects/{pid}/stages/{WEBHOOK}/rerun", json={})
    assert rerun["queued"] == 0  # both are pending already: nothing is queued twice
    ango = await api.ok("POST", f"/v2/project/{pid}/rerun-webhook", json={"stageId": WEBHOOK})
    assert ango["queued"] == 0
    error = await api.fail("POST", f"/v2/project/{pid}/rerun-webhook", 422, json={})
    assert error["problems"][0]["path"] == "body.stageId"
    labeler = await api.as_role("labeler")
    await api.fail("POST", f"/api/deliveries/{delivered}/redeliver", 403, headers=labeler)
