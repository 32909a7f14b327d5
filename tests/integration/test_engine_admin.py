"""Managing a project through the engine: workflow updates, redelivery, re-running a stage,
API keys. On SQLite and PostgreSQL; attempts are recorded the way a worker records them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hookstage import workflow
from hookstage.engine import ROLES, Conflict, Engine, Invalid, NotFound, Submission
from hookstage.retry import Decision
from hookstage.store import open_store
from tests.support.engine import (
    CAR,
    SECRET,
    World,
    assets,
    finish,
    labeled,
    stage,
    standard_flow,
)


async def secret_of(world: World, project_id: str) -> str:
    settings = await world.engine.webhook_settings(project_id, "webhook")
    assert settings is not None
    assert isinstance(settings.auth, workflow.SecretAuth)
    return settings.auth.secret.reveal()


async def saved(world: World, project_id: str) -> list[dict[str, object]]:
    """The workflow as stored, secrets included."""
    project = await world.engine.get_project(project_id)
    return workflow.to_json(project.workflow, reveal_secrets=True)


# -- update_workflow ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        {"type": "secret", "secret": {"set": True, "last4": "cdef"}},  # as shown to the user
        {"type": "secret"},
        {"type": "secret", "secret": ""},
    ],
)
async def test_a_workflow_saved_without_its_secret_keeps_it(
    world: World, auth: dict[str, Any]
) -> None:
    project = await world.project()
    shown = workflow.to_json(project.workflow)
    assert SECRET not in repr(shown)
    hook = next(s for s in shown if s["id"] == "webhook")
    hook["auth"] = auth
    hook["timeoutMs"] = 3000

    updated = await world.engine.update_workflow(project.id, shown)
    settings = await world.engine.webhook_settings(project.id, "webhook")
    assert settings is not None
    assert settings.timeout_ms == 3000
    assert await secret_of(world, project.id) == SECRET
    assert (await world.engine.get_project(project.id)).workflow == updated.workflow


async def test_a_secret_does_not_follow_the_url_to_another_host(world: World) -> None:
    project = await world.project()
    before = await saved(world, project.id)
    moved = workflow.to_json(project.workflow)
    hook = next(s for s in moved if s["id"] == "webhook")
    hook["url"] = "https://elsewhere.example.net/ango"
    with pytest.raises(Invalid) as refused:
        await world.engine.update_workflow(project.id, moved)
    assert "auth.secret" in refused.value.message
    assert await saved(world, project.id) == before

    hook["auth"] = {"type": "secret", "secret": "a-new-secret-for-elsewhere"}
    await world.engine.update_workflow(project.id, moved)
    assert await secret_of(world, project.id) == "a-new-secret-for-elsewhere"


async def test_a_workflow_dropping_a_stage_that_holds_tasks_is_refused(world: World) -> None:
    project = await world.project()
    ids = await world.imported(project.id, assets(3))
    await world.engine.submit(ids[0], labeled(1), user="ann@example.com")
    before = await world.engine.get_project(project.id)
    no_review = [
        stage("Start", "Start", "Label"),
        stage("Label", "Label", "Complete"),
        stage("Complete", "Complete"),
    ]
    with pytest.raises(Conflict) as refused:
        await world.engine.update_workflow(project.id, no_review)
    assert "'review' (1 tasks)" in refused.value.message

    after = await world.engine.get_project(project.id)
    assert (after.workflow, after.updated_at) == (before.workflow, before.updated_at)
    assert await world.engine.count_tasks(project.id) == {"Label": 2, "review": 1}

    await world.engine.requeue(ids[0], "Label", user="manager@example.com")
    await world.engine.update_workflow(project.id, no_review)
    done = await world.engine.submit(ids[0], labeled(1), user="ann@example.com")
    assert done.stage_id == "Complete"
    assert await world.engine.webhook_settings(project.id, "webhook") is None


async def test_a_workflow_update_racing_submits_never_strands_a_task(
    world: World, database: str
) -> None:
    """Submits route tasks into Review while an update removes Review, from two processes
    at once (on PostgreSQL, truly at once): either a task was moved first and the update is
    refused, or the update was first and the task goes by the new workflow; never a task in
    a stage the workflow no longer has."""
    straight = [
        stage("Start", "Start", "Label"),
        stage("Label", "Label", "Complete"),
        stage("Complete", "Complete"),
    ]
    other_store = await open_store(database)
    try:
        other = Engine(other_store)
        for _ in range(3):
            project = await world.project()
            ids = await world.imported(project.id, assets(12))
            await other.get_project(project.id)  # it has read (and kept) the workflow
            results = await asyncio.gather(
                *(world.engine.submit(t, labeled(n), user="ann@example.com") for n, t in
                  enumerate(ids)),
                other.update_workflow(project.id, straight),
                return_exceptions=True,
            )  # fmt: skip
            assert all(not isinstance(r, Exception) or isinstance(r, Conflict) for r in results)
            final = await world.engine.get_project(project.id)
            placed = await world.engine.count_tasks(project.id)
            assert set(placed) <= set(final.workflow.stages), placed
    finally:
        await other_store.close()


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        ({"next": ["Complete"]}, 'stage "Review" (id review)', "Review needs 2"),
        ({"type": "Reviews"}, 'stage "Review" (id review)', "type must be one of"),
    ],
)
async def test_an_invalid_workflow_is_refused_naming_the_stage(
    world: World, change: dict[str, Any], where: str, says: str
) -> None:
    project = await world.project()
    before = await saved(world, project.id)
    flow = standard_flow()
    flow[3] |= change
    with pytest.raises(Invalid) as refused:
        await world.engine.update_workflow(project.id, flow)
    assert where in refused.value.message
    assert any(p == where and says in m for p, m in refused.value.problems)
    assert await saved(world, project.id) == before


async def test_a_logic_rule_must_name_a_schema_id_of_the_project(world: World) -> None:
    project = await world.project()
    flow = [
        stage("Start", "Start", "Label"),
        stage("Label", "Label", "logic"),
        stage("logic", "Logic", "Complete", "Complete", rules=[
            {"kind": "annotation", "schemaId": "not-in-the-schema"}]),
        stage("Complete", "Complete"),
    ]  # fmt: skip
    with pytest.raises(Invalid, match="not in the category schema") as refused:
        await world.engine.update_workflow(project.id, flow)
    assert [p for p, _ in refused.value.problems] == ['stage "logic" (id logic)']
    flow[2]["rules"][0]["schemaId"] = CAR
    await world.engine.update_workflow(project.id, flow)


async def test_another_engine_routes_by_the_updated_workflow(world: World, database: str) -> None:
    """A second `serve` process on the same database must not route by a stale workflow."""
    project = await world.project()
    [task_id] = await world.imported(project.id, assets(1))
    other_store = await open_store(database)
    try:
        other = Engine(other_store)
        await other.get_project(project.id)  # it has read (and kept) the old one
        straight = [
            stage("Start", "Start", "Label"),
            stage("Label", "Label", "Complete"),
            stage("Complete", "Complete"),
        ]
        await world.engine.update_workflow(project.id, straight)
        moved = await other.submit(task_id, Submission(), user="ann@example.com")
    finally:
        await other_store.close()
    assert moved.stage_id == "Complete"
    assert await world.engine.list_deliveries(project.id) == []


# -- redeliver and rerun --------------------------------------------------------------------


async def delivered_world(world: World, count: int) -> tuple[str, list[str]]:
    """`count` tasks submitted: their delivery ids, in task order."""
    project = await world.project()
    ids = await world.imported(project.id, assets(count))
    for n, task_id in enumerate(ids):
        await world.engine.submit(task_id, labeled(n), user="ann@example.com")
    infos = await world.engine.list_deliveries(project.id)
    by_task = {i.task_id: i.id for i in infos}
    return project.id, [by_task[t] for t in ids]


async def test_redeliver_of_a_pending_delivery_changes_nothing(world: World) -> None:
    _, [delivery_id] = await delivered_world(world, 1)
    before = await world.engine.get_delivery(delivery_id)
    world.wakes.clear()
    world.clock.advance(10)
    assert await world.engine.redeliver(delivery_id) is False
    assert await world.engine.get_delivery(delivery_id) == before
    assert world.wakes == []
    with pytest.raises(NotFound):
        await world.engine.redeliver("dlv_nope")
    with pytest.raises(NotFound):
        await world.engine.get_delivery("dlv_nope")


async def test_redeliver_of_a_finished_delivery_sends_the_same_bytes_again(world: World) -> None:
    project_id, [delivery_id] = await delivered_world(world, 1)
    first = await world.engine.get_delivery(delivery_id)
    sent_at = world.clock.advance(1)
    await finish(world.store, {delivery_id: Decision.delivered()}, now=sent_at)
    done = await world.engine.get_delivery(delivery_id)
    assert (done.state, done.attempts, done.last_status) == ("delivered", 1, 200)

    world.wakes.clear()
    again_at = world.clock.advance(60)
    assert await world.engine.redeliver(delivery_id) is True
    again = await world.engine.get_delivery(delivery_id)
    assert (again.id, again.body) == (first.id, first.body)
    assert (again.state, again.due_at, again.finished_at) == ("pending", again_at, None)
    assert [a.status_code for a in again.attempt_log] == [200]  # the history stays
    assert world.wakes == [again_at]
    assert len(await world.engine.list_deliveries(project_id)) == 1  # no new row


async def test_rerun_stage_sends_finished_deliveries_again_once(world: World) -> None:
    project_id, [ok, failed, waiting] = await delivered_world(world, 3)
    bodies = {d: (await world.engine.get_delivery(d)).body for d in (ok, failed, waiting)}
    now = world.clock.advance(1)
    await finish(world.store, {ok: Decision.delivered(), failed: Decision.give_up()}, now=now)

    async def states() -> dict[str, str]:
        return {i.id: i.state for i in await world.engine.list_deliveries(project_id)}

    assert await world.engine.rerun_stage(project_id, "webhook", only_failed=True) == 1
    assert await states() == {ok: "delivered", failed: "pending", waiting: "pending"}
    assert await world.engine.rerun_stage(project_id, "webhook", only_failed=True) == 0
    assert await world.engine.rerun_stage(project_id, "webhook") == 1
    assert await world.engine.rerun_stage(project_id, "webhook") == 0
    assert await states() == dict.fromkeys((ok, failed, waiting), "pending")
    for delivery_id, body in bodies.items():
        assert (await world.engine.get_delivery(delivery_id)).body == body


async def test_rerun_stage_since_a_time_and_only_at_a_webhook_stage(world: World) -> None:
    project = await world.project()
    old, new = await world.imported(project.id, assets(2))
    await world.engine.submit(old, labeled(1), user="ann@example.com")
    since = world.clock.advance(3600)
    await world.engine.submit(new, labeled(2), user="ann@example.com")
    infos = {i.task_id: i.id for i in await world.engine.list_deliveries(project.id)}
    await finish(
        world.store, dict.fromkeys(infos.values(), Decision.delivered()), now=world.clock.now
    )

    assert await world.engine.rerun_stage(project.id, "webhook", since=since) == 1
    assert (await world.engine.get_delivery(infos[new])).state == "pending"
    assert (await world.engine.get_delivery(infos[old])).state == "delivered"
    with pytest.raises(Invalid, match="'Label' is a Label stage"):
        await world.engine.rerun_stage(project.id, "Label")
    with pytest.raises(NotFound):
        await world.engine.rerun_stage(project.id, "nowhere")


# -- API keys -------------------------------------------------------------------------------


async def test_a_key_is_shown_once_and_authenticates(world: World) -> None:
    key, value = await world.engine.create_key("ci@example.com", "labeler")
    assert value.startswith("hs_")
    assert len(value) > 40
    assert (key.name, key.role, key.revoked_at) == ("ci@example.com", "labeler", None)

    listed = await world.engine.list_keys()
    assert listed == [key]
    assert value not in repr(listed)
    assert value[3:] not in repr(listed)
    assert await world.engine.authenticate(value) == key
    assert await world.engine.authenticate(value + "x") is None
    assert await world.engine.authenticate("") is None


async def test_a_revoked_key_no_longer_authenticates(world: World) -> None:
    key, value = await world.engine.create_key("ci@example.com")
    other, other_value = await world.engine.create_key("ops@example.com")
    await world.engine.revoke_key(key.id)
    assert await world.engine.authenticate(value) is None
    assert await world.engine.authenticate(other_value) == other
    with pytest.raises(NotFound):
        await world.engine.revoke_key(key.id)
    # Both were made at one clock reading: which lists first is the database's choice.
    listed = {k.id: k for k in await world.engine.list_keys()}
    assert listed[key.id].revoked_at == world.clock.now
    assert listed[other.id].revoked_at is None


async def test_a_key_expires_at_its_time(world: World) -> None:
    expires = world.clock.now + 60
    key, value = await world.engine.create_key("ci@example.com", "read-only", expires_at=expires)
    world.clock.advance(59.9)
    assert await world.engine.authenticate(value) == key
    world.clock.advance(0.1)
    assert await world.engine.authenticate(value) is None


@pytest.mark.parametrize(
    ("name", "role", "says"),
    [("ci", "root", "role: expected one of"), ("ci", "Admin", "role"), ("  ", "admin", "name")],
)
async def test_a_bad_key_request_is_refused(world: World, name: str, role: str, says: str) -> None:
    with pytest.raises(Invalid, match=says) as refused:
        await world.engine.create_key(name, role)
    if says.startswith("role"):
        assert all(r in refused.value.message for r in ROLES)
    assert await world.engine.list_keys() == []


@pytest.mark.parametrize(
    ("filters", "says"), [({"state": "sent"}, "state"), ({"limit": 0}, "limit")]
)
async def test_a_bad_delivery_filter_is_invalid(
    world: World, filters: dict[str, Any], says: str
) -> None:
    project_id, _ = await delivered_world(world, 1)
    with pytest.raises(Invalid, match=says):
        await world.engine.list_deliveries(project_id, **filters)
