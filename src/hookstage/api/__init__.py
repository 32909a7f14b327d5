"""hookstage's HTTP API (FastAPI): projects, assets, tasks, deliveries and keys under `/api`.

Every `/api` call needs an API key (see `auth`); every failure answers in one JSON shape
(see `errors`). OpenAPI is at `/openapi.json`, the interactive docs at `/docs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from hookstage import __version__
from hookstage.api import (
    assets,
    auth,
    deliveries,
    errors,
    keys,
    limits,
    metrics,
    projects,
    tasks,
    workers,
)
from hookstage.engine import Engine
from hookstage.web import mount as mount_dashboard

__all__ = ["create_app"]


def create_app(
    engine: Engine,
    *,
    dispatcher_state: Callable[[], dict[str, Any]] | None = None,
    max_body: int = limits.MAX_BODY,
    dispatcher_metrics: metrics.Source | None = None,
) -> FastAPI:
    """The API over `engine`; `/healthz` adds `dispatcher_state()` when it is given.
    A request body over `max_body` bytes is refused with 413. `/metrics` adds
    `dispatcher_metrics()` (this process's dispatcher's counts) when it is given."""
    app = FastAPI(
        title="hookstage",
        version=__version__,
        description="Annotation workflows whose Webhook stage delivers every task, signed.",
        # FastAPI's own OpenTelemetry: hookstage serves its metrics at /metrics, and the
        # check for a configured provider cost every request time.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.engine = engine
    app.state.metrics = dispatcher_metrics
    errors.install(app)
    app.add_middleware(limits.BodyLimit, limit=max_body)
    routers = [m.router for m in (projects, assets, tasks, deliveries, keys, metrics, workers)]
    for router in routers:
        app.include_router(router)

    @app.get("/healthz", tags=["health"], summary="Liveness, without a key")
    async def healthz() -> JSONResponse:
        health: dict[str, Any] = {"status": "ok", "version": __version__}
        if dispatcher_state is not None:
            try:
                health["dispatcher"] = dispatcher_state()
            except Exception:
                errors.log.exception("dispatcher_state() failed")
                return JSONResponse({**health, "status": "degraded"}, status_code=503)
        return JSONResponse(health)

    mount_dashboard(app, engine, dispatcher_state=dispatcher_state)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            routes = [route for router in routers for route in router.routes]
            auth.document(FastAPI.openapi(app), routes)  # in place: FastAPI keeps it
        return app.openapi_schema  # type: ignore[return-value]  # set just above

    app.openapi = openapi  # type: ignore[method-assign]
    return app
