"""What the dashboard reads beyond the use cases: a Webhook stage's last hour minute by
minute, the attempts of a page of deliveries at once, a project's batch names.

Plain async functions over one connection, like ``deliveries``; call them inside
``Store.read()``. Every query is bounded by an index (attempts by start time, attempts by
delivery, batches by project).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage.store.deliveries import AttemptInfo
from hookstage.store.tables import attempts, batches, deliveries

__all__ = ["Minute", "attempts_of", "batch_names", "per_minute"]


@dataclass(frozen=True)
class Minute:
    """One minute of a stage's attempts: how many, how many a 2xx answered, and the
    nearest-rank 50th and 95th percentiles of their durations (None: no attempt)."""

    start: float
    attempts: int
    delivered: int
    p50_ms: float | None
    p95_ms: float | None

    @property
    def failed(self) -> int:
        return self.attempts - self.delivered


async def per_minute(
    conn: AsyncConnection,
    project_id: str,
    stage_id: str,
    *,
    now: float,
    minutes: int = 60,
) -> list[Minute]:
    """The stage's last ``minutes`` clock minutes up to ``now``, oldest first, every minute
    listed (the last one is the minute ``now`` is in)."""
    if minutes < 1:
        raise ValueError(f"minutes: expected 1 or more, got {minutes}")
    since = (now // 60 - (minutes - 1)) * 60
    index = _minute_of(attempts.c.started_at, since, conn.dialect.name)
    ok = sa.and_(
        attempts.c.status_code >= 200,
        attempts.c.status_code < 300,
        attempts.c.error_class.is_(None),
    )
    ranked = (
        sa.select(
            index.label("minute"),
            attempts.c.duration_ms.label("duration"),
            sa.case((ok, 1), else_=0).label("ok"),
            sa.func.row_number()
            .over(partition_by=index, order_by=attempts.c.duration_ms)
            .label("rank"),
            sa.func.count().over(partition_by=index).label("size"),
        )
        .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
        .where(
            attempts.c.started_at >= since,
            attempts.c.started_at < since + minutes * 60,
            deliveries.c.project_id == project_id,
            deliveries.c.stage_id == stage_id,
        )
        .subquery()
    )
    query = sa.select(
        ranked.c.minute,
        sa.func.count(),
        sa.func.sum(ranked.c.ok),
        _nearest_rank(ranked, 0.5),
        _nearest_rank(ranked, 0.95),
    ).group_by(ranked.c.minute)
    found = {int(row[0]): tuple(row) for row in (await conn.execute(query)).all()}
    return [_minute(since + i * 60, found.get(i)) for i in range(minutes)]


def _minute_of(column: Any, since: float, dialect: str) -> sa.ColumnElement[Any]:
    offset = (column - since) / 60
    # CAST truncates on SQLite (offsets are >= 0 here, so it floors); PostgreSQL rounds.
    if dialect == "postgresql":
        return sa.cast(sa.func.floor(offset), sa.Integer)
    return sa.cast(offset, sa.Integer)


def _nearest_rank(ranked: sa.Subquery, fraction: float) -> sa.ColumnElement[Any]:
    # Durations rise with rank, so the smallest at or past fraction * size is the one at
    # rank ceil(fraction * size): the nearest-rank percentile, exact, in one pass.
    return sa.func.min(
        sa.case((ranked.c.rank >= fraction * ranked.c.size, ranked.c.duration), else_=None)
    )


def _minute(start: float, row: tuple[Any, ...] | None) -> Minute:
    if row is None:
        return Minute(start, 0, 0, None, None)
    return Minute(start, int(row[1]), int(row[2] or 0), _float(row[3]), _float(row[4]))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def attempts_of(
    conn: AsyncConnection, delivery_ids: Sequence[str], *, response_start: int = 512
) -> dict[str, list[AttemptInfo]]:
    """The attempts of each delivery, oldest first, in one query (every id listed); of each
    response body only the first ``response_start`` bytes are read."""
    found: dict[str, list[AttemptInfo]] = {d: [] for d in delivery_ids}
    if not delivery_ids:
        return found
    query = (
        sa.select(
            attempts.c.delivery_id,
            attempts.c.number,
            attempts.c.started_at,
            attempts.c.duration_ms,
            attempts.c.status_code,
            attempts.c.error_class,
            attempts.c.error,
            attempts.c.response_headers,
            sa.func.substr(attempts.c.response_body, 1, response_start).label("response_body"),
        )
        .where(attempts.c.delivery_id.in_(list(delivery_ids)))
        .order_by(attempts.c.delivery_id, attempts.c.started_at, attempts.c.id)
    )
    for row in (await conn.execute(query)).all():
        fields = dict(row._mapping)
        delivery_id = fields.pop("delivery_id")
        body = fields["response_body"]
        fields["response_body"] = None if body is None else bytes(body)
        found[delivery_id].append(AttemptInfo(**fields))
    return found


async def batch_names(conn: AsyncConnection, project_id: str) -> list[str]:
    query = sa.select(batches.c.name).where(batches.c.project_id == project_id)
    return list((await conn.execute(query.order_by(batches.c.name))).scalars())
