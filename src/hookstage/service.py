"""The running service: store, engine, API and dispatcher put together in one process.

`serve` runs the API (and by default a dispatcher); `work` runs a dispatcher alone, the
`hookstage worker` process. Each reports itself in the `workers` table (a heartbeat) and,
on PostgreSQL, a dispatcher is woken by NOTIFY when another process enqueues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

import uvicorn

from hookstage import __version__, egress, workflow
from hookstage.api import create_app
from hookstage.api.limits import MAX_BODY
from hookstage.cipher import KEY_ENV, Cipher
from hookstage.dispatcher import Dispatcher, Endpoint, default_worker_id
from hookstage.engine import Engine, EngineError, Project
from hookstage.signing import Scheme, Signer
from hookstage.store import Store, StoreError, notify, open_store
from hookstage.store import workers as processes
from hookstage.store.deliveries import Claimed, Handoff
from hookstage.transport import HttpTransport, OutboundRequest, Outcome, Transport

__all__ = [
    "Service",
    "ServiceConfig",
    "ServiceError",
    "endpoint",
    "guarded_transport",
    "running",
    "serve",
    "work",
]

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """The service cannot start as configured; the message says what to change."""


@dataclass(frozen=True)
class ServiceConfig:
    """``allow_egress``: allow-list entries for webhook addresses that are not public (CIDRs
    or words such as "loopback", see ``egress.parse_allow``); ``secret_key``: Fernet key(s)
    sealing stage secrets at rest (None: stored plain, with a warning at start).
    ``heartbeat_seconds``: how often the process reports itself; ``lease_seconds``: how
    long a claimed delivery is this process's before another may take it; ``concurrency``:
    requests in flight at most; ``pool_size``: database connections kept (see open_store).
    """

    database: str
    host: str = "127.0.0.1"
    port: int = 8080
    dispatch: bool = True
    allow_egress: tuple[str, ...] = ()
    secret_key: str | None = field(default=None, repr=False)
    max_body: int = MAX_BODY
    heartbeat_seconds: float = 5.0
    lease_seconds: float = 60.0
    concurrency: int = 256
    pool_size: int | None = None


@dataclass
class Service:
    """What a running service holds, for the demo and the tests to look at."""

    url: str
    store: Store
    engine: Engine
    dispatcher: Dispatcher | None
    server: asyncio.Task[None]


def endpoint(settings: workflow.WebhookSettings, *, now: float | None = None) -> Endpoint:
    """How the dispatcher sends for one Webhook stage at ``now`` (default: the time now),
    from its settings: during a secret's rotation, it signs with both secrets."""
    auth = settings.auth
    if isinstance(auth, workflow.SecretAuth):
        at = time.time() if now is None else now
        secrets = [secret.reveal() for secret in auth.secrets_at(at)]
        signer = Signer([Scheme.HUB, *settings.signatures], secrets=secrets)
    elif isinstance(auth, workflow.BearerAuth):
        signer = Signer([Scheme.BEARER], token=auth.token.reveal())
    else:
        signer = Signer()
    # tls_context keeps one context per bundle: stages resolve every turn, and the same
    # context lets the transport reuse its connections.
    trust = None if settings.ca_bundle is None else egress.tls_context(settings.ca_bundle)
    return Endpoint(
        settings.url,
        signer,
        timeout=settings.timeout_ms / 1000,
        ssl=trust,
        settles=settings.mode == "gate",
    )


class _TokenMasked:
    """Keeps the bearer token out of what is recorded of an answer: a receiver that echoes
    its request would show it to everyone who may read deliveries."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner

    async def send(self, request: OutboundRequest) -> Outcome:
        return _without_token(await self._inner.send(request), request)

    async def aclose(self) -> None:
        await self._inner.aclose()


_MASK = "****"


def _without_token(outcome: Outcome, request: OutboundRequest) -> Outcome:
    """``outcome`` with the request's bearer token masked wherever the answer repeats it."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return outcome
    raw = token.encode()
    if raw not in outcome.body and not any(token in v for v in outcome.headers.values()):
        return outcome
    headers = {k: v.replace(token, _MASK) for k, v in outcome.headers.items()}
    return replace(outcome, headers=headers, body=outcome.body.replace(raw, _MASK.encode()))


def guarded_transport(policy: egress.EgressPolicy, *, concurrency: int = 256) -> HttpTransport:
    """The HTTP transport with the egress guard on every connection: each address it is
    about to connect to, resolved or literal, is screened by ``policy`` first."""
    return HttpTransport(limit=concurrency, egress=policy)


def _cipher(config: ServiceConfig) -> Cipher | None:
    if not config.secret_key:
        log.warning(
            "%s is not set: webhook secrets and bearer tokens are stored unencrypted in the"
            " database (`hookstage secret-key` prints a key to set)",
            KEY_ENV,
        )
        return None
    return Cipher.from_setting(config.secret_key)


async def _opened(config: ServiceConfig, cipher: Cipher | None) -> tuple[Store, Engine]:
    store = await open_store(config.database, pool_size=config.pool_size)
    engine = Engine(store, cipher=cipher)
    try:
        resealed = await engine.seal_stored()
    except EngineError as exc:
        await store.close()
        raise ServiceError(exc.message) from exc
    if resealed:
        log.info("sealed the secrets of %d project(s) with the newest key", resealed)
    return store, engine


@contextlib.asynccontextmanager
async def running(config: ServiceConfig) -> AsyncIterator[Service]:
    """Start everything, yield it, and stop it in order (dispatcher first, then the API).

    Raises ServiceError (or ValueError for a bad ``allow_egress`` or ``secret_key``) when
    the configuration cannot work, before anything is served.
    """
    policy = egress.parse_allow(config.allow_egress)
    store, engine = await _opened(config, _cipher(config))
    transport = _TokenMasked(guarded_transport(policy, concurrency=config.concurrency))
    dispatcher = _dispatcher(config, engine, transport) if config.dispatch else None
    sock = _listen(config.host, config.port)
    host, port = sock.getsockname()[:2]
    app = create_app(
        engine,
        max_body=config.max_body,
        dispatcher_metrics=dispatcher.metric_families if dispatcher is not None else None,
    )
    # log_config=None: uvicorn's records go to the root logger, in hookstage's format.
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, log_config=None)
    )
    tasks = [asyncio.create_task(server.serve(sockets=[sock]))]
    if dispatcher is not None:
        tasks.append(asyncio.create_task(dispatcher.run()))
    try:
        async with _companions(config, store, "serve", dispatcher):
            try:
                yield Service(f"http://{host}:{port}", store, engine, dispatcher, tasks[0])
            finally:
                if dispatcher is not None:
                    await dispatcher.stop(grace=10.0)
                server.should_exit = True
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await transport.aclose()
        sock.close()
        await store.close()


def _dispatcher(config: ServiceConfig, engine: Engine, transport: Transport) -> Dispatcher:
    """A dispatcher sending each stage's deliveries as its settings say at send time."""

    async def resolve(project_id: str, stage_id: str) -> Endpoint | None:
        return _endpoint_of(await engine.webhook_settings(project_id, stage_id), engine.clock())

    dispatcher = Dispatcher(
        engine.store,
        resolve=resolve,
        transport=transport,
        settle=engine.settle_gates,
        concurrency=config.concurrency,
        lease_seconds=config.lease_seconds,
    )
    engine.on_enqueue = dispatcher.wake
    engine.courier = _Handover(dispatcher, engine.clock)
    return dispatcher


def _endpoint_of(settings: workflow.WebhookSettings | None, now: float) -> Endpoint | None:
    return None if settings is None else endpoint(settings, now=now)


class _Handover:
    """The engine's `Courier`: what its steps enqueue goes to this process's dispatcher."""

    def __init__(self, dispatcher: Dispatcher, clock: Callable[[], float]) -> None:
        self._dispatcher = dispatcher
        self._clock = clock

    def reserve(self, stages: Sequence[tuple[str, str]]) -> Handoff | None:
        return self._dispatcher.reserve(stages)

    def unreserve(self, handoff: Handoff) -> None:
        self._dispatcher.unreserve(handoff)

    async def adopt(self, handoff: Handoff, claimed: Sequence[Claimed], project: Project) -> None:
        async def resolve(_project_id: str, stage_id: str) -> Endpoint | None:
            # The project as the step's write found it: no read between commit and send.
            return _endpoint_of(
                workflow.webhook_settings(project.workflow, stage_id), self._clock()
            )

        await self._dispatcher.adopt(handoff, claimed, resolve)


async def work(config: ServiceConfig, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Deliver until cancelled (SIGTERM, Ctrl-C), with no API: a `hookstage worker`.

    On cancel, requests in flight get ten seconds to finish and the claims not sent are
    released for other workers. ``on_ready`` gets the worker's id once it is delivering.
    Raises ServiceError (or ValueError) when the configuration cannot work.
    """
    policy = egress.parse_allow(config.allow_egress)
    store, engine = await _opened(config, _cipher(config))
    transport = _TokenMasked(guarded_transport(policy, concurrency=config.concurrency))
    dispatcher = _dispatcher(config, engine, transport)
    delivering = asyncio.create_task(dispatcher.run())
    try:
        async with _companions(config, store, "worker", dispatcher):
            try:
                if on_ready is not None:
                    on_ready(dispatcher.worker_id)
                await asyncio.shield(delivering)
            finally:
                await dispatcher.stop(grace=10.0)
                await asyncio.gather(delivering, return_exceptions=True)
    finally:
        await transport.aclose()
        await store.close()


@contextlib.asynccontextmanager
async def _companions(
    config: ServiceConfig, store: Store, kind: str, dispatcher: Dispatcher | None
) -> AsyncIterator[None]:
    """What runs beside a process's work: its heartbeat, and on PostgreSQL the listener that
    wakes its dispatcher when another process enqueues. Its row goes when it stops."""
    now = time.time()
    me = processes.Worker(
        id=dispatcher.worker_id if dispatcher is not None else default_worker_id(),
        kind=kind,
        host=socket.gethostname(),
        pid=os.getpid(),
        version=__version__,
        dispatching=dispatcher is not None,
        beat_seconds=config.heartbeat_seconds,
        started_at=now,
        seen_at=now,
    )
    tasks = [asyncio.create_task(_heartbeat(store, me), name="hookstage-heartbeat")]
    if dispatcher is not None and store.dialect == "postgresql":
        listening = notify.listen(config.database, dispatcher.wake)
        tasks.append(asyncio.create_task(listening, name="hookstage-listen"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            async with store.transaction() as conn:
                await processes.leave(conn, me.id)
        except StoreError:
            log.warning("could not remove this process from the workers table", exc_info=True)


# Rows of processes gone this long are deleted (by any process's heartbeat).
_FORGET_AFTER = 7 * 86400.0


async def _heartbeat(store: Store, me: processes.Worker) -> None:
    while True:
        now = time.time()
        try:
            async with store.transaction() as conn:
                await processes.beat(conn, replace(me, seen_at=now))
                await processes.prune(conn, before=now - _FORGET_AFTER)
        except Exception:
            # A database that is away comes back; the process goes on and reports later.
            log.warning("heartbeat failed", exc_info=True)
        await asyncio.sleep(me.beat_seconds)


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
