"""A real PostgreSQL for the tests (and the benchmarks): one server, a fresh database per test.

The server comes from the machine's own binaries where they are (`pg_ctl` on PATH, or
Debian's /usr/lib/postgresql/N/bin), else from the `pgserver` package, which bundles one
(``HOOKSTAGE_TEST_POSTGRES=pgserver`` forces that). It lives in a temporary directory, on a
free port of 127.0.0.1, as the `postgres` user when the tests run as root (PostgreSQL
refuses to run as root). Unless ``durable``, fsync is off: test data need not survive a
power cut.

Each test's database is a copy of a template migrated once (``CREATE DATABASE ... TEMPLATE``),
which takes a few milliseconds instead of a migration's hundreds.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import sqlalchemy as sa
from alembic import command

from hookstage.store.migration import alembic_config

__all__ = ["TEMPLATE", "Postgres", "running", "server_binaries"]

TEMPLATE = "hookstage_template"
_USER = "hookstage"
_SERVER_USER = "postgres"  # the system user PostgreSQL runs as when we are root
_FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "autovacuum=off")


class Postgres:
    """A running server: databases to create and drop, and the URL of each."""

    def __init__(self, base: sa.URL, stop: Callable[[], None]) -> None:
        self._base = base
        self._stop = stop
        self._numbers = itertools.count(1)
        self._admin = psycopg.connect(self._conninfo("postgres"), autocommit=True)
        self._template_ready = False
        # The next test's database is made while this one runs (a copy mostly waits for
        # the disk), on a connection of its own.
        self._maker = concurrent.futures.ThreadPoolExecutor(1, "hookstage-pg-fresh")
        self._next: concurrent.futures.Future[str] | None = None
        version = self._admin.info.server_version
        # FILE_COPY copies the template's files (fast for a small one); WAL_LOG (15's
        # default) writes every page to the WAL.
        self._strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""

    @property
    def version(self) -> int:
        return int(self._admin.info.server_version)

    def url(self, database: str) -> str:
        """`postgresql://...` for SQLAlchemy (and `hookstage --db`)."""
        return self._base.set(database=database).render_as_string(hide_password=False)

    def fresh(self) -> str:
        """A new database with the current schema (from the template): its URL."""
        if not self._template_ready:
            self._make_template()
        name = self._next.result() if self._next is not None else self._copy_template()
        self._next = self._maker.submit(self._copy_template)
        return self.url(name)

    def _copy_template(self) -> str:
        name = f"t_{next(self._numbers)}"
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}{self._strategy}")
        return name

    def empty(self) -> str:
        """A new database with no tables at all: its URL."""
        name = f"e_{next(self._numbers)}"
        self._admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a database made here, closing whatever connections were left open on it."""
        name = sa.make_url(url).database or ""
        if not re.fullmatch(r"[te]_\d+", name):
            raise ValueError(f"not a database made here: {name!r}")
        self._admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        self._maker.shutdown(wait=True)
        with contextlib.suppress(psycopg.Error):
            self._admin.close()
        self._stop()

    def _make_template(self) -> None:
        self._admin.execute(f"CREATE DATABASE {TEMPLATE}")
        engine = sa.create_engine(self.url(TEMPLATE), poolclass=sa.NullPool)
        try:
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "head")
        finally:
            engine.dispose()
        self._template_ready = True

    def _conninfo(self, database: str) -> str:
        return self._base.set(drivername="postgresql", database=database).render_as_string(
            hide_password=False
        )


@contextlib.contextmanager
def running(*, durable: bool = False) -> Iterator[Postgres]:
    """Start a server, yield it, stop it and delete its files."""
    binaries = server_binaries()
    server = _start_own(binaries, durable) if binaries else _start_pgserver(durable)
    try:
        yield server
    finally:
        server.stop()


def server_binaries() -> Path | None:
    """The directory of the machine's `pg_ctl` and `initdb`, if it has them and can run them."""
    if os.environ.get("HOOKSTAGE_TEST_POSTGRES") == "pgserver":
        return None
    if os.geteuid() == 0 and not _user_exists(_SERVER_USER):
        return None  # nobody to run them as: pgserver makes a user of its own
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb", path=str(Path(found).parent)):
        return Path(found).parent
    debian = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin") if p.is_dir()]
    usable = [d for d in debian if (d / "pg_ctl").exists() and (d / "initdb").exists()]
    return max(usable, key=lambda d: int(d.parent.name), default=None)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", _SERVER_USER, "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str]) -> None:
    done = subprocess.run(_as_server_user(args), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _start_own(binaries: Path, durable: bool) -> Postgres:
    root = Path(tempfile.mkdtemp(prefix="hookstage-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam(_SERVER_USER)
        os.chown(root, account.pw_uid, account.pw_gid)
    data = root / "data"
    try:
        _run(
            [str(binaries / "initdb"), "-D", str(data), "-U", _USER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"]
        )  # fmt: skip
        port = _start_server(binaries, root, durable)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise

    def stop() -> None:
        with contextlib.suppress(RuntimeError):
            _run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)

    base = sa.make_url(f"postgresql://{_USER}@127.0.0.1:{port}/postgres")
    return Postgres(base, stop)


def _start_server(binaries: Path, root: Path, durable: bool) -> int:
    settings = ["listen_addresses=127.0.0.1", "max_connections=400", *([] if durable else _FAST)]
    # A free port can be taken between asking for it and binding it: try another.
    for attempt in range(3):
        port = _free_port()
        options = " ".join([f"-p {port}", f"-k {root}", *(f"-c {s}" for s in settings)])
        args = [str(binaries / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log")]
        try:
            _run([*args, "-w", "-t", "60", "-o", options, "start"])
        except RuntimeError:
            if attempt == 2:
                raise RuntimeError((root / "log").read_text(errors="replace")) from None
            continue
        return port
    raise AssertionError("unreachable")


def _start_pgserver(durable: bool) -> Postgres:
    from pgserver.postgres_server import get_server

    root = Path(tempfile.mkdtemp(prefix="hookstage-pgserver-"))
    server = get_server(root, cleanup_mode="delete")
    if not durable:
        for setting in _FAST:
            name, value = setting.split("=")
            server.psql(f"ALTER SYSTEM SET {name} = {value};")
        server.psql("SELECT pg_reload_conf();")
    base = sa.make_url(server.get_uri())

    def stop() -> None:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    return Postgres(base, stop)
