"""The resume journal: round trips, damaged files, and when old bytes may be reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncfetch import RemoteInfo
from asyncfetch._storage.journal import Journal, boot_id, journal_path, load, remove, save

ETAG = '"abc"'
DATE = "Mon, 01 Jan 2024 00:00:00 GMT"


def info(
    size: int | None = 100, etag: str | None = ETAG, modified: str | None = DATE
) -> RemoteInfo:
    return RemoteInfo("http://h/f", "http://h/f", size, True, etag, modified)


def test_round_trip(tmp_path: Path) -> None:
    part = tmp_path / "f.0123abcd.part"
    journal = Journal("http://h/f", 100, ETAG, DATE, runs=[(0, 10), (20, 30)])
    save(part, journal)
    assert load(part) == journal
    assert journal_path(part).name == "f.0123abcd.part.json"
    remove(part)
    assert load(part) is None


@given(st.lists(st.tuples(st.integers(0, 1 << 40), st.integers(1, 1 << 20)), max_size=20))
def test_any_valid_runs_survive_a_round_trip(
    tmp_path_factory: pytest.TempPathFactory, spans: list[tuple[int, int]]
) -> None:
    part = tmp_path_factory.mktemp("j") / "f.part"
    runs = [(start, start + length) for start, length in spans]
    save(part, Journal("u", 1 << 41, None, DATE, runs=runs))
    loaded = load(part)
    assert loaded is not None
    assert loaded.runs == runs


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty (a crash while writing the first one)
        '{"url": "u", "size": 10, "etag": null, "last_modified": null, "ru',  # truncated
        "\x00\x00\x00\x00",  # zero-filled after a power cut
        "[1, 2, 3]",
        '{"version": 99, "url": "u", "size": 1, "etag": null, "last_modified": null, "runs": []}',
        '{"version": 1, "url": "u", "size": 10, "etag": null, "last_modified": null, '
        '"runs": [[5, 2]]}',  # a run that ends before it starts
        '{"version": 1, "url": "u", "size": 10, "etag": null, "last_modified": null, '
        '"runs": [["a", "b"]]}',
        '{"version": 1, "url": "u", "size": 10, "etag": null, "last_modified": null, '
        '"runs": [], "extra": 1}',
    ],
)
def test_a_damaged_journal_reads_as_none(tmp_path: Path, text: str) -> None:
    part = tmp_path / "f.part"
    journal_path(part).write_text(text, encoding="utf-8")
    assert load(part) is None


def test_save_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    for n in range(3):
        save(part, Journal("u", 10, None, DATE, runs=[(0, n + 1)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.part.json"]
    assert json.loads(journal_path(part).read_text())["runs"] == [[0, 3]]


@pytest.mark.parametrize(
    ("remote", "reusable"),
    [
        (info(), True),
        (info(size=101), False),  # the file grew
        (info(etag='"new"'), False),  # changed, same size
        (info(modified="Tue, 02 Jan 2024 00:00:00 GMT"), False),
        (info(etag=None), True),  # Last-Modified still agrees
        (info(etag=None, modified=None), False),  # nothing proves it is unchanged
        (info(size=None), False),
    ],
)
def test_matches_only_the_same_remote_file(remote: RemoteInfo, reusable: bool) -> None:
    journal = Journal("http://h/f", 100, ETAG, DATE)
    assert journal.matches(remote) is reusable


def test_owner_alive() -> None:
    assert Journal("u", 1, None, None, pid=os.getppid()).owner_alive()
    assert not Journal("u", 1, None, None).owner_alive()  # this process: an earlier run's part
    assert Journal("u", 1, None, None, host="elsewhere", pid=1).owner_alive()  # cannot tell
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert not Journal("u", 1, None, None, pid=int(child.stdout)).owner_alive()


def test_a_reboot_trusts_only_the_synced_runs() -> None:
    written, synced = [(0, 100), (200, 300)], [(0, 50)]
    same = Journal("u", 1000, ETAG, DATE, runs=written, synced=synced, boot=boot_id())
    other = Journal("u", 1000, ETAG, DATE, runs=written, synced=synced, boot="another-boot")
    unknown = Journal("u", 1000, ETAG, DATE, runs=written, synced=synced, boot=None)
    if boot_id() is not None:
        assert same.on_disk() == written  # a kill -9: the page cache kept every written byte
    assert other.on_disk() == synced  # a power cut: only flushed bytes are there for sure
    assert unknown.on_disk() == synced
