"""Waking workers in other processes: PostgreSQL's LISTEN/NOTIFY.

A transaction that makes deliveries due calls ``announce(conn)``: on PostgreSQL that queues a
NOTIFY which the server sends when, and only if, the transaction commits (one per
transaction however often it is called). ``listen`` runs in every process with a
dispatcher and wakes it on each. Notifications are hints, not the queue: the dispatcher
still polls, so one lost while the listener reconnects only delays a delivery by a poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hookstage.store import Statement, database_url

if TYPE_CHECKING:
    import psycopg

__all__ = ["CHANNEL", "LISTENER_NAME", "announce", "announcing", "listen"]

log = logging.getLogger(__name__)

CHANNEL = "hookstage_deliveries"
LISTENER_NAME = "hookstage-listen"
_NOTIFY = f"NOTIFY {CHANNEL}"


async def announce(conn: AsyncConnection) -> None:
    """Tell every listening process, at commit, that deliveries are due (PostgreSQL only:
    on SQLite the dispatcher shares the process, or polls)."""
    for statement in announcing(conn.dialect.name):
        await conn.exec_driver_sql(statement.sql)


def announcing(dialect: str) -> list[Statement]:
    """The statements of `announce`, for `Store.write`."""
    return [Statement(_NOTIFY)] if dialect == "postgresql" else []


async def listen(
    url: str,
    wake: Callable[[], None],
    *,
    gap_seconds: float = 0.05,
    idle_seconds: float = 30.0,
    backoff_seconds: tuple[float, float] = (0.5, 30.0),
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Call ``wake()`` on notifications from the PostgreSQL database at ``url``, until
    cancelled: at once after a quiet spell, then at most once per ``gap_seconds``.

    Every worker hears every commit that enqueues, and all but one of them find nothing
    to claim: under a stream of commits, one wake per gap lets each claim several at a turn
    (three workers woken per commit spent most of their CPU on empty claims). A
    notification within the gap is not lost: its wake comes when the gap ends.

    A lost connection is opened again after a growing pause (``backoff_seconds``: first and
    longest), and ``wake()`` is called once on every (re)connection for what was announced
    while nobody listened. A connection quiet for ``idle_seconds`` is checked with a query,
    so a dead one is noticed. ``on_listening`` is called each time LISTEN is in place.
    """
    import psycopg  # here: SQLite installations never load it

    conninfo = _conninfo(url)
    first, longest = backoff_seconds
    pause = first
    spaced = _Spaced(wake, gap_seconds)
    try:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    pause = first
                    if on_listening is not None:
                        on_listening()
                    spaced()
                    await _relay(conn, spaced, idle_seconds)
            except (psycopg.Error, OSError) as exc:
                # A connection error's message names the host, never the password.
                log.warning("listening for deliveries failed (%s); again in %.1f s", exc, pause)
            await asyncio.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, longest)
    finally:
        spaced.cancel()


class _Spaced:
    """Calls ``wake`` at most once per ``gap`` seconds; a call inside a gap is made once,
    when the gap ends."""

    def __init__(self, wake: Callable[[], None], gap: float) -> None:
        self._wake = wake
        self._gap = gap
        self._last = -gap
        self._later: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        if self._later is not None:
            return  # a wake is already coming
        loop = asyncio.get_running_loop()
        wait = self._last + self._gap - loop.time()
        if wait <= 0:
            self._fire()
        else:
            self._later = loop.call_later(wait, self._fire)

    def _fire(self) -> None:
        self._later = None
        self._last = asyncio.get_running_loop().time()
        self._wake()

    def cancel(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None


async def _relay(conn: psycopg.AsyncConnection, wake: Callable[[], None], idle: float) -> None:
    while True:
        async for _ in conn.notifies(timeout=idle):
            wake()
        await conn.execute("SELECT 1")


def _conninfo(url: str) -> str:
    """libpq's form of a SQLAlchemy URL (``postgresql+psycopg://`` and the like)."""
    parsed = sa.make_url(database_url(url))
    if parsed.get_backend_name() != "postgresql":
        raise ValueError("url: LISTEN/NOTIFY needs a postgresql:// database URL")
    if "application_name" not in parsed.query:
        # Named, so that pg_stat_activity tells the listeners from the pools' connections.
        parsed = parsed.update_query_dict({"application_name": LISTENER_NAME})
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
