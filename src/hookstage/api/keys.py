"""API keys (admin): create one (its value is shown this once), list them, revoke one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from hookstage.api.auth import Admin, EngineDep
from hookstage.api.limits import MAX_NAME
from hookstage.api.times import epoch, iso
from hookstage.engine import ApiKey

__all__ = ["router"]

router = APIRouter(prefix="/api/keys", tags=["keys"])


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME,
        description="who or what uses it; the default acting user",
    )
    role: Literal["admin", "manager", "labeler", "read-only"]
    expiresAt: datetime | None = Field(None, description="ISO-8601; none: it does not expire")


def _shown(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "createdAt": iso(key.created_at),
        "expiresAt": iso(key.expires_at),
        "revokedAt": iso(key.revoked_at),
    }


@router.post("", status_code=201, summary="Create a key: its value is shown only in this answer")
async def create_key(body: NewKey, engine: EngineDep, _: Admin) -> dict[str, Any]:
    key, value = await engine.create_key(body.name, body.role, expires_at=epoch(body.expiresAt))
    return {**_shown(key), "key": value}


@router.get("", summary="List keys (never their values)")
async def list_keys(engine: EngineDep, _: Admin) -> dict[str, Any]:
    return {"keys": [_shown(key) for key in await engine.list_keys()]}


@router.delete("/{key_id}", status_code=204, summary="Revoke a key")
async def revoke_key(
    key_id: Annotated[str, Path(description="the key's id")], engine: EngineDep, _: Admin
) -> Response:
    await engine.revoke_key(key_id)
    return Response(status_code=204)
