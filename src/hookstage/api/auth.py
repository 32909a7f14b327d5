"""API keys: who is calling, and whether their role allows the call.

A key is presented as `Authorization: Bearer <key>`, `X-API-Key: <key>`, or Ango's
`apikey: <key>` header. Roles are ordered admin > manager > labeler > read-only; a route
names the least role it needs.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from hookstage.api.errors import ApiError
from hookstage.engine import ROLES, ApiKey, Engine

__all__ = [
    "Admin",
    "EngineDep",
    "Labeler",
    "Manager",
    "Reader",
    "document",
    "engine_of",
    "require",
]

# The three ways to present a key, as OpenAPI shows them.
_SCHEMES: dict[str, dict[str, str]] = {
    "Bearer": {"type": "http", "description": "an API key as a bearer token", "scheme": "bearer"},
    "X-API-Key": {
        "type": "apiKey",
        "description": "an API key",
        "in": "header",
        "name": "X-API-Key",
    },
    "apikey": {
        "type": "apiKey",
        "description": "an API key (Ango's header)",
        "in": "header",
        "name": "apikey",
    },
}

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def engine_of(request: Request) -> Engine:
    # async: FastAPI runs a plain function dependency in a worker thread, a trip per request.
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(engine_of)]


def _presented(request: Request) -> set[str]:
    """The key values the request carries, by any of the three ways (empty ones ignored)."""
    headers = request.headers
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else None
    return {v for v in (bearer, headers.get("x-api-key"), headers.get("apikey")) if v}


def _allows(held: str, needed: str) -> bool:
    # ROLES runs from most to least powerful; an unknown stored role allows nothing.
    return held in ROLES and ROLES.index(held) <= ROLES.index(needed)


def require(role: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency giving the calling key, refusing one whose role is below `role`."""
    if role not in ROLES:
        raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")

    # One dependency reading the headers itself: FastAPI's security dependencies (one per
    # way, each solved on every request) cost about 300 Python calls a request, a tenth of
    # a submit's. `document` shows the ways in OpenAPI instead.
    async def caller(request: Request) -> ApiKey:
        given = _presented(request)
        if not given:
            raise ApiError(
                401,
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key`",
                headers=_CHALLENGE,
            )
        if len(given) > 1:
            # Which one should win is a guess; guessing wrong grants the wrong role.
            raise ApiError(401, "different API keys were sent: send one", headers=_CHALLENGE)
        key = await (await engine_of(request)).authenticate(given.pop())
        if key is None:
            raise ApiError(401, "the API key is unknown, revoked or expired", headers=_CHALLENGE)
        if not _allows(key.role, role):
            raise ApiError(
                403, f"this call needs the {role} role or higher; this key's role is {key.role}"
            )
        return key

    _CALLERS.add(caller)
    return caller


_CALLERS: set[Callable[..., Any]] = set()


def _needs_key(dependant: Dependant) -> bool:
    return any(d.call in _CALLERS or _needs_key(d) for d in dependant.dependencies)


def document(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> None:
    """Show in the OpenAPI ``schema`` the ways to present a key, on every operation of
    ``routes`` that needs one."""
    schema.setdefault("components", {})["securitySchemes"] = copy.deepcopy(_SCHEMES)
    ways: list[dict[str, list[str]]] = [{name: []} for name in _SCHEMES]
    for route in routes:
        if isinstance(route, APIRoute) and route.include_in_schema and _needs_key(route.dependant):
            operations = schema["paths"][route.path_format]
            for method in route.methods or ():
                operations[method.lower()]["security"] = copy.deepcopy(ways)


Admin = Annotated[ApiKey, Depends(require("admin"))]
Manager = Annotated[ApiKey, Depends(require("manager"))]
Labeler = Annotated[ApiKey, Depends(require("labeler"))]
Reader = Annotated[ApiKey, Depends(require("read-only"))]
