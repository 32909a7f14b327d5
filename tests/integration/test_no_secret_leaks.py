"""A full run, and a search of everything it answered and logged for the secrets it holds.

One service (API, dashboard, dispatcher) on a real socket with real receivers: projects with
a signing secret (in rotation), a bearer token and failing stages; keys of every role;
import, submit, review, deliveries that succeed, fail with an answer and are refused by the
egress guard; redeliver, re-run, export, the stage log, the dashboard's pages, refused
requests. Every response (headers and body) and every log record and line of output is then
searched for the stage secrets, the bearer token and the API keys.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from hookstage import service
from hookstage.cipher import new_key
from hookstage.demo import DEMO_SCHEMA, demo_assets, labeled
from hookstage.signing import generate_standard_secret

SECRET = generate_standard_secret()
OLD_SECRET = generate_standard_secret()
FAILING_SECRET = "failing-stage-secret-5b1e9a7c3d"
TOKEN = "tok_bearer-never-shown-8f2a6c4e0b"
WITHIN = 20.0
LINKS = re.compile(r'(?:href|hx-get)="(/[^"#]*)"')
PAGES_MAX = 60


@dataclass
class Receiver:
    url: str
    hits: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        hits.append(request.path)
        if request.path == "/fail":
            return web.Response(status=500, text="receiver says no")
        if request.path == "/echo":  # like httpbin: the request's headers, back
            echoed = {"X-Echo": request.headers.get("Authorization", "")}
            return web.json_response(dict(request.headers), headers=echoed)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield Receiver(f"127.0.0.1:{runner.addresses[0][1]}", hits)
    finally:
        await runner.cleanup()


def workflow(receiver: Receiver) -> list[dict[str, Any]]:
    base = f"http://{receiver.url}"
    # 127.0.0.2 is loopback too, but the allow-list names 127.0.0.1 only: refused.
    refused = base.replace("127.0.0.1", "127.0.0.2")
    return [
        {"id": "Start", "type": "Start", "name": "Start", "next": ["Label"]},
        {"id": "Label", "type": "Label", "name": "Label", "next": ["signed"]},
        {"id": "signed", "type": "Webhook", "name": "Signed", "next": ["bearer"],
         "url": f"{base}/ok", "signatures": ["hub-256", "standard"],
         "auth": {"type": "secret", "secret": SECRET, "previousSecret": OLD_SECRET,
                  "previousUntil": "2099-01-01T00:00:00Z"}},
        {"id": "bearer", "type": "Webhook", "name": "Bearer", "next": ["failing"],
         "url": f"{base}/echo", "auth": {"type": "bearer", "token": TOKEN}},
        {"id": "failing", "type": "Webhook", "name": "Failing", "next": ["refused"],
         "url": f"{base}/fail", "auth": {"type": "secret", "secret": FAILING_SECRET}},
        {"id": "refused", "type": "Webhook", "name": "Refused", "next": ["review"],
         "url": f"{refused}/ok", "auth": {"type": "bearer", "token": TOKEN}},
        {"id": "review", "type": "Review", "name": "Review", "next": ["Complete", "Label"]},
        {"id": "Complete", "type": "Complete", "name": "Complete", "next": []},
    ]  # fmt: skip


@dataclass
class Run:
    """What the run answered: (request, response text with headers) pairs."""

    answers: list[tuple[str, str]] = field(default_factory=list)
    shown_once: dict[str, str] = field(default_factory=dict)  # request -> the key it created

    async def keep(self, response: httpx.Response) -> None:
        await response.aread()
        request = f"{response.request.method} {response.request.url}"
        headers = [
            f"{name}: {value}"
            for name, value in response.headers.multi_items()
            # Logging in puts the key in the session cookie: that is what a login is.
            if not (name.lower() == "set-cookie" and response.request.url.path == "/login")
        ]
        self.answers.append((request, "\n".join([*headers, response.text])))


async def _settled(http: httpx.AsyncClient, project_id: str) -> list[dict[str, Any]]:
    """Each delivery once it has a recorded attempt (polled with a deadline)."""
    deadline = time.monotonic() + WITHIN
    while True:
        found = (await http.get(f"/api/projects/{project_id}/deliveries")).json()["deliveries"]
        details = [(await http.get(f"/api/deliveries/{d['id']}")).json() for d in found]
        if len(details) == 4 and all(d["attemptLog"] for d in details):
            return details
        assert time.monotonic() < deadline, details
        await _pause()


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)


async def _crawl(dashboard: httpx.AsyncClient, key: str) -> int:
    """Log in with `key` and visit every page the dashboard links to."""
    assert (await dashboard.get("/login")).status_code == 200
    logged_in = await dashboard.post("/login", data={"key": key, "next": "/"})
    assert logged_in.status_code == 303
    seen: set[str] = set()
    queue = ["/"]
    while queue and len(seen) < PAGES_MAX:
        path = queue.pop(0)
        if path in seen or path.startswith(("/static", "/logout", "/api")):
            continue
        seen.add(path)
        page = await dashboard.get(path)
        assert page.status_code < 500, path
        queue.extend(LINKS.findall(page.text))
    return len(seen)


async def _drive(http: httpx.AsyncClient, receiver: Receiver, run: Run) -> tuple[str, int]:
    keys = {}
    for role in ("manager", "labeler", "read-only"):
        made = (await http.post("/api/keys", json={"name": role, "role": role})).json()
        keys[role] = made["key"]
        run.shown_once[f"POST {made['id']}"] = made["key"]
    project = (
        await http.post(
            "/api/projects",
            json={"name": "leaks", "categorySchema": DEMO_SCHEMA, "workflow": workflow(receiver)},
        )
    ).json()
    pid = project["id"]
    shown = (await http.get(f"/api/projects/{pid}")).json()
    assert shown["workflow"][2]["auth"]["secret"] == {"set": True, "last4": SECRET[-4:]}
    resaved = await http.put(f"/api/projects/{pid}/workflow", json=shown["workflow"])
    assert resaved.status_code == 200
    bad = [dict(stage) for stage in shown["workflow"]]
    bad[2] = {**bad[2], "auth": {"type": "secret", "secret": f" {SECRET} "}, "token": TOKEN}
    assert (await http.put(f"/api/projects/{pid}/workflow", json=bad)).status_code == 422

    manager = {"X-API-Key": keys["manager"]}
    labeler = {"X-API-Key": keys["labeler"]}
    reader = {"X-API-Key": keys["read-only"]}
    imported = await http.post(f"/api/projects/{pid}/assets", json=demo_assets(2), headers=manager)
    [task_id, _] = imported.json()["taskIds"]
    assert (
        await http.post(f"/api/tasks/{task_id}/submit", json={}, headers=reader)
    ).status_code == 403
    submitted = await http.post(f"/api/tasks/{task_id}/submit", json=labeled(1), headers=labeler)
    assert submitted.status_code == 200
    deliveries = await _settled(http, pid)
    classes = {}
    for delivery in deliveries:
        await http.get(f"/api/deliveries/{delivery['id']}", headers=reader)
        [first, *_] = delivery["attemptLog"]
        classes[delivery["stageId"]] = (first["statusCode"], first["errorClass"])
        await http.get(f"/api/projects/{pid}/stages/{delivery['stageId']}/log")
        await http.get(f"/api/projects/{pid}/stages/{delivery['stageId']}/log?format=json")
    assert classes == {
        "signed": (200, None),
        "bearer": (200, None),
        "failing": (500, None),
        "refused": (None, "egress-refused"),
    }
    await http.post(f"/api/deliveries/{deliveries[0]['id']}/redeliver", headers=manager)
    await http.post(f"/api/projects/{pid}/stages/failing/rerun", json={}, headers=manager)
    await http.post(f"/api/tasks/{task_id}/review", json={"accept": True}, headers=labeler)
    await http.get(f"/api/tasks/{task_id}", headers=reader)
    await http.get(f"/api/projects/{pid}/tasks")
    await http.get(f"/api/projects/{pid}/export")
    await http.get(f"/api/projects/{pid}/export?format=ndjson")
    listed = (await http.get("/api/keys")).json()["keys"]
    await http.delete(f"/api/keys/{listed[-1]['id']}")
    await http.get("/api/keys")
    await http.get("/api/projects")
    await http.get("/api/projects", headers={"X-API-Key": keys["read-only"]})  # revoked
    await http.get("/api/projects", headers={"X-API-Key": "hs_wrong"})
    await http.get("/openapi.json")
    await http.get("/healthz")
    return pid, len(deliveries)


@pytest.mark.parametrize(
    ("sealed", "level"),
    [
        # Sealed at rest, every logger at DEBUG: a database driver's DEBUG lines show SQL
        # parameters, which then hold only sealed values.
        (True, logging.DEBUG),
        # Stored plain (the start warns): nothing at INFO and above shows a secret.
        (False, logging.INFO),
    ],
)
async def test_no_response_log_or_output_of_a_full_run_holds_a_secret(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    sealed: bool,
    level: int,
) -> None:
    caplog.set_level(level)
    run = Run()
    async with receiving() as receiver:
        config = service.ServiceConfig(
            database=str(tmp_path / "db.sqlite"),
            port=0,
            allow_egress=("127.0.0.1/32",),
            secret_key=new_key() if sealed else None,
        )
        async with service.running(config) as svc:
            _, admin = await svc.engine.create_key("admin", "admin")
            hooks = {"response": [run.keep]}
            async with (
                httpx.AsyncClient(
                    base_url=svc.url, headers={"X-API-Key": admin}, event_hooks=hooks
                ) as http,
                httpx.AsyncClient(base_url=svc.url, event_hooks=hooks) as dashboard,
            ):
                _, count = await _drive(http, receiver, run)
                manager = next(iter(run.shown_once.values()))
                pages = await _crawl(dashboard, manager)
    assert count == 4
    assert pages >= 3
    assert set(receiver.hits) >= {"/ok", "/echo", "/fail"}

    held = {
        "stage secret": SECRET,
        "its key": SECRET.removeprefix("whsec_"),
        "previous secret": OLD_SECRET,
        "failing stage secret": FAILING_SECRET,
        "bearer token": TOKEN,
        "admin key": admin,
        **{f"key {i}": value for i, value in enumerate(run.shown_once.values())},
    }
    created = set(run.shown_once.values())
    for request, answer in run.answers:
        for name, value in held.items():
            if value in created and request.startswith("POST") and "/api/keys" in request:
                continue  # a new key is shown once, in the answer that created it
            assert value not in answer, f"{name} in the answer to {request}"
    logged = "\n".join(
        f"{r.getMessage()}\n{r.exc_text or ''}\n{r.args!r}"
        for r in caplog.records
        # The test's own HTTP client logs the keys it sends and the cookie it gets.
        if not r.name.startswith(("httpx", "httpcore"))
    )
    output = "".join(capfd.readouterr())
    assert caplog.records, "nothing was logged: the search would prove nothing"
    for name, value in held.items():
        assert value not in logged, f"{name} in a log record"
        assert value not in output, f"{name} in the output"
