"""Deliveries: list, inspect (body and attempts), redeliver; a Webhook stage's log and re-run."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from hookstage.api.auth import EngineDep, Manager, Reader
from hookstage.api.limits import MAX_NAME
from hookstage.api.projects import resolve_stage
from hookstage.api.times import epoch, iso
from hookstage.engine import Engine
from hookstage.store.deliveries import AttemptInfo, DeliveryDetail, DeliveryInfo

__all__ = ["router"]

router = APIRouter(tags=["deliveries"])

ProjectId = Annotated[str, Path(description="the project's id")]
StageId = Annotated[str, Path(description="the Webhook stage's id")]
DeliveryId = Annotated[str, Path(description="the delivery's id (also sent as its header)")]

# Enough of a receiver's answer to see what went wrong; the whole stays in the database.
SHOWN_RESPONSE = 4096


class Rerun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    onlyFailed: bool = Field(False, description="only the deliveries that failed")
    since: datetime | None = Field(None, description="only deliveries created at or after it")


class AngoRerun(Rerun):
    stageId: str = Field(
        min_length=1, max_length=MAX_NAME, description="the Webhook stage to fire again"
    )


def _text(raw: bytes | None, limit: int | None = None) -> str | None:
    if raw is None:
        return None
    return bytes(raw[:limit]).decode("utf-8", "replace")


def _info(found: DeliveryInfo) -> dict[str, Any]:
    return {
        "id": found.id,
        "projectId": found.project_id,
        "stageId": found.stage_id,
        "taskId": found.task_id,
        "externalId": found.external_id,
        "state": found.state,
        "attempts": found.attempts,
        "dueAt": iso(found.due_at),
        "createdAt": iso(found.created_at),
        "finishedAt": iso(found.finished_at),
        "lastStatus": found.last_status,
        "lastError": found.last_error,
        "leasedBy": found.leased_by,
        "leaseUntil": iso(found.lease_until),
        "redeliveryOf": found.redelivery_of,
        "size": found.size,
    }


def _attempt(attempt: AttemptInfo) -> dict[str, Any]:
    body = attempt.response_body
    return {
        "number": attempt.number,
        "startedAt": iso(attempt.started_at),
        "durationMs": attempt.duration_ms,
        "statusCode": attempt.status_code,
        "errorClass": attempt.error_class,
        "error": attempt.error,
        "responseHeaders": attempt.response_headers,
        "responseBody": _text(body, SHOWN_RESPONSE),
        "responseSize": None if body is None else len(body),
    }


def _detail(found: DeliveryDetail) -> dict[str, Any]:
    return {
        **_info(found),
        "body": _text(found.body),
        "attemptLog": [_attempt(a) for a in found.attempt_log],
    }


@router.get("/api/projects/{project_id}/deliveries", summary="List deliveries, newest first")
async def list_deliveries(
    project_id: ProjectId,
    *,
    engine: EngineDep,
    _: Reader,
    stage: Annotated[str | None, Query(description="a Webhook stage id or name")] = None,
    task: Annotated[str | None, Query(description="a task id")] = None,
    state: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    before: Annotated[float | None, Query(description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    project = await engine.get_project(project_id)
    found = await engine.list_deliveries(
        project_id,
        stage_id=resolve_stage(project, stage),
        task_id=task,
        state=state,
        before=before,
        limit=limit,
    )
    return {
        "deliveries": [_info(d) for d in found],
        "next": found[-1].created_at if len(found) == limit else None,
    }


@router.get("/api/deliveries/{delivery_id}", summary="A delivery: its exact body and attempts")
async def get_delivery(delivery_id: DeliveryId, engine: EngineDep, _: Reader) -> dict[str, Any]:
    return _detail(await engine.get_delivery(delivery_id))


@router.post(
    "/api/deliveries/{delivery_id}/redeliver",
    summary="Send a finished delivery again: same id, same bytes",
)
async def redeliver(delivery_id: DeliveryId, engine: EngineDep, _: Manager) -> dict[str, Any]:
    queued = await engine.redeliver(delivery_id)
    message = "queued" if queued else "still pending: it will be sent, nothing queued twice"
    return {"id": delivery_id, "queued": queued, "message": message}


@router.get(
    "/api/projects/{project_id}/stages/{stage_id}/log",
    summary="A Webhook stage's log: `[Date][Status] external_id`, newest first",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}, "application/json": {}}}},
)
async def stage_log(
    project_id: ProjectId,
    *,
    stage_id: StageId,
    engine: EngineDep,
    _: Reader,
    form: Annotated[Literal["text", "json"], Query(alias="format")] = "text",
    limit: Annotated[int, Query(ge=1, le=10000)] = 200,
) -> Response:
    lines = await engine.stage_log(project_id, stage_id, limit=limit)
    if form == "json":
        return JSONResponse(lines)
    return PlainTextResponse("".join(f"{line}\n" for line in lines))


@router.get(
    "/api/projects/{project_id}/stages/{stage_id}",
    summary="A Webhook stage's delivery state: endpoint enabled or not, deliveries by state",
)
async def stage_status(
    project_id: ProjectId, stage_id: StageId, engine: EngineDep, _: Reader
) -> dict[str, Any]:
    found = await engine.stage_status(project_id, stage_id)
    endpoint = found.endpoint
    shown: dict[str, Any] = {
        "projectId": project_id,
        "stageId": stage_id,
        "name": found.stage.name,
        "mode": getattr(found.stage.settings, "mode", "pass"),
        "endpoint": {
            "state": "disabled" if endpoint.disabled else "enabled",
            "disabledAt": iso(endpoint.disabled_at),
            "disabledReason": endpoint.disabled_reason,
            "enabledAt": iso(endpoint.enabled_at),
        },
        "deliveries": found.deliveries,
    }
    if found.gate is not None:
        # Tasks resting in the gate by the state of the delivery they wait on.
        shown["tasks"] = {"waiting": found.gate["pending"], "failed": found.gate["failed"]}
    return shown


@router.post(
    "/api/projects/{project_id}/stages/{stage_id}/enable",
    summary="Enable a Webhook stage's endpoint that a 410 Gone disabled",
)
async def enable_endpoint(
    project_id: ProjectId, stage_id: StageId, engine: EngineDep, _: Manager
) -> dict[str, Any]:
    due = await engine.enable_endpoint(project_id, stage_id)
    return {"projectId": project_id, "stageId": stage_id, "endpoint": "enabled", "due": due}


async def _rerun(engine: Engine, project_id: str, stage_id: str, body: Rerun) -> dict[str, Any]:
    queued = await engine.rerun_stage(
        project_id, stage_id, only_failed=body.onlyFailed, since=epoch(body.since)
    )
    return {"projectId": project_id, "stageId": stage_id, "queued": queued}


@router.post(
    "/api/projects/{project_id}/stages/{stage_id}/rerun",
    summary="Fire a Webhook stage again for the tasks that passed it",
)
async def rerun(
    project_id: ProjectId,
    *,
    stage_id: StageId,
    engine: EngineDep,
    _: Manager,
    body: Annotated[Rerun | None, Body()] = None,
) -> dict[str, Any]:
    return await _rerun(engine, project_id, stage_id, body or Rerun())


@router.post(
    "/v2/project/{project_id}/rerun-webhook",
    summary="Ango's form of the re-run call",
    tags=["ango"],
)
async def ango_rerun(
    project_id: ProjectId, body: AngoRerun, engine: EngineDep, _: Manager
) -> dict[str, Any]:
    return await _rerun(engine, project_id, body.stageId, body)
