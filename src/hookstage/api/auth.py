"""API keys: who is calling, and whether their role allows the call.

A key is presented as `Authorization: Bearer <key>`, `X-API-Key: <key>`, or Ango's
`apikey: <key>` header. Roles are ordered admin > manager > labeler > read-only; a route
names the least role it needs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from hookstage.api.errors import ApiError
from hookstage.engine import ROLES, ApiKey, Engine

__all__ = ["Admin", "EngineDep", "Labeler", "Manager", "Reader", "engine_of", "require"]

_bearer = HTTPBearer(
    auto_error=False, scheme_name="Bearer", description="an API key as a bearer token"
)
_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="X-API-Key", description="an API key"
)
_ango_header = APIKeyHeader(
    name="apikey", auto_error=False, scheme_name="apikey", description="an API key (Ango's header)"
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def engine_of(request: Request) -> Engine:
    # async: FastAPI runs a plain function dependency in a worker thread, a trip per request.
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(engine_of)]


def _allows(held: str, needed: str) -> bool:
    # ROLES runs from most to least powerful; an unknown stored role allows nothing.
    return held in ROLES and ROLES.index(held) <= ROLES.index(needed)


def require(role: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency giving the calling key, refusing one whose role is below `role`."""
    if role not in ROLES:
        raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")

    async def caller(
        engine: EngineDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        header: Annotated[str | None, Security(_header)],
        ango_header: Annotated[str | None, Security(_ango_header)],
    ) -> ApiKey:
        given = {v for v in (bearer and bearer.credentials, header, ango_header) if v}
        if not given:
            raise ApiError(
                401,
                "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key`",
                headers=_CHALLENGE,
            )
        if len(given) > 1:
            # Which one should win is a guess; guessing wrong grants the wrong role.
            raise ApiError(401, "different API keys were sent: send one", headers=_CHALLENGE)
        key = await engine.authenticate(given.pop())
        if key is None:
            raise ApiError(401, "the API key is unknown, revoked or expired", headers=_CHALLENGE)
        if not _allows(key.role, role):
            raise ApiError(
                403, f"this call needs the {role} role or higher; this key's role is {key.role}"
            )
        return key

    return caller


Admin = Annotated[ApiKey, Depends(require("admin"))]
Manager = Annotated[ApiKey, Depends(require("manager"))]
Labeler = Annotated[ApiKey, Depends(require("labeler"))]
Reader = Annotated[ApiKey, Depends(require("read-only"))]
