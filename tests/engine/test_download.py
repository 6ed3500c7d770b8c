"""What a download trusts: the digest the primary announces, answers that agree with the
probe, and bytes sent with a Content-Encoding nobody asked for."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import IntegrityError, ProtocolError, cache
from asyncfetch._cli.main import main as cli_main
from tests.faultserver import FaultServer, make_payload
from tests.faultserver.rawserver import RawRequest, RawServer, serve_file
from tests.helpers import leftovers, no_wait, sha256

MakeServer = Callable[[], FaultServer]
MiB = 1 << 20
KiB = 1 << 10
DATA = make_payload(2 * MiB + 5555, seed=41)
WRONG = sha256(b"another file")


@pytest.fixture(params=[True, False], ids=["fast-path", "aiohttp"])
def fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both receive paths: the raw fast path (plain http) and aiohttp."""
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", "1" if request.param else "0")
    return bool(request.param)


# the digest the primary announces -----------------------------------------------------------


@pytest.mark.usefixtures("fast_path")
@pytest.mark.parametrize("kind", ["repr", "legacy", "amz"])
async def test_a_wrong_announced_digest_fails_like_a_wrong_sha256(
    server: FaultServer, tmp_path: Path, kind: str
) -> None:
    server.add_file("m.bin", DATA)
    url = server.url("m.bin", digest=kind, digest_of=WRONG)

    with pytest.raises(IntegrityError) as caught:
        await asyncfetch.fetch(url, tmp_path / "m.bin")

    assert caught.value.expected == WRONG
    assert url in str(caught.value)
    assert "announced" in str(caught.value)
    assert "check the SHA-256 given" not in str(caught.value)  # none was given
    assert leftovers(tmp_path) == []


@pytest.mark.usefixtures("fast_path")
async def test_the_hubs_linked_etag_before_the_redirect_is_the_expectation(
    make_server: MakeServer, tmp_path: Path
) -> None:
    hub, cdn = make_server(), make_server()
    cdn.add_file("m.bin", DATA)
    for digest, ok in ((WRONG, False), (sha256(DATA), True)):
        url = hub.url("m.bin", redirect_to=cdn.url("m.bin"), digest="linked", digest_of=digest)
        if not ok:
            with pytest.raises(IntegrityError):
                await asyncfetch.fetch(url, tmp_path / "m.bin")
            continue
        result = await asyncfetch.fetch(url, tmp_path / "m.bin", hash=False)
        assert result.sha256 == sha256(DATA)  # checked although hash=False


async def test_a_composite_s3_checksum_is_not_a_files_digest(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("m.bin", DATA)
    url = server.url("m.bin", digest="amz-composite", digest_of=WRONG)
    result = await asyncfetch.fetch(url, tmp_path / "m.bin")
    assert result.sha256 == sha256(DATA)
    assert [e.checked for e in cache.ls(tmp_path)] == [None]


async def test_the_probe_asks_s3_for_its_checksum_unless_signed(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("m.bin", DATA)
    await asyncfetch.fetch(server.url("m.bin"), tmp_path / "m.bin")
    [head] = [r for r in server.requests if r.method == "HEAD"]
    assert head.headers.get("x-amz-checksum-mode") == "ENABLED"
    await asyncfetch.fetch(
        server.url("m.bin"), tmp_path / "n.bin", headers={"Authorization": "AWS4-HMAC-SHA256 x"}
    )
    assert all("x-amz-checksum-mode" not in r.headers for r in server.requests[-3:])


async def test_a_mirrors_digest_never_sets_the_expectation(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary, mirror = make_server(), make_server()
    primary.add_file("m.bin", DATA)
    mirror.add_file("m.bin", DATA)
    poisoned = mirror.url("m.bin", digest="repr", digest_of=WRONG)
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(primary.url("m.bin"), tmp_path / "m.bin", mirrors=[poisoned])
    assert result.sha256 == sha256(DATA)
    assert [e.checked for e in cache.ls(tmp_path)] == [None]

    # against the primary's digest, a mirror announcing another is dropped
    result = await asyncfetch.fetch(
        primary.url("m.bin", digest="repr"), tmp_path / "n.bin", mirrors=[poisoned]
    )
    assert result.bytes_by_mirror[poisoned] == 0
    assert any(poisoned in r.getMessage() and WRONG in r.getMessage() for r in caplog.records)


async def test_cache_ls_and_verify_say_what_a_file_was_checked_against(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add_file("m.bin", DATA)
    await asyncfetch.fetch(server.url("m.bin"), tmp_path / "caller.bin", sha256=sha256(DATA))
    await asyncfetch.fetch(server.url("m.bin", digest="repr"), tmp_path / "server.bin")
    await asyncfetch.fetch(server.url("m.bin"), tmp_path / "none.bin")

    assert {e.name: e.checked for e in cache.ls(tmp_path)} == {
        "caller.bin": "caller",
        "server.bin": "server",
        "none.bin": None,
    }
    assert {r.name: r.checked for r in cache.verify(directory=tmp_path)} == {
        "caller.bin": "caller",
        "server.bin": "server",
        "none.bin": None,
    }
    capsys.readouterr()
    assert cli_main(["cache", "verify", "--dir", str(tmp_path)]) == 0
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()}
    assert "the SHA-256 given" in lines["caller.bin"]
    assert "the server announced" in lines["server.bin"]
    assert "no digest vouched" in lines["none.bin"]
    assert cli_main(["cache", "ls", "--dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "CHECKED" in table
    assert any("server" in line and "server.bin" in line for line in table.splitlines())


# answers must agree with the probe ----------------------------------------------------------


@pytest.mark.usefixtures("fast_path")
async def test_a_primary_that_changed_after_the_probe_is_fetched_again_once(
    server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.add_file("m.bin", DATA)
    caplog.set_level(logging.WARNING, logger="asyncfetch")
    url = server.url("m.bin", changed=-1000, times=1)  # the first GET: other, shorter bytes

    result = await asyncfetch.fetch(url, tmp_path / "m.bin", connections=4, chunk_size=MiB // 4)

    assert (tmp_path / "m.bin").read_bytes() == DATA
    assert result.sha256 == sha256(DATA)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "changed" in warning
    assert "starting over" in warning
    assert len([r for r in server.requests if r.method == "HEAD"]) == 2  # probed again


async def test_a_primary_that_keeps_changing_fails(server: FaultServer, tmp_path: Path) -> None:
    server.add_file("m.bin", DATA)
    url = server.url("m.bin", changed=700)
    with pytest.raises(ProtocolError) as caught:
        await asyncfetch.fetch(url, tmp_path / "m.bin")
    assert "changed" in str(caught.value)
    assert leftovers(tmp_path) == []


@pytest.mark.usefixtures("fast_path")
async def test_a_whole_file_of_another_length_starts_over(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("m.bin", DATA)
    policy, _ = no_wait()
    # the probe (a GET: no ranges) sees other bytes, 1000 fewer; the download the file
    url = server.url("m.bin", no_ranges=True, changed=-1000, times=1)

    result = await asyncfetch.fetch(url, tmp_path / "m.bin", retry=policy)

    assert (tmp_path / "m.bin").read_bytes() == DATA
    assert result.size == len(DATA)


async def test_a_mirror_that_changed_is_dropped(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary, mirror = make_server(), make_server()
    primary.add_file("m.bin", DATA)
    mirror.add_file("m.bin", DATA)
    changed = mirror.url("m.bin", changed=64)
    caplog.set_level(logging.WARNING, logger="asyncfetch")

    result = await asyncfetch.fetch(
        primary.url("m.bin"), tmp_path / "m.bin", mirrors=[changed], sha256=sha256(DATA),
        connections=4, chunk_size=MiB // 4,
    )  # fmt: skip

    assert result.sha256 == sha256(DATA)
    assert result.bytes_by_mirror[changed] == 0
    assert any("dropping mirror" in r.getMessage() and changed in r.getMessage()
               for r in caplog.records)  # fmt: skip


# an unasked Content-Encoding ----------------------------------------------------------------


async def test_unasked_gzip_is_kept_as_sent_without_a_digest(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("m.bin", DATA)

    result = await asyncfetch.fetch(server.url("m.bin", force_gzip=True), tmp_path / "m.bin")

    sent = (tmp_path / "m.bin").read_bytes()
    assert gzip.decompress(sent) == DATA  # the bytes as sent, as curl keeps them
    assert result.size == len(sent)
    assert result.sha256 == sha256(sent)

    again = await asyncfetch.fetch(
        server.url("m.bin", force_gzip=True), tmp_path / "n.bin", sha256=sha256(sent)
    )
    assert (tmp_path / "n.bin").read_bytes() == sent  # as sent, since that matches
    assert again.sha256 == sha256(sent)


async def test_unasked_gzip_is_decoded_when_the_digest_says_so(
    server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.add_file("m.bin", DATA)

    result = await asyncfetch.fetch(
        server.url("m.bin", force_gzip=True), tmp_path / "m.bin", sha256=sha256(DATA)
    )

    assert (tmp_path / "m.bin").read_bytes() == DATA
    assert result.size == len(DATA)
    assert result.sha256 == sha256(DATA)
    assert leftovers(tmp_path) == ["m.bin"]


async def test_unasked_gzip_matching_no_form_fails(server: FaultServer, tmp_path: Path) -> None:
    server.add_file("m.bin", DATA)
    with pytest.raises(IntegrityError):
        await asyncfetch.fetch(
            server.url("m.bin", force_gzip=True), tmp_path / "m.bin", sha256=WRONG
        )
    assert leftovers(tmp_path) == []


@pytest.mark.usefixtures("fast_path")
async def test_a_presigned_url_refusing_the_checksum_header_is_probed_without_it(
    make_server: MakeServer, tmp_path: Path
) -> None:
    site, bucket = make_server(), make_server()
    bucket.add_file("m.bin", DATA)
    presigned = bucket.url("m.bin", refuse_header="x-amz-checksum-mode")

    result = await asyncfetch.fetch(site.url("m.bin", redirect_to=presigned), tmp_path / "m.bin")

    assert result.sha256 == sha256(DATA)
    assert all("x-amz-checksum-mode" not in r.headers for r in bucket.gets("m.bin")[-1:])


async def test_a_cached_file_is_no_hit_when_the_announced_digest_is_another(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add_file("m.bin", DATA)
    url = server.url("m.bin", digest="repr")
    await asyncfetch.fetch(url, tmp_path / "m.bin")
    size, etag, modified = server.file_info("m.bin")
    newer = make_payload(size, seed=42)  # same size, same validators: only the digest tells
    server.replace_file("m.bin", newer, etag=etag, last_modified=modified)

    result = await asyncfetch.fetch(url, tmp_path / "m.bin")

    assert not result.cached
    assert (tmp_path / "m.bin").read_bytes() == newer
    assert (await asyncfetch.fetch(url, tmp_path / "m.bin")).cached  # and now it is one


# answers shorter than asked ------------------------------------------------------------------

SHORT_DATA = make_payload(300 * KiB + 7)


@pytest.mark.parametrize("fast", ["1", "0"])
async def test_a_shorter_206_is_progress_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: str
) -> None:
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", fast)
    policy, sleeps = no_wait(attempts=1)  # a single failure would end the download
    with RawServer(serve_file(SHORT_DATA, most=20 * KiB)) as server:
        result = await asyncfetch.fetch(
            server.url(), tmp_path / "f", chunk_size=128 * KiB, connections=2, retry=policy
        )
    assert (tmp_path / "f").read_bytes() == SHORT_DATA
    assert result.retries == 0
    assert sleeps.waits == []
    assert served(server, most=20 * KiB) == [(0, len(SHORT_DATA))]  # no byte asked for twice


def served(server: RawServer, most: int) -> list[tuple[int, int]]:
    """The byte runs the server's ranged answers covered, merged; asserts none overlap."""
    runs: list[tuple[int, int]] = []
    for request in sorted(server.gets(), key=lambda r: r.range or (0, 0)):
        assert request.range is not None
        start, end = request.range
        stop = min(len(SHORT_DATA), start + most, len(SHORT_DATA) if end is None else end + 1)
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], stop)
        else:
            assert not runs or runs[-1][1] < start, "a byte was asked for twice"
            runs.append((start, stop))
    return runs


def grown_file(pause: float) -> Callable[[RawRequest], Iterator[bytes | float]]:
    """A HEAD that gives 1000 bytes, then a GET answer, chunked, of 64 KiB: the file grew;
    with ``pause``, its first 1000 bytes come first, the rest ``pause`` s later."""

    def answer(request: RawRequest) -> Iterator[bytes | float]:
        if request.method == "HEAD":
            yield b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nAccept-Ranges: bytes\r\n\r\n"
            return
        yield b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        if pause:
            yield from (b"3e8\r\n" + b"x" * 1000 + b"\r\n", pause)
        rest = 0x10000 - (1000 if pause else 0)
        yield b"%x\r\n" % rest + b"x" * rest + b"\r\n0\r\n\r\n"

    return answer


@pytest.mark.usefixtures("fast_path")
@pytest.mark.parametrize("pause", [0, 0.3], ids=["at-once", "after-the-size"])
async def test_a_body_longer_than_the_probed_size_is_no_file(tmp_path: Path, pause: float) -> None:
    # it was cut at the probe's size and kept as the whole file: the first 1000 of 65536 bytes
    with RawServer(grown_file(pause)) as server, pytest.raises(ProtocolError, match="more than"):
        await asyncfetch.fetch(server.url(), tmp_path / "f", retry=no_wait(attempts=1)[0])
    assert leftovers(tmp_path) == []
