"""The dispatcher on SQLite and PostgreSQL, against real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

import hookstage
from hookstage.circuit import CircuitPolicy
from hookstage.dispatcher import Dispatcher, Endpoint
from hookstage.signing import Signer
from hookstage.store import Statement, Store, open_store
from hookstage.store.deliveries import claimed_from, claiming
from hookstage.transport import HttpTransport, OutboundRequest, Outcome
from tests.support.delivery import (
    BODY,
    DEADLINE,
    SECRET,
    BlackHole,
    Dispatchers,
    Receiver,
    WatchedStore,
    closed_port,
    enqueue,
    get,
    hub,
    seeded_store,
    until,
    until_state,
)
from tests.support.dispatching import Start


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    async with seeded_store(database) as opened:
        yield opened


# --- delivery ---------------------------------------------------------------------------------


async def test_a_delivery_arrives_with_its_exact_bytes_headers_and_hub_signature(
    store: Store, receiver: Receiver, start: Start
) -> None:
    [delivery_id] = await enqueue(store, 1)
    await start({"hook": hub(receiver.url)})
    await until_state(store, [delivery_id], "delivered")

    [request] = receiver.requests
    assert request.body == BODY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"hookstage/{hookstage.__version__}"
    assert request.headers["X-Hookstage-Delivery"] == delivery_id
    assert request.headers["X-Hookstage-Attempt"] == "1"
    # The seed's receiver check, exactly.
    expected = hmac.new(SECRET.encode(), msg=request.body, digestmod=hashlib.sha1).hexdigest()
    assert request.headers["X-Hub-Signature"] == expected
    detail = await get(store, delivery_id)
    assert [(a.number, a.status_code, a.response_body) for a in detail.attempt_log] == [
        (1, 200, b"ok")
    ]
    assert detail.last_status == 200


async def test_standard_webhooks_hub_256_and_bearer_headers_verify(
    store: Store, receiver: Receiver, start: Start
) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    signer = Signer(["standard", "hub-256", "bearer"], secrets=[secret], token="t0ken")
    [delivery_id] = await enqueue(store, 1)
    before = int(time.time())
    await start({"hook": Endpoint(receiver.url, signer)})
    await until_state(store, [delivery_id], "delivered")

    [request] = receiver.requests
    Webhook(secret).verify(request.body, dict(request.headers), json_parse=False)
    assert request.headers["webhook-id"] == delivery_id
    assert before <= int(request.headers["webhook-timestamp"]) <= time.time()
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Hub-Signature-256"] == f"sha256={expected}"
    assert request.headers["Authorization"] == "Bearer t0ken"


async def test_a_500_is_retried_with_the_same_id_and_bytes_then_delivered(
    store: Store, receiver: Receiver, start: Start
) -> None:
    receiver.statuses.extend([500, 503])
    [delivery_id] = await enqueue(store, 1)
    await start({"hook": hub(receiver.url)})
    await until_state(store, [delivery_id], "delivered")

    assert receiver.ids() == [delivery_id] * 3
    assert [r.headers["X-Hookstage-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert {r.body for r in receiver.requests} == {BODY}
    detail = await get(store, delivery_id)
    assert [(a.number, a.status_code) for a in detail.attempt_log] == [
        (1, 500),
        (2, 503),
        (3, 200),
    ]


async def test_a_redirect_is_not_followed_and_fails_after_the_schedule(
    store: Store, receiver: Receiver, start: Start
) -> None:
    receiver.statuses.extend([302, 302, 302])
    [delivery_id] = await enqueue(store, 1)
    await start({"hook": hub(receiver.url)})
    await until_state(store, [delivery_id], "failed")
    assert len(receiver.requests) == 3  # QUICK has three attempts
    assert (await get(store, delivery_id)).last_status == 302


async def test_a_refused_port_is_recorded_with_its_error_class(store: Store, start: Start) -> None:
    [delivery_id] = await enqueue(store, 1)
    await start({"hook": hub(f"http://127.0.0.1:{closed_port()}/hook")})
    await until_state(store, [delivery_id], "failed")
    detail = await get(store, delivery_id)
    assert [a.error_class for a in detail.attempt_log] == ["refused"] * 3
    assert all(a.status_code is None for a in detail.attempt_log)
    assert str(detail.last_error).startswith("refused: ")


async def test_a_stage_that_is_gone_fails_with_no_endpoint(store: Store, start: Start) -> None:
    [delivery_id] = await enqueue(store, 1, stage="deleted")
    await start({})
    await until_state(store, [delivery_id], "failed")
    [attempt] = (await get(store, delivery_id)).attempt_log
    assert attempt.error_class == "no-endpoint"


async def test_wake_sends_a_new_delivery_without_waiting_for_the_poll(
    store: Store, receiver: Receiver, start: Start
) -> None:
    watched = WatchedStore(store.engine)
    dispatcher = await start({"hook": hub(receiver.url)}, on=watched, poll_seconds=3600)
    async with watched.changed:  # its first look found nothing: now it waits for an hour
        await asyncio.wait_for(watched.changed.wait_for(lambda: watched.finished > 0), DEADLINE)
    [delivery_id] = await enqueue(store, 1)
    dispatcher.wake()
    await receiver.wait_for(1)
    assert receiver.ids() == [delivery_id]


async def test_a_large_backlog_streams_through_every_slot(
    store: Store, receiver: Receiver, start: Start
) -> None:
    ids = await enqueue(store, 300)
    await start({"hook": hub(receiver.url)}, concurrency=16, per_endpoint=16, batch=20)
    await until_state(store, ids, "delivered")
    assert sorted(receiver.ids()) == ids


# --- leases -----------------------------------------------------------------------------------


async def test_an_expired_lease_is_claimed_again_by_another_dispatcher(
    store: Store, receiver: Receiver, black_hole: BlackHole, start: Start
) -> None:
    past = time.time() - 120
    [delivery_id] = await enqueue(store, 1, due=past)
    # The first dispatcher lives two minutes ago: its 60 s lease has expired by now, and its
    # request never gets an answer (as if it had died mid-request).
    await start({"hook": hub(black_hole.url)}, clock=lambda: time.time() - 120, worker_id="old")

    async def sent() -> bool:
        return black_hole.connections == 1 and (await get(store, delivery_id)).attempts == 1

    await until(sent)
    await start({"hook": hub(receiver.url)}, worker_id="new")
    await until_state(store, [delivery_id], "delivered")
    [request] = receiver.requests
    assert request.headers["X-Hookstage-Attempt"] == "2"


async def test_two_dispatchers_never_send_the_same_delivery_twice(
    store: Store, receiver: Receiver, start: Start, database: str
) -> None:
    ids = await enqueue(store, 200)
    other = await open_store(database)  # a second process would open its own
    try:
        sent: Counter[str] = Counter()
        both = asyncio.Event()

        class Counting(HttpTransport):
            def __init__(self, name: str) -> None:
                super().__init__()
                self.name = name

            async def send(self, request: OutboundRequest) -> Outcome:
                sent[self.name] += 1
                if len(sent) == 2:
                    both.set()
                # Answers wait until both have sent: the first cannot drain everything
                # before the second's first claim, so both claim side by side.
                await both.wait()
                return await super().send(request)

        options = {"concurrency": 8, "per_endpoint": 8, "batch": 10}
        await start({"hook": hub(receiver.url)}, transport=Counting("a"), **options)
        await start({"hook": hub(receiver.url)}, on=other, transport=Counting("b"), **options)
        await until_state(store, ids, "delivered")
    finally:
        await other.close()
    assert sorted(receiver.ids()) == ids  # each exactly once
    assert min(sent["a"], sent["b"]) > 0  # both took part
    assert sent["a"] + sent["b"] == len(ids)


async def test_stop_lets_requests_in_flight_finish_and_records_them(
    store: Store, receiver: Receiver, start: Start
) -> None:
    receiver.gate = asyncio.Event()
    ids = await enqueue(store, 2)
    dispatcher = await start({"hook": hub(receiver.url)})
    await receiver.wait_for(2)
    stopping = asyncio.create_task(dispatcher.stop(grace=DEADLINE))
    done, _ = await asyncio.wait({stopping}, timeout=0.2)
    assert not done  # stop is waiting for the answers
    receiver.gate.set()
    await stopping
    for delivery_id in ids:
        assert (await get(store, delivery_id)).state == "delivered"


async def test_stop_releases_the_leases_it_did_not_finish(
    store: Store, black_hole: BlackHole, start: Start
) -> None:
    ids = await enqueue(store, 5)
    dispatcher = await start({"hook": hub(black_hole.url)}, concurrency=2, per_endpoint=2, batch=5)

    async def in_flight() -> bool:
        return black_hole.connections == 2 and all(
            [(await get(store, i)).attempts == 1 for i in ids]
        )

    await until(in_flight)
    await dispatcher.stop(grace=0.05)
    now = time.time()
    details = [await get(store, i) for i in ids]
    for detail in details:
        assert detail.state == "pending"
        assert (detail.leased_by, detail.lease_until) == (None, None)
        assert detail.due_at <= now
    interrupted = [d for d in details if d.attempt_log]
    assert len(interrupted) == 2
    assert all(d.attempt_log[0].error_class == "cancelled" for d in interrupted)
    # The three never sent are as they were: no attempt counted.
    assert sorted(d.attempts for d in details) == [0, 0, 0, 1, 1]


# --- isolation --------------------------------------------------------------------------------


async def test_a_black_holed_endpoint_does_not_block_a_healthy_one(
    store: Store, receiver: Receiver, black_hole: BlackHole, start: Start
) -> None:
    stuck = await enqueue(store, 30, stage="stuck", due=time.time() - 60)  # due first
    healthy = await enqueue(store, 10, stage="healthy")
    dispatcher = await start(
        {
            "stuck": hub(black_hole.url, timeout=3600),
            "healthy": hub(receiver.url),
        },
        concurrency=4,
        per_endpoint=2,
        batch=4,
        lease_seconds=7200,
    )
    await until_state(store, healthy, "delivered")
    assert sorted(receiver.ids()) == healthy
    assert black_hole.connections <= 2  # the stuck endpoint held its own two slots only
    state = dispatcher.state()
    # No answer yet is no failure yet: the circuit is closed, the queue full.
    assert state["circuits"][black_hole.url] == "closed"
    assert state["endpoints"][black_hole.url]["saturated"] is True
    assert state["in_flight"] == 2
    assert {(await get(store, i)).state for i in stuck} == {"pending"}


async def test_a_black_holes_claims_do_not_shrink_a_healthy_endpoints_share(
    store: Store, receiver: Receiver, black_hole: BlackHole, start: Start
) -> None:
    # 12 claims in all (4 in flight + 2 batches), 6 per endpoint: the black hole fills its
    # 6 (and one batch over). The healthy endpoint must still fill its own 6, not just
    # what the black hole left of the 12.
    receiver.gate = asyncio.Event()  # the healthy receiver holds its answers: claims pile up
    await enqueue(store, 30, stage="stuck", due=time.time() - 60)  # due first
    healthy = await enqueue(store, 30, stage="healthy")
    dispatcher = await start(
        {"stuck": hub(black_hole.url, timeout=3600), "healthy": hub(receiver.url)},
        concurrency=4,
        per_endpoint=2,
        batch=4,
        lease_seconds=7200,
    )

    async def both_full() -> bool:
        endpoints = dispatcher.state()["endpoints"]
        return all(
            endpoints.get(url, {}).get("saturated") for url in (black_hole.url, receiver.url)
        )

    await until(both_full)
    receiver.gate.set()
    await until_state(store, healthy, "delivered")


async def test_full_endpoints_together_hold_at_most_twice_the_claim_room(
    store: Store, receiver: Receiver, black_hole: BlackHole, start: Start
) -> None:
    # Room: 1 in flight + 2 batches of 2 = 5; 3 per endpoint. Full endpoints' claims do not
    # count against the others' room, but all of them together stay within twice the room,
    # however many endpoints fill up (six here, up to 4 claims each).
    stages = [f"hole{i}" for i in range(6)]
    for i, stage in enumerate(stages):
        await enqueue(store, 5, stage=stage, due=time.time() - 600 + 20 * i)
    [last] = await enqueue(store, 1, stage="healthy")  # due after all of them
    endpoints = {s: hub(f"{black_hole.url}?{s}", timeout=0.02) for s in stages}
    dispatcher = await start(
        {**endpoints, "healthy": hub(receiver.url)},
        concurrency=1,
        per_endpoint=1,
        batch=2,
        circuit=CircuitPolicy(failures=1000),
    )
    most = 0

    async def healthy_delivered() -> bool:
        nonlocal most
        most = max(most, int(dispatcher.state()["claimed"]))
        assert most <= 10
        return receiver.ids() == [last]

    await until(healthy_delivered)
    assert most == 10  # the bound was reached, and held


async def test_a_claim_beside_a_full_endpoint_that_found_nothing_waits_for_news(
    store: Store, receiver: Receiver, start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One endpoint with a backlog fills its queue again and again as it answers, and
    # nothing else is due. A claim that held it back and found nothing is not made again
    # until new deliveries are announced (or a poll passes): over a big backlog, each
    # such claim steps over every due delivery of the stage it holds back.
    fruitless: list[object] = []
    left_out: list[bool] = []  # whether each claim leaves a stage out, until it is read
    claims: list[object] = []

    def noted(dialect: str, **options: Any) -> list[Statement]:
        left_out.append(bool(options["exclude"]))
        claims.append(options["exclude"])
        return claiming(dialect, **options)

    def counted(found: list[list[Any]], **options: Any) -> Any:
        claimed = claimed_from(found, **options)
        if left_out.pop() and not claimed[0]:
            fruitless.append(claimed)
        return claimed

    monkeypatch.setattr("hookstage.dispatcher.claiming", noted)
    monkeypatch.setattr("hookstage.dispatcher.claimed_from", counted)
    receiver.seconds = 0.01  # one at a time: its queue stays full, each answer makes a turn
    busy = await enqueue(store, 60, stage="busy")
    endpoints = {"busy": hub(receiver.url), "other": hub(f"{receiver.url}?other")}
    dispatcher = await start(endpoints, concurrency=8, per_endpoint=1, batch=2, poll_seconds=60)
    await until_state(store, busy, "delivered")
    assert claims  # the claims went through the patched statements
    assert left_out == []  # and every one was counted
    assert len(fruitless) <= 1
    other = await enqueue(store, 1, stage="other")
    dispatcher.wake()  # news: it is claimed at once, not at the next poll
    await until_state(store, other, "delivered")


async def test_news_that_comes_during_a_fruitless_claim_is_not_lost(
    postgres_database: str,
    receiver: Receiver,
    black_hole: BlackHole,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PostgreSQL: another transaction (the API, another process) commits a delivery while
    # a claim beside a full endpoint finds nothing, and wakes the dispatcher. The claim's
    # "nothing else is due" is stale at once: the delivery goes now, not at the next poll.
    dispatchers: list[Dispatcher] = []
    stores: list[Store] = []
    other: list[str] = []
    left_out: list[bool] = []  # whether the turn's claim leaves a stage out

    def noted(dialect: str, **options: Any) -> list[Statement]:
        left_out.append(bool(options["exclude"]))
        return claiming(dialect, **options)

    async def racing(statements: list[Statement]) -> list[list[Any]]:
        found = await write(statements)
        if left_out and left_out.pop() and not found[-2] and not other:
            other.extend(await enqueue(stores[0], 1, stage="other"))
            dispatchers[0].wake()
        return found

    monkeypatch.setattr("hookstage.dispatcher.claiming", noted)
    async with seeded_store(postgres_database) as opened:
        stores.append(opened)
        write = opened.write
        monkeypatch.setattr(opened, "write", racing)
        await enqueue(opened, 10, stage="busy")
        endpoints: dict[str, Endpoint | None] = {
            "busy": hub(black_hole.url, timeout=30),
            "other": hub(receiver.url),
        }
        started = Dispatchers(opened)
        try:
            dispatchers.append(
                await started(endpoints, concurrency=8, per_endpoint=1, batch=2, poll_seconds=60)
            )

            async def raced() -> bool:
                return bool(other)

            await until(raced)
            await until_state(opened, other, "delivered")
        finally:
            await started.stop_all()


# --- the transport ----------------------------------------------------------------------------


async def test_the_transport_reads_at_most_64_kib_and_reports_timeouts(
    receiver: Receiver, black_hole: BlackHole
) -> None:
    big = b"y" * (200 * 1024)

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=big)

    transport = HttpTransport()
    try:
        receiver.statuses.append(201)
        answered = await transport.send(OutboundRequest(receiver.url, BODY, {}, timeout=5))
        assert (answered.status, answered.body, answered.error_class) == (201, b"ok", None)
        timed_out = await transport.send(OutboundRequest(black_hole.url, BODY, {}, timeout=0.2))
        assert (timed_out.status, timed_out.error_class) == (None, "timeout")
        assert timed_out.duration_ms >= 200
    finally:
        await transport.aclose()

    app = web.Application()
    app.router.add_post("/big", large)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    transport = HttpTransport()
    try:
        outcome = await transport.send(OutboundRequest(f"http://127.0.0.1:{port}/big", BODY, {}))
        assert outcome.status == 200
        assert outcome.body == big[: 64 * 1024]
    finally:
        await transport.aclose()
        await runner.cleanup()


async def test_the_transport_turns_a_garbled_answer_into_a_protocol_error() -> None:
    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garble, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = HttpTransport()
    try:
        outcome = await transport.send(OutboundRequest(f"http://127.0.0.1:{port}/", BODY, {}))
    finally:
        await transport.aclose()
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
    assert (outcome.status, outcome.error_class) == (None, "protocol")


def test_an_endpoint_keeps_its_secrets_out_of_repr() -> None:
    endpoint = Endpoint(
        "https://example.com/hook", Signer(["hub", "bearer"], secrets=[SECRET], token="tok3n")
    )
    assert SECRET not in repr(endpoint)
    assert "tok3n" not in repr(endpoint)
    with pytest.raises(ValueError, match="url"):
        Endpoint("ftp://example.com/hook")
    with pytest.raises(ValueError, match="timeout"):
        Endpoint("https://example.com/hook", timeout=0)
