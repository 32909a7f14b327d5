"""What the benchmark scenarios share: results with targets, timing and CPU, processes
(receivers, `hookstage serve`), percentiles, tables and plots.

A scenario module exposes ``async def run(quick: bool) -> Result``; the runner
(``python -m benchmarks``) prints each result and writes ``docs/benchmarks.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "DOCS",
    "IMG",
    "ROOT",
    "Figure",
    "Plot",
    "Result",
    "Served",
    "Span",
    "console",
    "drain_receiver",
    "fast_receiver",
    "fmt",
    "load_average",
    "machine",
    "main_for",
    "measure",
    "percentile",
    "plot_bars",
    "plot_lines",
    "print_result",
    "proc_cpu_seconds",
    "proc_peak_rss_mb",
    "run",
    "served",
]

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
IMG = DOCS / "img"

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}


@dataclass(frozen=True)
class Figure:
    """One number a scenario stands for, with its target when the issue sets one
    (``target`` such as ``(">=", 0.85)``)."""

    name: str
    value: float
    unit: str = ""
    target: tuple[str, float] | None = None
    digits: int = 2

    @property
    def ok(self) -> bool | None:
        if self.target is None or math.isnan(self.value):
            return None
        op, bound = self.target
        return _OPS[op](self.value, bound)

    def shown(self) -> str:
        if math.isnan(self.value):
            return "none"
        return f"{fmt(self.value, self.digits)}{self.unit}"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        op, bound = self.target
        return f"{op} {fmt(bound, self.digits)}{self.unit}"

    def verdict(self) -> str:
        return {None: "", True: "met", False: "MISSED"}[self.ok]


@dataclass(frozen=True)
class Plot:
    path: Path
    caption: str


@dataclass
class Result:
    """A scenario's outcome: one table (rows beside their baseline), the figures for the
    summary, notes, plots, or the captured output of a module run as a program."""

    name: str
    title: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    text: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Span:
    """Wall-clock and CPU seconds (this process, every thread) of one measured stretch."""

    wall: float
    cpu: float


@contextlib.contextmanager
def measure() -> Iterator[Callable[[], Span]]:
    """``with measure() as span: ...`` then ``span()`` gives the Span (after the block)."""
    wall, cpu = time.perf_counter(), time.process_time()
    done: list[Span] = []
    yield lambda: done[0]
    done.append(Span(time.perf_counter() - wall, time.process_time() - cpu))


def fmt(value: float, digits: int = 2) -> str:
    """A number for a table: thousands separated, fewer decimals as it grows."""
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.{min(digits, 1)}f}"
    return f"{value:,.{digits}f}"


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear between the closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# -- processes -----------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid: int) -> float:
    """The peak resident memory of a process so far, MB (VmHWM)."""
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else math.nan


@contextlib.asynccontextmanager
async def drain_receiver(delay: float = 0.0) -> AsyncIterator[str]:
    """bench_drain's receiver (aiohttp on uvloop, checks X-Hub-Signature with bench_drain's
    SECRET, answers 200 after ``delay`` seconds) in its own process; yields its URL."""
    from benchmarks import bench_drain

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=bench_drain._receiver_process, args=(delay, child), daemon=True)
    process.start()
    try:
        loop = asyncio.get_running_loop()
        url: str = await asyncio.wait_for(loop.run_in_executor(None, parent.recv), 30)
        yield url
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        await asyncio.to_thread(process.join, 10)
        if process.is_alive():
            process.kill()


_NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    keepalive_requests 10000000;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def _nginx() -> str | None:
    return shutil.which("nginx") or next(
        (str(p) for p in (Path("/usr/sbin/nginx"),) if p.exists()), None
    )


@contextlib.asynccontextmanager
async def fast_receiver(delay: float = 0.0) -> AsyncIterator[tuple[str, str]]:
    """The fastest receiver there is, for a drain: nginx answering 200 to everything (Debian's
    ``nginx-light``) when installed and no ``delay`` is asked for, else
    :func:`drain_receiver`. Yields (url, what receives)."""
    binary = _nginx()
    if binary is None or delay:
        async with drain_receiver(delay) as url:
            yield url, "aiohttp on uvloop, checks X-Hub-Signature"
        return
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        with socket.socket() as probe:  # a free port; nginx cannot be told to take any
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(dir=tmp, port=port))
        process = await asyncio.create_subprocess_exec(
            binary, "-c", str(conf), "-p", tmp, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await _answering("127.0.0.1", port)
            yield f"http://127.0.0.1:{port}/hook", "nginx, `return 200` (answers without checking)"
        finally:
            process.terminate()
            await process.wait()


async def _answering(host: str, port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not listen on {host}:{port}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


@dataclass
class Served:
    """A `hookstage serve` process started by a benchmark."""

    url: str
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid


_SERVING = re.compile(rb"serving on (http://\S+)")


@contextlib.asynccontextmanager
async def served(db: Path, log: Path, *extra: str) -> AsyncIterator[Served]:
    """`hookstage serve --db DB --port 0 --allow-egress loopback` until the block ends
    (SIGTERM, then SIGKILL after 15 s). Its logs go to ``log``."""
    command = [
        str(Path(sys.executable).with_name("hookstage")),
        *("serve", "--db", str(db), "--port", "0", "--allow-egress", "loopback"),
        *("--log-level", "warning", *extra),
    ]
    env = {**os.environ, "COLUMNS": "400"}  # one line for the URL, however rich wraps
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=sink, env=env
        )
    reader: asyncio.Task[None] | None = None
    try:
        url = await asyncio.wait_for(_read_url(process), 60)
        reader = asyncio.create_task(_drain_output(process))  # a full pipe would block it
        yield Served(url, process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
        if reader is not None:
            await reader


async def _read_url(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        found = _SERVING.search(line)
        if found:
            return found.group(1).decode()
    raise RuntimeError(f"hookstage serve ended before serving (exit {await process.wait()})")


async def _drain_output(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    while await process.stdout.read(65536):
        pass


# -- the machine -----------------------------------------------------------------------------


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if found:
            cpu = found.group(1).strip()
    memory = "unknown"
    with contextlib.suppress(OSError):
        kb = re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
        if kb:
            memory = f"{int(kb.group(1)) / 1024**2:.0f} GiB"
    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "commit": _commit(),
    }


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


# -- showing ---------------------------------------------------------------------------------


def print_result(result: Result, console: Console) -> None:
    if result.text is not None:
        console.rule(f"[bold]{result.title}")
        console.print(result.text, highlight=False, markup=False)
    if result.rows:
        table = Table(title=result.title, title_justify="left")
        for n, column in enumerate(result.columns):
            table.add_column(column, justify="right" if _numeric(result.rows, n) else "left")
        for row in result.rows:
            table.add_row(*row)
        console.print(table)
    for note in result.notes:
        console.print(f"  {note}", highlight=False, markup=False)


_NUMBER = re.compile(r"^[-+]?[\d,.]+")


def _numeric(rows: Sequence[Sequence[str]], column: int) -> bool:
    """Whether a column holds numbers (right-aligned) rather than names."""
    cells = [row[column] for row in rows if len(row) > column and row[column]]
    return bool(cells) and all(_NUMBER.match(cell) or cell == "n/a" for cell in cells)


def console() -> Console:
    """A console as wide as the terminal, or 150 columns when the output is a file."""
    return Console(width=None if sys.stdout.isatty() else 150)


def _pyplot() -> Any:
    """matplotlib's pyplot (the `bench` extra) on a file-only backend, or None."""
    # Imported by name: the extra is optional, and mypy runs where it is not installed.
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot_lines(
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    logx: bool = False,
    logy: bool = False,
    hline: tuple[float, str] | None = None,
) -> bool:
    """Curves as a PNG; False when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_bars(
    path: Path,
    *,
    title: str,
    ylabel: str,
    bars: dict[str, float],
    logy: bool = False,
    digits: int = 1,
) -> bool:
    """Horizontal bars as a PNG; False when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(bars) + 1.2), dpi=110)
    labels = list(bars)
    ax.barh(labels, [bars[label] for label in labels], color="tab:blue")
    ax.invert_yaxis()
    if logy:
        ax.set_xscale("log")
    for n, label in enumerate(labels):
        ax.text(bars[label], n, f" {fmt(bars[label], digits)}", va="center", fontsize=8)
    ax.set(title=title, xlabel=ylabel)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


# -- running ---------------------------------------------------------------------------------


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop (where installed), as the dispatcher runs in production."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def main_for(scenario: Callable[[bool], Awaitable[Result]]) -> None:
    """`python -m benchmarks.bench_X [--quick]`: one scenario, printed."""
    quick = "--quick" in sys.argv[1:]

    async def go() -> Result:
        return await scenario(quick)

    result: Result = run(go())
    print_result(result, console())
