"""End to end: tasks submitted through the HTTP API, until their webhook arrives.

A real `hookstage serve` process (SQLite, its dispatcher on) holds a project Start -> Label
-> Webhook -> Review -> Complete whose Webhook stage points at a receiver in this process;
its tasks wait at Label (written straight into the tables beforehand). This process submits
them through `POST /api/tasks/{id}/submit` open loop, at a steady rate scheduled by the
clock (a slow answer does not slow the next submit), and the receiver notes when each task's
webhook arrives: one process, one monotonic clock (``perf_counter``).

Latency is from the submit's answer to the webhook's arrival (a webhook that arrives before
the answer counts as 0 ms), and from the submit's request. Rates go up a ramp, 500 submits
per second among them (the targets there: p50 under 5 ms, p99 under 25 ms), a few seconds
each. A rate is steady when every submit succeeds, every webhook arrives, the submits keep
up, and p99 from the request to the arrival is under 100 ms. A rate that is not gets a
second try (one stall on a shared machine can push a p99 over the line), unless it fell
behind: the open loop stops once half a second's worth of submits is unanswered. The ramp
stops at the first rate that is not steady (500 is measured in any case).
Baseline in the same run: one bare HTTP hop (this process to the receiver, the same open
loop), the floor of any webhook's latency here.

    .venv/bin/python -m benchmarks.bench_e2e [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from benchmarks.common import (
    IMG,
    Figure,
    Plot,
    Result,
    fmt,
    main_for,
    percentile,
    plot_lines,
    proc_cpu_seconds,
    served,
)
from hookstage.demo import DEMO_SCHEMA, demo_workflow, labeled
from hookstage.engine import EMPTY_ANNOTATIONS, Engine, new_id
from hookstage.store import Store, open_store
from hookstage.store.tables import tasks

__all__ = ["run"]

SECRET = "bench-e2e-secret-0123456789"
HEADLINE = 500
STEADY_P99_MS = 100.0
_CHUNK = 5000


@dataclass(frozen=True)
class _Plan:
    warmup: int
    rates: tuple[int, ...]
    seconds: float
    headline_seconds: float

    def duration(self, rate: int) -> float:
        return self.headline_seconds if rate == HEADLINE else self.seconds

    def count(self, rate: int) -> int:
        return math.ceil(rate * self.duration(rate))

    def tasks(self) -> int:
        """Enough for every rate, and a second try of half of them."""
        return self.warmup + math.ceil(1.5 * sum(self.count(r) for r in self.rates))


def _plan(quick: bool) -> _Plan:
    if quick:
        return _Plan(100, (50, 100, 250, 500, 1000, 2000), 2.0, 3.0)
    rates = (25, 50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 1000, 1500, 2000)
    return _Plan(300, rates, 3.0, 8.0)


@dataclass
class _Receiver:
    """The webhooks' arrival times by task id."""

    arrivals: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.perf_counter()
        task_id = orjson.loads(body)["task"]["taskId"]
        self.arrivals.setdefault(task_id, now)
        self.changed.set()
        return web.Response(text="ok")

    async def wait_for(self, ids: list[str], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        missing = set(ids)
        while time.monotonic() < deadline:
            missing = {i for i in missing if i not in self.arrivals}
            if not missing:
                return
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))


@contextlib.asynccontextmanager
async def _receiving(receiver: _Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    app.router.add_post("/ping", _ping)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def _ping(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


async def _prepare(db: Path, hook_url: str, count: int) -> tuple[str, list[str]]:
    """An admin key, the project, and ``count`` tasks waiting at Label; before serve starts."""
    store = await open_store(db)
    try:
        engine = Engine(store)
        _, key = await engine.create_key("bench", "admin")
        project = await engine.create_project(
            name="e2e", category_schema=DEMO_SCHEMA, workflow_json=demo_workflow(hook_url, SECRET)
        )
        return key, await _label_tasks(store, project.id, count)
    finally:
        await store.close()


async def _label_tasks(store: Store, project_id: str, count: int) -> list[str]:
    now = time.time()
    ids = [new_id(now) for _ in range(count)]
    for start in range(0, count, _CHUNK):
        rows: list[dict[str, Any]] = [
            {
                "id": task_id,
                "asset_id": new_id(now),
                "project_id": project_id,
                "external_id": f"street-{n:06d}.jpg",
                "data_url": f"https://assets.example.com/street-{n:06d}.jpg",
                "dataset": [],
                "asset_metadata": {"width": 1920, "height": 1080},
                "context_data": None,
                "stage_id": "Label",
                "work_stage_id": "Label",
                "annotations": EMPTY_ANNOTATIONS,
                "stage_history": [],
                "updated_at": now,
                "updated_by": None,
                "total_duration": 0,
                "entered_at": now,
                "created_at": now,
                "version": 1,
            }
            for n, task_id in enumerate(ids[start : start + _CHUNK], start=start)
        ]
        async with store.transaction() as conn:
            await conn.execute(tasks.insert(), rows)
    return ids


@dataclass
class _Step:
    rate: int
    count: int  # submitted (fewer than planned when the server fell behind)
    planned: int
    seconds: float  # from the first submit to the last answer
    failed: int
    missing: int
    rtt: list[float]  # ms, submit request to answer
    after_answer: list[float]  # ms, answer to arrival (0 when the webhook came first)
    after_request: list[float]  # ms, request to arrival
    early: int  # webhooks that arrived before their submit's answer
    server_cpu: float
    tries: int = 1

    @property
    def achieved(self) -> float:
        return self.count / self.seconds

    @property
    def steady(self) -> bool:
        return (
            self.count == self.planned
            and self.failed == 0
            and self.missing == 0
            and self.achieved >= 0.9 * self.rate
            and percentile(self.after_request, 99) < STEADY_P99_MS
        )


async def _open_loop(
    rate: int, count: int, call: Callable[[int], Coroutine[Any, Any, None]]
) -> int:
    """Start ``call(n)`` for n in 0..count-1 at ``rate`` per second, by the clock, until
    half a second's worth is unanswered (the other end fell behind); how many started."""
    started = time.perf_counter()
    calls: list[asyncio.Task[None]] = []
    pending: set[asyncio.Task[None]] = set()
    most = max(50, rate // 2)
    for n in range(count):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(pending) > most:
            break
        calls.append(asyncio.create_task(call(n)))
        pending.add(calls[-1])
        calls[-1].add_done_callback(pending.discard)
    await asyncio.gather(*calls, return_exceptions=True)
    return len(calls)


class _Load:
    """Submits through the API and what came of them."""

    def __init__(
        self, http: aiohttp.ClientSession, api: str, key: str, receiver: _Receiver, base: str
    ) -> None:
        self.http, self.api, self.receiver, self.receiver_base = http, api, receiver, base
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.body = orjson.dumps({**labeled(1), "duration": 1500, "user": "bench@example.com"})

    async def step(self, rate: int, ids: list[str], pid: int) -> _Step:
        sent: dict[str, float] = {}
        answered: dict[str, float] = {}
        failed = 0

        async def submit(n: int) -> None:
            nonlocal failed
            task_id = ids[n]
            sent[task_id] = time.perf_counter()
            try:
                url = f"{self.api}/api/tasks/{task_id}/submit"
                async with self.http.post(url, data=self.body, headers=self.headers) as answer:
                    await answer.read()
                    failed += answer.status != 200
            except aiohttp.ClientError:
                failed += 1
            answered[task_id] = time.perf_counter()

        cpu = proc_cpu_seconds(pid)
        started = time.perf_counter()
        planned = len(ids)
        ids = ids[: await _open_loop(rate, planned, submit)]
        seconds = max(answered.values()) - started
        await self.receiver.wait_for(ids, 30)
        server_cpu = proc_cpu_seconds(pid) - cpu
        arrivals = self.receiver.arrivals
        came = [i for i in ids if i in arrivals]
        return _Step(
            rate=rate,
            count=len(ids),
            planned=planned,
            seconds=seconds,
            failed=failed,
            missing=len(ids) - len(came),
            rtt=[(answered[i] - sent[i]) * 1000 for i in ids],
            after_answer=[max(0.0, arrivals[i] - answered[i]) * 1000 for i in came],
            after_request=[(arrivals[i] - sent[i]) * 1000 for i in came],
            early=sum(arrivals[i] < answered[i] for i in came),
            server_cpu=server_cpu,
        )

    async def hop(self, rate: int, count: int) -> list[float]:
        """The baseline: a bare POST of the same body to the receiver, open loop."""
        times: list[float] = []

        async def post(_: int) -> None:
            started = time.perf_counter()
            async with self.http.post(f"{self.receiver_base}/ping", data=self.body) as answer:
                await answer.read()
            times.append((time.perf_counter() - started) * 1000)

        await _open_loop(rate, count, post)
        return times


async def _measure(plan: _Plan) -> tuple[list[_Step], list[float]]:
    receiver = _Receiver()
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        async with _receiving(receiver) as base:
            db = Path(tmp) / "db.sqlite"
            key, ids = await _prepare(db, f"{base}/hook", plan.tasks())
            async with served(db, Path(tmp) / "serve.log") as server:
                connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
                timeout = aiohttp.ClientTimeout(total=60)
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                    load = _Load(http, server.url, key, receiver, base)
                    await load.step(100, _take(ids, plan.warmup), server.pid)  # warm-up
                    hop = await load.hop(HEADLINE, int(HEADLINE * 2))
                    steps = await _ramp(load, plan, ids, server.pid)
    return steps, hop


async def _ramp(load: _Load, plan: _Plan, ids: list[str], pid: int) -> list[_Step]:
    """Rates upwards until one is not steady; the headline rate is always measured."""
    steps: list[_Step] = []
    for rate in plan.rates:
        if steps and not steps[-1].steady and rate != HEADLINE:
            if any(s.rate >= HEADLINE for s in steps):
                break
            continue
        step = await load.step(rate, _take(ids, plan.count(rate)), pid)
        if not step.steady and step.count == step.planned and len(ids) >= plan.count(rate):
            # Once more: on a shared machine one stall can push a p99 over the line.
            step = await load.step(rate, _take(ids, plan.count(rate)), pid)
            step.tries = 2
        steps.append(step)
    return steps


def _take(ids: list[str], count: int) -> list[str]:
    taken = ids[:count]
    del ids[:count]
    return taken


def _ms(values: list[float], p: float) -> str:
    return fmt(percentile(values, p), 1)


async def run(quick: bool) -> Result:
    plan = _plan(quick)
    steps, hop = await _measure(plan)
    result = Result(
        "e2e",
        "End to end: submit through the API, webhook at the receiver",
        [
            "submits/s offered",
            "submits",
            "achieved/s",
            "submit p50 ms",
            "submit p99 ms",
            "webhook p50 ms",
            "p95 ms",
            "p99 ms",
            "p99 from request ms",
            "server CPU ms/task",
            "steady",
        ],
    )
    hop_row = ["baseline: one bare HTTP hop", f"{len(hop):,}", "", "", ""]
    result.rows.append([*hop_row, _ms(hop, 50), _ms(hop, 95), _ms(hop, 99), "", "", ""])
    for step in steps:
        result.rows.append(
            [
                f"{step.rate:,}",
                f"{step.count:,}",
                fmt(step.achieved, 0),
                _ms(step.rtt, 50),
                _ms(step.rtt, 99),
                _ms(step.after_answer, 50),
                _ms(step.after_answer, 95),
                _ms(step.after_answer, 99),
                _ms(step.after_request, 99),
                fmt(step.server_cpu / step.count * 1000, 2),
                ("yes" if step.steady else f"no ({_why(step)})")
                + (", 2nd try" if step.tries > 1 else ""),
            ]
        )
    headline = next(s for s in steps if s.rate == HEADLINE)
    steady = [s.rate for s in steps if s.steady]
    result.figures += [
        Figure(
            "p50 after the answer, 500/s",
            percentile(headline.after_answer, 50),
            " ms",
            ("<", 5),
            1,
        ),
        Figure(
            "p99 after the answer, 500/s",
            percentile(headline.after_answer, 99),
            " ms",
            ("<", 25),
            1,
        ),
        Figure(
            "highest steady rate (p99 < 100 ms)",
            float(max(steady)) if steady else math.nan,
            " submits/s",
            digits=0,
        ),
    ]
    result.notes += [
        f"At 500/s, {headline.early / max(1, headline.count - headline.missing):.0%} of the"
        " webhooks arrived before their submit's answer (counted as 0 ms).",
        "The server (uvicorn, FastAPI, the engine and the dispatcher in one process) and this"
        " process (load and receiver) share the machine's cores.",
    ]
    path = IMG / "bench_e2e_latency.png"
    rates = [float(s.rate) for s in steps]
    series = {
        f"p{p} after the answer": (rates, [percentile(s.after_answer, p) for s in steps])
        for p in (50, 95, 99)
    }
    series["p99 from the request"] = (rates, [percentile(s.after_request, 99) for s in steps])
    if plot_lines(
        path,
        title="Submit to webhook latency vs submit rate",
        xlabel="submits per second (open loop)",
        ylabel="ms (log)",
        series=series,
        logy=True,
        hline=(STEADY_P99_MS, "100 ms"),
    ):
        result.plots.append(Plot(path, "Latency percentiles vs submit rate"))
    return result


def _why(step: _Step) -> str:
    if step.count < step.planned:
        return f"fell behind after {step.count:,}"
    if step.failed:
        return f"{step.failed} failed"
    if step.missing:
        return f"{step.missing} missing"
    if step.achieved < 0.9 * step.rate:
        return "fell behind"
    return "p99 >= 100 ms"


if __name__ == "__main__":
    main_for(run)
