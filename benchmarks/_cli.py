"""``python -m benchmarks``: generate data, start nginx, run the scenarios, report.

Tables go to stdout, progress to stderr, everything measured to ``DATA_DIR/results.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from benchmarks._data import ensure_files, served_root
from benchmarks._log import log
from benchmarks._nginx import Nginx, find_nginx
from benchmarks._report import markdown, targets_text, text_table, write_json
from benchmarks._runner import Context, ScenarioResult, child_env, measure_idle, run_scenario
from benchmarks._scenarios import FILES, SCENARIOS, SERVERS, Scenario, select
from benchmarks._targets import evaluate
from benchmarks._tools import TOOLS

DEFAULT_DATA_DIR = "/tmp/asyncfetch-bench"
DEFAULT_RUNS = 3
PACKAGES = ("asyncfetch", "aiohttp", "uvloop", "torch", "hf_transfer")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; defaults come from ``ASYNCFETCH_BENCH_*`` variables."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="asyncfetch vs torch.hub, aria2c, hf_transfer and curl on a local nginx.",
    )
    parser.add_argument("--only", metavar="NAME[,NAME]", help="scenarios to run (see --list)")
    parser.add_argument("--tools", metavar="NAME[,NAME]", help="run only these tools")
    parser.add_argument(
        "--runs", type=int, default=int(os.environ.get("ASYNCFETCH_BENCH_RUNS", DEFAULT_RUNS)),
        help="runs per (scenario, tool); medians are reported (env ASYNCFETCH_BENCH_RUNS)",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", type=Path,
        default=Path(os.environ.get("ASYNCFETCH_BENCH_DIR", DEFAULT_DATA_DIR)),
        help="files, nginx config, logs and results.json (env ASYNCFETCH_BENCH_DIR)",
    )  # fmt: skip
    parser.add_argument("--python", default=sys.executable, help="interpreter for Python tools")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a failed run or target")
    parser.add_argument("--list", action="store_true", help="list scenarios and tools, then exit")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def list_scenarios() -> str:
    """Describe every scenario and its tools."""
    lines = []
    for s in SCENARIOS:
        default = "" if s.default else " (not by default)"
        lines.append(f"{s.name}{default}: {s.description}\n    tools: {', '.join(s.tools)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    args = parse_args(argv)
    if args.list:
        print(list_scenarios())
        return 0
    try:
        scenarios = select(args.only)
        only_tools = _tool_filter(args.tools)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _run(args, scenarios, only_tools)
    except KeyboardInterrupt:
        log("interrupted; nginx and the running tool were stopped")
        return 130


def _tool_filter(tools: str | None) -> set[str] | None:
    if not tools:
        return None
    names = {name.strip() for name in tools.split(",") if name.strip()}
    unknown = names - TOOLS.keys()
    if unknown:
        raise ValueError(f"unknown tool(s) {sorted(unknown)}; choose from {sorted(TOOLS)}")
    return names


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, scenarios: list[Scenario], only_tools: set[str] | None) -> int:
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    needed_files = {s.file for s in scenarios}
    files = ensure_files(data_dir, [f for f in FILES if f.name in needed_files], args.python)
    needed_servers = {server for s in scenarios for server in s.servers}
    servers = [spec for spec in SERVERS if spec.name in needed_servers]
    results: list[ScenarioResult] = []
    started = time.monotonic()
    try:
        with Nginx(data_dir, served_root(data_dir), servers) as nginx:
            env = (
                child_env() | nginx.trust_env()
            )  # https servers: their CA, in place of the system's
            ctx = Context(args.python, data_dir, nginx, files, args.runs, env)
            idle_mb, idle_what = measure_idle(ctx)
            for scenario in scenarios:
                result = run_scenario(scenario, ctx, only_tools)
                results.append(result)
                print(text_table(result) + "\n", flush=True)
    finally:  # an interrupted tool may leave GBs of partial output behind
        shutil.rmtree(data_dir / "out", ignore_errors=True)
    verdicts = evaluate({r.scenario.name: r for r in results}, idle_mb, os.cpu_count() or 1)
    print(targets_text(verdicts) + "\n")
    meta = _meta(args, idle_mb, idle_what, time.monotonic() - started)
    write_json(data_dir / "results.json", results, verdicts, meta)
    print(markdown(results, str(meta["command"])))
    log(f"done in {time.monotonic() - started:.0f} s; results in {data_dir / 'results.json'}")
    failed = any(not run.ok for r in results for t in r.tools for run in t.runs)
    return 1 if args.strict and (failed or any(v.passed is False for v in verdicts)) else 0


def _meta(
    args: argparse.Namespace, idle_mb: float | None, idle_what: str, elapsed: float
) -> dict[str, object]:
    """The environment the numbers were measured in."""
    command = "python -m benchmarks " + shlex.join(sys.argv[1:])
    return {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(elapsed, 1),
        "runs": args.runs,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "sha_ni": _has_cpu_flag("sha_ni"),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "tools": {
            "nginx": _first_line([find_nginx() or "nginx", "-v"]),
            "aria2c": _first_line(["aria2c", "--version"]),
            "curl": _first_line(["curl", "--version"]),
        },
        "idle_rss_mb": idle_mb,
        "idle_command": idle_what,
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else None


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _has_cpu_flag(flag: str) -> bool:
    return any(
        line.startswith("flags") and flag in line.split() for line in _cpuinfo().splitlines()
    )
