"""Projects: create, list, show (secrets masked, tasks per stage), replace the workflow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict, Field

from hookstage import schema, workflow
from hookstage.api.auth import Admin, EngineDep, Reader
from hookstage.api.errors import body_problems
from hookstage.api.limits import MAX_NAME, check_json
from hookstage.api.times import iso
from hookstage.engine import Invalid, Project

__all__ = ["describe", "resolve_stage", "router"]

router = APIRouter(prefix="/api/projects", tags=["projects"])

ProjectId = Annotated[str, Path(description="the project's id")]


class NewProject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME, description="shown to people")
    categorySchema: dict[str, Any] = Field(
        default_factory=dict, description="tools, classifications and relations"
    )
    workflow: Any = Field(description="the stages, in Ango's JSON shape")


def resolve_stage(project: Project, value: str | None) -> str | None:
    """A stage filter given by id or, for convenience, by its (unique) name."""
    if value is None:
        return None
    stages = project.workflow.stages
    if value in stages:
        return value
    named = [s.id for s in stages.values() if s.name == value]
    if len(named) == 1:
        return named[0]
    known = ", ".join(repr(s) for s in stages)
    expected = f"a stage id or name of this project's workflow ({known})"
    raise Invalid(f"stage {value!r} is not in the workflow", [("query.stage", expected)])


def _summary(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "createdAt": iso(project.created_at),
        "updatedAt": iso(project.updated_at),
    }


def describe(project: Project, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """A project as the API shows it: the workflow never carries a secret's value."""
    stages = project.workflow.stages.values()
    shown = {
        **_summary(project),
        "categorySchema": schema.to_json(project.category_schema),
        "workflow": workflow.to_json(project.workflow, reveal_secrets=False),
        "stages": [{"id": s.id, "name": s.name, "type": s.type.value} for s in stages],
    }
    if counts is not None:
        shown["taskCounts"] = {s.id: counts.get(s.id, 0) for s in stages}
        shown["taskTotal"] = sum(counts.values())
    return shown


@router.post("", status_code=201, summary="Create a project")
async def create_project(body: NewProject, engine: EngineDep, _: Admin) -> dict[str, Any]:
    check_json(body.categorySchema, "body.categorySchema")
    check_json(body.workflow, "body.workflow")
    with body_problems("body"), _workflow_problems("workflow"):
        project = await engine.create_project(
            name=body.name, category_schema=body.categorySchema, workflow_json=body.workflow
        )
    return describe(project, {})


@contextmanager
def _workflow_problems(root: str) -> Iterator[None]:
    """A workflow problem names its stage in words: keep that in the message, at `root`."""
    try:
        yield
    except Invalid as exc:
        if not exc.message.startswith("workflow"):
            raise
        problems = [(root, f"{where}: {text}") for where, text in exc.problems]
        raise Invalid(exc.message, problems) from exc


@router.get("", summary="List projects")
async def list_projects(engine: EngineDep, _: Reader) -> dict[str, Any]:
    return {"projects": [_summary(p) for p in await engine.list_projects()]}


@router.get("/{project_id}", summary="Show a project, its workflow and its tasks per stage")
async def get_project(project_id: ProjectId, engine: EngineDep, _: Reader) -> dict[str, Any]:
    project = await engine.get_project(project_id)
    return describe(project, await engine.count_tasks(project_id))


@router.put("/{project_id}/workflow", summary="Replace the workflow")
async def put_workflow(
    project_id: ProjectId,
    engine: EngineDep,
    _: Admin,
    body: Annotated[
        Any,
        Body(description="the workflow; a Webhook stage sent without its secret keeps the old one"),
    ],
) -> dict[str, Any]:
    check_json(body)
    with _workflow_problems("body"):
        project = await engine.update_workflow(project_id, body)
    return describe(project, await engine.count_tasks(project_id))
