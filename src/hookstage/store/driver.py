"""SQLite under the async engine: aiosqlite's connection thread, one trip per statement.

aiosqlite runs each sqlite3 call on the connection's own thread, and SQLAlchemy's adapter
makes four calls of every statement (open a cursor, execute, fetch, close), each a trip to
that thread and back through the event loop. The trips, not SQLite, were most of a step's
cost (measured: an API submit spent ~7 ms of CPU, mostly handing the GIL to and fro). Here a
statement is one trip: the thread executes it, fetches every row, closes the cursor and
hands back rows, description, rowcount and whether a transaction is open; the cursor SQLAlchemy
holds reads them from memory. A rollback with no transaction open (the pool's reset of a
connection coming back after its commit) makes no trip at all.

Semantics are sqlite3's: the same SQL runs on the same thread in the same order, errors are
sqlite3's own exceptions (SQLAlchemy translates them as it does aiosqlite's).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiosqlite

__all__ = ["Connection", "Cursor", "connect"]

_Description = tuple[tuple[Any, ...], ...] | None


@dataclass(frozen=True)
class _Outcome:
    description: _Description
    rows: list[Any]
    rowcount: int
    lastrowid: int | None
    in_transaction: bool


def _run(raw: sqlite3.Connection, sql: str, parameters: Any, *, many: bool = False) -> _Outcome:
    """On the connection's thread: the whole statement, its rows read and its cursor closed."""
    cursor = raw.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return _Outcome(description, rows, cursor.rowcount, cursor.lastrowid, raw.in_transaction)
    finally:
        cursor.close()


class Cursor:
    """What SQLAlchemy's adapter expects of an aiosqlite cursor, over rows already read."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._rows: deque[Any] = deque()
        self.description: _Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> Cursor:
        self._take(await self._connection.run(_run, sql, () if parameters is None else parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> Cursor:
        self._take(await self._connection.run(_run, sql, parameters, many=True))
        return self

    def _take(self, outcome: _Outcome) -> None:
        self.description = outcome.description
        self.rowcount = outcome.rowcount
        self.lastrowid = outcome.lastrowid
        self._rows = deque(outcome.rows)

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = min(len(self._rows), self.arraysize if size is None else size)
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        self._rows.clear()


class Connection(aiosqlite.Connection):
    """aiosqlite's connection with one-trip cursors, knowing whether a transaction is open
    as of its last call (None: unknown, after a failure)."""

    _open: bool | None = None

    def cursor(self) -> Cursor:  # type: ignore[override]  # no trip: the cursor is in memory
        return Cursor(self)

    async def run(self, function: Callable[..., _Outcome], *args: Any, **kwargs: Any) -> _Outcome:
        self._open = None
        call = self._execute(function, self._conn, *args, **kwargs)  # type: ignore[no-untyped-call]
        outcome: _Outcome = await call
        self._open = outcome.in_transaction
        return outcome

    async def commit(self) -> None:
        self._open = None
        await super().commit()
        self._open = False

    async def rollback(self) -> None:
        if self._open is False:
            return  # nothing to undo: the trip would only cost time
        self._open = None
        await super().rollback()
        self._open = False


async def connect(database: str, **kwargs: Any) -> Connection:
    """An open connection to the SQLite file ``database``; ``kwargs`` go to
    ``sqlite3.connect``."""

    def connector() -> sqlite3.Connection:
        raw: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return raw

    connection = Connection(connector, iter_chunk_size=64)
    # As SQLAlchemy does for aiosqlite: a connection the pool never closed must not keep
    # the process from exiting.
    connection._thread.daemon = True
    await connection
    return connection
