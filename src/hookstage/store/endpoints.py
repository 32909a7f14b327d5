"""Webhook stage endpoints a 410 Gone disabled: disable, enable, read.

Plain async functions over one connection, like ``deliveries``. While a stage's endpoint is
disabled, ``deliveries.claim`` leaves its deliveries out; they keep their attempt counts
(no retry budget is spent waiting), and ``enable`` makes them due at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage.store import insert_missing
from hookstage.store.deliveries import PARKED, PENDING
from hookstage.store.notify import announce
from hookstage.store.tables import deliveries, endpoints

__all__ = ["EndpointStatus", "disable", "disabled", "enable", "status"]


@dataclass(frozen=True)
class EndpointStatus:
    """A stage's endpoint: disabled since ``disabled_at`` (None: enabled), and why;
    ``enabled_at``: when a person last enabled it."""

    project_id: str
    stage_id: str
    disabled_at: float | None = None
    disabled_reason: str | None = None
    enabled_at: float | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


async def disable(
    conn: AsyncConnection, stages: Iterable[tuple[str, str]], *, now: float, reason: str
) -> None:
    """Disable the endpoints of (project, stage) pairs (one already disabled keeps its first
    time and reason) and park their waiting deliveries."""
    for project_id, stage_id in sorted(set(stages)):
        await _ensure_row(conn, project_id, stage_id)
        await conn.execute(
            endpoints.update()
            .where(
                endpoints.c.project_id == project_id,
                endpoints.c.stage_id == stage_id,
                endpoints.c.disabled_at.is_(None),
            )
            .values(disabled_at=now, disabled_reason=reason)
        )
        # Leased ones are left to their workers: their answers come back to the same rule.
        await conn.execute(
            deliveries.update()
            .where(
                deliveries.c.project_id == project_id,
                deliveries.c.stage_id == stage_id,
                deliveries.c.state == PENDING,
                deliveries.c.leased_by.is_(None),
            )
            .values(due_at=PARKED)
        )


async def enable(conn: AsyncConnection, project_id: str, stage_id: str, *, now: float) -> int:
    """Enable a stage's endpoint; its parked deliveries are due at ``now``. Returns how many
    deliveries that made due (0 also when it was not disabled)."""
    await _ensure_row(conn, project_id, stage_id)
    await conn.execute(
        endpoints.update()
        .where(endpoints.c.project_id == project_id, endpoints.c.stage_id == stage_id)
        .values(disabled_at=None, disabled_reason=None, enabled_at=now)
    )
    done = await conn.execute(
        deliveries.update()
        .where(
            deliveries.c.project_id == project_id,
            deliveries.c.stage_id == stage_id,
            deliveries.c.state == PENDING,
            deliveries.c.due_at >= PARKED,
        )
        .values(due_at=now)
    )
    await announce(conn)  # what waited, parked or not, is due: wake every worker
    return max(done.rowcount, 0)


async def status(conn: AsyncConnection, project_id: str, stage_id: str) -> EndpointStatus:
    row = (
        await conn.execute(
            sa.select(
                endpoints.c.disabled_at, endpoints.c.disabled_reason, endpoints.c.enabled_at
            ).where(endpoints.c.project_id == project_id, endpoints.c.stage_id == stage_id)
        )
    ).one_or_none()
    if row is None:
        return EndpointStatus(project_id, stage_id)
    return EndpointStatus(project_id, stage_id, *row)


async def disabled(conn: AsyncConnection) -> list[EndpointStatus]:
    """Every disabled endpoint."""
    rows = await conn.execute(
        sa.select(
            endpoints.c.project_id,
            endpoints.c.stage_id,
            endpoints.c.disabled_at,
            endpoints.c.disabled_reason,
            endpoints.c.enabled_at,
        )
        .where(endpoints.c.disabled_at.is_not(None))
        .order_by(endpoints.c.project_id, endpoints.c.stage_id)
    )
    return [EndpointStatus(*row) for row in rows.all()]


async def _ensure_row(conn: AsyncConnection, project_id: str, stage_id: str) -> None:
    # Not read-then-insert: on PostgreSQL two workers may disable one stage at once.
    await insert_missing(conn, endpoints, [{"project_id": project_id, "stage_id": stage_id}])
