"""rank_mirrors() and `asyncfetch mirrors`: measured, ranked, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import asyncfetch
from tests.faultserver import FaultServer, make_payload
from tests.helpers import cli_env

MakeServer = Callable[[], FaultServer]
DATA = make_payload(2 << 20, seed=21)


def serving(make_server: MakeServer, data: bytes = DATA) -> FaultServer:
    server = make_server()
    server.add_file("m.bin", data)
    return server


async def test_fastest_first_and_all_facts_reported(make_server: MakeServer) -> None:
    slow, fast = serving(make_server), serving(make_server)
    slow_url, fast_url = slow.url("m.bin", rate=1 << 20), fast.url("m.bin", rate=4 << 20)

    reports = await asyncfetch.rank_mirrors([slow_url, fast_url], sample=512 << 10)

    assert [r.url for r in reports] == [fast_url, slow_url]
    for report in reports:
        assert report.ok
        assert report.size == len(DATA)
        assert report.accepts_ranges
        assert report.etag
        assert report.sample_bytes >= 512 << 10  # the sample, and on until the rate settles
        assert report.ttfb is not None
        assert report.ttfb > 0
    assert reports[0].speed is not None
    assert reports[1].speed is not None
    assert reports[0].speed > 2 * reports[1].speed


async def test_disagreeing_and_dead_mirrors_rank_last(make_server: MakeServer) -> None:
    a, b = serving(make_server), serving(make_server)
    other_bytes = serving(make_server, make_payload(len(DATA), seed=99))
    dead = serving(make_server)
    dead_url = dead.url("m.bin")
    dead.stop()
    urls = [dead_url, other_bytes.url("m.bin"), a.url("m.bin"), b.url("m.bin")]

    reports = await asyncfetch.rank_mirrors(urls, sample=256 << 10, timeout=2)

    by_url = {r.url: r for r in reports}
    assert by_url[other_bytes.url("m.bin")].agrees is False
    assert by_url[dead_url].error is not None
    assert {r.url for r in reports[:2]} == {a.url("m.bin"), b.url("m.bin")}
    assert all(r.ok for r in reports[:2])


@pytest.mark.parametrize(
    ("other", "reason"),
    [(make_payload(18_000, seed=21), "serves 18000 bytes"),
     (make_payload(len(DATA), seed=99), "serves other bytes")],
    ids=["size", "bytes"],
)  # fmt: skip
async def test_two_mirrors_that_differ_are_flagged(
    make_server: MakeServer, other: bytes, reason: str
) -> None:
    first, second = serving(make_server), serving(make_server, other)
    first_url, second_url = first.url("m.bin"), second.url("m.bin")

    reports = await asyncfetch.rank_mirrors([first_url, second_url], sample=256 << 10)

    by_url = {r.url: r for r in reports}
    assert by_url[first_url].agrees is True  # no majority of two: the first URL is the yardstick
    assert by_url[first_url].ok
    assert by_url[second_url].agrees is False
    assert not by_url[second_url].ok
    assert by_url[second_url].disagreement is not None
    assert reason in by_url[second_url].disagreement
    assert first_url in by_url[second_url].disagreement
    assert [r.url for r in reports] == [first_url, second_url]


def test_cli_exits_1_naming_the_mirror_that_differs(make_server: MakeServer) -> None:
    a, small = serving(make_server), serving(make_server, DATA[:18_000])
    a_url, small_url = a.url("m.bin"), small.url("m.bin")
    argv = [sys.executable, "-m", "asyncfetch", "mirrors", a_url, small_url, "--sample", "256K"]

    table = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=cli_env(),
                           check=False)  # fmt: skip
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60,
                          env=cli_env(), check=False)  # fmt: skip

    for run in (table, done):
        assert run.returncode == 1, run.stderr
        assert len(run.stderr.splitlines()) == 1
        assert "disagree" in run.stderr
        assert small_url in run.stderr
        assert "18000" in run.stderr
    assert "differs" in table.stdout.splitlines()[2]
    rows = {row["url"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows[small_url]["agrees"] is False
    assert not rows[small_url]["ok"]
    assert "18000" in rows[small_url]["disagreement"]
    assert rows[a_url]["agrees"] is True
    assert rows[a_url]["disagreement"] is None


async def test_server_without_ranges_is_sampled_the_same_way(make_server: MakeServer) -> None:
    ranged, plain = serving(make_server), serving(make_server)
    reports = await asyncfetch.rank_mirrors(
        [ranged.url("m.bin"), plain.url("m.bin", no_ranges=True)], sample=300_000
    )
    assert all(r.agrees for r in reports)
    assert {r.accepts_ranges for r in reports} == {True, False}


def _cli_ttfbs(urls: list[str]) -> list[float]:
    """Each URL's time to first byte from a fresh ``asyncfetch mirrors --json`` process."""
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "mirrors", *urls, "--json", "--sample", "1M"],
        capture_output=True, text=True, timeout=60, env=cli_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ttfb = {row["url"]: row["ttfb"] for row in map(json.loads, done.stdout.splitlines())}
    return [ttfb[url] for url in urls]


def test_first_url_is_not_charged_the_warm_up(make_server: MakeServer) -> None:
    server = make_server()
    server.add_file("a.bin", DATA)
    server.add_file("b.bin", DATA)
    a, b = server.url("a.bin"), server.url("b.bin")

    # Identical files, one server: whichever goes first should not be systematically slower
    # (it was ~30x: importing aiohttp and connecting were charged to it).
    ratios = []
    for urls in ([a, b], [b, a]):
        first, second = _cli_ttfbs(urls)
        ratios.append(first / second)
    assert min(ratios) < 10, ratios


def test_cli_prints_json_and_writes_nothing(make_server: MakeServer, tmp_path: Path) -> None:
    a, b = serving(make_server), serving(make_server)
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "mirrors", a.url("m.bin"), b.url("m.bin"),
         "--json", "--sample", "256K"],
        capture_output=True, text=True, timeout=60, env=cli_env(), cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert {row["url"] for row in rows} == {a.url("m.bin"), b.url("m.bin")}
    assert all(row["ok"] and row["sample_bytes"] >= 256 << 10 for row in rows)
    assert list(tmp_path.iterdir()) == []


def test_cli_table_names_the_error(make_server: MakeServer) -> None:
    a = serving(make_server)
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "mirrors", a.url("m.bin"), a.url("missing")],
        capture_output=True, text=True, timeout=60, env=cli_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 1  # a dead mirror fails the command, so CI notices
    lines = done.stdout.splitlines()
    assert "ok" in lines[1]  # the ranking is still printed
    assert "404" in done.stdout
    assert done.stderr.startswith(f"asyncfetch: error: 1 of 2 mirrors failed: {a.url('missing')}")
    assert done.stderr.count(a.url("missing")) == 1  # named once, not "URL: URL: ..."
    assert "404" in done.stderr
    assert done.stderr.count("\n") == 1


async def test_no_urls_is_a_clear_error() -> None:
    with pytest.raises(asyncfetch.InvalidRequest, match="at least one URL"):
        await asyncfetch.rank_mirrors([])


BIG = make_payload(24 << 20, seed=5)


async def test_an_initial_burst_is_not_taken_for_the_sustained_rate(
    make_server: MakeServer,
) -> None:
    # as nginx with limit_rate 1 MiB/s and limit_rate_after 2M, next to a steady 3 MiB/s
    bursty, steady = serving(make_server, BIG), serving(make_server, BIG)
    bursty_url = bursty.url("m.bin", rate=1 << 20, burst=2 << 20)
    steady_url = steady.url("m.bin", rate=3 << 20)

    reports = await asyncfetch.rank_mirrors(
        [bursty_url, steady_url], sample=1 << 20, connections=2, max_seconds=6
    )

    assert [r.url for r in reports] == [steady_url, bursty_url]
    first, second = reports
    assert second.burst is not None
    assert second.sustained is not None
    assert second.burst > 3 * second.sustained  # the burst, reported apart
    assert second.sustained == pytest.approx(2 << 20, rel=0.35)  # 2 connections x 1 MiB/s
    assert first.sustained == pytest.approx(6 << 20, rel=0.35)
    assert first.settled
    assert second.settled
    assert first.streams == second.streams == 2


async def test_a_server_without_ranges_is_ranked_by_one_stream(make_server: MakeServer) -> None:
    ranged, plain = serving(make_server, BIG), serving(make_server, BIG)
    ranged_url = ranged.url("m.bin", rate=1 << 20)  # 4 connections: 4 MiB/s
    plain_url = plain.url("m.bin", rate=2 << 20, burst=4 << 20, no_ranges=True)

    reports = await asyncfetch.rank_mirrors(
        [plain_url, ranged_url], sample=2 << 20, connections=4, max_seconds=6
    )

    assert [r.url for r in reports] == [ranged_url, plain_url]
    assert reports[1].streams == 1
    assert reports[1].sustained == pytest.approx(2 << 20, rel=0.35)
