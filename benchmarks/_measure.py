"""Run one child process and measure it: wall time, CPU seconds and peak RSS.

The child runs in its own process group. ``os.wait4`` returns the child's resource usage,
which Linux adds up with that of every descendant the child waited for (CPU time summed,
``ru_maxrss`` the largest single process, KiB). The change in ``getrusage(RUSAGE_CHILDREN)``
CPU time across the run is kept as a cross-check.

Peak RSS needs care: when a process execs, Linux folds the RSS high-water mark of the memory it
had before exec (the forked copy of this harness, tens of MB) into its ``ru_maxrss``. So the
tool runs under GNU ``time`` (``/usr/bin/time -f %M``, about 1 MB), and the peak RSS is what
``time`` reports for its own child, which was forked from that small process. Without GNU time
the ``wait4`` value is used and is at least this harness's own RSS.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

KILL_WAIT_S = 10.0
GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Measurement:
    """What one child process cost.

    Attributes:
        wall_s: from just before spawning to just after reaping (``time.perf_counter``).
        cpu_s: user + system seconds of the child and its reaped descendants (``wait4``).
        peak_rss_mb: peak RSS in MB (1e6 bytes) of the largest process in the tree.
        returncode: exit status; negative for a signal.
        timed_out: True when the harness killed the child for running past its limit.
        children_cpu_s: the same CPU time via ``RUSAGE_CHILDREN`` deltas (cross-check).
        rss_source: "gnu-time" or "wait4" (the latter includes this harness's RSS as a floor).
    """

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int
    timed_out: bool
    children_cpu_s: float
    rss_source: str


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left in a process group this harness created."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_measured(
    argv: list[str], log_path: Path, timeout_s: float, env: dict[str, str] | None = None
) -> Measurement:
    """Run ``argv`` with stdout and stderr into ``log_path``; kill it after ``timeout_s``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rss_path = log_path.with_suffix(".maxrss")
    rss_path.unlink(missing_ok=True)
    if has_gnu_time():
        argv = [GNU_TIME, "--quiet", "--format=%M", f"--output={rss_path}", "--", *argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    timed_out = threading.Event()
    with open(log_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        returncode, usage = _reap(proc, timeout_s, timed_out)
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    maxrss_kib = _read_kib(rss_path)
    return Measurement(
        wall_s=wall,
        cpu_s=_cpu(usage),
        peak_rss_mb=(maxrss_kib or usage.ru_maxrss) * 1024 / 1e6,
        returncode=returncode,
        timed_out=timed_out.is_set(),
        children_cpu_s=_cpu(after) - _cpu(before),
        rss_source="wait4" if maxrss_kib is None else "gnu-time",
    )


def has_gnu_time() -> bool:
    """True when GNU time (``apt-get install time``) can measure peak RSS."""
    return shutil.which(GNU_TIME) is not None


def _read_kib(path: Path) -> int | None:
    """The last line of GNU time's output file, a KiB count; None if there is none."""
    try:
        lines = path.read_text().split()
    except OSError:
        return None
    return int(lines[-1]) if lines and lines[-1].isdigit() else None


def _reap(
    proc: subprocess.Popen[bytes], timeout_s: float, timed_out: threading.Event
) -> tuple[int, resource.struct_rusage]:
    """Wait for ``proc`` with ``wait4``; a timer kills its process group past the limit."""

    def expire() -> None:
        timed_out.set()
        kill_group(proc.pid)

    timer = threading.Timer(timeout_s, expire)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        # Tell Popen the child is reaped, so that it never waits for a reused pid.
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        timer.cancel()
        kill_group(proc.pid)  # descendants the child left behind, if any
        if proc.returncode is None:  # interrupted (Ctrl-C): reap, leave no zombie
            proc.wait(timeout=KILL_WAIT_S)
    return proc.returncode, usage


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime
