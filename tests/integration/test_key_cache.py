"""API keys are remembered for a moment (every call presents one): what that may and may
not change. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

from hookstage.engine import KEY_CACHE_SECONDS, Engine
from hookstage.store import Store, open_store
from tests.support.engine import World


async def _refused_within(engine: Engine, value: str, seconds: float) -> float:
    """How long until ``engine`` refuses ``value``, polled; fails after ``seconds``."""
    started = time.monotonic()
    while await engine.authenticate(value) is not None:
        assert time.monotonic() - started < seconds, "the revoked key is still accepted"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_key_revoked_here_is_refused_at_once_though_it_was_remembered(
    world: World,
) -> None:
    key, value = await world.engine.create_key("ci@example.com", "labeler")
    assert await world.engine.authenticate(value) == key  # read, and remembered
    await world.engine.revoke_key(key.id)
    assert await world.engine.authenticate(value) is None


async def test_a_key_revoked_by_another_process_is_refused_within_the_cache_time(
    world: World, database: str
) -> None:
    key, value = await world.engine.create_key("ci@example.com", "labeler")
    assert await world.engine.authenticate(value) == key
    other: Store = await open_store(database)
    try:
        await Engine(other).revoke_key(key.id)  # as `hookstage keys revoke` does
    finally:
        await other.close()
    assert (
        await _refused_within(world.engine, value, KEY_CACHE_SECONDS + 2) <= KEY_CACHE_SECONDS + 1
    )


async def test_a_remembered_key_still_expires_on_time(world: World) -> None:
    key, value = await world.engine.create_key(
        "ci@example.com", "read-only", expires_at=world.clock.now + 10
    )
    assert await world.engine.authenticate(value) == key
    world.clock.advance(10)
    assert await world.engine.authenticate(value) is None


async def test_a_key_created_by_another_process_works_at_once(world: World, database: str) -> None:
    assert await world.engine.authenticate("hs_not-yet") is None
    other: Store = await open_store(database)
    try:
        key, value = await Engine(other).create_key("late@example.com", "labeler")
    finally:
        await other.close()
    assert await world.engine.authenticate(value) == key
