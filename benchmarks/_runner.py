"""Run every (tool, scenario) pair several times, check each output, and keep the numbers.

Runs are interleaved (run 1 of every tool, then run 2, ...) so that slow drift of the machine
spreads over all tools. Between runs the output dir is emptied and ``os.sync()`` flushes dirty
pages, outside the timing, so one run's writeback does not slow the next.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._data import Prepared, samples_match, sha256_file, warm
from benchmarks._log import log
from benchmarks._measure import Measurement, run_measured
from benchmarks._nginx import Nginx
from benchmarks._scenarios import Scenario
from benchmarks._tools import TOOLS, Job, Tool, unavailable

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


@dataclass
class ToolResult:
    """All runs of one tool in one scenario (or why it was skipped)."""

    tool: str
    verifies: bool
    is_asyncfetch: bool
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None

    def median(self, attr: str) -> float | None:
        """Median of ``attr`` over the successful runs; None when none succeeded."""
        values = [getattr(run, attr) for run in self.runs if run.ok]
        return statistics.median(values) if values else None


@dataclass
class ScenarioResult:
    """The results of one scenario, tools in run order."""

    scenario: Scenario
    size: int
    url: str
    tools: list[ToolResult]

    def get(self, tool: str) -> ToolResult | None:
        """Return the result of the tool named ``tool``, if it was part of this scenario."""
        return next((result for result in self.tools if result.tool == tool), None)


@dataclass(frozen=True)
class Context:
    """What every run needs: the interpreter, the dirs, the server and the files."""

    python: str
    data_dir: Path
    nginx: Nginx
    files: dict[str, Prepared]
    runs: int
    env: dict[str, str]

    @property
    def out_dir(self) -> Path:
        """Where the tools write (emptied between runs)."""
        return self.data_dir / "out"


def child_env() -> dict[str, str]:
    """The environment for tools: ours, without proxies, so loopback is reached directly."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def run_scenario(scenario: Scenario, ctx: Context, only_tools: set[str] | None) -> ScenarioResult:
    """Run every available tool of ``scenario`` ``ctx.runs`` times, interleaved."""
    source = ctx.files[scenario.file]
    url = ctx.nginx.url(scenario.server, scenario.file)
    log(f"{scenario.name}: {scenario.description} ({url})")
    warm(source.path)
    results = [_new_result(TOOLS[name], ctx.python) for name in scenario.tools]
    for result in results:
        if only_tools is not None and result.tool not in only_tools:
            result.skipped = "not selected with --tools"
        if result.skipped:
            log(f"{scenario.name}: skipping {result.tool}: {result.skipped}")
    for index in range(ctx.runs):
        for result in results:
            if result.skipped is None:
                run = _run_once(TOOLS[result.tool], scenario, ctx, url, index)
                result.runs.append(run)
    return ScenarioResult(scenario, source.size, url, results)


def _new_result(tool: Tool, python: str) -> ToolResult:
    reason = unavailable(tool, python)
    return ToolResult(tool.name, tool.verifies, tool.is_asyncfetch, skipped=reason)


def _run_once(tool: Tool, scenario: Scenario, ctx: Context, url: str, index: int) -> Run:
    source = ctx.files[scenario.file]
    _empty(ctx.out_dir)
    job = Job(ctx.python, url, ctx.out_dir / f"{scenario.name}.bin", source.path, source.size,
              source.sha256, scenario.connections)  # fmt: skip
    log_path = ctx.data_dir / "logs" / scenario.name / f"{_slug(tool.name)}-{index + 1}.log"
    measured = run_measured(tool.argv(job), log_path, scenario.timeout_s, ctx.env)
    ok, note = _check(tool, job, measured, log_path)
    _empty(ctx.out_dir)
    os.sync()
    run = Run(measured.wall_s, measured.cpu_s, measured.peak_rss_mb, measured.children_cpu_s,
              measured.returncode, ok, note, measured.rss_source)  # fmt: skip
    _log_run(scenario, tool, index, ctx.runs, run, source.size)
    return run


def _check(tool: Tool, job: Job, measured: Measurement, log_path: Path) -> tuple[bool, str]:
    """Check a run's output outside the timing; return (ok, note)."""
    if measured.timed_out:
        return False, "timed out"
    if measured.returncode != 0:
        return False, f"exit {measured.returncode}: {_last_line(log_path)}"
    if not tool.writes_file:
        digest = _last_line(log_path)
        return (True, "") if digest == job.sha256 else (False, f"printed digest {digest!r}")
    return _check_file(tool, job)


def _check_file(tool: Tool, job: Job) -> tuple[bool, str]:
    if not job.dest.is_file():
        return False, "no output file"
    size = job.dest.stat().st_size
    if size != job.size:
        return False, f"size {size} != {job.size}"
    if tool.verifies and sha256_file(job.dest) != job.sha256:
        return False, "sha256 mismatch"
    if not tool.verifies and not samples_match(job.source, job.dest, job.size):
        return False, "content differs from the source (sampled 1 MiB windows)"
    extra = sorted(p.name for p in job.dest.parent.iterdir() if p != job.dest)
    return True, f"left behind: {', '.join(extra)}" if extra else ""


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


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
