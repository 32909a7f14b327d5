"""Storage: one interface over SQLite (the embedded default) and PostgreSQL.

Every use case runs in one transaction: `Store.transaction()`, or, for one whose statements
are known up front (a step's write, a dispatcher's turn), `Store.write` (on SQLite a single
trip to a connection kept for writes). Dialect-specific SQL is kept in the query modules
beside this one, behind plain functions that take a connection or build the statements.

On SQLite one writer at a time holds the database (queued here, in order); on PostgreSQL
writers run at once, at READ COMMITTED, and a change that two of them race for is decided by
the row: an update conditioned on what it read (a version) or a unique key. The loser of a
unique key gets `Duplicate`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hookstage.store import driver
from hookstage.store.driver import Statement

__all__ = [
    "Duplicate",
    "Statement",
    "Store",
    "StoreError",
    "database_url",
    "execute_later",
    "fetch",
    "fetch_each",
    "flush",
    "guard_project",
    "guarding",
    "insert_missing",
    "open_store",
    "read_json",
    "sql_for",
    "write_json",
]


class StoreError(Exception):
    """The database could not be opened, migrated or used."""


class Duplicate(StoreError):
    """A write met a unique key another transaction (committed meanwhile) wrote first;
    nothing of the transaction was kept."""


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


_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # FULL: a commit that returned survives a power cut; the outbox promise depends on it.
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    for pragma in _PRAGMAS:
        cursor.execute(pragma)
    cursor.close()
    # Let SQLAlchemy's "begin" event emit BEGIN IMMEDIATE instead of pysqlite's deferred one.
    dbapi_conn.isolation_level = None


def _prepare(raw: sqlite3.Connection) -> None:
    for pragma in _PRAGMAS:
        raw.execute(pragma).close()
    raw.isolation_level = None  # `driver.transact_all` and `snapshot` begin and end themselves


def _sqlite_begin(conn: sa.Connection) -> None:
    # IMMEDIATE takes the write lock up front: two writers wait on busy_timeout instead of
    # failing with "database is locked" when a read transaction tries to upgrade. Reads
    # begin DEFERRED: in WAL mode they never wait for a writer.
    read_only = conn.get_execution_options().get(_READ_ONLY, False)
    # Sent with the transaction's first statement, in its trip: a BEGIN of its own cost a
    # trip to the database's thread per transaction. An error it meets ("database is
    # locked") is that statement's.
    raw = cast(driver.Connection, conn.connection.driver_connection)  # _create_engine's own
    raw.defer(Statement("BEGIN" if read_only else "BEGIN IMMEDIATE"))


_READ_ONLY = "hookstage_read_only"


@dataclass
class Store:
    """An open database. `transaction()` gives one connection inside one transaction that
    may write; `read()` one that only reads, from one snapshot (it never waits for
    writers)."""

    engine: AsyncEngine
    # SQLite has one writer at a time. Queueing writers here, in order, is fair and fast;
    # leaving it to SQLite's busy handler makes them sleep in steps of up to 100 ms.
    _writer: asyncio.Lock | None = field(default=None, repr=False)
    # SQLite: the connection `write` sends its transactions to, opened at the first; the
    # writes waiting for the trip in flight (they go together in the next); and the last
    # write's outcome (a transaction through `transaction()` waits for it).
    _trips: driver.Connection | None = field(default=None, repr=False)
    _waiting: list[tuple[list[Statement], asyncio.Future[list[list[Any]]]]] = field(
        default_factory=list, repr=False
    )
    _flying: bool = field(default=False, repr=False)
    _sent: asyncio.Future[Any] | None = field(default=None, repr=False)
    # SQLite: the connection `read_once` sends its reads to.
    _reads: driver.Connection | None = field(default=None, repr=False)
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    # The engine with the read options set once (setting them per read cost a round of
    # SQLAlchemy's machinery each time); it shares the engine's pool.
    _reader: AsyncEngine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.dialect == "sqlite":
            self._writer = asyncio.Lock()
        self._reader = self.engine.execution_options(**self._read_options())

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

    async def write(self, statements: list[Statement]) -> list[list[Any]]:
        """Run ``statements`` (see `sql_for`) in one transaction, and give each one's rows.
        A ``check`` that raises fails the transaction with its error, and nothing is kept.

        On SQLite the transaction is one trip to a connection of its own: the writers' turn
        is held only to send it, and the database's thread runs what was sent in order (a
        turn held from the first statement to the commit is held while the event loop,
        busy with other requests, comes back to each step); a caller cancelled once its
        write is queued does not stop it. Writes that come while a trip is under way go in
        the next together, committed once (`driver.transact_all`: each still succeeds or
        fails as if alone). On PostgreSQL it is an ordinary transaction (a cancelled one is
        rolled back)."""
        if self._writer is None:
            return await self._write_each(statements)
        async with self._writer:
            if self._trips is None:  # opened under the writers' turn: once
                self._trips = await self._connect()
            self._sent = own = asyncio.get_running_loop().create_future()
            self._waiting.append((statements, own))
            if not self._flying:
                self._fly()
        return await _outcome(own)

    def _fly(self) -> None:
        """Send every write waiting, as one trip. Measured: a trip's BEGIN and COMMIT each
        waited ~0.5 ms on the busy event loop for the GIL, and SQLite's one writer went no
        faster than its trips; grouped, a busier server makes fewer, fuller trips."""
        group, self._waiting = self._waiting, []
        if self._trips is None:  # closed meanwhile
            _settle(group, [StoreError("the store is closed")] * len(group))
            return
        trip = self._trips.send(driver.transact_all, [statements for statements, _ in group])
        self._flying = True
        trip.add_done_callback(functools.partial(self._landed, group))

    def _landed(
        self,
        group: list[tuple[list[Statement], asyncio.Future[list[list[Any]]]]],
        trip: asyncio.Future[list[list[list[Any]] | Exception]],
    ) -> None:
        self._flying = False
        try:
            failed = None if trip.cancelled() else trip.exception()
            if trip.cancelled() or failed is not None:  # the trip's own: its thread, connection
                _settle(group, [failed or StoreError("the write was cancelled")] * len(group))
            else:
                _settle(group, trip.result())
        finally:  # whatever became of these, the writes waiting behind them go
            if self._waiting:
                self._fly()

    async def read_once(self, statements: list[Statement]) -> list[list[Any]]:
        """The rows of each of ``statements``, short reads from one snapshot. On SQLite one
        trip to a connection of its own (no pool, no transaction object: a step's read cost
        more in them than in SQLite); a long read there would hold up the others."""
        if self._writer is None:
            async with self.read() as conn:
                return await fetch_each(conn, [(s.sql, s.parameters) for s in statements])
        reads = self._reads or await self._open_reads()
        return await _outcome(reads.send(driver.snapshot, statements))

    async def _write_each(self, statements: list[Statement]) -> list[list[Any]]:
        found: list[list[Any]] = []
        async with self.transaction() as conn:
            for statement in statements:
                result = await conn.exec_driver_sql(statement.sql, statement.parameters)
                found.append(list(result.all()) if result.returns_rows else [])
                if statement.check is not None:
                    statement.check(result.rowcount)
        return found

    async def _open_reads(self) -> driver.Connection:
        async with self._opening:  # two first reads at once open one connection
            if self._reads is None:
                self._reads = await self._connect()
        return self._reads

    async def _connect(self) -> driver.Connection:
        try:
            connection = await _sqlite_connection(self.engine)
            try:
                await connection.send(_prepare)
            except BaseException:
                await connection.close()
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database: {exc}") from exc
        return connection

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        if self._writer is None:
            yield
            return
        async with self._writer:
            if self._sent is not None and not self._sent.done():
                # Its connection holds the database until it ends: wait here, not in
                # SQLite's busy handler (its sleeps grow to 100 ms).
                await asyncio.wait([self._sent])
            yield

    def _read_options(self) -> dict[str, Any]:
        if self.dialect != "postgresql":
            return {_READ_ONLY: True}  # WAL: a read transaction is one snapshot already
        # One snapshot for the whole read, as on SQLite (READ COMMITTED takes one per
        # statement); read-only, it never fails for serialization.
        return {
            _READ_ONLY: True,
            "isolation_level": "REPEATABLE READ",
            "postgresql_readonly": True,
        }

    @asynccontextmanager
    async def _begin(self, *, read_only: bool = False) -> AsyncIterator[AsyncConnection]:
        engine = self._reader if read_only else self.engine
        try:
            async with engine.connect() as conn, conn.begin():
                yield conn
        except sa.exc.IntegrityError as exc:
            if _is_duplicate(exc):
                raise Duplicate(f"duplicate key: {exc.orig}") from exc
            raise
        except sa.exc.OperationalError as exc:
            raise StoreError(f"database error: {exc.orig}") from exc

    async def migrate(self) -> None:
        from hookstage.store.migration import upgrade

        try:
            await upgrade(self.engine)
        except (sa.exc.OperationalError, OSError) as exc:
            raise StoreError(f"cannot open the database: {getattr(exc, 'orig', exc)}") from exc

    async def close(self) -> None:
        connections, self._trips, self._reads = (self._trips, self._reads), None, None
        for connection in connections:
            if connection is not None:
                await connection.close()
        await self.engine.dispose()


def _is_duplicate(exc: sa.exc.IntegrityError) -> bool:
    return _is_unique_violation(exc.orig)


def _is_unique_violation(error: object) -> bool:
    sqlstate = getattr(error, "sqlstate", None)  # psycopg
    if sqlstate is not None:
        return bool(sqlstate == "23505")  # unique_violation
    name = getattr(error, "sqlite_errorname", "")
    return name in {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}


def _settle(
    group: list[tuple[list[Statement], asyncio.Future[list[list[Any]]]]],
    outcomes: Sequence[list[list[Any]] | BaseException],
) -> None:
    for (_, own), outcome in zip(group, outcomes, strict=True):
        if own.done():
            continue
        if isinstance(outcome, BaseException):
            own.set_exception(outcome)
        else:
            own.set_result(outcome)


async def _outcome(sent: asyncio.Future[list[list[Any]]]) -> list[list[Any]]:
    """What a trip sent to SQLite's thread gave, its errors as the store's own. A caller
    cancelled meanwhile leaves the trip to finish (it cannot be taken back), its error read
    and dropped rather than logged as never retrieved."""
    sent.add_done_callback(_retrieved)
    try:
        return await asyncio.shield(sent)
    except sqlite3.Error as exc:
        translated = _translated(exc)
        if translated is exc:
            raise
        raise translated from exc


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _translated(exc: sqlite3.Error) -> Exception:
    """As `_begin` translates SQLAlchemy's: a unique key taken is `Duplicate`, the database
    failing (locked, full, unreadable) `StoreError`; any other error (a statement's own
    mistake) stays as it is, a bug to see whole."""
    if _is_unique_violation(exc):
        return Duplicate(f"duplicate key: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        return StoreError(f"database error: {exc}")
    return exc


_JSON_PARAMETER = {"postgresql": "CAST(? AS JSON)"}


@functools.cache
def sql_for(statement: str, dialect: str) -> str:
    """``statement``, written with "?" placeholders and ``{json}`` where a JSON text is bound,
    in the paramstyle of the ``dialect``'s driver."""
    text = statement.replace("{json}", _JSON_PARAMETER.get(dialect, "?"))
    return text.replace("?", "%s") if dialect == "postgresql" else text


def _driver_of(conn: AsyncConnection) -> Any:
    assert conn.sync_connection is not None, "the connection is not in use"
    return conn.sync_connection.connection.driver_connection


async def fetch(conn: AsyncConnection, statement: str, parameters: Any) -> list[Any]:
    """The rows of ``statement`` (see `sql_for`) as the driver gives them (on SQLite, a JSON
    column's text: see `read_json`). On SQLite straight to the driver: SQLAlchemy's execution
    machinery cost more than the statement's trip (measured: ~130 of ~200 us)."""
    [rows] = await fetch_each(conn, [(statement, parameters)])
    return rows


async def fetch_each(conn: AsyncConnection, statements: list[tuple[str, Any]]) -> list[list[Any]]:
    """The rows of each of ``statements`` (sql, parameters; see `fetch`), run in order; on
    SQLite in one trip."""
    raw = _driver_of(conn)
    if not isinstance(raw, driver.Connection):
        return [list((await conn.exec_driver_sql(*statement)).all()) for statement in statements]
    with _as_sqlalchemy(statements[0][0], statements[0][1]):
        return await raw.fetch_each(statements)


async def flush(conn: AsyncConnection) -> None:
    """Run now the writes `execute_later` left waiting for the next trip; their errors are
    raised here (before a savepoint whose failure the caller means to survive, say)."""
    raw = _driver_of(conn)
    if isinstance(raw, driver.Connection):
        with _as_sqlalchemy("(deferred writes)", ()):
            await raw.flush()


@contextmanager
def _as_sqlalchemy(statement: str, parameters: Any) -> Iterator[None]:
    # The driver's errors as SQLAlchemy's own statements raise them: `_begin` turns them into
    # Duplicate and StoreError (a deferred BEGIN IMMEDIATE's "database is locked" included).
    try:
        yield
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, parameters, exc, sqlite3.Error) from exc


async def execute_later(
    conn: AsyncConnection,
    statement: str,
    parameters: Any,
    *,
    check: Callable[[int], None] | None = None,
) -> None:
    """Run ``statement`` (see `sql_for`; with a list of parameter rows, once per row), a
    write whose outcome nobody reads but ``check``, called with the rows it changed (it
    raises to fail the transaction). On SQLite it goes with the transaction's next trip to
    the database's thread (its next statement, or its commit), and an error it meets or
    ``check`` raises is raised there, in the same transaction; on PostgreSQL, or inside a
    savepoint, it runs now."""
    raw = _driver_of(conn)
    # Inside a savepoint, at once: a write deferred past its RELEASE or ROLLBACK TO would
    # fail (or be undone) outside the savepoint the caller meant it for.
    if isinstance(raw, driver.Connection) and not conn.in_nested_transaction():
        raw.defer(Statement(statement, parameters, check))
        return
    result = await conn.exec_driver_sql(statement, parameters)
    if check is not None:
        check(result.rowcount)


def write_json(value: Any) -> str:
    """A JSON column's text for ``value``: orjson's, as a webhook's body carries it (NaN as
    null); json's where orjson refuses the value (a lone surrogate, an integer beyond 64
    bits), which keeps a NaN as NaN."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


# orjson reads an integer beyond 64 bits as a float; such a number has 20 digits or more.
# (psycopg hands the loader bytes, SQLite's columns are text.)
_LONG_NUMBER = re.compile(r"\d{20}")
_LONG_NUMBER_BYTES = re.compile(rb"\d{20}")


def read_json(text: str | bytes) -> Any:
    """A JSON column's value from its text, as SQLAlchemy's JSON type reads it here: with
    orjson, or json where orjson would not read it exactly (NaN, lone surrogates, integers
    beyond 64 bits)."""
    long = _LONG_NUMBER.search(text) if isinstance(text, str) else _LONG_NUMBER_BYTES.search(text)
    if long:
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


async def insert_missing(
    conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]]
) -> None:
    """Insert the rows whose unique keys are not taken yet, and skip the others, without an
    error: on PostgreSQL a concurrent transaction may take a key between a read and this."""
    if not rows:
        return
    insert: Any = (
        postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    )
    await conn.execute(insert.on_conflict_do_nothing(), rows)


# The first key of the advisory lock on a project (any constant); the second is from its id.
_PROJECT_LOCK = 0x68737470  # "hstp", an int4


async def guard_project(conn: AsyncConnection, project_id: str, *, exclusive: bool = False) -> None:
    """Order this transaction against changes of the project's workflow (PostgreSQL; on
    SQLite one writer at a time does it already). Held until commit.

    A step takes it shared before it reads the project, and a workflow update exclusively:
    the update waits for the steps in progress and they wait for it, so no step routes a
    task by a workflow being replaced (into a stage the update is removing). Steps share it:
    they never wait for each other. It is taken in a statement of its own, so the reads
    after it see what a waited-for update committed.
    """
    if conn.sync_connection is None:
        return
    if conn.sync_connection.get_execution_options().get(_READ_ONLY, False):
        return  # a read moves nothing
    for statement in guarding(conn.dialect.name, project_id, exclusive=exclusive):
        await conn.exec_driver_sql(statement.sql, statement.parameters)


def guarding(dialect: str, project_id: str, *, exclusive: bool = False) -> list[Statement]:
    """The statements of `guard_project`, for `Store.write` (none on SQLite)."""
    if dialect != "postgresql":
        return []
    take = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    sql = f"SELECT {take}(CAST(%s AS INTEGER), hashtext(%s))"
    return [Statement(sql, (_PROJECT_LOCK, project_id))]


async def open_store(
    url: str | Path, *, migrate: bool = True, pool_size: int | None = None
) -> Store:
    """Open (and by default migrate) the database at `url`.

    ``pool_size`` bounds the connections this process keeps open, and as many again may be
    opened for a burst (default 10, and 8 on SQLite).
    """
    if pool_size is not None and pool_size < 1:
        raise ValueError(f"pool_size: expected 1 or more, got {pool_size}")
    engine = _create_engine(database_url(url), pool_size)
    store = Store(engine)
    if migrate:
        try:
            await store.migrate()
        except BaseException:
            await engine.dispose()
            raise
    return store


async def _sqlite_connection(engine: AsyncEngine) -> driver.Connection:
    """A new connection to the engine's SQLite file, with the URL's own arguments."""
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    return await driver.connect(str(args[0]), **kwargs)


def _create_engine(url: str, pool_size: int | None) -> AsyncEngine:
    if url.startswith("sqlite"):
        size = pool_size or 8
        engine: AsyncEngine

        async def connect() -> driver.Connection:
            return await _sqlite_connection(engine)

        # The URL's own arguments, through a driver that makes one trip per statement.
        engine = create_async_engine(
            url,
            pool_size=size,
            max_overflow=size,
            async_creator=connect,
            json_serializer=write_json,
            json_deserializer=read_json,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    size = pool_size or 10
    query = sa.make_url(url).query
    return create_async_engine(
        url,
        pool_size=size,
        max_overflow=size,
        pool_pre_ping=True,
        # PostgreSQL's default, said here because the engine's correctness is argued for it:
        # each statement sees what committed before it, and a row another transaction is
        # changing makes the statement wait for it, then re-check its condition.
        isolation_level="READ COMMITTED",
        json_serializer=write_json,
        json_deserializer=read_json,
        connect_args={} if "application_name" in query else {"application_name": "hookstage"},
    )
