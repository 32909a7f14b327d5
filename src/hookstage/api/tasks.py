"""Tasks: list and read them, and the steps that move them (submit, review, release, requeue)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from hookstage.api.auth import EngineDep, Labeler, Manager, Reader
from hookstage.api.errors import body_problems
from hookstage.api.limits import MAX_ANNOTATIONS, MAX_NAME, check_json
from hookstage.api.projects import resolve_stage
from hookstage.api.times import iso
from hookstage.engine import Engine, Submission, Task

__all__ = ["router", "task_view"]

router = APIRouter(prefix="/api", tags=["tasks"])

ProjectId = Annotated[str, Path(description="the project's id")]
TaskId = Annotated[str, Path(description="the task's id")]
StageId = Annotated[str, Path(description="the stage's id")]

ANNOTATION_FIELDS = ("tools", "classifications", "relations", "brushDataUrl", "medicalBrushDataUrl")


class Annotations(BaseModel):
    """A task's annotations in export format; `schema.check_annotations` checks the rest."""

    model_config = ConfigDict(extra="forbid")

    tools: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ANNOTATIONS)
    classifications: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ANNOTATIONS)
    relations: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ANNOTATIONS)
    brushDataUrl: str | None = None
    medicalBrushDataUrl: str | None = None

    def checked(self) -> Annotations:
        """Itself, once its nesting and strings are within the limits (else ApiError 422)."""
        check_json(self.tools, "body.tools")
        check_json(self.classifications, "body.classifications")
        check_json(self.relations, "body.relations")
        check_json([self.brushDataUrl, self.medicalBrushDataUrl], "body")
        return self

    def submission(self) -> Submission:
        return Submission(
            tools=self.tools,
            classifications=self.classifications,
            relations=self.relations,
            brush_data_url=self.brushDataUrl,
            medical_brush_data_url=self.medicalBrushDataUrl,
        )


class Work(Annotations):
    duration: int = Field(0, ge=0, description="time spent, in milliseconds")
    user: str | None = Field(
        None, min_length=1, max_length=MAX_NAME, description="who did it (default: the key)"
    )


class Submit(Work):
    pass


def _decision(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("accept", "reject"):
        return value == "accept"
    raise PydanticCustomError("decision", 'expected true, false, "accept" or "reject"')


class Review(Work):
    """Annotations given here replace the task's (fields left out are empty); none: kept."""

    accept: Annotated[bool, BeforeValidator(_decision)] = Field(
        description='true or "accept" takes the accept output, false or "reject" the other'
    )


class Release(BaseModel):
    model_config = ConfigDict(extra="forbid")

    taskIds: list[Annotated[str, Field(max_length=MAX_NAME)]] | None = Field(
        None, max_length=MAX_ANNOTATIONS, description="only these tasks (default: all held)"
    )
    batch: str | None = Field(
        None, min_length=1, max_length=MAX_NAME, description="only tasks in this batch"
    )


class Requeue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stageId: str = Field(
        min_length=1, max_length=MAX_NAME, description="the stage to put the task in"
    )


def _summary(task: Task, stage_names: dict[str, str]) -> dict[str, Any]:
    return {
        "taskId": task.id,
        "assetId": task.asset_id,
        "externalId": task.external_id,
        "stageId": task.stage_id,
        "stage": stage_names.get(task.stage_id, task.stage_id),
        "batches": [name for _, name in task.batches],
        "updatedAt": iso(task.updated_at),
        "updatedBy": task.updated_by,
        "totalDuration": task.total_duration,
        "enteredAt": iso(task.entered_at),
    }


async def task_view(engine: Engine, task: Task, *, moved: bool = False) -> dict[str, Any]:
    """The task in export format, plus where it is now (`currentStage`) and its project.
    ``moved``: the task comes from a step, which read its project: no need to read it again."""
    project = engine.known_project(task.project_id) if moved else None
    if project is None:
        project = await engine.get_project(task.project_id)
    stage = project.workflow.stages.get(task.stage_id)
    return {
        **engine.export_view(project, task),
        "projectId": project.id,
        "currentStage": {
            "id": task.stage_id,
            "name": stage.name if stage is not None else task.stage_id,
            "type": stage.type.value if stage is not None else None,
            "enteredAt": iso(task.entered_at),
        },
    }


@router.get("/projects/{project_id}/tasks", summary="List tasks (keyset paging)")
async def list_tasks(
    project_id: ProjectId,
    *,
    engine: EngineDep,
    _: Reader,
    stage: Annotated[str | None, Query(description="a stage id or name")] = None,
    batch: Annotated[str | None, Query(description="a batch name")] = None,
    after: Annotated[str | None, Query(description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    project = await engine.get_project(project_id)
    stage_id = resolve_stage(project, stage)
    # One more than asked tells whether another page exists without a second query.
    found = await engine.list_tasks(
        project_id, stage=stage_id, batch=batch, after=after, limit=limit + 1
    )
    page = found[:limit]
    names = {s.id: s.name for s in project.workflow.stages.values()}
    return {
        "tasks": [_summary(task, names) for task in page],
        "next": page[-1].id if len(found) > limit else None,
    }


@router.get("/tasks/{task_id}", summary="Show a task: export format, current stage, history")
async def get_task(task_id: TaskId, engine: EngineDep, _: Reader) -> dict[str, Any]:
    return await task_view(engine, await engine.get_task(task_id))


@router.post("/tasks/{task_id}/submit", summary="Submit a task's annotations: it moves on")
async def submit(task_id: TaskId, body: Submit, engine: EngineDep, key: Labeler) -> dict[str, Any]:
    with body_problems("body"):
        task = await engine.submit(
            task_id,
            body.checked().submission(),
            user=body.user or key.name,
            duration_ms=body.duration,
        )
    return await task_view(engine, task, moved=True)


@router.post("/tasks/{task_id}/review", summary="Accept or reject a task in a Review stage")
async def review(task_id: TaskId, body: Review, engine: EngineDep, key: Labeler) -> dict[str, Any]:
    changed = body.model_fields_set.intersection(ANNOTATION_FIELDS)
    with body_problems("body"):
        task = await engine.review(
            task_id,
            accept=body.accept,
            user=body.user or key.name,
            duration_ms=body.duration,
            submission=body.checked().submission() if changed else None,
        )
    return await task_view(engine, task, moved=True)


@router.post(
    "/projects/{project_id}/stages/{stage_id}/release",
    summary="Release tasks held in a Hold stage",
)
async def release(
    project_id: ProjectId,
    *,
    stage_id: StageId,
    engine: EngineDep,
    key: Manager,
    body: Annotated[Release | None, Body()] = None,
) -> dict[str, Any]:
    wanted = body or Release()
    released = await engine.release(
        project_id, stage_id, user=key.name, task_ids=wanted.taskIds, batch=wanted.batch
    )
    return {"released": len(released), "taskIds": released}


@router.post("/tasks/{task_id}/requeue", summary="Put a task into a stage")
async def requeue(
    task_id: TaskId, body: Requeue, engine: EngineDep, key: Manager
) -> dict[str, Any]:
    moved = await engine.requeue(task_id, body.stageId, user=key.name)
    return await task_view(engine, moved, moved=True)
