"""PrefixHasher: the in-order SHA-256 of a file while it is being written."""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncfetch._storage import hasher as _hasher
from asyncfetch._storage.hasher import PrefixHasher
from tests.faultserver import make_payload

DATA = make_payload(3 * mmap.ALLOCATIONGRANULARITY * 5 + 12345)


@pytest.fixture
def part(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "f.part", os.O_RDWR | os.O_CREAT)
    yield fd
    os.close(fd)


def test_hashes_the_prefix_as_it_grows_across_map_windows(
    part: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_hasher, "MAP_WINDOW", 2 * mmap.ALLOCATIONGRANULARITY)
    monkeypatch.setattr(_hasher, "HASH_BLOCK", 10_000)  # blocks straddle the windows
    hasher = PrefixHasher(part)
    for start in range(0, len(DATA), 50_000):  # written and announced piece by piece
        piece = DATA[start : start + 50_000]
        os.pwrite(part, piece, start)
        hasher.advance(start + len(piece))
    assert hasher.digest(len(DATA)) == hashlib.sha256(DATA).hexdigest()


def test_a_file_shorter_than_announced_is_an_error_not_a_crash(part: int) -> None:
    # reading a mapping past the end of the file would kill the process with SIGBUS
    os.pwrite(part, DATA[:1000], 0)
    with pytest.raises(OSError, match="end of file at byte 1000"):
        PrefixHasher(part).digest(len(DATA))


def test_falls_back_to_reading_where_the_file_cannot_be_mapped(
    part: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> mmap.mmap:
        raise OSError("mmap not supported here")

    monkeypatch.setattr(mmap, "mmap", refuse)
    os.pwrite(part, DATA, 0)
    assert PrefixHasher(part).digest(len(DATA)) == hashlib.sha256(DATA).hexdigest()


def test_cancel_stops_within_a_window_not_at_the_end(part: int) -> None:
    # Ctrl-C at the end of a big download waits for cancel(); it must not hash the rest first
    size = 1 << 30
    os.ftruncate(part, size)  # sparse: reads as zeros, nothing on disk
    hasher = PrefixHasher(part)
    hasher.advance(size)
    deadline = time.monotonic() + 10
    while hasher.hashed == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    started_at = hasher.hashed
    hasher.cancel()
    assert 0 < started_at <= hasher.hashed <= started_at + 2 * _hasher.MAP_WINDOW


def test_knows_its_speed_before_the_first_byte_and_then_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(3 << 20))
    with path.open("rb") as file:
        hasher = PrefixHasher(file.fileno())
        deadline = time.monotonic() + 10
        while not hasher.rate and time.monotonic() < deadline:
            time.sleep(0.001)
        assert hasher.rate > 0  # calibrated on a scratch block
        assert hasher.digest(3 << 20) == hashlib.sha256(bytes(3 << 20)).hexdigest()
        assert hasher.rate == hasher.hashed / hasher._busy  # now the file's own
