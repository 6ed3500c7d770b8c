"""Ranges that cost more than they bring (asyncfetch._engine.rangecost): fewer, larger ones,
down to one stream, said in ``--json``; and a primary without ranges next to ranged mirrors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch._engine.planner import Scheduler
from asyncfetch._engine.rangecost import COST_SHARE, RangeCost
from asyncfetch._models import ByteRange
from tests.faultserver import FaultServer, make_payload
from tests.helpers import run_cli, sha256

MakeServer = Callable[[], FaultServer]
MiB = 1 << 20


def costs(*samples: tuple[float, int, float]) -> RangeCost:
    measured = RangeCost()
    for cost, nbytes, seconds in samples:
        measured.record(cost, nbytes, seconds)
    return measured


def test_a_large_per_request_cost_asks_for_ranges_that_make_it_small() -> None:
    advice = costs(*[(0.3, MiB, 0.01)] * 3).advice()
    assert advice is not None
    rate = MiB / 0.01
    assert advice.chunk == pytest.approx(0.3 * rate * (1 - COST_SHARE) / COST_SHARE, rel=0.01)
    assert advice.note.startswith("fewer, larger: per-request cost 0.30 s")


@pytest.mark.parametrize(
    "samples",
    [
        [(0.3, MiB, 0.01)] * 2,  # too few to tell
        [(0.001, MiB, 0.01)] * 3,  # a loopback's cost: noise
        [(0.05, 16 * MiB, 3.2)] * 3,  # a WAN round trip against a 3 s range: 1.5 %
        [(0.3, 32 << 10, 0.001)] * 3,  # tail pieces say nothing of the rate
    ],
)
def test_no_advice_when_ranges_pay_their_way(samples: list[tuple[float, int, float]]) -> None:
    assert costs(*samples).advice() is None


def test_no_advice_for_ranges_no_larger_than_the_current_ones() -> None:
    measured = costs(*[(0.3, MiB, 0.01)] * 3)
    advice = measured.advice()
    assert advice is not None
    assert measured.advice(advice.chunk) is None


def test_larger_ranges_still_keep_every_connection_busy() -> None:
    # nginx's first-second burst makes 1 MiB ranges look cheap to stream: bigger ranges, but
    # never fewer than the connections (each is capped)
    advice = costs((0.04, MiB, 0.01), (0.05, MiB, 0.01), (0.06, MiB, 0.01)).advice(
        remaining=400 * MiB, connections=16
    )
    assert advice is not None
    assert advice.chunk == 25 * MiB
    assert "every connection kept" in advice.note


def test_requests_that_queue_grow_ranges_down_to_one_stream() -> None:
    # an S3 emulator answering one range at a time: first bytes at 0.3, 0.6, 0.9 s
    advice = costs((0.3, MiB, 0.01), (0.6, MiB, 0.01), (0.9, MiB, 0.01)).advice(
        remaining=100 * MiB, connections=16
    )
    assert advice is not None
    assert advice.chunk >= 100 * MiB
    assert "queue" in advice.note


def test_coarsen_merges_adjacent_pending_ranges_up_to_the_size() -> None:
    scheduler = Scheduler([ByteRange(i * MiB, (i + 1) * MiB) for i in range(10)])
    first = scheduler.take()
    assert first is not None
    assert scheduler.coarsen(4 * MiB) == 3  # 1-5, 5-9, 9-10 MiB
    ranges = [t.byte_range() for t in scheduler if t is not first]
    assert ranges == [ByteRange(MiB, 5 * MiB), ByteRange(5 * MiB, 9 * MiB),
                      ByteRange(9 * MiB, 10 * MiB)]  # fmt: skip
    assert scheduler.coarsen(1 << 40) == 1


SIZE = 24 * MiB


def test_a_per_request_cost_gives_fewer_larger_ranges_said_in_json(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(SIZE, seed=3)
    server.add_file("m.bin", data)
    url = server.url("m.bin", delay=0.3, close=1)  # ~0.3 s an answer, a new connection each
    done = run_cli("get", url, "-o", str(tmp_path / "m.bin"), "--json", "--no-progress",
                   "--connections", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (tmp_path / "m.bin").read_bytes() == data
    assert result["sha256"] == sha256(data)
    assert result["ranges"].startswith("fewer, larger: per-request cost 0.")
    gets = [r for r in server.gets("m.bin") if r.method == "GET"]
    assert len(gets) <= 10  # the plan alone asks for 12 ranges of 1, 2 and 4 MiB


# a primary without Range support, next to mirrors with it ------------------------------------

DATA = make_payload(6 * MiB + 99, seed=5)


def pair(make_server: MakeServer) -> tuple[FaultServer, FaultServer]:
    primary, mirror = make_server(), make_server()
    primary.add_file("m.bin", DATA)
    mirror.add_file("m.bin", DATA)
    return primary, mirror


def test_with_sha256_ranged_mirrors_serve_a_primary_without_ranges(
    make_server: MakeServer, tmp_path: Path
) -> None:
    primary, mirror = pair(make_server)
    result = asyncfetch.download(
        primary.url("m.bin", no_ranges=True), tmp_path / "m.bin", sha256=sha256(DATA),
        mirrors=[mirror.url("m.bin")], connections=4, chunk_size=512 << 10,
    )  # fmt: skip
    assert (tmp_path / "m.bin").read_bytes() == DATA
    ranged = [r for r in mirror.gets("m.bin") if r.method == "GET" and r.range is not None]
    assert len(ranged) >= 4
    assert result.bytes_by_mirror[mirror.url("m.bin")] == len(DATA)


def test_a_mirror_announcing_the_primarys_digest_serves_its_ranges(
    make_server: MakeServer, tmp_path: Path
) -> None:
    primary, mirror = pair(make_server)
    result = asyncfetch.download(
        primary.url("m.bin", no_ranges=True, digest="repr"), tmp_path / "m.bin",
        mirrors=[mirror.url("m.bin", digest="repr")], connections=4, chunk_size=512 << 10,
    )  # fmt: skip
    assert (tmp_path / "m.bin").read_bytes() == DATA
    assert result.bytes_by_mirror[mirror.url("m.bin", digest="repr")] == len(DATA)


def test_a_mirror_not_shown_to_serve_the_file_is_unused_and_json_says_why(
    make_server: MakeServer, tmp_path: Path
) -> None:
    primary, mirror = pair(make_server)
    done = run_cli("get", primary.url("m.bin", no_ranges=True), "-o", str(tmp_path / "m.bin"),
                   "--mirror", mirror.url("m.bin"), "--json", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    why = json.loads(done.stdout)["unused_mirrors"][mirror.url("m.bin")]
    assert "does not serve byte ranges" in why
    assert "sha256" in why
