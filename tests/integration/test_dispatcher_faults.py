"""The dispatcher under receiver faults, on real sockets and a real database (SQLite, then
PostgreSQL): an endpoint that fails and recovers (circuit breaker), a black hole beside a
healthy endpoint, 410 Gone, 429 with Retry-After, a refused port that comes up, a connect
timeout, a 10 MB answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Never

import pytest
from aiohttp import web

from hookstage.circuit import CircuitPolicy
from hookstage.retry import RetryPolicy
from hookstage.store import Store
from hookstage.store import endpoints as endpoint_store
from hookstage.store.deliveries import MAX_STORED_RESPONSE
from hookstage.store.tables import deliveries, delivery_bodies
from hookstage.transport import HttpTransport, OutboundRequest, Outcome
from tests.support.delivery import (
    BODY,
    BlackHole,
    Receiver,
    WatchedStore,
    closed_port,
    enqueue,
    get,
    hub,
    receiving,
    seeded_store,
    until,
    until_state,
)
from tests.support.dispatching import Start
from tests.support.network import unanswered_port

# Many quick attempts: a budget an outage of a second would burn many times over.
PATIENT = RetryPolicy(schedule=(0, *(0.02,) * 7), jitter=0)


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    async with seeded_store(database) as opened:
        yield opened


# --- the circuit breaker ------------------------------------------------------------------------


async def test_an_endpoint_that_500s_opens_its_circuit_and_what_waited_goes_when_it_recovers(
    store: Store, receiver: Receiver, start: Start
) -> None:
    receiver.status = 500
    ids = await enqueue(store, 20)
    circuit = CircuitPolicy(failures=3, cooldown=0.2, max_cooldown=0.2)
    dispatcher = await start(
        {"hook": hub(receiver.url)}, policy=PATIENT, circuit=circuit, per_endpoint=2
    )

    async def opened() -> bool:
        return bool(dispatcher.state()["circuits"].get(receiver.url) == "open")

    await until(opened)
    during = len(receiver.requests)
    # Three probes, one per cool-down, each answered 500: an outage several times as long
    # as the whole retry schedule.
    await receiver.wait_for(during + 3)
    assert len(receiver.requests) <= during + 4  # probes only: one at a time
    receiver.status = 200  # the endpoint recovers; nobody calls wake() or redeliver
    await until_state(store, ids, "delivered")

    # Had every delivery gone on retrying, each would have failed long ago. Since the
    # circuit opened, the endpoint saw probes (one per cool-down) and then each delivery once.
    assert len(receiver.requests) - during <= 4 + len(ids)
    assert max([(await get(store, i)).attempts for i in ids]) < PATIENT.max_attempts
    assert sorted(set(receiver.ids())) == ids
    assert {r.body for r in receiver.requests} == {BODY}
    assert dispatcher.state()["circuits"][receiver.url] == "closed"


async def test_a_black_hole_opens_its_circuit_while_the_healthy_endpoint_delivers_everything(
    store: Store, receiver: Receiver, black_hole: BlackHole, start: Start
) -> None:
    stuck = await enqueue(store, 40, stage="stuck", due=time.time() - 60)  # due first
    healthy = await enqueue(store, 200, stage="healthy")
    circuit = CircuitPolicy(failures=2, cooldown=3600, max_cooldown=3600)
    dispatcher = await start(
        {"stuck": hub(black_hole.url, timeout=0.2), "healthy": hub(receiver.url)},
        circuit=circuit,
        concurrency=8,
        per_endpoint=4,
        batch=8,
    )
    await until_state(store, healthy, "delivered")
    assert sorted(receiver.ids()) == healthy  # each once

    async def opened() -> bool:
        return bool(dispatcher.state()["circuits"].get(black_hole.url) == "open")

    await until(opened)
    details = [await get(store, i) for i in stuck]
    tried = [d for d in details if d.attempt_log]
    assert {d.state for d in details} == {"pending"}  # none given up: QUICK has 3 attempts
    # The slots busy when it opened, and those freed by the timeouts that opened it.
    assert 2 <= len(tried) <= 4 + 2
    assert {a.error_class for d in tried for a in d.attempt_log} == {"timeout"}


# --- 410 Gone ---------------------------------------------------------------------------------


async def test_410_disables_the_stage_until_enabled_and_the_waiting_keep_their_attempts(
    store: Store, receiver: Receiver, tmp_path: Path, start: Start
) -> None:
    async with receiving() as other:
        receiver.statuses.append(410)
        gone = await enqueue(store, 5, stage="hook")
        watched = WatchedStore(store.engine)
        dispatcher = await start(
            {"hook": hub(receiver.url), "other": hub(other.url)},
            on=watched,
            per_endpoint=1,
            poll_seconds=0.02,
        )
        await until_state(store, gone[:1], "pending")
        await until(lambda: _disabled(store))
        # Many turns later, nothing more went to the stage; the other stage still delivers.
        await watched.turns(10)
        elsewhere = await enqueue(store, 3, stage="other")
        dispatcher.wake()
        await until_state(store, elsewhere, "delivered")
        assert len(receiver.requests) == 1
        first = await get(store, gone[0])
        assert (first.state, first.attempts, first.last_status) == ("pending", 1, 410)
        assert [(await get(store, i)).attempts for i in gone[1:]] == [0, 0, 0, 0]
        async with store.read() as conn:
            status = await endpoint_store.status(conn, "p1", "hook")
        assert status.disabled
        assert "410 Gone" in str(status.disabled_reason)
        assert gone[0] in str(status.disabled_reason)

        async with store.transaction() as conn:
            assert await endpoint_store.enable(conn, "p1", "hook", now=time.time()) == 5
        dispatcher.wake()
        await until_state(store, gone, "delivered")
    assert (await get(store, gone[0])).attempts == 2
    assert sorted(set(receiver.ids())) == gone


async def _disabled(store: Store) -> bool:
    async with store.read() as conn:
        return (await endpoint_store.status(conn, "p1", "hook")).disabled


# --- other faults -----------------------------------------------------------------------------


async def test_429_with_retry_after_waits_that_long(
    store: Store, receiver: Receiver, start: Start
) -> None:
    receiver.statuses.append(429)
    receiver.headers = {"Retry-After": "1"}
    [delivery_id] = await enqueue(store, 1)
    policy = RetryPolicy(schedule=(0, 0.01, 30), jitter=0)
    await start({"hook": hub(receiver.url)}, policy=policy, poll_seconds=0.05)
    await until_state(store, [delivery_id], "delivered")
    first, second = (await get(store, delivery_id)).attempt_log
    assert (first.status_code, second.status_code) == (429, 200)
    assert first.response_headers is not None
    assert first.response_headers["Retry-After"] == "1"
    assert second.started_at - first.started_at >= 1.0


async def test_a_refused_port_is_retried_until_a_receiver_comes_up_there(
    store: Store, start: Start
) -> None:
    port = closed_port()
    [delivery_id] = await enqueue(store, 1)
    policy = RetryPolicy(schedule=(0, *(0.05,) * 50), jitter=0)
    circuit = CircuitPolicy(failures=1000)
    await start({"hook": hub(f"http://127.0.0.1:{port}/hook")}, policy=policy, circuit=circuit)

    async def refused_twice() -> bool:
        return (await get(store, delivery_id)).attempts >= 2

    await until(refused_twice)
    app = web.Application()
    app.router.add_post("/hook", _ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await until_state(store, [delivery_id], "delivered")
    finally:
        await runner.cleanup()
    log = (await get(store, delivery_id)).attempt_log
    assert {a.error_class for a in log[:-1]} == {"refused"}
    assert log[-1].status_code == 200


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="up")


async def test_a_connect_timeout_has_its_own_error_class(store: Store, start: Start) -> None:
    with unanswered_port() as port:
        [delivery_id] = await enqueue(store, 1)
        transport = HttpTransport(connect_timeout=0.2)
        await start({"hook": hub(f"http://127.0.0.1:{port}/hook", timeout=5)}, transport=transport)
        await until_state(store, [delivery_id], "failed")
        log = (await get(store, delivery_id)).attempt_log
        assert {a.error_class for a in log} == {"connect-timeout"}
        assert all(a.duration_ms < 2000 for a in log)  # the connect limit, not the total
        await transport.aclose()


async def test_a_10_mb_answer_is_delivered_and_its_first_64_kib_kept(
    store: Store, start: Start
) -> None:
    huge = b"z" * (10 * 1024 * 1024)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=huge, headers={"X-Receiver": "big"})

    app = web.Application()
    app.router.add_post("/hook", answer)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        [delivery_id] = await enqueue(store, 1)
        await start({"hook": hub(f"http://127.0.0.1:{port}/hook")})
        await until_state(store, [delivery_id], "delivered")
    finally:
        await runner.cleanup()
    [attempt] = (await get(store, delivery_id)).attempt_log
    assert attempt.status_code == 200
    assert attempt.response_body == huge[:MAX_STORED_RESPONSE]
    assert attempt.response_headers is not None
    assert attempt.response_headers["X-Receiver"] == "big"


async def test_state_reports_circuits_as_strings_per_url(
    store: Store, receiver: Receiver, start: Start
) -> None:
    ids = await enqueue(store, 2)
    dispatcher = await start({"hook": hub(receiver.url)})
    await until_state(store, ids, "delivered")
    state = dispatcher.state()
    assert state["circuits"] == {receiver.url: "closed"}
    assert dispatcher.circuit_states() == {("p1", "hook"): "closed"}


async def test_a_result_that_cannot_be_recorded_does_not_send_the_others_again(
    store: Store, receiver: Receiver, start: Start
) -> None:
    receiver.gate = asyncio.Event()
    ids = await enqueue(store, 3)
    # A long linger: the three answers are recorded in one group, as under load.
    await start({"hook": hub(receiver.url)}, linger_seconds=0.3)
    await receiver.wait_for(3)
    gone = ids[1]
    async with store.transaction() as conn:  # removed mid-flight: its attempt cannot be kept
        await conn.execute(delivery_bodies.delete().where(delivery_bodies.c.delivery_id == gone))
        await conn.execute(deliveries.delete().where(deliveries.c.id == gone))
    receiver.gate.set()
    await until_state(store, [ids[0], ids[2]], "delivered")  # well before their leases end
    assert sorted(receiver.ids()) == ids  # each sent once: none waits for its lease again


class _Unreadable(Mapping[str, str]):
    """Headers that break whoever copies them: a stand-in for a bug after the attempt."""

    def __getitem__(self, name: str) -> Never:
        raise RuntimeError("a bug")

    def __iter__(self) -> Never:
        raise RuntimeError("a bug")

    def __len__(self) -> int:
        return 1


async def test_a_bug_after_an_attempt_hands_the_delivery_back_and_the_queue_goes_on(
    store: Store, receiver: Receiver, start: Start
) -> None:
    ids = await enqueue(store, 3)
    real = HttpTransport()
    broken = [True]

    class FirstAnswerBreaks:
        async def send(self, request: OutboundRequest) -> Outcome:
            outcome = await real.send(request)
            if broken.pop() if broken else False:
                return replace(outcome, headers=_Unreadable())
            return outcome

        async def aclose(self) -> None:
            await real.aclose()

    # One worker for the endpoint: the queue behind the failed job must still be sent.
    await start({"hook": hub(receiver.url)}, transport=FirstAnswerBreaks(), per_endpoint=1)
    await until_state(store, ids, "delivered")
    first = receiver.ids()[0]
    assert receiver.ids().count(first) == 2  # handed back and sent again
    assert sorted(set(receiver.ids())) == ids
