"""`hookstage serve` as a real process under faults: SIGKILL with requests in flight (another
dispatcher delivers everything after the leases expire), SIGTERM (in-flight requests finish,
the rest is released), and what an operator reads: /metrics and JSON logs without secrets."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from hookstage.demo import DEMO_SCHEMA
from hookstage.dispatcher import Dispatcher, Endpoint
from hookstage.engine import Engine
from hookstage.service import endpoint
from hookstage.store import Store, open_store
from hookstage.store.tables import deliveries, delivery_bodies
from tests.support.delivery import Receiver, receiving, until
from tests.support.process import Running, hookstage, run_cli, started

SERVING = r"serving on (http://\S+)"
WITHIN = 30.0


def _flow(*hooks: dict[str, Any]) -> list[dict[str, Any]]:
    """Start -> each Webhook (pass mode) in turn -> Complete: import fires them all."""
    ids = [h["id"] for h in hooks]
    stages: list[dict[str, Any]] = [
        {"id": "Start", "type": "Start", "name": "Start", "next": ids[:1]}
    ]
    for hook, after in zip(hooks, [*ids[1:], "Complete"], strict=True):
        stages.append({"type": "Webhook", "name": hook["id"], "next": [after], **hook})
    stages.append({"id": "Complete", "type": "Complete", "name": "Complete", "next": []})
    return stages


def _assets(count: int) -> list[dict[str, Any]]:
    return [
        {"externalId": f"image-{n:04d}.png", "data": f"https://assets.example.com/{n:04d}.png"}
        for n in range(count)
    ]


@dataclass
class Outbox:
    db: str
    store: Store
    engine: Engine
    project_id: str

    async def states(self) -> dict[str, tuple[str, int, str | None]]:
        """Delivery id -> (state, attempts, leased_by)."""
        async with self.store.read() as conn:
            rows = await conn.execute(
                sa.select(
                    deliveries.c.id,
                    deliveries.c.state,
                    deliveries.c.attempts,
                    deliveries.c.leased_by,
                )
            )
            return {row.id: (row.state, row.attempts, row.leased_by) for row in rows}

    async def bodies(self) -> dict[str, bytes]:
        async with self.store.read() as conn:
            rows = await conn.execute(
                sa.select(delivery_bodies.c.delivery_id, delivery_bodies.c.body)
            )
            return {row.delivery_id: bytes(row.body) for row in rows}


@pytest.fixture
async def slow() -> AsyncIterator[Receiver]:
    """A receiver that holds every answer until the test opens its gate."""
    async with receiving() as found:
        found.gate = asyncio.Event()
        yield found


@contextlib.asynccontextmanager
async def _outbox(tmp_path: Path, url: str, count: int) -> AsyncIterator[Outbox]:
    db = str(tmp_path / "hookstage.sqlite")
    store = await open_store(db)
    engine = Engine(store)
    try:
        project = await engine.create_project(
            name="faults",
            category_schema=DEMO_SCHEMA,
            workflow_json=_flow({"id": "hook", "url": url}),
        )
        await engine.import_assets(project.id, _assets(count))
        yield Outbox(db, store, engine, project.id)
    finally:
        await store.close()


def _serve(db: str, *extra: str) -> list[str]:
    return hookstage("serve", "--db", db, "--port", "0", "--allow-egress", "loopback", *extra)


async def test_sigkill_mid_flight_then_another_dispatcher_delivers_everything(
    tmp_path: Path, slow: Receiver
) -> None:
    async with _outbox(tmp_path, slow.url, 120) as outbox:
        with started(_serve(outbox.db), SERVING) as server:
            await until(lambda: _arrived(slow, 40), WITHIN)
            server.kill()  # requests in flight, answers held: no result was recorded
        assert slow.gate is not None
        slow.gate.set()
        killed_with = set(slow.ids())
        held = {i for i, (_, _, leased_by) in (await outbox.states()).items() if leased_by}
        assert killed_with <= held  # what was in flight is still leased by the dead process

        async def resolve(project_id: str, stage_id: str) -> Endpoint | None:
            settings = await outbox.engine.webhook_settings(project_id, stage_id)
            return None if settings is None else endpoint(settings)

        # Another worker, whose clock is past the dead one's 60 s leases.
        heir = Dispatcher(outbox.store, resolve=resolve, clock=lambda: time.time() + 61)
        running = asyncio.create_task(heir.run())
        try:

            async def all_delivered() -> bool:
                return {s for s, _, _ in (await outbox.states()).values()} == {"delivered"}

            await until(all_delivered, WITHIN)
        finally:
            await heir.stop(grace=5)
            await running

        stored = await outbox.bodies()
        assert set(slow.ids()) == set(stored)  # every delivery at least once
        for request in slow.requests:  # a duplicate is the same id with the same bytes
            assert request.body == stored[request.headers["X-Hookstage-Delivery"]]
        assert len(slow.requests) > len(stored)  # the killed ones did arrive twice


async def _arrived(receiver: Receiver, count: int) -> bool:
    return len(receiver.requests) >= count


async def test_sigterm_finishes_what_is_in_flight_and_releases_the_rest(
    tmp_path: Path, slow: Receiver
) -> None:
    async with _outbox(tmp_path, slow.url, 150) as outbox:
        with started(_serve(outbox.db), SERVING) as server:
            # The dispatcher sends 64 at a time to one endpoint and has claimed more.
            await until(lambda: _arrived(slow, 64), WITHIN)
            in_flight = set(slow.ids())
            server.process.send_signal(signal.SIGTERM)
            await until(lambda: _refusing(server), WITHIN)  # it is shutting down
            assert slow.gate is not None
            slow.gate.set()  # the answers come within the grace period
            await asyncio.to_thread(server.process.wait, WITHIN)
        assert server.process.returncode == 0
        states = await outbox.states()
        assert set(slow.ids()) == in_flight  # nothing new was sent after SIGTERM
        delivered = {i for i, (state, _, _) in states.items() if state == "delivered"}
        assert delivered == in_flight
        rest = [v for i, v in states.items() if i not in in_flight]
        assert rest
        assert all(v == ("pending", 0, None) for v in rest)  # released, no attempt counted


async def _refusing(server: Running) -> bool:
    url = server.match.group(1)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as answer:
            await answer.read()
    except aiohttp.ClientError:
        return True
    return False


# --- what an operator reads ---------------------------------------------------------------------

HUB_SECRET = "hub-secret-Zq81xWm4"
BEARER = "bearer-token-Kp39sVv2"
QUERY_TOKEN = "query-token-Yy77"


async def test_metrics_and_json_logs_tell_what_happened_and_never_a_secret(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "hookstage.sqlite")
    made = run_cli("keys", "create", "admin", "--db", db)
    reader = run_cli("keys", "create", "scraper", "--role", "read-only", "--db", db)
    assert made.returncode == 0, made.stderr
    assert reader.returncode == 0, reader.stderr
    admin_key, read_key = made.stdout.strip(), reader.stdout.strip()
    async with receiving() as signed, receiving() as bearer:
        signed.statuses.append(500)  # retried after the schedule's 5 s: not waited for
        host = signed.url.removeprefix("http://")
        secret_url = f"http://{host}?token={QUERY_TOKEN}"  # a token in a query string
        flow = _flow(
            {"id": "signed", "url": secret_url, "auth": {"type": "secret", "secret": HUB_SECRET}},
            {"id": "bearer", "url": bearer.url, "auth": {"type": "bearer", "token": BEARER}},
        )
        logs = tmp_path / "stderr.log"
        # Logs go to stderr, kept apart in a file; stdout says where it serves.
        serve = _serve(db, "--log-format", "json", "--log-level", "debug")
        with started(["sh", "-c", 'exec "$@" 2>"$0"', str(logs), *serve], SERVING) as server:
            base = server.match.group(1)
            headers = {"Authorization": f"Bearer {admin_key}"}
            async with aiohttp.ClientSession(base, headers=headers) as api:
                async with api.post(
                    "/api/projects",
                    json={"name": "m", "categorySchema": DEMO_SCHEMA, "workflow": flow},
                ) as answer:
                    assert answer.status == 201, await answer.text()
                    project_id = (await answer.json())["id"]
                async with api.post(
                    f"/api/projects/{project_id}/assets", json=_assets(1)
                ) as answer:
                    assert answer.status < 300, await answer.text()
                await until(lambda: _arrived(bearer, 1), WITHIN)
                await until(lambda: _arrived(signed, 1), WITHIN)
                metrics = await _scrape(base, read_key, project_id)
                async with (
                    aiohttp.ClientSession(base) as anonymous,
                    anonymous.get("/metrics") as refused,
                ):
                    assert refused.status == 401
            server.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(server.process.wait, WITHIN)
        output = logs.read_text()

    def at(name: str, stage: str, **labels: str) -> float:
        return metrics[name][_key(project=project_id, stage=stage, **labels)]

    assert at("hookstage_attempts_total", "signed", outcome="5xx") == 1
    assert at("hookstage_deliveries", "signed", state="pending") == 1
    assert at("hookstage_queue_depth", "signed") == 0  # due again in 5 s, not now
    assert at("hookstage_attempts_total", "bearer", outcome="2xx") == 1
    assert at("hookstage_deliveries", "bearer", state="delivered") == 1
    assert at("hookstage_delivery_latency_seconds_count", "bearer") == 1
    for stage in ("signed", "bearer"):
        assert at("hookstage_circuit_state", stage, state="closed") == 1

    records = [orjson.loads(line) for line in output.splitlines()]  # every line is JSON
    about = [r for r in records if "delivery_id" in r]
    assert {r["verdict"] for r in about} >= {"retry", "delivered"}
    for record in about:
        assert record["stage_id"] in {"signed", "bearer"}
        assert record["task_id"]
        assert record["delivery_id"].startswith("dlv_")
    assert any(r["endpoint"] == f"http://{host}" for r in about if r["stage_id"] == "signed")
    for secret in (HUB_SECRET, BEARER, QUERY_TOKEN, admin_key, read_key):
        assert secret not in output


async def _scrape(base: str, key: str, project_id: str) -> dict[str, dict[Any, float]]:
    """The metrics once the last answer is recorded, by name and sorted labels."""
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + WITHIN
    async with aiohttp.ClientSession(base, headers=headers) as http:
        while True:
            async with http.get("/metrics") as answer:
                assert answer.status == 200
                assert answer.headers["Content-Type"].startswith("text/plain")
                text = await answer.text()
            found: dict[str, dict[Any, float]] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    found.setdefault(sample.name, {})[_key(**sample.labels)] = sample.value
            delivered = _key(project=project_id, stage="bearer", state="delivered")
            failed = _key(project=project_id, stage="signed", outcome="5xx")
            if found.get("hookstage_deliveries", {}).get(delivered) and found.get(
                "hookstage_attempts_total", {}
            ).get(failed):
                return found
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.05)  # polling a real server: recording happens there


def _key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))
