"""The outbox: deliveries and their attempts. Plain async functions over one connection, so
each runs inside the caller's transaction (enqueue commits with the task's move).

Leases: ``claim`` pushes ``due_at`` to the lease expiry and counts the attempt, so an
expired lease makes the delivery due again with no extra condition, and a lease is
identified by (worker, attempt number): ``record`` and ``release`` only move a delivery
still held by that very claim, so a late result cannot undo a newer one.

A stage whose endpoint is disabled (a 410 Gone, see ``store.endpoints``) has its deliveries
left out of every claim; those waiting when it was disabled are parked (due at ``PARKED``)
so that claims do not step over them, and are due again when it is enabled.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage.retry import Decision, Verdict
from hookstage.store import Statement, execute_later, fetch, fetch_each, sql_for
from hookstage.store.notify import announce, announcing
from hookstage.store.tables import attempts, deliveries, delivery_bodies, tasks

__all__ = [
    "MAX_STORED_RESPONSE",
    "PARKED",
    "STATES",
    "AttemptInfo",
    "AttemptResult",
    "Claimed",
    "DeliveryDetail",
    "DeliveryInfo",
    "Finished",
    "Handoff",
    "Lease",
    "NewDelivery",
    "StageQueue",
    "claim",
    "claim_and_next_due",
    "claimed_from",
    "claimed_rows",
    "claiming",
    "claiming_these",
    "counts",
    "enqueue",
    "enqueuing",
    "finished",
    "gate_counts",
    "get_delivery",
    "list_deliveries",
    "next_due_at",
    "queues",
    "record",
    "recording",
    "redeliver",
    "redeliver_stage",
    "release",
    "stage_log",
]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATES = (PENDING, DELIVERED, FAILED)
MAX_STORED_RESPONSE = 64 * 1024
# The due time of a delivery parked behind a disabled endpoint: 9999-12-31T23:59:59Z, past
# any claim's `now` and still a date every reader can show.
PARKED = 253_402_300_799.0

_FINAL_STATE = {
    Verdict.DELIVERED: DELIVERED,
    Verdict.GIVE_UP: FAILED,
    Verdict.RETRY: PENDING,
    Verdict.DISABLE: PENDING,
}
_WAITING = frozenset({Verdict.RETRY, Verdict.DISABLE})


@dataclass(frozen=True)
class NewDelivery:
    id: str
    project_id: str
    stage_id: str
    task_id: str
    external_id: str
    body: bytes
    due_at: float
    created_at: float


class Lease(NamedTuple):
    """One claim of one delivery: the worker and the attempt number it claimed."""

    delivery_id: str
    worker: str
    number: int


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed for one attempt (``attempt`` is its 1-based number)."""

    id: str
    project_id: str
    stage_id: str
    task_id: str
    external_id: str
    body: bytes = field(repr=False)
    attempt: int
    lease_until: float
    worker: str
    created_at: float = 0.0
    # Made once: the dispatcher asks for it several times per attempt.
    lease: Lease = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lease", Lease(self.id, self.worker, self.attempt))


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one claimed attempt ended, and what the retry policy made of it.

    ``project_id``, ``stage_id`` and ``task_id`` say where the delivery goes (a DISABLE
    decision disables that stage's endpoint when they are given); ``settles`` False says
    no task waits on it (its endpoint, as the attempt found it, is a pass-mode stage's)."""

    lease: Lease
    started_at: float
    duration_ms: float
    status_code: int | None
    error_class: str | None
    error: str | None
    response_headers: Mapping[str, str] | None
    response_body: bytes | None
    decision: Decision
    project_id: str | None = None
    stage_id: str | None = None
    task_id: str | None = None
    settles: bool = True


@dataclass(frozen=True)
class DeliveryInfo:
    id: str
    project_id: str
    stage_id: str
    task_id: str
    external_id: str
    state: str
    attempts: int
    due_at: float
    created_at: float
    finished_at: float | None
    last_status: int | None
    last_error: str | None
    leased_by: str | None
    lease_until: float | None
    redelivery_of: str | None
    size: int


@dataclass(frozen=True)
class AttemptInfo:
    number: int
    started_at: float
    duration_ms: float
    status_code: int | None
    error_class: str | None
    error: str | None
    response_headers: dict[str, str] | None
    response_body: bytes | None


@dataclass(frozen=True)
class DeliveryDetail(DeliveryInfo):
    """A delivery with its exact body and its attempts, oldest first."""

    body: bytes
    attempt_log: tuple[AttemptInfo, ...]


_INFO_COLUMNS = (
    deliveries.c.id,
    deliveries.c.project_id,
    deliveries.c.stage_id,
    deliveries.c.task_id,
    deliveries.c.external_id,
    deliveries.c.state,
    deliveries.c.attempts,
    deliveries.c.due_at,
    deliveries.c.created_at,
    deliveries.c.finished_at,
    deliveries.c.last_status,
    deliveries.c.last_error,
    deliveries.c.leased_by,
    deliveries.c.lease_until,
    deliveries.c.redelivery_of,
    deliveries.c.size,
)


# -- writing -----------------------------------------------------------------------------------


async def enqueue(conn: AsyncConnection, items: Sequence[NewDelivery]) -> None:
    """Add deliveries, pending, no attempt yet (in the transaction that moved their tasks)."""
    for statement in enqueuing(conn.dialect.name, items):
        await execute_later(conn, statement.sql, statement.parameters)


def enqueuing(dialect: str, items: Sequence[NewDelivery]) -> list[Statement]:
    """The statements of `enqueue`, for `Store.write` (none for no items)."""
    if not items:
        return []
    rows = [
        (
            item.id,
            item.project_id,
            item.stage_id,
            item.task_id,
            item.external_id,
            len(item.body),
            item.due_at,
            item.created_at,
        )
        for item in items
    ]
    return [
        Statement(sql_for(_INSERT_DELIVERY, dialect), rows),
        Statement(sql_for(_INSERT_BODY, dialect), [(item.id, bytes(item.body)) for item in items]),
        *announcing(dialect),
    ]


async def claim(
    conn: AsyncConnection,
    *,
    now: float,
    lease_seconds: float,
    worker: str,
    limit: int,
    exclude: Collection[tuple[str, str]] = (),
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries, oldest due first, in one statement.

    A delivery waits while an earlier one of the same task to the same stage is pending,
    so a receiver sees a task's deliveries in order, and while its stage's endpoint is
    disabled. ``exclude`` skips (project, stage) pairs, for endpoints the caller has no
    room for (or whose circuit is open).
    """
    until = now + lease_seconds
    statement, parameters = _claim_statement(
        conn.dialect.name, now=now, until=until, worker=worker, limit=limit, exclude=exclude
    )
    return _claimed(await fetch(conn, statement, parameters), until, worker)


async def claim_and_next_due(
    conn: AsyncConnection,
    *,
    now: float,
    lease_seconds: float,
    worker: str,
    limit: int,
    exclude: Collection[tuple[str, str]] = (),
) -> tuple[list[Claimed], float | None]:
    """`claim`, and then `next_due_at` (None as well when the claim took ``limit``: more
    is due now). On SQLite in one trip to the database's thread (the dispatcher holds
    SQLite's one writer through both); on PostgreSQL the second statement is sent only when
    the claim took fewer."""
    until = now + lease_seconds
    statement, parameters = _claim_statement(
        conn.dialect.name, now=now, until=until, worker=worker, limit=limit, exclude=exclude
    )
    if conn.dialect.name != "sqlite":
        claimed = _claimed(await fetch(conn, statement, parameters), until, worker)
        return claimed, (await next_due_at(conn) if len(claimed) < limit else None)
    found = await fetch_each(conn, [(statement, parameters), (sql_for(_NEXT_DUE, "sqlite"), ())])
    return claimed_from(found, until=until, worker=worker, limit=limit)


def claiming(
    dialect: str,
    *,
    until: float,
    now: float,
    worker: str,
    limit: int,
    exclude: Collection[tuple[str, str]] = (),
) -> list[Statement]:
    """A claim and the next due time as statements for `Store.write` (leases held
    ``until``); read what their rows say with `claimed_from`. Unlike `claim_and_next_due`,
    the next due time is asked for on PostgreSQL as well, whatever the claim took: the
    statements are fixed before they run."""
    statement, parameters = _claim_statement(
        dialect, now=now, until=until, worker=worker, limit=limit, exclude=exclude
    )
    return [Statement(statement, parameters), Statement(sql_for(_NEXT_DUE, dialect))]


def claimed_from(
    found: Sequence[Sequence[Any]], *, until: float, worker: str, limit: int
) -> tuple[list[Claimed], float | None]:
    """What the rows of `claiming`'s statements (the last two of ``found``) claimed, and
    when the next delivery is due (None when the claim took ``limit``: more is due now)."""
    rows, [(due,)] = found[-2:]
    claimed = _claimed(rows, until, worker)
    return claimed, (None if due is None or len(claimed) == limit else float(due))


@dataclass(frozen=True, slots=True)
class Handoff:
    """Room a dispatcher holds for ``count`` deliveries claimed in the very write that
    enqueues them (`claiming_these`), with leases held by ``worker`` ``until``."""

    worker: str
    until: float
    count: int


def claiming_these(dialect: str, ids: Sequence[str], handoff: Handoff) -> Statement:
    """A claim of just the deliveries ``ids``, enqueued earlier in the same write, on the
    terms of ``handoff``. It takes each only where a claim would (no earlier delivery of
    its task to its stage pending, its endpoint not disabled), whenever it is due. Read
    what it took with `claimed_rows`."""
    until = handoff.until
    return Statement(
        _claim_these_sql(dialect, len(ids)), (until, until, handoff.worker, *ids, len(ids))
    )


def claimed_rows(rows: Sequence[Any], handoff: Handoff) -> list[Claimed]:
    """What the rows of `claiming_these` claimed."""
    return _claimed(rows, handoff.until, handoff.worker)


def _claim_statement(
    dialect: str,
    *,
    now: float,
    until: float,
    worker: str,
    limit: int,
    exclude: Collection[tuple[str, str]],
) -> tuple[str, tuple[Any, ...]]:
    pairs = [value for pair in exclude for value in pair]
    statement = _claim_sql(dialect, len(exclude))
    return statement, (until, until, worker, now, *pairs, limit)


def _claimed(rows: Sequence[Any], until: float, worker: str) -> list[Claimed]:
    # Plain tuples: a Row's attribute lookups cost more than the rest of the claim, per row.
    found = cast("Sequence[tuple[str, str, str, str, str, int, float, bytes]]", rows)
    return [
        Claimed(
            id=delivery_id,
            project_id=project_id,
            stage_id=stage_id,
            task_id=task_id,
            external_id=external_id,
            body=bytes(body),
            attempt=attempt,
            lease_until=until,
            worker=worker,
            created_at=created_at,
        )
        for (
            delivery_id,
            project_id,
            stage_id,
            task_id,
            external_id,
            attempt,
            created_at,
            body,
        ) in found
    ]


# -- the hot statements ------------------------------------------------------------------------
# Enqueue, claim, record and release run for every delivery, thousands of times a second: they are
# written out in SQL (one text for both dialects, placeholders as "?") and run through the
# driver, which skips SQLAlchemy's statement building and its per-row parameter processing
# (measured: most of the dispatcher's bookkeeping CPU).

_CLAIM = """
UPDATE deliveries SET due_at = ?, lease_until = ?, leased_by = ?, attempts = attempts + 1
WHERE id IN (
    SELECT candidate.id FROM deliveries AS candidate
    WHERE candidate.state = 'pending' AND {which}
    AND NOT EXISTS (
        SELECT 1 FROM deliveries AS earlier
        WHERE earlier.task_id = candidate.task_id AND earlier.stage_id = candidate.stage_id
        AND earlier.state = 'pending' AND earlier.created_at <= candidate.created_at
        AND (earlier.created_at < candidate.created_at OR earlier.id < candidate.id)
    )
    AND NOT EXISTS (
        SELECT 1 FROM endpoints
        WHERE endpoints.project_id = candidate.project_id
        AND endpoints.stage_id = candidate.stage_id AND endpoints.disabled_at IS NOT NULL
    )
    ORDER BY candidate.due_at LIMIT ?{lock}
)
RETURNING id, project_id, stage_id, task_id, external_id, attempts, created_at,
    (SELECT body FROM delivery_bodies WHERE delivery_bodies.delivery_id = deliveries.id)
"""
# Notes on _CLAIM, which decide its plan. {which} picks the candidates: due and not of a
# held-back stage (a claim), or by id (`claiming_these`). The held-back stages come before
# the correlated subqueries: SQLite tests the terms in this order, and the rows of a
# held-back endpoint (often the oldest due) must cost one cheap test each. 'pending' is
# written out, not bound: only then may the planner use the partial index on it. The
# "created_at <=" bound lets SQLite search ix_deliveries_pending_task instead of scanning
# every pending row per candidate. PostgreSQL locks the rows it picks and skips those
# another worker holds. The body comes back with the row: a second statement for the
# bodies was a second trip per turn.

_INSERT_DELIVERY = """
INSERT INTO deliveries (id, project_id, stage_id, task_id, external_id, size, state, attempts,
    due_at, created_at)
VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)
"""

_INSERT_BODY = "INSERT INTO delivery_bodies (delivery_id, body) VALUES (?, ?)"

_INSERT_ATTEMPT = """
INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error_class,
    error, response_headers, response_body)
VALUES (?, ?, ?, ?, ?, ?, ?, {json}, ?)
"""

# Both move a delivery only while the claim that made the attempt still holds it.
_RECORD = """
UPDATE deliveries SET state = ?, due_at = ?, finished_at = ?, last_status = ?, last_error = ?,
    lease_until = NULL, leased_by = NULL
WHERE id = ? AND leased_by = ? AND attempts = ? AND state = 'pending'
"""

_RELEASE = """
UPDATE deliveries SET due_at = ?, lease_until = NULL, leased_by = NULL, attempts = attempts - 1
WHERE id = ? AND leased_by = ? AND attempts = ? AND state = 'pending'
"""


@functools.cache
def _claim_sql(dialect: str, excluded: int) -> str:
    which = "candidate.due_at <= ?"
    if excluded:
        values = ", ".join(["(?, ?)"] * excluded)
        which += f"\n    AND (candidate.project_id, candidate.stage_id) NOT IN (VALUES {values})"
    return _claim_text(dialect, which)


@functools.cache
def _claim_these_sql(dialect: str, count: int) -> str:
    return _claim_text(dialect, f"candidate.id IN ({', '.join(['?'] * count)})")


def _claim_text(dialect: str, which: str) -> str:
    lock = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    return sql_for(_CLAIM.format(which=which, lock=lock), dialect)


async def record(conn: AsyncConnection, results: Sequence[AttemptResult]) -> None:
    """Store a group of attempts and move each delivery its lease still holds.

    Every attempt is kept; a result whose lease was lost (expired and claimed again) does
    not change the delivery.
    """
    for statement in recording(conn.dialect.name, results):
        await execute_later(conn, statement.sql, statement.parameters)


def recording(dialect: str, results: Sequence[AttemptResult]) -> list[Statement]:
    """`record` as statements for `Store.write` (none for no results)."""
    if not results:
        return []
    attempts = [_attempt_row(result) for result in results]
    changes = [_delivery_change(result) for result in results]
    if dialect != "sqlite":  # psycopg sends an executemany's rows in one pipeline already
        return [
            Statement(sql_for(_INSERT_ATTEMPT, dialect), attempts),
            Statement(sql_for(_RECORD, dialect), changes),
        ]
    # Statements of many rows: sqlite3's executemany lets go of the GIL for each row, and
    # winning it back from the busy event loop each time made recording most of a turn's
    # wall time (measured: 7 ms to insert 200 attempts, 2 ms of it CPU).
    # One row per lease, the first, as executemany applied them: in one UPDATE ... FROM, two
    # rows joining the same delivery would leave which one wins to SQLite.
    firsts = {change[-3:]: change for change in reversed(changes)}
    return [
        *_many_rows(_SQLITE_INSERT_ATTEMPTS, attempts),
        *_many_rows(_SQLITE_RECORD, list(firsts.values())),
    ]


def _many_rows(statement: str, rows: list[tuple[Any, ...]]) -> list[Statement]:
    """``statement`` with its ``{rows}`` placeholder filled, in chunks of rows."""
    found: list[Statement] = []
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        marks = ", ".join([f"({', '.join('?' * len(chunk[0]))})"] * len(chunk))
        values = tuple(value for row in chunk for value in row)
        found.append(Statement(statement.format(rows=marks), values))
    return found


# At most 9 values a row: well under SQLite's limit of 32,766 bound values a statement.
_ROWS_PER_STATEMENT = 500

_SQLITE_INSERT_ATTEMPTS = _INSERT_ATTEMPT.partition("VALUES")[0] + "VALUES {rows}"

# _RECORD for many rows at once (SQLite names a VALUES list's columns column1, column2...).
# The plan looks each row up by id, as _RECORD does.
_SQLITE_RECORD = """
UPDATE deliveries SET state = v.column1, due_at = v.column2, finished_at = v.column3,
    last_status = v.column4, last_error = v.column5, lease_until = NULL, leased_by = NULL
FROM (VALUES {rows}) AS v
WHERE deliveries.id = v.column6 AND deliveries.leased_by = v.column7
AND deliveries.attempts = v.column8 AND deliveries.state = 'pending'
"""


def _attempt_row(result: AttemptResult) -> tuple[Any, ...]:
    body = result.response_body
    headers = result.response_headers
    return (
        result.lease.delivery_id,
        result.lease.number,
        result.started_at,
        result.duration_ms,
        result.status_code,
        result.error_class,
        result.error,
        None if headers is None else orjson.dumps(dict(headers)).decode(),
        None if body is None else bytes(body[:MAX_STORED_RESPONSE]),
    )


def _delivery_change(result: AttemptResult) -> tuple[Any, ...]:
    decision = result.decision
    ended = result.started_at + result.duration_ms / 1000
    retrying = decision.verdict in _WAITING
    lease = result.lease
    return (
        _FINAL_STATE[decision.verdict],
        # A finished delivery is never due again; keep due_at where the lease put it.
        decision.retry_at if retrying else ended,
        None if retrying else ended,
        result.status_code,
        _error_text(result),
        lease.delivery_id,
        lease.worker,
        lease.number,
    )


def _error_text(result: AttemptResult) -> str | None:
    if result.error_class is None:
        return None
    return f"{result.error_class}: {result.error}" if result.error else result.error_class


async def release(conn: AsyncConnection, leases: Sequence[Lease], *, now: float) -> int:
    """Give back claims that were never attempted: due at ``now``, the attempt uncounted.

    Returns how many were still held (the others had expired and moved on).
    """
    if not leases:
        return 0
    rows = [(now, x.delivery_id, x.worker, x.number) for x in leases]
    result = await conn.exec_driver_sql(sql_for(_RELEASE, conn.dialect.name), rows)
    return max(result.rowcount, 0)


async def redeliver(conn: AsyncConnection, delivery_id: str, *, now: float) -> bool:
    """Send a finished delivery again (same id, same bytes), due now. Attempt numbers go
    on, and so does the retry schedule (an exhausted one gets one more try). False, and
    nothing changes, if it is still pending (or unknown)."""
    statement = _again().where(deliveries.c.id == delivery_id).values(due_at=now)
    await announce(conn)
    return (await conn.execute(statement)).rowcount == 1


async def redeliver_stage(
    conn: AsyncConnection,
    *,
    project_id: str,
    stage_id: str,
    now: float,
    only_failed: bool = False,
    since: float | None = None,
) -> int:
    """Send a stage's finished deliveries again (all, or the failed ones, created at or
    after ``since``); pending ones are left alone, so repeating it queues nothing twice."""
    statement = _again(only_failed=only_failed).where(
        deliveries.c.project_id == project_id, deliveries.c.stage_id == stage_id
    )
    if since is not None:
        statement = statement.where(deliveries.c.created_at >= since)
    await announce(conn)
    return (await conn.execute(statement.values(due_at=now))).rowcount


def _again(*, only_failed: bool = False) -> sa.Update:
    finished = [FAILED] if only_failed else [DELIVERED, FAILED]
    return (
        deliveries.update()
        .where(deliveries.c.state.in_(finished))
        .values(state=PENDING, finished_at=None, lease_until=None, leased_by=None)
    )


# -- reading -----------------------------------------------------------------------------------


async def next_due_at(conn: AsyncConnection) -> float | None:
    """When the earliest pending delivery (or lease expiry) is due; None if none pends."""
    [(value,)] = await fetch(conn, sql_for(_NEXT_DUE, conn.dialect.name), ())
    return None if value is None else float(value)


_NEXT_DUE = "SELECT min(due_at) FROM deliveries WHERE state = 'pending'"


async def list_deliveries(
    conn: AsyncConnection,
    *,
    project_id: str,
    stage_id: str | None = None,
    task_id: str | None = None,
    state: str | None = None,
    limit: int = 100,
    before: float | None = None,
) -> list[DeliveryInfo]:
    """A project's deliveries, newest first; ``before`` pages on ``created_at``."""
    if state is not None and state not in STATES:
        raise ValueError(f"state: expected one of {', '.join(STATES)}, got {state!r}")
    if limit < 1:
        raise ValueError(f"limit: expected a positive number, got {limit}")
    query = sa.select(*_INFO_COLUMNS).where(deliveries.c.project_id == project_id)
    for column, value in (
        (deliveries.c.stage_id, stage_id),
        (deliveries.c.task_id, task_id),
        (deliveries.c.state, state),
    ):
        if value is not None:
            query = query.where(column == value)
    if before is not None:
        query = query.where(deliveries.c.created_at < before)
    query = query.order_by(deliveries.c.created_at.desc(), deliveries.c.id.desc()).limit(limit)
    return [DeliveryInfo(**row._mapping) for row in (await conn.execute(query)).all()]


async def get_delivery(conn: AsyncConnection, delivery_id: str) -> DeliveryDetail | None:
    """One delivery with its body and every attempt, or None."""
    query = (
        sa.select(*_INFO_COLUMNS, delivery_bodies.c.body)
        .join(delivery_bodies, delivery_bodies.c.delivery_id == deliveries.c.id)
        .where(deliveries.c.id == delivery_id)
    )
    row = (await conn.execute(query)).one_or_none()
    if row is None:
        return None
    tried = await conn.execute(
        sa.select(
            attempts.c.number,
            attempts.c.started_at,
            attempts.c.duration_ms,
            attempts.c.status_code,
            attempts.c.error_class,
            attempts.c.error,
            attempts.c.response_headers,
            attempts.c.response_body,
        )
        .where(attempts.c.delivery_id == delivery_id)
        .order_by(attempts.c.started_at, attempts.c.id)
    )
    fields = dict(row._mapping)
    fields["body"] = bytes(fields["body"])
    log = tuple(AttemptInfo(**attempt._mapping) for attempt in tried.all())
    return DeliveryDetail(**fields, attempt_log=log)


async def stage_log(
    conn: AsyncConnection, project_id: str, stage_id: str, limit: int = 200
) -> list[str]:
    """The stage's log, one line per attempt, newest first:
    ``[2023-09-28T09:37:33.733Z][200] external_id`` or ``[...][error: timeout] external_id``."""
    query = (
        sa.select(
            attempts.c.started_at,
            attempts.c.status_code,
            attempts.c.error_class,
            deliveries.c.external_id,
        )
        .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
        .where(deliveries.c.project_id == project_id, deliveries.c.stage_id == stage_id)
        .order_by(attempts.c.started_at.desc(), attempts.c.id.desc())
        .limit(limit)
    )
    return [_log_line(*row) for row in (await conn.execute(query)).all()]


def _log_line(started_at: float, status: int | None, error_class: str | None, name: str) -> str:
    stamp = datetime.fromtimestamp(started_at, UTC).isoformat(timespec="milliseconds")
    outcome = str(status) if error_class is None and status is not None else f"error: {error_class}"
    return f"[{stamp.removesuffix('+00:00')}Z][{outcome}] {name}"


async def counts(conn: AsyncConnection, project_id: str, stage_id: str) -> dict[str, int]:
    """How many of the stage's deliveries are in each state (every state listed)."""
    query = (
        sa.select(deliveries.c.state, sa.func.count())
        .where(deliveries.c.project_id == project_id, deliveries.c.stage_id == stage_id)
        .group_by(deliveries.c.state)
    )
    found = dict.fromkeys(STATES, 0)
    for state, number in (await conn.execute(query)).all():
        found[state] = number
    return found


@dataclass(frozen=True)
class StageQueue:
    """One stage's deliveries for metrics: how many in each state, how many are due now
    (pending, not leased, not parked) and since when the oldest of those has been due."""

    project_id: str
    stage_id: str
    states: dict[str, int]
    due: int
    oldest_due_at: float | None


async def queues(conn: AsyncConnection, *, now: float) -> list[StageQueue]:
    """Every stage that has deliveries, with its counts (two grouped reads)."""
    by_state = await conn.execute(
        sa.select(
            deliveries.c.project_id, deliveries.c.stage_id, deliveries.c.state, sa.func.count()
        ).group_by(deliveries.c.project_id, deliveries.c.stage_id, deliveries.c.state)
    )
    found: dict[tuple[str, str], StageQueue] = {}
    for project_id, stage_id, state, number in by_state.all():
        queue = found.get((project_id, stage_id))
        if queue is None:
            queue = found[project_id, stage_id] = StageQueue(
                project_id, stage_id, dict.fromkeys(STATES, 0), 0, None
            )
        queue.states[state] = number
    # A claim moves due_at past now, so "due by now" leaves out what is in flight.
    due = await conn.execute(
        sa.select(
            deliveries.c.project_id,
            deliveries.c.stage_id,
            sa.func.count(),
            sa.func.min(deliveries.c.due_at),
        )
        .where(deliveries.c.state == PENDING, deliveries.c.due_at <= now)
        .group_by(deliveries.c.project_id, deliveries.c.stage_id)
    )
    for project_id, stage_id, number, oldest in due.all():
        queue = found.get((project_id, stage_id))
        if queue is not None:
            found[project_id, stage_id] = StageQueue(
                project_id, stage_id, queue.states, number, float(oldest)
            )
    return sorted(found.values(), key=lambda q: (q.project_id, q.stage_id))


async def gate_counts(conn: AsyncConnection, project_id: str, stage_id: str) -> dict[str, int]:
    """The tasks resting in a stage, by the state of the delivery made when they entered it:
    for a gate stage, "pending" waits for its delivery, "failed" waits for a person."""
    made_on_entry = sa.and_(
        deliveries.c.task_id == tasks.c.id,
        deliveries.c.stage_id == tasks.c.stage_id,
        deliveries.c.created_at >= tasks.c.entered_at,
    )
    query = (
        sa.select(deliveries.c.state, sa.func.count(sa.distinct(tasks.c.id)))
        .select_from(tasks.join(deliveries, made_on_entry))
        .where(tasks.c.project_id == project_id, tasks.c.stage_id == stage_id)
        .group_by(deliveries.c.state)
    )
    found = dict.fromkeys(STATES, 0)
    for state, number in (await conn.execute(query)).all():
        found[state] = number
    return found


@dataclass(frozen=True)
class Finished:
    """A delivery that is delivered or failed, and where it went."""

    id: str
    project_id: str
    stage_id: str
    task_id: str
    state: str
    created_at: float


async def finished(conn: AsyncConnection, ids: Collection[str]) -> list[Finished]:
    """Those of ``ids`` that are delivered or failed (not pending), in id order."""
    if not ids:
        return []
    rows = await conn.execute(
        sa.select(
            deliveries.c.id,
            deliveries.c.project_id,
            deliveries.c.stage_id,
            deliveries.c.task_id,
            deliveries.c.state,
            deliveries.c.created_at,
        )
        .where(deliveries.c.id.in_(sorted(set(ids))), deliveries.c.state != PENDING)
        .order_by(deliveries.c.id)
    )
    return [Finished(*row) for row in rows.all()]
