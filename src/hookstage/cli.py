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

__all__ = ["app", "main"]

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
) -> None:
    """Run the HTTP API (and, by default, the delivery dispatcher)."""
    from hookstage import service

    def ready(url: str) -> None:
        console.print(
            f"hookstage {__version__} serving on [bold]{url}[/] (API docs: {url}/docs)",
            soft_wrap=True,
        )

    config = service.ServiceConfig(database=db, host=host, port=port, dispatch=dispatch)
    run_until_stopped(service.serve(config, on_ready=ready))


@app.command()
def migrate(db: DatabaseOption = DEFAULT_DB) -> None:
    """Bring the database schema up to date (serve does this on start too)."""
    from hookstage.store import open_store

    async def go() -> None:
        store = await open_store(db)
        await store.close()

    run(go())
    console.print("database is up to date")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    role: Annotated[str, typer.Option(help="admin | manager | labeler | read-only")] = "admin",
    db: DatabaseOption = DEFAULT_DB,
) -> None:
    """Create an API key; its value is printed this once."""
    from hookstage.engine import EngineError

    async def go() -> str:
        async with _engine(db) as engine:
            _, value = await engine.create_key(name, role)
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

    table = Table("id", "name", "role", "created", "state")
    for key in run(go()):
        state = "revoked" if key.revoked_at else "active"
        table.add_row(key.id, key.name, key.role, _when(key.created_at), state)
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
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = "",
) -> None:
    """Fire a Webhook stage again for every task that passed it (safe to repeat)."""
    path = f"/api/projects/{project}/stages/{stage}/rerun"
    done = _call(lambda api: api.call("POST", path, json={"onlyFailed": only_failed}), url, key)
    console.print(f"queued {done['queued']} deliveries")


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
