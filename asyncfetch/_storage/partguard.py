"""Noticing that another download took this one's part file over.

A download that stalls long enough (a stopped or frozen process) looks abandoned, and another
one may take its part by renaming it (see ``_parts``), finish it and rename it to the target.
The old owner still holds the file open: writing, truncating or journaling through it would
change the new owner's file, even the finished target. So before each of those it checks that
the part's name still leads to the file it holds open, and stops for good when not.

What stays possible is a write already past the check when the process stopped (one
``pwritev`` call), landing after the takeover; the checks are placed so that this window is a
single system call wide.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .._errors import DestinationError

CHECK_EVERY = 0.25  # seconds between checks on the write path (a stat call each)


class PartGuard:
    """Tells whether ``part`` still names the file open as ``fd`` (blocking calls)."""

    def __init__(self, part: Path, fd: int, url: str | None) -> None:
        self.part = part
        self.url = url
        opened = os.fstat(fd)
        self._identity = (opened.st_dev, opened.st_ino)
        self._checked_at = time.time()
        self.lost = False

    def check(self) -> None:
        """Raise DestinationError if the part was taken over (or deleted) since it was opened."""
        self._checked_at = time.time()
        if not self.lost:
            try:
                now = os.lstat(self.part)  # a link to our file put in its place is not it
                self.lost = (now.st_dev, now.st_ino) != self._identity
            except (FileNotFoundError, NotADirectoryError):
                self.lost = True
            except OSError:
                return  # cannot tell (a passing I/O error): the other checks will
        if self.lost:
            raise self.error()

    def check_due(self) -> None:
        """:meth:`check`, at most every CHECK_EVERY seconds (the wall clock also jumps over a
        stop or a suspend, so the first write after one checks)."""
        if self.lost or abs(time.time() - self._checked_at) >= CHECK_EVERY:
            self.check()

    def error(self) -> DestinationError:
        """The error of a lost part."""
        return DestinationError(
            f"another download took over {self.part} after this one stalled (or it was "
            "deleted); this download stopped writing to it; run again",
            path=str(self.part),
            url=self.url,
        )
