"""`GET /api/workers` (any key): the `serve` and `worker` processes running now, as each
last reported itself (its heartbeat); and their gauges for `/metrics`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter

from hookstage import metrics
from hookstage.api.auth import EngineDep, Reader
from hookstage.api.times import iso
from hookstage.store.workers import KINDS, Worker

__all__ = ["families", "router", "shown"]

router = APIRouter(prefix="/api/workers", tags=["workers"])


def shown(worker: Worker) -> dict[str, Any]:
    return {
        "id": worker.id,
        "kind": worker.kind,
        "host": worker.host,
        "pid": worker.pid,
        "version": worker.version,
        "dispatching": worker.dispatching,
        "heartbeatSeconds": worker.beat_seconds,
        "startedAt": iso(worker.started_at),
        "seenAt": iso(worker.seen_at),
    }


@router.get("", summary="The serve and worker processes alive now (seen within three beats)")
async def list_workers(engine: EngineDep, _: Reader) -> dict[str, Any]:
    return {"workers": [shown(worker) for worker in await engine.list_workers()]}


def families(alive: list[Worker], *, now: float) -> list[metrics.Family]:
    """`hookstage_processes` (how many are alive, by kind and whether they deliver) and
    `hookstage_process_seen_age_seconds` (per process: since its last heartbeat)."""
    kinds = Counter((w.kind, w.dispatching) for w in alive)
    counts = [
        metrics.Sample({"kind": kind, "dispatching": str(d).lower()}, kinds[kind, d])
        for kind in KINDS
        for d in (True, False)
    ]
    ages = [
        metrics.Sample({"worker": w.id, "kind": w.kind, "host": w.host}, max(0.0, now - w.seen_at))
        for w in alive
    ]
    return [
        metrics.Family(
            "hookstage_processes",
            "gauge",
            "serve and worker processes alive (seen within three heartbeats).",
            counts,
        ),
        metrics.Family(
            "hookstage_process_seen_age_seconds",
            "gauge",
            "Seconds since each alive process's last heartbeat.",
            ages,
        ),
    ]
