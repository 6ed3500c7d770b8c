"""The resume journal: which byte ranges of a ``.part`` file are on disk, and under which
validators they were fetched. A small JSON file beside the part, replaced atomically.

It keeps two sets of runs: ``runs``, written (in the page cache: they survive a kill -9 of
the process), and ``synced``, flushed with fdatasync (they survive a power cut too), and the
kernel's boot id. A resume after a reboot trusts only ``synced``; one on the same boot trusts
``runs``. So the journal can be saved often and cheaply, and a kill loses almost nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._models import RemoteInfo
from .._userinfo import url_key
from .nofollow import read_small, replace_with

JOURNAL_VERSION = 2
JOURNAL_SUFFIX = ".json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def boot_id() -> str | None:
    """This boot's id (Linux), or None where the system does not tell."""
    try:
        return BOOT_ID.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


@dataclass
class Journal:
    """What a part file holds and who is writing it.

    ``url`` is the download's :func:`~asyncfetch._userinfo.url_key`: its secrets (password,
    signature) masked, so a URL signed again finds the same part.
    """

    url: str
    size: int | None
    etag: str | None
    last_modified: str | None
    runs: list[tuple[int, int]] = field(default_factory=list)
    synced: list[tuple[int, int]] = field(default_factory=list)
    boot: str | None = field(default_factory=boot_id)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def for_remote(cls, info: RemoteInfo) -> Journal:
        """An empty journal for a download of ``info``."""
        return cls(url_key(info.url), info.size, info.etag, info.last_modified)

    def on_disk(self) -> list[tuple[int, int]]:
        """The runs a resume may trust: all written ones on the same boot, else the synced."""
        same_boot = self.boot is not None and self.boot == boot_id()
        return list(self.runs if same_boot else self.synced)

    def matches(self, info: RemoteInfo) -> bool:
        """Whether bytes fetched under this journal are bytes of the file ``info`` describes.

        Size must agree, and every validator both sides have must agree; with no validator in
        common nothing proves the file is unchanged, so the answer is no.
        """
        if self.size is None or self.size != info.size:
            return False
        pairs = [(self.etag, info.etag), (self.last_modified, info.last_modified)]
        common = [(old, new) for old, new in pairs if old and new]
        return bool(common) and all(old == new for old, new in common)

    def owner_alive(self) -> bool:
        """Whether the process that wrote this journal may still be running."""
        if self.host != socket.gethostname():
            return True
        if self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def journal_path(part: Path) -> Path:
    """Where the journal of ``part`` lives."""
    return part.with_name(part.name + JOURNAL_SUFFIX)


def save(part: Path, journal: Journal) -> None:
    """Write the journal of ``part`` atomically, never through a link (blocking; call from a
    thread)."""
    data = asdict(journal) | {"version": JOURNAL_VERSION}
    replace_with(journal_path(part), json.dumps(data).encode("utf-8"))


def load(part: Path) -> Journal | None:
    """The journal of ``part``, or None when it is missing, truncated or otherwise unusable
    (a link or anything but a regular file among them: it is not opened).

    One written by an earlier version with a secret in its URL (a signature, or a password
    with an ``@`` in it) is written again without it at once.
    """
    try:
        data: Any = json.loads(read_small(journal_path(part))[0])
        if data.pop("version") != JOURNAL_VERSION:
            return None
        runs = [(int(s), int(e)) for s, e in data.pop("runs")]
        synced = [(int(s), int(e)) for s, e in data.pop("synced")]
        journal = Journal(**data, runs=runs, synced=synced)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if any(not 0 <= s < e for s, e in (*journal.runs, *journal.synced)):
        return None
    if journal.url != url_key(journal.url):
        journal.url = url_key(journal.url)
        _rewrite(part, journal)
    return journal


def _rewrite(part: Path, journal: Journal) -> None:
    """Save ``journal`` in place of the one on disk, keeping its time: how long ago its owner
    last wrote it says whether that owner is still alive."""
    with contextlib.suppress(OSError):
        st = journal_path(part).stat()
        save(part, journal)
        os.utime(journal_path(part), ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def remove(part: Path) -> None:
    """Delete ``part``'s journal if there is one."""
    with contextlib.suppress(FileNotFoundError):
        journal_path(part).unlink()
