"""``make soak``: many downloads through the fault server, checking that nothing leaks.

The parent process runs the fault server (tests/faultserver) and plans the downloads from a
fixed seed: sizes log-uniform from 1 B to 64 MiB (and 0 B one time in fifty), and 30% of
them with one fault -- a connection reset, a truncated body, a 503 with ``Retry-After: 1``, or
a stall -- somewhere in the body, fired once. A child process (``--worker``) downloads them
with :func:`asyncfetch.fetch`, a few at once, checks each file's SHA-256, deletes it, and
reports its open file descriptors and RSS after each one. So the server's memory never counts
in the figures.

Every file must be right (or, if it failed, leave nothing at its path); the last 100
downloads' open descriptors and RSS must stay within 10% of the first 100's. The run stops
by itself at ``--bound`` seconds, whatever it has done, and prints one summary line; it exits
1 when any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

MAX_SIZE = 64 << 20
WINDOW = 100  # downloads compared at the start and the end
FAULTS = ("reset", "truncate", "503", "stall")


@dataclass(frozen=True)
class Job:
    """One planned download."""

    index: int
    size: int
    fault: str | None

    def faults(self, rng: random.Random) -> dict[str, object]:
        """The fault server's query parameters for this job's fault (fired once)."""
        cut = rng.randrange(self.size) if self.size else 0
        if self.fault == "reset":
            return {"reset_after": cut, "times": 1}
        if self.fault == "truncate":
            return {"truncate_after": cut, "times": 1}
        if self.fault == "503":
            return {"status": 503, "retry_after": 1, "times": 1}
        if self.fault == "stall":
            return {"stall_after": cut, "times": 1}
        return {}


def plan(count: int, seed: int, fault_rate: float) -> list[Job]:
    """``count`` jobs: log-uniform sizes up to MAX_SIZE (2% empty), ``fault_rate`` faulty."""
    rng = random.Random(seed)
    jobs = []
    for index in range(count):
        size = 0 if rng.random() < 0.02 else int(math.exp(rng.uniform(0, math.log(MAX_SIZE))))
        fault = rng.choice(FAULTS) if rng.random() < fault_rate else None
        jobs.append(Job(index, min(size, MAX_SIZE), fault))
    return jobs


# the parent: server, plan, checks -------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Serve, hand the jobs to the worker ``--jobs`` at a time, check, print the summary."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.faultserver import FaultServer, make_payload

    jobs = plan(args.count, args.seed, args.fault_rate)
    rng = random.Random(args.seed + 1)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="asyncfetch-soak-"))
    stats: dict[str, Any] = {"ok": 0, "failed": 0, "wrong": 0, "left": 0, "bytes": 0}
    samples: list[tuple[int, int]] = []
    worker = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.soak", "--worker", "--timeout", str(args.timeout)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
    )  # fmt: skip
    assert worker.stdin is not None
    assert worker.stdout is not None
    pending: dict[int, tuple[Job, str]] = {}
    stopped_early = False
    try:
        with FaultServer() as server:
            todo = iter(jobs)
            while True:
                if time.monotonic() - started > args.bound:
                    stopped_early = True
                    break
                while len(pending) < args.jobs and (job := next(todo, None)) is not None:
                    name = f"f{job.index}.bin"
                    data = make_payload(job.size, seed=job.index)
                    server.add_file(name, data)
                    url = server.url(name, **job.faults(rng))
                    digest = hashlib.sha256(data).hexdigest()
                    dest = workdir / name
                    pending[job.index] = (job, name)
                    order = {"index": job.index, "url": url, "sha256": digest, "dest": str(dest)}
                    worker.stdin.write(json.dumps(order) + "\n")
                if not pending:
                    break
                line = worker.stdout.readline()
                if not line:
                    raise SystemExit("soak: the worker died")
                answer = json.loads(line)
                job, name = pending.pop(answer["index"])
                server.remove_file(name)
                _check(answer, job, workdir / name, stats, samples)
                server.reset_log()
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
        leftovers = sorted(p.name for p in workdir.iterdir())
        shutil.rmtree(workdir, ignore_errors=True)
    return _summarise(args, stats, samples, leftovers, time.monotonic() - started, stopped_early)


def _check(
    answer: dict[str, Any], job: Job, dest: Path, stats: dict[str, Any], samples: list[Any]
) -> None:
    samples.append((answer["fds"], answer["rss"]))
    if answer["ok"]:
        stats["ok"] += 1
        stats["bytes"] += job.size
        stats["wrong"] += not answer["right"]
    else:
        stats["failed"] += 1
        stats["left"] += answer["left"]
        print(f"soak: #{job.index} ({job.size} B, {job.fault}) failed: {answer['error']}",
              file=sys.stderr)  # fmt: skip
    for path in dest.parent.glob(dest.name + "*"):  # a failure's part file, journal
        path.unlink()


def _summarise(
    args: argparse.Namespace,
    stats: dict[str, Any],
    samples: list[tuple[int, int]],
    leftovers: list[str],
    elapsed: float,
    stopped_early: bool,
) -> int:
    done = stats["ok"] + stats["failed"]
    first, last = samples[:WINDOW], samples[-WINDOW:]
    fds = (mean(s[0] for s in first), mean(s[0] for s in last)) if samples else (0, 0)
    rss = (mean(s[1] for s in first), mean(s[1] for s in last)) if samples else (0, 0)
    steady = all(b <= a * 1.1 for a, b in (fds, rss))
    good = stats["wrong"] == 0 and stats["left"] == 0 and not leftovers and steady
    good = good and not stopped_early and done == args.count
    print(
        f"soak: {'PASS' if good else 'FAIL'}: {done}/{args.count} downloads "
        f"({stats['ok']} ok, {stats['failed']} cleanly failed, {stats['wrong']} wrong, "
        f"{stats['left']} left at a failed path), {stats['bytes'] / 2**30:.2f} GiB in "
        f"{elapsed:.0f} s, {args.jobs} at once, {args.fault_rate:.0%} faulty (seed {args.seed}); "
        f"open fds {fds[0]:.1f} -> {fds[1]:.1f}, RSS {rss[0] / 2**20:.1f} -> "
        f"{rss[1] / 2**20:.1f} MiB (first vs last {WINDOW})"
        + (f"; stopped at the {args.bound:.0f} s bound" if stopped_early else "")
        + (f"; left in the directory: {leftovers[:5]}" if leftovers else "")
    )
    return 0 if good else 1


# the worker: downloads, reports --------------------------------------------------------------


def work(timeout: float) -> int:
    """Read orders from stdin, download each at once, answer one JSON line per order."""
    import asyncfetch

    async def one(order: dict[str, Any]) -> None:
        dest = Path(order["dest"])
        answer: dict[str, Any] = {"index": order["index"], "ok": False}
        try:
            await asyncfetch.fetch(order["url"], dest, sha256=order["sha256"], timeout=timeout)
            answer["ok"] = True
            answer["right"] = await asyncio.to_thread(_check_and_delete, dest, order["sha256"])
        except asyncfetch.FetchError as exc:
            answer["error"] = f"{type(exc).__name__}: {exc}"
            answer["left"] = await asyncio.to_thread(dest.exists)
        answer["fds"] = len(os.listdir("/proc/self/fd"))
        answer["rss"] = _rss()
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tasks = set()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            task = asyncio.create_task(one(json.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return 0


def _check_and_delete(path: Path, sha256: str) -> bool:
    """Whether the file at ``path`` has this SHA-256; deletes it."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    path.unlink()
    return digest.hexdigest() == sha256


def _rss() -> int:
    with open("/proc/self/statm") as statm:  # noqa: PTH123 (a /proc file)
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.soak [--count N] [--seed S] [--jobs J] [--bound SECONDS]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="downloads (1000)")
    parser.add_argument("--seed", type=int, default=15, help="the plan's seed (15)")
    parser.add_argument("--jobs", type=int, default=4, help="downloads at once (4)")
    parser.add_argument("--fault-rate", type=float, default=0.3, help="share with a fault (0.3)")
    parser.add_argument("--bound", type=float, default=1200, help="stop after SECONDS (1200)")
    parser.add_argument("--timeout", type=float, default=2.0, help="client timeout (2 s)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return work(args.timeout)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
