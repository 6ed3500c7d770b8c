"""Shared output directories: a link, a FIFO or another user's file under a name asyncfetch
uses is never written through, adopted or deleted.

The links are planted in a directory without the sticky bit: in a sticky one (/tmp) the
kernel's protected_symlinks would stop some of them and hide the flaw.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

import asyncfetch
from asyncfetch import IntegrityError
from asyncfetch._storage import parts as _parts
from asyncfetch._storage.journal import Journal, journal_path, save
from tests.faultserver import FaultServer, make_payload
from tests.helpers import make_special, sha256

DATA = make_payload(300_000, seed=31)
ETAG = '"v1"'
NOBODY = 65534
DEAD = 2**22 + 12345  # above the default pid_max: no such process


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """An output directory anyone may write, without the sticky bit."""
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    assert not directory.stat().st_mode & stat.S_ISVTX
    return directory


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's outside the output directory, that a link points to."""
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(b"precious")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    return path


def intact(victim: Path) -> bool:
    st = victim.stat()
    return victim.read_bytes() == b"precious" and st.st_mtime == 1_000_000_000


def crashed_part(dest: Path, token: str, url: str, held: int) -> Path:
    """A part a dead process left, holding the first ``held`` bytes of DATA, journaled."""
    part = dest.with_name(f"{dest.name}.{token}.part")
    part.write_bytes(DATA[:held])
    save(part, Journal(url, len(DATA), ETAG, None, runs=[(0, held)], synced=[(0, held)], pid=DEAD))
    return part


def fetched(server: FaultServer, name: str, mark: int) -> int:
    return sum(r.bytes_sent for r in server.requests[mark:] if r.method == "GET" and r.name == name)


@pytest.mark.parametrize("digest", ["right", "wrong"])
async def test_a_planted_link_named_like_a_part_is_never_written_through(
    server: FaultServer,
    shared: Path,
    victim: Path,
    digest: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.add_file("m.bin", DATA)
    dest = shared / "m.bin"
    link = shared / "m.bin.deadbeef.part"
    link.symlink_to(victim)
    journal_path(link).write_bytes(b"\x00not a journal")  # unreadable: looks abandoned
    expected = sha256(DATA) if digest == "right" else "0" * 64

    with caplog.at_level(logging.WARNING, "asyncfetch"):
        if digest == "right":
            await asyncfetch.fetch(server.url("m.bin"), dest, sha256=expected)
        else:
            with pytest.raises(IntegrityError):
                await asyncfetch.fetch(server.url("m.bin"), dest, sha256=expected)

    assert intact(victim)
    assert os.readlink(link) == str(victim)  # left as it was
    if digest == "right":
        assert not dest.is_symlink()
        assert dest.read_bytes() == DATA
    else:
        assert not dest.exists()
    assert "m.bin.deadbeef.part is a symbolic link" in caplog.text


async def test_a_fifo_named_like_a_part_is_left_alone(server: FaultServer, shared: Path) -> None:
    server.add_file("m.bin", DATA)
    fifo = make_special(shared / "m.bin.deadbeef.part", "fifo")
    journal_path(fifo).write_bytes(b"{")

    await asyncfetch.fetch(server.url("m.bin"), shared / "m.bin", sha256=sha256(DATA))

    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert (shared / "m.bin").read_bytes() == DATA


@pytest.mark.parametrize("foreign", ["part", "journal"])
async def test_another_users_crashed_part_is_left_untouched(
    server: FaultServer, shared: Path, foreign: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.add_file("m.bin", DATA, etag=ETAG)
    url = server.url("m.bin")
    dest = shared / "m.bin"
    part = crashed_part(dest, "0000aaaa", url, 200_000)  # would be resumed if it were ours
    os.chown(part if foreign == "part" else journal_path(part), NOBODY, NOBODY)
    before = {p.name: p.read_bytes() for p in (part, journal_path(part))}
    mark = len(server.requests)

    with caplog.at_level(logging.WARNING, "asyncfetch"):
        result = await asyncfetch.fetch(url, dest, sha256=sha256(DATA))

    assert result.resumed_bytes == 0
    assert fetched(server, "m.bin", mark) == len(DATA)  # a fresh part, from the start
    assert {p.name: p.read_bytes() for p in (part, journal_path(part))} == before
    assert f"belongs to another user (uid {NOBODY})" in caplog.text
    assert dest.read_bytes() == DATA


async def test_a_journal_that_is_a_link_is_not_adopted(
    server: FaultServer, shared: Path, tmp_path: Path
) -> None:
    server.add_file("m.bin", DATA, etag=ETAG)
    url = server.url("m.bin")
    dest = shared / "m.bin"
    elsewhere = crashed_part(tmp_path / "m.bin", "0000bbbb", url, 200_000)  # a good journal
    part = shared / "m.bin.0000aaaa.part"
    part.write_bytes(DATA[:200_000])
    journal_path(part).symlink_to(journal_path(elsewhere))

    result = await asyncfetch.fetch(url, dest, sha256=sha256(DATA))

    assert result.resumed_bytes == 0
    assert part.read_bytes() == DATA[:200_000]
    assert journal_path(part).is_symlink()


async def test_a_new_part_is_created_exclusively(
    server: FaultServer, shared: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add_file("m.bin", DATA)
    missing = victim.with_name("created-through-the-link")
    (shared / "m.bin.deadbeef.part").symlink_to(missing)  # dangling: O_CREAT would make it
    tokens = iter(["deadbeef"])  # the first new part name is the link's, then random ones
    fixed = SimpleNamespace(token_hex=lambda n: next(tokens, None) or secrets.token_hex(n))
    monkeypatch.setattr(_parts, "secrets", fixed)

    await asyncfetch.fetch(server.url("m.bin"), shared / "m.bin", sha256=sha256(DATA))

    assert not missing.exists()
    assert (shared / "m.bin").read_bytes() == DATA
    assert (shared / "m.bin.deadbeef.part").is_symlink()


async def test_a_lock_file_that_is_a_link_is_not_followed(
    server: FaultServer, shared: Path, victim: Path
) -> None:
    server.add_file("m.bin", DATA)
    (shared / "m.bin.lock").symlink_to(victim)

    await asyncfetch.fetch(server.url("m.bin"), shared / "m.bin", sha256=sha256(DATA))

    assert intact(victim)  # neither opened for writing nor touched
    assert (shared / "m.bin").read_bytes() == DATA
