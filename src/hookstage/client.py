"""A small async client of hookstage's HTTP API, for the CLI, the demo and labeling tools."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson

from hookstage import __version__

__all__ = ["ApiError", "Client"]


class ApiError(Exception):
    """The server refused a call or could not be reached; the message says why."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """`async with Client(url, key) as api:` then one method per API call."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {key}", "User-Agent": f"hookstage/{__version__}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One request; the decoded JSON answer, or ApiError with the server's message."""
        data = None if json is None else orjson.dumps(json)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self._request(method, path, data=data, params=params, headers=headers) as r:
            raw = await r.read()
            if r.status >= 400:
                raise ApiError(_message(r.status, raw), status=r.status)
            return orjson.loads(raw) if raw else None

    async def lines(
        self, path: str, *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a newline-delimited answer (NDJSON export) line by line."""
        async with self._request("GET", path, params=params) as r:
            if r.status >= 400:
                raise ApiError(_message(r.status, await r.read()), status=r.status)
            async for line in r.content:
                if line.strip():
                    yield line.rstrip(b"\n")

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None:
            raise RuntimeError("use the client inside `async with`")
        return _Translated(
            self._session.request(method, self.base_url + path, **kwargs), self.base_url
        )

    # -- the calls the CLI and the demo use -----------------------------------------------

    async def create_project(self, name: str, schema: Any, workflow: Any) -> dict[str, Any]:
        body = {"name": name, "categorySchema": schema, "workflow": workflow}
        result: dict[str, Any] = await self.call("POST", "/api/projects", json=body)
        return result

    async def import_assets(
        self, project_id: str, assets: Sequence[Any], *, skip_existing: bool = False
    ) -> dict[str, Any]:
        params = {"skipExisting": "true"} if skip_existing else None
        path = f"/api/projects/{project_id}/assets"
        result: dict[str, Any] = await self.call("POST", path, json=list(assets), params=params)
        return result

    async def tasks(self, project_id: str, **filters: str) -> list[dict[str, Any]]:
        """Every task matching the filters, following the pages."""
        found: list[dict[str, Any]] = []
        params = dict(filters)
        while True:
            page = await self.call("GET", f"/api/projects/{project_id}/tasks", params=params)
            found.extend(page["tasks"])
            if not page.get("next"):
                return found
            params["after"] = page["next"]

    async def submit(self, task_id: str, annotations: Mapping[str, Any], **extra: Any) -> Any:
        return await self.call(
            "POST", f"/api/tasks/{task_id}/submit", json={**annotations, **extra}
        )

    async def review(self, task_id: str, *, accept: bool, **extra: Any) -> Any:
        body = {"accept": accept, **extra}
        return await self.call("POST", f"/api/tasks/{task_id}/review", json=body)


class _Translated:
    """Wraps aiohttp's request context so network failures surface as ApiError."""

    def __init__(self, inner: Any, base_url: str) -> None:
        self._inner = inner
        self._base_url = base_url

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._inner.__aenter__()
        except aiohttp.ClientError as exc:
            raise ApiError(f"cannot reach hookstage at {self._base_url}: {exc}") from exc
        return response

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)


def _message(status: int, raw: bytes) -> str:
    try:
        error = orjson.loads(raw)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"
    problems = error.get("problems") or []
    details = "".join(f"\n  {p.get('path')}: {p.get('message')}" for p in problems[:10])
    return f"HTTP {status}: {error.get('message')}{details}"
