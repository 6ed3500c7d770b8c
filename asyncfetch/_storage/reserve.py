"""Reserving a part file's blocks before its bytes come, without changing its size.

Sixteen connections write one part at sixteen places at once, and ext4 allocates the blocks of
each write as it lands (delayed allocation, extent by extent). Reserving the whole file first
with ``fallocate(2)`` gives those writes blocks that are already there: a verified 1 GiB
download over https on this project's 2-core machine finished its transfer 0.09-0.20 s sooner
(of ~1.6 s; ``benchmarks/hashcost.py``-style runs, see docs/https-receive-path.md).

``FALLOC_FL_KEEP_SIZE`` leaves the file's size where the writes put it, so a part's size still
says how far it was written, as resuming expects. Reserving is only a speed-up: where it cannot
be done (another system, a file system without it, a disk with no room for the whole file) it
is not, and the download goes on as before, writing what fits; nor is it where it would leave
the disk less than HEADROOM free, or take more than half of what is free. glibc's
``posix_fallocate`` is not used: where the file system cannot reserve, it writes zeros over
the whole file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable

FALLOC_FL_KEEP_SIZE = 1  # linux/falloc.h
#: left free beside a reservation: the part's journal, the other downloads', other programs'
HEADROOM = 64 << 20

Fallocate = Callable[[int, int, int, int], int]


def reserve(fd: int, size: int) -> bool:
    """Reserve blocks for the first ``size`` bytes of the open file ``fd``, its size unchanged
    (blocking). Returns whether they were; on failure nothing stays reserved past the end."""
    fallocate = _fallocate()
    if fallocate is None or size <= 0 or not _room_for(fd, size):
        return False
    if fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size) == 0:
        return True
    release(fd)  # a partial reservation past the end (ENOSPC) goes
    return False


def _room_for(fd: int, size: int) -> bool:
    """Whether the disk of ``fd`` has room for its first ``size`` bytes with HEADROOM to spare,
    and they take at most half of what is free.

    Else reserving would fill it, if only until the failed reservation is given back: the
    part's own journal, the other files of a batch and other programs would find no room
    (a size that nearly fills the disk, or one a server made up, far larger than it). And a
    server that claims a size it never sends would hold that much of the disk for as long as
    its download lasts, where writing takes only what it sent: half the free space at most.
    """
    try:
        disk, held = os.fstatvfs(fd), os.fstat(fd).st_blocks * 512
    except OSError:
        return False
    need, free = size - held, disk.f_bavail * disk.f_frsize
    return need + HEADROOM <= free and need <= free // 2


def release(fd: int) -> None:
    """Give back the blocks reserved past the end of the open file ``fd``, its size unchanged
    (blocking): a part kept for a later run holds only what was written, not the whole size a
    server claimed (``ls`` would not show it; ``du`` and the free space would)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, os.fstat(fd).st_size)


@functools.cache
def _fallocate() -> Fallocate | None:
    """libc's ``fallocate`` with 64-bit offsets on every word size, or None off Linux:
    glibc's ``fallocate64``, else musl's ``fallocate`` (musl's offsets are always 64-bit, and
    musl 1.2.4 dropped the ``*64`` names)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here, in the worker thread that opens a part, not on every start-up

    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    function = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    call: Fallocate = function
    return call
