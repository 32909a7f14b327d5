"""Fixtures of the dispatcher's tests (a pytest plugin, registered in tests/conftest.py):
a receiver, a black hole, and `start`, which starts dispatchers on the test's `store` and
stops them all at teardown. A module that uses `start` gives `store` a project first
(`seeded_store`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hookstage.dispatcher import Dispatcher
from hookstage.store import Store
from tests.support.delivery import BlackHole, Dispatchers, Receiver, black_holed, receiving

__all__ = ["Start", "black_hole", "receiver", "start"]

Start = Callable[..., Awaitable[Dispatcher]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as found:
        yield found


@pytest.fixture
async def black_hole() -> AsyncIterator[BlackHole]:
    async with black_holed() as hole:
        yield hole


@pytest.fixture
async def start(store: Store) -> AsyncIterator[Start]:
    """Start a dispatcher on the test store (or another); all are stopped at teardown."""
    dispatchers = Dispatchers(store)
    yield dispatchers
    await dispatchers.stop_all()
