"""The HTTP seam: send one request, get one Outcome, never an exception for the network.

``Transport`` is what the dispatcher needs; ``AiohttpTransport`` is the real one (one
keep-alive session, redirects off, the response body read up to 64 KiB). Tests and other
senders can put any object with ``send`` and ``aclose`` in its place.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from aiohttp.abc import AbstractResolver

from hookstage.egress import ERROR_CLASS as EGRESS_REFUSED
from hookstage.egress import EgressRefused

__all__ = [
    "MAX_RESPONSE_BODY",
    "AiohttpTransport",
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
    "tls", "dns", "protocol", "egress-refused", with a human ``error`` message)."""

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


class AiohttpTransport:
    """aiohttp with one keep-alive ``ClientSession`` (made on first use, inside the loop).

    ``limit`` bounds all connections, ``limit_per_host`` those to one host; the dispatcher
    bounds concurrency itself, so these only need to be at least as large. ``socket_factory``
    is passed to aiohttp's connector, which calls it with the exact address of every
    connection attempt (the place for an egress guard to refuse one by raising OSError);
    ``resolver`` replaces aiohttp's DNS resolver (closed with the transport).
    """

    def __init__(
        self,
        *,
        limit: int = 256,
        limit_per_host: int = 64,
        connect_timeout: float = 10.0,
        max_body: int = MAX_RESPONSE_BODY,
        socket_factory: aiohttp.SocketFactoryType | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._connect_timeout = connect_timeout
        self._max_body = max_body
        self._socket_factory = socket_factory
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._limit_per_host,
                socket_factory=self._socket_factory,
                resolver=self._resolver,
            )
            # No cookie jar: one receiver's cookies must never reach another.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def send(self, request: OutboundRequest) -> Outcome:
        session = self._open()
        timeout = aiohttp.ClientTimeout(
            total=request.timeout, connect=min(request.timeout, self._connect_timeout)
        )
        started = time.perf_counter()
        try:
            async with session.post(
                request.url,
                data=request.body,
                headers=dict(request.headers),
                allow_redirects=False,
                timeout=timeout,
                ssl=True if request.ssl is None else request.ssl,
            ) as response:
                body = await _read_start(response.content, self._max_body)
                headers = {key: ", ".join(response.headers.getall(key)) for key in response.headers}
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            error_class, error = classify_error(exc, timeout=request.timeout)
            return Outcome.failure(error_class, error, duration_ms=_since(started))
        return Outcome(status, headers, body, _since(started))

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._resolver is not None:
            await self._resolver.close()


async def _read_start(stream: aiohttp.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def classify_error(exc: BaseException, *, timeout: float) -> tuple[str, str]:
    """(error_class, message) for an exception raised while sending."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # the connect limit, not the total
        return "connect-timeout", "no connection within the connect timeout"
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts subclass it too
        return "timeout", f"no complete answer within {timeout:g} s"
    refused = getattr(exc, "os_error", exc)
    if isinstance(refused, EgressRefused):
        return EGRESS_REFUSED, _message(refused)
    return _error_class(exc), _message(exc)


def _error_class(exc: BaseException) -> str:  # noqa: PLR0911 - a flat lookup reads best
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch, ssl.SSLError)):
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "refused" if isinstance(exc.os_error, ConnectionRefusedError) else "connect"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        return "protocol"
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return "url"
    if isinstance(exc, OSError):
        return "connect"
    return "client"


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 1] + "…"
