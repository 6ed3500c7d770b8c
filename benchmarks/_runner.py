"""Run every (tool, scenario) pair several times, check each output, and keep the numbers.

Runs are interleaved (run 1 of every tool, then run 2, ...) so that slow drift of the machine
spreads over all tools. Between runs the output dir is emptied and ``os.sync()`` flushes dirty
pages, outside the timing, so one run's writeback does not slow the next. A tool's ``prepare``
hook runs before its measured run, also outside the timing. Where the scenario asks for it,
the servers' access logs say what each run cost them (``facts["served"]``).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import _accesslog
from benchmarks._data import Prepared, samples_match, sha256_file, warm
from benchmarks._job import Facts, Item, Job, PrepareError, Tool
from benchmarks._log import log
from benchmarks._measure import Measurement, run_measured
from benchmarks._nginx import Nginx
from benchmarks._scenarios import Scenario
from benchmarks._tools import TOOLS, unavailable

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
IDLE_SNIPPETS = (
    # An empty asyncfetch/ dir imports as a namespace package: require the real one.
    "import asyncfetch, aiohttp, uvloop\nif asyncfetch.__file__ is None: raise SystemExit(1)",
    "import aiohttp, uvloop",
)


@dataclass(frozen=True)
class Run:
    """One measured run and whether its output checked out."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    children_cpu_s: float
    returncode: int
    ok: bool
    note: str = ""
    rss_source: str = "gnu-time"
    facts: Facts = field(default_factory=dict)


@dataclass
class ToolResult:
    """All runs of one tool in one scenario (or why it was skipped)."""

    tool: str
    verifies: bool
    is_asyncfetch: bool
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None
    rate: bool = True
    imports_torch: bool = False
    max_runs: int | None = None

    def median(self, attr: str) -> float | None:
        """Median of ``attr`` over the successful runs; None when none succeeded."""
        values = [getattr(run, attr) for run in self.runs if run.ok]
        return statistics.median(values) if values else None

    def fact(self, key: str) -> list[Any]:
        """``facts[key]`` of every successful run that has it, in run order."""
        return [run.facts[key] for run in self.runs if run.ok and key in run.facts]


@dataclass
class ScenarioResult:
    """The results of one scenario, tools in run order."""

    scenario: Scenario
    size: int
    url: str
    tools: list[ToolResult]
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str | None:
        """The row peers are compared with, when the scenario names one."""
        return self.scenario.reference

    def get(self, tool: str) -> ToolResult | None:
        """Return the result of the tool named ``tool``, if it was part of this scenario."""
        return next((result for result in self.tools if result.tool == tool), None)


@dataclass(frozen=True)
class Context:
    """What every run needs: the interpreter, the dirs, the server and the files."""

    python: str
    data_dir: Path
    nginx: Nginx
    files: dict[str, list[Prepared]]
    runs: int
    env: dict[str, str]

    @property
    def out_dir(self) -> Path:
        """Where the tools write (emptied between runs)."""
        return self.data_dir / "out"

    def work_dir(self, scenario: Scenario) -> Path:
        """A dir of the scenario's that survives between runs (manifests, caches)."""
        return self.data_dir / "work" / scenario.name


def child_env() -> dict[str, str]:
    """The environment for tools: ours, without proxies, so loopback is reached directly."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def run_scenario(scenario: Scenario, ctx: Context, only_tools: set[str] | None) -> ScenarioResult:
    """Run every available tool of ``scenario`` ``ctx.runs`` times, interleaved."""
    sources = ctx.files[scenario.file]
    urls = {server: ctx.nginx.url(server, sources[0].name) for server in scenario.servers}
    log(f"{scenario.name}: {scenario.description} ({urls[scenario.server]})")
    for source in sources:
        warm(source.path)
    results = [_new_result(TOOLS[name], ctx.python) for name in scenario.tools]
    for result in results:
        if only_tools is not None and result.tool not in only_tools:
            result.skipped = "not selected with --tools"
        if result.skipped:
            log(f"{scenario.name}: skipping {result.tool}: {result.skipped}")
    for index in range(ctx.runs):
        for result in _rotated(results, index):
            if result.skipped is None and index < (result.max_runs or ctx.runs):
                run = _run_once(TOOLS[result.tool], scenario, ctx, index)
                result.runs.append(run)
    size = sum(source.size for source in sources)
    return ScenarioResult(scenario, size, urls[scenario.server], results, urls)


def _rotated(results: list[ToolResult], index: int) -> list[ToolResult]:
    """The tools in the order of run ``index``: each run starts one tool later, so that no
    tool always follows the same one. What a run leaves behind weighs on the next: on this
    project's VM a tool that followed hf_transfer (2 GiB left dirty, then deleted) wrote its
    2 GiB in 2.2-2.5 s, the same tool following others in up to 4.3 s."""
    shift = index % max(len(results), 1)
    return results[shift:] + results[:shift]


def _new_result(tool: Tool, python: str) -> ToolResult:
    reason = unavailable(tool, python)
    return ToolResult(tool.name, tool.verifies, tool.is_asyncfetch, skipped=reason,
                      rate=tool.rate, imports_torch=tool.imports_torch,
                      max_runs=tool.max_runs)  # fmt: skip


def _job(scenario: Scenario, ctx: Context, log_path: Path) -> Job:
    sources = ctx.files[scenario.file]
    items = []
    for source in sources:
        name = f"{scenario.name}.bin" if len(sources) == 1 else Path(source.name).name
        mirrors = tuple(ctx.nginx.url(server, source.name) for server in scenario.mirrors)
        items.append(Item(ctx.nginx.url(scenario.server, source.name), ctx.out_dir / name,
                          source.path, source.size, source.sha256, mirrors))  # fmt: skip
    return Job(ctx.python, tuple(items), scenario.connections, ctx.work_dir(scenario),
               log_path, ctx.env)  # fmt: skip


def _run_once(tool: Tool, scenario: Scenario, ctx: Context, index: int) -> Run:
    _empty(ctx.out_dir)
    log_path = ctx.data_dir / "logs" / scenario.name / f"{_slug(tool.name)}-{index + 1}.log"
    job = _job(scenario, ctx, log_path)
    try:
        facts = tool.prepare(job) if tool.prepare else {}
    except (PrepareError, OSError) as exc:
        run = Run(0.0, 0.0, 0.0, 0.0, -1, False, f"prepare: {exc}")
        _log_run(scenario, tool, index, ctx.runs, run, job.size)
        return run
    logs = {server: ctx.nginx.access_log(server) for server in scenario.servers}
    offsets = {server: _accesslog.size(path) for server, path in logs.items()}
    started = _accesslog.wall_clock()
    measured = run_measured(tool.argv(job), log_path, scenario.timeout_s, ctx.env)
    ended = _accesslog.wall_clock()
    if scenario.count_served:
        _accesslog.settle(logs.values())
        facts |= _served(logs, offsets, started, ended)
    ok, note = _check(tool, job, measured, log_path)
    if tool.facts is not None:
        facts |= tool.facts(_read(log_path))
    _empty(ctx.out_dir)
    os.sync()
    run = Run(measured.wall_s, measured.cpu_s, measured.peak_rss_mb, measured.children_cpu_s,
              measured.returncode, ok, note, measured.rss_source, facts)  # fmt: skip
    _log_run(scenario, tool, index, ctx.runs, run, job.size)
    return run


def _served(logs: dict[str, Path], offsets: dict[str, int], started: float, ended: float) -> Facts:
    """Bytes sent and requests answered by each server for requests started in the run."""
    served: dict[str, int] = {}
    requests: dict[str, int] = {}
    for server, path in logs.items():
        mine = _accesslog.started_between(
            _accesslog.read_since(path, offsets[server]), started, ended
        )
        served[server] = sum(r.bytes_sent for r in mine)
        requests[server] = len(mine)
    return {"served": served, "requests": requests}


def _check(tool: Tool, job: Job, measured: Measurement, log_path: Path) -> tuple[bool, str]:
    """Check a run's output outside the timing; return (ok, note)."""
    if measured.timed_out:
        return False, "timed out"
    if measured.returncode != 0:
        return False, f"exit {measured.returncode}: {_last_line(log_path)}"
    if tool.check_output is not None:
        problem = tool.check_output(job, _read(log_path))
        if problem:
            return False, problem
    if not tool.writes_file:
        return True, ""
    return _check_files(tool, job)


def _check_files(tool: Tool, job: Job) -> tuple[bool, str]:
    for item in job.items:
        problem = _check_file(tool, item)
        if problem:
            return False, problem if len(job.items) == 1 else f"{item.dest.name}: {problem}"
    dests = {item.dest for item in job.items}
    extra = sorted(p.name for p in job.dest.parent.iterdir() if p not in dests)
    return True, f"left behind: {', '.join(extra[:5])}" if extra else ""


def _check_file(tool: Tool, item: Item) -> str | None:
    if not item.dest.is_file():
        return "no output file"
    size = item.dest.stat().st_size
    if size != item.size:
        return f"size {size} != {item.size}"
    if tool.verifies and sha256_file(item.dest) != item.sha256:
        return "sha256 mismatch"
    if not tool.verifies and not samples_match(item.source, item.dest, item.size):
        return "content differs from the source (sampled 1 MiB windows)"
    return None


def _log_run(scenario: Scenario, tool: Tool, index: int, runs: int, run: Run, size: int) -> None:
    speed = size / 1e6 / run.wall_s if run.wall_s > 0 else 0.0
    status = "ok" if run.ok else "FAILED"
    note = f" ({run.note})" if run.note else ""
    log(f"{scenario.name}: run {index + 1}/{runs} {tool.name}: {run.wall_s:.2f} s, "
        f"{speed:.0f} MB/s, {run.cpu_s:.2f} CPU s, {run.peak_rss_mb:.0f} MB RSS, "
        f"{status}{note}")  # fmt: skip


def measure_idle(ctx: Context) -> tuple[float | None, str]:
    """Peak RSS (MB, median) of an interpreter that only imports asyncfetch's stack."""
    for snippet in IDLE_SNIPPETS:
        rss = []
        for index in range(ctx.runs):
            log_path = ctx.data_dir / "logs" / "idle" / f"idle-{index + 1}.log"
            measured = run_measured([ctx.python, "-c", snippet], log_path, 60.0, ctx.env)
            if measured.returncode != 0:
                break
            rss.append(measured.peak_rss_mb)
        if rss:
            what = snippet.splitlines()[0]
            log(f"idle: `python -c {what!r}` peak RSS {statistics.median(rss):.0f} MB")
            return statistics.median(rss), what
    return None, "no idle interpreter could import aiohttp and uvloop"


def _empty(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _last_line(path: Path) -> str:
    lines = _read(path).strip().splitlines()
    return lines[-1][:300] if lines else ""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
