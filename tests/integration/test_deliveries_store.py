"""The outbox queries on SQLite and PostgreSQL: claim, lease, record, release, redeliver, read."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from hookstage.retry import Decision
from hookstage.store import Store, endpoints
from hookstage.store import deliveries as outbox
from hookstage.store.deliveries import AttemptResult, Claimed, Lease, NewDelivery
from hookstage.store.tables import attempts, projects, tasks
from tests.support.delivery import task_row

T0 = 1_695_893_853.733  # 2023-09-28T09:37:33.733Z
LEASE = 60.0


@pytest.fixture
async def store(store: Store) -> Store:
    """The conftest's store (SQLite, then PostgreSQL) with project p1 and tasks t1..t5."""
    async with store.transaction() as conn:
        await conn.execute(
            projects.insert().values(
                id="p1", name="P", category_schema={}, workflow={}, created_at=T0, updated_at=T0
            )
        )
        await conn.execute(tasks.insert(), [task_row(f"t{i}", T0) for i in range(1, 6)])
    return store


def _new(
    delivery_id: str,
    *,
    task: str = "t1",
    stage: str = "hook",
    due: float = T0,
    created: float = T0,
    body: bytes = b'{"a": 1}',
) -> NewDelivery:
    return NewDelivery(delivery_id, "p1", stage, task, f"{task}.png", body, due, created)


async def _enqueue(store: Store, *items: NewDelivery) -> None:
    async with store.transaction() as conn:
        await outbox.enqueue(conn, items)


async def _claim(
    store: Store,
    *,
    now: float = T0,
    worker: str = "w1",
    limit: int = 10,
    exclude: Sequence[tuple[str, str]] = (),
) -> list[Claimed]:
    async with store.transaction() as conn:
        return await outbox.claim(
            conn,
            now=now,
            lease_seconds=LEASE,
            worker=worker,
            limit=limit,
            exclude=exclude,
        )


def _result(
    claimed: Claimed | Lease,
    decision: Decision,
    *,
    status: int | None = 200,
    started: float = T0,
    error_class: str | None = None,
    body: bytes | None = b"ok",
) -> AttemptResult:
    lease = claimed.lease if isinstance(claimed, Claimed) else claimed
    return AttemptResult(
        lease=lease,
        started_at=started,
        duration_ms=12.5,
        status_code=status,
        error_class=error_class,
        error="connection refused" if error_class else None,
        response_headers={"Content-Type": "text/plain"} if status else None,
        response_body=body if status else None,
        decision=decision,
    )


async def _record(store: Store, *results: AttemptResult) -> None:
    async with store.transaction() as conn:
        await outbox.record(conn, results)


async def _get(store: Store, delivery_id: str) -> outbox.DeliveryDetail:
    async with store.transaction() as conn:
        found = await outbox.get_delivery(conn, delivery_id)
    assert found is not None
    return found


async def test_claim_takes_due_deliveries_oldest_due_first_up_to_the_limit(store: Store) -> None:
    await _enqueue(
        store,
        _new("d-late", task="t1", due=T0 - 1),
        _new("d-early", task="t2", due=T0 - 5),
        _new("d-middle", task="t3", due=T0 - 3),
        _new("d-future", task="t4", due=T0 + 100),
    )
    first = await _claim(store, limit=2)
    assert {c.id for c in first} == {"d-early", "d-middle"}
    assert all(c.attempt == 1 and c.lease_until == T0 + LEASE for c in first)
    rest = await _claim(store, limit=10)
    assert [c.id for c in rest] == ["d-late"]  # d-future is not due, the others are leased
    detail = await _get(store, "d-late")
    assert (detail.state, detail.leased_by, detail.attempts) == ("pending", "w1", 1)


async def test_claim_returns_the_exact_stored_bytes(store: Store) -> None:
    body = '{"externalId":"Symbol Secondary Usage - White.png","é":"ü"} '.encode()
    await _enqueue(store, _new("d1", body=body))
    [claimed] = await _claim(store)
    assert claimed.body == body
    assert (claimed.project_id, claimed.stage_id, claimed.task_id) == ("p1", "hook", "t1")
    assert claimed.external_id == "t1.png"


async def test_an_expired_lease_is_claimed_again_with_the_next_attempt_number(
    store: Store,
) -> None:
    await _enqueue(store, _new("d1"))
    [first] = await _claim(store, worker="dead")
    assert await _claim(store, now=T0 + LEASE - 1, worker="w2") == []
    [again] = await _claim(store, now=T0 + LEASE, worker="w2")
    assert (again.id, again.attempt, again.worker) == ("d1", 2, "w2")
    assert first.attempt == 1


async def test_a_task_waits_for_its_earlier_delivery_to_the_same_stage(store: Store) -> None:
    await _enqueue(
        store,
        _new("d-first", task="t1", created=T0),
        _new("d-second", task="t1", created=T0 + 1),
        _new("d-other-stage", task="t1", stage="other", created=T0 + 2),
    )
    claimed = await _claim(store)
    assert {c.id for c in claimed} == {"d-first", "d-other-stage"}
    first = next(c for c in claimed if c.id == "d-first")
    await _record(store, _result(first, Decision.delivered()))
    assert [c.id for c in await _claim(store, now=T0 + 2)] == ["d-second"]


async def test_claim_skips_excluded_stages(store: Store) -> None:
    await _enqueue(store, _new("d-busy", task="t1", stage="busy"), _new("d-ok", task="t2"))
    assert [c.id for c in await _claim(store, exclude=[("p1", "busy")])] == ["d-ok"]


async def test_record_delivered_keeps_the_attempt_and_finishes_the_delivery(
    store: Store,
) -> None:
    await _enqueue(store, _new("d1"))
    [claimed] = await _claim(store)
    huge = b"x" * (outbox.MAX_STORED_RESPONSE + 10)
    await _record(store, _result(claimed, Decision.delivered(), body=huge))
    detail = await _get(store, "d1")
    assert (detail.state, detail.last_status, detail.leased_by) == ("delivered", 200, None)
    assert detail.finished_at == pytest.approx(T0 + 0.0125)
    [attempt] = detail.attempt_log
    assert (attempt.number, attempt.status_code, attempt.duration_ms) == (1, 200, 12.5)
    assert attempt.response_headers == {"Content-Type": "text/plain"}
    assert attempt.response_body == huge[: outbox.MAX_STORED_RESPONSE]


async def test_record_retry_makes_it_due_at_the_decided_time(store: Store) -> None:
    await _enqueue(store, _new("d1"))
    [claimed] = await _claim(store)
    await _record(store, _result(claimed, Decision.retry(T0 + 5), status=500))
    detail = await _get(store, "d1")
    assert (detail.state, detail.due_at, detail.last_status) == ("pending", T0 + 5, 500)
    assert (detail.leased_by, detail.lease_until, detail.finished_at) == (None, None, None)
    assert await _claim(store, now=T0 + 4) == []
    [again] = await _claim(store, now=T0 + 5)
    assert again.attempt == 2


async def test_record_give_up_fails_the_delivery_with_the_error(store: Store) -> None:
    await _enqueue(store, _new("d1"))
    [claimed] = await _claim(store)
    await _record(store, _result(claimed, Decision.give_up(), status=None, error_class="refused"))
    detail = await _get(store, "d1")
    assert (detail.state, detail.last_status) == ("failed", None)
    assert detail.last_error == "refused: connection refused"
    assert detail.attempt_log[0].error_class == "refused"
    assert await _claim(store, now=T0 + 10**6) == []


async def test_a_group_larger_than_one_insert_records_every_attempt(store: Store) -> None:
    # SQLite's attempts go in statements of many rows: a group spanning several statements,
    # answered and unanswered attempts mixed, must land row for row.
    count = 2 * outbox._ROWS_PER_STATEMENT + 3
    await _enqueue(store, *(_new(f"d{i:04}", stage=f"s{i}") for i in range(count)))
    claimed = await _claim(store, limit=count)
    assert len(claimed) == count
    await _record(
        store,
        *(
            _result(c, Decision.delivered())
            if i % 2
            else _result(c, Decision.give_up(), status=None, error_class="refused")
            for i, c in enumerate(sorted(claimed, key=lambda c: c.id))
        ),
    )
    for i in (0, 1, outbox._ROWS_PER_STATEMENT, count - 1):
        detail = await _get(store, f"d{i:04}")
        [attempt] = detail.attempt_log
        expected = ("delivered", 200, None) if i % 2 else ("failed", None, "refused")
        assert (detail.state, attempt.status_code, attempt.error_class) == expected
    async with store.read() as conn:
        stored = await conn.scalar(sa.select(sa.func.count()).select_from(attempts))
        states = await outbox.counts(conn, "p1", "s0")
    assert stored == count
    assert states["failed"] == 1  # d0000, to stage s0
    every = [await _get(store, f"d{i:04}") for i in range(count)]
    assert sum(d.state == "delivered" for d in every) == count // 2
    assert sum(d.state == "failed" for d in every) == count - count // 2


async def test_a_late_result_is_kept_but_does_not_move_a_delivery_claimed_again(
    store: Store,
) -> None:
    await _enqueue(store, _new("d1"))
    [old] = await _claim(store, worker="slow")
    [new] = await _claim(store, now=T0 + LEASE, worker="w2")
    await _record(store, _result(new, Decision.delivered(), started=T0 + LEASE))
    await _record(store, _result(old, Decision.retry(T0 + 100), status=500))
    detail = await _get(store, "d1")
    assert (detail.state, detail.last_status) == ("delivered", 200)
    assert [(a.number, a.status_code) for a in detail.attempt_log] == [(1, 500), (2, 200)]


async def test_a_late_result_in_the_same_group_does_not_move_the_delivery(store: Store) -> None:
    # One statement records the whole group on SQLite: the stale row, listed last, must
    # neither win nor be lost.
    await _enqueue(store, _new("d1"))
    [old] = await _claim(store, worker="slow")
    [new] = await _claim(store, now=T0 + LEASE, worker="w2")
    current = _result(new, Decision.delivered(), started=T0 + LEASE)
    stale = _result(old, Decision.retry(T0 + 100), status=500)
    await _record(store, current, stale)
    detail = await _get(store, "d1")
    assert (detail.state, detail.last_status) == ("delivered", 200)
    assert [(a.number, a.status_code) for a in detail.attempt_log] == [(1, 500), (2, 200)]


async def test_release_gives_back_unattempted_claims(store: Store) -> None:
    await _enqueue(store, _new("d1", task="t1"), _new("d2", task="t2"), _new("d3", task="t3"))
    claimed = await _claim(store)
    async with store.transaction() as conn:
        released = await outbox.release(conn, [c.lease for c in claimed[:2]], now=T0 + 3)
        lost = await outbox.release(conn, [Lease(claimed[2].id, "someone-else", 1)], now=T0)
    assert (released, lost) == (2, 0)
    for c in claimed[:2]:
        detail = await _get(store, c.id)
        assert (detail.attempts, detail.due_at, detail.leased_by) == (0, T0 + 3, None)
        assert detail.attempt_log == ()
    assert (await _get(store, claimed[2].id)).leased_by == "w1"


async def test_redeliver_resends_a_finished_delivery_and_leaves_a_pending_one(
    store: Store,
) -> None:
    await _enqueue(store, _new("d1", task="t1"), _new("d2", task="t2"))
    claimed = {c.id: c for c in await _claim(store)}
    await _record(store, _result(claimed["d1"], Decision.delivered()))
    async with store.transaction() as conn:
        assert await outbox.redeliver(conn, "d1", now=T0 + 50)
        assert not await outbox.redeliver(conn, "d1", now=T0 + 60)  # pending now: no-op
        assert not await outbox.redeliver(conn, "d2", now=T0 + 60)  # still leased
        assert not await outbox.redeliver(conn, "nope", now=T0 + 60)
    detail = await _get(store, "d1")
    assert (detail.state, detail.due_at, detail.attempts, detail.finished_at) == (
        "pending",
        T0 + 50,
        1,
        None,
    )
    [again] = await _claim(store, now=T0 + 50)
    assert (again.id, again.attempt, again.body) == ("d1", 2, b'{"a": 1}')


async def test_redeliver_stage_is_safe_to_repeat(store: Store) -> None:
    await _enqueue(
        store,
        _new("d-ok", task="t1", created=T0),
        _new("d-failed", task="t2", created=T0 + 1),
        _new("d-old", task="t3", created=T0 - 100),
        _new("d-elsewhere", task="t4", stage="other"),
    )
    claimed = {c.id: c for c in await _claim(store)}
    await _record(
        store,
        _result(claimed["d-ok"], Decision.delivered()),
        _result(claimed["d-failed"], Decision.give_up(), status=410),
        _result(claimed["d-old"], Decision.give_up(), status=500),
        _result(claimed["d-elsewhere"], Decision.delivered()),
    )

    async def rerun(**kwargs: object) -> int:
        async with store.transaction() as conn:
            return await outbox.redeliver_stage(
                conn,
                project_id="p1",
                stage_id="hook",
                now=T0 + 10,
                **kwargs,  # type: ignore[arg-type]
            )

    assert await rerun(only_failed=True, since=T0 - 1) == 1
    assert (await _get(store, "d-failed")).state == "pending"
    assert await rerun(since=T0 - 1) == 1  # d-ok; d-failed is pending already
    assert await rerun(since=T0 - 1) == 0
    assert await rerun() == 1  # d-old
    assert (await _get(store, "d-elsewhere")).state == "delivered"


async def test_list_deliveries_filters_and_pages_newest_first(store: Store) -> None:
    await _enqueue(
        store,
        *(_new(f"d{i}", task=f"t{i}", created=T0 + i) for i in range(1, 5)),
        _new("d-other", task="t5", stage="other", created=T0 + 9),
    )

    async def listed(**kwargs: object) -> list[str]:
        async with store.transaction() as conn:
            found = await outbox.list_deliveries(conn, project_id="p1", **kwargs)  # type: ignore[arg-type]
        return [d.id for d in found]

    assert await listed(stage_id="hook") == ["d4", "d3", "d2", "d1"]
    assert await listed(stage_id="hook", limit=2) == ["d4", "d3"]
    assert await listed(stage_id="hook", before=T0 + 3) == ["d2", "d1"]
    assert await listed(task_id="t5") == ["d-other"]
    assert await listed(state="delivered") == []
    async with store.transaction() as conn:
        [info] = await outbox.list_deliveries(conn, project_id="p1", task_id="t1")
    assert (info.state, info.attempts, info.size) == ("pending", 0, len(b'{"a": 1}'))
    with pytest.raises(ValueError, match="state"):
        await listed(state="done")


async def test_get_delivery_is_none_for_an_unknown_id(store: Store) -> None:
    async with store.transaction() as conn:
        assert await outbox.get_delivery(conn, "nope") is None


async def test_stage_log_has_one_line_per_attempt_newest_first(store: Store) -> None:
    await _enqueue(store, _new("d1", task="t1"), _new("d2", task="t2"))
    claimed = {c.id: c for c in await _claim(store)}
    await _record(store, _result(claimed["d1"], Decision.retry(T0 + 5), status=500))
    [again] = await _claim(store, now=T0 + 5)
    await _record(
        store,
        _result(again, Decision.delivered(), started=T0 + 5),
        _result(
            claimed["d2"], Decision.give_up(), status=None, error_class="timeout", started=T0 + 7
        ),
    )
    async with store.transaction() as conn:
        lines = await outbox.stage_log(conn, "p1", "hook", 10)
        assert await outbox.stage_log(conn, "p1", "hook", 1) == lines[:1]
    assert lines == [
        "[2023-09-28T09:37:40.733Z][error: timeout] t2.png",
        "[2023-09-28T09:37:38.733Z][200] t1.png",
        "[2023-09-28T09:37:33.733Z][500] t1.png",
    ]


async def test_counts_and_next_due_at(store: Store) -> None:
    async with store.transaction() as conn:
        assert await outbox.next_due_at(conn) is None
        assert await outbox.counts(conn, "p1", "hook") == {
            "pending": 0,
            "delivered": 0,
            "failed": 0,
        }
    await _enqueue(
        store,
        _new("d1", task="t1", due=T0 + 30),
        _new("d2", task="t2", due=T0 + 20),
        _new("d3", task="t3", due=T0),
    )
    [first] = await _claim(store, limit=1)
    await _record(store, _result(first, Decision.give_up(), status=500))
    async with store.transaction() as conn:
        assert await outbox.next_due_at(conn) == T0 + 20
        assert await outbox.counts(conn, "p1", "hook") == {
            "pending": 2,
            "delivered": 0,
            "failed": 1,
        }


async def test_order_holds_across_a_redeliver_of_the_earlier_delivery(store: Store) -> None:
    await _enqueue(
        store,
        _new("d-first", task="t1", created=T0),
        _new("d-second", task="t1", created=T0 + 1),
    )
    [first] = await _claim(store)
    await _record(store, _result(first, Decision.give_up(), status=500))
    # Given up: the later one may go.
    [second] = await _claim(store, now=T0 + 2)
    assert second.id == "d-second"
    await _record(store, _result(second, Decision.retry(T0 + 10), status=500))
    # The earlier one is re-sent: the later one, though due, waits for it again.
    async with store.transaction() as conn:
        assert await outbox.redeliver(conn, "d-first", now=T0 + 10)
    assert [c.id for c in await _claim(store, now=T0 + 20)] == ["d-first"]
    assert await _claim(store, now=T0 + 20) == []
    [again] = await _claim(store, now=T0 + 20 + LEASE)  # its lease ran out: still first
    assert again.id == "d-first"
    await _record(store, _result(again, Decision.delivered()))
    assert [c.id for c in await _claim(store, now=T0 + 100)] == ["d-second"]


async def test_a_disabled_endpoint_parks_its_deliveries_without_spending_attempts(
    store: Store,
) -> None:
    await _enqueue(
        store,
        _new("d-gone", task="t1"),
        _new("d-waiting", task="t2"),
        _new("d-elsewhere", task="t3", stage="other"),
    )
    [gone] = await _claim(store, limit=1)
    await _record(store, _result(gone, Decision.disable(T0), status=410))
    async with store.transaction() as conn:
        await endpoints.disable(conn, [("p1", "hook")], now=T0, reason="410 Gone")
        await endpoints.disable(conn, [("p1", "hook")], now=T0 + 5, reason="again")
    # Enqueued after it was disabled: not parked, still never claimed.
    await _enqueue(store, _new("d-late", task="t4", created=T0 + 1))
    assert [c.id for c in await _claim(store, now=T0 + 10**6)] == ["d-elsewhere"]
    assert (await _get(store, "d-waiting")).due_at == outbox.PARKED
    assert [(await _get(store, i)).attempts for i in ("d-gone", "d-waiting")] == [1, 0]
    async with store.read() as conn:
        status = await endpoints.status(conn, "p1", "hook")
        listed = await endpoints.disabled(conn)
    assert (status.disabled_at, status.disabled_reason) == (T0, "410 Gone")  # the first
    assert listed == [status]

    async with store.transaction() as conn:
        assert await endpoints.enable(conn, "p1", "hook", now=T0 + 20) == 2
    claimed = await _claim(store, now=T0 + 20)
    assert sorted(c.id for c in claimed) == ["d-gone", "d-late", "d-waiting"]
    assert {c.id: c.attempt for c in claimed}["d-waiting"] == 1
    async with store.read() as conn:
        status = await endpoints.status(conn, "p1", "hook")
    assert (status.disabled, status.enabled_at) == (False, T0 + 20)


async def test_queues_count_states_and_the_oldest_due_per_stage(store: Store) -> None:
    await _enqueue(
        store,
        _new("d1", task="t1", due=T0 - 30),
        _new("d2", task="t2", due=T0 - 10),
        _new("d3", task="t3", due=T0 + 60),
        _new("d4", task="t4", stage="other", due=T0 - 5),
    )
    [claimed] = await _claim(store, limit=1)  # d1: in flight, not due
    assert claimed.id == "d1"
    async with store.read() as conn:
        found = await outbox.queues(conn, now=T0)
    assert [(q.stage_id, q.states["pending"], q.due, q.oldest_due_at) for q in found] == [
        ("hook", 3, 1, T0 - 10),
        ("other", 1, 1, T0 - 5),
    ]


async def test_finished_lists_only_delivered_or_failed(store: Store) -> None:
    await _enqueue(store, _new("d1", task="t1"), _new("d2", task="t2"), _new("d3", task="t3"))
    claimed = {c.id: c for c in await _claim(store)}
    await _record(
        store,
        _result(claimed["d1"], Decision.delivered()),
        _result(claimed["d2"], Decision.give_up(), status=500),
    )
    async with store.read() as conn:
        found = await outbox.finished(conn, ["d1", "d2", "d3", "nope"])
    assert [(f.id, f.state, f.task_id, f.stage_id) for f in found] == [
        ("d1", "delivered", "t1", "hook"),
        ("d2", "failed", "t2", "hook"),
    ]


async def test_a_claim_tells_when_the_next_delivery_is_due(store: Store) -> None:
    async with store.transaction() as conn:
        claimed, due = await outbox.claim_and_next_due(
            conn, now=T0, lease_seconds=LEASE, worker="w1", limit=5
        )
    assert (claimed, due) == ([], None)
    await _enqueue(store, _new("d1", task="t1", due=T0 + 20), _new("d2", task="t2", due=T0))
    async with store.transaction() as conn:
        claimed, due = await outbox.claim_and_next_due(
            conn, now=T0, lease_seconds=LEASE, worker="w1", limit=5
        )
    assert [c.id for c in claimed] == ["d2"]
    assert due == T0 + 20  # the claimed one is due again only when its lease ends
    async with store.transaction() as conn:
        claimed, due = await outbox.claim_and_next_due(
            conn, now=T0 + 20, lease_seconds=LEASE, worker="w1", limit=5
        )
    assert [c.id for c in claimed] == ["d1"]
    assert due == T0 + LEASE  # d2's lease, the earliest end of the two
