"""Ranges that cost more than they bring (asyncfetch._engine.rangecost): fewer, larger ones,
down to one stream, said in ``--json``; and a primary without ranges next to ranged mirrors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert advice.chunk == 100 * MiB  # the rest in one range: no larger than what is left
    assert "queue" in advice.note


def test_first_bytes_a_few_milliseconds_apart_are_no_queue() -> None:
    # nginx capped per connection, on a busy machine: larger ranges, but every connection kept
    advice = costs((0.01, MiB, 0.007), (0.02, MiB, 0.007), (0.03, MiB, 0.007)).advice(
        remaining=500 * MiB, connections=16
    )
    assert advice is not None
    assert not advice.queued
    assert advice.chunk <= -(-500 * MiB // 16)


def test_a_hashed_download_keeps_ranges_small_enough_for_the_hash_to_keep_up() -> None:
    # 512 MiB behind a 40 ms round trip, 16 connections, SHA-256 at 1.9 GB/s: one 32 MiB range
    # each would leave 15 of them to hash after the last byte; two rounds of 16 MiB halve it
    measured = costs(*[(0.06, MiB, 0.01)] * 3)
    plain = measured.advice(remaining=512 * MiB, connections=16)
    hashed = measured.advice(remaining=512 * MiB, connections=16, hash_rate=1.9e9)
    assert plain is not None
    assert hashed is not None
    assert plain.chunk == 32 * MiB
    assert hashed.chunk == 16 * MiB  # sqrt(512 MiB * 0.06 s * 1.9 GB/s) / 16 = 15.5 MB


@settings(max_examples=200, deadline=None)
@given(
    remaining=st.integers(min_value=1, max_value=1 << 40),
    connections=st.integers(min_value=1, max_value=64),
    hash_rate=st.sampled_from([0.0, 3e8, 2e9]),
)
def test_ranges_come_in_whole_rounds_of_the_connections(
    remaining: int, connections: int, hash_rate: float
) -> None:
    advice = costs(*[(0.06, 64 << 10, 0.001)] * 3).advice(
        remaining=remaining, connections=connections, hash_rate=hash_rate
    )
    if advice is None:
        return  # no larger than the 64 KiB measured
    near = remaining // (advice.chunk * connections)
    rounds = {max(near + step, 1) for step in (-1, 0, 1)}
    assert any(-(-remaining // (r * connections)) == advice.chunk for r in rounds)


def test_coarsen_cuts_adjacent_pending_ranges_into_equal_parts() -> None:
    scheduler = Scheduler([ByteRange(i * MiB, (i + 1) * MiB) for i in range(10)])
    first = scheduler.take()
    assert first is not None
    assert scheduler.coarsen(4 * MiB) == 3  # 9 MiB left: three parts of 3 MiB, not 4, 4, 1
    ranges = [t.byte_range() for t in scheduler if t is not first]
    assert ranges == [ByteRange(MiB, 4 * MiB), ByteRange(4 * MiB, 7 * MiB),
                      ByteRange(7 * MiB, 10 * MiB)]  # fmt: skip
    assert scheduler.coarsen(1 << 40) == 1


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
    holes=st.lists(st.booleans(), min_size=30, max_size=30),
    chunk=st.integers(min_value=1, max_value=200),
)
def test_coarsen_keeps_every_pending_byte_in_parts_equal_to_a_byte(
    sizes: list[int], holes: list[bool], chunk: int
) -> None:
    chunks, start = [], 0
    for size, hole in zip(sizes, holes, strict=False):
        start += hole  # a byte in flight elsewhere splits the pending bytes into runs
        chunks.append(ByteRange(start, start + size))
        start += size
    scheduler = Scheduler(chunks)
    before = sorted(b for r in chunks for b in range(r.start, r.end))
    scheduler.coarsen(chunk)
    parts = [t.byte_range() for t in scheduler]
    assert sorted(b for r in parts for b in range(r.start, r.end)) == before
    assert all(0 < r.length <= chunk for r in parts)
    runs: dict[int, list[int]] = {}
    run = 0
    for left, right in zip(parts, parts[1:], strict=False):
        runs.setdefault(run, []).append(left.length)
        run += right.start != left.end
    runs.setdefault(run, []).append(parts[-1].length)
    assert all(max(lengths) - min(lengths) <= 1 for lengths in runs.values())


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


def test_a_source_whose_requests_cost_gets_larger_ranges_and_the_others_keep_theirs(
    make_server: MakeServer, tmp_path: Path
) -> None:
    slow, quick = make_server(), make_server()
    data = make_payload(SIZE, seed=4)
    slow.add_file("m.bin", data)
    quick.add_file("m.bin", data)
    slow_url = slow.url("m.bin", delay=0.3, close=1)  # ~0.3 s an answer, as an S3 emulator
    quick_url = quick.url("m.bin", rate=4_000_000)  # no cost, 4 MB/s a connection
    done = run_cli("get", slow_url, "--mirror", quick_url, "-o", str(tmp_path / "m.bin"),
                   "--sha256", sha256(data), "--json", "--no-progress",
                   "--connections", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.bin").read_bytes() == data
    note = json.loads(done.stdout)["ranges"]
    assert note.startswith(f"{slow_url}: fewer, larger: per-request cost 0.")
    assert quick_url not in note


def test_a_worker_whose_source_wants_larger_ranges_joins_pending_ones() -> None:
    scheduler = Scheduler([ByteRange(i * MiB, (i + 1) * MiB) for i in range(10)])
    task = scheduler.take(at_least=3 * MiB + 5)
    assert task is not None
    assert task.byte_range() == ByteRange(0, 3 * MiB + 5)
    rest = [t.byte_range() for t in scheduler if t is not task]
    assert rest[0] == ByteRange(3 * MiB + 5, 4 * MiB)
    assert rest[1:] == [ByteRange(i * MiB, (i + 1) * MiB) for i in range(4, 10)]
    assert scheduler.take().byte_range() == ByteRange(3 * MiB + 5, 4 * MiB)  # type: ignore[union-attr]


def test_joined_ranges_never_outgrow_a_fair_share_of_what_is_left() -> None:
    scheduler = Scheduler([ByteRange(i * MiB, (i + 1) * MiB) for i in range(10)])
    busy = scheduler.take()  # 1 MiB in flight elsewhere, 9 pending: 10 MiB for 2 workers
    assert busy is not None
    task = scheduler.take(at_least=8 * MiB)
    assert task is not None
    assert task.byte_range() == ByteRange(MiB, 6 * MiB)


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
