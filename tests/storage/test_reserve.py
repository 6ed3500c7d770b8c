"""A part's blocks are reserved when its download starts, its size left to the writes; where
the disk has no room for all of it, nothing stays reserved and the download writes what fits
(tests/cache/test_cache.py's disk-full test resumes from there)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import DestinationError
from asyncfetch._storage.reserve import reserve
from tests.faultserver import FaultServer, make_payload
from tests.helpers import tmpfs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fallocate(2)")

SIZE = 4 << 20
SENT = 64 << 10  # the body bytes the server sends before it stalls
WAIT_S = 10.0


def _allocated(st: os.stat_result) -> int:
    return st.st_blocks * 512


def _written_part(directory: Path) -> Path | None:
    parts = [p for p in directory.iterdir() if p.name.endswith(".part")]
    return parts[0] if parts and parts[0].stat().st_size >= SENT else None


async def _part_once_written(directory: Path) -> Path:
    """The part file in ``directory`` once it holds SENT bytes (bounded wait)."""
    for _ in range(int(WAIT_S / 0.02)):
        if part := await asyncio.to_thread(_written_part, directory):
            return part
        await asyncio.sleep(0.02)
    raise AssertionError(f"no part with {SENT} bytes in {directory} after {WAIT_S} s")


async def _stalled_part(
    server: FaultServer, directory: Path, size: int = SIZE
) -> tuple[Path, os.stat_result]:
    """A download of ``size`` bytes whose server stalls after SENT: its part and what it
    looked like then; the download is stopped (Ctrl-C's cancellation) before this returns."""
    server.add_file("m.bin", make_payload(size, seed=7))
    url = server.url("m.bin", stall_after=SENT)
    fetching = asyncio.ensure_future(asyncfetch.fetch(url, directory / "m.bin", connections=1))
    try:
        part = await _part_once_written(directory)
        return part, await asyncio.to_thread(part.stat)
    finally:
        fetching.cancel()
        await asyncio.gather(fetching, return_exceptions=True)


async def test_a_part_has_the_whole_file_reserved_and_only_its_written_size(
    server: FaultServer, tmp_path: Path
) -> None:
    _, st = await _stalled_part(server, tmp_path)

    assert st.st_size == SENT  # what was written: a resume reads how far it got from it
    assert _allocated(st) >= SIZE  # the rest is reserved: no block allocated write by write


async def test_a_part_kept_for_a_later_run_gives_back_what_was_reserved_past_its_end(
    server: FaultServer, tmp_path: Path
) -> None:
    """A server that claims a size it never sends, or a Ctrl-C: the part kept holds the disk
    space of what was written, not of the whole size claimed (which ``ls`` would not show)."""
    part, during = await _stalled_part(server, tmp_path)
    kept = await asyncio.to_thread(part.stat)

    assert _allocated(during) >= SIZE  # reserved while it ran
    assert kept.st_size == SENT  # kept, for a resume
    assert _allocated(kept) < SIZE // 2  # the rest given back: the written bytes' blocks


def test_what_does_not_fit_is_not_reserved_and_the_size_stays(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with tmpfs(disk, "size=256k"):
        fd = os.open(disk / "f.part", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, b"x" * 4096, 0)
            reserved = reserve(fd, 1 << 20)
            st = os.fstat(fd)
        finally:
            os.close(fd)

    assert reserved is False
    assert st.st_size == 4096
    assert _allocated(st) <= 8192  # the page written, nothing past it held


async def test_a_file_that_would_leave_no_room_beside_it_is_not_reserved(
    server: FaultServer, tmp_path: Path
) -> None:
    """Reserving it would leave no room for its journal: the download goes as on a disk
    without reservations, failing once full with the part and its journal kept (it was a
    bare OSError from opening the part, the journal never written)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    with tmpfs(disk, "size=600k"):
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        url = server.add_file("m.bin", make_payload(free - 100, seed=3))
        with pytest.raises(DestinationError, match="no space left") as raised:
            await asyncfetch.fetch(url, disk / "m.bin", connections=1)
        left = sorted(p.name for p in disk.iterdir())

    assert "partial download is kept" in str(raised.value)
    part = next(name for name in left if name.endswith(".part"))
    assert left == [part, f"{part}.json"]


@pytest.mark.parametrize(("mib", "reserved"), [(90, True), (120, False)])
async def test_a_file_is_reserved_only_where_it_takes_at_most_half_the_free_space(
    server: FaultServer, tmp_path: Path, mib: int, reserved: bool
) -> None:
    """A server that claims a size and stalls (or never sends it) would hold all of it on
    the disk for as long as the download lasts: at most half of the free space, 100 MiB of
    this 200 MiB disk."""
    disk = tmp_path / "disk"
    disk.mkdir()
    with tmpfs(disk, "size=200m"):
        _, st = await _stalled_part(server, disk, mib << 20)

    assert st.st_size == SENT
    assert (_allocated(st) >= mib << 20) is reserved
