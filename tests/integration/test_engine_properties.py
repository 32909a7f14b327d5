"""Random sequences of steps against a model of the default workflow, on both databases:
no task is ever lost or misplaced, a refused step changes nothing, and every entry into the
Webhook stage leaves exactly one delivery carrying the task as it entered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookstage import payload
from hookstage.engine import Conflict, Submission
from tests.support.engine import World, assets, car, weather

TASKS = 3
# Where a task put into each stage comes to rest, and whether it passed the Webhook stage.
REQUEUE = {
    "Start": ("Label", False),
    "Label": ("Label", False),
    "webhook": ("review", True),
    "review": ("review", False),
    "Complete": ("Complete", False),
}

Step = tuple[str, int, Any]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(0, TASKS - 1), st.integers(0, 99)),
        st.tuples(st.sampled_from(["accept", "reject"]), st.integers(0, TASKS - 1), st.none()),
        st.tuples(st.just("requeue"), st.integers(0, TASKS - 1), st.sampled_from(list(REQUEUE))),
    ),
    max_size=14,
)


@dataclass
class Model:
    """What each task should look like: its stage, its tools, the tools each delivery carried."""

    stage: str = "Label"
    tools: list[Any] = field(default_factory=list)
    sent: list[list[Any]] = field(default_factory=list)


def submission(n: int) -> Submission:
    # Some submissions carry nothing, so repeated bodies can be alike: ids still differ.
    return Submission(tools=[car(n)] if n % 3 else [], classifications=[weather(n)])


async def apply(world: World, task_id: str, model: Model, step: Step) -> None:
    """Run one step on the engine and on the model; a refused step must be a Conflict."""
    kind, _, arg = step
    engine = world.engine
    allowed = {"submit": "Label", "accept": "review", "reject": "review"}.get(kind)
    if allowed is not None and model.stage != allowed:
        refused = (
            engine.submit(task_id, submission(arg), user="ann@example.com")
            if kind == "submit"
            else engine.review(task_id, accept=kind == "accept", user="rev@example.com")
        )
        with pytest.raises(Conflict):
            await refused
        return
    if kind == "submit":
        await engine.submit(task_id, submission(arg), user="ann@example.com", duration_ms=arg)
        model.stage, model.tools = "review", submission(arg).tools
        model.sent.append(model.tools)
    elif kind in ("accept", "reject"):
        await engine.review(task_id, accept=kind == "accept", user="rev@example.com")
        model.stage = "Complete" if kind == "accept" else "Label"
    else:
        model.stage, fired = REQUEUE[arg]
        await engine.requeue(task_id, arg, user="lead@example.com")
        if fired:
            model.sent.append(model.tools)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(script=steps)
async def test_random_steps_never_lose_a_task_or_a_webhook(
    world: World, script: list[Step]
) -> None:
    # One store for every example: each example has its own project.
    project = await world.project()
    ids = await world.imported(project.id, assets(TASKS))
    models = [Model() for _ in ids]
    for step in script:
        world.clock.advance(1)  # deliveries list newest first, by time
        await apply(world, ids[step[1]], models[step[1]], step)

    tasks = {t.id: t for t in await world.engine.list_tasks(project.id)}
    assert sorted(tasks) == sorted(ids)
    for task_id, model in zip(ids, models, strict=True):
        task = tasks[task_id]
        assert task.stage_id == model.stage
        assert task.annotations["tools"] == model.tools
        passed = [h for h in task.stage_history if h["stageId"] == "webhook"]
        bodies = await world.bodies(project.id, task_id=task_id)
        assert len(bodies) == len(passed) == len(model.sent)
        assert [b["task"]["tools"] for b in bodies] == model.sent
        assert all(b["task"]["taskId"] == task_id for b in bodies)
        assert all(payload.parse(b).task.taskId == task_id for b in bodies)
        assert task.total_duration == sum(h["duration"] for h in task.stage_history)
    infos = await world.engine.list_deliveries(project.id, limit=1000)
    assert len({i.id for i in infos}) == sum(len(m.sent) for m in models)
