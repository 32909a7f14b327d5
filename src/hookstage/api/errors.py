"""Every failure answers in one JSON shape: `{"error": {"message", "problems": [{path, message}]}}`.

Engine refusals map to 404 / 422 / 409, request validation to 422 with the field's path,
malformed JSON to 400. Messages never carry input values (a body may hold a secret), and an
unexpected failure is a plain 500 without a traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from hookstage.engine import Conflict, EngineError, Invalid, NotFound
from hookstage.store import StoreError

__all__ = ["ApiError", "body_problems", "error_body", "install", "path_of"]

log = logging.getLogger("hookstage.api")

_SHOWN = 3
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "datetime_type": "an ISO-8601 time such as 2024-05-01T12:00:00Z",
    "datetime_parsing": "an ISO-8601 time such as 2024-05-01T12:00:00Z",
    "datetime_from_date_parsing": "an ISO-8601 time such as 2024-05-01T12:00:00Z",
}


class ApiError(Exception):
    """A refusal decided in the API layer itself (auth, content type, body framing)."""

    def __init__(
        self,
        status: int,
        message: str,
        problems: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = list(problems)
        self.headers = dict(headers or {})


def error_body(message: str, problems: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "problems": [{"path": path, "message": text} for path, text in problems],
        }
    }


def _respond(
    status: int,
    message: str,
    problems: Iterable[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, problems), status_code=status, headers=headers)


@contextmanager
def body_problems(prefix: str = "body") -> Iterator[None]:
    """Engine problem paths are relative to what it was given: root them in the request."""
    try:
        yield
    except EngineError as exc:
        problems = [(_join(prefix, path), text) for path, text in exc.problems]
        raise type(exc)(exc.message, problems) from exc


def _join(prefix: str, path: str) -> str:
    if not path or path == "$":
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def path_of(loc: Iterable[int | str]) -> str:
    """`("body", "tools", 0)` -> `body.tools[0]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _kind(value: object) -> str:
    """The JSON kind of a value: never the value itself, which may be a secret."""
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"),
        ((int, float), "a number"),
        (str, "a string"),
        ((list, tuple), "a list"),
        (dict, "an object"),
        ((bytes, bytearray), "a non-JSON body"),
    ]
    if value is None:
        return "null"
    return next((name for kind, name in kinds if isinstance(value, kind)), "a value")


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    fixed = {"missing": "required", "extra_forbidden": "unknown field"}
    if kind in fixed:
        return fixed[kind]
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_kind(error.get('input'))}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}"
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        bound = next(iter(ctx.values()), "?")
        sign = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">"}
        return f"expected a number {sign.get(kind, '<')} {bound}"
    if kind in {"string_too_short", "too_short"}:
        return "expected a non-empty value"
    # pydantic's own messages name the expectation and never the input.
    return str(error.get("msg", "invalid value"))


def _validation_problems(errors: Sequence[Any]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for error in errors:
        # Union members add their type names to the location: users never see those.
        loc = [p for p in error.get("loc", ()) if not (isinstance(p, str) and "[" in p)]
        seen[(path_of(loc), _message(error))] = None
    return list(seen)


def _summary(lead: str, problems: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"{path}: {text}" for path, text in problems[:_SHOWN])
    more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
    return f"{lead}: {shown}{more}" if shown else lead


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if broken is not None:
        reason = (broken.get("ctx") or {}).get("error", "not JSON")
        where = broken.get("loc", ("body", 0))[-1]
        message = f"malformed JSON in the request body: {reason} (at character {where})"
        return _respond(400, message, [("body", message)])
    problems = _validation_problems(errors)
    return _respond(422, _summary("invalid request", problems), problems)


async def _on_engine(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    status = 400
    if isinstance(exc, NotFound):
        status = 404
    elif isinstance(exc, Invalid):
        status = 422
    elif isinstance(exc, Conflict):
        status = 409
    return _respond(status, exc.message, exc.problems)


async def _on_api(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _respond(exc.status, exc.message, exc.problems, exc.headers)


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, RecursionError):
        # FastAPI's JSON parsing gave up on a body nested past what the parser can follow.
        from hookstage.api.limits import MAX_DEPTH

        message = f"the request body nests deeper than the limit of {MAX_DEPTH} levels"
        return _respond(400, message, [("body", message)])
    messages = {404: "no such endpoint", 405: "method not allowed on this endpoint"}
    detail = exc.detail if isinstance(exc.detail, str) else None
    message = messages.get(exc.status_code) or detail or "request refused"
    return _respond(exc.status_code, message, headers=exc.headers)


async def _on_store(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return _respond(503, "the database is busy or unavailable: try again shortly")


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # One line here: the server logs the traceback itself when the exception propagates on.
    log.error("unexpected %s in %s %s", type(exc).__name__, request.method, request.url.path)
    return _respond(500, "internal error: the failure was logged on the server")


def install(app: FastAPI) -> None:
    """Register the handlers that give every failure the one JSON shape."""
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(EngineError, _on_engine)
    app.add_exception_handler(ApiError, _on_api)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(StoreError, _on_store)
    app.add_exception_handler(Exception, _on_unexpected)
