"""The ``.part`` file: positional writes off the event loop, the resume journal, the in-order
SHA-256, and the atomic finish (size and digest match → fsync → ``os.replace``).

Partial data lives only in ``<dest>.<token>.part`` beside the target; the target name appears
only through ``os.replace`` of a complete, verified file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .._errors import DestinationError, IntegrityError
from .._expectation import Expectation
from .._models import ByteRange, RemoteInfo
from . import journal as _journal
from .extents import Extents
from .hasher import PrefixHasher, sha256_of_file
from .journal import Journal
from .nofollow import current_uid, open_existing
from .partguard import PartGuard
from .parts import (
    STALE_AFTER,
    forget_part,
    open_part,
    remove_part,
    runs_on_disk,
)
from .reserve import release, reserve
from .writecalls import pwrite_all

JOURNAL_EVERY = 1.0
JOURNAL_BYTES = 16 << 20
SYNC_EVERY = 5.0  # fdatasync, so the journal can name bytes safe from a power cut too
SYNC_BYTES = 256 << 20  # ... and so the final fsync has little left to flush
KEEPALIVE = STALE_AFTER / 4
ROOM = 64 << 10  # given back when the disk is full, so that the journal still fits
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
T = TypeVar("T")

Repair = Callable[[str], Awaitable[str | None]]
#: Called with the finished file's path and digest just before the rename (see finalize).
BeforeRename = Callable[[Path, str | None], None]


async def _settle(future: asyncio.Future[T]) -> T:
    """Await work running in a thread. If cancelled meanwhile, let the work finish first, so
    nobody closes the file under it, then raise the cancellation."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.gather(future, return_exceptions=True)
        raise


def _retrieve(future: asyncio.Future[None]) -> None:
    """Done callback of a background job whose failure only costs a little resume data."""
    if not future.cancelled():
        future.exception()


def _disk_error(
    exc: OSError, path: Path, url: str | None, *, kept: bool = True
) -> DestinationError:
    """``kept``: a part file holds what was written so far (not so when none could be made)."""
    if exc.errno in _DISK_FULL:
        message = f"no space left on the device writing {path}; free space and run again"
    elif not kept:
        why = exc.strerror or exc
        message = f"cannot make a part file for {path}: {why}; pick a directory you can write to"
    else:
        message = f"cannot write {path}: {exc.strerror or exc}"
    if kept:
        message += " (the partial download is kept)"
    return DestinationError(message, path=str(path), url=url)


class PartFile:
    """A download's side file. Create with :meth:`open`; end with :meth:`finalize` or
    :meth:`close` (keeps the part for a later resume) or :meth:`discard`."""

    def __init__(self, dest: Path, part: Path, fd: int, journal: Journal, hashing: bool) -> None:
        self.dest = dest
        self.part = part
        self._fd = fd
        self._guard = PartGuard(part, fd, journal.url)  # stops us once another download took it
        self._journal = journal
        self._extents = Extents(journal.runs)
        self.resumed_bytes = self._extents.total()
        self._hasher = PrefixHasher(fd) if hashing else None
        self._saved_at = time.monotonic()
        self._saved_bytes = self.resumed_bytes
        self._saver: asyncio.Task[None] | None = None  # a journal save waiting for its time
        self._journal_lock = threading.Lock()  # journal writes come from several threads
        self._syncing: asyncio.Future[None] | None = None  # an fdatasync in the background
        self._synced_at = time.monotonic()
        self._synced_bytes = self.resumed_bytes
        self._hurry = asyncio.Event()  # enough bytes: the waiting save goes now
        self._in_flight: asyncio.Future[None] | None = None  # a journal save being written
        self._writes: set[asyncio.Future[None]] = set()  # positional writes in flight
        # Each part file has one writer thread: concurrent pwrites to one file contend on its
        # inode lock and burn CPU (4 GiB over 16 connections: 4 threads 4.75 s and 6.6 CPU s,
        # 1 thread 3.95 s and 5.2 CPU s), while other files of a batch write in parallel.
        # Flushes and journal saves run elsewhere, so they never hold up a write.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asyncfetch-write")
        self._closing = False
        self._keepalive: asyncio.Task[None] | None = None
        self._advance_hasher()

    @classmethod
    async def open(cls, dest: Path, info: RemoteInfo, *, hashing: bool) -> PartFile:
        """Open a part file for ``dest``, resuming an abandoned one for the same remote file.

        ``dest``'s directory is the caller's to check (the engine's ``check_destination``,
        once per download, before it takes the target's lock).
        """
        loop = asyncio.get_running_loop()
        sink = await loop.run_in_executor(None, cls._open_blocking, dest, info, hashing)
        sink._keepalive = loop.create_task(sink._keep_alive())
        return sink

    @classmethod
    def _open_blocking(cls, dest: Path, info: RemoteInfo, hashing: bool) -> PartFile:
        try:
            part, fd, journal = open_part(dest, info)
        except OSError as exc:
            raise _disk_error(exc, dest, info.url, kept=False) from exc
        resumed = journal is not None
        if journal is None:
            journal = Journal.for_remote(info)
        else:
            fresh = Journal.for_remote(info)
            kept = runs_on_disk(journal.on_disk(), os.fstat(fd).st_size, info.size or 0)
            os.fdatasync(fd)  # what a killed owner left in the page cache is flushed now
            journal = dataclasses.replace(
                journal, runs=kept, synced=kept, boot=fresh.boot, pid=fresh.pid, host=fresh.host
            )
        sink = cls(dest, part, fd, journal, hashing)
        reserve(fd, info.size or 0)  # blocks for all of it up front: the writes go faster
        try:
            sink._save_journal_blocking(sync=False)
        except OSError as exc:  # the disk is full before the first byte
            sink._abandon_blocking(keep=resumed)
            raise _disk_error(exc, dest, info.url, kept=resumed) from exc
        return sink

    def _abandon_blocking(self, *, keep: bool) -> None:
        """Close a part that could not be opened for writing: kept where it holds a resumed
        download's bytes, else deleted (it is empty)."""
        if self._hasher is not None:
            self._hasher.cancel()
        os.close(self._fd)
        self._fd = -1
        self._forget()
        if not keep:
            remove_part(self.part)

    @property
    def written(self) -> int:
        """Bytes on disk (resumed ones included)."""
        return self._extents.total()

    @property
    def hash_rate(self) -> float:
        """Bytes per second the SHA-256 of this part runs at (0: not hashing, or not known
        yet): what a backlog of bytes beyond the hashed prefix costs at the end."""
        return self._hasher.rate if self._hasher is not None else 0.0

    def missing(self, size: int) -> list[ByteRange]:
        """The ranges of ``[0, size)`` not yet on disk."""
        return self._extents.missing(size)

    async def write(self, offset: int, buffers: Sequence[bytes | memoryview]) -> None:
        """Write ``buffers`` back to back at ``offset``, off the event loop.

        A write that comes once the part is closing is dropped: a later run fetches those
        bytes again.
        """
        if self._closing:
            return
        if self._guard.lost:
            raise self._guard.error()
        length = sum(len(b) for b in buffers)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._writer, pwrite_all, self._fd, buffers, offset, self._guard
        )
        self._writes.add(future)
        future.add_done_callback(self._writes.discard)
        try:
            await _settle(future)
        except DestinationError:
            raise  # the part was taken over
        except OSError as exc:
            raise _disk_error(exc, self.part, self._journal.url) from exc
        self._extents.add(offset, offset + length)
        self._advance_hasher()
        self._maybe_save_journal()

    async def restart(self) -> None:
        """Throw away everything written (a stream that cannot resume starts over)."""
        await self._drain()
        if self._hasher is not None:
            await asyncio.to_thread(self._hasher.cancel)
            self._hasher = PrefixHasher(self._fd)
        await asyncio.to_thread(self._truncate_blocking, 0)
        self._extents = Extents()
        self.resumed_bytes = 0
        self._journal.synced = []
        await asyncio.to_thread(self._save_journal_blocking, sync=False)  # names nothing now

    async def finalize(
        self,
        size: int,
        expected: Expectation,
        repair: Repair | None = None,
        before_rename: BeforeRename | None = None,
    ) -> str | None:
        """Check size and digest against what is expected, then move the part to the target
        name: the one verify-then-rename step of every download.

        Args:
            size: the file's size.
            expected: what the caller expects of the bytes (a SHA-256, a prefix, nothing).
            repair: called with the wrong digest when a full one is expected and does not
                match; it may rewrite bad ranges and return the digest after (see
                :meth:`rehash`).
            before_rename: called (in a worker thread) with the part's path and digest once
                the part is complete, checked and synced, just before it takes the target's
                name: the caller records what it knows of the file there, so that a process
                killed right after the rename leaves a file that says what it is. Where the
                target already is another user's file of the same bytes, that file stays
                and the part goes: it is called with the target's path instead.

        Returns:
            The SHA-256 as hex, or None when hashing is off.

        Raises:
            IntegrityError: size or digest differ (for a prefix, a HashPrefixMismatch); the
                part is deleted when the digest differs: its bytes are wrong.
        """
        await self._drain()
        url = self._journal.url
        if self._extents.prefix() != size or self._extents.total() != size:
            raise IntegrityError(
                f"{url}: have {self._extents.total()} bytes of {size}; run again to resume",
                url=url,
                expected=str(size),
                actual=str(self._extents.total()),
            )
        digest = await self._digest_while_flushing(size)
        if expected.digest and digest != expected.digest and repair is not None:
            digest = await repair(digest or "")  # may rewrite ranges
        await self._stop()  # no writes from here on
        if not expected.admits(digest):
            await self.discard()
            raise expected.mismatch(url, digest)
        commit = functools.partial(self._commit_blocking, digest, before_rename)
        await _settle(asyncio.get_running_loop().run_in_executor(None, commit))
        return digest

    async def rehash(self, size: int) -> str:
        """Hash the whole part file again from disk (after bad ranges were rewritten)."""
        hasher = PrefixHasher(self._fd)
        digesting = asyncio.ensure_future(asyncio.to_thread(hasher.digest, size))
        try:
            return await asyncio.shield(digesting)
        except asyncio.CancelledError:  # stop it before the file can be closed or truncated
            await asyncio.to_thread(hasher.cancel)
            await asyncio.gather(digesting, return_exceptions=True)
            raise

    async def _digest_while_flushing(self, size: int) -> str | None:
        """The digest, while the last bytes go to disk: the flush overlaps the hash's tail,
        which is still reading back the last bytes written, and the fsync before the rename
        finds little left to do."""
        if self._hasher is None:
            return None
        flushing = asyncio.get_running_loop().run_in_executor(None, os.fdatasync, self._fd)
        try:
            digest = await self._digest(size)
        except BaseException:  # a cancellation or the hash's error, not the flush's, goes on
            with contextlib.suppress(OSError):
                await _settle(flushing)
            raise
        try:
            await _settle(flushing)
        except OSError as exc:  # reported once: the fsync before the rename would miss it
            raise _disk_error(exc, self.part, self._journal.url) from exc
        return digest

    async def _digest(self, size: int) -> str | None:
        if self._hasher is None:
            return None
        return await asyncio.to_thread(self._hasher.digest, size)

    def _truncate_blocking(self, size: int) -> None:
        self._guard.check()  # the file may be another download's, even the finished target
        os.ftruncate(self._fd, size)

    def _commit_blocking(self, digest: str | None, before_rename: BeforeRename | None) -> None:
        self._truncate_blocking(self._extents.total())
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._forget()
        if digest is not None and _another_users_copy(self.dest, self._extents.total(), digest):
            remove_part(self.part)  # theirs stays: the same bytes, and not ours to replace
            if before_rename is not None:
                before_rename(self.dest, digest)
            return
        if before_rename is not None:
            before_rename(self.part, digest)
        try:
            os.replace(self.part, self.dest)
        except FileNotFoundError as exc:
            raise DestinationError(
                f"{self.part} disappeared before it could become {self.dest} (deleted, or taken "
                "over by another download after being idle too long); run again",
                path=str(self.part),
                url=self._journal.url,
            ) from exc
        _journal.remove(self.part)
        _fsync_dir(self.dest.parent)

    def _make_room_and_save(self) -> None:
        """The disk is full: give back the last ROOM bytes written, then save the journal."""
        runs = self._extents.runs()
        keep = max(0, (runs[-1][1] if runs else 0) - ROOM)
        with contextlib.suppress(OSError):
            self._truncate_blocking(keep)
            self._extents = Extents(runs_on_disk(runs, keep, keep))
            self._save_journal_blocking(sync=True)

    def _release_blocking(self) -> None:
        """Give back the blocks reserved past what was written (see :mod:`.reserve`), unless
        the part is another download's now (its writes may be extending it)."""
        with contextlib.suppress(DestinationError):
            self._guard.check()
            release(self._fd)

    def _forget(self) -> None:
        forget_part(self.part)

    async def close(self) -> None:
        """Stop, keeping the part and an up-to-date journal so a later run can resume."""
        if self._fd < 0:
            return
        await self._stop()
        if self._hasher is not None:
            await asyncio.to_thread(self._hasher.cancel)
        if self._fd >= 0:
            await _settle(asyncio.get_running_loop().run_in_executor(None, self._close_blocking))

    def _close_blocking(self) -> None:
        if self._fd < 0:
            return
        try:
            self._save_journal_blocking(sync=True)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                self._make_room_and_save()
        self._release_blocking()
        os.close(self._fd)
        self._fd = -1
        self._forget()

    async def discard(self) -> None:
        """Stop and delete the part and its journal."""
        await self._stop()
        if self._hasher is not None and self._fd >= 0:
            await asyncio.to_thread(self._hasher.cancel)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._forget()
        try:
            self._guard.check()
        except DestinationError:
            return  # what is there now is another download's
        remove_part(self.part)

    def _advance_hasher(self) -> None:
        if self._hasher is not None:
            self._hasher.advance(self._extents.prefix())

    def _maybe_save_journal(self) -> None:
        """After a write: have the journal saved within JOURNAL_EVERY seconds, or at once when
        JOURNAL_BYTES more are on disk; one save at a time.

        A kill -9 then loses at most about a second's or JOURNAL_BYTES' worth of bytes.
        """
        if self._saver is None:
            self._saver = asyncio.get_running_loop().create_task(self._save_journal_soon())
        if self._extents.total() - self._saved_bytes >= JOURNAL_BYTES:
            self._hurry.set()

    async def _save_journal_soon(self) -> None:
        try:
            delay = JOURNAL_EVERY - (time.monotonic() - self._saved_at)
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), delay)
            self._hurry.clear()
            self._saved_at, self._saved_bytes = time.monotonic(), self._extents.total()
            runs = self._extents.runs()
            self._in_flight = asyncio.ensure_future(asyncio.to_thread(self._record, runs))
            await asyncio.shield(self._in_flight)
            self._maybe_sync(runs)
        except OSError:
            pass  # a missed journal update only costs re-fetching a few bytes on resume
        finally:
            self._saver = None

    def _maybe_sync(self, runs: list[tuple[int, int]]) -> None:
        """Every SYNC_EVERY seconds or SYNC_BYTES, flush the file in the background and journal
        ``runs`` as synced; the quick journal saves go on meanwhile. Flushing as the download
        goes also leaves the final fsync (before the rename) little to do."""
        busy = self._syncing is not None and not self._syncing.done()
        written = self._extents.total()
        due = time.monotonic() - self._synced_at >= SYNC_EVERY
        if busy or not (due or written - self._synced_bytes >= SYNC_BYTES):
            return
        self._synced_at, self._synced_bytes = time.monotonic(), written
        self._syncing = asyncio.ensure_future(asyncio.to_thread(self._record_synced, runs))
        self._syncing.add_done_callback(_retrieve)

    def _record(self, runs: list[tuple[int, int]]) -> None:
        """Journal ``runs`` as written (blocking)."""
        with self._journal_lock:
            self._guard.check()
            self._journal.runs = runs
            _journal.save(self.part, self._journal)

    def _record_synced(self, runs: list[tuple[int, int]]) -> None:
        """Flush the file, then journal ``runs`` (written before the flush) as synced."""
        os.fdatasync(self._fd)
        with self._journal_lock:
            self._guard.check()
            self._journal.synced = runs
            _journal.save(self.part, self._journal)

    def _save_journal_blocking(self, *, sync: bool) -> None:
        runs = self._extents.runs()
        if sync:
            os.fdatasync(self._fd)
        with self._journal_lock:
            self._guard.check()
            self._journal.runs = runs
            if sync:
                self._journal.synced = runs
            _journal.save(self.part, self._journal)

    async def _stop(self) -> None:
        """No more writes: stop the keep-alive and let the work in flight settle."""
        self._closing = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
        await self._drain()
        self._writer.shutdown(wait=False)  # idle: its thread ends now

    async def _keep_alive(self) -> None:
        """Touch the journal now and then: a stalled download's part is not abandoned. Stop
        once another download has taken the part over (the next write fails then)."""
        while not self._guard.lost:
            await asyncio.sleep(KEEPALIVE)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._touch_blocking)

    def _touch_blocking(self) -> None:
        self._guard.check()
        os.utime(_journal.journal_path(self.part), follow_symlinks=False)

    async def _drain(self) -> None:
        """Let the writes in flight land, and settle the journal saving."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self._wait_for_journal()

    async def _wait_for_journal(self) -> None:
        """Drop a journal save still waiting for its time; let one being written finish."""
        if self._saver is not None:
            self._saver.cancel()
            await asyncio.gather(self._saver, return_exceptions=True)
        if self._in_flight is not None:
            await asyncio.gather(self._in_flight, return_exceptions=True)
        if self._syncing is not None:
            await asyncio.gather(self._syncing, return_exceptions=True)


def _another_users_copy(dest: Path, size: int, digest: str) -> bool:
    """Whether ``dest`` is another user's regular file of these very bytes (blocking).

    Such a file is left where it is rather than replaced: nobody else's file is touched, and
    in a directory two users share, each one's copy would otherwise replace the other's on
    every fetch that has no SHA-256 to vouch for the copy there (see ``_cache.records``).
    """
    try:
        fd = open_existing(dest, os.O_RDONLY)  # no link followed, no FIFO waited on
    except OSError:
        return False
    with os.fdopen(fd, "rb", buffering=0) as file:
        st = os.fstat(fd)
        if st.st_uid == current_uid() or st.st_size != size:
            return False
        return sha256_of_file(file) == digest


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
