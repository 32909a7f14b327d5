"""The tables, shared by every dialect. Times are epoch seconds (float): one comparable type
on SQLite and PostgreSQL, and cheap to compare in the claim query."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "api_keys",
    "attempts",
    "batches",
    "deliveries",
    "delivery_bodies",
    "endpoints",
    "metadata",
    "projects",
    "task_batches",
    "tasks",
    "workers",
]

metadata = sa.MetaData()

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("category_schema", sa.JSON, nullable=False),
    # The workflow as saved, secrets included: it is never sent out as is (see workflow.to_json).
    sa.Column("workflow", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.UniqueConstraint("project_id", "name", name="uq_batches_project_name"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("asset_id", sa.String(32), nullable=False, unique=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("external_id", sa.Text, nullable=False),
    sa.Column("data_url", sa.Text, nullable=False),
    sa.Column("dataset", sa.JSON, nullable=False),
    sa.Column("asset_metadata", sa.JSON, nullable=False),
    sa.Column("context_data", sa.JSON, nullable=True),
    sa.Column("stage_id", sa.Text, nullable=False),
    # The stage whose work the task carries (ango-2023's task.stage / task.stageId).
    sa.Column("work_stage_id", sa.Text, nullable=False),
    sa.Column("annotations", sa.JSON, nullable=False),
    sa.Column("stage_history", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.Text, nullable=True),
    sa.Column("total_duration", sa.Integer, nullable=False),
    sa.Column("entered_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # Optimistic concurrency: a step only applies to the version it read.
    sa.Column("version", sa.Integer, nullable=False),
    sa.UniqueConstraint("project_id", "external_id", name="uq_tasks_project_external"),
    sa.Index("ix_tasks_project_stage", "project_id", "stage_id", "id"),
    sa.Index("ix_tasks_project_updated", "project_id", "updated_at"),
)

task_batches = sa.Table(
    "task_batches",
    metadata,
    sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id"), primary_key=True),
    sa.Column("batch_id", sa.String(32), sa.ForeignKey("batches.id"), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Index("ix_task_batches_batch", "batch_id", "task_id"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("stage_id", sa.Text, nullable=False),
    sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("external_id", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("due_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("leased_by", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("redelivery_of", sa.String(40), nullable=True),
    # The claim's scan, oldest due first. project_id and stage_id let it step over the rows
    # of held-back endpoints (full queue, open circuit: often the oldest due) in the index
    # alone, without reading each row (measured: a claim beside 2,000 black-holed deliveries
    # no longer reads their rows; docs/benchmarks.md, isolation, has the numbers).
    sa.Index("ix_deliveries_state_due", "state", "due_at", "project_id", "stage_id"),
    sa.Index("ix_deliveries_stage", "project_id", "stage_id", "created_at"),
    sa.Index("ix_deliveries_task", "task_id", "created_at"),
    # The claim's "no earlier delivery of this task to this stage pending" test, exactly:
    # without it, PostgreSQL before its first ANALYZE of a big backlog intersected the
    # state index for every candidate: 16 s for one claim among 20,000 pending, ~60 ms with it.
    sa.Index(
        "ix_deliveries_pending_task",
        "task_id",
        "stage_id",
        "created_at",
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    ),
)

# The exact bytes, rendered once at enqueue: every attempt sends them untouched. Kept apart
# from `deliveries`, whose rows every claim and record rewrite: a body inline made each of
# those rows fill a page of its own (measured: 48 -> 18 us per claim and record cycle).
delivery_bodies = sa.Table(
    "delivery_bodies",
    metadata,
    sa.Column("delivery_id", sa.String(40), sa.ForeignKey("deliveries.id"), primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(40), sa.ForeignKey("deliveries.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error_class", sa.String(32), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("response_headers", sa.JSON, nullable=True),
    sa.Column("response_body", sa.LargeBinary, nullable=True),
    sa.Index("ix_attempts_delivery", "delivery_id", "number"),
    sa.Index("ix_attempts_started", "started_at"),
)

# A Webhook stage's endpoint as delivery found it: a 410 Gone disables it until a person
# enables it again. A row exists once an endpoint has been disabled.
endpoints = sa.Table(
    "endpoints",
    metadata,
    sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id"), primary_key=True),
    sa.Column("stage_id", sa.Text, primary_key=True),
    sa.Column("disabled_at", sa.Float, nullable=True),
    sa.Column("disabled_reason", sa.Text, nullable=True),
    sa.Column("enabled_at", sa.Float, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    # Only a hash is kept: a key is shown once, when it is created.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

# Every running `serve` and `worker` process, as it last reported itself: a row is rewritten
# every `beat_seconds`, and one not seen for three beats is a process that is gone.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("dispatching", sa.Boolean, nullable=False),
    sa.Column("beat_seconds", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
)
