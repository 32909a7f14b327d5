"""The command line: thin over the modules that do the work."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from hookstage import __version__

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
    """Run the async core on uvloop where available."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


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
    """Receive webhooks: verify each signature, show it, keep it (the seed's sample, done properly)."""
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
        console.print(f"listening on [bold]{url}{path}[/]   inspector: {url}/", highlight=False)

    try:
        receiver.run(config, on_ready=ready)
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
        console.print(f"hookstage {__version__} serving on [bold]{url}[/] (API docs: {url}/docs)")

    config = service.ServiceConfig(database=db, host=host, port=port, dispatch=dispatch)
    with contextlib.suppress(KeyboardInterrupt):
        run(service.serve(config, on_ready=ready))


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
    with contextlib.suppress(KeyboardInterrupt):
        ok = run(demo_module.main(tasks=tasks, labelers=labelers, keep=keep, console=console))
        if not ok:
            raise typer.Exit(1)


def main() -> None:
    if os.environ.get("NO_COLOR") is None and not sys.stdout.isatty():
        console.no_color = True
    app()


if __name__ == "__main__":
    main()
