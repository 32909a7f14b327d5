"""Three senders behind the dispatcher's ``Transport`` interface, in one run (issue #8).

- HttpTransport: the product's (``hookstage.transport``: asyncio protocols + httptools);
- aiohttp: one ``ClientSession``, keep-alive, redirects off, no cookie jar, the body read
  (the product's transport until ``HttpTransport`` replaced it);
- pycurl: libcurl's multi interface driven by the asyncio loop (its socket and timer
  callbacks become ``add_reader``/``add_writer`` and ``call_later``), easy handles reused,
  ``Expect:`` off. Skipped, and said so, when pycurl cannot be imported.

Each posts the same N signed ~2 KB bodies (bench_drain's, with the headers the dispatcher
sends: Content-Type, User-Agent, X-Hookstage-Delivery, X-Hookstage-Attempt,
X-Hub-Signature) from 64 coroutines sharing one iterator, to the fast receiver (nginx when
installed). The requests are built and signed before the clock starts: signing costs every
sender the same, so what is measured is the transport and the loop. Rounds alternate the
order of the senders; every answer must be 200. CPU is this process's (every thread).

    .venv/bin/python -m benchmarks.bench_transport [--count 20000] [--concurrency 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from benchmarks.bench_drain import SECRET, _body
from benchmarks.common import (
    IMG,
    Figure,
    Plot,
    Result,
    console,
    fast_receiver,
    fmt,
    load_average,
    measure,
    plot_bars,
    print_result,
)
from benchmarks.common import run as run_loop
from hookstage import __version__
from hookstage.signing import hub_signature
from hookstage.transport import HttpTransport, OutboundRequest, Outcome, Transport

__all__ = ["AiohttpSender", "CurlSender", "main", "run"]

_USER_AGENT = f"hookstage/{__version__}"
_TIMEOUT = 15.0


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


# -- aiohttp: what the product sent with until HttpTransport ----------------------------------


class AiohttpSender:
    """One keep-alive ClientSession (made on first use, inside the loop), redirects off,
    no cookie jar, a ClientTimeout per request as the product's did."""

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def send(self, request: OutboundRequest) -> Outcome:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        started = time.perf_counter()
        try:
            async with self._session.post(
                request.url,
                data=request.body,
                headers=dict(request.headers),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=request.timeout),
            ) as response:
                body = await response.read()
                headers = {key: ", ".join(response.headers.getall(key)) for key in response.headers}
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Outcome.failure(type(exc).__name__, str(exc), duration_ms=_since(started))
        return Outcome(response.status, headers, body, _since(started))

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


# -- pycurl: libcurl's multi interface on the asyncio loop ------------------------------------


def _pycurl() -> Any:
    """The pycurl module (the `bench` extra), or None. Imported by name: it has no types."""
    try:
        return importlib.import_module("pycurl")
    except ImportError:
        return None


@dataclass
class _Exchange:
    future: asyncio.Future[Outcome]
    started: float
    body: io.BytesIO = field(default_factory=io.BytesIO)
    head: list[bytes] = field(default_factory=list)


class CurlSender:
    """A CurlMulti whose sockets the asyncio loop watches. libcurl keeps the connections
    (keep-alive, at most ``limit`` cached); easy handles are reused across requests."""

    def __init__(self, limit: int = 256) -> None:
        pycurl = _pycurl()
        if pycurl is None:
            raise RuntimeError("pycurl is not installed (pip install pycurl)")
        self._pc = pycurl
        self._loop = asyncio.get_running_loop()
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._multi.setopt(pycurl.M_MAXCONNECTS, limit)
        self._timer: asyncio.TimerHandle | None = None
        self._watched: dict[int, int] = {}  # fd -> the POLL_* curl asked for
        self._idle: list[Any] = []
        self._pending: dict[Any, _Exchange] = {}

    def _on_socket(self, what: int, fd: int, multi: Any, data: Any) -> None:
        pc, loop = self._pc, self._loop
        self._unwatch(fd, self._watched.pop(fd, pc.POLL_REMOVE))
        if what == pc.POLL_REMOVE:
            return
        if what in (pc.POLL_IN, pc.POLL_INOUT):
            loop.add_reader(fd, self._act, fd, pc.CSELECT_IN)
        if what in (pc.POLL_OUT, pc.POLL_INOUT):
            loop.add_writer(fd, self._act, fd, pc.CSELECT_OUT)
        self._watched[fd] = what

    def _unwatch(self, fd: int, what: int) -> None:
        if what in (self._pc.POLL_IN, self._pc.POLL_INOUT):
            self._loop.remove_reader(fd)
        if what in (self._pc.POLL_OUT, self._pc.POLL_INOUT):
            self._loop.remove_writer(fd)

    def _on_timer(self, ms: int) -> None:
        # libcurl must not be re-entered from its own callback: the timeout runs later,
        # from the loop, even when it is 0.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ms >= 0:
            self._timer = self._loop.call_later(ms / 1000, self._act, self._pc.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, event: int) -> None:
        while self._multi.socket_action(fd, event)[0] == self._pc.E_CALL_MULTI_PERFORM:
            pass
        self._finish()

    def _finish(self) -> None:
        queued = 1
        while queued:
            queued, done, failed = self._multi.info_read()
            for handle in done:
                exchange = self._release(handle)
                status = handle.getinfo(self._pc.RESPONSE_CODE)
                outcome = Outcome(
                    status,
                    _headers(exchange.head),
                    exchange.body.getvalue(),
                    _since(exchange.started),
                )
                if not exchange.future.done():
                    exchange.future.set_result(outcome)
            for handle, code, message in failed:
                exchange = self._release(handle)
                failure = Outcome.failure(
                    _CURL_ERRORS.get(code, f"curl-{code}"),
                    message,
                    duration_ms=_since(exchange.started),
                )
                if not exchange.future.done():
                    exchange.future.set_result(failure)

    def _release(self, handle: Any) -> _Exchange:
        self._multi.remove_handle(handle)
        self._idle.append(handle)
        return self._pending.pop(handle)

    def _handle(self) -> Any:
        if self._idle:
            return self._idle.pop()
        pc = self._pc
        handle = pc.Curl()
        handle.setopt(pc.NOSIGNAL, 1)
        handle.setopt(pc.FOLLOWLOCATION, 0)
        handle.setopt(pc.CONNECTTIMEOUT_MS, 10_000)
        return handle

    async def send(self, request: OutboundRequest) -> Outcome:
        pc = self._pc
        exchange = _Exchange(self._loop.create_future(), time.perf_counter())
        handle = self._handle()
        handle.setopt(pc.URL, request.url)
        handle.setopt(pc.POSTFIELDS, request.body)
        # "Expect:" with no value: libcurl never waits for a 100 Continue.
        handle.setopt(
            pc.HTTPHEADER, [*(f"{k}: {v}" for k, v in request.headers.items()), "Expect:"]
        )
        handle.setopt(pc.WRITEFUNCTION, exchange.body.write)
        handle.setopt(pc.HEADERFUNCTION, exchange.head.append)
        handle.setopt(pc.TIMEOUT_MS, int(request.timeout * 1000))
        self._pending[handle] = exchange
        self._multi.add_handle(handle)
        try:
            return await exchange.future
        except asyncio.CancelledError:
            if self._pending.pop(handle, None) is not None:
                self._multi.remove_handle(handle)
                handle.close()
            raise

    async def aclose(self) -> None:
        for handle, exchange in list(self._pending.items()):
            self._multi.remove_handle(handle)
            handle.close()
            exchange.future.cancel()
        self._pending.clear()
        # Unwatch before libcurl closes the sockets: a closed fd must not stay in the loop.
        for fd, what in self._watched.items():
            self._unwatch(fd, what)
        self._watched.clear()
        for handle in self._idle:
            handle.close()
        self._idle.clear()
        self._multi.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# libcurl's CURLE_* codes, as the product's error classes.
_CURL_ERRORS = {
    6: "dns",
    7: "connect",
    28: "timeout",
    35: "tls",
    52: "reset",
    55: "reset",
    56: "reset",
    60: "tls",
}


def _headers(lines: list[bytes]) -> dict[str, str]:
    """Response headers from libcurl's raw lines (the status line and blank line skipped;
    a name given twice joined with ", ")."""
    headers: dict[str, str] = {}
    for raw in lines:
        name, colon, value = raw.decode("latin-1").partition(":")
        if not colon:
            continue
        name, value = name.strip(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


# -- the run -----------------------------------------------------------------------------------


Make = Callable[[int], Transport]
SENDERS: dict[str, Make] = {
    "aiohttp": AiohttpSender,
    "HttpTransport": lambda limit: HttpTransport(limit=limit),
    "pycurl": CurlSender,
}


def _requests(url: str, count: int) -> list[OutboundRequest]:
    requests = []
    for i in range(count):
        body = _body(i)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            "X-Hookstage-Delivery": f"dlv_{i:024x}",
            "X-Hookstage-Attempt": "1",
            "X-Hub-Signature": hub_signature(SECRET, body),
        }
        requests.append(OutboundRequest(url, body, headers, timeout=_TIMEOUT))
    return requests


@dataclass
class _Tally:
    """One sender's totals over the rounds."""

    seconds: float = 0.0
    cpu: float = 0.0
    sent: int = 0
    wrong: Counter[str] = field(default_factory=Counter)  # answers other than 200, by kind


async def _turn(
    make: Make, requests: list[OutboundRequest], concurrency: int, tally: _Tally
) -> None:
    transport = make(concurrency)
    work: Iterator[OutboundRequest] = iter(requests)

    async def worker() -> None:
        for request in work:  # one shared iterator: each request is sent once
            outcome = await transport.send(request)
            if outcome.status != 200:
                tally.wrong[str(outcome.status or outcome.error_class)] += 1

    try:
        with measure() as span:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await transport.aclose()
    tally.seconds += span().wall
    tally.cpu += span().cpu
    tally.sent += len(requests)


async def measure_senders(count: int, concurrency: int, rounds: int, *, plot: bool) -> Result:
    """Every sender in ``rounds`` alternating rounds, as a Result (table, figures, and
    docs/img/bench_transport.png when ``plot``)."""
    names = [name for name in SENDERS if name != "pycurl" or _pycurl() is not None]
    tallies = {name: _Tally() for name in names}
    load = load_average()
    async with fast_receiver() as (url, receiver):
        requests = _requests(url, count)
        for number in range(rounds):
            # Turns alternate which sender goes first: none always meets a fresh receiver.
            for name in names[:: 1 if number % 2 == 0 else -1]:
                await _turn(SENDERS[name], requests, concurrency, tallies[name])
    setup = (
        f"{rounds} round(s) of {count:,} requests (~2.1 KB, X-Hub-Signature) per sender,"
        f" {concurrency} in flight, alternating order; receiver: {receiver}."
    )
    result = _result(tallies, setup, load)
    if plot:
        _plot(result, tallies)
    return result


def _rate(tally: _Tally | None) -> float:
    return tally.sent / tally.seconds if tally and tally.seconds else math.nan


def _result(tallies: dict[str, _Tally], setup: str, load: str) -> Result:
    result = Result(
        "transport",
        "Transport: three senders behind one interface",
        ["sender", "requests", "requests/s", "CPU us/request", "vs aiohttp", "not 200"],
    )
    base = _rate(tallies.get("aiohttp"))
    for name, tally in tallies.items():
        rate = _rate(tally)
        wrong = ", ".join(f"{n} x {kind}" for kind, n in tally.wrong.items()) or "0"
        cpu_us = tally.cpu / tally.sent * 1e6
        cells = [f"{tally.sent:,}", fmt(rate, 0), fmt(cpu_us, 0), f"{rate / base:.2f}x", wrong]
        result.rows.append([name, *cells])
    for name in ("HttpTransport", "pycurl"):
        result.figures.append(Figure(f"{name} / aiohttp", _rate(tallies.get(name)) / base, "x"))
    result.notes.append(setup)
    if "pycurl" not in tallies:
        result.notes.append("pycurl: not run, it cannot be imported (pip install pycurl).")
    if any(tally.wrong for tally in tallies.values()):
        result.notes.append("NOT EVERY ANSWER WAS 200: see the last column.")
    result.notes.append(f"load average (1, 5, 15 min): {load} at start, {load_average()} at end.")
    return result


def _plot(result: Result, tallies: dict[str, _Tally]) -> None:
    path = IMG / "bench_transport.png"
    bars = {name: _rate(tally) for name, tally in tallies.items()}
    if plot_bars(path, title="Senders, fast receiver", ylabel="requests/s", bars=bars, digits=0):
        result.plots.append(Plot(path, "Requests per second, same receiver, same run"))


async def run(quick: bool) -> Result:
    """The suite's entry (python -m benchmarks): smaller when ``quick``."""
    return await measure_senders(5000 if quick else 20_000, 64, 1 if quick else 2, plot=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="requests per sender, per round")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating the order")
    args = parser.parse_args(argv)
    if min(args.count, args.concurrency, args.rounds) < 1:
        parser.error("--count, --concurrency and --rounds must be positive")
    result: Result = run_loop(
        measure_senders(args.count, args.concurrency, args.rounds, plot=False)
    )
    print_result(result, console())
    return 1 if any(row[-1] != "0" for row in result.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
