"""The dashboard's pages: server-rendered HTML, readable without JavaScript.

htmx makes a few parts live (a stage's log and summary, a pending delivery's card) and lets
the action buttons post in place with a confirmation; without it every action has a
confirm page and a plain form. Failures are HTML pages too; the API's JSON errors stay
under ``/api``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from markupsafe import escape

from hookstage import workflow
from hookstage.engine import Conflict, Engine, EngineError, Invalid, NotFound, Project
from hookstage.store import StoreError, stats
from hookstage.store import deliveries as outbox
from hookstage.web import graph, overlay, session, views

__all__ = ["router", "templates"]

log = logging.getLogger("hookstage.web")

PAGE, MAX_PAGE = 50, 200
DELIVERIES_SHOWN = 20
LOG_LINES = 100

_SECURITY_HEADERS = {
    # Images may come from anywhere (a task's asset); scripts and styles only from here.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: http: https:;"
    " style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none';"
    " form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hookstage", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=views.when,
        iso=views.iso,
        duration=views.duration,
        answer=views.answer_text,
        count=views.count,
    )
    env.globals.update(link=views.link, notices=views.NOTICES)
    return env


_ENV = templates()


class _HtmlRoute(APIRoute):
    """Turns refusals into pages (login, 403, 404 ...) and adds the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except session.LoginNeeded as exc:
                response = _to_login(request, exc.back)
            except session.PageError as exc:
                response = _error(request, exc.status, exc.message)
            except EngineError as exc:
                response = _error(request, _status(exc), exc.message)
            except StoreError as exc:
                log.warning("database unavailable: %s", exc)
                response = _error(request, 503, "the database is busy or unavailable: try again")
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                response = _error(request, 500, "internal error: the failure was logged")
            response.headers.update(_SECURITY_HEADERS)
            return response

        return guarded


router = APIRouter(route_class=_HtmlRoute, include_in_schema=False)

ProjectId = Annotated[str, Path()]
StageId = Annotated[str, Path()]
OptionalText = Annotated[str | None, Query()]


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _status(exc: EngineError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Invalid):
        return 422
    return 409 if isinstance(exc, Conflict) else 400


def _htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("viewer", None)
    html = _ENV.get_template(name).render(request_path=request.url.path, **context)
    return HTMLResponse(html, status_code=status)


def _error(request: Request, status: int, message: str) -> HTMLResponse:
    if _htmx(request):
        return HTMLResponse(f'<p class="flash bad">{escape(message)}</p>', status_code=status)
    viewer = getattr(request.state, "viewer", None)
    return _render(request, "dash_error.html", status, viewer=viewer, code=status, message=message)


def _to_login(request: Request, back: str) -> Response:
    target = session.login_url(back)
    if _htmx(request):
        # htmx follows this header with a full page load instead of swapping a fragment in.
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def _viewer(request: Request) -> session.Viewer:
    viewer = await session.viewer(request, _engine(request))
    request.state.viewer = viewer  # for an error page later in the request
    return viewer


# -- login ------------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: OptionalText = None) -> Response:
    back = session.safe_next(next)
    try:
        await _viewer(request)
    except session.LoginNeeded:
        return _render(request, "dash_login.html", back=back, error=None)
    return RedirectResponse(back, status_code=303)


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await session.form(request)
    value = fields.get("key", "").strip()
    back = session.safe_next(fields.get("next"))
    key = await _engine(request).authenticate(value) if value else None
    if key is None:
        # Never echo what was typed: it may be a real key, one character off.
        error = "That key is unknown, revoked or expired." if value else "Paste an API key."
        return _render(request, "dash_login.html", 401, back=back, error=error)
    response = RedirectResponse(back, status_code=303)
    session.start(response, value, secure=_secure(request))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    fields = await session.form(request)
    viewer = await _viewer(request)
    viewer.check(fields.get("csrf"))
    response = RedirectResponse("/login", status_code=303)
    session.end(response, secure=_secure(request))
    return response


# -- projects ---------------------------------------------------------------------------------


@router.get("/")
async def projects_page(request: Request) -> Response:
    viewer = await _viewer(request)
    engine = _engine(request)
    rows = []
    for project in await engine.list_projects():
        counts = await engine.count_tasks(project.id)
        hooks = workflow.webhook_stages(project.workflow)
        rows.append((project, sum(counts.values()), hooks))
    return _render(request, "dash_projects.html", viewer=viewer, rows=rows)


@router.get("/projects/{project_id}")
async def project_page(request: Request, project_id: ProjectId) -> Response:
    viewer = await _viewer(request)
    engine = _engine(request)
    project = await engine.get_project(project_id)
    counts = await engine.count_tasks(project_id)
    async with engine.store.read() as conn:
        batches = await stats.batch_names(conn, project_id)
        hooks = {
            s.id: await outbox.counts(conn, project_id, s.id)
            for s in workflow.webhook_stages(project.workflow)
        }
    plan = graph.from_workflow(project.workflow, counts, project.category_schema)
    drawn = graph.render(plan, lambda node: _stage_link(project, node.id))
    return _render(
        request,
        "dash_project.html",
        viewer=viewer,
        project=project,
        counts=counts,
        total=sum(counts.values()),
        graph=drawn,
        batches=batches,
        hooks=hooks,
    )


def _stage_link(project: Project, stage_id: str) -> str:
    stage = project.workflow.stages[stage_id]
    if stage.type is workflow.StageType.WEBHOOK:
        return f"/projects/{project.id}/stages/{stage_id}"
    return views.link(f"/projects/{project.id}/tasks", stage=stage_id)


# -- tasks ------------------------------------------------------------------------------------


def _page_size(value: str | None) -> int:
    if value is None or value == "":
        return PAGE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise session.PageError(422, f"limit: expected a whole number from 1 to {MAX_PAGE}")
    return int(value)


@router.get("/projects/{project_id}/tasks")
async def tasks_page(
    request: Request,
    project_id: ProjectId,
    *,
    stage: OptionalText = None,
    batch: OptionalText = None,
    after: OptionalText = None,
    limit: OptionalText = None,
) -> Response:
    viewer = await _viewer(request)
    engine = _engine(request)
    project = await engine.get_project(project_id)
    stage = stage or None
    if stage is not None and stage not in project.workflow.stages:
        raise session.PageError(422, "stage: expected a stage of this project's workflow")
    size = _page_size(limit)
    # One more than shown tells whether another page exists, without counting.
    found = await engine.list_tasks(
        project_id, stage=stage, batch=batch or None, after=after or None, limit=size + 1
    )
    async with engine.store.read() as conn:
        batches = await stats.batch_names(conn, project_id)
    # No counts here: counting grows with the project, a page must not.
    page = found[:size]
    return _render(
        request,
        "dash_tasks.html",
        viewer=viewer,
        project=project,
        tasks=page,
        stage=stage,
        batch=batch or "",
        after=after or "",
        limit=size,
        batches=batches,
        names={s.id: s.name for s in project.workflow.stages.values()},
        next_after=page[-1].id if len(found) > size else None,
    )


@router.get("/tasks/{task_id}")
async def task_page(request: Request, task_id: Annotated[str, Path()]) -> Response:
    viewer = await _viewer(request)
    engine = _engine(request)
    task = await engine.get_task(task_id)
    project = await engine.get_project(task.project_id)
    found = await engine.list_deliveries(project.id, task_id=task.id, limit=100)
    cards = await _cards(engine, found)
    annotations = task.annotations
    url = overlay.shown_url(task.data_url)
    drawing = None
    if overlay.is_image(task.data_url, task.asset_metadata):
        drawing = overlay.draw(
            annotations.get("tools", []),
            size=overlay.image_size(task.asset_metadata),
            image_url=url,
        )
    return _render(
        request,
        "dash_task.html",
        viewer=viewer,
        project=project,
        task=task,
        asset_url=url,
        drawing=drawing,
        tools=annotations.get("tools", []),
        classifications=annotations.get("classifications", []),
        relations=annotations.get("relations", []),
        cards=cards,
        colour_of=overlay.colour_of,
        names={s.id: s.name for s in project.workflow.stages.values()},
    )


async def _cards(engine: Engine, found: list[outbox.DeliveryInfo]) -> list[views.Card]:
    async with engine.store.read() as conn:
        tried = await stats.attempts_of(conn, [d.id for d in found])
    now = engine.clock()
    return [views.card(d, tried[d.id], now=now) for d in found]


# -- Webhook stages ---------------------------------------------------------------------------


async def _webhook(
    engine: Engine, project_id: str, stage_id: str
) -> tuple[Project, workflow.Stage, workflow.WebhookSettings]:
    project = await engine.get_project(project_id)
    return (project, *_webhook_of(project, stage_id))


def _webhook_of(project: Project, stage_id: str) -> tuple[workflow.Stage, workflow.WebhookSettings]:
    stage = project.workflow.stages.get(stage_id)
    if stage is None:
        raise session.PageError(404, f"stage {stage_id!r} is not in this project's workflow")
    if not isinstance(stage.settings, workflow.WebhookSettings):
        raise session.PageError(404, f"stage {stage.name!r} is not a Webhook stage")
    return stage, stage.settings


def _state(value: str | None) -> str | None:
    if value in (None, "", "all"):
        return None
    if value not in outbox.STATES:
        raise session.PageError(422, f"state: expected one of {', '.join(outbox.STATES)}")
    return value


def _before(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise session.PageError(422, "before: expected the `older` link's value") from None


@router.get("/projects/{project_id}/stages/{stage_id}")
async def stage_page(
    request: Request,
    project_id: ProjectId,
    stage_id: StageId,
    *,
    state: OptionalText = None,
    before: OptionalText = None,
    notice: OptionalText = None,
) -> Response:
    viewer = await _viewer(request)
    engine = _engine(request)
    project = await engine.get_project(project_id)
    stage = project.workflow.stages.get(stage_id)
    if stage is not None and stage.type is not workflow.StageType.WEBHOOK:
        return RedirectResponse(_stage_link(project, stage_id), status_code=303)
    stage, settings = _webhook_of(project, stage_id)
    shown_state = _state(state)
    found = await engine.list_deliveries(
        project_id,
        stage_id=stage_id,
        state=shown_state,
        before=_before(before),
        limit=DELIVERIES_SHOWN,
    )
    context = await _summary(request, engine, project, stage, settings)
    return _render(
        request,
        "dash_stage.html",
        viewer=viewer,
        settings=views.settings_rows(settings),
        state=shown_state or "",
        cards=await _cards(engine, found),
        older=found[-1].created_at if len(found) == DELIVERIES_SHOWN else None,
        log_lines=await engine.stage_log(project_id, stage_id, limit=LOG_LINES),
        notice=views.NOTICES.get(notice or ""),
        **context,
    )


async def _summary(
    request: Request,
    engine: Engine,
    project: Project,
    stage: workflow.Stage,
    settings: workflow.WebhookSettings,
) -> dict[str, Any]:
    async with engine.store.read() as conn:
        counts = await outbox.counts(conn, project.id, stage.id)
        minutes = await stats.per_minute(conn, project.id, stage.id, now=engine.clock())
    per_minute, latency = views.delivery_charts(minutes)
    return {
        "project": project,
        "stage": stage,
        "counts": counts,
        "circuit": views.circuit_of(
            _dispatcher_state(request), project_id=project.id, stage_id=stage.id, url=settings.url
        ),
        "per_minute": per_minute,
        "latency": latency,
        "hour": sum(m.attempts for m in minutes),
    }


def _dispatcher_state(request: Request) -> Mapping[str, Any] | None:
    read: Callable[[], Mapping[str, Any]] | None = request.app.state.dashboard_dispatcher_state
    if read is None:
        return None
    try:
        return read()
    except Exception:
        log.exception("dispatcher_state() failed")
        return {}


@router.get("/projects/{project_id}/stages/{stage_id}/summary")
async def stage_summary(request: Request, project_id: ProjectId, stage_id: StageId) -> Response:
    viewer = await _viewer(request)
    engine = _engine(request)
    project, stage, settings = await _webhook(engine, project_id, stage_id)
    context = await _summary(request, engine, project, stage, settings)
    return _render(request, "dash_summary.html", viewer=viewer, **context)


@router.get("/projects/{project_id}/stages/{stage_id}/log")
async def stage_log(request: Request, project_id: ProjectId, stage_id: StageId) -> Response:
    viewer = await _viewer(request)
    engine = _engine(request)
    project, stage, _ = await _webhook(engine, project_id, stage_id)
    lines = await engine.stage_log(project_id, stage_id, limit=LOG_LINES)
    return _render(
        request, "dash_log.html", viewer=viewer, project=project, stage=stage, log_lines=lines
    )


@router.get("/projects/{project_id}/stages/{stage_id}/rerun")
async def rerun_confirm(
    request: Request, project_id: ProjectId, stage_id: StageId, failed: OptionalText = None
) -> Response:
    viewer = await _viewer(request)
    viewer.require_acting()
    project, stage, _ = await _webhook(_engine(request), project_id, stage_id)
    async with _engine(request).store.read() as conn:
        counts = await outbox.counts(conn, project_id, stage_id)
    return _render(
        request,
        "dash_confirm_rerun.html",
        viewer=viewer,
        project=project,
        stage=stage,
        only_failed=failed == "1",
        counts=counts,
    )


@router.post("/projects/{project_id}/stages/{stage_id}/rerun")
async def rerun(request: Request, project_id: ProjectId, stage_id: StageId) -> Response:
    fields = await session.form(request)
    viewer = await _viewer(request)
    viewer.check(fields.get("csrf"))
    viewer.require_acting()
    engine = _engine(request)
    await _webhook(engine, project_id, stage_id)
    only_failed = fields.get("failed") == "1"
    queued = await engine.rerun_stage(project_id, stage_id, only_failed=only_failed)
    notice = "rerun-failed" if only_failed else "rerun"
    target = views.link(
        f"/projects/{project_id}/stages/{stage_id}",
        state="pending" if queued else None,
        notice=notice,
    )
    log.info("%s re-ran stage %s of %s: %d queued", viewer.key.name, stage_id, project_id, queued)
    return _go(request, target)


def _go(request: Request, target: str) -> Response:
    if _htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


# -- deliveries -------------------------------------------------------------------------------


@router.get("/deliveries/{delivery_id}")
async def delivery_page(
    request: Request, delivery_id: Annotated[str, Path()], notice: OptionalText = None
) -> Response:
    viewer = await _viewer(request)
    engine = _engine(request)
    found = await engine.get_delivery(delivery_id)
    project = await engine.get_project(found.project_id)
    body, cut = views.pretty_body(found.body)
    return _render(
        request,
        "dash_delivery.html",
        viewer=viewer,
        project=project,
        stage=project.workflow.stages.get(found.stage_id),
        card=views.card(found, found.attempt_log, now=engine.clock()),
        body=body,
        cut=cut,
        notice=views.NOTICES.get(notice or ""),
    )


@router.get("/deliveries/{delivery_id}/card")
async def delivery_card(request: Request, delivery_id: Annotated[str, Path()]) -> Response:
    viewer = await _viewer(request)
    return await _card_fragment(request, viewer, delivery_id)


async def _card_fragment(request: Request, viewer: session.Viewer, delivery_id: str) -> Response:
    engine = _engine(request)
    found = await engine.get_delivery(delivery_id)
    shown = views.card(found, found.attempt_log, now=engine.clock())
    return _render(request, "dash_card.html", viewer=viewer, card=shown)


@router.get("/deliveries/{delivery_id}/redeliver")
async def redeliver_confirm(
    request: Request,
    delivery_id: Annotated[str, Path()],
    next: OptionalText = None,
) -> Response:
    viewer = await _viewer(request)
    viewer.require_acting()
    engine = _engine(request)
    found = await engine.get_delivery(delivery_id)
    project = await engine.get_project(found.project_id)
    return _render(
        request,
        "dash_confirm_redeliver.html",
        viewer=viewer,
        project=project,
        delivery=found,
        back=session.safe_next(next or f"/deliveries/{delivery_id}"),
    )


@router.post("/deliveries/{delivery_id}/redeliver")
async def redeliver(request: Request, delivery_id: Annotated[str, Path()]) -> Response:
    fields = await session.form(request)
    viewer = await _viewer(request)
    viewer.check(fields.get("csrf"))
    viewer.require_acting()
    queued = await _engine(request).redeliver(delivery_id)
    log.info("%s redelivered %s (queued: %s)", viewer.key.name, delivery_id, queued)
    if _htmx(request):
        return await _card_fragment(request, viewer, delivery_id)
    back = session.safe_next(fields.get("next") or f"/deliveries/{delivery_id}")
    notice = "queued" if queued else "pending"
    joiner = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{joiner}notice={notice}", status_code=303)
