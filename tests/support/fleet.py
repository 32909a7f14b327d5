"""A deployment in miniature: `hookstage serve` and `hookstage worker` processes on one
database, started, killed (SIGKILL) and stopped (SIGTERM) by their process ids.

Each process writes to a log file of its own (a pipe nobody reads could fill and stall it);
a test that fails shows them all (`Fleet.logs()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.process import hookstage

__all__ = ["Fleet", "Member", "fleet"]

READY_WITHIN = 60.0


@dataclass
class Member:
    """One process of the fleet."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @property
    def running(self) -> bool:
        return self.process.poll() is None


class Fleet:
    """Processes on one database; `stop_all` ends every one still running."""

    def __init__(self, database: str, logs: Path, env: Mapping[str, str]) -> None:
        self.database = database
        self.logs_dir = logs
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
            "COLUMNS": "200",
            "TERM": "dumb",
            **env,
        }
        self.members: list[Member] = []

    def start(self, name: str, *args: str) -> Member:
        """Start `hookstage ARGS --db DATABASE`, without waiting for it."""
        log = self.logs_dir / f"{len(self.members):02d}-{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                hookstage(*args, "--db", self.database),
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        member = Member(name, process, log)
        self.members.append(member)
        return member

    async def serve(self, *args: str) -> Member:
        """A `hookstage serve` on a free port, once it answers (its URL in `.url`)."""
        member = self.start("serve", "serve", "--port", "0", *args)
        found = await self.ready(member, r"serving on (http://\S+)")
        member.url = found.group(1)
        return member

    async def ready(self, member: Member, pattern: str) -> re.Match[str]:
        """Wait (with a deadline) for a line of the member's output to match `pattern`."""
        deadline = time.monotonic() + READY_WITHIN
        while True:
            text = await asyncio.to_thread(member.log.read_text, errors="replace")
            if found := re.search(pattern, text):
                return found
            if not member.running or time.monotonic() > deadline:
                raise AssertionError(f"{member.name} never printed {pattern!r}:\n{text}")
            await asyncio.sleep(0.05)

    async def kill(self, member: Member) -> None:
        """SIGKILL: no clean-up at all, as a crash or a lost machine leaves it."""
        member.process.kill()
        await asyncio.to_thread(member.process.wait, 10)

    async def stop(self, member: Member, within: float = 30.0) -> int:
        """SIGTERM, and the exit status once it ended (SIGKILL after `within` seconds)."""
        if member.running:
            member.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(member.process.wait, within)
        except subprocess.TimeoutExpired:
            await self.kill(member)
            raise AssertionError(f"{member.name} ignored SIGTERM:\n{self.logs()}") from None

    async def stop_all(self) -> None:
        running = [m for m in self.members if m.running]
        results = await asyncio.gather(*(self.stop(m) for m in running), return_exceptions=True)
        for member, result in zip(running, results, strict=True):
            if isinstance(result, BaseException):
                with contextlib.suppress(ProcessLookupError):
                    member.process.kill()

    def logs(self, members: Sequence[Member] | None = None) -> str:
        shown = self.members if members is None else members
        return "\n".join(
            f"--- {m.log.name} (exit {m.process.poll()}) ---\n{m.log.read_text(errors='replace')}"
            for m in shown
        )


@contextlib.asynccontextmanager
async def fleet(database: str, logs: Path, env: Mapping[str, str]) -> AsyncIterator[Fleet]:
    """`async with fleet(url, tmp_path, env) as f:` every process is stopped at the end."""
    found = Fleet(database, logs, env)
    try:
        yield found
    finally:
        await found.stop_all()
