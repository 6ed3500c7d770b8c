"""The part file: taking over abandoned parts, journaling, hashing resumed bytes, finishing."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncfetch
from asyncfetch import DestinationError, IntegrityError, RemoteInfo
from asyncfetch._expectation import NOTHING, HashPrefix, Sha256
from asyncfetch._storage import partfile as _sink
from asyncfetch._storage import writecalls as _writecalls
from asyncfetch._storage.hasher import PrefixHasher
from asyncfetch._storage.journal import Journal, journal_path, load, save
from asyncfetch._storage.partfile import PartFile
from tests.faultserver import FaultServer, make_payload
from tests.helpers import leftovers, sha256

ETAG = '"v1"'
DATA = make_payload(200_000, seed=7)


def info(etag: str = ETAG, size: int = len(DATA)) -> RemoteInfo:
    return RemoteInfo("http://h/f.bin", "http://h/f.bin", size, True, etag, None)


def abandoned(dest: Path, token: str, runs: list[tuple[int, int]], *, etag: str = ETAG) -> Path:
    """A part left by a dead process holding ``runs`` of DATA."""
    part = dest.with_name(f"{dest.name}.{token}.part")
    with part.open("wb") as file:
        for start, end in runs:
            file.seek(start)
            file.write(DATA[start:end])
    dead = 2**22 + 12345  # above the default pid_max: no such process
    save(part, Journal("http://h/f.bin", len(DATA), etag, None, runs=runs, pid=dead))
    return part


async def test_a_fresh_part_has_a_private_name_and_a_journal(tmp_path: Path) -> None:
    sink = await PartFile.open(tmp_path / "f.bin", info(), hashing=True)
    try:
        assert sink.part.name.startswith("f.bin.")
        assert sink.part.name.endswith(".part")
        assert load(sink.part) is not None
        assert sink.resumed_bytes == 0
    finally:
        await sink.discard()
    assert leftovers(tmp_path) == []


async def test_resumed_bytes_are_hashed_from_disk(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    abandoned(dest, "0000aaaa", [(0, 120_000)])

    sink = await PartFile.open(dest, info(), hashing=True)
    assert sink.resumed_bytes == 120_000
    assert sink.missing(len(DATA))[0].start == 120_000
    await sink.write(120_000, [DATA[120_000:]])
    digest = await sink.finalize(len(DATA), Sha256(sha256(DATA)))

    assert digest == sha256(DATA)
    assert dest.read_bytes() == DATA
    assert leftovers(tmp_path) == ["f.bin"]


@pytest.mark.parametrize("kind", ["sha256", "prefix"])
async def test_finalize_checks_the_expectation_before_the_one_rename(
    tmp_path: Path, kind: str
) -> None:
    digest = sha256(DATA)
    wrong = "0" * 64 if digest[0] != "0" else "f" * 64
    right, other = (
        (Sha256(digest), Sha256(wrong))
        if kind == "sha256"
        else (HashPrefix(digest[:8]), HashPrefix(wrong[:8]))
    )
    error = IntegrityError if kind == "sha256" else asyncfetch.HashPrefixMismatch
    for expected, dest in ((other, tmp_path / "bad.bin"), (right, tmp_path / "good.bin")):
        sink = await PartFile.open(dest, info(), hashing=True)
        await sink.write(0, [DATA])
        if expected is other:
            with pytest.raises(error, match=wrong[:8]) as caught:
                await sink.finalize(len(DATA), expected)
            assert type(caught.value) is error
            assert (caught.value.expected, caught.value.actual) in {
                (wrong, digest), (wrong[:8], digest)
            }  # fmt: skip
        else:
            assert await sink.finalize(len(DATA), expected) == digest
    assert leftovers(tmp_path) == ["good.bin"]  # the bad part is gone, the good one renamed
    assert (tmp_path / "good.bin").read_bytes() == DATA


async def test_the_fullest_abandoned_part_is_kept_and_the_others_deleted(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    abandoned(dest, "0000aaaa", [(0, 10_000)])
    abandoned(dest, "0000bbbb", [(0, 50_000), (90_000, 100_000)])
    abandoned(dest, "0000cccc", [(0, 90_000)], etag='"old"')  # another version: useless

    sink = await PartFile.open(dest, info(), hashing=False)
    try:
        assert sink.resumed_bytes == 60_000
        assert [p for p in leftovers(tmp_path) if p.endswith(".part")] == [sink.part.name]
    finally:
        await sink.close()


async def test_a_changed_file_is_not_spliced(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    abandoned(dest, "0000aaaa", [(0, 150_000)])
    sink = await PartFile.open(dest, info(etag='"v2"'), hashing=True)
    try:
        assert sink.resumed_bytes == 0
        assert os.fstat(sink._fd).st_size == 0  # the old bytes are gone
    finally:
        await sink.discard()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing-and-old"])
async def test_a_damaged_journal_means_starting_over(tmp_path: Path, damage: str) -> None:
    dest = tmp_path / "f.bin"
    part = abandoned(dest, "0000aaaa", [(0, 150_000)])
    text = journal_path(part).read_text()
    if damage == "garbage":
        journal_path(part).write_bytes(b"\x00" * 40)
    elif damage == "truncated":
        journal_path(part).write_text(text[: len(text) // 2])
    else:
        journal_path(part).unlink()
        os.utime(part, (time.time() - 1000, time.time() - 1000))

    sink = await PartFile.open(dest, info(), hashing=True)
    await sink.write(0, [DATA])
    assert await sink.finalize(len(DATA), Sha256(sha256(DATA))) == sha256(DATA)
    assert leftovers(tmp_path) == ["f.bin"]  # the old part was taken over, not left behind


@pytest.mark.parametrize("other", ["f.bin.v2", "f.bin.unverified", "f.bin.0000dddd"])
async def test_parts_of_other_files_with_a_longer_name_are_left_alone(
    tmp_path: Path, other: str
) -> None:
    dest = tmp_path / "f.bin"
    theirs = abandoned(tmp_path / other, "0000aaaa", [(0, 150_000)])  # f.bin.v2.0000aaaa.part
    ours = abandoned(dest, "0000bbbb", [(0, 20_000)])

    sink = await PartFile.open(dest, info(), hashing=False)
    try:
        assert sink.resumed_bytes == 20_000  # its own abandoned part, not the fuller other one
        assert not ours.exists()
        assert theirs.read_bytes() == DATA[:150_000]
        assert journal_path(theirs).exists()
    finally:
        await sink.discard()

    sink = await PartFile.open(tmp_path / other, info(), hashing=False)
    try:
        assert sink.resumed_bytes == 150_000  # still there for its own download to resume
    finally:
        await sink.discard()
    assert leftovers(tmp_path) == []


async def test_a_young_part_without_journal_belongs_to_a_starting_download(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "f.bin"
    young = dest.with_name("f.bin.0000aaaa.part")
    young.write_bytes(b"x" * 10)
    sink = await PartFile.open(dest, info(), hashing=False)
    try:
        assert sink.part != young
        assert young.read_bytes() == b"x" * 10
    finally:
        await sink.discard()


async def test_a_part_of_a_live_process_is_left_alone(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    part = abandoned(dest, "0000aaaa", [(0, 150_000)])
    save(part, Journal("http://h/f.bin", len(DATA), ETAG, None, [(0, 150_000)], pid=os.getppid()))
    sink = await PartFile.open(dest, info(), hashing=False)
    try:
        assert sink.part != part
        assert sink.resumed_bytes == 0
        assert part.stat().st_size == 150_000
    finally:
        await sink.discard()


async def test_two_downloads_in_one_process_never_share_a_part(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    first = await PartFile.open(dest, info(), hashing=False)
    await first.write(0, [DATA[:1000]])
    first._save_journal_blocking(sync=True)
    second = await PartFile.open(dest, info(), hashing=False)  # same pid: not "abandoned"
    try:
        assert second.part != first.part
        assert second.resumed_bytes == 0
    finally:
        await first.discard()
        await second.discard()


async def test_journal_runs_past_the_end_of_the_part_are_dropped(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    part = abandoned(dest, "0000aaaa", [(0, 100_000)])
    os.truncate(part, 60_000)  # the journal claims more than the disk holds
    sink = await PartFile.open(dest, info(), hashing=True)
    assert sink.resumed_bytes == 60_000
    await sink.write(60_000, [DATA[60_000:]])
    assert await sink.finalize(len(DATA), NOTHING) == sha256(DATA)


async def test_journal_is_saved_after_enough_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sink, "JOURNAL_EVERY", 3600.0)
    monkeypatch.setattr(_sink, "JOURNAL_BYTES", 50_000)
    sink = await PartFile.open(tmp_path / "f.bin", info(), hashing=False)
    try:
        await sink.write(0, [DATA[:40_000]])
        await sink.write(40_000, [DATA[40_000:60_000]])
        await until_journaled(sink.part, [(0, 60_000)])
    finally:
        await sink.discard()


async def test_journal_is_saved_a_moment_after_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sink, "JOURNAL_EVERY", 0.2)
    sink = await PartFile.open(tmp_path / "f.bin", info(), hashing=False)
    try:
        await sink.write(0, [DATA[:1000]])  # one small write, then silence
        assert load(sink.part).runs == []  # type: ignore[union-attr]
        await until_journaled(sink.part, [(0, 1000)])
    finally:
        await sink.discard()


async def until_journaled(part: Path, runs: list[tuple[int, int]]) -> None:
    for _ in range(500):
        journal = load(part)
        if journal is not None and journal.runs == runs:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the journal never showed {runs}: {load(part)}")


async def test_a_cancelled_write_lands_before_close(tmp_path: Path) -> None:
    sink = await PartFile.open(tmp_path / "f.bin", info(), hashing=True)
    big = [DATA] * 200  # 40 MB: still being written when the cancel comes
    writing = asyncio.create_task(sink.write(0, big))
    await asyncio.sleep(0.001)
    writing.cancel()
    await sink.close()  # must not close the descriptor under the write
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert sink.part.exists()


async def test_close_keeps_the_part_with_an_up_to_date_journal(tmp_path: Path) -> None:
    sink = await PartFile.open(tmp_path / "f.bin", info(), hashing=True)
    await sink.write(0, [DATA[:70_000]])
    await sink.close()
    assert load(sink.part).runs == [(0, 70_000)]  # type: ignore[union-attr]
    assert sink.part.stat().st_size == 70_000


async def test_many_concurrent_opens_take_distinct_parts(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    for n in range(4):
        abandoned(dest, f"0000000{n}", [(0, 1000 * (n + 1))])
    sinks = await asyncio.gather(*(PartFile.open(dest, info(), hashing=False) for _ in range(6)))
    try:
        assert len({s.part for s in sinks}) == 6
        assert sorted(s.resumed_bytes for s in sinks)[-1] == 4000
    finally:
        for sink in sinks:
            await sink.discard()
    assert leftovers(tmp_path) == []


async def test_an_idle_download_keeps_its_part_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sink, "KEEPALIVE", 0.05)
    sink = await PartFile.open(tmp_path / "f.bin", info(), hashing=False)
    try:
        past = time.time() - 1000
        os.utime(journal_path(sink.part), (past, past))  # no write for ages (a long stall)
        await asyncio.sleep(0.3)
        assert time.time() - journal_path(sink.part).stat().st_mtime < 60
    finally:
        await sink.discard()


async def stall_and_take_over(dest: Path) -> tuple[PartFile, PartFile]:
    """A download that wrote part of DATA, then stalled so long that a second one took its
    part over (as another process does with a stopped one)."""
    first = await PartFile.open(dest, info(), hashing=True)
    await first.write(0, [DATA[:50_000]])
    first._save_journal_blocking(sync=True)
    _sink.forget_part(first.part)  # now it looks abandoned (same pid: no live owner)
    second = await PartFile.open(dest, info(), hashing=True)
    assert second.resumed_bytes == 50_000  # it took the first one's part
    return first, second


async def test_a_stalled_owner_never_truncates_what_a_takeover_finished(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    first, second = await stall_and_take_over(dest)
    await second.write(50_000, [DATA[50_000:]])
    assert await second.finalize(len(DATA), Sha256(sha256(DATA))) == sha256(DATA)

    with pytest.raises(DestinationError, match="took over"):
        await first.restart()  # a stream that cannot resume starts over: not in dest
    with pytest.raises(DestinationError, match="took over"):
        await first.write(0, [b"x" * 1000])
    with pytest.raises(DestinationError, match="took over"):
        await first.finalize(50_000, NOTHING)  # as if the file were that long
    await first.close()
    assert dest.read_bytes() == DATA
    assert leftovers(tmp_path) == ["f.bin"]  # no journal of the old owner left behind


async def test_a_stalled_owner_stops_writing_into_a_part_taken_over(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    first, second = await stall_and_take_over(dest)
    first._guard._checked_at -= 3600  # the first one was stopped for an hour
    with pytest.raises(DestinationError, match="took over"):
        await first.write(0, [b"x" * 1000])
    await first.discard()  # deletes nothing of the second one's
    await second.write(50_000, [DATA[50_000:]])
    assert await second.finalize(len(DATA), Sha256(sha256(DATA))) == sha256(DATA)
    assert leftovers(tmp_path) == ["f.bin"]


async def test_a_stalled_owner_journals_nothing_once_taken_over(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    first, second = await stall_and_take_over(dest)
    with pytest.raises(DestinationError, match="took over"):
        first._save_journal_blocking(sync=False)
    assert not journal_path(first.part).exists()
    await first.close()
    await second.close()
    assert [p for p in leftovers(tmp_path) if p.endswith(".part")] == [second.part.name]


@pytest.mark.parametrize("flushed", [False, True])
async def test_after_a_reboot_only_flushed_bytes_are_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flushed: bool
) -> None:
    monkeypatch.setattr(_sink, "JOURNAL_EVERY", 0.0)
    monkeypatch.setattr(_sink, "SYNC_EVERY", 0.0 if flushed else 3600.0)
    dest = tmp_path / "f.bin"
    sink = await PartFile.open(dest, info(), hashing=False)
    await sink.write(0, [DATA[:80_000]])
    await until_journaled(sink.part, [(0, 80_000)])
    if flushed:
        for _ in range(500):
            if load(sink.part).synced == [(0, 80_000)]:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.01)
    await sink._stop()  # the process dies: nothing more reaches the journal
    crashed = load(sink.part)
    assert crashed is not None
    sink._fd, fd = -1, sink._fd
    os.close(fd)
    _sink.forget_part(sink.part)
    save(sink.part, dataclasses.replace(crashed, boot="the-boot-before", pid=2**22 + 1))

    resumed = await PartFile.open(dest, info(), hashing=False)
    try:
        assert resumed.resumed_bytes == (80_000 if flushed else 0)
    finally:
        await resumed.discard()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_can_download_after_its_parent_did(
    server: FaultServer, tmp_path: Path
) -> None:
    # none of the parent's threads exist in a forked child: nothing cached from the parent's
    # download may be needed for the child's
    data = make_payload(3 << 20)
    url = server.add_file("forked.bin", data)
    asyncfetch.download(url, tmp_path / "parent.bin")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: exit 0 only with the file downloaded
        code = 1
        try:
            asyncfetch.download(url, tmp_path / "child.bin")
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's download hung")
        time.sleep(0.05)
    assert (tmp_path / "child.bin").read_bytes() == data


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=300), max_size=12),
    size=st.integers(min_value=1, max_value=128),
)
def test_writes_are_regrouped_into_calls_of_the_piece_size(lengths: list[int], size: int) -> None:
    buffers = [bytes([i % 251]) * n for i, n in enumerate(lengths)]
    calls = list(_writecalls._calls(buffers, size))
    totals = [sum(len(view) for view in call) for call in calls]
    assert b"".join(bytes(view) for call in calls for view in call) == b"".join(buffers)
    assert all(total == size for total in totals[:-1])
    assert all(0 < total <= size for total in totals)


@given(lengths=st.lists(st.integers(min_value=1, max_value=50), max_size=6), data=st.data())
def test_a_short_write_leaves_exactly_the_unwritten_bytes(lengths: list[int], data: Any) -> None:
    views = [memoryview(bytes([i]) * n) for i, n in enumerate(lengths)]
    whole = b"".join(bytes(v) for v in views)
    count = data.draw(st.integers(min_value=0, max_value=len(whole)))
    rest = _writecalls._drop_front(views, count)
    assert b"".join(bytes(v) for v in rest) == whole[count:]
    assert all(len(v) for v in rest)


async def test_mixed_buffers_land_byte_for_byte_across_write_calls(tmp_path: Path) -> None:
    big = DATA[: 3 * _writecalls.WRITE_PIECE // 2]  # cut across two calls
    small = [
        memoryview(bytearray(DATA[i : i + 1000])) for i in range(len(big), len(big) + 5000, 1000)
    ]
    sink = await PartFile.open(tmp_path / "f.bin", info(), hashing=False)
    try:
        await sink.write(0, [big, *small])
        await sink.write(len(big) + 5000, [DATA[len(big) + 5000 :]])
        assert sink.part.read_bytes() == DATA
    finally:
        await sink.discard()


async def test_a_part_file_that_cannot_be_made_claims_no_partial_download() -> None:
    """procfs refuses to create files (ENOENT): nothing was written, so nothing is kept."""
    if not sys.platform.startswith("linux"):
        pytest.skip("needs Linux's /proc")
    with pytest.raises(DestinationError) as refused:
        await PartFile.open(Path("/proc/asyncfetch-test.bin"), info(), hashing=True)
    message = str(refused.value)
    assert message.startswith("cannot make a part file for /proc/asyncfetch-test.bin: ")
    assert "kept" not in message
    assert "directory you can write to" in message


async def test_a_finalize_cancelled_while_hashing_stays_cancelled_when_the_flush_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the last hash, while the flush beside it fails: the cancellation goes on
    (the caller keeps the part for a resume), not a DestinationError in its place."""
    hashing, go_on = threading.Event(), threading.Event()
    digest, fdatasync = PrefixHasher.digest, os.fdatasync

    def slow_digest(self: PrefixHasher, size: int) -> str:
        hashing.set()
        go_on.wait(10)
        return digest(self, size)

    sink = await PartFile.open(tmp_path / "f.bin", info(), hashing=True)
    await sink.write(0, [DATA])
    monkeypatch.setattr(PrefixHasher, "digest", slow_digest)
    monkeypatch.setattr(os, "fdatasync", _failing_flush)
    finishing = asyncio.create_task(sink.finalize(len(DATA), Sha256(sha256(DATA))))
    for _ in range(1000):
        if hashing.is_set():
            break
        await asyncio.sleep(0.01)
    finishing.cancel()
    go_on.set()
    try:
        with pytest.raises(asyncio.CancelledError):
            await finishing
    finally:
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        await sink.close()
    assert sink.part.exists()  # kept for the rerun


async def test_a_final_flush_that_fails_fails_the_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush that runs beside the last hash is not fire-and-forget: its error is the
    download's (naming the part), and the target never appears."""
    fdatasync = os.fdatasync

    sink = await PartFile.open(tmp_path / "f.bin", info(), hashing=True)
    await sink.write(0, [DATA])
    monkeypatch.setattr(os, "fdatasync", _failing_flush)
    try:
        with pytest.raises(DestinationError) as failed:
            await sink.finalize(len(DATA), Sha256(sha256(DATA)))
    finally:
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        await sink.close()
    assert str(sink.part) in str(failed.value)
    assert not (tmp_path / "f.bin").exists()


def _failing_flush(fd: int) -> None:
    """os.fdatasync on a disk that reports an I/O error."""
    raise OSError(errno.EIO, os.strerror(errno.EIO))
