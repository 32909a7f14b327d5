"""How much one request may carry. Each limit refuses with a 4xx whose message names it.

- the body: ``MAX_BODY`` bytes (``--max-body``), checked on the declared length and again
  on the bytes read, so a chunked body cannot slip past (413);
- JSON nesting ``MAX_DEPTH`` levels and ``MAX_STRING`` characters per string (422);
- ``MAX_ASSETS`` assets per import request, ``MAX_ANNOTATIONS`` tools (classifications,
  relations) per task, ``MAX_NAME`` characters for names, ids and users (422).
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hookstage.api.errors import ApiError, error_body

__all__ = [
    "MAX_ANNOTATIONS",
    "MAX_ASSETS",
    "MAX_BODY",
    "MAX_DEPTH",
    "MAX_NAME",
    "MAX_STRING",
    "BodyLimit",
    "check_json",
    "json_problem",
]

MAX_BODY: Final = 10 * 1024 * 1024
MAX_DEPTH: Final = 64
MAX_STRING: Final = 1024 * 1024
MAX_ASSETS: Final = 10_000
MAX_ANNOTATIONS: Final = 10_000
MAX_NAME: Final = 1_000


def _size(count: int) -> str:
    if count >= 1024 * 1024 and count % (1024 * 1024) == 0:
        return f"{count // (1024 * 1024)} MiB ({count} bytes)"
    return f"{count} bytes"


def _too_large(limit: int) -> str:
    return (
        f"the request body is larger than the limit of {_size(limit)}"
        " (the server's --max-body): send less, e.g. import in smaller chunks"
    )


# A refused body is read and dropped up to this many times the limit before the answer, so
# a client still sending it reads the 413 instead of a reset connection; past that, it is cut.
_DRAIN_FACTOR: Final = 4


async def _drain(receive: Receive, budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimit:
    """ASGI middleware refusing a request body over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        if limit < 1:
            raise ValueError(f"limit: expected bytes >= 1, got {limit!r}")
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.limit:
            if declared <= self.limit * _DRAIN_FACTOR:
                await _drain(receive, declared)
            await _refuse(send, _too_large(self.limit))
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    if message.get("more_body", False):
                        await _drain(receive, self.limit * (_DRAIN_FACTOR - 1))
                    # HTTPException passes through FastAPI's body parsing as it is.
                    raise HTTPException(413, _too_large(self.limit))
            return message

        return counted


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


async def _refuse(send: Send, message: str) -> None:
    body = orjson.dumps(error_body(message, [("body", message)]))
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_Entry = tuple[Any, int, "_Entry | None", object]  # value, depth, parent, key in the parent


def json_problem(value: Any, path: str = "body") -> tuple[str, str] | None:
    """The first place where ``value`` (parsed JSON) nests deeper than ``MAX_DEPTH`` or holds a
    string (or key) longer than ``MAX_STRING``, as ``(path, message)``; None if it does not.
    Iterative (a hostile depth cannot exhaust the stack), and paths are only built for the
    answer: a 10 MiB body is walked in a fraction of a second."""
    if isinstance(value, str):
        return (path, _LONG_STRING) if len(value) > MAX_STRING else None
    if not isinstance(value, list | dict):
        return None
    stack: list[_Entry] = [(value, 1, None, None)]
    while stack:
        entry = stack.pop()
        item, depth = entry[0], entry[1]
        if depth > MAX_DEPTH:
            return _path(entry, path), f"nests deeper than the limit of {MAX_DEPTH} levels"
        for key, child in item.items() if isinstance(item, dict) else enumerate(item):
            if isinstance(key, str) and len(key) > MAX_STRING:
                return _path(entry, path), _LONG_KEY
            if isinstance(child, str):
                if len(child) > MAX_STRING:
                    return _path((child, depth + 1, entry, key), path), _LONG_STRING
            elif isinstance(child, list | dict):
                stack.append((child, depth + 1, entry, key))
    return None


_LONG_STRING: Final = f"is a string longer than the limit of {MAX_STRING} characters"
_LONG_KEY: Final = f"has a key longer than the limit of {MAX_STRING} characters"


def _path(entry: _Entry, root: str) -> str:
    parts: list[str] = []
    current: _Entry | None = entry
    while current is not None and current[3] is not None:
        key = current[3]
        parts.append(f"[{key}]" if isinstance(key, int) else f".{_key(key)}")
        current = current[2]
    return root + "".join(reversed(parts))


def _key(key: object) -> str:
    text = str(key)
    return text if len(text) <= 40 else text[:37] + "..."


def check_json(value: Any, path: str = "body") -> None:
    """Raise ApiError 422 naming the limit when ``json_problem`` finds one."""
    problem = json_problem(value, path)
    if problem is not None:
        where, message = problem
        raise ApiError(422, f"{where}: {message}", [problem])
