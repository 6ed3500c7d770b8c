"""Which part file a download writes into: private names, who owns a part, and taking over
the parts of downloads that died.

Each download writes ``<dest>.<8 hex>.part`` with its journal beside it. Only names with
exactly that token are ``dest``'s parts: ``<dest>.v2.<token>.part`` belongs to the file
``<dest>.v2``, ``<dest>.unverified.<token>.part`` to hub's staging file. A part belongs to a
live download while this process has it open, or its journal names a running process and was
touched lately. Abandoned parts are taken by renaming them to a private name: the rename
decides who takes one, so two downloads never share a part, even where file locks silently
do nothing. Only regular files of this user's are taken over; parts are opened without
following links and new ones created exclusively (see :mod:`.nofollow`).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .._models import RemoteInfo
from .._userinfo import url_key
from . import journal as _journal
from .journal import Journal
from .nofollow import create_new, is_own_file, open_existing

log = logging.getLogger("asyncfetch")

PART_SUFFIX = ".part"
TOKEN_BYTES = 4
#: a part's token as a regular expression: what :func:`new_part_name` puts between the names
TOKEN_RE = f"[0-9a-f]{{{2 * TOKEN_BYTES}}}"
STALE_AFTER = 120.0
CREATE_TRIES = 8  # random names taken by something else before one is free: give up

_open_parts: set[Path] = set()  # part files this process is writing now
_open_parts_lock = threading.Lock()


def part_glob(dest: Path) -> str:
    """A glob pattern matching the part files of ``dest`` and nothing else: the token is
    exactly 8 lowercase hex digits, so no other file's parts (``<dest>.v2.<token>.part``,
    ``<dest>.unverified.<token>.part``) match."""
    token = "[0-9a-f]" * (2 * TOKEN_BYTES)
    return str(dest.with_name(f"{glob.escape(dest.name)}.{token}{PART_SUFFIX}"))


def new_part_name(dest: Path) -> Path:
    """A new part name, registered as in use by this process from the start."""
    part = dest.with_name(f"{dest.name}.{secrets.token_hex(TOKEN_BYTES)}{PART_SUFFIX}")
    with _open_parts_lock:
        _open_parts.add(part)
    return part


def forget_part(part: Path) -> None:
    """``part`` is no longer this process's (closed, finished or deleted)."""
    with _open_parts_lock:
        _open_parts.discard(part)


def open_part(dest: Path, info: RemoteInfo) -> tuple[Path, int, Journal | None]:
    """Open the part file this download writes (blocking): an abandoned part of ``dest`` for
    the same remote file and its journal if there is one (see :func:`claim_part`), else a new
    empty one with no journal.

    Neither is opened through a link: the part taken over must still be a regular file of
    this user's once open, and a new one is created exclusively.

    Raises:
        OSError: the directory refuses.
    """
    part, journal = claim_part(dest, info)
    if part is not None:
        try:
            fd = open_existing(part, os.O_RDWR)
            if is_own_file(os.fstat(fd)):
                return part, fd, journal
            os.close(fd)
        except OSError:
            pass
        log.warning("%s changed while it was being taken over; starting a fresh part", part)
        forget_part(part)  # swapped for something else after its checks: left as it is
    return (*_create_part(dest), None)


def _create_part(dest: Path) -> tuple[Path, int]:
    """A new, empty part file of ``dest``, created exclusively (never through a link)."""
    for _ in range(CREATE_TRIES):
        part = new_part_name(dest)
        try:
            return part, create_new(part)
        except FileExistsError:
            forget_part(part)  # something has this random name already: pick another
        except OSError:
            forget_part(part)
            raise
    raise FileExistsError(errno.EEXIST, f"no free part file name after {CREATE_TRIES} tries")


def claim_part(dest: Path, info: RemoteInfo) -> tuple[Path | None, Journal | None]:
    """Take over the abandoned parts of ``dest``; the one to resume with its journal, or
    (None, None).

    Every abandoned part is taken by renaming it to a private name (the rename decides who
    takes it, so two processes never share one, even where file locks silently do nothing).
    The one holding the most bytes of the same remote file is kept; the others, and any
    whose journal is unusable, are deleted, so partial files do not pile up. A part or
    journal that is not a regular file of this user's (a link, a FIFO, another user's
    crashed download in a shared cache) is never taken: it is left untouched, with a warning.
    """
    claimed: list[tuple[Path, Journal | None]] = []
    for candidate in sorted(glob.glob(part_glob(dest))):
        old = Path(candidate)
        if not _adoptable(old):
            continue
        in_use, journal = _ownership(old)
        if in_use:
            continue
        taken = new_part_name(dest)
        try:
            os.rename(old, taken)
        except FileNotFoundError:
            forget_part(taken)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.rename(_journal.journal_path(old), _journal.journal_path(taken))
        usable = journal is not None and journal.matches(info) and journal.url == url_key(info.url)
        claimed.append((taken, journal if usable else None))
    best = max(claimed, key=lambda c: _held_bytes(c[1]), default=None)
    for part, _ in claimed:
        if best is None or best[1] is None or part != best[0]:
            remove_part(part)
            forget_part(part)
    if best is None or best[1] is None:
        return None, None
    return best


def _adoptable(part: Path) -> bool:
    """Whether ``part`` and its journal, if any, are regular files of this user's (warns
    when not: the part is left as it is)."""
    for path in (part, _journal.journal_path(part)):
        try:
            st = path.lstat()
        except FileNotFoundError:
            if path == part:
                return False  # taken by another download just now
            continue
        except OSError:
            return False
        if not is_own_file(st):
            log.warning(
                "leaving %s alone: %s; this download starts a fresh part",
                part,
                _why_not_own(path, st),
            )
            return False
    return True


def _why_not_own(path: Path, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return f"{path.name} is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return f"{path.name} is not a regular file"
    return f"{path.name} belongs to another user (uid {st.st_uid})"


def _held_bytes(journal: Journal | None) -> int:
    return sum(end - start for start, end in journal.on_disk()) if journal else -1


def remove_part(part: Path) -> None:
    """Delete ``part`` and its journal, whichever exist."""
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    _journal.remove(part)


def runs_on_disk(runs: Sequence[tuple[int, int]], on_disk: int, size: int) -> list[tuple[int, int]]:
    """The journal's runs, cut to what the part file (``on_disk`` bytes long) can hold."""
    limit = min(on_disk, size)
    return [(start, min(end, limit)) for start, end in runs if start < limit]


def _ownership(part: Path) -> tuple[bool, Journal | None]:
    """Whether another download (another process, or another thread of this one) owns
    ``part``, and its journal.

    A part whose journal is not there yet is in use while it is young: its owner has just
    created it. One whose journal is there but unreadable is abandoned (journals are
    replaced atomically, so a live owner's always reads).
    """
    with _open_parts_lock:
        if part in _open_parts:
            return True, None
    path = _journal.journal_path(part)
    existed = path.exists()  # before reading: a journal written just after counts as missing
    journal = _journal.load(part)
    try:
        if journal is None and not existed:
            return time.time() - part.stat().st_mtime < STALE_AFTER, None
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False, journal
    in_use = journal is not None and journal.owner_alive() and age < STALE_AFTER
    return in_use, journal


def part_in_use(part: Path) -> bool:
    """Whether ``part`` belongs to a download that is still running (for pruning)."""
    return _ownership(part)[0]
