"""Start-up of the ``asyncfetch`` command against the interpreter's own, in one run.

Two ratios, each from interleaved runs (medians), so that the machine's load weighs on both
sides alike:

- ``asyncfetch get URL`` until its first request line reaches a loopback socket, against
  ``python -c "import aiohttp, uvloop"`` run to its exit (target: at most 1.1x);
- ``python -m asyncfetch --version`` against ``python -c pass`` (target: at most 2x).

Usage: ``.venv/bin/python benchmarks/startup.py [--runs 10] [--python PATH]``. Prints one
line per measurement and the two ratios; exits 1 when a command fails.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

FIRST_REQUEST_TIMEOUT_S = 30.0
IMPORTS = "python -c 'import aiohttp, uvloop'"
GET = "asyncfetch get: first request"
PASS = "python -c pass"
VERSION = "python -m asyncfetch --version"


def timed_exit(argv: Sequence[str]) -> float:
    """Seconds from spawning ``argv`` to its exit; raises if it fails."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def timed_first_request(python: str, listener: socket.socket, dest: str) -> float:
    """Seconds from spawning ``asyncfetch get`` to the first request line on ``listener``."""
    port = listener.getsockname()[1]
    argv = [python, "-m", "asyncfetch", "get", f"http://127.0.0.1:{port}/f.bin", "-o", dest,
            "--no-progress", "--retries", "0"]  # fmt: skip
    start = time.perf_counter()
    child = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        listener.settimeout(FIRST_REQUEST_TIMEOUT_S)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(FIRST_REQUEST_TIMEOUT_S)
            data = b""
            while b"\r\n" not in data:  # the request line has arrived
                chunk = conn.recv(4096)
                if not chunk:
                    raise RuntimeError("asyncfetch get closed before sending a request")
                data += chunk
            return time.perf_counter() - start
    finally:
        child.kill()
        child.wait()


def medians(runs: int, cases: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run each case ``runs`` times, interleaved; return each case's median seconds."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            times[name].append(case())
    for name, values in times.items():
        print(f"{name:44} median {statistics.median(values) * 1000:7.1f} ms  "
              f"(min {min(values) * 1000:.1f}, n={len(values)})")  # fmt: skip
    return {name: statistics.median(values) for name, values in times.items()}


def _has_version(python: str) -> bool:
    argv = [python, "-m", "asyncfetch", "--version"]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _verdict(what: str, ratio: float, target: float) -> str:
    met = "met" if ratio <= target else "not met"
    return f"{what}: {ratio:.2f}x (target <= {target:g}x: {met})"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both ratios; print them against their targets."""
    parser = argparse.ArgumentParser(prog="benchmarks/startup.py", description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="runs per command (10)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to time")
    args = parser.parse_args(argv)
    py = args.python
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {args.runs} runs")
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        dest = os.path.join(tmp, "f.bin")
        cases: dict[str, Callable[[], float]] = {
            IMPORTS: lambda: timed_exit([py, "-c", "import aiohttp, uvloop"]),
            GET: lambda: timed_first_request(py, listener, dest),
            PASS: lambda: timed_exit([py, "-c", "pass"]),
        }
        if _has_version(py):
            cases[VERSION] = lambda: timed_exit([py, "-m", "asyncfetch", "--version"])
        else:
            print(f"{VERSION}: not supported by this asyncfetch; not measured")
        got = medians(args.runs, cases)
    print(_verdict("get, first request / import aiohttp, uvloop", got[GET] / got[IMPORTS], 1.1))
    if VERSION in got:
        print(_verdict("--version / python -c pass", got[VERSION] / got[PASS], 2.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
