"""Every benchmark scenario, each beside its baseline in the same run, then a summary.

    .venv/bin/python -m benchmarks [--quick] [--only NAME ...] [--write-docs | --no-docs]

A full run (no ``--quick``, no ``--only``) rewrites the generated section of
``docs/benchmarks.md`` (between its markers; the rest of the file is left as it is) and the
plots in ``docs/img/bench_*.png``. Scenarios written as modules of their own
(``bench_receiver``, ``bench_isolation``...) are called as a library when they offer
``async def run(quick: bool)``, else run as a program and their printed table kept.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import bench_drain
from benchmarks.common import (
    DOCS,
    IMG,
    ROOT,
    Figure,
    Plot,
    Result,
    console,
    fast_receiver,
    fmt,
    load_average,
    machine,
    measure,
    plot_bars,
    print_result,
    run,
)
from hookstage.store import open_store

BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
DOC = DOCS / "benchmarks.md"
COMMAND = ".venv/bin/python -m benchmarks"
_ABSENT = "not run: the module is not there yet"


# -- scenario 1, drain: bench_drain's parts, put together here -----------------------------


async def drain(quick: bool) -> Result:
    """bench_drain's baseline and dispatcher, in alternating rounds on fresh outboxes."""
    rounds, count, concurrency = (1, 5000, 64) if quick else (4, 15_000, 64)
    totals = {"baseline": [0.0, 0.0], "hookstage": [0.0, 0.0]}
    async with fast_receiver() as (url, receiver):
        for number in range(rounds):
            with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
                store = await open_store(Path(tmp) / "db.sqlite")
                try:
                    await bench_drain._seed(store, count)
                    bodies = await bench_drain._stored_bodies(store)
                    # Turns alternate which sender goes first: neither always gets the
                    # freshly started receiver.
                    for sender in ("baseline", "hookstage")[:: 1 if number % 2 == 0 else -1]:
                        with measure() as span:
                            if sender == "baseline":
                                seconds = await bench_drain._baseline(url, bodies, concurrency)
                            else:
                                seconds = await bench_drain._dispatch(
                                    store, url, count, concurrency
                                )
                        totals[sender][0] += seconds
                        totals[sender][1] += span().cpu
                finally:
                    await store.close()
    delivered = rounds * count
    base_rate = delivered / totals["baseline"][0]
    ours_rate = delivered / totals["hookstage"][0]
    result = Result(
        "drain",
        "Drain: the dispatcher vs a bare aiohttp sender",
        ["sender", "deliveries", "deliveries/s", "CPU us/delivery", "vs baseline"],
    )
    for name, key, rate in (
        ("bare aiohttp + uvloop, no recording", "baseline", base_rate),
        ("hookstage Dispatcher, every attempt stored", "hookstage", ours_rate),
    ):
        cpu_us = totals[key][1] / delivered * 1e6
        row = [f"{delivered:,}", fmt(rate, 0), fmt(cpu_us, 0), f"{rate / base_rate:.2f}x"]
        result.rows.append([name, *row])
    result.figures.append(
        Figure("hookstage / bare aiohttp", ours_rate / base_rate, "x", (">=", 0.85))
    )
    result.figures.append(Figure("hookstage deliveries/s", ours_rate, "/s", digits=0))
    result.notes.append(
        f"{rounds} round(s) of {count:,} deliveries (~2.1 KB, X-Hub-Signature), {concurrency}"
        f" in flight, receiver: {receiver}; SQLite WAL, synchronous=FULL."
    )
    path = IMG / "bench_drain.png"
    bars = {"bare aiohttp": base_rate, "hookstage": ours_rate}
    if plot_bars(path, title="Drain, fast receiver", ylabel="deliveries/s", bars=bars):
        result.plots.append(Plot(path, "Deliveries per second, same receiver, same run"))
    return result


# -- the list ----------------------------------------------------------------------------------


Scenario = Callable[[bool], Awaitable[Result]]


@dataclass(frozen=True)
class Program:
    """A scenario module that runs as a program: its arguments, quick and full."""

    module: str
    quick: tuple[str, ...] = ()
    full: tuple[str, ...] = ()
    timeout: float = 300.0
    figures: Callable[[str], list[Figure]] | None = None


_ISOLATED = re.compile(r"^(beside a black hole.*?)\s+[\d,]+\s+[\d.]+\s+([\d.]+)\s*$", re.M)


def _isolation_figures(text: str) -> list[Figure]:
    """bench_isolation's "vs alone" column (target: at least 0.9)."""
    return [
        Figure(f"healthy stage {name.strip()} / alone", float(ratio), "x", (">=", 0.9))
        for name, ratio in _ISOLATED.findall(text)
    ]


# The scenarios, then those other modules measure.
SCENARIOS: dict[str, Scenario | str | Program] = {
    "drain": drain,
    "peer": "benchmarks.bench_peer",
    "e2e": "benchmarks.bench_e2e",
    "isolation": Program(
        "benchmarks.bench_isolation",
        ("--count", "3000", "--stuck", "300", "--repeat", "1"),
        # Long enough that a stall on a shared machine is a small part of a scenario: at
        # ~7k deliveries/s, 10k took 1.4 s and the ratio moved by 0.2 between runs.
        ("--count", "30000", "--stuck", "2000", "--repeat", "3"),
        figures=_isolation_figures,
    ),
    # The workflow's commits wait on fsync: it runs before the backlog writes its gigabytes.
    "workflow": "benchmarks.bench_workflow",
    "backlog": "benchmarks.bench_backlog",
    "scale": Program(
        "benchmarks.bench_scale",
        ("--count", "3000", "--workers", "1,2"),
        ("--count", "5000", "--workers", "1,2,4"),
    ),
    "receiver": Program(
        "benchmarks.bench_receiver", ("--rounds", "2", "--burst", "0.5"), ("--rounds", "3")
    ),
    "tasks_page": Program(
        "benchmarks.bench_tasks_page", ("--tasks", "20000", "--runs", "5"), ("--runs", "9")
    ),
    "transport": "benchmarks.bench_transport",
}


async def _call(name: str, quick: bool) -> Result:
    entry = SCENARIOS[name]
    if callable(entry):
        return await entry(quick)
    program = Program(entry) if isinstance(entry, str) else entry
    if importlib.util.find_spec(program.module) is None:
        return Result(name, f"{name}: {program.module} is not there yet", notes=[_ABSENT])
    module = importlib.import_module(program.module)
    scenario = getattr(module, "run", None)
    if inspect.iscoroutinefunction(scenario):
        outcome = await scenario(quick)
        if isinstance(outcome, Result):
            return outcome
        return Result(name, f"{name} ({program.module})", text=str(outcome))
    return await _program(name, program, quick)


async def _program(name: str, program: Program, quick: bool) -> Result:
    """Run a module as `python -m`, keep what it prints."""
    args = list(program.quick if quick else program.full)
    if "--quick" in args and not await _accepts(program.module, "--quick"):
        args.remove("--quick")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        program.module,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), program.timeout)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        err += f"\nstopped after {program.timeout:.0f} s".encode()
    text = out.decode(errors="replace").rstrip()
    title = f"{name}: python -m {' '.join([program.module, *args])}"
    result = Result(name, title, text=text)
    if program.figures is not None:
        result.figures += program.figures(text)
    if process.returncode != 0:
        tail = "\n".join(err.decode(errors="replace").rstrip().splitlines()[-15:])
        result.text = f"{text}\n{tail}".strip()
        result.figures.append(Figure("exit status", float(process.returncode or 0), digits=0))
    return result


async def _accepts(module: str, option: str) -> bool:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--help",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    return option in out.decode(errors="replace")


# -- the report --------------------------------------------------------------------------------


def _summary_rows(results: list[Result]) -> list[list[str]]:
    rows = []
    for result in results:
        for figure in result.figures:
            rows.append(
                [result.name, figure.name, figure.shown(), figure.target_text(), figure.verdict()]
            )
        if not result.figures:
            shown = "not run: no module yet" if _ABSENT in result.notes else "(see its table)"
            rows.append([result.name, shown, "", "", ""])
    return rows


def _markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(columns), line(["---"] * len(columns)), *(line(r) for r in rows)])


def _about(name: str) -> str:
    """The scenario's method: its module's docstring without the command line."""
    entry = SCENARIOS[name]
    if callable(entry):
        doc = inspect.getdoc(bench_drain) or ""
    else:
        module = entry if isinstance(entry, str) else entry.module
        try:
            doc = inspect.getdoc(importlib.import_module(module)) or ""
        except ImportError:
            return ""
    kept = [line for line in doc.splitlines() if not line.startswith("    .venv/")]
    return "\n".join(kept).strip()


def _section(results: list[Result], facts: dict[str, str], quick: bool) -> str:
    parts = [
        "## The suite",
        "",
        f"Generated by `{COMMAND}{' --quick' if quick else ''}`: this section is rewritten by"
        " each full run (edit the text outside its markers). Each scenario runs beside its"
        " baseline in the same run: on a shared machine the ratios are the figures."
        f" `{COMMAND} --quick` runs smaller versions of them all in under two minutes;"
        f" `--only NAME ...` runs some ({', '.join(SCENARIOS)}).",
        "",
        _markdown_table(["this run", ""], [[key, value] for key, value in facts.items()]),
        "",
        "### Summary",
        "",
        _markdown_table(["scenario", "figure", "value", "target", ""], _summary_rows(results)),
    ]
    for result in results:
        parts += ["", f"### {result.title}", ""]
        about = _about(result.name)
        if about:
            parts += [about, ""]
        if result.rows:
            parts += [_markdown_table(result.columns, result.rows), ""]
        if result.text:
            parts += ["```text", result.text, "```", ""]
        parts += [f"- {note}" for note in result.notes]
        parts += [f"- took {result.seconds:.0f} s", ""]
        for plot in result.plots:
            parts += [f"![{plot.caption}](img/{plot.path.name})", ""]
    return "\n".join(parts).rstrip() + "\n"


def write_docs(section: str, path: Path = DOC) -> None:
    """Put the section between the markers, keeping the rest of the file as it is."""
    block = f"{BEGIN}\n{section}{END}"
    if not path.exists():
        path.write_text(f"# Benchmarks\n\n{block}\n")
        return
    text = path.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        path.write_text(head + block + tail)
    else:
        path.write_text(text.rstrip() + "\n\n" + block + "\n")


# -- the run -----------------------------------------------------------------------------------


async def _run_one(name: str, quick: bool) -> Result:
    started = time.perf_counter()
    try:
        result = await _call(name, quick)
    except Exception:
        result = Result(name, f"{name}: failed", text=traceback.format_exc(limit=8))
        result.figures.append(Figure("failed", float("nan")))
    result.seconds = time.perf_counter() - started
    return result


async def _main(names: list[str], quick: bool) -> tuple[list[Result], dict[str, str]]:
    out = console()
    facts = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), **machine()}
    facts["load average at start (1, 5, 15 min)"] = load_average()
    out.print(" | ".join(f"{k}: {v}" for k, v in facts.items()), highlight=False)
    results = []
    started = time.perf_counter()
    for name in names:
        out.rule(f"[bold]{name}[/] (load average {load_average()})")
        result = await _run_one(name, quick)
        print_result(result, out)
        out.print(f"  {name}: {result.seconds:.1f} s", highlight=False)
        results.append(result)
    facts["load average at end"] = load_average()
    facts["suite time"] = f"{time.perf_counter() - started:.0f} s"
    one_minute = float(facts["load average at end"].split()[0])
    cores = int(facts["cores (nproc)"])
    if one_minute > cores:
        facts["note"] = "the machine was shared with other runs (load above the core count)"
    summary = Result(
        "summary",
        "Summary",
        ["scenario", "figure", "value", "target", ""],
        _summary_rows(results),
    )
    print_result(summary, out)
    out.print(f"suite: {facts['suite time']}, load average {facts['load average at end']}")
    return results, facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (under 2 minutes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"from: {', '.join(SCENARIOS)}")
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md anyway")
    docs.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}"
        )
    results, facts = run(_main(names, args.quick))
    full = not args.quick and not args.only
    if args.write_docs or (full and not args.no_docs):
        write_docs(_section(results, facts, args.quick))
        print(f"wrote {DOC.relative_to(ROOT)}")
    failed = [r.name for r in results if r.text is not None and r.title.endswith(": failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
