"""What the SHA-256 costs a verified download over https, and why, in one run.

A verified download hashes the part file in a thread while the bytes arrive (see
``asyncfetch/_storage/hasher.py``). Where a core is free, that costs the download nothing but
the hash's tail; where the transfer already keeps every core busy, the hash's CPU time has to
come out of the transfer's. This script tells the two apart. It downloads the benchmark's
1 GiB file from nginx over https, in-process (``asyncfetch.fetch``, 16 connections, the
command line's event loop), with the hash thread doing each of:

- ``no hash``: no hash thread (``hash=False``);
- ``map only``: maps the file's windows as it grows, reads nothing, hashes nothing;
- ``hash a scratch block``: hashes as many bytes, from one 1 MiB block that stays in the CPU's
  cache instead of the file;
- ``hash the file``: what asyncfetch does;
- ``hash the file at nice 10``: the same, the hash thread at a lower priority.

The three variants that hash nothing or the wrong bytes end in a digest mismatch, after the
timings are taken. Each run prints nothing; the parent interleaves variants (one run of each,
``--runs`` times) and prints medians of: the transfer (the part file opened to the last byte
written), the finish (last byte to the verified rename), both together (the median of each
run's sum), the process's CPU seconds, and the share of both cores' time that was idle
during the transfer (``/proc/stat``: how much room a hash thread had).

Usage: ``.venv/bin/python benchmarks/hashcost.py [--runs 7] [--data-dir /tmp/asyncfetch-bench]``
(nginx and the bench's 1 GiB file, as ``make bench`` prepares them; Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._data import ensure_files, served_root  # noqa: E402
from benchmarks._nginx import Nginx  # noqa: E402
from benchmarks._scenarios import CONNECTIONS, FILES, SERVERS  # noqa: E402

FILE = "1g.bin"
VARIANTS = ("no hash", "map only", "hash a scratch block", "hash the file",
            "hash the file at nice 10")  # fmt: skip
LOWER_PRIORITY = 10


def _proc_stat() -> tuple[int, int]:
    """(idle, total) clock ticks of all cores so far."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:9]]
    return ticks[3], sum(ticks)


def _patch(variant: str) -> None:
    """Make the hash thread do what ``variant`` says (see the module's docstring)."""
    from asyncfetch._storage import hasher

    scratch = bytes(hasher.HASH_BLOCK)

    def map_only(self: hasher.PrefixHasher, window: memoryview, start: int, end: int) -> None:
        self._hashed += end - start

    def scratch_block(self: hasher.PrefixHasher, window: memoryview, start: int, end: int) -> None:
        for pos in range(start, end, hasher.HASH_BLOCK):
            size = min(hasher.HASH_BLOCK, end - pos)
            self._sha.update(scratch[:size])
            self._hashed += size

    run = hasher.PrefixHasher._run

    def niced(self: hasher.PrefixHasher) -> None:
        # Linux keeps a nice value per thread: this lowers the hash thread's alone
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWER_PRIORITY)
        run(self)

    if variant == "map only":
        hasher.PrefixHasher._update = map_only  # type: ignore[method-assign]
    elif variant == "hash a scratch block":
        hasher.PrefixHasher._update = scratch_block  # type: ignore[method-assign]
    elif variant == "hash the file at nice 10":
        hasher.PrefixHasher._run = niced  # type: ignore[method-assign]


def child(variant: str, url: str, dest: str, sha256: str) -> None:
    """One download as ``variant``; print its figures as one JSON line."""
    import uvloop

    import asyncfetch
    from asyncfetch._storage import partfile

    _patch(variant)
    marks: dict[str, tuple[float, tuple[int, int]]] = {}
    opened: Any = vars(partfile.PartFile)["open"].__func__
    finalize: Any = partfile.PartFile.finalize

    async def open_marked(cls: Any, *args: Any, **kwargs: Any) -> Any:
        marks["open"] = (time.perf_counter(), _proc_stat())
        return await opened(cls, *args, **kwargs)

    async def finalize_marked(self: Any, *args: Any, **kwargs: Any) -> Any:
        marks["last byte"] = (time.perf_counter(), _proc_stat())
        return await finalize(self, *args, **kwargs)

    setattr(partfile.PartFile, "open", classmethod(open_marked))  # noqa: B010 - a patch
    setattr(partfile.PartFile, "finalize", finalize_marked)  # noqa: B010
    hashing = variant != "no hash"
    fetching = asyncfetch.fetch(
        url, dest, sha256=sha256 if hashing else None, connections=CONNECTIONS, hash=hashing
    )
    try:
        uvloop.run(fetching)
    except asyncfetch.IntegrityError:
        if variant.startswith("hash the file"):  # these hash the file itself: must match
            raise
    done = time.perf_counter()
    (t0, (idle0, all0)), (t1, (idle1, all1)) = marks["open"], marks["last byte"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "transfer_s": t1 - t0, "finish_s": done - t1, "total_s": done - t0,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "idle_share": (idle1 - idle0) / max(all1 - all0, 1),
    }))  # fmt: skip


def _one_run(
    python: str, variant: str, url: str, out: Path, sha256: str, env: dict[str, str]
) -> dict[str, float]:
    out.unlink(missing_ok=True)
    argv = [python, __file__, "--child", variant, url, str(out), sha256]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    out.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"{variant}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    """Measure every variant; print one line of medians each."""
    parser = argparse.ArgumentParser(prog="benchmarks/hashcost.py", description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="runs per variant (7)")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/asyncfetch-bench"))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    prepared = ensure_files(data_dir, [f for f in FILES if f.name == FILE], sys.executable)
    sha256 = prepared[FILE][0].sha256
    https = [spec for spec in SERVERS if spec.name == "https"]
    out = data_dir / "out" / "hashcost.bin"
    out.parent.mkdir(exist_ok=True)
    rows: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, {args.runs} runs")
    with Nginx(data_dir, served_root(data_dir), https) as nginx:
        env = os.environ | nginx.trust_env()
        url = nginx.url("https", FILE)
        for _ in range(args.runs):
            for variant in VARIANTS:
                rows[variant].append(_one_run(sys.executable, variant, url, out, sha256, env))
    for variant, runs in rows.items():
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(
            f"{variant:26} transfer {med['transfer_s']:.2f} s  finish {med['finish_s']:.2f} s  "
            f"both {med['total_s']:.2f} s  CPU {med['cpu_s']:.2f} s  "
            f"idle during the transfer {med['idle_share']:.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
