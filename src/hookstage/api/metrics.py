"""`GET /metrics`: Prometheus text format, behind any API key (read-only is enough).

The database's gauges (deliveries by state, due queue and its oldest age per stage,
disabled endpoints) are read at scrape time; this process's dispatcher adds what it counted
(attempts by outcome, delivery latency, circuits) when the app was given it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hookstage import metrics
from hookstage.api import workers
from hookstage.api.auth import EngineDep, Reader

__all__ = ["Source", "router"]

Source = Callable[[], Sequence[metrics.Family]]

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Delivery metrics in Prometheus text format (any API key, read-only is enough)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def scrape(request: Request, engine: EngineDep, _: Reader) -> Response:
    queues, disabled = await engine.delivery_stats()
    families = metrics.store_families(queues, disabled, now=engine.clock())
    families.extend(workers.families(await engine.list_workers(), now=engine.clock()))
    source: Source | None = getattr(request.app.state, "metrics", None)
    if source is not None:
        families.extend(source())
    return Response(metrics.render(families), media_type=metrics.CONTENT_TYPE)
