"""A real `hookstage listen` receiver inside the test's event loop, and waiting on what it got."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hookstage import receiver

__all__ = ["WITHIN", "Inbox", "listening"]

WITHIN = 30.0


@dataclass
class Inbox:
    """What the receiver got, and a way to wait for it without sleeping."""

    received: list[receiver.Received] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, request: receiver.Received) -> None:
        self.received.append(request)
        self.changed.set()

    async def wait_for(self, count: int, within: float = WITHIN) -> list[receiver.Received]:
        async with asyncio.timeout(within):
            while len(self.received) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.received


@contextlib.asynccontextmanager
async def listening(inbox: Inbox, secret: str, **options: object) -> AsyncIterator[str]:
    """`async with listening(inbox, secret) as hook_url:` a receiver checking `X-Hub-Signature`."""
    config = receiver.ReceiverConfig(port=0, secret=secret, scheme="hub", quiet=True, **options)  # type: ignore[arg-type]
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        receiver.serve(config, on_ready=ready.set_result, on_request=inbox.add)
    )
    try:
        yield await asyncio.wait_for(asyncio.shield(ready), WITHIN) + config.path
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
