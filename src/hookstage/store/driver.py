"""SQLite under the async engine: aiosqlite's connection thread, one trip per statement.

aiosqlite runs each sqlite3 call on the connection's own thread, and SQLAlchemy's adapter
makes four calls of every statement (open a cursor, execute, fetch, close), each a trip to
that thread and back through the event loop. The trips, not SQLite, were most of a step's
cost (measured: an API submit spent ~7 ms of CPU, mostly handing the GIL to and fro). Here a
statement is one trip: the thread executes it, fetches every row, closes the cursor and
hands back rows, description, rowcount and whether a transaction is open; the cursor SQLAlchemy
holds reads them from memory. A rollback with no transaction open (the pool's reset of a
connection coming back after its commit) makes no trip at all.

Statements whose outcome nobody reads (a transaction's BEGIN, an insert whose rows are not
returned) may be deferred: they run on the thread, in order, just before the next statement
or the commit, in the same trip. An error one of them meets is raised by that statement or
commit, inside the same transaction; a transaction that ends before any trip (nothing run,
or a rollback) sends nothing at all, and a ROLLBACK TO SAVEPOINT drops them (issued after
the savepoint's own trip, it would undo them anyway).

Semantics are sqlite3's: the same SQL runs on the same thread in the same order, errors are
sqlite3's own exceptions (SQLAlchemy translates them as it does aiosqlite's).

Outside SQLAlchemy, `Connection.send` queues a function for the thread at once:
`transact_all` runs whole write transactions (statements, their checks, one commit) in one
trip, `snapshot` a whole read (see `Store.write` and `Store.read_once`).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiosqlite

__all__ = ["Connection", "Cursor", "Statement", "connect", "snapshot", "transact_all"]

T = TypeVar("T")

_Description = tuple[tuple[Any, ...], ...] | None


@dataclass(frozen=True)
class _Outcome:
    description: _Description
    rows: list[Any]
    rowcount: int
    lastrowid: int | None
    in_transaction: bool


@dataclass(frozen=True)
class Statement:
    """A statement for the connection's thread; with a list of parameter rows, run once per
    row. ``check`` is called there with the rows it changed, and raises to fail it (and so
    the transaction)."""

    sql: str
    parameters: Any = ()
    check: Callable[[int], None] | None = None

    @property
    def many(self) -> bool:
        return isinstance(self.parameters, list)


def _rows_of(raw: sqlite3.Connection, statement: Statement) -> list[Any]:
    """On the connection's thread: run ``statement``, check it, and give its rows."""
    run = raw.executemany if statement.many else raw.execute
    cursor = run(statement.sql, statement.parameters)
    try:
        rows = cursor.fetchall() if cursor.description else []
        changed = cursor.rowcount
    finally:
        cursor.close()
    if statement.check is not None:
        statement.check(changed)
    return rows


def _run_deferred(raw: sqlite3.Connection, deferred: list[Statement]) -> None:
    for statement in deferred:
        _rows_of(raw, statement)


def transact_all(
    raw: sqlite3.Connection, writes: list[list[Statement]]
) -> list[list[list[Any]] | Exception]:
    """On the connection's thread: each of ``writes`` (one transaction's statements), all in
    one write transaction, committed once; each one's rows, or its error. A write that fails
    is left out and the others run again without it (one rollback, not one transaction
    each): each succeeds or fails as if it had been its own transaction, in order. The
    database failing (locked, full, I/O: an OperationalError) fails every write left."""
    outcomes: dict[int, list[list[Any]] | Exception] = {}
    left = list(range(len(writes)))
    while left:
        try:
            found = _transact(raw, [writes[i] for i in left])
        except _Failed as failed:
            outcomes[left.pop(failed.index)] = failed.error
            continue
        except Exception as exc:
            outcomes.update(dict.fromkeys(left, exc))
            break
        outcomes.update(zip(left, found, strict=True))
        break
    return [outcomes[i] for i in range(len(writes))]


class _Failed(Exception):
    """The write at ``index`` of a group failed with ``error``, its own (see `transact_all`)."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


def _transact(raw: sqlite3.Connection, writes: list[list[Statement]]) -> list[list[list[Any]]]:
    if raw.in_transaction:  # a rollback that failed before: do not write inside its leftovers
        raw.rollback()
    raw.execute("BEGIN IMMEDIATE")
    try:
        found = [_write(raw, index, statements) for index, statements in enumerate(writes)]
        raw.commit()
    except BaseException:
        if raw.in_transaction:
            raw.rollback()
        raise
    return found


def _write(raw: sqlite3.Connection, index: int, statements: list[Statement]) -> list[list[Any]]:
    try:
        return [_rows_of(raw, statement) for statement in statements]
    except sqlite3.OperationalError:
        raise  # the database's, not this write's
    except Exception as exc:
        raise _Failed(index, exc) from exc


def snapshot(raw: sqlite3.Connection, statements: list[Statement]) -> list[list[Any]]:
    """On the connection's thread: the rows of each of ``statements``, read from one
    snapshot (a read transaction, ended before this returns)."""
    raw.execute("BEGIN")
    try:
        return [_rows_of(raw, statement) for statement in statements]
    finally:
        raw.rollback()


def _commit(raw: sqlite3.Connection, deferred: list[Statement]) -> None:
    _run_deferred(raw, deferred)
    raw.commit()


def _run(
    raw: sqlite3.Connection,
    sql: str,
    parameters: Any,
    *,
    many: bool = False,
    deferred: list[Statement] | None = None,
) -> _Outcome:
    """On the connection's thread: the deferred statements, then the whole statement, its
    rows read and its cursor closed."""
    if deferred:
        _run_deferred(raw, deferred)
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


def _each(
    raw: sqlite3.Connection,
    statements: list[tuple[str, Any]],
    *,
    deferred: list[Statement] | None = None,
) -> _Outcome:
    """On the connection's thread: the deferred statements, then each of ``statements``;
    the outcome's rows are a list of each one's rows."""
    if deferred:
        _run_deferred(raw, deferred)
    found: list[Any] = []
    for sql, parameters in statements:
        cursor = raw.execute(sql, parameters)
        try:
            found.append(cursor.fetchall())
        finally:
            cursor.close()
    return _Outcome(None, found, -1, None, raw.in_transaction)


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

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
        # Statements to run before the next one, in the same trip (see the module's docstring).
        self._deferred: list[Statement] = []

    def cursor(self) -> Cursor:  # type: ignore[override]  # no trip: the cursor is in memory
        return Cursor(self)

    def defer(self, statement: Statement) -> None:
        """Run ``statement`` just before the next statement or the commit, in the same trip."""
        self._deferred.append(statement)

    def send(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``function(sqlite3_connection, *args)`` for the connection's thread now (not
        when awaited, as aiosqlite's own calls do): what is sent later runs after it."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._tx.put_nowait((future, functools.partial(function, self._conn, *args)))
        return future

    async def flush(self) -> None:
        """Run the deferred statements now, in one trip."""
        if self._deferred:
            await self.run(_each, [])

    async def fetch_each(self, statements: list[tuple[str, Any]]) -> list[list[Any]]:
        """The rows of each of ``statements`` (sql, parameters), run in order in one trip."""
        return (await self.run(_each, statements)).rows

    def _take_deferred(self) -> list[Statement]:
        deferred, self._deferred = self._deferred, []
        return deferred

    async def run(self, function: Callable[..., _Outcome], *args: Any, **kwargs: Any) -> _Outcome:
        deferred = self._take_deferred()
        if args and isinstance(args[0], str) and args[0].startswith("ROLLBACK TO"):
            deferred = []  # issued after the savepoint's trip: undone without running them
        self._open = None
        call = self._execute(function, self._conn, *args, deferred=deferred, **kwargs)  # type: ignore[no-untyped-call]
        outcome: _Outcome = await call
        self._open = outcome.in_transaction
        return outcome

    async def commit(self) -> None:
        deferred = self._take_deferred()
        if self._open is False and all(_is_begin(d.sql) for d in deferred):
            return  # nothing was run since the last commit: nothing to make durable
        self._open = None
        await self._execute(_commit, self._conn, deferred)  # type: ignore[no-untyped-call]
        self._open = False

    async def rollback(self) -> None:
        self._deferred.clear()  # never run: nothing of them to undo
        if self._open is False:
            return  # nothing to undo: the trip would only cost time
        self._open = None
        await super().rollback()
        self._open = False


def _is_begin(sql: str) -> bool:
    return sql.startswith("BEGIN")


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
