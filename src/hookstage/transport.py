"""The HTTP seam: send one request, get one Outcome, never an exception for the network.

``Transport`` is what the dispatcher needs; ``HttpTransport`` is the real one: a lean
HTTP/1.1 client (``hookstage.pool``: asyncio protocols, httptools' parser, keep-alive
connections per origin), redirects never followed, the response body read up to 64 KiB.
Tests and other senders can put any object with ``send`` and ``aclose`` in its place.
"""

from __future__ import annotations

import functools
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol
from urllib.parse import SplitResult, quote, urlsplit

from hookstage.egress import ERROR_CLASS as EGRESS_REFUSED
from hookstage.egress import EgressPolicy, EgressRefused
from hookstage.pool import (
    Answer,
    Closed,
    ConnectTimeout,
    Origin,
    Pool,
    ProtocolError,
    RawHeaders,
    Resolver,
)

__all__ = [
    "MAX_RESPONSE_BODY",
    "HttpTransport",
    "OutboundRequest",
    "Outcome",
    "Transport",
    "classify_error",
]

MAX_RESPONSE_BODY = 64 * 1024
_MAX_ERROR_TEXT = 500


@dataclass(frozen=True)
class OutboundRequest:
    """One POST. Headers carry signatures and maybe a bearer token: kept out of repr.
    ``ssl``: the TLS context to verify an https receiver with (None: the system's CAs)."""

    url: str
    body: bytes = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    timeout: float = 10.0
    ssl: ssl.SSLContext | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Outcome:
    """How one request ended: an HTTP answer (``status``) or a network error
    (``error_class`` such as "timeout", "connect-timeout", "connect", "refused", "reset",
    "tls", "dns", "protocol", "egress-refused", "url", with a human ``error`` message)."""

    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    duration_ms: float = 0.0
    error_class: str | None = None
    error: str | None = None

    @classmethod
    def failure(cls, error_class: str, error: str, *, duration_ms: float = 0.0) -> Outcome:
        return cls(None, duration_ms=duration_ms, error_class=error_class, error=error)

    def header(self, name: str) -> str | None:
        """A response header by case-insensitive name."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


class Transport(Protocol):
    async def send(self, request: OutboundRequest) -> Outcome: ...

    async def aclose(self) -> None: ...


class HttpTransport:
    """HTTP/1.1 POSTs over keep-alive connections (the pool is made on first use, inside
    the running loop; ``aclose`` closes it, and a later ``send`` makes a new one).

    ``limit`` bounds all connections (the dispatcher bounds each endpoint itself);
    ``connect_timeout`` bounds resolving, connecting and the TLS handshake (capped by the
    request's timeout); ``idle_timeout`` closes keep-alive connections idle that long (Node
    servers close theirs at 5 s). ``egress``: the policy every address is screened by
    before a connection is made to it (None: no guard). ``resolver``: ``async (host, port)
    -> IP literals``, the system's by default.
    """

    def __init__(
        self,
        *,
        limit: int = 256,
        connect_timeout: float = 10.0,
        idle_timeout: float = 4.0,
        max_body: int = MAX_RESPONSE_BODY,
        egress: EgressPolicy | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit: expected at least 1 connection, got {limit!r}")
        for name, value in (("connect_timeout", connect_timeout), ("idle_timeout", idle_timeout)):
            if not value > 0:
                raise ValueError(f"{name}: expected seconds > 0, got {value!r}")
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._max_body = max_body
        self._egress = egress
        self._resolver = resolver
        self._pool: Pool | None = None

    def _opened(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(
                limit=self._limit,
                idle_timeout=self._idle_timeout,
                max_body=self._max_body,
                resolver=self._resolver,
                egress=self._egress,
            )
        return self._pool

    async def send(self, request: OutboundRequest) -> Outcome:
        started = time.perf_counter()
        try:
            target = _target(request.url)
        except ValueError as exc:
            return Outcome.failure("url", str(exc), duration_ms=_since(started))
        try:
            head = _head(target, request)
        except ValueError as exc:
            return Outcome.failure("client", str(exc), duration_ms=_since(started))
        pool = self._opened()
        tls = (request.ssl or _default_tls()) if target.secure else None
        origin = Origin(target.host, target.port, tls)
        try:
            deadline = pool.loop.time() + request.timeout
            answer = await self._exchange(pool, origin, (head, request.body), deadline)
        except (OSError, ProtocolError) as exc:
            error_class, error = classify_error(exc, timeout=request.timeout)
            return Outcome.failure(error_class, error, duration_ms=_since(started))
        return Outcome(answer.status, _headers(answer.headers), answer.body, _since(started))

    async def _exchange(
        self, pool: Pool, origin: Origin, data: tuple[bytes, bytes], deadline: float
    ) -> Answer:
        conn = pool.take(origin)
        if conn is not None:
            try:
                answer = await conn.request(data, deadline)
            except Closed as exc:
                # The receiver closed this idle keep-alive connection as we reused it: no
                # byte of an answer came, so send once more on a fresh connection. Delivery
                # is at-least-once, so a receiver that did get the request sees a repeat it
                # must allow anyway; without this, every stale connection would cost a
                # delivery a whole retry-schedule delay.
                if exc.answered:
                    raise
            except BaseException:
                conn.close()  # cancelled, timed out or broken: never reused
                raise
            else:
                pool.release(conn)
                return answer
        connect_by = min(pool.loop.time() + self._connect_timeout, deadline)
        conn = await pool.open(origin, connect_by)
        try:
            answer = await conn.request(data, deadline)
        except BaseException:
            conn.close()
            raise
        pool.release(conn)
        return answer

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()


@functools.cache
def _default_tls() -> ssl.SSLContext:
    # One context for every request without its own: their connections share a pool.
    return ssl.create_default_context()


class _Target(NamedTuple):
    host: str
    port: int
    secure: bool
    authority: str  # the Host header
    path: str  # the request target: path and query, percent-encoded


_HOST = re.compile(r"[A-Za-z0-9._~%:!$&'()*+,;=-]+")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_OURS = frozenset({"content-length", "transfer-encoding", "expect"})  # we frame the body


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> _Target:
    """Where ``url`` goes. The messages never repeat the URL: it may carry a token."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("url: expected an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url: credentials (user:password@) are not sent; use auth instead")
    host = _host(parts.hostname or "")
    default = 443 if scheme == "https" else 80
    port = _port(parts, default)
    authority = f"[{host}]" if ":" in host else host
    if port != default:
        authority += f":{port}"
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return _Target(host, port, scheme == "https", authority, path)


def _host(host: str) -> str:
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("url: the host is not a valid international name") from None
    if not _HOST.fullmatch(host):
        raise ValueError("url: expected a host name or IP address")
    return host


def _port(parts: SplitResult, default: int) -> int:
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = 0
    if port is None:
        return default
    if not 0 < port < 65536:
        raise ValueError("url: expected a port between 1 and 65535")
    return port


def _head(target: _Target, request: OutboundRequest) -> bytes:
    """The request line and headers: Host, Content-Length, then the caller's (a Host of
    theirs replaces ours; framing headers of theirs are dropped: the body is ours to frame).
    Messages name a bad header, never its value (it may be a signature or a token)."""
    host = target.authority
    lines: list[str] = []
    for name, value in request.headers.items():
        kind = _kind(name)
        if kind is _PLAIN:
            lines.append(f"{name}: {value}\r\n")
        elif kind is _HOST_HEADER:
            host = value
    block = "".join(lines)
    # Names are tokens, so a value with a line break is the only way to smuggle in more.
    if block.count("\n") != len(lines) or block.count("\r") != len(lines) or not _safe(host):
        raise ValueError(f"headers: {_broken(request.headers)}: line breaks are not allowed")
    return (
        f"POST {target.path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Length: {len(request.body)}\r\n{block}\r\n"
    ).encode()


_PLAIN, _HOST_HEADER, _FRAMING = "plain", "host", "framing"


@functools.lru_cache(maxsize=512)
def _kind(name: str) -> str:
    """What a caller's header name is to the request head; ValueError if not a name."""
    if _TOKEN.fullmatch(name) is None:
        raise ValueError(f"headers: {name!r} is not a valid header name")
    lowered = name.lower()
    if lowered == "host":
        return _HOST_HEADER
    return _FRAMING if lowered in _OURS else _PLAIN


def _safe(value: str) -> bool:
    return "\r" not in value and "\n" not in value


def _broken(headers: Mapping[str, str]) -> str:
    return next(k for k, v in headers.items() if not _safe(v))


def _headers(raw: RawHeaders) -> dict[str, str]:
    """The response headers, a name given more than once joined with ", " (the first
    spelling of the name is kept). Bytes that are not UTF-8 become U+FFFD: the headers are
    stored as JSON, which holds text only."""
    values: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("utf-8", "replace")
        first = spelling.setdefault(name.lower(), name)
        values.setdefault(first, []).append(raw_value.decode("utf-8", "replace"))
    return {name: ", ".join(parts) for name, parts in values.items()}


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def classify_error(exc: BaseException, *, timeout: float) -> tuple[str, str]:
    """(error_class, message) for an exception raised while sending."""
    if isinstance(exc, ConnectTimeout):  # the connect limit, not the total
        return "connect-timeout", "no connection within the connect timeout"
    if isinstance(exc, TimeoutError):
        return "timeout", f"no complete answer within {timeout:g} s"
    if isinstance(exc, EgressRefused):
        return EGRESS_REFUSED, _message(exc)
    return _error_class(exc), _message(exc)


def _error_class(exc: BaseException) -> str:  # noqa: PLR0911 - a flat lookup reads best
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, ProtocolError):
        return "protocol"
    if isinstance(exc, ValueError):
        return "url"
    if isinstance(exc, OSError):
        return "connect"
    return "client"


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 1] + "…"
