"""Run an ASGI app under uvicorn in this process, on a real socket, for the length of a test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

__all__ = ["serve"]


@contextlib.asynccontextmanager
async def serve(
    app: Any, *, host: str = "127.0.0.1", ready_within: float = 10.0
) -> AsyncIterator[str]:
    """`async with serve(app) as url:` the app answers at `url` (`http://127.0.0.1:PORT`).

    The port is the OS's choice (bind to 0), so tests never collide. Readiness is polled
    with a deadline; on exit the server stops and every connection is closed.
    """
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets whose proto says TCP, and
    # without it every response waits ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind((host, 0))
        sock.listen(128)
        sock.setblocking(False)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
        server = uvicorn.Server(config)
        running = asyncio.create_task(_run(server, sock))
        try:
            await _until_started(server, running, ready_within)
            yield f"http://{host}:{port}"
        finally:
            await _stop(server, running)
    finally:
        sock.close()


async def _run(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        # uvicorn reports a failed start with SystemExit: asyncio would let it escape the
        # event loop and end the whole test run.
        raise RuntimeError(f"uvicorn exited with status {exc.code}: see its log") from exc


async def _until_started(
    server: uvicorn.Server, running: asyncio.Task[None], within: float
) -> None:
    deadline = time.monotonic() + within
    while not server.started:
        if running.done():
            error = running.exception()
            raise RuntimeError(f"the server did not start: {error!r}") from error
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server was not ready within {within} s")
        await asyncio.sleep(0.005)


async def _stop(server: uvicorn.Server, running: asyncio.Task[None]) -> None:
    if running.done():
        return  # it never started: _until_started has reported why
    server.should_exit = True
    try:
        await asyncio.wait_for(asyncio.shield(running), timeout=10)
    except TimeoutError:
        server.force_exit = True
        await running
