"""The marker of a downloaded or checked file: what asyncfetch knows about it.

It is kept out of the file's directory (an extended attribute, or the user's state directory:
see :mod:`.records`), so nothing appears beside the user's file. It holds the file's size and
mtime when its SHA-256 was last computed, that digest, the digest the file should have, and
the URL (a password in it masked) and validators it came from.
:mod:`._cache` decides from it when a file is a hit; ``cache ls/verify/prune`` read and
update it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .._models import RemoteInfo
from .._storage.hasher import sha256_of_file
from .._userinfo import redact
from . import records as _records

MARKER_SUFFIX = _records.LEGACY_SUFFIX
MARKER_VERSION = 1


@dataclass(frozen=True)
class Marker:
    """What asyncfetch knows about a cached file (see the module docstring).

    ``sha256`` is the digest of the file as it was at (``size``, ``mtime_ns``); ``expected``
    the digest it should have (given by a caller, computed from a download, or, for a file
    that had none, the first one ``cache verify`` computed: a baseline to find later changes),
    if known; ``verified`` says ``expected`` came from a caller (the others only say what the
    file was, not that it is the right one). ``checked`` says what the download was checked
    against: ``"caller"`` (the caller's SHA-256), ``"server"`` (the one the primary URL
    announced), or None (nothing).
    """

    size: int
    mtime_ns: int
    sha256: str | None
    expected: str | None = None
    verified: bool = False
    url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: float | None = None
    last_used: float | None = None
    checked: str | None = None

    @property
    def checked_against(self) -> str | None:
        """``"caller"``, ``"server"`` or None: what the download was checked against (a
        marker older than ``checked`` says only whether it was the caller's)."""
        return self.checked or ("caller" if self.verified else None)

    def describes(self, st: os.stat_result) -> bool:
        """Whether the file, as ``st`` shows it, is unchanged since the marker was written."""
        return self.size == st.st_size and self.mtime_ns == st.st_mtime_ns

    @property
    def corrupt(self) -> bool:
        """The file's digest is not the one it should have."""
        return bool(self.expected and self.sha256 and self.sha256 != self.expected)


def marker_path(path: Path) -> Path:
    """Where earlier versions kept the marker of ``path``, beside it (still read, then moved)."""
    return _records.legacy_path(path)


def recorded_urls(urls: Iterable[str | None]) -> tuple[str, ...]:
    """``urls`` as a marker records them (a password masked), to compare with ``Marker.url``."""
    return tuple(redact(u) for u in urls if u is not None)


def read_marker(path: Path) -> Marker | None:
    """The marker of the file at ``path``, or None when missing or unreadable (blocking).

    One recorded for the file as it was before a change its size and mtime do not show (a
    new ctime: see :mod:`.records`) is returned as a marker of a changed file. One an earlier
    version left beside the file, or wrote with a secret in its URL, is written again where
    markers live now, without it.
    """
    found = _records.load(path)
    if found is None:
        return None
    try:
        data = dict(found.data)
        if data.pop("version") != MARKER_VERSION:
            return None
        marker = Marker(**data)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not _well_formed(marker):
        return None
    if not found.current:  # an mtime no file has: it describes the file no more
        marker = replace(marker, mtime_ns=-1)
    if found.legacy or (marker.url is not None and redact(marker.url) != marker.url):
        marker = replace(marker, url=redact(marker.url) if marker.url is not None else None)
        write_marker(path, marker)
    return marker


def _well_formed(marker: Marker) -> bool:
    """Whether every field of a marker read from disk has its type (it may be hand-edited)."""
    texts = (marker.sha256, marker.expected, marker.url, marker.etag, marker.last_modified)
    times = (marker.fetched_at, marker.last_used)
    return (
        all(type(n) is int for n in (marker.size, marker.mtime_ns))
        and type(marker.verified) is bool
        and marker.checked in (None, "caller", "server")
        and all(t is None or isinstance(t, str) for t in texts)
        and all(t is None or type(t) in (int, float) for t in times)
    )


def write_marker(path: Path, marker: Marker) -> bool:
    """Record ``marker`` for the file at ``path`` (blocking); False if nowhere would take it."""
    url = redact(marker.url) if marker.url is not None else None
    return _records.store(path, asdict(marker) | {"url": url, "version": MARKER_VERSION})


def move_marker(source: Path, target: Path) -> None:
    """After ``os.replace(source, target)``: the marker goes along (blocking)."""
    _records.rekey(source, target)


def remove_marker(path: Path) -> None:
    """Forget the marker of ``path``, if any, the file there or gone (blocking)."""
    _records.drop(path)


def hash_file(path: Path) -> str:
    """The SHA-256 of the file at ``path`` as hex (blocking; run it in a thread)."""
    with path.open("rb", buffering=0) as file:
        return sha256_of_file(file)


def record_download(
    path: Path,
    *,
    url: str,
    sha256: str | None,
    verified: bool,
    info: RemoteInfo | None,
    checked: str | None = None,
) -> None:
    """Write the marker of a file just downloaded to ``path`` (blocking); ``checked`` says
    what it was checked against (see :class:`Marker`)."""
    with contextlib.suppress(OSError):
        st = path.stat()
        now = time.time()
        write_marker(
            path,
            Marker(
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                sha256=sha256,
                expected=sha256,
                verified=verified and sha256 is not None,
                url=url,
                etag=info.etag if info else None,
                last_modified=info.last_modified if info else None,
                fetched_at=now,
                last_used=now,
                checked=checked if sha256 is not None else None,
            ),
        )
