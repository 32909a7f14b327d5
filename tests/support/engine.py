"""A real engine over a real database (the `store` fixture: SQLite and PostgreSQL), and the
projects, assets and submissions its integration tests share (`test_engine_*.py`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from hookstage.engine import Engine, Project, Submission
from hookstage.retry import Decision, Verdict
from hookstage.store import Store
from hookstage.store import deliveries as outbox
from hookstage.store.tables import batches, deliveries, tasks

__all__ = [
    "CAR",
    "HOOK_URL",
    "NEAR",
    "OCCLUDED",
    "OCCLUDED_YES",
    "ROAD",
    "SCHEMA",
    "SECRET",
    "WEATHER",
    "Clock",
    "World",
    "asset",
    "assets",
    "car",
    "finish",
    "labeled",
    "opened",
    "stage",
    "standard_flow",
    "weather",
    "webhook",
]

SECRET = "stage-secret-0123456789abcdef"
HOOK_URL = "https://hooks.example.com/ango"
CAR = "7d38d842079133453b4b328"
OCCLUDED = "7d38d842079133453b4b329"  # nested under Car
OCCLUDED_YES = "7d38d842079133453b4b32a"
ROAD = "8a11b2c3d4e5f60718293a4"
WEATHER = "9b22c3d4e5f607182930a4b"
NEAR = "5e66f7a8b9c0d1e2f3a4b5c"

SCHEMA: dict[str, Any] = {
    "tools": [
        {"title": "Car", "tool": "bounding-box", "schemaId": CAR,
         "classifications": [
             {"title": "Occluded", "tool": "radio", "schemaId": OCCLUDED, "classifications": [],
              "options": [{"value": "Yes", "schemaId": OCCLUDED_YES},
                          {"value": "No", "schemaId": "7d38d842079133453b4b32b"}]},
         ]},
        {"title": "Road", "tool": "polygon", "schemaId": ROAD, "classifications": []},
    ],
    "classifications": [
        {"title": "Weather", "tool": "radio", "schemaId": WEATHER, "classifications": [],
         "options": [{"value": "Sunny", "schemaId": "9b22c3d4e5f607182930a4c"},
                     {"value": "Rainy", "schemaId": "9b22c3d4e5f607182930a4d"}]},
    ],
    "relations": [{"title": "Near", "tool": "single", "schemaId": NEAR}],
}  # fmt: skip

Json = dict[str, Any]


def stage(stage_id: str, stage_type: str, *targets: str, **settings: Any) -> Json:
    """A stage in workflow JSON; `name` defaults to the id."""
    return {"id": stage_id, "type": stage_type, "name": stage_id, "next": list(targets)} | settings


def webhook(stage_id: str, *targets: str, **settings: Any) -> Json:
    """A Webhook stage signing with SECRET to HOOK_URL."""
    auth = {"type": "secret", "secret": SECRET}
    return stage(stage_id, "Webhook", *targets, url=HOOK_URL, auth=auth) | settings


def standard_flow(*, format: str = "ango-2023") -> list[Json]:
    """Start -> Label -> Webhook -> Review -> Complete, a reject going back to Label."""
    return [
        stage("Start", "Start", "Label"),
        stage("Label", "Label", "webhook"),
        webhook("webhook", "review", name="Webhook", format=format),
        stage("review", "Review", "Complete", "Label", name="Review"),
        stage("Complete", "Complete"),
    ]


def asset(n: int, *, batches: Sequence[str] = ("Batch 1",), **extra: Any) -> Json:
    return {
        "externalId": f"street-{n:04d}.jpg",
        "data": f"https://assets.example.com/street-{n:04d}.jpg",
        "metadata": {"width": 1280, "height": 720},
        "batches": list(batches),
        "contextData": {"camera": "front", "n": n},
    } | extra


def assets(count: int, *, batches: Sequence[str] = ("Batch 1",)) -> list[Json]:
    return [asset(n, batches=batches) for n in range(1, count + 1)]


def car(n: int, *, occluded: str | None = None) -> Json:
    nested = []
    if occluded is not None:
        nested.append(
            {"answer": occluded, "objectId": f"o{n:022x}", "schemaId": OCCLUDED,
             "title": "Occluded", "tool": "radio", "classifications": []}
        )  # fmt: skip
    return {
        "bounding-box": {"x": 10.5 + n, "y": 20.25, "height": 8.0, "width": 12.0},
        "objectId": f"c{n:022x}",
        "schemaId": CAR,
        "title": "Car",
        "classifications": nested,
    }


def weather(n: int, answer: str = "Sunny") -> Json:
    return {
        "answer": answer,
        "objectId": f"w{n:022x}",
        "schemaId": WEATHER,
        "title": "Weather",
        "tool": "radio",
        "classifications": [],
    }


def labeled(n: int) -> Submission:
    """What labeler number n hands in: a car, and the weather."""
    return Submission(tools=[car(n)], classifications=[weather(n)])


class Clock:
    """The engine's clock, moved by the test."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class World:
    store: Store
    engine: Engine
    clock: Clock
    wakes: list[float] = field(default_factory=list)

    async def project(self, flow: Any = None, *, name: str = "Streets") -> Project:
        return await self.engine.create_project(
            name=name, category_schema=SCHEMA, workflow_json=flow or standard_flow()
        )

    async def imported(self, project_id: str, items: Sequence[Json]) -> list[str]:
        return (await self.engine.import_assets(project_id, items)).created

    async def one_task(self, flow: Any = None) -> tuple[str, str]:
        """A new project with one task, in batches "night" and "city": (project id, task id)."""
        project = await self.project(flow)
        [task_id] = await self.imported(project.id, [asset(1, batches=["night", "city"])])
        return project.id, task_id

    async def bodies(self, project_id: str, **filters: Any) -> list[Json]:
        """The bodies of a project's deliveries, oldest first, parsed."""
        found = await self.engine.list_deliveries(project_id, **filters)
        details = [await self.engine.get_delivery(d.id) for d in reversed(found)]
        return [orjson.loads(d.body) for d in details]

    async def rows(self, table: sa.Table) -> int:
        async with self.store.read() as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )

    async def counts(self) -> tuple[int, int, int]:
        """(tasks, batches, deliveries) stored, in every project."""
        return (await self.rows(tasks), await self.rows(batches), await self.rows(deliveries))


@contextlib.asynccontextmanager
async def opened(store: Store) -> AsyncIterator[World]:
    """An engine over `store` (left open: its opener closes it), on a clock the test moves."""
    clock = Clock()
    wakes: list[float] = []
    engine = Engine(store, clock=clock, on_enqueue=lambda: wakes.append(clock()))
    yield World(store, engine, clock, wakes)


async def finish(store: Store, outcomes: Mapping[str, Decision], *, now: float) -> None:
    """Attempt deliveries as a worker does: claim every due one, record the given outcome
    for those named, hand the others back untried."""
    async with store.transaction() as conn:
        claimed = await outbox.claim(conn, now=now, lease_seconds=30, worker="w1", limit=1000)
        missing = set(outcomes) - {c.id for c in claimed}
        assert not missing, f"not due: {missing}"
        await outbox.record(
            conn,
            [
                outbox.AttemptResult(
                    lease=c.lease,
                    started_at=now,
                    duration_ms=5.0,
                    status_code=200 if outcomes[c.id].verdict is Verdict.DELIVERED else 500,
                    error_class=None,
                    error=None,
                    response_headers={"content-type": "text/plain"},
                    response_body=b"ok",
                    decision=outcomes[c.id],
                )
                for c in claimed
                if c.id in outcomes
            ],
        )
        await outbox.release(conn, [c.lease for c in claimed if c.id not in outcomes], now=now)
