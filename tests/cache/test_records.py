"""Where trust records live: nothing beside the user's file (an extended attribute, or the
state directory), and markers earlier versions left beside files honoured, then moved."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import cache
from asyncfetch._cache import records as _records
from asyncfetch._cache.marker import read_marker
from tests.faultserver import FaultServer, make_payload
from tests.helpers import cli_env, run_cli, sha256, stored_marker

DATA = make_payload(200_000, seed=41)
NOBODY = 65534


def records_in(state: Path) -> list[str]:
    where = state / _records.RECORDS
    return sorted(os.listdir(where)) if where.exists() else []


def has_xattr(path: Path) -> bool:
    return _records.XATTR in os.listxattr(path)


def old_marker(path: Path, url: str, digest: str) -> Path:
    """The marker an earlier version wrote beside ``path`` after a verified download."""
    st = path.stat()
    marker = path.with_name(path.name + ".asyncfetch.json")
    fields = {
        "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest, "expected": digest,
        "verified": True, "url": url, "etag": None, "last_modified": None,
        "fetched_at": time.time(), "last_used": time.time(), "version": 1,
    }  # fmt: skip
    marker.write_text(json.dumps(fields))
    return marker


def test_get_leaves_nothing_beside_the_file(
    server: FaultServer, tmp_path: Path, trust_record: str, private_state_dir: Path
) -> None:
    url = server.add_file("m.bin", DATA)
    out = tmp_path / "out" / "m.bin"
    out.parent.mkdir()
    args = ("get", url, "-o", str(out), "--json", "--sha256", sha256(DATA))

    first = run_cli(*args)
    after_first = os.listdir(out.parent)
    again = run_cli(*args)

    assert first.returncode == 0, first.stderr
    assert after_first == ["m.bin"]  # as curl, wget and aria2c leave it: no marker, no lock
    assert os.listdir(out.parent) == ["m.bin"]
    assert json.loads(again.stdout)["cached"] is True  # the record elsewhere still vouches
    assert has_xattr(out) == (trust_record == "auto")  # ext4 and tmpfs here have xattrs
    assert len(records_in(private_state_dir)) == (trust_record == "state")


def test_a_kill_right_after_the_rename_leaves_a_file_that_says_what_it_is(
    server: FaultServer, tmp_path: Path, private_state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 between the rename into place and the engine's final record: the record the
    download wrote on the part before the rename rides with the file (an extended attribute),
    so the rerun is a hit (was: a file nothing vouched for, downloaded again; asyncfetch
    serve's restarted job then found its own file 'from an unknown source'). In the state
    directory the record is keyed by the part's name and does not follow: not tested there."""
    monkeypatch.setenv("ASYNCFETCH_TRUST_RECORD", "auto")
    url = server.add_file("m.bin", DATA)
    out = tmp_path / "m.bin"
    killed_after_rename = (
        "import os, signal, sys\n"
        "real = os.replace\n"
        "def replace(a, b, **kw):\n"
        "    real(a, b, **kw)\n"
        f"    if str(b) == {str(out)!r}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.replace = replace\n"
        "from asyncfetch._cli.main import main\n"
        f"sys.exit(main(['get', {url!r}, '-o', {str(out)!r}]))\n"
    )
    first = subprocess.run(
        [sys.executable, "-c", killed_after_rename],
        capture_output=True, text=True, timeout=60, env=cli_env(), check=False,
    )  # fmt: skip
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert out.read_bytes() == DATA
    gets = sum(r.method == "GET" for r in server.requests)

    again = run_cli("get", url, "-o", str(out), "--json")

    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cached"] is True
    assert sum(r.method == "GET" for r in server.requests) == gets  # not downloaded again
    assert out.read_bytes() == DATA


async def test_the_state_record_is_for_that_file_only(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCFETCH_TRUST_RECORD", "state")
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url, dest, sha256=sha256(DATA))
    assert read_marker(dest) is not None

    replaced = tmp_path / "new"
    replaced.write_bytes(DATA)
    os.replace(replaced, dest)  # same path, same bytes: another file (inode) all the same
    assert read_marker(dest) is None


async def test_the_state_records_parents_are_private_whatever_the_umask(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first record makes the state dir (~/.local/state/asyncfetch/records): under umask 002
    ``mkdir -p`` made its parents 0775, which ``asyncfetch serve`` then refused there."""
    state = tmp_path / "home" / ".local" / "state" / "asyncfetch"
    monkeypatch.setenv("ASYNCFETCH_STATE_DIR", str(state))
    monkeypatch.setenv("ASYNCFETCH_TRUST_RECORD", "state")
    url = server.add_file("m.bin", DATA)
    old = os.umask(0o002)
    try:
        await asyncfetch.fetch(url, tmp_path / "m.bin", sha256=sha256(DATA))
    finally:
        os.umask(old)

    made = [state / "records", state, *state.parents][: len(state.relative_to(tmp_path).parts) + 1]
    assert [stat.S_IMODE(path.stat().st_mode) for path in made] == [0o700] * len(made)


async def test_a_state_record_trusts_no_digest_once_the_ctime_moved(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCFETCH_TRUST_RECORD", "state")
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url, dest, sha256=sha256(DATA))
    st = dest.stat()
    with dest.open("r+b") as file:  # same size, and the mtime set back: only the ctime tells
        file.write(b"\x00" * 100)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    mark = len(server.requests)

    result = await asyncfetch.fetch(url, dest, sha256=sha256(DATA))

    assert not result.cached  # hashed again, found changed, downloaded again
    assert any(r.method == "GET" for r in server.requests[mark:])
    assert dest.read_bytes() == DATA


async def test_a_record_follows_a_rename_in_the_state_directory(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_state_dir: Path
) -> None:
    monkeypatch.setenv("ASYNCFETCH_TRUST_RECORD", "state")
    url = server.add_file("m.bin", DATA)
    staged, dest = tmp_path / "m.bin.unverified", tmp_path / "m.bin"
    await asyncfetch.fetch(url, staged, sha256=sha256(DATA))
    os.replace(staged, dest)
    asyncfetch._cache.marker.move_marker(staged, dest)

    marker = read_marker(dest)
    assert marker is not None
    assert marker.describes(dest.stat())
    assert marker.verified
    assert len(records_in(private_state_dir)) == 1


async def test_records_of_files_gone_are_swept(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_state_dir: Path
) -> None:
    monkeypatch.setenv("ASYNCFETCH_TRUST_RECORD", "state")
    url = server.add_file("m.bin", DATA)
    for name in ("a.bin", "b.bin", "c.bin"):
        await asyncfetch.fetch(url, tmp_path / name, sha256=sha256(DATA))
    (tmp_path / "a.bin").unlink()
    (tmp_path / "b.bin").unlink()
    assert len(records_in(private_state_dir)) == 3

    await asyncfetch.fetch(url, tmp_path / "d.bin", sha256=sha256(DATA))

    assert len(records_in(private_state_dir)) == 2  # c.bin's and d.bin's
    assert read_marker(tmp_path / "c.bin") is not None


async def test_prune_forgets_the_records_of_what_it_deletes(
    server: FaultServer, tmp_path: Path, trust_record: str, private_state_dir: Path
) -> None:
    url = server.add_file("m.bin", DATA)
    await asyncfetch.fetch(url, tmp_path / "m.bin", sha256=sha256(DATA))

    assert cache.prune(keep_latest=0, directory=tmp_path).freed == len(DATA)

    assert os.listdir(tmp_path) == []
    assert records_in(private_state_dir) == []


async def test_an_earlier_versions_marker_is_honoured_then_moved(
    server: FaultServer, tmp_path: Path, trust_record: str
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    dest.write_bytes(DATA)
    old = old_marker(dest, url, sha256(DATA))

    entries = {e.name: e.state for e in cache.ls(tmp_path)}

    assert entries == {"m.bin": "verified"}  # it vouched for the file
    assert not old.exists()  # and moved
    assert stored_marker(dest)["expected"] == sha256(DATA)
    mark = len(server.requests)
    assert (await asyncfetch.fetch(url, dest, sha256=sha256(DATA))).cached
    assert server.requests[mark:] == []


def plant_record(dest: Path, url: str, digest: str, where: str) -> Path | None:
    """Vouch for ``dest`` as having ``digest`` the way its owner can: an extended attribute
    on it, or an earlier version's marker beside it (theirs too); then make both theirs."""
    marker = old_marker(dest, url, digest)
    if where == "attribute":
        os.setxattr(dest, _records.XATTR, marker.read_bytes())
        marker.unlink()
    os.chown(dest, NOBODY, NOBODY)
    if marker.exists():
        os.chown(marker, NOBODY, NOBODY)
        return marker
    return None


@pytest.mark.parametrize("where", ["attribute", "beside"])
async def test_another_users_file_is_not_taken_at_its_owners_word(
    server: FaultServer, tmp_path: Path, private_state_dir: Path, where: str
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    dest.write_bytes(b"E" * len(DATA))  # planted in a shared dir by another user: the wrong bytes
    plant_record(dest, url, sha256(DATA), where)  # ... vouched for as the right ones

    assert read_marker(dest) is None
    assert {e.name: e.state for e in cache.ls(tmp_path)} == {"m.bin": "unchecked"}
    result = await asyncfetch.fetch(url, dest, sha256=sha256(DATA))

    assert not result.cached
    assert dest.read_bytes() == DATA


async def test_another_users_right_file_is_hashed_once_and_recorded_here(
    server: FaultServer, tmp_path: Path, private_state_dir: Path
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    dest.write_bytes(DATA)  # a team member's download in a shared cache
    old = plant_record(dest, url, sha256(DATA), "beside")

    assert (await asyncfetch.fetch(url, dest, sha256=sha256(DATA))).cached
    assert server.requests == []
    assert len(records_in(private_state_dir)) == 1  # our own record, bound to its ctime
    assert {e.name: e.state for e in cache.ls(tmp_path)} == {"m.bin": "verified"}
    assert old is not None
    assert old.stat().st_uid == NOBODY  # theirs: left to them


async def test_another_users_copy_of_the_same_bytes_is_left_to_them(
    server: FaultServer, tmp_path: Path, private_state_dir: Path
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    dest.write_bytes(DATA)  # a team member's download, without a sha256, in a shared dir
    plant_record(dest, url, sha256(DATA), "attribute")  # their word, which is not enough
    theirs = dest.stat()

    first = await asyncfetch.fetch(url, dest)  # nothing to vouch for theirs: it downloads
    served = [r.method for r in server.requests]
    again = await asyncfetch.fetch(url, dest)

    assert not first.cached
    assert first.sha256 == sha256(DATA)
    assert (dest.stat().st_ino, dest.stat().st_uid) == (theirs.st_ino, NOBODY)  # left to them
    assert sorted(os.listdir(tmp_path)) == ["m.bin"]  # no part, no journal
    assert again.cached  # our record of their file, here: no download on every fetch
    assert "GET" in served
    assert [r.method for r in server.requests][len(served) :] in ([], ["HEAD"])  # a check only
    assert dest.read_bytes() == DATA


@pytest.mark.parametrize("planted", ["another-user", "link"])
async def test_a_marker_planted_beside_a_file_says_nothing(
    server: FaultServer, tmp_path: Path, planted: str
) -> None:
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    dest.write_bytes(b"\x00" * len(DATA))  # a crashed download's zeros, of the right size
    marker = old_marker(dest, url, sha256(DATA))  # claims the file is the right one
    if planted == "another-user":
        os.chown(marker, NOBODY, NOBODY)
    else:
        real = marker.rename(tmp_path / "elsewhere.json")
        marker.symlink_to(real)

    assert read_marker(dest) is None
    result = await asyncfetch.fetch(url, dest, sha256=sha256(DATA))

    assert not result.cached
    assert dest.read_bytes() == DATA
    assert marker.is_symlink() or marker.stat().st_uid == NOBODY  # theirs: left as it was


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i`` on ``path`` for the block: even root cannot set an attribute on it (the
    test is skipped where that is not allowed)."""
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make {path} immutable: {made.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_a_file_that_refuses_an_attribute_gets_a_state_record(
    server: FaultServer, tmp_path: Path, private_state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCFETCH_TRUST_RECORD", "auto")
    url = server.add_file("m.bin", DATA)
    dest = tmp_path / "m.bin"
    await asyncfetch.fetch(url, dest, hash=False)  # recorded as an attribute, no digest
    assert has_xattr(dest)

    with immutable(dest):
        [result] = cache.verify(directory=tmp_path)  # records a baseline: refused on the file
        entries = {e.name: e.state for e in cache.ls(tmp_path)}

    assert result.status == "unchecked"  # nothing to compare with before
    assert entries == {"m.bin": "recorded"}  # the baseline, read back from the state directory
    assert len(records_in(private_state_dir)) == 1
    assert os.listdir(tmp_path) == ["m.bin"]
