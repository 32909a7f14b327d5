"""HTTP/1.1 client connections on asyncio protocols, and a keep-alive pool per origin.

A :class:`Connection` carries one request at a time: it writes the request head and body,
feeds what arrives to httptools' response parser (which decodes chunked bodies) and
resolves one future with the :class:`Answer`. The body kept is at most ``max_body`` bytes:
a longer one ends the exchange there and the connection is closed rather than read on.

A :class:`Pool` keeps idle connections per :class:`Origin` (host, port and the TLS
context: a connection opened under one stage's CA bundle never carries a request that
asked for another), closes those idle longer than ``idle_timeout``, and bounds all
connections, open or opening, by ``limit``. It opens connections itself: resolve the host,
put the addresses through the egress guard (the addresses screened are the ones
connected to), connect a non-blocking socket, then TLS when the origin has a context.

Errors are the standard library's (``OSError`` and its kin, ``ssl.SSLError``,
``socket.gaierror``), :class:`~hookstage.egress.EgressRefused`, or this module's own
(:class:`ProtocolError`, :class:`Closed`, :class:`ConnectTimeout`,
:class:`RequestTimeout`); the transport turns them into outcomes.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, TypeAlias, cast

import httptools

from hookstage.egress import EgressPolicy

__all__ = [
    "Answer",
    "Closed",
    "ConnectTimeout",
    "Connection",
    "Origin",
    "Pool",
    "ProtocolError",
    "RawHeaders",
    "RequestTimeout",
    "Resolver",
    "resolve",
]

# (host, port) -> the host's addresses as IP literals, in the order to try them.
Resolver: TypeAlias = Callable[[str, int], Awaitable[Sequence[str]]]
RawHeaders: TypeAlias = list[tuple[bytes, bytes]]

_FRAMING = (b"content-length", b"transfer-encoding")
# An answer's headers are kept with its attempt: a receiver may not make that unbounded.
MAX_HEADER_BYTES = 64 * 1024


class Origin(NamedTuple):
    """Where a connection goes: connections are shared only within one origin."""

    host: str
    port: int
    tls: ssl.SSLContext | None


class Answer(NamedTuple):
    """One HTTP response: status, raw headers in order, and at most ``max_body`` bytes."""

    status: int
    headers: RawHeaders
    body: bytes


class ProtocolError(Exception):
    """The receiver answered something that is not a readable HTTP/1.1 response."""


class Closed(ConnectionResetError):
    """The connection ended before the answer was complete. ``answered``: whether any
    byte of the answer had arrived (none: the request may never have been read)."""

    def __init__(self, answered: bool) -> None:
        what = "in the middle of the answer" if answered else "before any answer"
        super().__init__(errno.ECONNRESET, f"the connection closed {what}")
        self.answered = answered


class ConnectTimeout(TimeoutError):
    """No connection within the connect timeout."""


class RequestTimeout(TimeoutError):
    """No complete answer before the request's deadline."""


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; ``request`` may be called again once an answer arrived
    and ``reusable`` is still true."""

    def __init__(self, origin: Origin, max_body: int) -> None:
        self.origin = origin
        self.reusable = True
        self.lost = False  # connection_lost has been called: the socket is closed
        self.idle_since = 0.0
        self._max_body = max_body
        self._on_gone: Callable[[Connection], None] | None = None
        self._on_lost: Callable[[Connection], None] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._loop = asyncio.get_running_loop()
        # One timer, moved lazily: it fires at the deadline it was set for and then looks at
        # the current one, so a request costs a float, not a timer of its own.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._answered = False
        self._status = 0
        self._framed = False
        self._headers: RawHeaders = []
        self._body: list[bytes] = []
        self._size = 0
        self._header_bytes = 0

    # -- use ------------------------------------------------------------------------------

    def attach(
        self, on_gone: Callable[[Connection], None], on_lost: Callable[[Connection], None]
    ) -> bool:
        """Call ``on_gone`` once when the connection stops being usable (closed by either
        side) and ``on_lost`` once its socket is closed; False if that already happened."""
        if self.lost:
            return False
        self._on_gone, self._on_lost = on_gone, on_lost
        return True

    def request(self, data: Sequence[bytes], deadline: float) -> asyncio.Future[Answer]:
        """Write ``data`` (head, body) and return the future of the answer; it fails with
        RequestTimeout at ``deadline`` (the loop's clock), Closed, or ProtocolError."""
        transport = self._transport
        assert transport is not None, "request before the connection was made"
        waiter: asyncio.Future[Answer] = self._loop.create_future()
        self._answered = False
        self._status = 0  # nothing of this answer yet: connection_lost must not see the last
        if transport.is_closing():
            waiter.set_exception(Closed(answered=False))
            self.close()
            return waiter
        self._waiter = waiter
        self._deadline = deadline
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        transport.writelines(data)
        return waiter

    def close(self) -> None:
        """Close now, failing an answer still awaited (a cancelled request lands here)."""
        self.reusable = False
        self._disarm()
        if self._transport is not None:
            self._transport.abort()
        if self._waiter is not None:
            self._fail(Closed(self._answered))
        self._gone()

    def close_idle(self) -> None:
        """Close politely (TLS says goodbye): for a connection with nothing in flight."""
        self.reusable = False
        self._disarm()
        if self._transport is not None:
            self._transport.close()
        self._gone()

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._check)
        self._timer_at = at

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._waiter is None:
            return  # nothing in flight: the next request arms the timer again
        if self._loop.time() < self._deadline:
            self._arm(self._deadline)  # set for an earlier request; this one has longer
            return
        self._fail(RequestTimeout())
        self.close()

    def _finish(self, answer: Answer) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        self.reusable = False
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _broken(self, exc: BaseException) -> None:
        self._fail(exc)
        self.close()

    def _gone(self) -> None:
        on_gone, self._on_gone = self._on_gone, None
        if on_gone is not None:
            on_gone(self)

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self.lost = True
        self._disarm()
        if self._waiter is not None:
            if self._status >= 200 and not self._framed:
                # No Content-Length, not chunked: the body is whatever came before EOF.
                self._finish(Answer(self._status, self._headers, b"".join(self._body)))
            elif self._status >= 200:
                self._fail(ProtocolError("the connection closed before the body was complete"))
            else:
                self._fail(Closed(self._answered))
        self._gone()
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost(self)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing asked: a receiver talking out of turn
            self.close()
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken(ProtocolError("the receiver switched protocols (101)"))
        except httptools.HttpParserError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ProtocolError):
                self._broken(cause)
            else:
                self._broken(ProtocolError(f"not an HTTP/1.1 answer: {_reason(exc)}"))
        except ProtocolError as exc:
            self._broken(exc)

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second answer to one request
            self.reusable = False
            return
        self._status = 0
        self._framed = False
        self._headers = []
        self._body = []
        self._size = 0
        self._header_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._waiter is None or self._status:  # a chunked body's trailer
            return
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            # Raised out of the parser: feed_data fails and the connection is dropped.
            raise ProtocolError(f"the answer's headers exceed {MAX_HEADER_BYTES // 1024} KiB")
        self._headers.append((name, value))
        if name.lower() in _FRAMING:
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, chunk: bytes) -> None:
        if self._waiter is None:
            return
        room = self._max_body - self._size
        if len(chunk) <= room:
            self._body.append(chunk)
            self._size += len(chunk)
            return
        # Enough: keep the start, and close rather than read a huge body to its end.
        self._body.append(chunk[:room])
        self._finish(Answer(self._status, self._headers, b"".join(self._body)))
        self.close()

    def on_message_complete(self) -> None:
        if self._waiter is None:
            return
        status = self._status
        if status < 200:
            if status == 101:
                self._broken(ProtocolError("the receiver switched protocols (101)"))
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        transport = self._transport
        self.reusable = (
            self.reusable
            and self._parser.should_keep_alive()
            and transport is not None
            and not transport.get_write_buffer_size()  # answered before reading it all
        )
        self._finish(Answer(status, self._headers, b"".join(self._body)))


def _reason(exc: Exception) -> str:
    # llhttp's reasons are fixed phrases; never the bytes received.
    text = str(exc)
    return text[:100] if text else type(exc).__name__


class Pool:
    """Keep-alive connections per origin; at most ``limit`` connections in all.

    ``take`` gives an idle connection (or None); ``open`` makes one, waiting for room when
    ``limit`` is reached (closing another origin's idle connection first if there is one);
    ``release`` puts a connection back when it is ``reusable``, else closes it.
    """

    def __init__(
        self,
        *,
        limit: int,
        idle_timeout: float,
        max_body: int,
        resolver: Resolver | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit: expected at least 1 connection, got {limit!r}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout: expected seconds > 0, got {idle_timeout!r}")
        self._loop = asyncio.get_running_loop()
        self._limit = limit
        self._idle_timeout = idle_timeout
        self._max_body = max_body
        self._resolve = resolver or resolve
        self._egress = egress
        self._idle: dict[Origin, list[Connection]] = {}
        self._all: set[Connection] = set()
        self._count = 0  # connections open or opening
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._emptied: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def take(self, origin: Origin) -> Connection | None:
        """An idle connection to ``origin``, the most recently used, or None."""
        stack = self._idle.get(origin)
        while stack:
            conn = stack.pop()
            if not conn.reusable:  # the receiver closed it while it was idle
                continue
            if self._loop.time() - conn.idle_since >= self._idle_timeout:
                conn.close_idle()  # the rest are older still
                continue
            return conn
        return None

    def release(self, conn: Connection) -> None:
        if not conn.reusable or self._closed:
            conn.close()
            return
        conn.idle_since = self._loop.time()
        stack = self._idle.get(conn.origin)
        if stack is None:
            stack = self._idle[conn.origin] = []
        stack.append(conn)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._idle_timeout / 4, self._sweep)
        if self._waiters:
            self._wake()

    async def open(self, origin: Origin, deadline: float) -> Connection:
        """A new connection to ``origin`` (or an idle one that turned up while waiting for
        room), within ``deadline`` (the loop's clock) or ConnectTimeout."""
        if self._closed:
            raise Closed(answered=False)
        try:
            async with asyncio.timeout_at(deadline):
                conn = await self._room(origin)
                if conn is not None:
                    return conn
                try:
                    conn = await self._connect(origin, deadline)
                except BaseException:
                    self._free()
                    raise
        except TimeoutError as exc:  # the deadline, or the kernel's ETIMEDOUT
            raise ConnectTimeout("no connection within the connect timeout") from exc
        if not conn.attach(self._gone, self._lost):
            self._free()
            raise Closed(answered=False)
        self._all.add(conn)
        if self._closed:
            conn.close()
            raise Closed(answered=False)
        return conn

    async def aclose(self) -> None:
        """Close every connection, idle or busy (a request in flight fails), and return
        once their sockets are closed."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(Closed(answered=False))
        self._idle.clear()
        if self._all:
            self._emptied = self._loop.create_future()
            for conn in list(self._all):
                conn.close()
            # An aborted transport reports its end on the next turn of the loop; the bound
            # only keeps a misbehaving one from holding up shutdown.
            await asyncio.wait({self._emptied}, timeout=1.0)

    # -- room under the limit ---------------------------------------------------------------

    async def _room(self, origin: Origin) -> Connection | None:
        """Reserve room for one more connection; or, when an idle connection to ``origin``
        turns up while waiting, that connection (no room reserved)."""
        while self._count >= self._limit:
            if self._closed:
                raise Closed(answered=False)
            found = self.take(origin)
            if found is not None:
                return found
            if self._evict():
                continue
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # the wake-up was for us: pass it on
                raise
        self._count += 1
        return None

    def _evict(self) -> bool:
        """Close the oldest idle connection of any origin; False when none is idle."""
        for stack in self._idle.values():
            while stack:
                conn = stack.pop(0)
                if conn.reusable:
                    conn.close_idle()
                    return True
        return False

    def _free(self) -> None:
        self._count -= 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _gone(self, conn: Connection) -> None:
        self._free()  # once per connection, whichever side closed it

    def _lost(self, conn: Connection) -> None:
        self._all.discard(conn)
        if not self._all and self._emptied is not None and not self._emptied.done():
            self._emptied.set_result(None)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self._loop.time() - self._idle_timeout
        for origin, stack in list(self._idle.items()):
            kept = []
            for conn in stack:
                if conn.reusable and conn.idle_since > cutoff:
                    kept.append(conn)
                elif conn.reusable:
                    conn.close_idle()
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if self._idle:
            self._sweeper = self._loop.call_later(self._idle_timeout / 4, self._sweep)

    # -- connecting -----------------------------------------------------------------------

    async def _connect(self, origin: Origin, deadline: float) -> Connection:
        addresses = list(await self._resolve(origin.host, origin.port))
        if self._egress is not None:
            addresses = self._egress.admit(origin.host, addresses)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{origin.host} resolved to no address")
        sock = await _connected(self._loop, addresses, origin.port)
        try:
            _, conn = await self._loop.create_connection(
                lambda: Connection(origin, self._max_body),
                sock=sock,
                ssl=origin.tls,
                server_hostname=origin.host if origin.tls is not None else None,
                # The deadline above ends a slow handshake as a connect timeout; this is
                # only asyncio's own limit kept from ending it first as something else.
                ssl_handshake_timeout=(
                    max(deadline - self._loop.time(), 0.0) + 1.0 if origin.tls is not None else None
                ),
            )
        except BaseException:
            sock.close()
            raise
        return conn


async def _connected(
    loop: asyncio.AbstractEventLoop, addresses: Sequence[str], port: int
) -> socket.socket:
    """A socket connected to the first of ``addresses`` that accepts; else the last error."""
    error: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:  # e.g. IPv6 disabled on this host: try the next address
            error = exc
            continue
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, (address, port))
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    assert error is not None, "no address to connect to"
    raise error


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system's resolver (an IP literal is its own)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except UnicodeError as exc:  # a name IDNA cannot encode (an empty or 64+ letter label)
        raise socket.gaierror(socket.EAI_NONAME, "the host name cannot be looked up") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in found))
