"""The database every store, engine and dispatcher test runs on: SQLite and PostgreSQL.

`database` is parametrized: a test that asks for it (or for `store`, or `world`) runs once
on a fresh SQLite file and once on a fresh PostgreSQL database. The PostgreSQL server
starts once per session, only when a test needs it (see `tests.support.postgres`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hookstage.store import Store, open_store
from tests.support.engine import World, opened
from tests.support.postgres import Postgres, running

DIALECTS = ("sqlite", "postgresql")

pytest_plugins = ("tests.support.dispatching",)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the whole session."""
    with running() as server:
        yield server


@pytest.fixture
def postgres_database(postgres: Postgres) -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database, dropped after the test."""
    url = postgres.fresh()
    yield url
    postgres.drop(url)


@pytest.fixture(params=DIALECTS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    server: Postgres = request.getfixturevalue("postgres")
    url = server.fresh()
    yield url
    server.drop(url)


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    """The database, open and migrated."""
    found = await open_store(database)
    yield found
    await found.close()


@pytest.fixture
async def world(store: Store) -> AsyncIterator[World]:
    """An engine over the database, with a clock the test moves."""
    async with opened(store) as found:
        yield found
