"""The command line: thin over the modules that do the work."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hookstage import __version__

if TYPE_CHECKING:
    from hookstage.client import Client

__all__ = ["app", "main", "parse_lifetime"]

T = TypeVar("T")

app = typer.Typer(
    help="hookstage: the Ango Hub compatible Webhook stage, and the tools for its receiving end.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

console = Console()
errors = Console(stderr=True)

DEFAULT_DB = "hookstage.sqlite"
DEFAULT_URL = "http://127.0.0.1:8080"
DatabaseOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="HOOKSTAGE_DATABASE_URL",
        help="Database URL (sqlite+aiosqlite:///..., postgresql://...) or a SQLite file path.",
    ),
]
PoolOption = Annotated[
    int | None,
    typer.Option(
        envvar="HOOKSTAGE_DB_POOL_SIZE",
        min=1,
        help="Database connections this process keeps open, and as many again for a burst"
        " (default: 10 for serve, 4 for worker).",
    ),
]
UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="HOOKSTAGE_URL", help="Base URL of a running `hookstage serve`."),
]
KeyOption = Annotated[
    str,
    typer.Option("--key", envvar="HOOKSTAGE_KEY", help="API key (from `hookstage keys create`)."),
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run the async core on uvloop where available.

    Ctrl-C and SIGTERM cancel it, so its clean-up runs (a receiver writes what it holds, a
    dispatcher releases its leases) before the process ends.
    """
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_stoppable(coro))


async def _stoppable(coro: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await coro
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_until_stopped(coro: Coroutine[Any, Any, None]) -> None:
    """`run` for commands that serve until stopped: a stop is their normal end."""
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        run(coro)


def fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def version_callback(value: bool) -> None:
    if value:
        console.print(f"hookstage {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = False,
) -> None:
    """hookstage: the Ango Hub compatible Webhook stage."""


# -- the receiving side -----------------------------------------------------------------------


@app.command()
def listen(
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one).")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    path: Annotated[str, typer.Option(help="Path webhooks are posted to.")] = "/hook",
    secret: Annotated[
        str | None,
        typer.Option(envvar="HOOKSTAGE_LISTEN_SECRET", help="Secret to verify signatures with."),
    ] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token to expect.")] = None,
    scheme: Annotated[
        str, typer.Option(help="auto | hub | hub-256 | standard | bearer | none")
    ] = "auto",
    accept_invalid: Annotated[
        bool, typer.Option(help="Log bad signatures but answer 200, as the seed's sample does.")
    ] = False,
    body: Annotated[bool, typer.Option("--body", help="Print each JSON body.")] = False,
    quiet: Annotated[bool, typer.Option(help="Print nothing per request.")] = False,
    store: Annotated[
        Path | None, typer.Option(help="SQLite file that keeps every request.")
    ] = None,
    fail_rate: Annotated[float, typer.Option(help="Answer 500 to this fraction.")] = 0.0,
    status: Annotated[int, typer.Option(help="Status to answer valid requests with.")] = 200,
    delay: Annotated[float, typer.Option(help="Seconds to wait before answering.")] = 0.0,
    tolerance: Annotated[
        float, typer.Option(help="Standard Webhooks timestamp tolerance, seconds.")
    ] = 300.0,
    seed: Annotated[int | None, typer.Option(help="Seed for --fail-rate.")] = None,
) -> None:
    """Receive webhooks: verify each signature, show it, keep it (the seed's sample, done well)."""
    from hookstage import receiver

    try:
        config = receiver.ReceiverConfig(
            host=host,
            port=port,
            path=path,
            secret=secret,
            token=token,
            scheme=scheme,
            accept_invalid=accept_invalid,
            show_body=body,
            quiet=quiet,
            store=store,
            fail_rate=fail_rate,
            status=status,
            delay=delay,
            tolerance=tolerance,
            seed=seed,
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from exc

    def ready(url: str) -> None:
        console.print(
            f"listening on [bold]{url}{path}[/]   inspector: {url}/",
            highlight=False,
            soft_wrap=True,
        )

    try:
        run_until_stopped(receiver.serve(config, on_ready=ready))
    except receiver.ReceiverError as exc:
        raise fail(str(exc)) from exc


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="The raw body, exactly as received ('-': stdin).")],
    secret: Annotated[
        str,
        typer.Option(envvar="HOOKSTAGE_VERIFY_SECRET", help="The secret (or bearer token)."),
    ],
    header: Annotated[
        list[str], typer.Option("--header", "-H", help="A header as 'Name: value' (repeat).")
    ],
    scheme: Annotated[str, typer.Option(help="auto | hub | hub-256 | standard | bearer")] = "auto",
    tolerance: Annotated[float, typer.Option(help="Timestamp tolerance, seconds.")] = 300.0,
) -> None:
    """Check a signature, and say why it does not match when it does not."""
    from hookstage import diagnosis

    raw = sys.stdin.buffer.read() if str(file) == "-" else _read(file)
    try:
        headers = dict(diagnosis.parse_header_line(line) for line in header)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    result = diagnosis.diagnose(raw, headers, secret, scheme=scheme, tolerance=tolerance)
    verdict = "[bold green]valid[/]" if result.ok else "[bold red]invalid[/]"
    console.print(f"{verdict} ({result.scheme or 'no scheme'})", highlight=False)
    for finding in result.findings:
        console.print(f"  - {finding}", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}", 2) from exc


# -- the server -------------------------------------------------------------------------------


@app.command()
def serve(
    db: DatabaseOption = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8080,
    dispatch: Annotated[
        bool, typer.Option(help="Run the delivery dispatcher in this process.")
    ] = True,
    allow_egress: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-egress",
            help="Let webhooks reach these non-public addresses: a CIDR (10.0.0.0/8, ::1) or"
            " loopback, private, link-local, unique-local, shared. Repeat it. Default: the"
            " HOOKSTAGE_ALLOW_EGRESS variable (comma separated), else public addresses only.",
        ),
    ] = None,
    max_body: Annotated[
        int | None,
        typer.Option(
            envvar="HOOKSTAGE_MAX_BODY", min=1, help="Largest request body, bytes (10 MiB)."
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            envvar="HOOKSTAGE_LOG_FORMAT",
            help="Logs on stderr as text, or json (one object per line, with delivery ids).",
        ),
    ] = "text",
    log_level: Annotated[
        str, typer.Option(envvar="HOOKSTAGE_LOG_LEVEL", help="debug | info | warning | error.")
    ] = "info",
    pool_size: PoolOption = None,
) -> None:
    """Run the HTTP API (and, by default, the delivery dispatcher).

    Stage secrets are sealed at rest with HOOKSTAGE_SECRET_KEY when it is set (see
    `hookstage secret-key`).
    """
    from hookstage import service
    from hookstage.api.limits import MAX_BODY

    _configure_logs(log_format, log_level)

    def ready(url: str) -> None:
        console.print(
            f"hookstage {__version__} serving on [bold]{url}[/] (API docs: {url}/docs)",
            soft_wrap=True,
        )

    config = service.ServiceConfig(
        database=db,
        host=host,
        port=port,
        dispatch=dispatch,
        allow_egress=_allowed_egress(allow_egress),
        secret_key=_secret_key(),
        max_body=max_body or MAX_BODY,
        pool_size=pool_size,
    )
    try:
        run_until_stopped(service.serve(config, on_ready=ready))
    except (service.ServiceError, ValueError) as exc:
        raise fail(str(exc), 2) from exc


def _configure_logs(log_format: str, log_level: str) -> None:
    from hookstage import logs

    try:
        logs.configure(log_format, log_level)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc


def _allowed_egress(given: list[str] | None) -> tuple[str, ...]:
    """The options when given, else the environment's list; checked before anything starts."""
    from hookstage import egress

    values = tuple(given) if given else (os.environ.get(egress.ALLOW_ENV, ""),)
    try:
        egress.parse_allow(values)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    return values


@app.command()
def worker(
    db: DatabaseOption = DEFAULT_DB,
    concurrency: Annotated[
        int, typer.Option(min=1, max=10_000, help="Webhook requests in flight at most.")
    ] = 256,
    lease: Annotated[
        float,
        typer.Option(
            min=5,
            help="Seconds a claimed delivery stays this worker's before another may send it"
            " (keep it above the longest stage timeout).",
        ),
    ] = 60.0,
    pool_size: PoolOption = None,
    allow_egress: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-egress",
            help="Non-public addresses webhooks may reach, as for serve (default: the"
            " HOOKSTAGE_ALLOW_EGRESS variable, else public addresses only).",
        ),
    ] = None,
    log_format: Annotated[
        str, typer.Option(envvar="HOOKSTAGE_LOG_FORMAT", help="Logs on stderr: text or json.")
    ] = "text",
    log_level: Annotated[
        str, typer.Option(envvar="HOOKSTAGE_LOG_LEVEL", help="debug | info | warning | error.")
    ] = "info",
) -> None:
    """Deliver webhooks, with no API: run as many as needed, on any machines, on one database.

    Give every worker the same --db and HOOKSTAGE_SECRET_KEY as serve. SIGTERM stops it:
    requests in flight finish, the deliveries it claimed go back to the others.
    """
    from hookstage import service
    from hookstage.store import StoreError

    _configure_logs(log_format, log_level)

    def ready(worker_id: str) -> None:
        console.print(
            f"hookstage {__version__} worker {worker_id} delivering from {_shown_db(db)}",
            soft_wrap=True,
            highlight=False,
        )

    config = service.ServiceConfig(
        database=db,
        allow_egress=_allowed_egress(allow_egress),
        secret_key=_secret_key(),
        lease_seconds=lease,
        concurrency=concurrency,
        pool_size=pool_size or 4,
    )
    try:
        run_until_stopped(service.work(config, on_ready=ready))
    except (service.ServiceError, ValueError) as exc:
        raise fail(str(exc), 2) from exc
    except StoreError as exc:
        raise fail(str(exc)) from exc


def _shown_db(db: str) -> str:
    """The database URL without its password."""
    import sqlalchemy as sa

    from hookstage.store import database_url

    return sa.make_url(database_url(db)).render_as_string(hide_password=True)


def _secret_key() -> str | None:
    """HOOKSTAGE_SECRET_KEY, checked before anything starts."""
    from hookstage.cipher import KEY_ENV, Cipher, CipherError

    setting = os.environ.get(KEY_ENV) or None
    if setting is not None:
        try:
            Cipher.from_setting(setting)
        except CipherError as exc:
            raise fail(str(exc), 2) from exc
    return setting


@app.command("secret-key")
def secret_key() -> None:
    """Print a new key for HOOKSTAGE_SECRET_KEY, which seals stage secrets at rest."""
    from hookstage.cipher import new_key

    console.print(new_key(), highlight=False, soft_wrap=True)
    errors.print(
        "set it as HOOKSTAGE_SECRET_KEY for every serve and worker; keep it out of the database"
        " and its backups (to replace a key: HOOKSTAGE_SECRET_KEY=NEW,OLD until serve re-seals)"
    )


@app.command()
def migrate(db: DatabaseOption = DEFAULT_DB) -> None:
    """Bring the database schema up to date (serve does this on start too)."""
    from hookstage.store import open_store

    async def go() -> None:
        store = await open_store(db)
        await store.close()

    run(go())
    console.print("database is up to date")


@app.command("copy")
def copy_db(
    source: Annotated[
        str, typer.Option("--from", help="The database to copy: a SQLite file or a URL.")
    ],
    target: Annotated[
        str, typer.Option("--to", help="A new, empty database to copy into (postgresql://...).")
    ],
) -> None:
    """Copy an installation into another database: how a SQLite one moves to PostgreSQL.

    Stop every serve and worker on the source first. The target gets the schema, must hold
    no rows, and receives everything in one transaction; the row counts are checked before
    it commits.
    """
    import sqlalchemy as sa

    from hookstage.store import StoreError, database_url

    url = sa.make_url(database_url(source))
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        # Opening it would make a new, empty database, and copy nothing from it.
        raise fail(f"--from: no SQLite database at {url.database}", 2)
    try:
        copied = run(_copy(source, target))
    except StoreError as exc:
        raise fail(str(exc)) from exc
    rows = ", ".join(f"{n} {table}" for table, n in copied.items() if n)
    console.print(
        f"copied {sum(copied.values())} rows ({rows or 'none'}) to {_shown_db(target)}",
        soft_wrap=True,
        highlight=False,
    )


async def _copy(source: str, target: str) -> dict[str, int]:
    from hookstage.store import open_store
    from hookstage.store.transfer import copy_database

    origin = await open_store(source)
    try:
        destination = await open_store(target)
        try:
            with _bar() as bar:
                jobs: dict[str, Any] = {}

                def progress(table: str, done: int, total: int) -> None:
                    if table not in jobs:
                        jobs[table] = bar.add_task(table, total=total)
                    bar.update(jobs[table], completed=done)

                return await copy_database(origin, destination, progress=progress)
        finally:
            await destination.close()
    finally:
        await origin.close()


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    role: Annotated[str, typer.Option(help="admin | manager | labeler | read-only")] = "admin",
    expires: Annotated[
        str | None,
        typer.Option(help="Lifetime, such as 90m, 12h, 30d or 4w (default: no expiry)."),
    ] = None,
    db: DatabaseOption = DEFAULT_DB,
) -> None:
    """Create an API key; its value is printed this once."""
    import time

    from hookstage.engine import EngineError

    try:
        lifetime = None if expires is None else parse_lifetime(expires)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc

    async def go() -> str:
        async with _engine(db) as engine:
            expires_at = None if lifetime is None else time.time() + lifetime
            _, value = await engine.create_key(name, role, expires_at=expires_at)
            return str(value)

    try:
        value = run(go())
    except EngineError as exc:
        raise fail(exc.message, 2) from exc
    console.print(value, highlight=False, soft_wrap=True)
    errors.print("store it now: it cannot be shown again")


@keys_app.command("list")
def keys_list(db: DatabaseOption = DEFAULT_DB) -> None:
    """List API keys (never their values)."""

    async def go() -> list[Any]:
        async with _engine(db) as engine:
            return list(await engine.list_keys())

    import time

    now = time.time()
    table = Table("id", "name", "role", "created", "expires", "state")
    for key in run(go()):
        state = "active"
        if key.revoked_at:
            state = "revoked"
        elif key.expires_at is not None and key.expires_at <= now:
            state = "expired"
        expiry = "-" if key.expires_at is None else _when(key.expires_at)
        table.add_row(key.id, key.name, key.role, _when(key.created_at), expiry, state)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, db: DatabaseOption = DEFAULT_DB) -> None:
    """Revoke an API key at once."""
    from hookstage.engine import EngineError

    async def go() -> None:
        async with _engine(db) as engine:
            await engine.revoke_key(key_id)

    try:
        run(go())
    except EngineError as exc:
        raise fail(exc.message) from exc
    console.print(f"revoked {key_id}")


@contextlib.asynccontextmanager
async def _engine(db: str) -> Any:
    from hookstage.engine import Engine
    from hookstage.store import StoreError, open_store

    try:
        store = await open_store(db)
    except StoreError as exc:
        raise fail(str(exc)) from exc
    try:
        yield Engine(store)
    finally:
        await store.close()


_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_lifetime(text: str) -> float:
    """Seconds from a lifetime such as 90m, 12h, 30d or 4w; ValueError naming the option."""
    value = text.strip().lower()
    number, unit = value[:-1], value[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) < 1:
        raise ValueError(
            f"--expires: expected a number and a unit (m, h, d, w) such as 30d, got {text!r}"
        )
    return int(number) * _UNITS[unit]


def _when(epoch: float) -> str:
    from hookstage.engine import timestamp

    return timestamp(epoch)


# -- at a terminal, against a running server ---------------------------------------------------

ProjectOption = Annotated[str, typer.Option("--project", "-p", help="Project id.")]


def _call(work: Callable[[Client], Coroutine[Any, Any, T]], url: str, key: str) -> T:
    """Run `work` with an API client; a refusal or an unreachable server ends the command."""
    from hookstage.client import ApiError, Client

    async def go() -> T:
        async with Client(url, key) as api:
            return await work(api)

    try:
        return run(go())
    except ApiError as exc:
        raise fail(str(exc)) from exc


@app.command("projects")
def projects_list(url: UrlOption = DEFAULT_URL, key: KeyOption = "") -> None:
    """List projects."""
    found = _call(lambda api: api.call("GET", "/api/projects"), url, key)
    table = Table("id", "name", "created")
    for project in found["projects"]:
        table.add_row(project["id"], project["name"], project["createdAt"])
    console.print(table)


@app.command("create-project")
def create_project(
    name: Annotated[str, typer.Argument(help="The project's name.")],
    schema: Annotated[Path, typer.Option(help="Category schema JSON file.")],
    workflow: Annotated[Path, typer.Option(help="Workflow JSON file (a list of stages).")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = "",
) -> None:
    """Create a project from a category schema and a workflow."""
    body = (_json_file(schema), _json_file(workflow))
    made = _call(lambda api: api.create_project(name, *body), url, key)
    console.print(made["id"], highlight=False)


@app.command("import")
def import_assets(
    file: Annotated[Path, typer.Argument(help="Assets: a JSON list or NDJSON.")],
    project: ProjectOption,
    skip_existing: Annotated[
        bool, typer.Option(help="Import only assets not imported before (safe to repeat).")
    ] = False,
    chunk: Annotated[int, typer.Option(min=1, max=10_000, help="Assets per request.")] = 500,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = "",
) -> None:
    """Import assets: each gets a task at Start."""
    assets = _assets_file(file)

    async def work(api: Client) -> tuple[int, int]:
        created = skipped = 0
        with _bar() as bar:
            job = bar.add_task("importing", total=len(assets))
            for start in range(0, len(assets), chunk):
                part = assets[start : start + chunk]
                done = await api.import_assets(project, part, skip_existing=skip_existing)
                created += done["created"]
                skipped += len(done["skipped"])
                bar.advance(job, len(part))
        return created, skipped

    created, skipped = _call(work, url, key)
    console.print(f"imported {created} assets, skipped {skipped} already there")


@app.command("export")
def export(
    project: ProjectOption,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: stdout).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="ndjson | json")] = "ndjson",
    stage: Annotated[str | None, typer.Option(help="Only tasks in this stage.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only tasks in this batch.")] = None,
    updated_since: Annotated[
        str | None, typer.Option(help="Only tasks updated at or after this ISO-8601 time.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = "",
) -> None:
    """Export tasks in Ango's export format."""
    if fmt not in {"ndjson", "json"}:
        raise fail("--format: expected ndjson or json", 2)
    filters = {"stage": stage, "batch": batch, "updatedSince": updated_since}
    params = {"format": "ndjson", **{k: v for k, v in filters.items() if v is not None}}
    sink = sys.stdout.buffer if output is None else output.open("wb")

    async def work(api: Client) -> int:
        count = 0
        with _bar(transient=output is None) as bar:
            job = bar.add_task("exporting", total=None)
            sink.write(b"[" if fmt == "json" else b"")
            async for line in api.lines(f"/api/projects/{project}/export", params=params):
                separator = (b"," if count else b"") if fmt == "json" else b""
                sink.write(separator + line + (b"" if fmt == "json" else b"\n"))
                count += 1
                bar.advance(job)
            sink.write(b"]\n" if fmt == "json" else b"")
        return count

    try:
        count = _call(work, url, key)
    finally:
        if output is not None:
            sink.close()
    errors.print(f"exported {count} tasks")


@app.command("task")
def show_task(
    task_id: Annotated[str, typer.Argument(help="Task id.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = "",
) -> None:
    """Show a task: where it is, its annotations and history, its deliveries."""

    async def work(api: Client) -> tuple[Any, Any]:
        task = await api.call("GET", f"/api/tasks/{task_id}")
        sent = await api.call(
            "GET", f"/api/projects/{task['projectId']}/deliveries", params={"task": task_id}
        )
        return task, sent

    task, sent = _call(work, url, key)
    stage = task["currentStage"]
    console.print(
        f"[bold]{task['externalId']}[/] task {task['task']['taskId']}"
        f" in [bold]{stage['name']}[/] ({stage['type']}) since {stage['enteredAt']}",
        highlight=False,
    )
    console.print_json(data=task["task"])
    _deliveries_table(sent["deliveries"])


@app.command("deliveries")
def deliveries(
    project: ProjectOption,
    stage: Annotated[str | None, typer.Option(help="A Webhook stage id or name.")] = None,
    state: Annotated[str | None, typer.Option(help="pending | delivered | failed")] = None,
    task: Annotated[str | None, typer.Option(help="A task id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = "",
) -> None:
    """List deliveries, newest first."""
    filters = {"stage": stage, "state": state, "task": task, "limit": str(limit)}
    params = {k: v for k, v in filters.items() if v is not None}
    path = f"/api/projects/{project}/deliveries"
    found = _call(lambda api: api.call("GET", path, params=params), url, key)
    _deliveries_table(found["deliveries"])


@app.command("redeliver")
def redeliver(
    delivery_id: Annotated[str, typer.Argument(help="Delivery id.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = "",
) -> None:
    """Send one delivery again: the same id and the same bytes."""
    path = f"/api/deliveries/{delivery_id}/redeliver"
    done = _call(lambda api: api.call("POST", path), url, key)
    console.print("queued" if done.get("queued") else "still pending: it will be sent anyway")


@app.command("rerun")
def rerun(
    project: ProjectOption,
    stage: Annotated[str, typer.Option(help="The Webhook stage id.")],
    only_failed: Annotated[bool, typer.Option(help="Only the failed deliveries.")] = False,
    since: Annotated[
        str | None, typer.Option(help="Only deliveries created at or after this ISO-8601 time.")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Show progress until the stage has nothing pending.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = "",
) -> None:
    """Fire a Webhook stage again for every task that passed it, the failed ones, or those
    since a time. Safe to repeat: a delivery still pending is not queued twice."""
    path = f"/api/projects/{project}/stages/{stage}/rerun"
    body: dict[str, Any] = {"onlyFailed": only_failed}
    if since is not None:
        body["since"] = since

    async def work(api: Client) -> tuple[int, dict[str, Any] | None]:
        done = await api.call("POST", path, json=body)
        queued = int(done["queued"])
        if not wait or not queued:
            return queued, None
        return queued, await _follow(api, f"/api/projects/{project}/stages/{stage}", queued)

    queued, status = _call(work, url, key)
    if status is None:
        console.print(f"queued {queued} deliveries")
        return
    counts = status["deliveries"]
    console.print(
        f"queued {queued} deliveries; the stage now has {counts['delivered']} delivered,"
        f" {counts['failed']} failed, {counts['pending']} pending"
    )


async def _follow(api: Client, path: str, queued: int) -> dict[str, Any]:
    """Poll a stage's status with a progress bar until it has nothing pending."""
    with _bar() as bar:
        job = bar.add_task("delivering", total=queued)
        while True:
            status: dict[str, Any] = await api.call("GET", path)
            pending = int(status["deliveries"]["pending"])
            bar.update(job, completed=queued - min(pending, queued))
            if pending == 0:
                return status
            endpoint = status["endpoint"]
            if endpoint["state"] == "disabled":
                bar.update(job, description="waiting: endpoint disabled (hookstage enable)")
            await asyncio.sleep(0.5)  # a person watching: twice a second is plenty


@app.command("enable")
def enable(
    project: ProjectOption,
    stage: Annotated[str, typer.Option(help="The Webhook stage id.")],
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = "",
) -> None:
    """Enable a Webhook stage's endpoint that answered 410 Gone: what waited is sent."""
    path = f"/api/projects/{project}/stages/{stage}/enable"
    done = _call(lambda api: api.call("POST", path), url, key)
    console.print(f"enabled; {done['due']} waiting deliveries are due now")


def _deliveries_table(rows: list[dict[str, Any]]) -> None:
    table = Table("id", "stage", "externalId", "state", "attempts", "last", "created")
    for d in rows:
        last = str(d["lastStatus"] or d["lastError"] or "-")
        table.add_row(
            d["id"],
            d["stageId"],
            d["externalId"],
            d["state"],
            str(d["attempts"]),
            last,
            d["createdAt"],
        )
    console.print(table)


def _bar(*, transient: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=transient,
    )


def _json_file(path: Path) -> Any:
    try:
        return orjson.loads(_read(path))
    except orjson.JSONDecodeError as exc:
        raise fail(f"{path}: not valid JSON ({exc})", 2) from exc


def _assets_file(path: Path) -> list[Any]:
    raw = _read(path)
    try:
        if raw.lstrip()[:1] == b"[":
            loaded = orjson.loads(raw)
            return loaded if isinstance(loaded, list) else []
        return [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    except orjson.JSONDecodeError as exc:
        raise fail(f"{path}: expected a JSON list or NDJSON ({exc})", 2) from exc


# -- the demo ---------------------------------------------------------------------------------


@app.command()
def demo(
    tasks: Annotated[int, typer.Option(help="How many tasks the labelers submit.")] = 200,
    labelers: Annotated[int, typer.Option(help="How many labelers work at once.")] = 4,
    keep: Annotated[
        bool, typer.Option(help="Keep the server and receiver running to explore them.")
    ] = False,
) -> None:
    """A workflow firing signed webhooks into a local receiver, on a temporary SQLite file."""
    from hookstage import demo as demo_module

    if tasks < 1 or labelers < 1:
        raise fail("--tasks and --labelers must be 1 or more", 2)
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        ok = run(demo_module.main(tasks=tasks, labelers=labelers, keep=keep, console=console))
        if not ok:
            raise typer.Exit(1)


def main() -> None:
    if os.environ.get("NO_COLOR") is None and not sys.stdout.isatty():
        console.no_color = True
    app()


if __name__ == "__main__":
    main()
