"""Moving to PostgreSQL at a terminal: `hookstage copy --from FILE --to URL`, and a
`hookstage worker` pointed at a database it cannot reach."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from hookstage.store import open_store
from tests.support.engine import assets, labeled, opened
from tests.support.process import run_cli


async def _installation(path: Path) -> None:
    """A SQLite installation that has worked a little: tasks, a delivery, a key."""
    store = await open_store(path)
    try:
        async with opened(store) as world:
            project = await world.project()
            first, *_ = await world.imported(project.id, assets(3))
            await world.engine.submit(first, labeled(1), user="ann@example.com")
            await world.engine.create_key("ops@example.com", "admin")
    finally:
        await store.close()


async def test_copy_moves_a_sqlite_installation_into_an_empty_postgresql_database(
    tmp_path: Path, postgres_database: str
) -> None:
    path = tmp_path / "hookstage.sqlite"
    await _installation(path)
    # The test server trusts every local connection: a password in the URL is only shown.
    target = sa.make_url(postgres_database).set(password="s3cret-pw").render_as_string(False)

    done = await asyncio.to_thread(run_cli, "copy", "--from", str(path), "--to", target)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 tasks" in done.stdout
    assert "1 deliveries" in done.stdout
    assert "s3cret-pw" not in done.stdout + done.stderr

    listed = await asyncio.to_thread(run_cli, "keys", "list", "--db", target)
    assert listed.returncode == 0, listed.stderr
    assert "ops@example.com" in listed.stdout

    again = await asyncio.to_thread(run_cli, "copy", "--from", str(path), "--to", target)
    assert again.returncode == 1
    assert "not empty" in again.stderr


async def test_copy_from_a_file_that_is_not_there_is_refused(
    tmp_path: Path, postgres_database: str
) -> None:
    missing = tmp_path / "typo.sqlite"
    done = await asyncio.to_thread(
        run_cli, "copy", "--from", str(missing), "--to", postgres_database
    )
    assert done.returncode == 2
    assert "no SQLite database" in done.stderr
    assert not missing.exists()


def test_a_worker_that_cannot_reach_its_database_says_so_without_the_password() -> None:
    done = run_cli("worker", "--db", "postgresql://hookstage:s3cret-pw@127.0.0.1:1/hookstage")
    assert done.returncode == 1
    assert "cannot open the database" in done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr
