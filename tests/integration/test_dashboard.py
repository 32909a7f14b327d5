"""The dashboard over HTTP, as a browser would call it: login, sessions, roles, forms, pages."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from hookstage.demo import demo_assets
from tests.support.dashboard import SECRET, Dashboard, running_dashboard, wait_for


@pytest.fixture
async def dashboard(tmp_path: Path) -> AsyncIterator[Dashboard]:
    async with running_dashboard(tmp_path) as world:
        yield world


def client(dashboard: Dashboard) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=dashboard.url, follow_redirects=False, timeout=10)


@contextlib.asynccontextmanager
async def logged_in(dashboard: Dashboard, role: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client(dashboard) as browser:
        answer = await browser.post("/login", data={"key": dashboard.keys[role], "next": "/"})
        assert answer.status_code == 303
        yield browser


def token(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, "no form token on the page"
    return found.group(1)


async def test_pages_send_a_visitor_without_a_session_to_login_and_back(
    dashboard: Dashboard,
) -> None:
    async with client(dashboard) as browser:
        stage = f"/projects/{dashboard.project_id}/stages/webhook?state=failed"
        answer = await browser.get(stage)
        assert answer.status_code == 303
        assert answer.headers["location"] == (
            f"/login?next=%2Fprojects%2F{dashboard.project_id}%2Fstages%2Fwebhook%3Fstate%3Dfailed"
        )
        form = await browser.get(answer.headers["location"])
        assert 'name="next" value="' + stage.replace("&", "&amp;") + '"' in form.text

        login = await browser.post("/login", data={"key": dashboard.keys["manager"], "next": stage})
        assert (login.status_code, login.headers["location"]) == (303, stage)
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert (await browser.get(stage)).status_code == 200


async def test_a_wrong_key_is_refused_without_being_echoed(dashboard: Dashboard) -> None:
    wrong = "hs_" + "x" * 40
    async with client(dashboard) as browser:
        answer = await browser.post("/login", data={"key": wrong, "next": "/"})
        assert answer.status_code == 401
        assert "unknown, revoked or expired" in answer.text
        assert wrong not in answer.text
        assert "set-cookie" not in answer.headers


async def test_login_never_sends_anyone_to_another_site(dashboard: Dashboard) -> None:
    async with client(dashboard) as browser:
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "x"):
            answer = await browser.post(
                "/login", data={"key": dashboard.keys["manager"], "next": target}
            )
            assert answer.headers["location"] == "/"


async def test_a_revoked_key_ends_its_session_at_once(dashboard: Dashboard) -> None:
    async with logged_in(dashboard, "read-only") as browser:
        assert (await browser.get("/")).status_code == 200
        keys = await dashboard.svc.engine.list_keys()
        await dashboard.svc.engine.revoke_key(next(k.id for k in keys if k.role == "read-only"))
        answer = await browser.get("/")
        assert (answer.status_code, answer.headers["location"]) == (303, "/login")


async def test_an_action_needs_the_form_token_and_the_manager_role(dashboard: Dashboard) -> None:
    redeliver = f"/deliveries/{dashboard.delivery_id}/redeliver"
    async with logged_in(dashboard, "manager") as manager:
        refused = await manager.post(redeliver, data={"csrf": "0" * 64})
        assert refused.status_code == 403
        assert "another site" in refused.text
        assert (await manager.post(redeliver)).status_code == 403
    async with logged_in(dashboard, "read-only") as reader:
        page = await reader.get(f"/projects/{dashboard.project_id}/stages/webhook")
        assert "Redeliver" not in page.text
        refused = await reader.post(redeliver, data={"csrf": token(page.text)})
        assert refused.status_code == 403
        assert "manager role" in refused.text
    assert (await dashboard.svc.engine.get_delivery(dashboard.delivery_id)).state == "failed"


async def test_a_redelivery_by_form_sends_the_same_delivery_again(dashboard: Dashboard) -> None:
    dashboard.receiver.status = 200
    async with logged_in(dashboard, "manager") as browser:
        stage = f"/projects/{dashboard.project_id}/stages/webhook"
        page = await browser.get(stage)
        answer = await browser.post(
            f"/deliveries/{dashboard.delivery_id}/redeliver",
            data={"csrf": token(page.text), "next": stage + "?state=failed"},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == stage + "?state=failed&notice=queued"
    done = await wait_for(dashboard.svc, dashboard.delivery_id, 2)
    assert [a.status_code for a in done.attempt_log] == [500, 200]


async def test_htmx_gets_the_card_back_in_place(dashboard: Dashboard) -> None:
    async with logged_in(dashboard, "manager") as browser:
        page = await browser.get(f"/tasks/{dashboard.task_id}")
        answer = await browser.post(
            f"/deliveries/{dashboard.delivery_id}/redeliver",
            data={"csrf": token(page.text)},
            headers={"HX-Request": "true"},
        )
        assert answer.status_code == 200
        assert answer.text.lstrip().startswith(
            f'<article class="delivery" id="delivery-{dashboard.delivery_id}"'
        )
        assert 'data-state="pending"' in answer.text
        assert 'hx-trigger="every 2s"' in answer.text  # it refreshes itself until done


async def test_a_rerun_by_form_queues_the_failed_deliveries(dashboard: Dashboard) -> None:
    async with logged_in(dashboard, "manager") as browser:
        stage = f"/projects/{dashboard.project_id}/stages/webhook"
        confirm = await browser.get(stage + "/rerun?failed=1")
        assert "1 failed" in confirm.text
        answer = await browser.post(
            stage + "/rerun", data={"csrf": token(confirm.text), "failed": "1"}
        )
        assert answer.headers["location"] == stage + "?state=pending&notice=rerun-failed"
    await wait_for(dashboard.svc, dashboard.delivery_id, 2)


async def test_no_page_shows_the_stage_secret_and_every_page_is_locked_down(
    dashboard: Dashboard,
) -> None:
    project = f"/projects/{dashboard.project_id}"
    paths = [
        "/",
        project,
        f"{project}/tasks",
        f"/tasks/{dashboard.task_id}",
        f"{project}/stages/webhook",
        f"{project}/stages/webhook/log",
        f"{project}/stages/webhook/summary",
        f"{project}/stages/webhook/rerun",
        f"/deliveries/{dashboard.delivery_id}",
        f"/deliveries/{dashboard.delivery_id}/card",
        f"/deliveries/{dashboard.delivery_id}/redeliver",
    ]
    async with logged_in(dashboard, "manager") as browser:
        for path in paths:
            answer = await browser.get(path)
            assert answer.status_code == 200, path
            assert SECRET not in answer.text, path
            assert dashboard.keys["manager"] not in answer.text, path
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            assert answer.headers["cache-control"] == "no-store"
        settings = (await browser.get(f"{project}/stages/webhook")).text
        assert "secret: set, …9c2e" in settings


async def test_missing_things_are_html_pages_not_json(dashboard: Dashboard) -> None:
    async with logged_in(dashboard, "read-only") as browser:
        for path, status in [
            ("/tasks/nope", 404),
            ("/projects/nope", 404),
            (f"/projects/{dashboard.project_id}/stages/nope", 404),
            (f"/projects/{dashboard.project_id}/tasks?stage=nope", 422),
            (f"/projects/{dashboard.project_id}/tasks?limit=100000", 422),
            (f"/projects/{dashboard.project_id}/stages/webhook?state=lost", 422),
        ]:
            answer = await browser.get(path)
            assert answer.status_code == status, path
            assert answer.headers["content-type"].startswith("text/html")
            assert "Log out" in answer.text  # the page keeps its navigation


async def test_tasks_page_through_by_stage_and_batch(dashboard: Dashboard) -> None:
    engine = dashboard.svc.engine
    await engine.import_assets(dashboard.project_id, demo_assets(9)[3:])  # 9 tasks in all
    async with logged_in(dashboard, "read-only") as browser:
        base = f"/projects/{dashboard.project_id}/tasks"
        seen: list[str] = []
        url = f"{base}?stage=Label&limit=3"
        while url:
            page = (await browser.get(url)).text
            seen += re.findall(r'<a href="/tasks/[0-9a-f]+">(street-\d+\.jpg)</a>', page)
            found = re.search(r'rel="next" href="([^"]+)"', page)
            url = found.group(1).replace("&amp;", "&") if found else ""
        labelled = {"street-0001.jpg"}  # waits in Review
        assert sorted(seen) == sorted({f"street-{n:04d}.jpg" for n in range(1, 10)} - labelled)
        batch = (await browser.get(f"{base}?batch=Batch+2")).text
        shown = re.findall(r'<a href="/tasks/[0-9a-f]+">(street-\d+\.jpg)</a>', batch)
        # demo_assets puts asset n in batch n % 3 + 1.
        assert sorted(shown) == ["street-0001.jpg", "street-0004.jpg", "street-0007.jpg"]
