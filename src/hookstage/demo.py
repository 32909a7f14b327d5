"""`hookstage demo`: a whole workflow firing signed webhooks into a local receiver.

It runs what a user would: `hookstage serve` on a temporary SQLite file, `hookstage listen`
with the stage's secret, and the HTTP API driven like labelers and reviewers would, then says
whether every webhook arrived, verified, exactly as the contract says.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hookstage import payload, receiver, service
from hookstage.cipher import new_key
from hookstage.client import Client

__all__ = ["DEMO_SCHEMA", "demo_assets", "demo_workflow", "main"]

WAIT_FOR_WEBHOOKS = 60.0

DEMO_SCHEMA: dict[str, Any] = {
    "tools": [
        {"title": "Car", "tool": "bounding-box", "schemaId": "7d38d842079133453b4b328",
         "classifications": []},
        {"title": "Road", "tool": "polygon", "schemaId": "8a11b2c3d4e5f60718293a4",
         "classifications": []},
    ],
    "classifications": [
        {"title": "Weather", "tool": "radio", "schemaId": "9b22c3d4e5f607182930a4b",
         "required": True, "classifications": [],
         "options": [{"value": "Sunny", "schemaId": "9b22c3d4e5f607182930a4c"},
                     {"value": "Rainy", "schemaId": "9b22c3d4e5f607182930a4d"}]},
    ],
    "relations": [],
}  # fmt: skip


def demo_workflow(url: str, secret: str) -> list[dict[str, Any]]:
    """Start -> Label -> Webhook -> Review -> Complete; a rejected task goes back to Label."""
    return [
        {"id": "Start", "type": "Start", "name": "Start", "next": ["Label"]},
        {"id": "Label", "type": "Label", "name": "Label", "next": ["webhook"]},
        {"id": "webhook", "type": "Webhook", "name": "Webhook", "next": ["review"],
         "url": url, "auth": {"type": "secret", "secret": secret}},
        {"id": "review", "type": "Review", "name": "Review", "next": ["Complete", "Label"]},
        {"id": "Complete", "type": "Complete", "name": "Complete", "next": []},
    ]  # fmt: skip


def demo_assets(count: int) -> list[dict[str, Any]]:
    return [
        {
            "externalId": f"street-{n:04d}.jpg",
            "data": f"https://assets.example.com/demo/street-{n:04d}.jpg",
            "metadata": {"width": 1920, "height": 1080},
            "batches": [f"Batch {n % 3 + 1}"],
            "contextData": {"camera": "front" if n % 2 else "rear"},
        }
        for n in range(1, count + 1)
    ]


def labeled(n: int) -> dict[str, Any]:
    """What labeler number n hands in: a car, and the weather."""
    return {
        "tools": [
            {
                "bounding-box": {"x": 100.5 + n, "y": 200.25, "height": 80.0, "width": 120.0},
                "objectId": f"{n:023x}",
                "schemaId": "7d38d842079133453b4b328",
                "title": "Car",
                "classifications": [],
            }
        ],
        "classifications": [
            {
                "answer": "Sunny" if n % 4 else "Rainy",
                "objectId": f"{n + 1_000_000:023x}",
                "schemaId": "9b22c3d4e5f607182930a4b",
                "title": "Weather",
                "tool": "radio",
                "classifications": [],
            }
        ],
        "relations": [],
    }


@dataclass
class Tally:
    """What the receiver saw, and when, by task id."""

    submitted: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)
    verdicts: Counter[str] = field(default_factory=Counter)
    unparsable: int = 0
    duplicates: int = 0
    first: receiver.Received | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_request(self, request: receiver.Received) -> None:
        now = time.perf_counter()
        self.verdicts[request.verdict] += 1
        if self.first is None:
            self.first = request
        try:
            task_id = payload.parse(request.body).task.taskId
        except payload.PayloadError:
            self.unparsable += 1
            return
        if task_id in self.arrived:
            self.duplicates += 1
        self.arrived.setdefault(task_id, now)
        self.changed.set()

    def latencies_ms(self) -> list[float]:
        return sorted(
            (self.arrived[t] - sent) * 1000
            for t, sent in self.submitted.items()
            if t in self.arrived
        )


async def main(*, tasks: int, labelers: int, keep: bool, console: Console) -> bool:
    """Run the demo; True when every webhook arrived once, verified and well formed."""
    secret = secrets.token_urlsafe(24)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="hookstage-demo-") as tmp:
        async with _receiver(Path(tmp), secret, tally) as hook_url:
            config = service.ServiceConfig(
                database=str(Path(tmp) / "hookstage.sqlite"),
                port=0,
                # The receiver is on this machine: webhooks to loopback are refused otherwise.
                allow_egress=("loopback",),
                secret_key=new_key(),
            )
            async with service.running(config) as svc:
                _, key = await svc.engine.create_key("demo", "admin")
                async with Client(svc.url, key) as api:
                    console.rule("[bold]hookstage demo")
                    console.print(f"API  {svc.url}/docs   receiver {hook_url}", highlight=False)
                    project_id = await _set_up(api, hook_url, secret, tasks, console)
                    await _label_all(api, project_id, labelers, tally, console)
                    await _review_all(api, project_id, console)
                    ok = _summary(tally, tasks, console)
                    if keep:
                        await _keep(svc.url, hook_url, key, console)
    return ok


@contextlib.asynccontextmanager
async def _receiver(tmp: Path, secret: str, tally: Tally) -> Any:
    config = receiver.ReceiverConfig(
        port=0, secret=secret, scheme="hub", quiet=True, store=tmp / "received.sqlite"
    )
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        receiver.serve(config, on_ready=ready.set_result, on_request=tally.on_request)
    )
    try:
        base = await asyncio.wait_for(asyncio.shield(ready), timeout=30)
        yield base + config.path
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _set_up(api: Client, hook_url: str, secret: str, count: int, console: Console) -> str:
    project = await api.create_project(
        "Street scenes (demo)", DEMO_SCHEMA, demo_workflow(hook_url, secret)
    )
    project_id: str = project["id"]
    assets = demo_assets(count)
    for start in range(0, count, 500):
        await api.import_assets(project_id, assets[start : start + 500])
    console.print(
        f"project {project_id}: Start -> Label -> [bold]Webhook[/] -> Review -> Complete,"
        f" {count} assets imported",
        highlight=False,
    )
    return project_id


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


async def _label_all(
    api: Client, project_id: str, labelers: int, tally: Tally, console: Console
) -> None:
    todo: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for n, task in enumerate(await api.tasks(project_id, stage="Label"), start=1):
        todo.put_nowait((n, task["taskId"]))
    total = todo.qsize()
    with _progress(console) as bars:
        submitted = bars.add_task("labelers submitting", total=total)
        verified = bars.add_task("webhooks verified", total=total)

        async def labeler(who: int) -> None:
            while not todo.empty():
                n, task_id = todo.get_nowait()
                tally.submitted[task_id] = time.perf_counter()
                await api.submit(
                    task_id, labeled(n), user=f"labeler{who}@example.com", duration=1500 + n
                )
                bars.advance(submitted)

        async def watch() -> None:
            deadline = time.monotonic() + WAIT_FOR_WEBHOOKS
            while len(tally.arrived) < total and time.monotonic() < deadline:
                tally.changed.clear()
                bars.update(verified, completed=tally.verdicts["valid"])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tally.changed.wait(), deadline - time.monotonic())
            bars.update(verified, completed=tally.verdicts["valid"])

        await asyncio.gather(*(labeler(i) for i in range(1, labelers + 1)), watch())
    if tally.first is not None:
        _show_first(tally.first, console)


def _show_first(first: receiver.Received, console: Console) -> None:
    console.rule("the first webhook, as it arrived")
    for name, value in first.headers:
        if name.lower().startswith(("x-hub", "x-hookstage", "content-type", "user-agent")):
            console.print(f"[dim]{name}:[/] {value}", highlight=False)
    console.print_json(orjson.dumps(orjson.loads(first.body)).decode())


async def _review_all(api: Client, project_id: str, console: Console) -> None:
    waiting = await api.tasks(project_id, stage="review")
    for task in waiting:
        await api.review(task["taskId"], accept=True, user="reviewer@example.com")
    console.print(f"reviewer accepted {len(waiting)} tasks: they are at Complete")


def _summary(tally: Tally, expected: int, console: Console) -> bool:
    latencies = tally.latencies_ms()
    missing = expected - len(tally.arrived)
    invalid = sum(n for verdict, n in tally.verdicts.items() if verdict != "valid")
    table = Table(title="summary", show_header=False)
    table.add_row("tasks submitted", str(len(tally.submitted)))
    table.add_row("webhooks received", str(sum(tally.verdicts.values())))
    table.add_row("signatures valid", f"{tally.verdicts['valid']}")
    table.add_row("invalid or unparsable", str(invalid + tally.unparsable))
    table.add_row("missing", str(missing))
    table.add_row("repeated (at-least-once)", str(tally.duplicates))
    if latencies:
        q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else []
        table.add_row("submit -> arrival p50", f"{statistics.median(latencies):.1f} ms")
        if q:
            table.add_row("submit -> arrival p95", f"{q[94]:.1f} ms")
            table.add_row("submit -> arrival p99", f"{q[98]:.1f} ms")
    console.print(table)
    ok = missing == 0 and invalid == 0 and tally.unparsable == 0
    verdict = "[bold green]every webhook arrived, signed and verified" if ok else "[bold red]FAILED"
    console.print(verdict)
    return ok


async def _keep(api_url: str, hook_url: str, key: str, console: Console) -> None:
    console.print(
        f"\nstill running: API {api_url}/docs (key: {key}),"
        f" receiver inspector {hook_url.rsplit('/', 1)[0]}/  (Ctrl-C to stop)",
        highlight=False,
    )
    await asyncio.Event().wait()
