"""``file://`` sources: a local or shared-filesystem file read in ranges, like any source.

A ``file://`` URL (``file:///nfs/models/w.pth``; ``file://localhost/...`` too, as urllib
takes it) is probed with ``fstat``: its size, Range support (always), and validators made of
its inode, size and modification time, so a file replaced or rewritten in place between the
probe and a range (or a resume) is noticed as a changed file. Ranges are read with
``os.pread`` in a worker thread, so the event loop never blocks on a slow NFS server.

Only a URL the caller gave is read: a redirect from http(s) to ``file://`` is refused in
:mod:`.aioerrors`, and a transport with an address policy (``asyncfetch serve``) reads no local
file at all.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from .._errors import ConnectionFailed, TransportError, TruncatedBody
from .._models import ByteRange, RemoteInfo
from .._urls import file_path, is_file_url
from .answers import FileChanged
from .rawconn import Span, Window

__all__ = ["FileBody", "file_path", "is_file_url", "open_file", "probe_file"]

READ_SIZE = 1 << 20
# errors a retry will not mend; others (EIO, ESTALE on NFS) may pass
_FINAL = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR})


def _validators(stat: os.stat_result) -> tuple[str, str]:
    """(ETag, Last-Modified) for a file: its inode, size and mtime (ns)."""
    etag = f'"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"'
    return etag, email.utils.formatdate(stat.st_mtime, usegmt=True)


def _local_path(url: str) -> str:
    """:func:`file_path`, or a TransportError (not retried) naming what is wrong."""
    path = file_path(url)
    if path is None:
        raise TransportError(
            f"{url}: not a local file URL; give one like file:///path/to/file",
            url=url,
            retryable=False,
        )
    return path


def _stat(url: str) -> os.stat_result:
    path = _local_path(url)
    with _translated(url):
        stat = os.stat(path)
    if not _is_regular(stat):
        raise TransportError(f"{url}: not a regular file", url=url, retryable=False)
    return stat


def _is_regular(stat: os.stat_result) -> bool:
    import stat as modes

    return modes.S_ISREG(stat.st_mode)


@contextmanager
def _translated(url: str) -> Iterator[None]:
    """OSError as a TransportError, retryable unless the file is missing or unreadable."""
    try:
        yield
    except OSError as exc:
        what = exc.strerror or type(exc).__name__
        if exc.errno in _FINAL:
            raise TransportError(
                f"{url}: {what} (check the path, and that the filesystem is mounted)",
                url=url,
                retryable=False,
            ) from None
        raise ConnectionFailed(f"{url}: reading the file failed ({what})", url=url) from None


async def probe_file(url: str) -> RemoteInfo:
    """What a ``file://`` URL's file is: size, ranges, validators (from inode and mtime)."""
    stat = await asyncio.to_thread(_stat, url)
    etag, last_modified = _validators(stat)
    return RemoteInfo(
        url=url, final_url=url, size=stat.st_size, accepts_ranges=True, etag=etag,
        last_modified=last_modified,
    )  # fmt: skip


class FileBody:
    """One range of a local file, read batch by batch (see :class:`.aiobody.Body`)."""

    def __init__(
        self, url: str, fd: int, byte_range: ByteRange | None, size: int, window: Window
    ) -> None:
        self.url = url
        self.byte_range = byte_range
        start = byte_range.start if byte_range is not None else 0
        end = byte_range.end if byte_range is not None else size
        self.size: int | None = end - start
        self.sent_at = time.monotonic()
        self.encoding = ""
        self._fd = fd
        self._end = end
        self._window = window

    async def read(self) -> bytes:
        """The next bytes (a copy); ``b""`` at the end."""
        batch = await self.next_batch()
        return b"".join(batch)

    async def next_batch(self) -> list[bytes]:
        """Up to READ_SIZE bytes at the window's ``pos``, cut at its ``stop``."""
        start = self._window.pos
        stop = min(self._end, self._window.stop)
        if start >= stop:
            return []
        data = await asyncio.to_thread(self._pread, min(READ_SIZE, stop - start), start)
        if not data:
            raise TruncatedBody(
                f"{self.url}: the file ended at byte {start}, before {self._end} (it shrank "
                "while being read)",
                url=self.url,
            )
        self._window.reached = start + len(data)
        return [data]

    def _pread(self, length: int, offset: int) -> bytes:
        with _translated(self.url):
            return os.pread(self._fd, length, offset)

    def abandon(self) -> None:
        """Nothing to give back: the file is closed when the body is."""

    def leftover(self) -> tuple[int, bytes]:
        """Nothing is held between batches."""
        return (0, b"")


@asynccontextmanager
async def open_file(
    url: str,
    byte_range: ByteRange | None,
    *,
    if_range: str | None = None,
    window: Window | None = None,
    size: int | None = None,
) -> AsyncIterator[FileBody]:
    """Open ``url``'s file for ``byte_range`` (all of it when None), checked against the
    probe's ``size`` and validator ``if_range`` (an ETag or Last-Modified it gave).

    Raises:
        FileChanged: the file is not the one probed (size, inode or mtime differ).
        TransportError: the file cannot be opened (not retried when missing or unreadable).
    """
    fd, stat = await asyncio.to_thread(_open, url)
    try:
        _check_same(url, stat, if_range, size)
        if byte_range is not None and byte_range.end > stat.st_size:
            raise FileChanged(
                f"{url}: the range {byte_range.header()} is past the file's end "
                f"({stat.st_size} bytes)",
                url=url,
            )
        yield FileBody(url, fd, byte_range, stat.st_size, window or Span())
    finally:
        os.close(fd)


def _open(url: str) -> tuple[int, os.stat_result]:
    """A descriptor of ``url``'s file, open for reading, and its stat."""
    path = _local_path(url)
    with _translated(url):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO: no wait
    try:
        stat = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not _is_regular(stat):
        os.close(fd)
        raise TransportError(f"{url}: not a regular file", url=url, retryable=False)
    return fd, stat


def _check_same(url: str, stat: os.stat_result, if_range: str | None, size: int | None) -> None:
    """Raise FileChanged when the open file is not the one probed."""
    if size is not None and stat.st_size != size:
        raise FileChanged(
            f"{url}: the file changed since it was probed: it has {stat.st_size} bytes, the "
            f"probe found {size}",
            url=url,
        )
    if if_range is not None and if_range not in _validators(stat):
        raise FileChanged(
            f"{url}: the file changed since it was probed (another inode or modification time)",
            url=url,
        )
