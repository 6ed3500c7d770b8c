"""The target path: whether a download may write there, checked before anything is opened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .._errors import DestinationError


def check_destination(dest: Path, url: str | None = None) -> None:
    """Raise DestinationError unless ``dest`` can be created (its directory exists, writable)."""
    parent = dest.parent
    check_target_kind(dest, url)
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


def check_target_kind(dest: Path, url: str | None = None) -> None:
    """Raise DestinationError if ``dest`` exists and is not a regular file (a directory, a
    device such as /dev/null, a FIFO, a socket), without opening it."""
    try:
        mode = dest.stat().st_mode
    except OSError:
        return  # missing (or unreadable: the caller's own checks say why)
    if stat.S_ISDIR(mode):
        raise DestinationError(
            f"{dest} is a directory; give a file path (or --dir for a directory)",
            path=str(dest),
            url=url,
        )
    if not stat.S_ISREG(mode):
        raise DestinationError(
            f"{dest} is not a regular file; asyncfetch writes a file beside it and renames it "
            "into place; choose a file path",
            path=str(dest),
            url=url,
        )
