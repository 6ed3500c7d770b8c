"""How bytes go into the part file: positional writes in calls of WRITE_PIECE bytes, small
buffers gathered into one call and large ones cut, until the part is no longer ours."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from .partguard import PartGuard

# Bytes per write call. The page cache sizes its folios by the write: on this project's
# kernel (6.18, ext4 large folios) writing 1 GiB cost a median 1.33 s of system CPU in 1 MiB
# calls, 0.58 s in 128 KiB, 0.23 s in 64 KiB and 0.47 s in 16 KiB (benchmarks/pagecache.py);
# a call per 64 KiB costs about 16 ms per GiB where folios are small anyway.
WRITE_PIECE = 64 << 10


def pwrite_all(
    fd: int, buffers: Sequence[bytes | memoryview], offset: int, guard: PartGuard
) -> None:
    """Write ``buffers`` back to back at ``offset`` in system calls of at most WRITE_PIECE
    bytes each, while the part is still ours."""
    for call in _calls(buffers, WRITE_PIECE):
        while call:
            guard.check_due()
            written = os.pwritev(fd, call, offset)
            offset += written
            call = _drop_front(call, written)


def _calls(buffers: Sequence[bytes | memoryview], size: int) -> Iterator[list[memoryview]]:
    """``buffers``, in order, regrouped into lists of views of ``size`` bytes (the last one
    shorter): small buffers gathered, large ones cut."""
    call: list[memoryview] = []
    room = size
    for buffer in buffers:
        view = memoryview(buffer).cast("B")
        while view:
            call.append(view[:room])
            room -= len(call[-1])
            view = view[len(call[-1]) :]
            if not room:
                yield call
                call, room = [], size
    if call:
        yield call


def _drop_front(views: list[memoryview], count: int) -> list[memoryview]:
    """``views`` without their first ``count`` bytes (a short write's remainder)."""
    while views and count >= len(views[0]):
        count -= len(views[0])
        views = views[1:]
    if views and count:
        views = [views[0][count:], *views[1:]]
    return views
