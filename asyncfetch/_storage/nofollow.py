"""Files in directories other people can write: never through a link, never someone else's.

A shared directory (a team's ``TORCH_HOME``, a service's cache, /tmp) may hold a symbolic link
or a FIFO under a name asyncfetch is about to use. Opening that name as usual writes the file
the link points to, or hangs on the FIFO. So existing files are opened with ``O_NOFOLLOW`` and
``O_NONBLOCK`` and must turn out regular files, and new ones are created with ``O_EXCL``
(nothing already there is reused), as filelock does for its lock files since CVE-2025-68146.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO opens at once instead of hanging
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
SMALL_FILE = 1 << 20  # journals and trust records are far smaller


def current_uid() -> int:
    """This process's effective user id (0 where the system has none: Windows reports 0 as
    every file's owner)."""
    return os.geteuid() if hasattr(os, "geteuid") else 0


def is_own_file(st: os.stat_result) -> bool:
    """Whether ``st`` (from ``lstat`` or ``fstat``) is a regular file of this process's user.

    Root included: root could write anyone's file, but must not adopt it.
    """
    return stat.S_ISREG(st.st_mode) and st.st_uid == current_uid()


def is_trusted_owner(st: os.stat_result) -> bool:
    """Whether ``st`` (from ``lstat``) is this process's user's or root's: a directory or link
    no one else can change (root can change anything anyway)."""
    return st.st_uid in (current_uid(), 0)


def open_existing(path: Path, flags: int) -> int:
    """Open the regular file at ``path`` (``flags``: the access mode) without following a link.

    Raises:
        OSError: ``path`` is missing, a link (ELOOP), or not a regular file (EINVAL).
    """
    fd = os.open(path, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def read_small(path: Path, limit: int = SMALL_FILE) -> tuple[bytes, os.stat_result]:
    """The first ``limit`` bytes of the regular file at ``path`` and its stat, never
    following a link (blocking).

    Raises:
        OSError: as :func:`open_existing`, or reading failed.
    """
    fd = open_existing(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        chunks: list[bytes] = []
        left = limit
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def create_new(path: Path, mode: int = 0o644) -> int:
    """Create ``path`` for reading and writing; FileExistsError if anything is there (a link
    included: it is never followed)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)


def replace_with(target: Path, data: bytes, mode: int = 0o644) -> None:
    """Put ``data`` at ``target`` atomically: a new sibling file, then ``os.replace`` (which
    replaces a link at ``target`` rather than writing through it). Blocking.

    Raises:
        OSError: the directory refuses (the temporary file is removed).
    """
    temp = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    fd = create_new(temp, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temp, target)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
