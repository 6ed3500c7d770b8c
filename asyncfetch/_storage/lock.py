"""One download per target across processes and threads: a file lock beside the target.

The lock is ``<target>.lock``, held with filelock (``flock``, so a process killed while holding
it releases it at once). It only saves work: correctness rests on per-process part names and
the atomic rename, so where locks silently do nothing (some NFS, Lustre) downloads still end
well, only not shared.

A holder touches the lock file as soon as it takes it and every few seconds after. A waiter
that watches it stay untouched for ``stale_after`` seconds (a stopped or hung holder) stops
waiting and goes ahead unlocked. It judges only what it saw change while it waited, never the
file's age alone: a lock file left by a process killed long ago looks old until its new
holder's first touch, so its age says nothing about the holder now.

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

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: lock files are never judged free there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("asyncfetch")

LOCK_SUFFIX = ".lock"
POLL_FIRST = 0.02
POLL_MAX = 0.5
HEARTBEAT = 5.0
LOCK_STALE_AFTER = 60.0
NO_LOCK_FILE_AFTER = 2.0  # absent this long while every attempt fails: it cannot be made
_ABSENT = (-1, -1)  # what a waiter sees of a lock file that is not there


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


def _attempt(lock: filelock.BaseFileLock, *, touch: bool = True) -> bool:
    """One non-blocking try. With ``touch``, a lock just taken is marked fresh before
    anything else runs: an old file (left by a kill -9) keeps its mtime when reopened."""
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False
    if touch:
        with contextlib.suppress(OSError):
            os.utime(lock.lock_file, follow_symlinks=False)
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
        self._seen: tuple[int, int] | None = None  # the lock file's (inode, mtime) as last seen
        self._seen_since = 0.0  # monotonic time it was first seen so

    async def __aenter__(self) -> TargetLock:
        delay = POLL_FIRST
        while not await self._try_acquire():
            if not self.waited:
                log.info("waiting for another download of %s to finish", self.dest)
                self.waited = True
            if self._holder_stale():
                self._warn_going_ahead()
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

    def _warn_going_ahead(self) -> None:
        if self._seen == _ABSENT:
            log.warning(
                "cannot make the lock file %s; going ahead without the lock", lock_path(self.dest)
            )
            return
        log.warning(
            "the download holding %s shows no progress for %.0f s; going ahead without "
            "the lock (the atomic rename keeps the result correct)",
            lock_path(self.dest), self.stale_after,
        )  # fmt: skip

    def _holder_stale(self) -> bool:
        """Whether the lock file stayed untouched for ``stale_after`` seconds of this wait.

        The file's own mtime is only compared with itself: a holder's first touch, its
        heartbeat, or a new file (another inode) all count as signs of life. Its age alone
        proves nothing (a file left by a kill -9 stays old until the new holder touches it,
        and the clock of a network filesystem's server may differ from ours).
        """
        try:
            st = lock_path(self.dest).stat()
        except OSError:
            # Released and deleted, so the next attempt takes it; or, while attempts keep
            # failing, never made (a directory such as /proc refuses to create it with ENOENT,
            # which filelock takes for a lock held): that, too, must end.
            seen = _ABSENT
        else:
            seen = (st.st_ino, st.st_mtime_ns)
        now = time.monotonic()
        if seen != self._seen:
            self._seen, self._seen_since = seen, now
            return False
        limit = min(self.stale_after, NO_LOCK_FILE_AFTER) if seen == _ABSENT else self.stale_after
        return now - self._seen_since > limit

    async def _beat(self) -> None:
        path = lock_path(self.dest)
        while True:
            await asyncio.sleep(HEARTBEAT)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.utime, path, follow_symlinks=False)


@contextlib.contextmanager
def lock_if_free(dest: Path) -> Iterator[bool]:
    """Blocking: hold ``dest``'s lock for the block if nobody holds it; yields whether held.

    Where no lock can be made (a read-only directory) it yields True: nobody downloads there.
    A lock file made for the block is deleted after it; the one that was there before (a
    leftover of a kill -9) is left as it was, untouched: ``cache prune --dry-run`` must not
    delete it, and :func:`remove_if_free` does when its turn comes.
    """
    path = lock_path(dest)
    before = _inode(path)
    lock = _new_lock(dest)
    try:
        got = _attempt(lock, touch=False)  # held for a moment: no waiter can misjudge that
    except OSError:
        yield True
        return
    try:
        yield got
    finally:
        if got and (before is None or _inode(path) != before):
            _release(lock, path)
        elif got:
            lock.release()


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _flock_nonblocking(fd: int) -> bool:
    """Whether ``fd``'s file could be flock-ed (then it is, until ``fd`` is closed): False
    when a process holds it, and where flock cannot tell (no fcntl, a filesystem without it)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _open_existing(lock_file: Path) -> int:
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    return os.open(lock_file, flags | getattr(os, "O_NONBLOCK", 0))


def lock_file_free(lock_file: Path) -> bool:
    """Whether no process holds ``lock_file`` (a ``.lock`` or torchrun's ``.hub.lock``) now.

    It never creates, writes or deletes the file. False where it cannot tell (the file is
    gone or unreadable, or flock does not work there): a lock that may be held counts as held.
    """
    try:
        fd = _open_existing(lock_file)
    except OSError:
        return False
    try:
        return _flock_nonblocking(fd)
    finally:
        os.close(fd)  # releases the flock, if taken


def remove_if_free(lock_file: Path, *, dry_run: bool = False) -> bool:
    """Delete ``lock_file`` unless a process holds it; True if it is (or would be) gone.

    It is deleted while flock-ed, as a holder deletes its own: a waiter that opened it just
    before then locks a deleted file, and filelock notices and tries again.
    """
    try:
        fd = _open_existing(lock_file)
    except FileNotFoundError:
        return True  # gone already (another prune, or its holder released it meanwhile)
    except OSError:
        return False
    try:
        if not _flock_nonblocking(fd):
            return False
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), lock_file.lstat()):
                    lock_file.unlink()
        return True
    finally:
        os.close(fd)
