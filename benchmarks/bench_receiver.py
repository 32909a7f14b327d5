"""How fast `hookstage listen` answers, against a bare aiohttp handler, in one run.

Each server runs in its own process; the load comes from this process, with N keep-alive
connections each posting the signed seed sample and waiting for the answer. The servers
take turns: short bursts, round after round, so that whatever else the machine is doing
weighs on each alike (after a short warm-up of each). Servers:

- baseline: a minimal aiohttp handler that checks X-Hub-Signature (HMAC-SHA1) and says ok;
- receiver: `hookstage listen --secret S --quiet`, requests kept in memory only;
- receiver+store: the same with `--store FILE` (SQLite, batched by the writer thread).

Two clients load each server: the aiohttp client (what hookstage's dispatcher sends with;
it saturates its own core first, near 10k requests/s here) and a raw asyncio protocol that
writes prebuilt requests (several times lighter, so the servers' own limits show).
Printed: requests/s, the ratio to the baseline with the same client, and the server's CPU
time per request. Processes are not pinned to cores: on this VM, pinning client and server
to different cores halved every rate (cross-core wake-ups).

    .venv/bin/python -m benchmarks.bench_receiver [--rounds 4] [--burst 1] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import hmac
import multiprocessing
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiohttp import web
from yarl import URL

from hookstage.receiver import ReceiverConfig, serve

SECRET = "bench-secret"
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "webhook-seed-2023.json"
TARGETS = ("baseline", "receiver", "receiver+store")


def _run(main: Coroutine[Any, Any, None]) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


# --- servers (child processes) ----------------------------------------------------------------


async def _baseline_hook(request: web.Request) -> web.Response:
    body = await request.read()
    expected = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature", "")):
        return web.Response(status=401, text="bad signature")
    return web.Response(text="ok")


async def _serve_baseline(on_ready: Callable[[str], None]) -> None:
    app = web.Application()
    app.router.add_post("/hook", _baseline_hook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        on_ready(f"http://{host}:{port}")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def _server_main(target: str, store: Path | None, conn: Connection) -> None:
    """Serve until the parent says stop; answer its CPU-time questions meanwhile."""
    loop = asyncio.get_running_loop()
    if target == "baseline":
        server = asyncio.create_task(_serve_baseline(conn.send))
    else:
        config = ReceiverConfig(port=0, quiet=True, secret=SECRET, store=store)
        server = asyncio.create_task(serve(config, on_ready=conn.send))
    while await loop.run_in_executor(None, conn.recv) == "cpu":
        conn.send(time.process_time())
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server  # the receiver writes what it still holds to the store here
    conn.send("stopped")


def _server_process(target: str, store: Path | None, conn: Connection) -> None:
    _run(_server_main(target, store, conn))


# --- load (this process) ------------------------------------------------------------------------

CLIENTS = ("aiohttp", "raw")
_CONTENT_LENGTH = re.compile(rb"content-length:[ \t]*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Load:
    ok: int
    failed: int
    seconds: float


@dataclass(frozen=True)
class Result:
    target: str
    client: str
    load: Load
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.load.ok / self.load.seconds

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / max(self.load.ok, 1) * 1e6


def _signed_headers(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Hub-Signature": hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest(),
    }


async def _aiohttp_load(url: str, body: bytes, concurrency: int, seconds: float) -> Load:
    loop = asyncio.get_running_loop()
    headers = _signed_headers(body)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        deadline = loop.time() + seconds

        async def worker() -> tuple[int, int]:
            ok = failed = 0
            while loop.time() < deadline:
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok, failed = (ok + 1, failed) if response.status == 200 else (ok, failed + 1)
            return ok, failed

        started = time.perf_counter()
        counts = await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Load(sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed)


class _RawConnection(asyncio.Protocol):
    """One keep-alive connection: send the prebuilt request, read the answer, again."""

    def __init__(self, request: bytes, deadline: float, done: asyncio.Future[None]) -> None:
        self.ok = self.failed = 0
        self._request = request
        self._deadline = deadline
        self.done = done
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (status := self._take_response()) is not None:
            self.ok, self.failed = (
                (self.ok + 1, self.failed) if status == 200 else (self.ok, self.failed + 1)
            )
            assert self._transport is not None
            if asyncio.get_running_loop().time() < self._deadline:
                self._transport.write(self._request)
            else:
                self._transport.close()

    def _take_response(self) -> int | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        found = _CONTENT_LENGTH.search(self._buffer, 0, end)
        total = end + 4 + (int(found.group(1)) if found else 0)
        if len(self._buffer) < total:
            return None
        status = int(self._buffer[9:12])
        del self._buffer[:total]
        return status

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _same(connection: _RawConnection) -> _RawConnection:
    return connection


async def _raw_load(url: str, body: bytes, concurrency: int, seconds: float) -> Load:
    loop = asyncio.get_running_loop()
    target = URL(url)
    host, port = target.host or "127.0.0.1", target.port or 80
    head = "".join(f"{k}: {v}\r\n" for k, v in _signed_headers(body).items())
    request = (
        f"POST {target.path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    deadline = loop.time() + seconds
    started = time.perf_counter()
    connections: list[_RawConnection] = []
    for _ in range(concurrency):
        connection = _RawConnection(request, deadline, loop.create_future())
        await loop.create_connection(functools.partial(_same, connection), host, port)
        connections.append(connection)
    await asyncio.wait_for(asyncio.gather(*(c.done for c in connections)), seconds + 30)
    elapsed = time.perf_counter() - started
    return Load(sum(c.ok for c in connections), sum(c.failed for c in connections), elapsed)


_LOADS = {"aiohttp": _aiohttp_load, "raw": _raw_load}


async def _ask(conn: Connection, message: str) -> Any:
    loop = asyncio.get_running_loop()
    conn.send(message)
    return await loop.run_in_executor(None, conn.recv)


@dataclass
class Server:
    """One server process, and what was sent to it."""

    target: str
    store: Path | None
    process: multiprocessing.process.BaseProcess
    conn: Connection
    url: str = ""
    sent: int = 0

    async def load(self, client: str, seconds: float, args: argparse.Namespace) -> Result:
        cpu_before = await _ask(self.conn, "cpu")
        load = await _LOADS[client](self.url, SAMPLE.read_bytes(), args.concurrency, seconds)
        cpu_after = await _ask(self.conn, "cpu")
        self.sent += load.ok + load.failed
        return Result(self.target, client, load, cpu_after - cpu_before)


def _start(target: str, workdir: Path) -> Server:
    store = workdir / f"{target}.sqlite" if target.endswith("store") else None
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_server_process, args=(target, store, child), daemon=True)
    process.start()
    return Server(target, store, process, parent)


async def _stop(server: Server) -> None:
    with contextlib.suppress(OSError, EOFError):
        await asyncio.wait_for(_ask(server.conn, "stop"), 30)
    server.process.join(timeout=30)
    if server.process.is_alive():
        server.process.kill()
    if server.store is not None and (stored := _count_rows(server.store)) != server.sent:
        print(f"! {server.target}: {stored} rows stored for {server.sent} requests answered")


def _count_rows(store: Path) -> int:
    with contextlib.closing(sqlite3.connect(store)) as db:
        (count,) = db.execute("SELECT count(*) FROM requests").fetchone()
    return int(count)


def _total(results: list[Result]) -> Result:
    """The rounds of one server and client, added up."""
    first = results[0]
    load = Load(
        sum(r.load.ok for r in results),
        sum(r.load.failed for r in results),
        sum(r.load.seconds for r in results),
    )
    return Result(first.target, first.client, load, sum(r.server_cpu for r in results))


def _table(results: list[Result], args: argparse.Namespace) -> str:
    baseline = {r.client: r.rate for r in results if r.target == "baseline"}
    lines = [
        f"bench_receiver: {args.concurrency} connections, {args.rounds} rounds of "
        f"{args.burst:g} s per server and client, body {SAMPLE.stat().st_size} B",
        f"{'server':<16}{'client':<9}{'requests/s':>12}{'vs baseline':>13}"
        f"{'server CPU/req':>16}{'failed':>8}",
    ]
    for r in sorted(results, key=lambda r: CLIENTS.index(r.client)):
        lines.append(
            f"{r.target:<16}{r.client:<9}{r.rate:>12,.0f}{r.rate / baseline[r.client]:>12.2f}x"
            f"{r.cpu_us:>13.1f} us{r.load.failed:>8}"
        )
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> None:
    """All servers run at once; short bursts take turns, so background noise hits all alike."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
        servers = [_start(target, Path(tmp)) for target in TARGETS]
        try:
            for server in servers:
                ready = loop.run_in_executor(None, server.conn.recv)
                server.url = await asyncio.wait_for(ready, 30) + "/hook"
            for server in servers:
                for client in CLIENTS:
                    await server.load(client, args.warmup, args)
            rounds: dict[tuple[str, str], list[Result]] = {}
            for _ in range(args.rounds):
                for server in servers:
                    for client in CLIENTS:
                        result = await server.load(client, args.burst, args)
                        rounds.setdefault((server.target, client), []).append(result)
        finally:
            for server in servers:
                await _stop(server)
    print(_table([_total(r) for r in rounds.values()], args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=4, help="turns each server gets")
    parser.add_argument("--burst", type=float, default=1.0, help="seconds of load per turn")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds of load before")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent connections")
    _run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
