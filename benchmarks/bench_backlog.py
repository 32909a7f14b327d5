"""Backlog: claim time and drain throughput as the outbox grows to 10k, 100k and 1M pending.

One SQLite file (WAL, synchronous=FULL once loaded) holds a project whose Webhook stage
points at bench_drain's receiver (its own process). Pending deliveries (~2.1 KB bodies, one
task each, all due) are written straight into the tables (executemany, bulk-load pragmas,
tasks included) and topped up to each size in turn, 10k being the baseline of the others:

- claim: ``hookstage.store.deliveries.claim`` called directly, batches of 500 (the
  dispatcher's), each in its own transaction, commit included: median and p90;
- drain: a real `hookstage serve` process (its dispatcher at its defaults) started on the
  file; the time it takes to deliver a fixed number (after the first 200, which cover its
  start), read from the database, and the process's peak RSS (VmHWM) and CPU.

Targets: 1M within 1.5x of 10k, for claims and throughput; the dispatcher under 300 MB.

    .venv/bin/python -m benchmarks.bench_backlog [--quick]
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import bench_drain
from benchmarks.common import (
    IMG,
    Figure,
    Plot,
    Result,
    drain_receiver,
    fmt,
    main_for,
    percentile,
    plot_lines,
    proc_cpu_seconds,
    proc_peak_rss_mb,
    served,
)
from hookstage.demo import DEMO_SCHEMA, demo_workflow
from hookstage.engine import Engine
from hookstage.store import open_store
from hookstage.store.deliveries import claim

__all__ = ["run"]

STAGE = "webhook"
BATCH = 500
CLAIMS = 20
WARM = 200
_CHUNK = 20_000


@dataclass(frozen=True)
class _Size:
    pending: int
    claim_ms: list[float]  # the claim's statements
    turn_ms: list[float]  # its whole transaction: BEGIN IMMEDIATE ... COMMIT (fsync)
    drained: int
    drain_seconds: float
    rss_mb: float
    cpu_us: float  # serve's CPU per delivery drained
    start_seconds: float  # from launching serve to its first deliveries recorded

    @property
    def rate(self) -> float:
        return self.drained / self.drain_seconds


# -- the file ----------------------------------------------------------------------------------


def _fill(db: Path, project_id: str, start: int, stop: int) -> None:
    """Deliveries number ``start`` to ``stop - 1``, pending and due, with their tasks."""
    now = time.time()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        # A bulk load into a scratch file: no journal, no fsync; WAL again after.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-200000")
        conn.execute("BEGIN")
        for first in range(start, stop, _CHUNK):
            numbers = range(first, min(stop, first + _CHUNK))
            conn.executemany(_TASK_SQL, [_task(i, project_id, now) for i in numbers])
            conn.executemany(_DELIVERY_SQL, [_delivery(i, project_id, now) for i in numbers])
            conn.executemany(_BODY_SQL, [(_id(i), bench_drain._body(i)) for i in numbers])
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


_TASK_SQL = (
    "INSERT INTO tasks (id, asset_id, project_id, external_id, data_url, dataset,"
    " asset_metadata, stage_id, work_stage_id, annotations, stage_history, updated_at,"
    " total_duration, entered_at, created_at, version)"
    " VALUES (?, ?, ?, ?, ?, '[]', '{}', 'review', 'Label', '{}', '[]', ?, 0, ?, ?, 1)"
)
_DELIVERY_SQL = (
    "INSERT INTO deliveries (id, project_id, stage_id, task_id, external_id, size, state,"
    " attempts, due_at, created_at) VALUES (?, ?, ?, ?, ?, 2100, 'pending', 0, ?, ?)"
)
_BODY_SQL = "INSERT INTO delivery_bodies (delivery_id, body) VALUES (?, ?)"


def _id(i: int) -> str:
    return f"dlv_{i:024x}"


def _task(i: int, project_id: str, now: float) -> tuple[object, ...]:
    name = f"image-{i:08d}.png"
    data = f"https://assets.example.com/{i:08d}.png"
    return (f"t{i:023x}", f"a{i:023x}", project_id, name, data, now, now, now)


def _delivery(i: int, project_id: str, now: float) -> tuple[object, ...]:
    # Due over the last hour, oldest first, as a backlog that built up would be.
    due = now - 3600 + i * 1e-3
    return (_id(i), project_id, STAGE, f"t{i:023x}", f"image-{i:08d}.png", due, due)


def _count(db: Path, state: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        found = conn.execute("SELECT count(*) FROM deliveries WHERE state = ?", (state,))
        return int(found.fetchone()[0])
    finally:
        conn.close()


# -- the measurements --------------------------------------------------------------------------


async def _project(db: Path, url: str) -> str:
    store = await open_store(db)
    try:
        project = await Engine(store).create_project(
            name="backlog",
            category_schema=DEMO_SCHEMA,
            workflow_json=demo_workflow(url, bench_drain.SECRET),
        )
        return project.id
    finally:
        await store.close()


async def _claims(db: Path) -> tuple[list[float], list[float]]:
    """Milliseconds of each claim's statements, and of each whole claim transaction."""
    store = await open_store(db, migrate=False)
    claims, turns = [], []
    try:
        for _ in range(CLAIMS):
            started = time.perf_counter()
            async with store.transaction() as conn:
                statements = time.perf_counter()
                got = await claim(
                    conn,
                    now=time.time(),
                    # Due again at once, behind the backlog: the size stays as it is.
                    lease_seconds=0.001,
                    worker="bench-backlog",
                    limit=BATCH,
                )
                claims.append((time.perf_counter() - statements) * 1000)
            turns.append((time.perf_counter() - started) * 1000)
            if len(got) != BATCH:
                raise RuntimeError(f"claim: {len(got)} deliveries instead of {BATCH}")
    finally:
        await store.close()
    return claims, turns


async def _drain(db: Path, tmp: Path, count: int) -> tuple[float, float, float, float]:
    """Seconds to deliver ``count`` (after WARM), serve's peak RSS MB, its CPU seconds over
    them, and the seconds from launch to WARM delivered."""
    before = await asyncio.to_thread(_count, db, "delivered")
    launched = time.perf_counter()
    async with served(db, tmp / "serve.log") as server:
        await _until(db, before + WARM, launched)
        started, cpu = time.perf_counter(), proc_cpu_seconds(server.pid)
        await _until(db, before + WARM + count, started)
        seconds = time.perf_counter() - started
        cpu = proc_cpu_seconds(server.pid) - cpu
        rss = proc_peak_rss_mb(server.pid)
    return seconds, rss, cpu, started - launched


async def _until(db: Path, delivered: int, since: float, limit: float = 300) -> None:
    while await asyncio.to_thread(_count, db, "delivered") < delivered:
        if time.perf_counter() - since > limit:
            raise RuntimeError(f"backlog: {delivered} not delivered within {limit:.0f} s")
        await asyncio.sleep(0.02)


async def _measure(sizes: tuple[int, ...], drain: int) -> list[_Size]:
    results = []
    async with drain_receiver(0.0) as url:
        with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
            db = Path(tmp) / "db.sqlite"
            project_id = await _project(db, url)
            written = 0
            for size in sizes:
                pending = await asyncio.to_thread(_count, db, "pending")
                await asyncio.to_thread(_fill, db, project_id, written, written + size - pending)
                written += size - pending
                claims, turns = await _claims(db)
                seconds, rss, cpu, start = await _drain(db, Path(tmp), drain)
                results.append(
                    _Size(size, claims, turns, drain, seconds, rss, cpu / drain * 1e6, start)
                )
    return results


# -- the report --------------------------------------------------------------------------------


async def run(quick: bool) -> Result:
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    measured = await _measure(sizes, 2000 if quick else 5000)
    base = measured[0]
    result = Result(
        "backlog",
        "Backlog: claim and drain as pending deliveries grow",
        [
            "pending",
            f"claim of {BATCH} ms (median)",
            "p90",
            "vs 10k",
            "with its commit ms",
            "drain deliveries/s",
            "vs 10k",
            "serve peak RSS MB",
            "serve CPU us/delivery",
            "serve start s",
        ],
    )
    for size in measured:
        result.rows.append(
            [
                f"{size.pending:,}",
                fmt(statistics.median(size.claim_ms), 1),
                fmt(percentile(size.claim_ms, 90), 1),
                f"{_ratio(size, base):.2f}x",
                fmt(statistics.median(size.turn_ms), 1),
                fmt(size.rate, 0),
                f"{size.rate / base.rate:.2f}x",
                fmt(size.rss_mb, 0),
                fmt(size.cpu_us, 0),
                fmt(size.start_seconds, 1),
            ]
        )
    top = measured[-1]
    label = f"{top.pending // 1000:,}k" if top.pending < 1_000_000 else "1M"
    result.figures += [
        Figure(f"claim time, {label} / 10k", _ratio(top, base), "x", ("<=", 1.5)),
        Figure(f"drain throughput, {label} / 10k", top.rate / base.rate, "x", (">=", 1 / 1.5)),
        Figure(f"serve peak RSS at {label}", top.rss_mb, " MB", ("<", 300), 0),
    ]
    result.notes += [
        f"{CLAIMS} claims of {BATCH} per size: the claim's statements (UPDATE ... RETURNING"
        " with the bodies), and its whole transaction (BEGIN IMMEDIATE to COMMIT with fsync).",
        f"Drain of {top.drained:,} per size by `hookstage serve` (dispatcher defaults: 256 in"
        " flight, 64 per endpoint); its RSS includes the API beside the dispatcher; start:"
        " from launching it to its first 200 delivered.",
    ]
    if math.isnan(top.rss_mb):
        result.notes.append("peak RSS unavailable (no /proc)")
    if _plot(measured):
        result.plots.append(Plot(IMG / "bench_backlog_claim.png", "Claim time vs backlog"))
    return result


def _ratio(size: _Size, base: _Size) -> float:
    return statistics.median(size.claim_ms) / statistics.median(base.claim_ms)


def _plot(measured: list[_Size]) -> bool:
    xs = [float(s.pending) for s in measured]
    series = {
        f"claim of {BATCH}, median": (xs, [statistics.median(s.claim_ms) for s in measured]),
        f"claim of {BATCH}, p90": (xs, [percentile(s.claim_ms, 90) for s in measured]),
        "with its commit, median": (xs, [statistics.median(s.turn_ms) for s in measured]),
    }
    return plot_lines(
        IMG / "bench_backlog_claim.png",
        title="Claim time vs backlog",
        xlabel="pending deliveries (log)",
        ylabel="ms per claim of 200",
        series=series,
        logx=True,
        hline=(1.5 * statistics.median(measured[0].claim_ms), "1.5x the 10k median"),
    )


if __name__ == "__main__":
    main_for(run)
