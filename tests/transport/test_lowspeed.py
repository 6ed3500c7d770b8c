"""The low-speed limit and the head deadline (_lowspeed), on both receive paths: a trickle is
a stall, retried from the byte it reached; a slow but steady link is left alone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import InvalidRequest, RetriesExhausted, Timeouts
from asyncfetch._transport.lowspeed import LowSpeed
from tests.faultserver import FaultServer, make_payload
from tests.faultserver.rawserver import RawServer, serve_file
from tests.helpers import no_wait

KiB = 1024
FLOOR = Timeouts(read=5, low_speed=10_000, low_speed_time=1)  # 10 KB in every second


def test_the_rule() -> None:
    watch = LowSpeed(limit=100, window=2, now=0.0)
    assert watch.check(1.9, 150)  # within the first window
    assert watch.check(2.5, 250)  # the quota (200) came: the window starts again
    assert watch.check(4.4, 300)
    assert not watch.check(4.6, 300)  # 50 bytes in 2.1 s
    watch.skip(5.0)  # busy elsewhere: not counted
    assert watch.check(9.0, 300)
    assert LowSpeed.of(Timeouts(low_speed=0), 0.0) is None


@pytest.mark.parametrize(
    "bad", [{"low_speed": -1}, {"low_speed": float("inf")}, {"low_speed_time": 0}, {"head": 0}]
)
def test_bad_limits_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(InvalidRequest):
        Timeouts(**bad)


def test_the_head_deadline_defaults_to_twice_the_read_timeout() -> None:
    assert Timeouts(read=7).head_deadline == 14
    assert Timeouts(read=7, head=3).head_deadline == 3


@pytest.mark.parametrize("fast_path", ["1", "0"])
async def test_a_trickle_is_cut_and_retried_from_the_byte_it_reached(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_path: str
) -> None:
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", fast_path)
    data = make_payload(256 * KiB, seed=3)
    server.add_file("m.bin", data)
    url = server.url("m.bin", rate=2000, times=1)  # the first answer trickles (for 2 minutes)
    policy, _ = no_wait(attempts=2)
    started = time.monotonic()
    result = await asyncfetch.fetch(
        url, tmp_path / "m.bin", connections=1, chunk_size=256 * KiB, timeout=FLOOR, retry=policy
    )
    assert time.monotonic() - started < 10
    assert (tmp_path / "m.bin").read_bytes() == data
    first, second = [r for r in server.gets("m.bin") if r.range != (0, 0)]
    assert 0 < first.bytes_sent < 10 * KiB
    assert second.range is not None
    assert 0 < second.range[0] <= first.bytes_sent  # from the byte reached, not from 0
    assert result.retries == 1


@pytest.mark.parametrize("fast_path", ["1", "0"])
async def test_a_slow_but_steady_link_is_not_cut(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_path: str
) -> None:
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", fast_path)
    data = make_payload(150 * KiB, seed=4)
    server.add_file("m.bin", data)
    policy, _ = no_wait(attempts=1)
    await asyncfetch.fetch(  # 60 KB/s for 2.5 s: six times the floor
        server.url("m.bin", rate=60_000), tmp_path / "m.bin", connections=1, timeout=FLOOR,
        retry=policy,
    )  # fmt: skip
    assert (tmp_path / "m.bin").read_bytes() == data


@pytest.mark.parametrize("fast_path", ["1", "0"])
async def test_a_trickled_head_misses_the_head_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_path: str
) -> None:
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", fast_path)
    policy, _ = no_wait(attempts=1)
    timeouts = Timeouts(read=5, head=0.5)  # never silent for 5 s, yet never done
    with (
        RawServer(serve_file(make_payload(4096), head_pause=0.05)) as server,
        pytest.raises(RetriesExhausted, match="no complete answer head within 0.5 s"),
    ):
        await asyncfetch.fetch(server.url(), tmp_path / "f", timeout=timeouts, retry=policy)
