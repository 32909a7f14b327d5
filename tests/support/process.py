"""Start hookstage's own command line as a real process and wait for it to say it is ready."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

__all__ = ["Running", "hookstage", "run_cli", "started"]

READY_WITHIN = 30.0


def hookstage(*args: str) -> list[str]:
    """The command line of `hookstage ARGS` with this interpreter's installation."""
    return [sys.executable, "-m", "hookstage.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"})
    return env


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    match: re.Match[str]
    output: list[str] = field(default_factory=list)

    def read_until(self, pattern: str, within: float = READY_WITHIN) -> re.Match[str]:
        """Read the process's output until a line matches `pattern` (with a deadline)."""
        return _wait_for(self.process, re.compile(pattern), self.output, within)

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush, as a crash would leave it."""
        self.process.kill()
        self.process.wait(timeout=10)


def _wait_for(
    process: subprocess.Popen[bytes], pattern: re.Pattern[str], seen: list[str], within: float
) -> re.Match[str]:
    # Lines already read but not yet looked at come first (a read may bring several).
    while _pending.get(process.pid):
        line = _pending[process.pid].pop(0)
        seen.append(line)
        if found := pattern.search(line):
            return found
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + within
    partial = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *lines, partial = (partial + chunk).split(b"\n")
            texts = [line.decode("utf-8", "replace") + "\n" for line in lines]
            for i, line in enumerate(texts):
                seen.append(line)
                if found := pattern.search(line):
                    _pending[process.pid] = texts[i + 1 :]
                    return found
    raise AssertionError(f"no line matching {pattern.pattern!r}; output:\n{''.join(seen)}")


# Lines read past a match, by process id, for the next wait.
_pending: dict[int, list[str]] = {}


@contextlib.contextmanager
def started(args: Sequence[str], ready: str) -> Iterator[Running]:
    """Run `args`; yield once a line of its output matches `ready`; stop it afterwards."""
    process = subprocess.Popen(
        list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env()
    )
    try:
        output: list[str] = []
        match = _wait_for(process, re.compile(ready), output, READY_WITHIN)
        yield Running(process, match, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def run_cli(
    *args: str, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `hookstage ARGS` to its end; its output as text."""
    done = subprocess.run(
        hookstage(*args), input=stdin, capture_output=True, env=_env(), timeout=timeout, check=False
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )
