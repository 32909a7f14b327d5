"""Assets in and out: import (a JSON list or NDJSON) and the streamed export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from hookstage.api.auth import EngineDep, Manager, Reader
from hookstage.api.errors import ApiError, body_problems
from hookstage.api.limits import MAX_ASSETS, check_json
from hookstage.api.projects import resolve_stage
from hookstage.api.times import epoch

__all__ = ["router"]

router = APIRouter(prefix="/api/projects", tags=["assets"])

ProjectId = Annotated[str, Path(description="the project's id")]

NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
JSON_TYPES = frozenset({"", "application/json"})
# Export responses are written in chunks of about this size, not one write per task.
CHUNK = 64 * 1024

_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "description": "the assets: a JSON list, or one JSON object per line (NDJSON)",
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _json_list(raw: bytes) -> list[Any]:
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = f"malformed JSON in the request body: {exc.msg} (at character {exc.pos})"
        raise ApiError(400, message, [("body", message)]) from exc
    if not isinstance(items, list):
        expected = "expected a JSON list of assets"
        raise ApiError(422, f"body: {expected}", [("body", expected)])
    return items


def _ndjson_list(raw: bytes) -> list[Any]:
    items: list[Any] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            message = f"line {number} is not JSON: {exc.msg} (at character {exc.pos})"
            raise ApiError(400, f"malformed NDJSON: {message}", [("body", message)]) from exc
    return items


@router.post(
    "/{project_id}/assets",
    status_code=201,
    summary="Import assets: a task at Start for each",
    openapi_extra=_IMPORT_BODY,
)
async def import_assets(
    project_id: ProjectId,
    request: Request,
    engine: EngineDep,
    _: Manager,
    skip_existing: Annotated[
        bool,
        Query(alias="skipExisting", description="import only the assets not already imported"),
    ] = False,
) -> dict[str, Any]:
    media = _media_type(request)
    raw = await request.body()
    if media in NDJSON_TYPES:
        items = _ndjson_list(raw)
    elif media in JSON_TYPES:
        items = _json_list(raw)
    else:
        expected = "application/json or application/x-ndjson"
        raise ApiError(
            415, f"Content-Type: expected {expected}", [("header.content-type", expected)]
        )
    if len(items) > MAX_ASSETS:
        message = f"{len(items)} assets is more than the limit of {MAX_ASSETS} per request"
        raise ApiError(422, f"body: {message}: import in chunks", [("body", message)])
    check_json(items)
    with body_problems("body"):
        result = await engine.import_assets(project_id, items, skip_existing=skip_existing)
    return {
        "created": len(result.created),
        "taskIds": result.created,
        "skipped": result.skipped,
        "deliveries": result.deliveries,
    }


async def _chunks(rows: AsyncIterator[dict[str, Any]], *, ndjson: bool) -> AsyncIterator[bytes]:
    buffer = bytearray()
    separator = b"\n" if ndjson else b","
    first = True
    if not ndjson:
        buffer += b"["
    async for row in rows:
        if not first and not ndjson:
            buffer += separator
        buffer += orjson.dumps(row)
        if ndjson:
            buffer += separator
        first = False
        if len(buffer) >= CHUNK:
            yield bytes(buffer)
            buffer.clear()
    if not ndjson:
        buffer += b"]"
    if buffer:
        yield bytes(buffer)


@router.get(
    "/{project_id}/export",
    summary="Export tasks in Ango's export format (streamed)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}, "application/x-ndjson": {}}}},
)
async def export(
    project_id: ProjectId,
    *,
    engine: EngineDep,
    _: Reader,
    form: Annotated[Literal["json", "ndjson"], Query(alias="format")] = "json",
    stage: Annotated[str | None, Query(description="a stage id or name")] = None,
    batch: Annotated[str | None, Query(description="a batch name")] = None,
    updated_since: Annotated[
        datetime | None,
        Query(alias="updatedSince", description="ISO-8601; tasks updated at or after it"),
    ] = None,
) -> StreamingResponse:
    # Refuse a bad project or stage now: once streaming, the status is already sent.
    project = await engine.get_project(project_id)
    stage_id = resolve_stage(project, stage)
    rows = engine.export(
        project_id, stage=stage_id, batch=batch, updated_since=epoch(updated_since)
    )
    ndjson = form == "ndjson"
    media = "application/x-ndjson" if ndjson else "application/json"
    return StreamingResponse(_chunks(rows, ndjson=ndjson), media_type=media)
