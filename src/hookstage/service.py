"""The running service: store, engine, API and dispatcher put together in one process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import uvicorn

from hookstage import workflow
from hookstage.api import create_app
from hookstage.dispatcher import Dispatcher, Endpoint
from hookstage.engine import Engine
from hookstage.signing import Scheme, Signer
from hookstage.store import Store, open_store

__all__ = ["Service", "ServiceConfig", "endpoint", "running", "serve"]


@dataclass(frozen=True)
class ServiceConfig:
    database: str
    host: str = "127.0.0.1"
    port: int = 8080
    dispatch: bool = True


@dataclass
class Service:
    """What a running service holds, for the demo and the tests to look at."""

    url: str
    store: Store
    engine: Engine
    dispatcher: Dispatcher | None
    server: asyncio.Task[None]


def endpoint(settings: workflow.WebhookSettings) -> Endpoint:
    """How the dispatcher sends for one Webhook stage, from its settings."""
    auth = settings.auth
    if isinstance(auth, workflow.SecretAuth):
        signer = Signer([Scheme.HUB, *settings.signatures], secrets=[auth.secret.reveal()])
    elif isinstance(auth, workflow.BearerAuth):
        signer = Signer([Scheme.BEARER], token=auth.token.reveal())
    else:
        signer = Signer()
    return Endpoint(settings.url, signer, timeout=settings.timeout_ms / 1000)


@contextlib.asynccontextmanager
async def running(config: ServiceConfig) -> AsyncIterator[Service]:
    """Start everything, yield it, and stop it in order (dispatcher first, then the API)."""
    store = await open_store(config.database)
    engine = Engine(store)
    dispatcher: Dispatcher | None = None
    if config.dispatch:

        async def resolve(project_id: str, stage_id: str) -> Endpoint | None:
            settings = await engine.webhook_settings(project_id, stage_id)
            return None if settings is None else endpoint(settings)

        dispatcher = Dispatcher(store, resolve=resolve)
        engine.on_enqueue = dispatcher.wake
    sock = _listen(config.host, config.port)
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine), log_level="warning", lifespan="on", access_log=False)
    )
    tasks = [asyncio.create_task(server.serve(sockets=[sock]))]
    if dispatcher is not None:
        tasks.append(asyncio.create_task(dispatcher.run()))
    try:
        yield Service(f"http://{host}:{port}", store, engine, dispatcher, tasks[0])
    finally:
        if dispatcher is not None:
            await dispatcher.stop(grace=10.0)
        server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        sock.close()
        await store.close()


async def serve(config: ServiceConfig, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run until cancelled, or until the HTTP server stops (it handles SIGINT and SIGTERM)."""
    async with running(config) as service:
        if on_ready is not None:
            on_ready(service.url)
        await asyncio.shield(service.server)


def _listen(host: str, port: int) -> socket.socket:
    # Bound and listening before uvicorn starts: the URL is usable the moment it is printed,
    # and port 0 gives the real port to report.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
    # without it every answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock
