"""Storage: one interface over SQLite (the embedded default) and PostgreSQL.

Every use case runs in one transaction (`Store.transaction()`); dialect-specific SQL is kept
in the query modules beside this one, behind plain async functions that take a connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = ["Store", "StoreError", "database_url", "open_store"]


class StoreError(Exception):
    """The database could not be opened, migrated or used."""


def database_url(value: str | Path) -> str:
    """Accept a SQLAlchemy URL or a plain path to a SQLite file."""
    text = str(value)
    if "://" in text:
        url = sa.make_url(text)
        if url.drivername in {"sqlite", "sqlite+pysqlite"}:
            url = url.set(drivername="sqlite+aiosqlite")
        elif url.drivername in {"postgresql", "postgres", "postgresql+psycopg2"}:
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False)
    return f"sqlite+aiosqlite:///{Path(text).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit that returned survives a power cut; the outbox promise depends on it.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    # Let SQLAlchemy's "begin" event emit BEGIN IMMEDIATE instead of pysqlite's deferred one.
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: sa.Connection) -> None:
    # IMMEDIATE takes the write lock up front: two writers wait on busy_timeout instead of
    # failing with "database is locked" when a read transaction tries to upgrade. Reads
    # begin DEFERRED: in WAL mode they never wait for a writer.
    read_only = conn.get_execution_options().get(_READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


_READ_ONLY = "hookstage_read_only"


@dataclass
class Store:
    """An open database. `transaction()` gives one connection inside one transaction that
    may write; `read()` one that only reads (it never waits for writers)."""

    engine: AsyncEngine
    # SQLite has one writer at a time. Queueing writers here, in order, is fair and fast;
    # leaving it to SQLite's busy handler makes them sleep in steps of up to 100 ms.
    _writer: asyncio.Lock | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.dialect == "sqlite":
            self._writer = asyncio.Lock()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_turn(), self._begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._begin(read_only=True) as conn:
            yield conn

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        if self._writer is None:
            yield
        else:
            async with self._writer:
                yield

    @asynccontextmanager
    async def _begin(self, *, read_only: bool = False) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                if read_only:
                    await conn.execution_options(**{_READ_ONLY: True})
                async with conn.begin():
                    yield conn
        except sa.exc.OperationalError as exc:
            raise StoreError(f"database error: {exc.orig}") from exc

    async def migrate(self) -> None:
        from hookstage.store.migration import upgrade

        await upgrade(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()


async def open_store(url: str | Path, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the database at `url`."""
    engine = _create_engine(database_url(url))
    store = Store(engine)
    if migrate:
        await store.migrate()
    return store


def _create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=8, max_overflow=8)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
