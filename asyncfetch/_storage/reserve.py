"""Reserving a part file's blocks before its bytes come, without changing its size.

Sixteen connections write one part at sixteen places at once, and ext4 allocates the blocks of
each write as it lands (delayed allocation, extent by extent). Reserving the whole file first
with ``fallocate(2)`` gives those writes blocks that are already there: a verified 1 GiB
download over https on this project's 2-core machine finished its transfer 0.09-0.20 s sooner
(of ~1.6 s; ``benchmarks/hashcost.py``-style runs, see docs/https-receive-path.md).

``FALLOC_FL_KEEP_SIZE`` leaves the file's size where the writes put it, so a part's size still
says how far it was written, as resuming expects. Reserving is only a speed-up: where it cannot
be done (another system, a file system without it, a disk with no room for the whole file) it
is not, and the download goes on as before, writing what fits. glibc's ``posix_fallocate``
is not used: where the file system cannot reserve, it writes zeros over the whole file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable

FALLOC_FL_KEEP_SIZE = 1  # linux/falloc.h

Fallocate = Callable[[int, int, int, int], int]


def reserve(fd: int, size: int) -> bool:
    """Reserve blocks for the first ``size`` bytes of the open file ``fd``, its size unchanged
    (blocking). Returns whether they were; on failure nothing stays reserved past the end."""
    fallocate = _fallocate()
    if fallocate is None or size <= 0:
        return False
    if fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size) == 0:
        return True
    release(fd)  # a partial reservation past the end (ENOSPC) goes
    return False


def release(fd: int) -> None:
    """Give back the blocks reserved past the end of the open file ``fd``, its size unchanged
    (blocking): a part kept for a later run holds only what was written, not the whole size a
    server claimed (``ls`` would not show it; ``du`` and the free space would)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, os.fstat(fd).st_size)


@functools.cache
def _fallocate() -> Fallocate | None:
    """libc's ``fallocate64`` (64-bit offsets on every word size), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here, in the worker thread that opens a part, not on every start-up

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.fallocate64
    except (OSError, AttributeError):  # a libc without it (an old musl)
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    call: Fallocate = function
    return call
