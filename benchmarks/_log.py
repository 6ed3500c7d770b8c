"""Progress lines on stderr (stdout is kept for the result tables)."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def log(message: str) -> None:
    """Print one progress line to stderr, prefixed with the seconds since start."""
    print(f"[bench {time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)
