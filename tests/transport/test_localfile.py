"""``file://`` sources (asyncfetch._transport.localfile): as the primary and as a mirror, in
ranges, verified, resumed; a changed file is noticed; never reached by a redirect or a service."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import AddressBlocked, InvalidRequest, ProgressEvent, TransportError
from asyncfetch._options import Options
from asyncfetch._transport.client import Transport
from asyncfetch._transport.netpolicy import NetPolicy
from asyncfetch._urls import check_url
from tests.faultserver import FaultServer, make_payload
from tests.helpers import leftovers, sha256

CHUNK = 256 << 10
SIZE = 3 << 20


@pytest.fixture
def shared(tmp_path: Path) -> tuple[Path, bytes]:
    """A file on a 'shared filesystem' (here: a local directory) and its bytes."""
    data = make_payload(SIZE, seed=7)
    path = tmp_path / "nfs" / "models" / "w.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path, data


def test_file_url_as_the_primary_is_copied_in_ranges(
    shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, data = shared
    events: list[ProgressEvent] = []
    result = asyncfetch.download(
        path.as_uri(), tmp_path / "w.bin", connections=4, chunk_size=CHUNK,
        sha256=sha256(data), progress=events.append,
    )  # fmt: skip
    assert (tmp_path / "w.bin").read_bytes() == data
    assert result.bytes_by_mirror == {path.as_uri(): SIZE}
    assert events[-1].done == SIZE
    assert not [n for n in leftovers(tmp_path) if n.endswith(".part")]


def test_file_url_as_a_mirror_next_to_http(
    server: FaultServer, shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, data = shared
    url = server.add_file("w.bin", data)
    result = asyncfetch.download(
        server.url("w.bin", rate=2_000_000), tmp_path / "w.bin", mirrors=[path.as_uri()],
        connections=4, chunk_size=CHUNK,
    )  # fmt: skip
    assert (tmp_path / "w.bin").read_bytes() == data
    assert result.bytes_by_mirror[path.as_uri()] > 0
    assert url.split("?")[0] in {u.split("?")[0] for u in result.bytes_by_mirror}


class Stop(Exception):
    """Raised by a progress callback to cut a download short."""


def stop_after(limit: int) -> object:
    def callback(event: ProgressEvent) -> None:
        if event.done >= limit:
            raise Stop

    return callback


def test_an_interrupted_file_copy_resumes(shared: tuple[Path, bytes], tmp_path: Path) -> None:
    path, data = shared
    dest = tmp_path / "w.bin"
    with pytest.raises(Stop):
        asyncfetch.download(path.as_uri(), dest, connections=1, chunk_size=CHUNK,
                            progress=stop_after(SIZE // 2))  # fmt: skip
    result = asyncfetch.download(path.as_uri(), dest, connections=2, chunk_size=CHUNK)
    assert dest.read_bytes() == data
    assert result.resumed_bytes >= SIZE // 2 - CHUNK


def test_a_file_rewritten_in_place_is_not_resumed_from_its_old_bytes(
    shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, _ = shared
    dest = tmp_path / "w.bin"
    with pytest.raises(Stop):
        asyncfetch.download(path.as_uri(), dest, connections=1, chunk_size=CHUNK,
                            progress=stop_after(SIZE // 2))  # fmt: skip
    newer = make_payload(SIZE, seed=8)  # same size, same inode, other bytes, later mtime
    with path.open("r+b") as file:
        file.write(newer)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    result = asyncfetch.download(path.as_uri(), dest, connections=2, chunk_size=CHUNK)
    assert dest.read_bytes() == newer
    assert result.resumed_bytes == 0


def test_a_redirect_to_a_file_url_is_refused(
    server: FaultServer, shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, data = shared
    server.add_file("w.bin", data)
    with pytest.raises(TransportError, match="not an http") as caught:
        asyncfetch.download(server.url("w.bin", redirect_to=path.as_uri()), tmp_path / "w.bin")
    assert not caught.value.retryable
    assert not (tmp_path / "w.bin").exists()


def test_a_missing_file_is_named_and_not_retried(tmp_path: Path) -> None:
    url = (tmp_path / "nowhere.bin").as_uri()
    with pytest.raises(TransportError, match="nowhere.bin") as caught:
        asyncfetch.download(url, tmp_path / "w.bin")
    assert "mounted" in str(caught.value)
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("file:///nfs/models/w.pth", True),
        ("file://localhost/nfs/models/w.pth", True),
        ("file:///nfs/models/with%20space.pth", True),
        ("file://fileserver/share/w.pth", False),
        ("file:relative/w.pth", False),
        ("file:///nfs/w.pth?x=1", False),
    ],
)
def test_file_urls_accepted(url: str, ok: bool) -> None:
    if ok:
        assert check_url(url) == url
    else:
        with pytest.raises(InvalidRequest, match="file"):
            check_url(url)


async def test_a_service_reads_no_local_file(shared: tuple[Path, bytes]) -> None:
    path, _ = shared
    async with Transport(Options(), policy=NetPolicy(allow_private=True)) as transport:
        with pytest.raises(AddressBlocked, match="local files"):
            await transport.probe(path.as_uri())
