"""The test helper that runs an app under uvicorn: it starts, answers, stops, and fails loudly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.support.server import serve


async def test_the_app_answers_on_its_port_until_the_block_ends() -> None:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        assert url.startswith("http://127.0.0.1:")
        assert (await client.get("/ping")).json() == {"pong": "yes"}
    async with httpx.AsyncClient(base_url=url) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/ping")


async def test_an_app_that_cannot_start_raises_at_once() -> None:
    @contextlib.asynccontextmanager
    async def broken(_: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    with pytest.raises(RuntimeError, match="uvicorn exited"):
        async with serve(FastAPI(lifespan=broken)):
            pytest.fail("the block must not run")
