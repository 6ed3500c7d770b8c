"""One file from several loopback servers: sharing, health, consistency and blame; over every
receive path (see tests.helpers.RECEIVE_PATHS)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import IntegrityError, RetriesExhausted
from asyncfetch._engine.request import make_request
from asyncfetch._engine.samples import WINDOW
from asyncfetch._options import make_options
from tests.faultserver import FaultServer, make_payload
from tests.helpers import (
    leftovers,
    no_wait,
    over_every_receive_path,  # noqa: F401 (the scheme fixture)
    sha256,
)

MakeServer = Callable[[], FaultServer]
KiB = 1024
CHUNK = 128 * KiB
MiB = 1 << 20
DATA = make_payload(3 * (1 << 20) + 777, seed=11)


def mirrors_of(make_server: MakeServer, count: int, data: bytes = DATA) -> list[FaultServer]:
    """``count`` servers all serving ``data`` as m.bin."""
    servers = [make_server() for _ in range(count)]
    for server in servers:
        server.add_file("m.bin", data)
    return servers


def served(server: FaultServer) -> int:
    return server.bytes_served("m.bin")


async def test_faster_mirror_serves_more(make_server: MakeServer, tmp_path: Path) -> None:
    fast, slow = mirrors_of(make_server, 2)
    fast_url, slow_url = fast.url("m.bin", rate=6 << 20), slow.url("m.bin", rate=1 << 20)

    result = await asyncfetch.fetch(
        slow_url, tmp_path / "m.bin", mirrors=[fast_url], connections=4, chunk_size=CHUNK
    )

    assert result.sha256 == sha256(DATA)
    assert result.bytes_by_mirror[fast_url] > 2 * result.bytes_by_mirror[slow_url] > 0
    assert sum(result.bytes_by_mirror.values()) == len(DATA)
    assert served(fast) >= result.bytes_by_mirror[fast_url]  # the servers agree
    assert served(slow) >= result.bytes_by_mirror[slow_url]


async def test_connections_move_to_the_faster_mirror(
    make_server: MakeServer, tmp_path: Path
) -> None:
    data = make_payload(8 << 20, seed=12)
    fast, slow = mirrors_of(make_server, 2, data)
    fast_url, slow_url = fast.url("m.bin", rate=2 << 20), slow.url("m.bin", rate=256 << 10)

    result = await asyncfetch.fetch(
        fast_url, tmp_path / "m.bin", mirrors=[slow_url], connections=4, chunk_size=CHUNK
    )

    assert result.sha256 == sha256(data)
    # two connections each would give the slow mirror 1/9 (11%) of the bytes; 3 + 1 ~5%
    assert result.bytes_by_mirror[slow_url] < 0.08 * len(data)
    assert result.bytes_by_mirror[slow_url] > 0


async def test_slow_mirror_does_not_hold_the_tail(make_server: MakeServer, tmp_path: Path) -> None:
    fast, crawl = mirrors_of(make_server, 2)
    crawl_url = crawl.url("m.bin", rate=40_000)  # a whole chunk would take minutes
    result = await asyncfetch.fetch(
        fast.url("m.bin"), tmp_path / "m.bin", mirrors=[crawl_url], connections=2,
        chunk_size=1 << 20,
    )  # fmt: skip
    assert result.sha256 == sha256(DATA)
    assert result.elapsed < 10
    assert result.bytes_by_mirror[crawl_url] < 200_000


async def test_dead_mirror_is_skipped(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live, dead = mirrors_of(make_server, 2)
    dead_url = dead.url("m.bin")
    dead.stop()
    policy, _ = no_wait()
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        live.url("m.bin"), tmp_path / "m.bin", mirrors=[dead_url], retry=policy
    )

    assert result.sha256 == sha256(DATA)
    assert result.bytes_by_mirror[dead_url] == 0
    [warning] = [r.getMessage() for r in caplog.records if "dropping source" in r.getMessage()]
    assert warning.count(dead_url) == 1  # named once, not again in front of its error


async def test_resetting_mirror_loses_nothing(make_server: MakeServer, tmp_path: Path) -> None:
    good, flaky = mirrors_of(make_server, 2)
    flaky_url = flaky.url("m.bin", reset_after=50_000)
    policy, _ = no_wait()

    result = await asyncfetch.fetch(
        flaky_url, tmp_path / "m.bin", mirrors=[good.url("m.bin")], retry=policy,
        connections=4, chunk_size=CHUNK,
    )  # fmt: skip

    assert (tmp_path / "m.bin").read_bytes() == DATA
    assert result.retries >= 1
    assert served(good) >= len(DATA) - result.bytes_by_mirror[flaky_url]


async def test_mirror_with_other_bytes_is_found_and_dropped(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good_a, good_b, bad = mirrors_of(make_server, 3)
    bad_url = bad.url("m.bin", flip_byte=list(range(1000, len(DATA), 64 * KiB)))
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        good_a.url("m.bin"), tmp_path / "m.bin", mirrors=[bad_url, good_b.url("m.bin")],
        sha256=sha256(DATA), connections=3, chunk_size=CHUNK,
    )  # fmt: skip

    assert (tmp_path / "m.bin").read_bytes() == DATA
    assert result.sha256 == sha256(DATA)
    assert any(bad_url in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)
    assert result.size == len(DATA)
    assert result.bytes_by_mirror[bad_url] < len(DATA)
    # at worst each source's share is fetched once more, from the others
    assert sum(result.bytes_by_mirror.values()) <= 3 * len(DATA)


@pytest.mark.parametrize("same", [True, False], ids=["same-bytes", "other-bytes"])
async def test_sources_of_other_versions_are_told_apart_without_a_digest(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, same: bool
) -> None:
    (main,) = mirrors_of(make_server, 1)
    other = make_server()
    # another server program: its own ETag and Last-Modified formats
    other.add_file(
        "m.bin", DATA if same else make_payload(len(DATA), seed=12),  # same size
        etag='W/"5e1f-17a"', last_modified="Mon, 01 Jan 2024 00:00:01 GMT",
    )  # fmt: skip
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        main.url("m.bin"), tmp_path / "m.bin", mirrors=[other.url("m.bin")], chunk_size=CHUNK
    )

    assert (tmp_path / "m.bin").read_bytes() == DATA
    warnings = [r.getMessage() for r in caplog.records]
    if same:  # the samples agree: the validators' formats are no reason to warn
        assert warnings == []
        assert result.bytes_by_mirror[other.url("m.bin")] > 0
    else:
        [warning] = warnings
        assert warning.count(other.url("m.bin")) == 1
        assert "differ from the primary" in warning
        assert result.bytes_by_mirror[other.url("m.bin")] == 0


async def test_sources_of_other_versions_are_not_called_out_with_a_digest(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    main, other = mirrors_of(make_server, 2)
    other.add_file("m.bin", DATA, etag='"another"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        main.url("m.bin"), tmp_path / "m.bin", mirrors=[other.url("m.bin")],
        sha256=sha256(DATA), chunk_size=CHUNK,
    )  # fmt: skip

    assert result.sha256 == sha256(DATA)
    assert "may serve different" not in caplog.text


async def test_two_sources_disagreeing_with_no_one_to_tell_fails_safely(
    make_server: MakeServer, tmp_path: Path
) -> None:
    a, b = mirrors_of(make_server, 2)
    with pytest.raises(IntegrityError) as caught:
        await asyncfetch.fetch(
            a.url("m.bin", flip_byte=10), tmp_path / "m.bin",
            mirrors=[b.url("m.bin", flip_byte=3_000_000)], sha256=sha256(DATA),
            connections=2, chunk_size=CHUNK,
        )  # fmt: skip
    assert a.url("m.bin", flip_byte=10) in str(caught.value)
    assert leftovers(tmp_path) == []


async def test_mirror_of_another_size_is_dropped_with_a_warning(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good, other = mirrors_of(make_server, 2)
    other.add_file("m.bin", DATA + b"extra")
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        good.url("m.bin"), tmp_path / "m.bin", mirrors=[other.url("m.bin")]
    )

    assert result.sha256 == sha256(DATA)
    assert other.gets("m.bin") == []  # probed with HEAD only, never downloaded from
    assert any(other.url("m.bin") in r.getMessage() for r in caplog.records)


async def test_the_primary_is_never_outvoted_by_its_mirrors(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary, m1, m2 = mirrors_of(make_server, 3)
    primary.add_file("m.bin", DATA[:-1])
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        primary.url("m.bin"), tmp_path / "m.bin", mirrors=[m1.url("m.bin"), m2.url("m.bin")]
    )

    assert (tmp_path / "m.bin").read_bytes() == DATA[:-1]
    assert result.size == len(DATA) - 1
    for mirror in (m1, m2):
        [warning] = [
            r.getMessage() for r in caplog.records if mirror.url("m.bin") in r.getMessage()
        ]
        assert "primary URL" in warning
        assert mirror.gets("m.bin") == []


async def test_retry_after_slows_only_that_mirror(make_server: MakeServer, tmp_path: Path) -> None:
    busy, calm = mirrors_of(make_server, 2)
    busy_url = busy.url("m.bin", status=429, retry_after="30", times=3)
    policy, sleeps = no_wait()

    result = await asyncfetch.fetch(
        busy_url, tmp_path / "m.bin", mirrors=[calm.url("m.bin")], retry=policy,
        connections=4, chunk_size=CHUNK, sha256=sha256(DATA),  # the mirror may go on alone
    )  # fmt: skip

    assert result.sha256 == sha256(DATA)
    assert 30.0 not in sleeps.waits  # nobody waited: the other mirror took over
    assert result.bytes_by_mirror[calm.url("m.bin")] == len(DATA)


async def test_every_source_failing_lists_each(make_server: MakeServer, tmp_path: Path) -> None:
    a, b = mirrors_of(make_server, 2)
    a_url, b_url = a.url("m.bin", status=503), b.url("m.bin", status=500)
    policy, _ = no_wait(attempts=2)

    with pytest.raises(RetriesExhausted) as caught:
        await asyncfetch.fetch(a_url, tmp_path / "m.bin", mirrors=[b_url], retry=policy)

    assert set(caught.value.failures) == {a_url, b_url}
    assert "503" in str(caught.value)
    assert "500" in str(caught.value)
    listing = str(caught.value).split(" answered: ", 1)[1]
    assert (listing.count(a_url), listing.count(b_url)) == (1, 1)  # each named once
    assert leftovers(tmp_path) == []


async def test_mirror_without_ranges_is_a_whole_file_fallback(
    make_server: MakeServer, tmp_path: Path
) -> None:
    broken, plain = mirrors_of(make_server, 2)
    policy, _ = no_wait(attempts=2)

    result = await asyncfetch.fetch(
        broken.url("m.bin", reset_after=0), tmp_path / "m.bin",
        mirrors=[plain.url("m.bin", no_ranges=True)], retry=policy,
        sha256=sha256(DATA),  # without, a mirror that cannot be sampled is not used
    )  # fmt: skip

    assert result.sha256 == sha256(DATA)
    assert [r.range for r in plain.gets("m.bin")] == [(0, 0), None]  # probe, then one stream


def test_duplicate_and_malformed_mirrors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asyncfetch")
    url = "http://127.0.0.1:1/m.bin"
    other = "https://mirror.invalid/m.bin"
    request = make_request(
        url, "/tmp/x", make_options(), mirrors=[url, other, other, "ftp://x/m.bin", "nope"]
    )
    assert request.urls == (url, other)
    assert sum("skipping mirror" in r.getMessage() for r in caplog.records) == 2


async def test_a_ten_times_slower_mirror_does_not_keep_its_first_chunks(
    make_server: MakeServer, tmp_path: Path
) -> None:
    data = make_payload(24 << 20, seed=5)
    fast, slow = mirrors_of(make_server, 2, data)
    fast_url, slow_url = fast.url("m.bin", rate=4 << 20), slow.url("m.bin", rate=400 << 10)
    await asyncfetch.fetch(
        fast_url, tmp_path / "m.bin", mirrors=[slow_url], connections=4, hash=False
    )
    assert (tmp_path / "m.bin").read_bytes() == data
    downloads = [r for r in slow.gets("m.bin") if r.range and r.range[1] + 1 - r.range[0] != WINDOW]
    requests = sorted(downloads, key=lambda r: r.timestamp)  # the sampled windows aside
    firsts, later = requests[:2], requests[2:]
    # its two connections' first chunks (1 MiB each: 2.5 s at its speed, unknown when they
    # were handed out) are taken over once it proves slow, while chunks are still pending:
    # one connection moves to the fast mirror instead of holding the slow one for seconds
    assert [r.range[1] + 1 - r.range[0] for r in firsts if r.range] == [MiB, MiB]
    assert all(r.bytes_sent < MiB for r in firsts)
    # the other stays, handed pieces cut to what it moves while the fast one does the rest
    assert later
    assert all(r.range and r.range[1] + 1 - r.range[0] <= 3 * MiB // 2 for r in later)
