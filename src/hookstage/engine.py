"""Use cases: projects, import, submit, review, release, requeue, export, redeliver.

Each use case is one transaction: a task's move and the deliveries it enqueues commit
together (the transactional outbox), so a crash loses no webhook and sends none for a step
that rolled back. Decisions (routing, annotation checks, rendering) are pure functions of
`workflow`, `schema` and `payload`; this module reads, decides, writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage import payload, schema, workflow
from hookstage.cipher import Cipher
from hookstage.retry import Verdict
from hookstage.store import Duplicate, Statement, Store, guard_project, guarding, insert_missing
from hookstage.store import deliveries as outbox
from hookstage.store import endpoints as endpoint_store
from hookstage.store import tasks as task_rows
from hookstage.store import workers as processes
from hookstage.store.tables import api_keys, batches, projects, task_batches, tasks

__all__ = [
    "KEY_CACHE_SECONDS",
    "ROLES",
    "ApiKey",
    "Conflict",
    "Courier",
    "Engine",
    "EngineError",
    "ImportResult",
    "Invalid",
    "NotFound",
    "Project",
    "StageStatus",
    "Submission",
    "Task",
    "new_id",
    "timestamp",
]

log = logging.getLogger(__name__)

ROLES = ("admin", "manager", "labeler", "read-only")
KEY_CACHE_SECONDS = 2.0
"""How long a server trusts an API key it read before reading it again (see authenticate)."""
_KEYS_REMEMBERED = 1024
Role = Literal["admin", "manager", "labeler", "read-only"]


class EngineError(Exception):
    """A use case refused: the message says what to change. Nothing was written."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)


class NotFound(EngineError):
    pass


class Invalid(EngineError):
    pass


class Conflict(EngineError):
    pass


class _Changed(Exception):
    """A step's task or project changed between its read and its write."""


# How many times a step reads again after losing its write to a change (see `Engine._step`).
_STEP_TRIES = 3


def timestamp(epoch: float) -> str:
    """Epoch seconds as Ango writes times: `2023-09-28T09:37:33.733Z`."""
    return payload.format_timestamp(datetime.fromtimestamp(epoch, UTC))


def new_id(now: float) -> str:
    """24 hex characters like Ango's ids: seconds first, so ids sort by creation."""
    return f"{int(now):08x}{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    category_schema: schema.CategorySchema
    workflow: workflow.Workflow
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Task:
    """A task with its asset, as stored."""

    id: str
    asset_id: str
    project_id: str
    external_id: str
    data_url: str
    dataset: list[Any]
    asset_metadata: dict[str, Any]
    context_data: dict[str, Any] | None
    batches: list[tuple[str, str]]
    stage_id: str
    work_stage_id: str
    annotations: dict[str, Any]
    stage_history: list[dict[str, Any]]
    updated_at: float
    updated_by: str | None
    total_duration: int
    entered_at: float
    created_at: float
    version: int


@dataclass(frozen=True)
class Submission:
    """Annotations in export format, as a labeler or reviewer sends them."""

    tools: list[Any] = field(default_factory=list)
    classifications: list[Any] = field(default_factory=list)
    relations: list[Any] = field(default_factory=list)
    brush_data_url: str | None = None
    medical_brush_data_url: str | None = None

    def annotations(self) -> dict[str, Any]:
        return {
            "tools": self.tools,
            "classifications": self.classifications,
            "relations": self.relations,
            "brushDataUrl": self.brush_data_url,
            "medicalBrushDataUrl": self.medical_brush_data_url,
        }


@dataclass(frozen=True)
class ImportResult:
    created: list[str]
    skipped: list[str]
    deliveries: int


@dataclass(frozen=True)
class StageStatus:
    """A Webhook stage as delivery sees it: its endpoint (disabled by a 410 Gone or not),
    its deliveries by state, and for a gate stage the tasks resting in it by the state of
    the delivery they wait on ("failed": waiting for a person to re-send or move them)."""

    stage: workflow.Stage
    endpoint: endpoint_store.EndpointStatus
    deliveries: dict[str, int]
    gate: dict[str, int] | None


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    role: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None


_RACED_IMPORT = (
    "another import of some of these assets committed first: nothing was imported;"
    " import again (skip_existing imports only the new ones)"
)

EMPTY_ANNOTATIONS: dict[str, Any] = {
    "tools": [],
    "classifications": [],
    "relations": [],
    "brushDataUrl": None,
    "medicalBrushDataUrl": None,
}


class Courier(Protocol):
    """Sends what a step enqueues without waiting for a claim: this process's dispatcher,
    as `service` wires it (see `Engine._write_step`)."""

    def reserve(self, stages: Sequence[tuple[str, str]]) -> outbox.Handoff | None:
        """Room for a delivery to each (project, stage), or None."""

    def unreserve(self, handoff: outbox.Handoff) -> None:
        """The write of ``handoff`` failed: its room is free again."""

    async def adopt(
        self, handoff: outbox.Handoff, claimed: Sequence[outbox.Claimed], project: Project
    ) -> None:
        """Send ``claimed``, what the write of ``handoff`` took, with the stage settings of
        ``project`` as that write found it."""


class Engine:
    """The use cases over one store. `on_enqueue` runs after a commit that enqueued what no
    `courier` took; a courier, when set, is handed what steps enqueue (see `_write_step`).
    With a `cipher`, stage secrets are stored sealed (encrypted), else as they are."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        on_enqueue: Callable[[], None] | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_enqueue = on_enqueue
        self.courier: Courier | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._cipher = cipher
        self._projects: dict[str, Project] = {}
        # Key hash -> (key, when it was read, monotonic): see `authenticate`. A revoke moves
        # the generation on, so a read that began before it is not remembered.
        self._keys: dict[str, tuple[ApiKey, float]] = {}
        self._keys_generation = 0

    # -- projects ---------------------------------------------------------------------------

    async def create_project(
        self, *, name: str, category_schema: Mapping[str, Any], workflow_json: Any
    ) -> Project:
        name = _required_text(name, "name")
        parsed_schema = _parse_schema(category_schema)
        parsed_workflow = _parse_workflow(workflow_json, parsed_schema.schema_ids)
        now = self.clock()
        project = Project(new_id(now), name, parsed_schema, parsed_workflow, now, now)
        async with self.store.transaction() as conn:
            await conn.execute(
                projects.insert().values(
                    id=project.id,
                    name=name,
                    category_schema=schema.to_json(parsed_schema),
                    workflow=self._stored(parsed_workflow),
                    created_at=now,
                    updated_at=now,
                )
            )
        return project

    async def list_projects(self) -> list[Project]:
        async with self.store.read() as conn:
            rows = (await conn.execute(projects.select().order_by(projects.c.created_at))).all()
        return [self._project_from_row(row._mapping) for row in rows]

    async def get_project(self, project_id: str) -> Project:
        async with self.store.read() as conn:
            return await self._load_project(conn, project_id)

    async def update_workflow(self, project_id: str, workflow_json: Any) -> Project:
        """Replace the workflow; a Webhook stage saved without its secret keeps the old one."""
        async with self.store.transaction() as conn:
            await guard_project(conn, _text(project_id), exclusive=True)
            old = await self._load_project(conn, project_id)
            merged = _parse_workflow(
                workflow.merge_secrets(workflow_json, old.workflow),
                old.category_schema.schema_ids,
            )
            await _check_tasks_still_placed(conn, project_id, merged)
            now = max(self.clock(), old.updated_at + 1e-6)
            await conn.execute(
                projects.update()
                .where(projects.c.id == project_id)
                .values(workflow=self._stored(merged), updated_at=now)
            )
        return replace(old, workflow=merged, updated_at=now)

    async def _load_project(self, conn: AsyncConnection, project_id: str) -> Project:
        """The project, parsed again only when its `updated_at` moved."""
        await guard_project(conn, _text(project_id))
        # After the guard: in a PostgreSQL transaction that writes, it may just have waited
        # for a workflow update.
        stamp = await task_rows.project_stamp(conn, _text(project_id))
        if stamp is None:
            raise NotFound(f"project {project_id!r} not found")
        cached = self._projects.get(project_id)
        if cached is not None and cached.updated_at == stamp:
            return cached
        row = (await conn.execute(_PROJECT_BY_ID, {"project_id": project_id})).one()
        return self._project_from_row(row._mapping)

    def known_project(self, project_id: str) -> Project | None:
        """The project as this engine last read it (None: not yet). A step's answer shows the
        task by it: it is the workflow the step moved the task by, or a newer one."""
        return self._projects.get(project_id)

    def _stored(self, parsed: workflow.Workflow) -> list[dict[str, object]]:
        seal = self._cipher.seal if self._cipher is not None else None
        return workflow.to_json(parsed, reveal_secrets=True, seal=seal)

    def _stored_workflow(self, project_id: str, stored: Any) -> workflow.Workflow:
        unseal = self._cipher.unseal if self._cipher is not None else None
        try:
            return workflow.parse(stored, unseal=unseal)
        except workflow.WorkflowError as exc:
            raise EngineError(
                f"project {project_id}: the stored workflow cannot be read: {exc}"
            ) from exc

    async def seal_stored(self) -> int:
        """Check that every stored workflow can be read (its secrets opened) and, with a
        cipher, seal with its newest key every secret stored plain or with an older key.
        Returns how many projects were re-sealed; EngineError names one that cannot be read."""
        resealed = 0
        async with self.store.transaction() as conn:
            rows = (await conn.execute(sa.select(projects.c.id, projects.c.workflow))).all()
            for project_id, stored in rows:
                parsed = self._stored_workflow(project_id, stored)
                if self._cipher is None or all(
                    isinstance(value, dict) and self._cipher.is_current(value["sealed"])
                    for value in workflow.stored_secrets(stored)
                ):
                    continue
                await conn.execute(
                    projects.update()
                    .where(projects.c.id == project_id)
                    .values(workflow=self._stored(parsed))
                )
                resealed += 1
        return resealed

    def _project_from_row(self, row: sa.RowMapping) -> Project:
        project = Project(
            id=row["id"],
            name=row["name"],
            category_schema=schema.parse_schema(row["category_schema"]),
            workflow=self._stored_workflow(row["id"], row["workflow"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        # Parsing a workflow on every step would dominate the step's cost.
        self._projects[project.id] = project
        return project

    async def webhook_settings(
        self, project_id: str, stage_id: str
    ) -> workflow.WebhookSettings | None:
        """The settings a delivery is sent with, read at send time (None: stage gone)."""
        try:
            project = await self.get_project(project_id)
        except NotFound:
            return None
        return workflow.webhook_settings(project.workflow, stage_id)

    # -- assets and tasks -------------------------------------------------------------------

    async def import_assets(
        self, project_id: str, items: Sequence[Any], *, skip_existing: bool = False
    ) -> ImportResult:
        """Create a task at Start for each asset; all or nothing."""
        assets = _parse_assets(items)
        async with self._first_to_commit(_RACED_IMPORT) as conn:
            project = await self._load_project(conn, project_id)
            existing = await _existing_external_ids(
                conn, project_id, [a.external_id for a in assets]
            )
            if existing and not skip_existing:
                shown = ", ".join(repr(e) for e in sorted(existing)[:5])
                raise Conflict(
                    f"{len(existing)} asset(s) already imported: {shown}"
                    " (pass skip_existing to import only the new ones)",
                    [
                        (f"[{a.index}].externalId", "already imported")
                        for a in assets
                        if a.external_id in existing
                    ],
                )
            fresh = [a for a in assets if a.external_id not in existing]
            batch_ids = await _ensure_batches(conn, project_id, fresh, self.clock())
            moved = [await self._create_task(conn, project, a, batch_ids) for a in fresh]
            count = await self._write_moves(conn, project, moved)
        self._woken(count)
        return ImportResult([m.task.id for m in moved], sorted(existing), count)

    @contextlib.asynccontextmanager
    async def _first_to_commit(self, message: str) -> AsyncIterator[AsyncConnection]:
        """A write transaction that lost a race for a unique key (on PostgreSQL, writers run
        at once) refuses as a Conflict: nothing was written."""
        try:
            async with self.store.transaction() as conn:
                yield conn
        except Duplicate as exc:
            raise Conflict(message) from exc

    async def _create_task(
        self,
        conn: AsyncConnection,
        project: Project,
        asset: _Asset,
        batch_ids: Mapping[str, str],
    ) -> _Move:
        now = self.clock()
        start = project.workflow.start
        task = Task(
            id=new_id(now),
            asset_id=new_id(now),
            project_id=project.id,
            external_id=asset.external_id,
            data_url=asset.data_url,
            dataset=asset.dataset,
            asset_metadata=asset.metadata,
            context_data=asset.context_data,
            batches=[(batch_ids[name], name) for name in asset.batches],
            stage_id=start,
            work_stage_id=start,
            annotations=dict(EMPTY_ANNOTATIONS),
            stage_history=[],
            updated_at=now,
            updated_by=None,
            total_duration=0,
            entered_at=now,
            created_at=now,
            version=0,
        )
        route = workflow.enter(project.workflow, start, _facts(project, task))
        return _Move(task, route, new=True, now=now)

    async def list_tasks(
        self,
        project_id: str,
        *,
        stage: str | None = None,
        batch: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Task]:
        """Tasks in id order, `after` an id for keyset paging (stays fast deep into a list)."""
        _positive(limit, "limit")
        async with self.store.read() as conn:
            await self._load_project(conn, project_id)
            query = _task_query(project_id, stage=stage, batch=batch, after=after)
            rows = (await conn.execute(query.order_by(tasks.c.id).limit(limit))).all()
            return await _with_batches(conn, rows)

    async def get_task(self, task_id: str) -> Task:
        async with self.store.read() as conn:
            return await _load_task(conn, task_id)

    async def count_tasks(self, project_id: str) -> dict[str, int]:
        """Tasks per stage id."""
        query = (
            sa.select(tasks.c.stage_id, sa.func.count())
            .where(tasks.c.project_id == project_id)
            .group_by(tasks.c.stage_id)
        )
        async with self.store.read() as conn:
            await self._load_project(conn, project_id)
            return {row[0]: row[1] for row in (await conn.execute(query)).all()}

    # -- steps ------------------------------------------------------------------------------

    async def submit(
        self, task_id: str, submission: Submission, *, user: str, duration_ms: int = 0
    ) -> Task:
        """A labeler hands in the task's annotations: it moves on through the stage's output."""
        user = _required_text(user, "user")
        duration_ms = _duration(duration_ms)
        unsent = _unsent(submission)

        def decide(task: Task, project: Project) -> _Move:
            _expect_stage(project, task, {"Label", "Start"}, "submitted")
            _check_submission(project, submission, unsent)
            annotations = submission.annotations()
            return self._leave(project, task, user, duration_ms, annotations, output=0)

        return await self._step(task_id, decide)

    async def review(
        self,
        task_id: str,
        *,
        accept: bool,
        user: str,
        duration_ms: int = 0,
        submission: Submission | None = None,
    ) -> Task:
        """Accept (first output) or reject (second output) a task waiting in a Review stage."""
        user = _required_text(user, "user")
        duration_ms = _duration(duration_ms)
        unsent = _unsent(submission) if submission is not None else []

        def decide(task: Task, project: Project) -> _Move:
            _expect_stage(project, task, {"Review"}, "reviewed")
            annotations = task.annotations
            if submission is not None:
                _check_submission(project, submission, unsent)
                annotations = submission.annotations()
            output = 0 if accept else 1
            return self._leave(project, task, user, duration_ms, annotations, output=output)

        return await self._step(task_id, decide)

    async def _step(self, task_id: str, decide: Callable[[Task, Project], _Move]) -> Task:
        """Move one task as ``decide`` says, from the task and project as last committed.

        They are read, and the move decided and rendered, outside any transaction that
        writes; the write is one `Store.write`, on condition that neither the task (its
        version) nor its project (its `updated_at`) changed since the read. If one did, the
        step starts again from a new read (where ``decide`` may now refuse), up to
        `_STEP_TRIES` times. On SQLite this keeps the one writer's turn to the trip that
        writes: held from the read to the commit, it was the limit of steps per second."""
        for _ in range(_STEP_TRIES):
            task, project = await self._read_step(task_id)
            move = decide(task, project)
            try:
                await self._write_step(project, move, _settle(project, move))
            except _Changed:
                continue
            return move.result
        raise Conflict(f"task {task_id} is being changed by others: read it again")

    async def _write_step(
        self, project: Project, move: _Move, fired: list[outbox.NewDelivery]
    ) -> None:
        """The step's one write. With a `courier` that has room, the deliveries it fires are
        claimed in it too and handed over to be sent at once; the dispatcher is woken for
        any it did not take."""
        courier = self.courier if fired else None
        handoff = None if courier is None else courier.reserve([_stage_of(d) for d in fired])
        try:
            found = await self.store.write(self._step_writes(project, move, fired, handoff))
        except BaseException as exc:
            if courier is not None and handoff is not None:
                courier.unreserve(handoff)
            if isinstance(exc, asyncio.CancelledError):
                self._cancelled(fired, handoff)
            raise
        taken: Sequence[outbox.Claimed] = ()
        if courier is not None and handoff is not None:
            taken = outbox.claimed_rows(found[-1], handoff)
            await courier.adopt(handoff, taken, project)
        self._woken(len(fired) - len(taken))

    def _cancelled(self, fired: list[outbox.NewDelivery], handoff: outbox.Handoff | None) -> None:
        """A step cancelled once its write was queued: on SQLite the write goes on, and may
        commit. Wake the dispatcher for what it enqueued; and what it claimed for a courier,
        which nobody would send before the lease ended, give back once the write is done."""
        if handoff is None:
            self._woken(len(fired))
            return
        task = asyncio.create_task(self._give_back(fired, handoff))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _give_back(self, fired: list[outbox.NewDelivery], handoff: outbox.Handoff) -> None:
        # The claim counted attempt 1; released, it is due at once and uncounted. Nothing
        # matches if the write did not commit (on PostgreSQL a cancelled write is rolled back).
        leases = [outbox.Lease(d.id, handoff.worker, 1) for d in fired]
        try:
            async with self.store.transaction() as conn:  # after the writes queued before it
                await outbox.release(conn, leases, now=self.clock())
        except Exception:
            log.exception("a cancelled step's claims were not given back: they go at lease end")
        self._woken(len(fired))

    async def _read_step(self, task_id: str) -> tuple[Task, Project]:
        """The task a step moves (with its batches) and its project, in one short read; the
        project is read again only if it changed since this engine last did."""
        dialect = self.store.dialect
        found = await self.store.read_once(task_rows.loading(dialect, _text(task_id)))
        loaded = task_rows.loaded(dialect, found)
        if loaded is None:
            raise NotFound(f"task {task_id!r} not found")
        columns, stamp, batches = loaded
        task = Task(**columns, batches=batches)
        project = self._projects.get(task.project_id)
        if project is None or project.updated_at != stamp:
            async with self.store.read() as conn:
                project = await self._load_project(conn, task.project_id)
        return task, project

    def _step_writes(
        self,
        project: Project,
        move: _Move,
        fired: list[outbox.NewDelivery],
        handoff: outbox.Handoff | None,
    ) -> list[Statement]:
        dialect = self.store.dialect
        update = task_rows.updating(
            dialect,
            move.result.id,
            _task_values(move.result),
            expected_version=move.task.version,
            stamp=project.updated_at,
            otherwise=_Changed,
        )
        # Announced even when handed over: what the claim leaves may be another worker's to
        # send (the one that finishes an earlier delivery of the task), and the listeners
        # wake their workers at most once per gap however many steps announce.
        statements = [*guarding(dialect, project.id), update, *outbox.enqueuing(dialect, fired)]
        if handoff is not None:
            statements.append(outbox.claiming_these(dialect, [d.id for d in fired], handoff))
        return statements

    async def release(
        self,
        project_id: str,
        stage_id: str,
        *,
        user: str,
        task_ids: Sequence[str] | None = None,
        batch: str | None = None,
    ) -> list[str]:
        """Release tasks held in a Hold stage (all, the given ones, or one batch's)."""
        user = _required_text(user, "user")
        async with self.store.transaction() as conn:
            project = await self._load_project(conn, project_id)
            stage = _stage(project, stage_id)
            if stage.type != "Hold":
                raise Invalid(f"stage {stage.name!r} is a {stage.type} stage, not a Hold stage")
            query = _task_query(project_id, stage=stage_id, batch=batch, after=None)
            if task_ids is not None:
                query = query.where(tasks.c.id.in_(list(task_ids)))
            held = await _with_batches(conn, (await conn.execute(query)).all())
            if task_ids is None:
                held = [t for t in held if workflow.releasable(stage, _facts(project, t))]
            moves = [self._leave(project, t, user, 0, t.annotations, output=0) for t in held]
            count = await self._write_moves(conn, project, moves)
        self._woken(count)
        return [m.task.id for m in moves]

    async def requeue(self, task_id: str, stage_id: str, *, user: str) -> Task:
        """Put a task into any stage, as a manager does to send work back."""
        user = _required_text(user, "user")

        def decide(task: Task, project: Project) -> _Move:
            _stage(project, stage_id)
            now = self.clock()
            left = _history_entry(project, task, now, user, 0)
            task = replace(task, stage_history=[*task.stage_history, left])
            route = workflow.enter(project.workflow, stage_id, _facts(project, task))
            return _Move(task, route, new=False, now=now)

        return await self._step(task_id, decide)

    def _leave(
        self,
        project: Project,
        task: Task,
        user: str,
        duration_ms: int,
        annotations: dict[str, Any],
        *,
        output: int,
    ) -> _Move:
        now = self.clock()
        task = replace(
            task,
            annotations=annotations,
            updated_at=now,
            updated_by=user,
            total_duration=task.total_duration + duration_ms,
            work_stage_id=task.stage_id,
        )
        left = _history_entry(project, task, now, user, duration_ms)
        task = replace(task, stage_history=[*task.stage_history, left])
        route = workflow.advance(
            project.workflow, task.stage_id, _facts(project, task), output=output
        )
        return _Move(task, route, new=False, now=now)

    async def _write_moves(
        self, conn: AsyncConnection, project: Project, moves: Sequence[_Move]
    ) -> int:
        """Write each task where its route ends and enqueue a delivery per Webhook entered."""
        pending: list[outbox.NewDelivery] = []
        for move in moves:
            pending.extend(_settle(project, move))
            final = move.result
            if move.new:
                await _insert_task(conn, final)
            else:
                await _update_task(conn, final, expected_version=move.task.version)
        if pending:
            await outbox.enqueue(conn, pending)
        return len(pending)

    def _woken(self, count: int) -> None:
        if count and self.on_enqueue is not None:
            self.on_enqueue()

    # -- export -----------------------------------------------------------------------------

    async def export(
        self,
        project_id: str,
        *,
        stage: str | None = None,
        batch: str | None = None,
        updated_since: float | None = None,
        page: int = 500,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching task in export format, read page by page (one short read each)."""
        _positive(page, "page")
        after: str | None = None
        while True:
            async with self.store.read() as conn:
                project = await self._load_project(conn, project_id)
                query = _task_query(project_id, stage=stage, batch=batch, after=after)
                if updated_since is not None:
                    query = query.where(tasks.c.updated_at >= updated_since)
                rows = (await conn.execute(query.order_by(tasks.c.id).limit(page))).all()
                found = await _with_batches(conn, rows)
            for task in found:
                yield payload.export_view(_snapshot(project, task))
            if len(found) < page:
                return
            after = found[-1].id

    def export_view(self, project: Project, task: Task) -> dict[str, Any]:
        return payload.export_view(_snapshot(project, task))

    # -- deliveries -------------------------------------------------------------------------

    async def list_deliveries(
        self,
        project_id: str,
        *,
        stage_id: str | None = None,
        task_id: str | None = None,
        state: str | None = None,
        before: float | None = None,
        limit: int = 100,
    ) -> list[outbox.DeliveryInfo]:
        async with self.store.read() as conn:
            await self._load_project(conn, project_id)
            try:
                return await outbox.list_deliveries(
                    conn,
                    project_id=project_id,
                    stage_id=stage_id,
                    task_id=task_id,
                    state=state,
                    before=before,
                    limit=limit,
                )
            except ValueError as exc:
                raise Invalid(str(exc)) from exc

    async def get_delivery(self, delivery_id: str) -> outbox.DeliveryDetail:
        async with self.store.read() as conn:
            found = await outbox.get_delivery(conn, delivery_id)
        if found is None:
            raise NotFound(f"delivery {delivery_id!r} not found")
        return found

    async def stage_log(self, project_id: str, stage_id: str, *, limit: int = 200) -> list[str]:
        async with self.store.read() as conn:
            project = await self._load_project(conn, project_id)
            _webhook_stage(project, stage_id)
            return await outbox.stage_log(conn, project_id, stage_id, limit)

    async def redeliver(self, delivery_id: str) -> bool:
        """Send one delivery again: same id, same bytes. False if it is still pending."""
        async with self.store.transaction() as conn:
            if await outbox.get_delivery(conn, delivery_id) is None:
                raise NotFound(f"delivery {delivery_id!r} not found")
            again = await outbox.redeliver(conn, delivery_id, now=self.clock())
        self._woken(int(again))
        return again

    async def rerun_stage(
        self,
        project_id: str,
        stage_id: str,
        *,
        only_failed: bool = False,
        since: float | None = None,
    ) -> int:
        """Fire a Webhook stage again for the tasks that passed it (Ango's re-run webhook).

        Each task's deliveries there are sent again with their ids and bytes, so a receiver
        that deduplicates sees a repeat, and running it twice queues nothing twice.
        """
        async with self.store.transaction() as conn:
            project = await self._load_project(conn, project_id)
            _webhook_stage(project, stage_id)
            count = await outbox.redeliver_stage(
                conn,
                project_id=project_id,
                stage_id=stage_id,
                only_failed=only_failed,
                since=since,
                now=self.clock(),
            )
        self._woken(count)
        return count

    async def stage_status(self, project_id: str, stage_id: str) -> StageStatus:
        async with self.store.read() as conn:
            project = await self._load_project(conn, project_id)
            stage = _webhook_stage(project, stage_id)
            endpoint = await endpoint_store.status(conn, project_id, stage_id)
            counts = await outbox.counts(conn, project_id, stage_id)
            gate = None
            if workflow.waits(stage):
                gate = await outbox.gate_counts(conn, project_id, stage_id)
        return StageStatus(stage, endpoint, counts, gate)

    async def enable_endpoint(self, project_id: str, stage_id: str) -> int:
        """Enable a Webhook stage's endpoint after a 410 Gone disabled it: what waited is
        due at once. Returns how many waiting deliveries that made due."""
        async with self.store.transaction() as conn:
            project = await self._load_project(conn, project_id)
            _webhook_stage(project, stage_id)
            count = await endpoint_store.enable(conn, project_id, stage_id, now=self.clock())
        self._woken(1)  # deliveries enqueued while it was disabled are due too
        return count

    async def delivery_stats(
        self,
    ) -> tuple[list[outbox.StageQueue], list[endpoint_store.EndpointStatus]]:
        """Every stage's deliveries by state and due queue, and the disabled endpoints."""
        async with self.store.read() as conn:
            queues = await outbox.queues(conn, now=self.clock())
            return queues, await endpoint_store.disabled(conn)

    async def settle_gates(
        self, conn: AsyncConnection, results: Sequence[outbox.AttemptResult]
    ) -> None:
        """Move on the tasks that wait in a gate Webhook stage for deliveries whose attempts
        ``results`` records, inside the transaction that records them: a delivered one
        through the stage's first output, a failed one through its failure output if the
        workflow has one (else the task stays, its delivery failed, until a person re-sends
        or moves it). Only the delivery made when the task entered the stage counts."""
        final = {Verdict.DELIVERED, Verdict.GIVE_UP}
        ids = {r.lease.delivery_id for r in results if r.decision.verdict in final}
        gated = await self._gate_candidates(conn, results, ids)
        moves: dict[str, dict[str, _Move]] = {}
        for found in await outbox.finished(conn, gated):
            project = await self._load_project(conn, found.project_id)
            move = await self._gate_move(conn, project, found)
            if move is not None:
                moves.setdefault(project.id, {})[move.task.id] = move
        for project_id, by_task in moves.items():
            project = await self._load_project(conn, project_id)
            count = await self._write_moves(conn, project, list(by_task.values()))
            self._woken(count)

    async def _gate_candidates(
        self, conn: AsyncConnection, results: Sequence[outbox.AttemptResult], ids: set[str]
    ) -> set[str]:
        # Results that say where they went are sorted here, without reading any delivery:
        # in pass-mode stages (the common case) settling costs nothing.
        gates: dict[tuple[str, str], bool] = {}
        kept: set[str] = set()
        for result in results:
            delivery_id = result.lease.delivery_id
            if delivery_id not in ids:
                continue
            if result.project_id is None or result.stage_id is None:
                kept.add(delivery_id)
                continue
            where = (result.project_id, result.stage_id)
            if where not in gates:
                gates[where] = await self._is_gate(conn, *where)
            if gates[where]:
                kept.add(delivery_id)
        return kept

    async def _is_gate(self, conn: AsyncConnection, project_id: str, stage_id: str) -> bool:
        try:
            project = await self._load_project(conn, project_id)
        except NotFound:
            return False
        stage = project.workflow.stages.get(stage_id)
        return stage is not None and stage.type == "Webhook" and workflow.waits(stage)

    async def _gate_move(
        self, conn: AsyncConnection, project: Project, found: outbox.Finished
    ) -> _Move | None:
        stage = project.workflow.stages.get(found.stage_id)
        if stage is None or stage.type != "Webhook" or not workflow.waits(stage):
            return None
        if found.state == "delivered":
            output: int | None = workflow.GateOutput.DELIVERED
        else:
            output = workflow.failure_output(stage)
        if output is None:
            return None  # failed, and no failure output: the task stays, visibly
        task = await _load_task(conn, found.task_id)
        if task.stage_id != found.stage_id or task.entered_at > found.created_at:
            return None  # it moved, or waits on a newer delivery
        now = self.clock()
        passed = _history_entry(project, task, now, None, 0)
        task = replace(task, stage_history=[*task.stage_history, passed])
        route = workflow.advance(project.workflow, stage.id, _facts(project, task), output=output)
        return _Move(task, route, new=False, now=now)

    # -- processes --------------------------------------------------------------------------

    async def list_workers(self) -> list[processes.Worker]:
        """The serve and worker processes running now (seen within their last three beats)."""
        async with self.store.read() as conn:
            return await processes.alive(conn, now=self.clock())

    # -- API keys ---------------------------------------------------------------------------

    async def create_key(
        self, name: str, role: str = "admin", *, expires_at: float | None = None
    ) -> tuple[ApiKey, str]:
        """A new key and its secret value, which is shown this once and stored as a hash."""
        name = _required_text(name, "name")
        if role not in ROLES:
            raise Invalid(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
        now = self.clock()
        key = ApiKey(new_id(now), name, role, now, expires_at, None)
        value = f"hs_{secrets.token_urlsafe(32)}"
        async with self.store.transaction() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=key.id,
                    name=name,
                    key_hash=_key_hash(value),
                    role=role,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return key, value

    async def list_keys(self) -> list[ApiKey]:
        async with self.store.read() as conn:
            rows = (await conn.execute(api_keys.select().order_by(api_keys.c.created_at))).all()
        return [_key_from_row(row._mapping) for row in rows]

    async def revoke_key(self, key_id: str) -> None:
        async with self.store.transaction() as conn:
            done = await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self.clock())
            )
        self._keys.clear()  # revoked here: refused from the next request on
        self._keys_generation += 1
        if done.rowcount == 0:
            raise NotFound(f"no active key with id {key_id!r}")

    async def authenticate(self, value: str) -> ApiKey | None:
        """The key for a presented secret value, if it is known, not revoked, not expired.

        A known key is remembered for `KEY_CACHE_SECONDS`: every API call presents one, and
        reading it each time cost a database transaction per call. A key revoked through this
        engine is refused at once; one revoked by another process (the CLI, another server
        on the same database) within `KEY_CACHE_SECONDS`. Expiry is checked on every call.
        Unknown values are not remembered (a key created elsewhere works at once)."""
        digest = _key_hash(value)
        now = self.clock()
        cached = self._keys.get(digest)
        if cached is not None and time.monotonic() - cached[1] < KEY_CACHE_SECONDS:
            key = cached[0]
        else:
            read_at, generation = time.monotonic(), self._keys_generation
            async with self.store.read() as conn:
                row = (await conn.execute(_KEY_BY_HASH, {"key_hash": digest})).one_or_none()
            if row is None:
                self._keys.pop(digest, None)
                return None
            key = _key_from_row(row._mapping)
            self._remember_key(digest, key, read_at, generation)
        if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
            return None
        return key

    def _remember_key(self, digest: str, key: ApiKey, read_at: float, generation: int) -> None:
        if generation != self._keys_generation:
            return  # a key was revoked while this one was read: it may be this one
        if len(self._keys) >= _KEYS_REMEMBERED:
            self._keys.clear()
        self._keys[digest] = (key, read_at)


# -- moves ------------------------------------------------------------------------------------


@dataclass
class _Move:
    """A task about to leave its stage along `route`; `result` is the task once written."""

    task: Task
    route: workflow.Route
    new: bool
    now: float
    result: Task = field(init=False)


def _stage_of(delivery: outbox.NewDelivery) -> tuple[str, str]:
    return delivery.project_id, delivery.stage_id


def _settle(project: Project, move: _Move) -> list[outbox.NewDelivery]:
    """Where the move leaves its task (``move.result``), and the deliveries it fires."""
    move.result, fired = _walk(project, move)
    return fired


def _walk(project: Project, move: _Move) -> tuple[Task, list[outbox.NewDelivery]]:
    task = move.task
    fired: list[outbox.NewDelivery] = []
    for stage_id in move.route.entered:
        stage = project.workflow.stages[stage_id]
        if stage.type == "Webhook":
            fired.append(_delivery(project, task, stage, move.now))
        if stage_id != move.route.final:
            passed = _history_entry(project, replace(task, stage_id=stage_id), move.now, None, 0)
            task = replace(task, stage_history=[*task.stage_history, passed])
    final = replace(
        task,
        stage_id=move.route.final,
        entered_at=move.now,
        version=task.version + 1,
    )
    return final, fired


def _delivery(
    project: Project, task: Task, stage: workflow.Stage, now: float
) -> outbox.NewDelivery:
    settings = stage.settings
    assert isinstance(settings, workflow.WebhookSettings)
    view = payload.webhook_view(
        _snapshot(project, task),
        format=settings.format,
        webhook_stage_id=stage.id,
        webhook_stage_name=stage.name,
    )
    return outbox.NewDelivery(
        id=f"dlv_{new_id(now)}",
        project_id=project.id,
        stage_id=stage.id,
        task_id=task.id,
        external_id=task.external_id,
        body=payload.render(view),
        due_at=now,
        created_at=now,
    )


def _history_entry(
    project: Project, task: Task, now: float, user: str | None, duration_ms: int
) -> dict[str, Any]:
    stage = project.workflow.stages.get(task.stage_id)
    entry: dict[str, Any] = {
        "stage": stage.name if stage is not None else task.stage_id,
        "stageId": task.stage_id,
        "duration": duration_ms,
        "completedAt": timestamp(now),
    }
    if user is not None:
        entry["completedBy"] = user
    annotations = task.annotations
    entry["tools"] = annotations.get("tools", [])
    entry["classifications"] = annotations.get("classifications", [])
    entry["relations"] = annotations.get("relations", [])
    entry["brushDataUrl"] = annotations.get("brushDataUrl")
    return entry


def _snapshot(project: Project, task: Task) -> payload.Snapshot:
    work = project.workflow.stages.get(task.work_stage_id)
    annotations = task.annotations
    return payload.Snapshot(
        project_id=project.id,
        category_schema=schema.to_json(project.category_schema),
        asset_url=task.data_url,
        asset_id=task.asset_id,
        dataset=task.dataset,
        external_id=task.external_id,
        metadata=task.asset_metadata,
        context_data=task.context_data,
        batches=task.batches,
        task_id=task.id,
        stage_id=task.work_stage_id,
        stage_name=work.name if work is not None else task.work_stage_id,
        updated_at=timestamp(task.updated_at),
        duration=_work_duration(task),
        updated_by=task.updated_by,
        total_duration=task.total_duration,
        tools=annotations.get("tools", []),
        classifications=annotations.get("classifications", []),
        relations=annotations.get("relations", []),
        brush_data_url=annotations.get("brushDataUrl"),
        medical_brush_data_url=annotations.get("medicalBrushDataUrl"),
        stage_history=task.stage_history,
    )


def _work_duration(task: Task) -> int:
    """How long the step whose work the task carries took: automatic stages passed since
    (a Logic stage before the Webhook) record 0 and must not hide it."""
    for entry in reversed(task.stage_history):
        if entry.get("stageId") == task.work_stage_id:
            return int(entry.get("duration", 0))
    return 0


def _facts(project: Project, task: Task) -> workflow.TaskFacts:
    annotations = task.annotations
    return workflow.TaskFacts(
        task_id=task.id,
        schema_ids=schema.present_schema_ids(
            annotations.get("tools", []),
            annotations.get("classifications", []),
            project.category_schema,
        ),
        annotator=task.updated_by,
        batches=frozenset(name for _, name in task.batches),
    )


# -- input ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Asset:
    index: int
    external_id: str
    data_url: str
    dataset: list[Any]
    metadata: dict[str, Any]
    batches: list[str]
    context_data: dict[str, Any] | None


def _parse_assets(items: Sequence[Any]) -> list[_Asset]:
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise Invalid("assets: expected a list of objects")
    problems: list[tuple[str, str]] = []
    assets = [a for i, item in enumerate(items) if (a := _parse_asset(i, item, problems))]
    seen: dict[str, int] = {}
    for asset in assets:
        if asset.external_id in seen:
            problems.append(
                (f"[{asset.index}].externalId", f"duplicate of [{seen[asset.external_id]}]")
            )
        seen.setdefault(asset.external_id, asset.index)
    if problems:
        raise Invalid(_summary("asset", problems), problems)
    return assets


def _parse_asset(index: int, item: Any, problems: list[tuple[str, str]]) -> _Asset | None:
    where = f"[{index}]"
    if not isinstance(item, dict):
        problems.append((where, "expected an object"))
        return None
    before = len(problems)
    external_id: str = _field(item, "externalId", str, where, problems, required=True)
    data_url: Any = item.get("data", item.get("asset"))
    if not isinstance(data_url, str) or not data_url:
        problems.append((f"{where}.data", "expected the asset's URL (a non-empty string)"))
    batch_names = _field(item, "batches", list, where, problems) or []
    if not all(isinstance(b, str) and b for b in batch_names):
        problems.append((f"{where}.batches", "expected a list of batch names"))
    elif len(set(batch_names)) < len(batch_names):
        twice = next(b for i, b in enumerate(batch_names) if b in batch_names[:i])
        problems.append((f"{where}.batches", f"lists {twice!r} twice"))
    context = _field(item, "contextData", dict, where, problems)
    metadata = _field(item, "metadata", dict, where, problems) or {}
    dataset = _field(item, "dataset", list, where, problems) or []
    if len(problems) == before:
        for key, value in (("metadata", metadata), ("contextData", context), ("dataset", dataset)):
            problems.extend(_unsendable(f"{where}.{key}", value))
    if len(problems) == before:
        problems.extend(
            (f"{where}.{p}", m) for p, m in _format_problems({"metadata": metadata}, "")
        )
    if len(problems) > before:
        return None
    return _Asset(index, external_id, data_url, dataset, metadata, batch_names, context)


def _unsendable(path: str, value: Any) -> list[tuple[str, str]]:
    """Where ``value`` holds an integer a webhook's JSON cannot carry (orjson, which renders
    the bodies, writes 64 bits): taken, it would fail every delivery of the task."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:  # iterative: a hostile depth cannot exhaust the stack
        where, item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if not _INT_LOW <= item <= _INT_HIGH:
                return [(where, "is an integer beyond 64 bits, which no webhook can carry")]
        elif isinstance(item, dict):
            stack.extend((f"{where}.{key}", child) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}[{n}]", child) for n, child in enumerate(item))
    return []


# The integers orjson writes: signed and unsigned 64 bits.
_INT_LOW, _INT_HIGH = -(2**63), 2**64 - 1


def _field(
    item: dict[str, Any],
    key: str,
    kind: type,
    where: str,
    problems: list[tuple[str, str]],
    *,
    required: bool = False,
) -> Any:
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (kind is str and not value):
        expected = _EXPECTED.get(kind, kind.__name__)
        problems.append((f"{where}.{key}", f"expected {expected}"))
        return None
    return value


_EXPECTED: dict[type, str] = {str: "a non-empty string", list: "a list", dict: "an object"}


def _summary(what: str, problems: Sequence[tuple[str, str]]) -> str:
    first = "; ".join(f"{path}: {message}" for path, message in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return f"invalid {what}: {first}{more}"


def _required_text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{name}: expected a non-empty string")
    return value.strip()


def _duration(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid("duration: expected a whole number of milliseconds, 0 or more")
    return value


def _positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Invalid(f"{name}: expected a whole number, 1 or more, got {value!r}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _parse_schema(value: Any) -> schema.CategorySchema:
    try:
        return schema.parse_schema(value)
    except schema.SchemaError as exc:
        raise Invalid(f"categorySchema: {exc}", _prefixed("categorySchema", exc.problems)) from exc


def _parse_workflow(value: Any, schema_ids: frozenset[str]) -> workflow.Workflow:
    try:
        return workflow.parse(value, schema_ids=schema_ids)
    except workflow.WorkflowError as exc:
        raise Invalid(f"workflow: {exc}", [(p.where, p.message) for p in exc.problems]) from exc


def _prefixed(prefix: str, problems: Iterable[Any]) -> list[tuple[str, str]]:
    return [(f"{prefix}.{p.path}", p.message) for p in problems]


def _unsent(submission: Submission) -> list[tuple[str, str]]:
    """What the export format refuses in the submission's annotations. It does not depend on
    the project: found before the step's transaction, it keeps SQLite's one writer waiting
    for none of it."""
    return _format_problems({"metadata": {}, "task": submission.annotations()}, "task.")


def _check_submission(
    project: Project, submission: Submission, unsent: list[tuple[str, str]]
) -> None:
    """Refuse the submission if the project's schema does, or else if ``unsent`` (its
    `_unsent` problems) has any."""
    problems = schema.check_annotations(
        project.category_schema,
        submission.tools,
        submission.classifications,
        submission.relations,
    )
    found = [(p.path, p.message) for p in problems] or unsent
    if found:
        raise Invalid(_summary("annotations", found), found)


_RECORD_STUB: dict[str, Any] = {
    "asset": "",
    "assetId": "",
    "dataset": [],
    "externalId": "",
    "batches": [],
}
_TASK_STUB: dict[str, Any] = {
    "taskId": "",
    "stage": "",
    "updatedAt": None,
    "updatedBy": None,
    "totalDuration": 0,
    **EMPTY_ANNOTATIONS,
}


def _format_problems(part: Mapping[str, Any], prefix: str) -> list[tuple[str, str]]:
    """What the export format refuses in `part` of a record: bodies are built from it, and a
    body that `payload.parse` (a receiver) refuses must not be accepted. Paths lose `prefix`."""
    record = _RECORD_STUB | {**part, "task": _TASK_STUB | part.get("task", {})}
    try:
        payload.parse(record)
    except payload.PayloadError as exc:
        return [(path.removeprefix(prefix), message) for path, message in exc.errors]
    return []


def _stage(project: Project, stage_id: str) -> workflow.Stage:
    stage = project.workflow.stages.get(stage_id)
    if stage is None:
        known = ", ".join(repr(s) for s in project.workflow.stages)
        raise NotFound(f"stage {stage_id!r} is not in the workflow (stages: {known})")
    return stage


def _webhook_stage(project: Project, stage_id: str) -> workflow.Stage:
    stage = _stage(project, stage_id)
    if stage.type != "Webhook":
        raise Invalid(f"stage {stage.name!r} is a {stage.type} stage, not a Webhook stage")
    return stage


def _expect_stage(project: Project, task: Task, types: set[str], verb: str) -> None:
    stage = project.workflow.stages[task.stage_id]
    if stage.type not in types:
        wanted = " or ".join(sorted(types))
        raise Conflict(
            f"task {task.id} is in stage {stage.name!r} ({stage.type}): only a task in a"
            f" {wanted} stage can be {verb}"
        )


def _key_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _key_from_row(row: sa.RowMapping) -> ApiKey:
    return ApiKey(
        row["id"], row["name"], row["role"], row["created_at"], row["expires_at"], row["revoked_at"]
    )


# -- queries ----------------------------------------------------------------------------------

# The statements of every step, built once: building one (and its cache key) on each call cost
# more than running it. Values are bound at execution.
_PROJECT_BY_ID = projects.select().where(projects.c.id == sa.bindparam("project_id"))
_KEY_BY_HASH = api_keys.select().where(api_keys.c.key_hash == sa.bindparam("key_hash"))


def _task_query(
    project_id: str, *, stage: str | None, batch: str | None, after: str | None
) -> sa.Select[Any]:
    query = sa.select(tasks).where(tasks.c.project_id == project_id)
    if stage is not None:
        query = query.where(tasks.c.stage_id == stage)
    if batch is not None:
        # EXISTS per row, not IN (all the batch's tasks): the page stops after `limit` rows
        # in id order instead of sorting the whole batch (measured: 9-16 ms -> 0.13 ms).
        in_batch = (
            sa.select(task_batches.c.task_id)
            .join(batches, batches.c.id == task_batches.c.batch_id)
            .where(
                task_batches.c.task_id == tasks.c.id,
                batches.c.project_id == project_id,
                batches.c.name == batch,
            )
        )
        query = query.where(in_batch.exists())
    if after is not None:
        query = query.where(tasks.c.id > after)
    return query


async def _with_batches(conn: AsyncConnection, rows: Sequence[sa.Row[Any]]) -> list[Task]:
    if not rows:
        return []
    by_task = await task_rows.batches_of(conn, [row.id for row in rows])
    return [Task(**row._mapping, batches=by_task.get(row.id, [])) for row in rows]


async def _load_task(conn: AsyncConnection, task_id: str) -> Task:
    """The task; its batches are read only if it has any."""
    found = await task_rows.load(conn, _text(task_id))
    if found is None:
        raise NotFound(f"task {task_id!r} not found")
    task, _, batched = found
    links = await task_rows.batches_of(conn, [task["id"]]) if batched else {}
    return Task(**task, batches=links.get(task["id"], []))


def _task_values(task: Task) -> dict[str, Any]:
    return {name: getattr(task, name) for name in task_rows.WRITTEN}


async def _insert_task(conn: AsyncConnection, task: Task) -> None:
    await conn.execute(
        tasks.insert().values(
            id=task.id,
            asset_id=task.asset_id,
            project_id=task.project_id,
            external_id=task.external_id,
            data_url=task.data_url,
            dataset=task.dataset,
            asset_metadata=task.asset_metadata,
            context_data=task.context_data,
            created_at=task.created_at,
            **_task_values(task),
        )
    )
    if task.batches:
        await conn.execute(
            task_batches.insert(),
            [
                {"task_id": task.id, "batch_id": batch_id, "position": i}
                for i, (batch_id, _) in enumerate(task.batches)
            ],
        )


async def _update_task(conn: AsyncConnection, task: Task, *, expected_version: int) -> None:
    await task_rows.update(
        conn,
        task.id,
        _task_values(task),
        expected_version=expected_version,
        otherwise=lambda: Conflict(
            f"task {task.id} was changed by someone else meanwhile: read it again"
        ),
    )


async def _existing_external_ids(
    conn: AsyncConnection, project_id: str, external_ids: Sequence[str]
) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(external_ids), 500):
        chunk = external_ids[start : start + 500]
        rows = await conn.execute(
            sa.select(tasks.c.external_id).where(
                tasks.c.project_id == project_id, tasks.c.external_id.in_(chunk)
            )
        )
        found.update(rows.scalars())
    return found


async def _ensure_batches(
    conn: AsyncConnection, project_id: str, assets: Sequence[_Asset], now: float
) -> dict[str, str]:
    names = sorted({name for asset in assets for name in asset.batches})
    if not names:
        return {}
    known = await _batch_ids(conn, project_id, names)
    missing = [
        {"id": new_id(now), "project_id": project_id, "name": n} for n in names if n not in known
    ]
    if missing:
        # A concurrent import (PostgreSQL) may add one of them first: its row is the batch.
        await insert_missing(conn, batches, missing)
        known = await _batch_ids(conn, project_id, names)
    return known


async def _batch_ids(conn: AsyncConnection, project_id: str, names: list[str]) -> dict[str, str]:
    rows = await conn.execute(
        sa.select(batches.c.name, batches.c.id).where(
            batches.c.project_id == project_id, batches.c.name.in_(names)
        )
    )
    return {name: batch_id for name, batch_id in rows.all()}


async def _check_tasks_still_placed(
    conn: AsyncConnection, project_id: str, new: workflow.Workflow
) -> None:
    """A workflow may not drop a stage that still holds tasks: they would be stranded."""
    rows = await conn.execute(
        sa.select(tasks.c.stage_id, sa.func.count())
        .where(tasks.c.project_id == project_id)
        .group_by(tasks.c.stage_id)
    )
    stranded = {stage: n for stage, n in rows.all() if stage not in new.stages}
    if stranded:
        listed = ", ".join(f"{stage!r} ({n} tasks)" for stage, n in sorted(stranded.items()))
        raise Conflict(
            f"the new workflow drops stages that still hold tasks: {listed};"
            " requeue those tasks first"
        )
