"""Mirrors are mixed in only once sampled windows show they serve the primary's bytes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import cache
from asyncfetch._engine.samples import WINDOW, pick_windows
from tests.faultserver import FaultServer, make_payload
from tests.helpers import sha256

MakeServer = Callable[[], FaultServer]
MiB = 1 << 20
HEADER = make_payload(3 * MiB, seed=31)  # what checkpoints of one architecture share
CHECKPOINT_A = HEADER + make_payload(MiB + 999, seed=32)
CHECKPOINT_B = HEADER + make_payload(MiB + 999, seed=33)  # same size, other tensors


def test_windows_are_drawn_at_random_and_include_the_last() -> None:
    size = 1 << 30
    draws = [pick_windows(size) for _ in range(3)]
    for windows in draws:
        assert len(windows) >= 4
        assert windows[-1].end == size
        assert all(w.length == WINDOW for w in windows)
    assert draws[0] != draws[1] or draws[1] != draws[2]
    assert [w.length for w in pick_windows(1000)] == [1000]  # a small file: all of it


async def test_a_mirror_with_the_same_header_and_other_tensors_is_not_mixed_in(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary, mirror = make_server(), make_server()
    primary.add_file("m.bin", CHECKPOINT_A)
    mirror.add_file("m.bin", CHECKPOINT_B)
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        primary.url("m.bin"), tmp_path / "m.bin", mirrors=[mirror.url("m.bin")],
        connections=4, chunk_size=256 << 10,
    )  # fmt: skip

    assert (tmp_path / "m.bin").read_bytes() == CHECKPOINT_A
    assert result.bytes_by_mirror[mirror.url("m.bin")] == 0
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.count(mirror.url("m.bin")) == 1
    assert "differ from the primary" in warning
    assert [r.status for r in cache.verify(directory=tmp_path)] == ["ok"]


async def test_a_mirror_serving_the_same_bytes_is_used_without_a_word(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary, mirror = make_server(), make_server()
    primary.add_file("m.bin", CHECKPOINT_A)
    # nginx and Apache write ETags their own way, twisted rounds Last-Modified
    mirror.add_file(
        "m.bin",
        CHECKPOINT_A,
        etag='"65f1a2b3-401e7"',
        last_modified="Mon, 01 Jan 2024 00:00:01 GMT",
    )
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        primary.url("m.bin"), tmp_path / "m.bin", mirrors=[mirror.url("m.bin")],
        connections=4, chunk_size=256 << 10,
    )  # fmt: skip

    assert result.sha256 == sha256(CHECKPOINT_A)
    assert result.bytes_by_mirror[mirror.url("m.bin")] > 0
    assert caplog.records == []
    last = (len(CHECKPOINT_A) - WINDOW, len(CHECKPOINT_A) - 1)
    assert last in [r.range for r in mirror.gets("m.bin")]  # always among the samples


async def test_a_primary_without_ranges_is_not_mixed_with_its_mirrors(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary, mirror = make_server(), make_server()
    primary.add_file("m.bin", CHECKPOINT_A)
    mirror.add_file("m.bin", CHECKPOINT_B)
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        primary.url("m.bin", no_ranges=True), tmp_path / "m.bin", mirrors=[mirror.url("m.bin")]
    )

    assert (tmp_path / "m.bin").read_bytes() == CHECKPOINT_A
    assert result.bytes_by_mirror[mirror.url("m.bin")] == 0
    assert mirror.gets("m.bin") == []
    [warning] = [r.getMessage() for r in caplog.records]
    assert "does not serve byte ranges" in warning


async def test_a_mirror_announcing_the_primarys_digest_needs_no_samples(
    make_server: MakeServer, tmp_path: Path
) -> None:
    primary, mirror = make_server(), make_server()
    primary.add_file("m.bin", CHECKPOINT_A)
    mirror.add_file("m.bin", CHECKPOINT_A)

    result = await asyncfetch.fetch(
        primary.url("m.bin", digest="repr"), tmp_path / "m.bin",
        mirrors=[mirror.url("m.bin", digest="legacy")], connections=4, chunk_size=256 << 10,
    )  # fmt: skip

    assert result.sha256 == sha256(CHECKPOINT_A)
    assert result.bytes_by_mirror[mirror.url("m.bin", digest="legacy")] > 0
    sizes = {r.range[1] + 1 - r.range[0] for r in mirror.gets("m.bin") if r.range}
    assert WINDOW not in sizes
