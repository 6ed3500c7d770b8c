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
import glob
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import _journal
from ._errors import DestinationError, IntegrityError
from ._hasher import PrefixHasher
from ._journal import Journal
from ._models import ByteRange, RemoteInfo
from ._planner import Extents

PART_SUFFIX = ".part"
JOURNAL_EVERY = 1.0
STALE_AFTER = 120.0
IO_THREADS = 4

Repair = Callable[[str], Awaitable[str | None]]


@functools.cache
def _io_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="asyncfetch-io")


def part_glob(dest: Path) -> str:
    """A glob pattern matching every part file of ``dest``."""
    return str(dest.with_name(glob.escape(dest.name) + ".*" + PART_SUFFIX))


def check_destination(dest: Path, url: str | None = None) -> None:
    """Raise DestinationError unless ``dest`` can be created (its directory exists, writable)."""
    parent = dest.parent
    if dest.is_dir():
        raise DestinationError(
            f"{dest} is a directory; give a file path (or --dir for a directory)",
            path=str(dest),
            url=url,
        )
    if not parent.is_dir():
        raise DestinationError(
            f"directory {parent} does not exist; create it first", path=str(parent), url=url
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DestinationError(
            f"directory {parent} is not writable; pick another output path",
            path=str(parent),
            url=url,
        )


def _disk_error(exc: OSError, path: Path, url: str | None) -> DestinationError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        message = f"no space left on the device writing {path}; free space and run again"
    else:
        message = f"cannot write {path}: {exc.strerror or exc}"
    return DestinationError(message + " (the partial download is kept)", path=str(path), url=url)


def _pwrite_all(fd: int, buffers: Sequence[bytes], offset: int) -> None:
    """os.pwritev, repeated until every byte is written."""
    views = [memoryview(b) for b in buffers]
    while views:
        written = os.pwritev(fd, views[:1024], offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _claim_part(dest: Path, info: RemoteInfo) -> tuple[Path, Journal | None]:
    """A fresh part name for this process, taking over an abandoned part of ``dest`` if any.

    The rename decides who takes over a part, so two processes never share one, even where
    file locks silently do nothing.
    """
    mine = dest.with_name(f"{dest.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
    for candidate in sorted(glob.glob(part_glob(dest))):
        old = Path(candidate)
        journal = _journal.load(old)
        if journal is not None and _still_in_use(old, journal):
            continue
        try:
            os.rename(old, mine)
        except FileNotFoundError:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.rename(_journal.journal_path(old), _journal.journal_path(mine))
        usable = journal is not None and journal.matches(info) and journal.url == info.url
        return mine, journal if usable else None
    return mine, None


def _still_in_use(part: Path, journal: Journal) -> bool:
    try:
        age = time.time() - _journal.journal_path(part).stat().st_mtime
    except FileNotFoundError:
        return False
    return journal.owner_alive() and age < STALE_AFTER


class PartFile:
    """A download's side file. Create with :meth:`open`; end with :meth:`finalize` or
    :meth:`close` (keeps the part for a later resume) or :meth:`discard`."""

    def __init__(self, dest: Path, part: Path, fd: int, journal: Journal, hashing: bool) -> None:
        self.dest = dest
        self.part = part
        self._fd = fd
        self._journal = journal
        self._extents = Extents(journal.runs)
        self.resumed_bytes = self._extents.total()
        self._hasher = PrefixHasher(fd) if hashing else None
        self._saved_at = time.monotonic()
        self._saving: asyncio.Task[None] | None = None
        self._advance_hasher()

    @classmethod
    async def open(cls, dest: Path, info: RemoteInfo, *, hashing: bool) -> PartFile:
        """Open a part file for ``dest``, resuming an abandoned one for the same remote file."""
        return await asyncio.get_running_loop().run_in_executor(
            _io_pool(), cls._open_blocking, dest, info, hashing
        )

    @classmethod
    def _open_blocking(cls, dest: Path, info: RemoteInfo, hashing: bool) -> PartFile:
        check_destination(dest, info.url)
        try:
            part, journal = _claim_part(dest, info)
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _disk_error(exc, dest, info.url) from exc
        if journal is None:
            os.ftruncate(fd, 0)
            journal = Journal.for_remote(info)
        else:
            fresh = Journal.for_remote(info)
            kept = [(s, e) for s, e in journal.runs if e <= (info.size or 0)]
            journal = dataclasses.replace(journal, runs=kept, pid=fresh.pid, host=fresh.host)
        sink = cls(dest, part, fd, journal, hashing)
        sink._save_journal_blocking(sync=False)
        return sink

    @property
    def written(self) -> int:
        """Bytes on disk (resumed ones included)."""
        return self._extents.total()

    def missing(self, size: int) -> list[ByteRange]:
        """The ranges of ``[0, size)`` not yet on disk."""
        return self._extents.missing(size)

    async def write(self, offset: int, buffers: Sequence[bytes]) -> None:
        """Write ``buffers`` back to back at ``offset``, off the event loop."""
        length = sum(len(b) for b in buffers)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(_io_pool(), _pwrite_all, self._fd, buffers, offset)
        except OSError as exc:
            raise _disk_error(exc, self.part, self._journal.url) from exc
        self._extents.add(offset, offset + length)
        self._advance_hasher()
        self._maybe_save_journal()

    async def restart(self) -> None:
        """Throw away everything written (a stream that cannot resume starts over)."""
        await self._wait_for_journal()
        if self._hasher is not None:
            await asyncio.to_thread(self._hasher.cancel)
            self._hasher = PrefixHasher(self._fd)
        await asyncio.to_thread(os.ftruncate, self._fd, 0)
        self._extents = Extents()
        self.resumed_bytes = 0

    async def finalize(
        self, size: int, expected_sha256: str | None, repair: Repair | None = None
    ) -> str | None:
        """Check size and digest, then move the part to the target name.

        Args:
            size: the file's size.
            expected_sha256: the digest it must have, if known.
            repair: called with the wrong digest when it does not match; it may rewrite bad
                ranges and return the digest after (see :meth:`rehash`).

        Returns:
            The SHA-256 as hex, or None when hashing is off.

        Raises:
            IntegrityError: size or digest differ (the part is deleted: its bytes are wrong).
        """
        await self._wait_for_journal()
        url = self._journal.url
        if self._extents.prefix() != size or self._extents.total() != size:
            raise IntegrityError(
                f"{url}: have {self._extents.total()} bytes of {size}; run again to resume",
                url=url,
                expected=str(size),
                actual=str(self._extents.total()),
            )
        digest = await self._digest(size)
        if expected_sha256 and digest != expected_sha256 and repair is not None:
            digest = await repair(digest or "")
        if expected_sha256 and digest != expected_sha256.lower():
            await self.discard()
            raise IntegrityError(
                f"{url}: SHA-256 mismatch: expected {expected_sha256}, got {digest}; the "
                "download was discarded (the server or a mirror sent different bytes)",
                url=url,
                expected=expected_sha256,
                actual=digest or "",
            )
        await asyncio.get_running_loop().run_in_executor(_io_pool(), self._commit_blocking)
        return digest

    async def rehash(self, size: int) -> str:
        """Hash the whole part file again from disk (after bad ranges were rewritten)."""
        hasher = PrefixHasher(self._fd)
        return await asyncio.to_thread(hasher.digest, size)

    async def _digest(self, size: int) -> str | None:
        if self._hasher is None:
            return None
        return await asyncio.to_thread(self._hasher.digest, size)

    def _commit_blocking(self) -> None:
        os.ftruncate(self._fd, self._extents.total())
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.part, self.dest)
        _journal.remove(self.part)
        _fsync_dir(self.dest.parent)

    async def close(self) -> None:
        """Stop, keeping the part and an up-to-date journal so a later run can resume."""
        if self._fd < 0:
            return
        await self._wait_for_journal()
        if self._hasher is not None:
            await asyncio.to_thread(self._hasher.cancel)
        await asyncio.to_thread(self._close_blocking)

    def _close_blocking(self) -> None:
        with contextlib.suppress(OSError):
            self._save_journal_blocking(sync=True)
        os.close(self._fd)
        self._fd = -1

    async def discard(self) -> None:
        """Stop and delete the part and its journal."""
        if self._fd >= 0:
            await self._wait_for_journal()
            if self._hasher is not None:
                await asyncio.to_thread(self._hasher.cancel)
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()
        _journal.remove(self.part)

    def _advance_hasher(self) -> None:
        if self._hasher is not None:
            self._hasher.advance(self._extents.prefix())

    def _maybe_save_journal(self) -> None:
        now = time.monotonic()
        if self._saving is not None or now - self._saved_at < JOURNAL_EVERY:
            return
        self._saved_at = now
        runs = self._extents.runs()
        self._saving = asyncio.get_running_loop().create_task(self._save_journal(runs))

    async def _save_journal(self, runs: list[tuple[int, int]]) -> None:
        try:
            await asyncio.to_thread(self._sync_and_save, runs)
        except OSError:
            pass  # a missed journal update only costs re-fetching a few bytes on resume
        finally:
            self._saving = None

    def _sync_and_save(self, runs: list[tuple[int, int]]) -> None:
        os.fdatasync(self._fd)  # the journal may only name bytes that are safely on disk
        self._journal.runs = runs
        _journal.save(self.part, self._journal)

    def _save_journal_blocking(self, *, sync: bool) -> None:
        runs = self._extents.runs()
        if sync:
            os.fdatasync(self._fd)
        self._journal.runs = runs
        _journal.save(self.part, self._journal)

    async def _wait_for_journal(self) -> None:
        if self._saving is not None:
            await asyncio.shield(self._saving)


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
