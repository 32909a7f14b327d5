"""hookstage against the way the open-source labeling tools send webhooks, in one run.

Label Studio and CVAT send each webhook from a queue job with ``requests``, one call per
delivery, one at a time. Here the same stored ~2 KB bodies go to the same receiver
(bench_drain's, in its own process, checking X-Hub-Signature) from:

- hookstage: the ``Dispatcher`` draining the outbox (64 in flight, the default per endpoint),
  every attempt recorded durably;
- bare aiohttp: bench_drain's baseline, the same concurrency, recording nothing;
- requests.Session: one call per delivery in a loop, keep-alive (kinder than the tools);
- requests.post: one call per delivery, a new connection each (what the tools call).

The peers post the stored bytes (no JSON encoding per call, again in their favour) and
record nothing. Twice: against a receiver that answers at once, and one that takes 50 ms,
where sending one at a time caps a sender near 20 per second.

    .venv/bin/python -m benchmarks.bench_peer [--quick]
"""

from __future__ import annotations

import asyncio
import importlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import bench_drain
from benchmarks.common import (
    IMG,
    Figure,
    Plot,
    Result,
    Span,
    drain_receiver,
    fmt,
    main_for,
    measure,
    plot_bars,
)
from hookstage.signing import hub_signature
from hookstage.store import open_store

__all__ = ["run"]

CONCURRENCY = 64


@dataclass(frozen=True)
class _Case:
    """One receiver and how many deliveries each sender gets against it."""

    label: str
    delay: float
    hookstage: int
    session: int
    post: int


@dataclass(frozen=True)
class _Row:
    case: str
    sender: str
    count: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def _cases(quick: bool) -> list[_Case]:
    if quick:
        return [_Case("fast", 0.0, 2000, 600, 200), _Case("50 ms", 0.05, 640, 10, 10)]
    return [_Case("fast", 0.0, 10_000, 3000, 1000), _Case("50 ms", 0.05, 3000, 40, 40)]


def _requests_loop(url: str, bodies: list[tuple[str, bytes]], *, session: bool) -> float:
    """The peers' sender: one blocking call per delivery, in order; seconds taken."""
    # By name: `requests` is in the optional `bench` extra, and has no type information.
    requests: Any = importlib.import_module("requests")
    http = requests.Session() if session else requests
    failed = 0
    started = time.perf_counter()
    for delivery_id, body in bodies:
        headers = {
            "Content-Type": "application/json",
            "X-Hookstage-Delivery": delivery_id,
            "X-Hub-Signature": hub_signature(bench_drain.SECRET, body),
        }
        answer = http.post(url, data=body, headers=headers, timeout=15)
        failed += answer.status_code != 200
    elapsed = time.perf_counter() - started
    if session:
        http.close()
    if failed:
        raise RuntimeError(f"requests: {failed} deliveries were not answered 200")
    return elapsed


async def _case(case: _Case) -> list[_Row]:
    rows: list[_Row] = []

    def add(sender: str, count: int, seconds: float, span: Span) -> None:
        rows.append(_Row(case.label, sender, count, seconds, span.cpu))

    async with drain_receiver(case.delay) as url:
        with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
            store = await open_store(Path(tmp) / "db.sqlite")
            try:
                await bench_drain._seed(store, case.hookstage)
                bodies = await bench_drain._stored_bodies(store)
                with measure() as span:
                    seconds = await bench_drain._baseline(url, bodies, CONCURRENCY)
                add("bare aiohttp (no recording)", len(bodies), seconds, span())
                with measure() as span:
                    seconds = await bench_drain._dispatch(store, url, case.hookstage, CONCURRENCY)
                add("hookstage (every attempt stored)", case.hookstage, seconds, span())
            finally:
                await store.close()
        for sender, count, session in (
            ("requests.Session loop", case.session, True),
            ("requests.post per call", case.post, False),
        ):
            with measure() as span:
                seconds = await asyncio.to_thread(
                    _requests_loop, url, bodies[:count], session=session
                )
            add(sender, count, seconds, span())
    return rows


async def run(quick: bool) -> Result:
    rows: list[_Row] = []
    for case in _cases(quick):
        rows.extend(await _case(case))
    result = Result(
        "peer",
        "Peer: hookstage vs one requests call per delivery",
        ["receiver", "sender", "deliveries", "deliveries/s", "CPU us/delivery", "hookstage is"],
    )
    for label in dict.fromkeys(row.case for row in rows):
        ours = next(r.rate for r in rows if r.case == label and r.sender.startswith("hookstage"))
        for row in (r for r in rows if r.case == label):
            multiple = "" if row.sender.startswith("hookstage") else f"{ours / row.rate:,.1f}x"
            result.rows.append(
                [
                    row.case,
                    row.sender,
                    f"{row.count:,}",
                    fmt(row.rate, 0),
                    fmt(row.cpu / row.count * 1e6, 0),
                    multiple,
                ]
            )
            if row.sender.startswith("requests"):
                name = f"hookstage / {row.sender.split()[0]}, {label} receiver"
                result.figures.append(Figure(name, ours / row.rate, "x", digits=1))
    result.rows.sort(key=lambda r: (r[0] != "fast", r[1]))
    result.notes.append(
        f"hookstage and bare aiohttp keep {CONCURRENCY} requests in flight; the requests"
        " senders one. CPU is this process's (the receiver runs in its own)."
    )
    path = IMG / "bench_peer.png"
    bars = {f"{row.case}: {row.sender}": row.rate for row in rows}
    title, axis = "Deliveries per second", "deliveries/s (log)"
    if plot_bars(path, title=title, ylabel=axis, bars=bars, logy=True, digits=0):
        result.plots.append(Plot(path, "Deliveries per second by sender and receiver (log)"))
    return result


if __name__ == "__main__":
    main_for(run)
