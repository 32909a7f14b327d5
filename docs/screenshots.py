"""Screenshots of the dashboard for the docs: a real service, a real receiver, real deliveries.

    .venv/bin/python -m docs.screenshots [--out docs/img]

Needs Debian's chromium at /usr/bin/chromium (``apt-get install chromium``). The receiver
answers after 20-400 ms and fails about one request in six (500), and the stage retries
once; the engine's and the dispatcher's clocks start an hour back and step forward five
minutes per wave of labelling, so the charts show an hour of traffic made in a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import FloatRect, Page, async_playwright

from hookstage import service
from hookstage.client import Client
from hookstage.dispatcher import Dispatcher, Endpoint
from hookstage.retry import RetryPolicy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECRET = "whsec-demo-0123456789abcdef"  # noqa: S105 - a demo stage's secret
W, H = 1280, 720
CAR, ROAD, PERSON, LANE = (
    "7d38d842079133453b4b328",
    "8a11b2c3d4e5f60718293a4",
    "3c44d5e6f708192a3b4c5d6",
    "4d55e6f708192a3b4c5d6e7",
)
OCCLUDED, WEATHER = "7d38d842079133453b4b329", "9b22c3d4e5f607182930a4b"

SCHEMA: dict[str, Any] = {
    "tools": [
        {"title": "Car", "tool": "bounding-box", "schemaId": CAR, "classifications": [
            {"title": "Occluded", "tool": "radio", "schemaId": OCCLUDED, "classifications": [],
             "options": [{"value": "Yes", "schemaId": "7d38d842079133453b4b32a"},
                         {"value": "No", "schemaId": "7d38d842079133453b4b32b"}]}]},
        {"title": "Road", "tool": "polygon", "schemaId": ROAD, "classifications": []},
        {"title": "Pedestrian", "tool": "point", "schemaId": PERSON, "classifications": []},
        {"title": "Lane", "tool": "polyline", "schemaId": LANE, "classifications": []},
    ],
    "classifications": [
        {"title": "Weather", "tool": "radio", "schemaId": WEATHER, "classifications": [],
         "options": [{"value": "Sunny", "schemaId": "9b22c3d4e5f607182930a4c"},
                     {"value": "Rainy", "schemaId": "9b22c3d4e5f607182930a4d"}]},
    ],
    "relations": [],
}  # fmt: skip


def workflow(hook_url: str) -> list[dict[str, Any]]:
    return [
        {"id": "Start", "type": "Start", "name": "Start", "next": ["Label"]},
        {"id": "Label", "type": "Label", "name": "Label", "next": ["webhook"]},
        {"id": "webhook", "type": "Webhook", "name": "Notify ML service", "next": ["route"],
         "url": hook_url, "auth": {"type": "secret", "secret": SECRET}},
        {"id": "route", "type": "Logic", "name": "Needs review?", "next": ["review", "Complete"],
         "rules": [{"kind": "annotation", "schemaId": ROAD, "present": True}]},
        {"id": "review", "type": "Review", "name": "Review", "next": ["Complete", "Label"]},
        {"id": "Complete", "type": "Complete", "name": "Complete", "next": []},
    ]  # fmt: skip


# -- the scene: the same shapes make the image and its annotations ------------------------------


def cars(n: int) -> list[tuple[float, float, float, float]]:
    rng = random.Random(n)
    return [
        (rng.uniform(80, 1000), rng.uniform(400, 520), rng.uniform(150, 230), rng.uniform(90, 130))
        for _ in range(1 + n % 3)
    ]


ROAD_SHAPE = [[520.0, 330.0], [760.0, 330.0], [1280.0, 720.0], [0.0, 720.0]]
LANE_SHAPE = [[640.0, 340.0], [600.0, 500.0], [540.0, 720.0]]


def person(n: int) -> list[float]:
    return [900.0 + 20 * (n % 5), 450.0]


def image(n: int) -> str:
    boxes = "".join(
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{h:.0f}" rx="14"'
        f' fill="{("#3b5b92", "#9b2d30", "#d8d8d8")[i % 3]}"/>'
        f'<rect x="{x + w * 0.15:.0f}" y="{y + 10:.0f}" width="{w * 0.7:.0f}"'
        f' height="{h * 0.35:.0f}" rx="8" fill="#a9c6de"/>'
        for i, (x, y, w, h) in enumerate(cars(n))
    )
    px, py = person(n)
    road = " ".join(f"{x:.0f},{y:.0f}" for x, y in ROAD_SHAPE)
    lane = " ".join(f"{x:.0f},{y:.0f}" for x, y in LANE_SHAPE)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">'
        '<defs><linearGradient id="sky" x1="0" y1="0" x2="0" y2="1">'
        '<stop offset="0" stop-color="#87b7e8"/><stop offset="1" stop-color="#dcecf7"/>'
        "</linearGradient></defs>"
        f'<rect width="{W}" height="{H}" fill="url(#sky)"/>'
        f'<rect y="330" width="{W}" height="390" fill="#7fa36b"/>'
        '<polygon points="80,330 200,180 330,330" fill="#6c8a9e"/>'
        '<polygon points="900,330 1080,150 1230,330" fill="#5d7b8f"/>'
        f'<polygon points="{road}" fill="#55595e"/>'
        f'<polyline points="{lane}" fill="none" stroke="#f2f2f2" stroke-width="8"'
        ' stroke-dasharray="40 30"/>'
        f"{boxes}"
        f'<circle cx="{px}" cy="{py - 60}" r="12" fill="#3d2f26"/>'
        f'<rect x="{px - 10}" y="{py - 48}" width="20" height="48" rx="6" fill="#c4512f"/>'
        "</svg>"
    )


def labels(n: int) -> dict[str, Any]:
    tools: list[dict[str, Any]] = [
        {
            "bounding-box": {"x": x, "y": y, "width": w, "height": h},
            "objectId": f"car{n:04d}{i:02d}",
            "schemaId": CAR,
            "title": "Car",
            "classifications": [
                {
                    "answer": "Yes" if i else "No",
                    "objectId": f"occ{n:04d}{i:02d}",
                    "schemaId": OCCLUDED,
                    "title": "Occluded",
                    "tool": "radio",
                    "classifications": [],
                }
            ],
        }
        for i, (x, y, w, h) in enumerate(cars(n))
    ]
    tools.append(
        {"point": person(n), "objectId": f"ped{n:04d}", "schemaId": PERSON,
         "title": "Pedestrian", "classifications": []}
    )  # fmt: skip
    if n % 3 == 0:
        tools.append(
            {"polygon": ROAD_SHAPE, "objectId": f"road{n:04d}", "schemaId": ROAD,
             "title": "Road", "classifications": []}
        )  # fmt: skip
        tools.append(
            {"polyline": LANE_SHAPE, "objectId": f"lane{n:04d}", "schemaId": LANE,
             "title": "Lane", "classifications": []}
        )  # fmt: skip
    weather: dict[str, Any] = {
        "answer": "Rainy" if n % 4 == 0 else "Sunny",
        "objectId": f"w{n:04d}",
        "schemaId": WEATHER,
        "title": "Weather",
        "tool": "radio",
        "classifications": [],
    }
    return {"tools": tools, "classifications": [weather], "relations": []}


# -- the receiver and the asset server -----------------------------------------------------


@contextlib.asynccontextmanager
async def receiver(seed: int = 7) -> AsyncIterator[str]:
    rng = random.Random(seed)

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(min(0.9, rng.lognormvariate(-2.6, 0.7)))
        if rng.random() < 0.17:
            return web.Response(status=500, text="upstream model busy, try again later")
        return web.json_response({"ok": True, "queued": True})

    async def asset(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.Response(text=image(n), content_type="image/svg+xml")

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get(r"/assets/street-{n:\d+}.svg", asset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


class Clock:
    """Real time, ``offset`` seconds back."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() - self.offset


# -- the scenario ---------------------------------------------------------------------------


async def populate(svc: service.Service, api: Client, base: str, clock: Clock) -> str:
    project = await api.create_project("Street scenes", SCHEMA, workflow(f"{base}/hook"))
    items = [
        {
            "externalId": f"street-{n:04d}.jpg",
            "data": f"{base}/assets/street-{n:04d}.svg",
            "metadata": {"width": W, "height": H},
            "batches": [f"Drive {1 + n % 3}"],
            "contextData": {"camera": "front" if n % 2 else "rear"},
        }
        for n in range(1, 241)
    ]
    pid = str(project["id"])
    clock.offset = 3700
    await api.import_assets(pid, items)
    tasks = await api.tasks(pid, stage="Label")
    rng = random.Random(3)
    n = 0
    # Minute by minute through the last hour, a varying number of labelled tasks each.
    for minute in range(58):
        count = max(0, round(rng.gauss(2.2, 1.4)))
        for j in range(count):
            clock.offset = (59 - minute) * 60 - j * 60 / (count + 1)
            number = int(tasks[n]["externalId"][7:11])
            await api.submit(
                tasks[n]["taskId"],
                labels(number),
                user=f"ann{n % 4}@example.com",
                duration=rng.randint(20_000, 200_000),
            )
            n += 1
        await settled(svc, pid)
    clock.offset = 0
    for task in (await api.tasks(pid, stage="review"))[:14]:
        accept = rng.random() < 0.7
        await api.review(task["taskId"], accept=accept, duration=30_000, user="lee@example.com")
    await settled(svc, pid)
    night = await api.create_project("Night drives", SCHEMA, workflow(f"{base}/hook"))
    await api.import_assets(str(night["id"]), items[:12])
    return pid


async def settled(svc: service.Service, project_id: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while await svc.engine.list_deliveries(project_id, state="pending", limit=1):
        if time.monotonic() > deadline:
            stuck = await svc.engine.list_deliveries(project_id, state="pending")
            raise TimeoutError(f"deliveries still pending: {stuck}")
        await asyncio.sleep(0.1)


async def shoot(url: str, key: str, project_id: str, svc: service.Service, out: Path) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1360, "height": 900})
        await page.goto(f"{url}/login")
        await page.fill("#key", key)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{url}/")
        await snap(page, f"{url}/", out / "dashboard-projects.png", height=420)
        await snap(page, f"{url}/projects/{project_id}", out / "dashboard-project.png")
        await snap(page, f"{url}/projects/{project_id}/tasks", out / "dashboard-tasks.png", 900)
        task = await retried_task(svc, project_id)
        await snap(page, f"{url}/tasks/{task}", out / "dashboard-task.png")
        stage = f"{url}/projects/{project_id}/stages/webhook"
        await snap(page, stage, out / "dashboard-stage.png", height=1500)
        await browser.close()


async def retried_task(svc: service.Service, project_id: str) -> str:
    """A task with a Road polygon whose delivery failed once, then went through."""
    for found in await svc.engine.list_deliveries(project_id, state="delivered", limit=500):
        if found.attempts >= 2 and int(found.external_id[7:11]) % 3 == 0:
            return found.task_id
    return (await svc.engine.list_deliveries(project_id, limit=1))[0].task_id


async def snap(page: Page, url: str, path: Path, height: int | None = None) -> None:
    await page.goto(url)
    await page.wait_for_load_state("load")
    if height is None:
        await page.screenshot(path=str(path), full_page=True)
    else:
        clip: FloatRect = {"x": 0, "y": 0, "width": 1360, "height": height}
        await page.screenshot(path=str(path), full_page=True, clip=clip)
    print(f"wrote {path}")


async def main(out: Path) -> None:
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="hookstage-shots-") as tmp:
        async with receiver() as base:
            config = service.ServiceConfig(
                database=str(Path(tmp) / "db.sqlite"), port=0, dispatch=False
            )
            async with service.running(config) as svc:
                svc.engine.clock = clock

                async def resolve(project_id: str, stage_id: str) -> Endpoint | None:
                    settings = await svc.engine.webhook_settings(project_id, stage_id)
                    return None if settings is None else service.endpoint(settings)

                dispatcher = Dispatcher(
                    svc.store, resolve=resolve, clock=clock,
                    policy=RetryPolicy(schedule=(0, 2), jitter=0),
                )  # fmt: skip
                svc.engine.on_enqueue = dispatcher.wake
                running = asyncio.create_task(dispatcher.run())
                try:
                    _, admin = await svc.engine.create_key("setup", "admin")
                    _, key = await svc.engine.create_key("Dana (ops)", "manager")
                    async with Client(svc.url, admin) as api:
                        project_id = await populate(svc, api, base, clock)
                    await shoot(svc.url, key, project_id, svc, out)
                finally:
                    await dispatcher.stop()
                    await running


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "img")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(out))
