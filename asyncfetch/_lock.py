"""One download per target across processes and threads: a file lock beside the target.

The lock is ``<target>.lock``, held with filelock (``flock``, so a process killed while holding
it releases it at once). It only saves work: correctness rests on per-process part names and
the atomic rename, so where locks silently do nothing (some NFS, Lustre) downloads still end
well, only not shared.

A holder touches the lock file every few seconds. A waiter that finds it untouched for
``stale_after`` seconds (a stopped or hung holder) stops waiting and goes ahead unlocked.

The holder deletes the lock file before releasing it, so none pile up beside the files. A
waiter that opened the old file just before may then lock a deleted file while a newcomer
locks a new one; filelock (4.x) notices and tries again, and at worst the two download the
same file once more, which the atomic rename keeps correct.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import filelock

log = logging.getLogger("asyncfetch")

LOCK_SUFFIX = ".lock"
POLL_FIRST = 0.02
POLL_MAX = 0.5
HEARTBEAT = 5.0
LOCK_STALE_AFTER = 60.0


def lock_path(dest: Path) -> Path:
    """The lock file of ``dest``."""
    return dest.with_name(dest.name + LOCK_SUFFIX)


def _new_lock(dest: Path) -> filelock.BaseFileLock:
    return filelock.FileLock(str(lock_path(dest)), thread_local=False)


def _release(lock: filelock.BaseFileLock, path: Path) -> None:
    """Delete the lock file while still holding it, then release it (blocking)."""
    try:
        with contextlib.suppress(OSError):
            path.unlink()
    finally:
        lock.release()


def _attempt(lock: filelock.BaseFileLock) -> bool:
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False
    return True


class TargetLock:
    """Hold the lock of ``dest`` for a download: ``async with TargetLock(dest): ...``.

    Waiting polls without blocking the event loop and is cancellable. It ends when the lock
    is free, when the holder shows no sign of life for ``stale_after`` seconds, or when no lock
    can be made at all (a read-only directory): then the block runs unlocked.
    """

    def __init__(self, dest: Path, *, stale_after: float | None = None) -> None:
        self.dest = dest
        self.stale_after = LOCK_STALE_AFTER if stale_after is None else stale_after
        self.held = False
        self.waited = False
        self._lock = _new_lock(dest)
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TargetLock:
        delay = POLL_FIRST
        while not await self._try_acquire():
            if not self.waited:
                log.info("waiting for another download of %s to finish", self.dest)
                self.waited = True
            if self._holder_stale():
                log.warning(
                    "the download holding %s shows no progress for %.0f s; going ahead without "
                    "the lock (the atomic rename keeps the result correct)",
                    lock_path(self.dest), self.stale_after,
                )  # fmt: skip
                return self
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self.held:
            await asyncio.shield(asyncio.to_thread(_release, self._lock, lock_path(self.dest)))
            self.held = False

    async def _try_acquire(self) -> bool:
        """One non-blocking attempt, in a thread; True once held (or when locking is impossible)."""
        future = asyncio.get_running_loop().run_in_executor(None, _attempt, self._lock)
        try:
            got = await asyncio.shield(future)
        except asyncio.CancelledError:
            if await future:  # the attempt finished in its thread: do not leak the lock
                self._lock.release()
            raise
        except OSError as exc:
            log.debug("cannot lock %s (%s); going ahead unlocked", lock_path(self.dest), exc)
            return True
        self.held = got
        return got

    def _holder_stale(self) -> bool:
        try:
            touched = lock_path(self.dest).stat().st_mtime
        except OSError:
            return False
        return time.time() - touched > self.stale_after

    async def _beat(self) -> None:
        path = lock_path(self.dest)
        while True:
            await asyncio.sleep(HEARTBEAT)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.utime, path)


@contextlib.contextmanager
def lock_if_free(dest: Path) -> Iterator[bool]:
    """Blocking: hold ``dest``'s lock for the block if nobody holds it; yields whether held.

    Where no lock can be made (a read-only directory) it yields True: nobody downloads there.
    """
    lock = _new_lock(dest)
    try:
        got = _attempt(lock)
    except OSError:
        yield True
        return
    try:
        yield got
    finally:
        if got:
            _release(lock, lock_path(dest))
