"""Which processes are running: every `serve` and `worker` reports itself (a heartbeat).

Each process rewrites its row every ``beat_seconds``; a row not rewritten for three beats
is a process that is gone (stopped without saying so: killed, or its machine lost). A
process that stops cleanly removes its row. Plain async functions over one connection,
like the other query modules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage.store.tables import workers

__all__ = ["KINDS", "MISSED_BEATS", "Worker", "alive", "beat", "leave", "prune"]

KINDS = ("serve", "worker")
MISSED_BEATS = 3


@dataclass(frozen=True)
class Worker:
    """One process as it last reported itself. ``kind``: "serve" (the API, delivering too
    when ``dispatching``) or "worker" (delivering only)."""

    id: str
    kind: str
    host: str
    pid: int
    version: str
    dispatching: bool
    beat_seconds: float
    started_at: float
    seen_at: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.beat_seconds > 0:
            raise ValueError(f"beat_seconds: expected a positive number, got {self.beat_seconds}")

    def alive_at(self, now: float) -> bool:
        return now - self.seen_at <= MISSED_BEATS * self.beat_seconds


async def beat(conn: AsyncConnection, worker: Worker) -> None:
    """Write the process's row as given (``seen_at`` is the time of this beat)."""
    # Update, else insert: no other process writes this id, so nothing races the insert.
    changed = await conn.execute(
        workers.update().where(workers.c.id == worker.id).values(seen_at=worker.seen_at)
    )
    if changed.rowcount == 0:
        await conn.execute(workers.insert().values(**asdict(worker)))


async def leave(conn: AsyncConnection, worker_id: str) -> None:
    """Remove the row of a process that is stopping cleanly."""
    await conn.execute(workers.delete().where(workers.c.id == worker_id))


async def alive(conn: AsyncConnection, *, now: float) -> list[Worker]:
    """The processes seen within their last three beats, oldest first."""
    query = (
        sa.select(workers)
        .where(workers.c.seen_at >= now - MISSED_BEATS * workers.c.beat_seconds)
        .order_by(workers.c.started_at, workers.c.id)
    )
    return [Worker(**row._mapping) for row in (await conn.execute(query)).all()]


async def prune(conn: AsyncConnection, *, before: float) -> int:
    """Forget processes last seen before ``before``; returns how many."""
    done = await conn.execute(workers.delete().where(workers.c.seen_at < before))
    return max(done.rowcount, 0)
