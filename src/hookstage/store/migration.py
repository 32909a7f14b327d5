"""Schema migrations (Alembic), run on start and by `hookstage migrate`."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["alembic_config", "upgrade"]

_HERE = Path(__file__).parent

# Alembic tells of every plugin and context at INFO, on every start of every process: noise
# in a server's log. Its warnings and errors still show.
logging.getLogger("alembic").setLevel(logging.WARNING)


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE / "migrations"))
    config.attributes["connection"] = connection
    return config


# Any constant: it names the lock every hookstage process takes to migrate one database.
_MIGRATION_LOCK = 0x686F6F6B  # "hook"


def _upgrade(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Processes starting at once on a new database migrate one after the other (the
        # next finds the schema there); released at commit. SQLite's BEGIN IMMEDIATE does
        # the same there.
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the newest schema; a no-op when it is there already."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
