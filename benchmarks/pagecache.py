"""System CPU of writing into the page cache, by the size of each write call.

Writes the same bytes (a 16 MiB buffer, reused) into a fresh file in calls of each size, in
interleaved rounds so the machine's load weighs on every size alike, and prints the median
system CPU seconds per GiB. This is the measurement behind ``WRITE_PIECE`` in
``asyncfetch/_storage/writecalls.py``: kernels whose page cache sizes its folios by the write
(ext4 large folios, Linux 6.16 on) can spend several times more in the copy when each call is
large.

Usage: ``.venv/bin/python benchmarks/pagecache.py [--rounds 6] [--gib 1] [--dir DIR]
[--sizes 16K,64K,128K,1M]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
from pathlib import Path

POOL = 16 << 20
UNITS = {"K": 1 << 10, "M": 1 << 20}


def parse_size(text: str) -> int:
    """``64K`` → 65536; ``1M`` → 1048576; a bare number is bytes."""
    unit = UNITS.get(text[-1:].upper())
    return int(text[:-1]) * unit if unit else int(text)


def system_seconds(path: Path, call: int, total: int, pool: memoryview) -> float:
    """System CPU seconds spent writing ``total`` bytes to a new ``path`` in ``call``-byte
    calls (the file is removed afterwards)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        offset = 0
        while offset < total:
            start = offset % len(pool)
            os.pwrite(fd, pool[start : start + call], offset)
            offset += call
        return resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
    finally:
        os.close(fd)
        path.unlink()


def main() -> None:
    """Parse arguments, run the rounds, print medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--sizes", default="16K,64K,128K,1M")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    total = int(args.gib * (1 << 30))
    pool = memoryview(bytearray(os.urandom(POOL)))
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.rounds):
            for size in sizes:
                seconds[size].append(system_seconds(Path(tmp, "f.bin"), size, total, pool))
    for size in sizes:
        per_gib = statistics.median(seconds[size]) * (1 << 30) / total
        spread = ", ".join(f"{s:.2f}" for s in seconds[size])
        print(f"{size >> 10:>6} KiB calls: median {per_gib:.2f} system CPU s/GiB ({spread})")


if __name__ == "__main__":
    main()
