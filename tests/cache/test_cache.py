"""The cache: torch.hub's locations, hits without re-hashing, offline mode, ls/verify/prune."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import DestinationError, InvalidRequest, OfflineError, cache
from asyncfetch._cache import lookup as _cache
from asyncfetch._cache import marker as _marker
from asyncfetch._cache.lookup import cached_path
from asyncfetch._cache.marker import read_marker, write_marker
from asyncfetch._engine.fetch import run
from asyncfetch._engine.request import make_request
from asyncfetch._expectation import HashPrefix
from asyncfetch._options import make_options
from asyncfetch._storage.journal import Journal, save
from tests.engine.test_resume import RATE, SIZE, kill_halfway, wait_until
from tests.faultserver import FaultServer, make_payload
from tests.helpers import (
    cli_env,
    leftovers,
    read_only,
    run_cli,
    sha256,
    store_marker,
    stored_marker,
    tmpfs,
)
from tests.storage.test_lock import held_elsewhere

DATA = make_payload(200_000, seed=41)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TORCH_HOME set to a fresh directory; returns the checkpoint directory inside it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("ASYNCFETCH_OFFLINE", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def keep_mtime(path: Path, data: bytes) -> None:
    """Overwrite ``path`` in place, keeping its size and mtime (bit rot, as a marker sees it)."""
    before = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def flipped(data: bytes, at: int = 1000) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def used_at(path: Path, when: float) -> None:
    """Pretend ``path`` was last used at ``when``."""
    marker = read_marker(path)
    assert marker is not None
    assert write_marker(path, dataclasses.replace(marker, last_used=when))


# where ---------------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize(
    "env",
    [
        {"TORCH_HOME": "{tmp}/th"},
        {"XDG_CACHE_HOME": "{tmp}/xdg"},
        {"HOME": "{tmp}/home"},
        {"TORCH_HOME": "{tmp}/th", "XDG_CACHE_HOME": "{tmp}/xdg"},
    ],
)
def test_cache_dir_is_torch_hubs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    import torch.hub

    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("{tmp}", str(tmp_path)))
    url = "https://example.org/a/b/resnet18-f37072fd.pth?download=1&x=y"

    expected = Path(torch.hub.get_dir()) / "checkpoints"
    assert cache.path() == expected
    assert cached_path(url) == expected / "resnet18-f37072fd.pth"  # query string ignored
    assert cached_path(url, model_dir=tmp_path / "m", file_name="x.pt") == tmp_path / "m" / "x.pt"


@pytest.mark.torch
def test_the_cache_functions_honour_torch_hub_set_dir(
    server: FaultServer, torch_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.hub

    url = server.add_file("n.pth", DATA)
    # restore torch.hub's own state afterwards; set_dir(get_dir()) would pin the directory
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)
    torch.hub.set_dir(str(tmp_path / "elsewhere"))
    moved = tmp_path / "elsewhere" / "checkpoints"
    moved.mkdir(parents=True)
    asyncfetch.download(url, moved / "n.pth", sha256=sha256(DATA))  # where the facade puts it

    assert cache.path() == moved
    assert cached_path(url) == moved / "n.pth"
    assert [(e.name, e.state) for e in cache.ls()] == [("n.pth", "verified")]
    assert [(r.name, r.status) for r in cache.verify()] == [("n.pth", "ok")]
    assert [e.name for e in cache.prune(keep_latest=0).removed] == ["n.pth"]
    assert not (moved / "n.pth").exists()
    assert not torch_home.exists()  # TORCH_HOME's directory was never the one acted on


def test_get_without_output_uses_the_cache(
    server: FaultServer, torch_home: Path, tmp_path: Path
) -> None:
    url = server.add_file("weights.pt", DATA)
    done = run_cli("get", url, "--json", TORCH_HOME=str(tmp_path / "torch"))
    assert done.returncode == 0, done.stderr
    assert (torch_home / "weights.pt").read_bytes() == DATA
    assert json.loads(done.stdout)["path"] == str(torch_home / "weights.pt")

    again = run_cli("get", url, "--json", TORCH_HOME=str(tmp_path / "torch"))
    assert json.loads(again.stdout)["cached"] is True

    path = run_cli("cache", "path", TORCH_HOME=str(tmp_path / "torch"))
    assert path.stdout.strip() == str(torch_home)


# torch.hub interop ---------------------------------------------------------------------------


@pytest.mark.torch
async def test_a_file_torch_hub_downloaded_is_a_hit(server: FaultServer, torch_home: Path) -> None:
    import torch.hub

    url = server.add_file("model.pth", DATA)
    torch_home.mkdir(parents=True)  # noqa: ASYNC240
    torch.hub.download_url_to_file(url, str(cached_path(url)), progress=False)
    server.reset_log()

    with_digest = await asyncfetch.fetch(url, cached_path(url), sha256=sha256(DATA))
    assert with_digest.cached
    assert server.requests == []  # hashed once, from disk; no network
    without = await asyncfetch.fetch(url, cached_path(url))
    assert without.cached
    assert server.gets("model.pth") == []  # a probe only


@pytest.mark.torch
def test_asyncfetch_download_is_a_hit_for_torch_hub(
    server: FaultServer, torch_home: Path, tmp_path: Path
) -> None:
    import io

    import torch
    import torch.hub

    buffer = io.BytesIO()
    torch.save({"weight": torch.arange(12.0).reshape(3, 4)}, buffer)
    url = server.add_file("tiny.pth", buffer.getvalue())
    assert run_cli("get", url, TORCH_HOME=str(tmp_path / "torch")).returncode == 0
    server.reset_log()

    state = torch.hub.load_state_dict_from_url(url, progress=False, weights_only=True)

    assert torch.equal(state["weight"], torch.arange(12.0).reshape(3, 4))
    assert server.requests == []


# hits ----------------------------------------------------------------------------------------


async def test_a_digest_hit_needs_no_network(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url, dest, sha256=sha256(DATA))
    server.reset_log()

    result = await asyncfetch.fetch(url, dest, sha256=sha256(DATA))

    assert result.cached
    assert result.sha256 == sha256(DATA)
    assert result.size == len(DATA)
    assert result.resumed_bytes == 0  # nothing was resumed
    assert result.speed == 0  # nor received
    assert result.bytes_by_mirror == {}
    assert server.requests == []


async def test_the_marker_is_trusted_and_verify_rehashes(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url, dest, sha256=sha256(DATA))
    keep_mtime(dest, flipped(DATA))  # size and mtime unchanged: the marker still vouches

    trusted = await asyncfetch.fetch(url, dest, sha256=sha256(DATA))
    assert trusted.cached  # proof that it did not re-hash
    assert dest.read_bytes() == flipped(DATA)

    checked = await asyncfetch.fetch(url, dest, sha256=sha256(DATA), verify=True)
    assert not checked.cached
    assert dest.read_bytes() == DATA


async def test_a_changed_file_is_rehashed(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url, dest, sha256=sha256(DATA))
    dest.write_bytes(flipped(DATA))  # a new mtime: the marker no longer describes it

    result = await asyncfetch.fetch(url, dest, sha256=sha256(DATA))

    assert not result.cached
    assert dest.read_bytes() == DATA


async def test_a_wrong_file_is_hashed_once_not_twice(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    dest.write_bytes(flipped(DATA))
    from asyncfetch._cache import lookup as _cache

    hashed: list[Path] = []
    real = _cache.hash_file
    monkeypatch.setattr(_cache, "hash_file", lambda p: hashed.append(p) or real(p))

    result = await asyncfetch.fetch(url, dest, sha256=sha256(DATA))

    assert not result.cached
    assert hashed == [dest]  # before and after taking the lock: the marker answered the second
    assert dest.read_bytes() == DATA


async def test_without_a_digest_a_probe_decides(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    first = await asyncfetch.fetch(url, dest)
    server.reset_log()

    again = await asyncfetch.fetch(url, dest)
    assert again.cached
    assert again.sha256 == first.sha256 == sha256(DATA)
    assert [r.method for r in server.requests] == ["HEAD"]

    new = make_payload(len(DATA), seed=42)  # same size, new ETag
    server.replace_file("m.bin", new)
    changed = await asyncfetch.fetch(url, dest)
    assert not changed.cached
    assert dest.read_bytes() == new


async def test_a_file_from_another_url_is_not_a_hit(server: FaultServer, tmp_path: Path) -> None:
    url_a = server.add_file("a.bin", DATA)
    url_b = server.add_file("b.bin", DATA)  # same bytes, same ETag: only the URL differs
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url_a, dest)

    result = await asyncfetch.fetch(url_b, dest)

    assert not result.cached
    assert server.gets("b.bin")


async def test_an_unmarked_file_is_a_hit_unless_the_server_has_a_newer_one(
    server: FaultServer, torch_home: Path
) -> None:
    url = server.add_file("m.bin", DATA)  # Last-Modified: 2024-01-01
    torch_home.mkdir(parents=True)  # noqa: ASYNC240  # torch.hub's cache: its files count
    fresh, old, short = torch_home / "fresh.bin", torch_home / "old.bin", torch_home / "short.bin"
    for path in (fresh, old):
        path.write_bytes(DATA)
    short.write_bytes(DATA[:-1])
    os.utime(old, (946_684_800, 946_684_800))  # 2000-01-01: older than the server's copy

    assert (await asyncfetch.fetch(url, fresh)).cached
    assert read_marker(fresh) is not None  # the next look is cheaper
    assert not (await asyncfetch.fetch(url, old)).cached
    assert not (await asyncfetch.fetch(url, short)).cached
    assert short.read_bytes() == DATA


ZEROS = bytes(len(DATA))  # what aria2c or fallocate leave at full size after a crash


def zeros_at(directory: Path) -> Path:
    """``directory/m.bin`` made of ZEROS, the server's size, and no marker (directory made)."""
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / "m.bin"
    dest.write_bytes(ZEROS)
    return dest


def test_cli_get_downloads_an_unmarked_file_outside_torch_hubs_cache(
    server: FaultServer, torch_home: Path, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", DATA)
    plain = tmp_path / "plain"
    plain.mkdir()
    for args in (["--dir", str(plain)], ["-o", str(plain / "o.bin")]):
        dest = plain / ("o.bin" if "-o" in args else "m.bin")
        dest.write_bytes(ZEROS)  # the server's size, no marker: not torch.hub's cache

        done = run_cli("get", url, *args, "--json", TORCH_HOME=str(torch_home.parent.parent))

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["cached"] is False
        assert json.loads(done.stdout)["sha256"] == sha256(DATA)
        assert dest.read_bytes() == DATA
    verified = run_cli("cache", "verify", "--dir", str(plain))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.count("ok") == 2  # the downloads' digests, not the zeros'


@pytest.mark.parametrize("marker", ["none", "baseline"])
async def test_verify_never_trusts_a_file_no_marker_vouches_for(
    server: FaultServer, torch_home: Path, marker: str
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = zeros_at(torch_home)  # torch.hub's cache, the server's size: a hit, unless verifying
    if marker == "baseline":
        assert [r.status for r in cache.verify()] == ["unchecked"]

    checked = await asyncfetch.fetch(url, dest, verify=True)

    assert not checked.cached  # nothing says what the file should be: it cannot be verified
    assert checked.sha256 == sha256(DATA)
    assert dest.read_bytes() == DATA
    again = await asyncfetch.fetch(url, dest, verify=True)
    assert again.cached  # asyncfetch's download: re-hashed, and it has the download's digest


def test_cli_get_verify_downloads_an_unmarked_file_in_torch_hubs_cache(
    server: FaultServer, torch_home: Path
) -> None:
    url = server.add_file("m.bin", DATA)
    zeros_at(torch_home)
    home = str(torch_home.parent.parent)

    done = run_cli("get", url, "--verify", "--json", TORCH_HOME=home)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cached"] is False
    assert (torch_home / "m.bin").read_bytes() == DATA


@pytest.mark.parametrize("step", ["as it is", "after cache verify"])
async def test_a_file_used_as_torch_hubs_gains_no_trust(
    server: FaultServer, torch_home: Path, step: str
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = zeros_at(torch_home)
    assert (await asyncfetch.fetch(url, dest)).cached  # torch.hub's cache: size and date
    assert {e.name: e.state for e in cache.ls()} == {"m.bin": "unchecked"}
    if step == "after cache verify":
        assert [r.status for r in cache.verify()] == ["unchecked"]  # a baseline, no more
    server.reset_log()

    with pytest.raises(OfflineError, match="cannot be verified"):
        await asyncfetch.fetch(url, dest, offline=True, verify=True)
    asyncfetch.download_url_to_file(url, dest, progress=False)  # trusts asyncfetch's own only

    assert body_gets(server, "m.bin")
    assert dest.read_bytes() == DATA


@pytest.mark.parametrize("where", ["torch.hub's cache", "elsewhere"])
async def test_an_unmarked_file_with_another_digest_than_sha256_is_fetched_again(
    server: FaultServer, torch_home: Path, tmp_path: Path, where: str
) -> None:
    url = server.add_file("m.bin", DATA)
    directory = torch_home if where == "torch.hub's cache" else tmp_path / "plain"
    dest = zeros_at(directory)

    result = await asyncfetch.fetch(url, dest, sha256=sha256(DATA))

    assert not result.cached
    assert dest.read_bytes() == DATA
    assert read_marker(dest).verified  # type: ignore[union-attr]


# offline -------------------------------------------------------------------------------------


async def test_offline_hit_and_miss(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url, dest)
    server.reset_log()
    monkeypatch.setenv("ASYNCFETCH_OFFLINE", "1")

    hit = await asyncfetch.fetch(url, dest)
    assert hit.cached
    assert hit.sha256 == sha256(DATA)
    with pytest.raises(OfflineError) as missing:
        await asyncfetch.fetch(url, tmp_path / "other.bin")
    assert missing.value.path == str(tmp_path / "other.bin")
    assert str(tmp_path / "other.bin") in str(missing.value)
    assert "offline mode (ASYNCFETCH_OFFLINE is set)" in str(missing.value)
    with pytest.raises(OfflineError, match="does not have the SHA-256"):
        await asyncfetch.fetch(url, dest, sha256="0" * 64)
    assert server.requests == []
    assert leftovers(tmp_path) == ["m.bin"]


async def test_offline_argument_overrides_the_environment(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.add_file("m.bin", DATA)
    monkeypatch.setenv("ASYNCFETCH_OFFLINE", "1")
    result = await asyncfetch.fetch(url, tmp_path / "m.bin", offline=False)
    assert not result.cached
    monkeypatch.delenv("ASYNCFETCH_OFFLINE")
    with pytest.raises(OfflineError, match=r"offline mode \(--offline / offline=True\)") as e:
        await asyncfetch.fetch(url, tmp_path / "n.bin", offline=True)
    assert "ASYNCFETCH_OFFLINE" not in str(e.value)  # it is not set: not the cause


def test_offline_cli_miss_names_the_path(server: FaultServer, torch_home: Path) -> None:
    url = server.add_file("m.bin", DATA)
    done = run_cli("get", url, "--offline", TORCH_HOME=str(torch_home.parent.parent))
    assert done.returncode == 1
    assert str(torch_home / "m.bin") in done.stderr
    assert "offline mode (--offline / offline=True)" in done.stderr
    assert "ASYNCFETCH_OFFLINE" not in done.stderr
    assert server.requests == []


# bad input and faults ------------------------------------------------------------------------


@pytest.mark.parametrize("offline", [False, True])
async def test_a_target_that_is_a_directory_is_refused(tmp_path: Path, offline: bool) -> None:
    (tmp_path / "m.bin").mkdir()
    with pytest.raises(DestinationError, match="is a directory") as caught:
        await asyncfetch.fetch("http://127.0.0.1:9/m.bin", tmp_path / "m.bin", offline=offline)
    assert caught.value.path == str(tmp_path / "m.bin")


def test_an_unwritable_cache_dir_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    with read_only(locked):
        missing = run_cli("get", "http://127.0.0.1:9/m.bin", TORCH_HOME=str(locked / "torch"))
        here = run_cli("get", "http://127.0.0.1:9/m.bin", "--dir", str(locked))
    assert missing.returncode == 1
    assert f"cannot create the cache directory {locked / 'torch' / 'hub' / 'checkpoints'}" in (
        missing.stderr
    )
    assert here.returncode == 1
    assert f"directory {locked} is not writable" in here.stderr


def small_disk(directory: Path, size: str) -> contextlib.AbstractContextManager[None]:
    """A tmpfs of ``size`` mounted on ``directory`` (root only)."""
    return tmpfs(directory, f"size={size}")


async def test_disk_full_keeps_the_partial_and_resumes_once_there_is_room(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(1 << 20, seed=43)
    url = server.add_file("m.bin", data)
    disk = tmp_path / "disk"
    disk.mkdir()
    with small_disk(disk, "600k"):
        with pytest.raises(DestinationError, match="no space left") as caught:
            await asyncfetch.fetch(url, disk / "m.bin", connections=1, chunk_size=128 << 10)
        assert "partial download is kept" in str(caught.value)
        assert not (disk / "m.bin").exists()
        assert any(name.endswith(".part") for name in leftovers(disk))
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)  # noqa: ASYNC221

        served = server.bytes_served("m.bin")
        result = await asyncfetch.fetch(url, disk / "m.bin", connections=1, chunk_size=128 << 10)

        assert result.resumed_bytes > 256 << 10  # most of what fitted was kept
        assert server.bytes_served("m.bin") - served == len(data) - result.resumed_bytes
        assert (disk / "m.bin").read_bytes() == data


async def test_a_disk_full_before_the_first_byte_is_a_destination_error_leaving_nothing(
    server: FaultServer, tmp_path: Path
) -> None:
    """Not even the part's journal fits: the one disk-full error, and no empty part left
    (it was a bare OSError, the empty part left open and on disk)."""
    url = server.add_file("m.bin", make_payload(100 << 10, seed=44))
    disk = tmp_path / "disk"
    disk.mkdir()
    with small_disk(disk, "600k"):
        with open(disk / "filler", "wb") as filler, contextlib.suppress(OSError):  # noqa: ASYNC230
            filler.write(bytes(600 << 10))
        with pytest.raises(DestinationError, match="no space left on the device writing"):
            await asyncfetch.fetch(url, disk / "m.bin", connections=1)
        left = leftovers(disk)

    assert left == ["filler"]  # and the disk could be unmounted: no part file left open


# ls, verify, prune ---------------------------------------------------------------------------


async def fill_cache(server: FaultServer, where: Path) -> dict[str, Path]:
    """A cache with a verified, a recorded, an unmarked file and a partial download."""
    where.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    files = {}
    for name, digest in (("verified.bin", True), ("recorded.bin", False)):
        url = server.add_file(name, DATA)
        await asyncfetch.fetch(url, where / name, sha256=sha256(DATA) if digest else None)
        files[name] = where / name
    files["unmarked.bin"] = where / "unmarked.bin"
    files["unmarked.bin"].write_bytes(DATA[:1000])
    part = where / "partial.bin.0000aaaa.part"
    part.write_bytes(DATA[:5000])
    dead = 2**22 + 7
    save(part, Journal("http://h/partial.bin", len(DATA), '"e"', None, [(0, 5000)], pid=dead))
    files["partial.bin"] = part
    return files


async def test_ls_shows_size_age_last_use_and_state(server: FaultServer, tmp_path: Path) -> None:
    files = await fill_cache(server, tmp_path / "c")
    used_at(files["verified.bin"], time.time() - 7200)

    entries = {e.name: e for e in cache.ls(tmp_path / "c")}

    assert {n: e.state for n, e in entries.items()} == {
        "verified.bin": "verified",
        "recorded.bin": "recorded",
        "unmarked.bin": "unchecked",
        "partial.bin": "partial",
    }
    assert entries["verified.bin"].size == len(DATA)
    assert entries["verified.bin"].sha256 == sha256(DATA)
    assert time.time() - entries["verified.bin"].last_used > 7000
    assert (entries["partial.bin"].size, entries["partial.bin"].total) == (5000, len(DATA))
    assert not entries["partial.bin"].in_use
    assert list(entries)[-1] == "verified.bin"  # least recently used last

    done = run_cli("cache", "ls", "--json", "--dir", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["name"] for line in done.stdout.splitlines()} == set(entries)
    table = run_cli("cache", "ls", "--dir", str(tmp_path / "c")).stdout
    assert "verified" in table
    assert "2h" in table  # last used two hours ago


async def test_verify_reports_corruption_and_the_file_is_fetched_again(
    server: FaultServer, tmp_path: Path
) -> None:
    files = await fill_cache(server, tmp_path / "c")
    keep_mtime(files["recorded.bin"], flipped(DATA))  # bit rot: same size, same mtime

    results = {r.name: r for r in cache.verify(directory=tmp_path / "c")}

    assert {n: r.status for n, r in results.items()} == {
        "verified.bin": "ok",
        "recorded.bin": "corrupt",
        "unmarked.bin": "unchecked",
    }
    assert results["recorded.bin"].expected == sha256(DATA)
    assert results["recorded.bin"].sha256 == sha256(flipped(DATA))
    assert [r.status for r in cache.verify(["nope.bin"], tmp_path / "c")] == ["missing"]

    done = run_cli("cache", "verify", "--dir", str(tmp_path / "c"))
    assert done.returncode == 1
    assert "CORRUPT   recorded.bin" in done.stdout
    assert "the next fetch downloads it again" in done.stdout  # what to do: nothing, or fetch

    again = await asyncfetch.fetch(server.url("recorded.bin"), files["recorded.bin"])
    assert not again.cached  # the corrupt record is not trusted, even without a digest
    assert files["recorded.bin"].read_bytes() == DATA
    assert run_cli("cache", "verify", "recorded.bin", "--dir", str(tmp_path / "c")).returncode == 0


async def test_verify_takes_a_single_name_as_one_name(server: FaultServer, tmp_path: Path) -> None:
    await fill_cache(server, tmp_path / "c")
    results = cache.verify("verified.bin", tmp_path / "c")
    assert [(r.name, r.status) for r in results] == [("verified.bin", "ok")]


async def test_prune_keep_latest(server: FaultServer, tmp_path: Path) -> None:
    files = await fill_cache(server, tmp_path / "c")
    used_at(files["recorded.bin"], time.time() - 100)
    used_at(files["verified.bin"], time.time() - 50)

    report = cache.prune(keep_latest=1, directory=tmp_path / "c")

    assert sorted(e.name for e in report.removed) == ["recorded.bin", "verified.bin"]
    assert report.freed == 2 * len(DATA)
    assert leftovers(tmp_path / "c") == [
        "partial.bin.0000aaaa.part", "partial.bin.0000aaaa.part.json", "unmarked.bin"
    ]  # fmt: skip


async def test_prune_says_file_for_one_and_files_for_more(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", DATA)
    for name in ("a.bin", "b.bin"):
        await asyncfetch.fetch(url, tmp_path / name)
    used_at(tmp_path / "a.bin", time.time() - 100)

    one = run_cli("cache", "prune", "--keep-latest", "1", "--dry-run", "--dir", str(tmp_path))
    two = run_cli("cache", "prune", "--keep-latest", "0", "--dry-run", "--dir", str(tmp_path))

    assert one.stdout.splitlines()[-1].startswith("would remove 1 file, "), one.stdout
    assert two.stdout.splitlines()[-1].startswith("would remove 2 files, "), two.stdout


async def test_prune_older_than(server: FaultServer, tmp_path: Path) -> None:
    files = await fill_cache(server, tmp_path / "c")
    used_at(files["recorded.bin"], time.time() - 3 * 86400)

    report = cache.prune(older_than="2d", directory=tmp_path / "c")

    assert [e.name for e in report.removed] == ["recorded.bin"]
    assert not files["recorded.bin"].exists()
    assert not (tmp_path / "c" / "recorded.bin.asyncfetch.json").exists()


async def test_prune_max_size_drops_the_least_recently_used(
    server: FaultServer, tmp_path: Path
) -> None:
    files = await fill_cache(server, tmp_path / "c")
    used_at(files["verified.bin"], time.time() - 100)  # the oldest

    report = cache.prune(max_size=len(DATA) + 1000, directory=tmp_path / "c")

    assert [e.name for e in report.removed] == ["verified.bin"]
    assert files["recorded.bin"].exists()


async def test_prune_partials_and_leftovers(server: FaultServer, tmp_path: Path) -> None:
    where = tmp_path / "c"
    files = await fill_cache(server, where)
    orphan = where / "gone.bin.asyncfetch.json"
    orphan.write_text("{}")
    torch_partial = where / ("model.pth." + "a" * 32 + ".partial")
    torch_partial.write_bytes(b"x")
    os.utime(torch_partial, (time.time() - 7200, time.time() - 7200))
    live = where / "live.bin.0000bbbb.part"  # a download running in another process
    live.write_bytes(b"y" * 10)
    save(live, Journal("http://h/live.bin", 100, '"e"', None, [(0, 10)], pid=os.getppid()))

    dry = cache.prune(partials=True, dry_run=True, directory=where)
    assert files["partial.bin"].exists()
    report = cache.prune(partials=True, directory=where)

    assert sorted(e.path.name for e in report.removed) == sorted(e.path.name for e in dry.removed)
    assert sorted(e.path.name for e in report.removed) == [
        "gone.bin.asyncfetch.json", "model.pth." + "a" * 32 + ".partial",
        "partial.bin.0000aaaa.part",
    ]  # fmt: skip
    assert not (where / "partial.bin.0000aaaa.part.json").exists()
    assert live.exists()
    assert files["verified.bin"].exists()


async def test_prune_partials_removes_locks_no_process_holds(
    server: FaultServer, tmp_path: Path
) -> None:
    from asyncfetch._cache import directory as _cachedir
    from asyncfetch._hub import distributed as _distributed
    from asyncfetch._hub import files as _hubfile

    assert _cachedir.HUB_LOCK_SUFFIX == _distributed.LOCK_SUFFIX  # the names it knows are theirs
    assert _cachedir.UNVERIFIED_SUFFIX == _hubfile.UNVERIFIED_SUFFIX
    where = tmp_path / "c"
    await fill_cache(server, where)
    stale = [where / n for n in ("partial.bin.lock", "verified.bin.lock", "recorded.bin.hub.lock")]
    for lock in stale:  # left by processes killed while holding them
        lock.touch()
    notes = where / "notes.lock"
    notes.write_text("a user's own file")
    alone = where / "alone.lock"  # empty, but nothing of "alone" is here: not a lock of ours
    alone.touch()
    held = where / "unmarked.bin.lock"

    with held_elsewhere(where / "unmarked.bin"):
        listed = {e.path.name for e in cache.ls(where)}
        dry = cache.prune(partials=True, dry_run=True, directory=where)
        assert all(lock.exists() for lock in stale)
        report = cache.prune(partials=True, directory=where)
        done = run_cli("cache", "prune", "--partials", "--dir", str(where))
        assert held.exists()

    assert listed == {
        "verified.bin", "recorded.bin", "unmarked.bin", "partial.bin.0000aaaa.part",
        "notes.lock", "alone.lock",
    }  # fmt: skip
    removed = sorted(e.path.name for e in report.removed)
    assert removed == sorted(e.path.name for e in dry.removed)
    assert removed == sorted(["partial.bin.0000aaaa.part", *(lock.name for lock in stale)])
    assert report.kept_in_use == []  # a held lock is no candidate: nothing to report
    assert not any(lock.exists() for lock in stale)
    assert notes.read_text() == "a user's own file"
    assert alone.exists()
    assert done.returncode == 0, done.stderr
    assert "removed 0 files" in done.stdout
    assert cache.prune(partials=True, directory=where).removed[0].path == held  # free now


def test_prune_partials_cleans_up_after_a_kill(server: FaultServer, tmp_path: Path) -> None:
    data = make_payload(SIZE, seed=46)
    server.add_file("big.bin", data)
    dest = tmp_path / "big.bin"
    kill_halfway(server, server.url("big.bin", rate=RATE), dest)
    assert "big.bin.lock" in os.listdir(tmp_path)  # kill -9 leaves its lock file

    done = run_cli("cache", "prune", "--partials", "--dir", str(tmp_path))

    assert done.returncode == 0, done.stderr
    assert "removed: big.bin.lock" in done.stdout
    assert os.listdir(tmp_path) == []


def test_prune_needs_a_criterion(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="say what to prune"):
        cache.prune(directory=tmp_path)
    done = run_cli("cache", "prune", "--dir", str(tmp_path))
    assert done.returncode == 2  # a usage error, as the README says
    assert "say what to prune" in done.stderr
    bad = run_cli("cache", "prune", "--max-size", "lots", "--dir", str(tmp_path))
    assert bad.returncode == 2


def test_prune_never_touches_a_live_download(server: FaultServer, tmp_path: Path) -> None:
    where = tmp_path / "c"
    where.mkdir()
    old, new = make_payload(1 << 20, seed=44), make_payload(1 << 20, seed=45)
    (where / "big.bin").write_bytes(old)
    os.utime(where / "big.bin", (946_684_800, 946_684_800))  # stale: will be downloaded again
    server.add_file("big.bin", new)
    url = server.url("big.bin", rate=400_000)
    argv = ["get", url, "--dir", str(where), "--json", "--connections", "2"]
    child = subprocess.Popen(
        [sys.executable, "-m", "asyncfetch", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        wait_until(lambda: any(n.endswith(".part") for n in os.listdir(where)))

        report = cache.prune(keep_latest=0, partials=True, directory=where)
        done = run_cli("cache", "prune", "--keep-latest", "0", "--partials", "--dir", str(where))
    finally:
        out, err = child.communicate(timeout=60)

    assert report.removed == []
    assert [e.name for e in report.kept_in_use] == ["big.bin"]
    assert "in use, kept: big.bin" in done.stdout
    assert child.returncode == 0, err
    assert (where / "big.bin").read_bytes() == new
    assert cache.prune(keep_latest=0, directory=where).freed == len(new)  # free once it is done


async def test_a_download_leaves_the_file_alone_and_its_marker_elsewhere(
    server: FaultServer, tmp_path: Path, trust_record: str
) -> None:
    url = server.add_file("m.bin", DATA)
    result = await asyncfetch.fetch(url, tmp_path / "m.bin", sha256=sha256(DATA))
    marker = read_marker(tmp_path / "m.bin")

    assert os.listdir(tmp_path) == ["m.bin"]
    assert marker is not None
    st = (tmp_path / "m.bin").stat()
    assert (marker.size, marker.mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert marker.sha256 == marker.expected == result.sha256
    assert marker.verified
    assert marker.url == url
    assert marker.etag == server.file_info("m.bin")[1]


# a changed file, internal files, odd names and directories -----------------------------------


def later(path: Path, seconds: float = 10) -> None:
    """Move the mtime of ``path`` ``seconds`` on: to its marker, another file from now on."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds * 1e9)))


@pytest.mark.parametrize("hashing", [True, False])  # --no-hash too: only a hash tells
async def test_a_file_changed_since_its_download_is_fetched_again(
    server: FaultServer, tmp_path: Path, hashing: bool
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url, dest)
    dest.write_bytes(flipped(DATA))
    later(dest)  # a new mtime: the marker no longer describes it
    server.reset_log()

    changed = await asyncfetch.fetch(url, dest, hash=hashing)

    assert not changed.cached
    assert server.gets("m.bin")
    assert dest.read_bytes() == DATA


async def test_a_file_touched_since_its_download_is_a_hit(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url, dest)
    dest.write_bytes(DATA)
    later(dest)  # rewritten with the same bytes: the same file after all

    touched = await asyncfetch.fetch(url, dest, hash=False)

    assert touched.cached
    assert touched.sha256 == sha256(DATA)
    marker = read_marker(dest)
    assert marker is not None
    assert marker.expected == sha256(DATA)  # the record of the download is kept
    assert marker.describes(dest.stat())


def test_cli_get_of_a_changed_file_downloads_it_again(server: FaultServer, tmp_path: Path) -> None:
    url = server.add_file("b.bin", DATA)
    dest = tmp_path / "b.bin"
    assert run_cli("get", url, "-o", str(dest)).returncode == 0
    dest.write_bytes(flipped(DATA))
    later(dest)

    done = run_cli("get", url, "-o", str(dest), "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cached"] is False
    assert json.loads(done.stdout)["sha256"] == sha256(DATA)
    assert dest.read_bytes() == DATA
    verify = run_cli("cache", "verify", "b.bin", "--dir", str(tmp_path))
    assert verify.stdout.startswith("ok "), verify.stdout


async def test_offline_a_file_changed_since_its_download_is_not_a_hit(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url, dest)
    dest.write_bytes(flipped(DATA))
    later(dest)

    with pytest.raises(OfflineError, match="is corrupt"):
        await asyncfetch.fetch(url, dest, offline=True)
    assert read_marker(dest).expected == sha256(DATA)  # type: ignore[union-attr]
    assert [r.status for r in cache.verify(directory=tmp_path)] == ["corrupt"]


@pytest.mark.parametrize("offline", [False, True])
async def test_a_file_changed_since_its_download_from_a_mirror_is_not_a_hit(
    server: FaultServer, make_server: object, tmp_path: Path, offline: bool
) -> None:
    url = server.add_file("m.bin", DATA)
    mirror_server: FaultServer = make_server()  # type: ignore[operator]
    mirror = mirror_server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(mirror, dest)  # the marker names the mirror
    dest.write_bytes(flipped(DATA))
    later(dest)

    if offline:  # as online: the digest recorded at the download tells it is not the file
        with pytest.raises(OfflineError, match="is corrupt"):
            await asyncfetch.fetch(url, dest, mirrors=[mirror], offline=True)
    else:
        assert not (await asyncfetch.fetch(url, dest, mirrors=[mirror])).cached
        assert dest.read_bytes() == DATA


async def test_prune_partials_keeps_the_marker_of_a_json_file(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("small.txt", DATA)
    for name in ("config.json", "tokenizer.json"):
        await asyncfetch.fetch(url, tmp_path / name, sha256=sha256(DATA))

    report = cache.prune(partials=True, directory=tmp_path)
    done = run_cli("cache", "prune", "--partials", "--dir", str(tmp_path))

    assert report.removed == []
    assert "removed 0 files" in done.stdout
    assert {e.name: e.state for e in cache.ls(tmp_path)} == {
        "config.json": "verified", "tokenizer.json": "verified"
    }  # fmt: skip
    assert read_marker(tmp_path / "config.json") is not None


async def test_verify_records_a_baseline_for_a_file_without_one(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("c.bin", DATA)
    await asyncfetch.fetch(url, tmp_path / "c.bin", hash=False)
    (tmp_path / "hub.bin").write_bytes(DATA)  # one torch.hub made: no marker

    first = run_cli("cache", "verify", "--dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("recorded now") == 2
    assert {e.name: e.state for e in cache.ls(tmp_path)} == {
        "c.bin": "recorded", "hub.bin": "recorded"
    }  # fmt: skip
    assert (await asyncfetch.fetch(url, tmp_path / "c.bin")).cached  # still a hit
    assert (await asyncfetch.fetch(url, tmp_path / "hub.bin", sha256=sha256(DATA))).cached

    for name in ("c.bin", "hub.bin"):
        keep_mtime(tmp_path / name, flipped(DATA))  # bit rot: same size, same mtime
    second = run_cli("cache", "verify", "c.bin", "--dir", str(tmp_path))
    assert second.returncode == 1
    assert f"CORRUPT   c.bin: SHA-256 {sha256(flipped(DATA))}, expected {sha256(DATA)}" in (
        second.stdout
    )
    assert [r.status for r in cache.verify(["hub.bin"], tmp_path)] == ["corrupt"]

    again = await asyncfetch.fetch(url, tmp_path / "c.bin", hash=False)
    assert not again.cached  # found corrupt: downloaded again
    assert (tmp_path / "c.bin").read_bytes() == DATA


def body_gets(server: FaultServer, name: str) -> list[object]:
    """GETs of ``name`` that asked for more than the probe's first byte."""
    return [r for r in server.gets(name) if r.range != (0, 0)]


async def test_a_torch_hub_file_with_a_baseline_is_a_hit_as_before_verify(
    server: FaultServer, torch_home: Path
) -> None:
    url = server.add_file("hub.bin", DATA)
    torch_home.mkdir(parents=True)  # noqa: ASYNC240
    dest = torch_home / "hub.bin"
    dest.write_bytes(DATA)  # torch.hub's: no marker; a hit when its size is the server's
    assert [r.status for r in cache.verify()] == ["unchecked"]
    server.reset_log()

    hit = await asyncfetch.fetch(url, dest)

    assert hit.cached  # verify recorded a baseline: no less vouched for than before it
    assert hit.sha256 == sha256(DATA)
    assert body_gets(server, "hub.bin") == []
    assert read_marker(dest).expected == sha256(DATA)  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["changed since", "found corrupt", "other size"])
async def test_a_torch_hub_file_that_fails_its_baseline_is_fetched_again(
    server: FaultServer, torch_home: Path, how: str
) -> None:
    url = server.add_file("hub.bin", DATA)
    torch_home.mkdir(parents=True)  # noqa: ASYNC240  # torch.hub's cache: its files count
    dest = torch_home / "hub.bin"
    dest.write_bytes(flipped(DATA) if how == "other size" else DATA)
    assert [r.status for r in cache.verify()] == ["unchecked"]
    if how == "changed since":
        dest.write_bytes(flipped(DATA))
        later(dest)  # a new mtime: hashed again, and not the baseline's digest
    elif how == "found corrupt":
        keep_mtime(dest, flipped(DATA))  # bit rot the marker cannot see...
        assert [r.status for r in cache.verify()] == ["corrupt"]  # verify can
    else:
        server.replace_file("hub.bin", DATA + b"more")  # the server's is another file now
        url = server.url("hub.bin")
    server.reset_log()

    again = await asyncfetch.fetch(url, dest)

    assert not again.cached
    assert body_gets(server, "hub.bin")
    assert dest.read_bytes() == (DATA + b"more" if how == "other size" else DATA)


async def test_offline_a_torch_hub_file_changed_since_its_baseline_is_not_a_hit(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("hub.bin", DATA)
    dest = tmp_path / "hub.bin"
    dest.write_bytes(DATA)
    cache.verify(directory=tmp_path)
    dest.write_bytes(flipped(DATA))
    later(dest)

    with pytest.raises(OfflineError, match="is corrupt"):
        await asyncfetch.fetch(url, dest, offline=True)
    assert read_marker(dest).expected == sha256(DATA)  # type: ignore[union-attr]  # kept
    assert [r.status for r in cache.verify(directory=tmp_path)] == ["corrupt"]


async def test_a_baseline_alone_does_not_vouch_where_a_marker_must(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("hub.bin", DATA)
    dest = tmp_path / "hub.bin"
    dest.write_bytes(DATA)
    cache.verify(directory=tmp_path)
    request = make_request(
        url, dest, make_options(trust_unvouched=False)
    )  # as download_url_to_file

    again = await run(request)

    assert not again.cached  # the baseline says what the file was, not that it is the URL's
    assert body_gets(server, "hub.bin")


async def test_verify_does_not_record_a_changed_file_as_downloaded(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("c.bin", DATA)
    dest = tmp_path / "c.bin"
    await asyncfetch.fetch(url, dest, hash=False)
    dest.write_bytes(flipped(DATA))
    later(dest)  # changed after the download, before anything hashed it

    assert [r.status for r in cache.verify(directory=tmp_path)] == ["unchecked"]
    marker = read_marker(dest)
    assert marker is not None
    assert marker.expected == sha256(flipped(DATA))  # the baseline of later verifies
    assert marker.url is None  # but not what the URL served
    assert not (await asyncfetch.fetch(url, dest)).cached
    assert dest.read_bytes() == DATA


async def test_verify_takes_cache_entries_only(server: FaultServer, tmp_path: Path) -> None:
    where = tmp_path / "c"
    files = await fill_cache(server, where)
    outside = tmp_path / "files" / "small.txt"
    outside.parent.mkdir()
    outside.write_bytes(DATA)
    torch_partial = where / ("model.pth." + "a" * 32 + ".partial")
    torch_partial.write_bytes(b"x")
    before = {d: sorted(os.listdir(d)) for d in (where, outside.parent)}
    names = [
        str(outside), "../files/small.txt", "recorded.bin.asyncfetch.json",
        files["partial.bin"].name, "partial.bin.0000aaaa.part.json", torch_partial.name, ".",
    ]  # fmt: skip

    results = cache.verify(names, where)
    done = run_cli("cache", "verify", str(outside), "--dir", str(where))

    assert [r.status for r in results] == ["missing"] * len(names)
    assert done.returncode == 1
    assert f"MISSING   {outside}: not a file in the cache {where}" in done.stdout
    assert {d: sorted(os.listdir(d)) for d in before} == before  # nothing written
    assert [r.status for r in cache.verify(["recorded.bin"], where)] == ["ok"]


async def test_torchrun_notes_and_unverified_downloads_are_not_cache_entries(
    server: FaultServer, tmp_path: Path
) -> None:
    from asyncfetch._hub.distributed import NodeRole, failure_path, once_per_node

    url = server.add_file("m-0badc0de.pth", DATA)
    target = tmp_path / "nothere.pth"
    leader = NodeRole(rank=0, local_rank=0, world_size=2)
    missing = server.url("nothere.pth")  # a 404
    with pytest.raises(asyncfetch.FetchError):
        once_per_node(target, lambda: asyncfetch.download(missing, target), leader)
    note = failure_path(target)
    assert note.exists()
    # what a process killed before the hash-prefix check leaves (see _hubfile.get_file)
    unverified = tmp_path / "m-0badc0de.pth.unverified"
    await asyncfetch.fetch(url, unverified)

    assert cache.ls(tmp_path) == []
    assert cache.verify(directory=tmp_path) == []
    first = cache.prune(partials=True, directory=tmp_path)
    # the note and the download may be in use; torchrun's lock is not held by anyone
    assert [e.path.name for e in first.removed] == ["nothere.pth.hub.lock"]
    assert note.exists()
    assert unverified.exists()

    for path in (note, unverified):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    done = run_cli("cache", "prune", "--partials", "--dir", str(tmp_path))

    assert done.returncode == 0, done.stderr
    assert "removed: nothere.pth.hub-failed.json" in done.stdout
    assert "removed: m-0badc0de.pth.unverified" in done.stdout
    assert os.listdir(tmp_path) == []  # the marker of the .unverified file went too


@pytest.mark.parametrize("action", [["ls"], ["verify"], ["prune", "--partials"]])
def test_a_cache_dir_that_is_a_file_is_one_line_error(tmp_path: Path, action: list[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")

    here = run_cli("cache", *action, "--dir", str(afile))
    home = run_cli("cache", *action, TORCH_HOME=str(afile))

    for done, where in ((here, afile), (home, afile / "hub" / "checkpoints")):
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith(f"asyncfetch: error: cannot read the cache directory {where}")
        assert len(done.stderr.splitlines()) == 1
    with pytest.raises(DestinationError, match="Not a directory") as caught:
        cache.ls(afile)
    assert caught.value.path == str(afile)


@pytest.mark.parametrize(
    "edit",
    [
        {"last_used": "yesterday"},
        {"fetched_at": [1]},
        {"size": "200000"},
        {"sha256": 12},
        {"verified": "yes"},
        {"mtime_ns": 1.5},
    ],
)
async def test_a_malformed_marker_counts_as_missing(
    server: FaultServer, tmp_path: Path, edit: dict[str, object], trust_record: str
) -> None:
    url = server.add_file("m.bin", DATA)
    await asyncfetch.fetch(url, tmp_path / "m.bin", sha256=sha256(DATA))
    (tmp_path / "n.bin").write_bytes(DATA)  # another file, to sort against
    store_marker(tmp_path / "m.bin", stored_marker(tmp_path / "m.bin") | edit)

    done = run_cli("cache", "ls", "--dir", str(tmp_path))

    assert done.returncode == 0, done.stderr
    assert {e.name: e.state for e in cache.ls(tmp_path)} == {
        "m.bin": "unchecked", "n.bin": "unchecked"
    }  # fmt: skip
    assert (await asyncfetch.fetch(url, tmp_path / "m.bin", sha256=sha256(DATA))).cached
    assert read_marker(tmp_path / "m.bin") is not None  # written anew


async def test_a_touched_file_is_not_a_hit_once_the_server_has_another_version(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add_file("v.bin", DATA)
    dest = tmp_path / "v.bin"
    await asyncfetch.fetch(url, dest)
    server.add_file("v.bin", flipped(DATA))  # same size, a new ETag
    later(dest)  # touched (a restore, a cp without -p): the marker no longer matches it

    result = await asyncfetch.fetch(url, dest)

    assert not result.cached
    assert dest.read_bytes() == flipped(DATA)


@pytest.mark.parametrize("changed", [False, True])
def test_a_prefix_lookup_of_a_touched_file_keeps_the_digest_recorded_at_its_download(
    tmp_path: Path, changed: bool
) -> None:
    dest = tmp_path / "m-0123.pth"
    dest.write_bytes(DATA)
    digest = sha256(DATA)
    st = dest.stat()
    write_marker(dest, _marker.Marker(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=digest,
                                     expected=digest, url="http://h/m-0123.pth"))  # fmt: skip
    if changed:
        dest.write_bytes(flipped(DATA))
    later(dest)

    verdict = _cache.judge(dest, HashPrefix(digest[:1]), urls=(), options=make_options())
    hit = verdict.hit

    marker = read_marker(dest)
    assert marker is not None
    assert marker.expected == digest  # the record of the download is kept
    assert marker.corrupt is changed
    assert (hit is not None) is (not changed)  # a changed file is corrupt, whatever its prefix


@pytest.mark.parametrize("where", ["stored", "beside"])
def test_a_marker_with_a_signature_in_it_is_rewritten_and_a_url_signed_again_hits(
    server: FaultServer, tmp_path: Path, where: str
) -> None:
    url = server.add_file("m.bin", b"signed bytes")
    dest = tmp_path / "m.bin"
    asyncfetch.download(url + "?X-Amz-Signature=OLDSECRET", dest)
    data = stored_marker(dest)
    assert data["url"].endswith("X-Amz-Signature=***")
    data["url"] = url + "?X-Amz-Signature=OLDSECRET"  # as an earlier version wrote it
    if where == "stored":
        store_marker(dest, data)
    else:  # the marker file an earlier version kept beside the file
        _marker.remove_marker(dest)
        _marker.marker_path(dest).write_text(json.dumps(data))

    again = asyncfetch.download(url + "?X-Amz-Signature=NEWSECRET", dest)

    assert again.cached
    assert "SECRET" not in json.dumps(stored_marker(dest))
    assert os.listdir(tmp_path) == ["m.bin"]
