"""Alembic environment: always run with the connection hookstage hands over."""

from __future__ import annotations

from alembic import context

from hookstage.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached when someone runs alembic by hand
    raise RuntimeError("run migrations with `hookstage migrate`")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
