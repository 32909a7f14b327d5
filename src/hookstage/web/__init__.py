"""The dashboard: projects, the workflow graph, tasks, deliveries, and the buttons that send
them again. Server-rendered (Jinja2) with htmx for the live parts; no build step.

`mount(app, engine)` adds it to the API's FastAPI app at `/` (with `/static` for htmx); it
shares the API's keys: a person logs in by pasting one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from hookstage.engine import Engine
from hookstage.web.pages import router

__all__ = ["mount"]

STATIC = Path(__file__).resolve().parent.parent / "static"


def mount(
    app: FastAPI,
    engine: Engine,
    *,
    dispatcher_state: Callable[[], Mapping[str, Any]] | None = None,
) -> None:
    """Serve the dashboard from `app` over `engine`; `dispatcher_state()` (when given)
    tells each Webhook stage's circuit."""
    app.state.engine = engine
    app.state.dashboard_dispatcher_state = dispatcher_state
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
