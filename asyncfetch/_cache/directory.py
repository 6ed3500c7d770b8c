"""The cache directory as a whole: list what it holds, re-verify it, prune it.

Blocking functions (they are for the command line and scripts); :mod:`asyncfetch.cache`
makes them public.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Literal

from .._config import parse_duration, parse_size
from .._errors import DestinationError, InvalidRequest
from .._storage import journal as _journal
from .._storage.lock import LOCK_SUFFIX, lock_file_free, lock_if_free, remove_if_free
from .._storage.parts import PART_SUFFIX, TOKEN_RE, part_in_use
from . import lookup as _cache
from . import marker as _marker

# a part file (_parts) and its journal: the token is exactly what _parts makes, so the
# parts of "m.bin.v2" are never taken for parts of "m.bin"
_PART = re.compile(rf"(?P<target>.+)\.{TOKEN_RE}\.part")
_TORCH_PARTIAL = re.compile(r"(?P<target>.+)\.[0-9a-f]{32}\.partial")
_MARKER = re.compile(r"(?P<target>.+)\.asyncfetch\.json")
_JOURNAL = re.compile(rf"(?P<part>(?P<target>.+)\.{TOKEN_RE}\.part)\.json")
# atomic writes of a marker, a journal or a failure note (_distributed); hub's zip extraction
_TEMPORARY = re.compile(
    rf"(?P<target>.+?)(?:(?:\.asyncfetch|\.{TOKEN_RE}\.part)\.json\..+\.tmp"
    r"|\.hub-failed\.[0-9]+\.tmp|\.[0-9a-f]{8}\.extracting)"
)
# a download waiting for its hash-prefix check (_hubfile): renamed as soon as it is complete
_UNVERIFIED = re.compile(r"(?P<target>.+\.unverified)")
# a torchrun leader's note that its download failed (_distributed)
_FAILURE_NOTE = re.compile(r"(?P<target>.+)\.hub-failed\.json")
#: names that tie a file to the target they are kept for (see _targets)
_KEPT_FOR = (_PART, _JOURNAL, _MARKER, _TEMPORARY, _FAILURE_NOTE)
UNVERIFIED_SUFFIX = ".unverified"  # _hubfile's staging file
HUB_LOCK_SUFFIX = ".hub.lock"  # torchrun's lock (_distributed, a layer above this one)
LEFTOVER_AFTER = 3600.0  # a temporary file untouched this long is left over by a dead process
NOTE_READ_WITHIN = 60.0  # ranks waiting on a failed download read its note within seconds
#: files that are not cache entries, and how long one is in use after it was last written
_INTERNAL = (
    (_TEMPORARY, LEFTOVER_AFTER),
    (_UNVERIFIED, LEFTOVER_AFTER),
    (_FAILURE_NOTE, NOTE_READ_WITHIN),
)

State = Literal["verified", "recorded", "unchecked", "corrupt", "partial", "leftover"]


@dataclass(frozen=True)
class CacheEntry:
    """One file in the cache, or a partial download of one.

    Attributes:
        name: the file name (for a partial download: the name it will have).
        path: where it is on disk.
        size: bytes on disk.
        modified: when it was last written (seconds since the epoch).
        last_used: when asyncfetch last returned it (else its access or write time).
        state: ``verified`` (matched a SHA-256 a caller gave), ``recorded`` (its digest was
            recorded when asyncfetch downloaded it, or when ``verify`` first hashed it),
            ``unchecked`` (no record, or the file changed since), ``corrupt`` (``asyncfetch
            cache verify`` found another digest than recorded), ``partial`` (a download not
            finished yet).
        sha256: its digest as last computed, if known.
        url: where it was downloaded from, if known.
        total: the full size a partial download will have, if known.
        in_use: a running download is writing it (partial downloads only).
        checked: what its download was checked against: ``caller`` (the SHA-256 a caller
            gave), ``server`` (the one the primary URL announced) or None (nothing).
    """

    name: str
    path: Path
    size: int
    modified: float
    last_used: float
    state: State
    sha256: str | None = None
    url: str | None = None
    total: int | None = None
    in_use: bool = False
    checked: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-hashing one cached file.

    Attributes:
        name: the file name.
        path: where it is (or was looked for).
        status: ``ok`` (the digest is the recorded one), ``corrupt`` (it is not),
            ``unchecked`` (nothing recorded to compare with; the digest is recorded now, and
            later verifies compare with it), ``missing`` (no such file in the cache).
        sha256: the digest just computed.
        expected: the digest recorded for the file, if any.
        checked: what ``expected`` came from: ``caller`` (a caller's SHA-256), ``server``
            (the one the primary URL announced) or None (nothing: the digest is the one the
            file had when downloaded or first verified).
    """

    name: str
    path: Path
    status: Literal["ok", "corrupt", "unchecked", "missing"]
    sha256: str | None = None
    expected: str | None = None
    checked: str | None = None


@dataclass(frozen=True)
class PruneReport:
    """What :func:`prune` removed (or, with ``dry_run``, would remove).

    Attributes:
        removed: the entries removed.
        kept_in_use: entries chosen for removal but kept: a download holds them.
        freed: bytes freed.
        dry_run: nothing was actually deleted.
    """

    removed: list[CacheEntry]
    kept_in_use: list[CacheEntry]
    freed: int
    dry_run: bool


def path(directory: str | PathLike[str] | None = None) -> Path:
    """The cache directory: ``directory`` if given, else torch.hub's checkpoint directory."""
    return _cache.checkpoints_dir(directory)


def ls(directory: str | PathLike[str] | None = None) -> list[CacheEntry]:
    """The cached files and partial downloads, most recently used first.

    Raises:
        DestinationError: the directory cannot be read (not a directory, no permission).
    """
    return [e for e in _scan(path(directory)) if e.state != "leftover"]


def _scan(directory: Path) -> list[CacheEntry]:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DestinationError(
            f"cannot read the cache directory {directory}: {exc.strerror or exc}; pass a "
            "directory (--dir), or set TORCH_HOME to one",
            path=str(directory),
        ) from exc
    entries = []
    present = set(names)
    targets = _targets(present)
    for name in names:
        entry = _entry(directory / name, present, targets)
        if entry is not None:
            entries.append(entry)
    entries.sort(key=lambda e: e.last_used, reverse=True)
    return entries


def _targets(names: set[str]) -> set[str]:
    """The targets something in a directory of ``names`` is there for: each file itself, and
    the target of each part file, journal, marker, temporary file and torchrun failure note
    (hub's staging file ``X.unverified``, with its own parts, counts for ``X`` too)."""
    targets = set(names)
    for name in names:
        for pattern in _KEPT_FOR:
            if match := pattern.fullmatch(name):
                targets.add(match["target"])
    targets.update(t.removesuffix(UNVERIFIED_SUFFIX) for t in list(targets))
    return targets


def _lock_target(name: str, st: os.stat_result, targets: set[str]) -> str | None:
    """The target ``name`` is the lock of, if it is one: ``X.lock`` (_lock) or ``X.hub.lock``
    (torchrun, _distributed) that is empty (filelock writes nothing into it) and lies beside
    ``X`` or something kept for ``X`` (see :func:`_targets`). Any other ``*.lock`` is a file
    like any other: listed, and deleted only as files are."""
    if st.st_size != 0:
        return None
    for suffix in (HUB_LOCK_SUFFIX, LOCK_SUFFIX):
        target = name.removesuffix(suffix)
        if target != name and target and target in targets:
            return target
    return None


def _entry(file: Path, names: set[str], targets: set[str]) -> CacheEntry | None:
    try:
        st = file.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if target := _lock_target(file.name, st, targets):
        # a lock left by a dead process (kill -9) is a leftover; a held one is in use
        in_use = not lock_file_free(file)
        return CacheEntry(target, file, 0, st.st_mtime, st.st_mtime, "leftover", in_use=in_use)
    if match := _PART.fullmatch(file.name) or _TORCH_PARTIAL.fullmatch(file.name):
        return _partial_entry(file, match["target"], st)
    for pattern, in_use_for in _INTERNAL:
        if match := pattern.fullmatch(file.name):
            if time.time() - st.st_mtime < in_use_for:
                return None  # still being written or read
            return _leftover(file, match["target"], st)
    if match := _MARKER.fullmatch(file.name):
        return None if match["target"] in names else _leftover(file, match["target"], st)
    if match := _JOURNAL.fullmatch(file.name):
        return None if match["part"] in names else _leftover(file, match["target"], st)
    return _file_entry(file, st)


def _leftover(file: Path, target: str, st: os.stat_result) -> CacheEntry:
    """A file left behind by a dead process: a marker or journal whose file is gone, a temp,
    an unchecked ``.unverified`` download, an old failure note (and, in :func:`_entry`, a lock
    no process holds)."""
    return CacheEntry(target, file, st.st_size, st.st_mtime, st.st_mtime, "leftover")


def _partial_entry(file: Path, target: str, st: os.stat_result) -> CacheEntry:
    ours = file.name.endswith(PART_SUFFIX)
    journal = _journal.load(file) if ours else None
    held = sum(e - s for s, e in journal.on_disk()) if journal else st.st_size
    # torch.hub's own partial file is alive while it is being written
    in_use = part_in_use(file) if ours else time.time() - st.st_mtime < LEFTOVER_AFTER
    return CacheEntry(
        name=target,
        path=file,
        size=held,
        modified=st.st_mtime,
        last_used=st.st_mtime,
        state="partial",
        url=journal.url if journal else None,
        total=journal.size if journal else None,
        in_use=in_use,
    )


def _file_entry(file: Path, st: os.stat_result) -> CacheEntry:
    marker = _marker.read_marker(file)
    last_used = marker.last_used if marker and marker.last_used else max(st.st_atime, st.st_mtime)
    fresh = marker if marker is not None and marker.describes(st) else None
    return CacheEntry(
        name=file.name,
        path=file,
        size=st.st_size,
        modified=st.st_mtime,
        last_used=last_used,
        state=_state(fresh),
        sha256=fresh.sha256 if fresh else None,
        url=marker.url if marker else None,
        total=st.st_size,
        checked=fresh.checked_against if fresh else None,
    )


def _state(marker: _marker.Marker | None) -> State:
    if marker is None or not marker.sha256:
        return "unchecked"
    if marker.corrupt:
        return "corrupt"
    if marker.expected == marker.sha256:
        return "verified" if marker.verified else "recorded"
    return "unchecked"


# verify --------------------------------------------------------------------------------------


def verify(
    names: Iterable[str] = (), directory: str | PathLike[str] | None = None
) -> list[VerifyResult]:
    """Re-hash cached files (``names``, or all of them) and compare with the recorded digests.

    The digests are recorded, so a file found ``corrupt`` is downloaded again by the next
    fetch of it rather than trusted. A file with nothing recorded gets its digest recorded, for
    the next verify to compare with. A name that is not a cached file as :func:`ls` lists it
    (a path, a marker, a partial download) is ``missing``; nothing is written for it.

    Raises:
        DestinationError: the directory cannot be read (not a directory, no permission).
    """
    root = path(directory)
    files = {e.name: e.path for e in _scan(root) if e.state not in ("partial", "leftover")}
    return [
        _verify_one(files[name]) if name in files else VerifyResult(name, root / name, "missing")
        for name in (list(names) or files)
    ]


def _verify_one(file: Path) -> VerifyResult:
    try:
        st = file.stat()
        before = _marker.read_marker(file)
        marker = _cache.rehash(file, st, before)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return VerifyResult(file.name, file, "missing")
    if marker.expected is None:  # nothing to compare with: this digest is the baseline now
        if before is not None and not before.describes(st):
            # changed since its download: the digest is not the download's
            marker = replace(marker, url=None, etag=None, last_modified=None)
        _marker.write_marker(file, replace(marker, expected=marker.sha256))
        return VerifyResult(file.name, file, "unchecked", marker.sha256)
    _marker.write_marker(file, marker)
    status: Literal["ok", "corrupt"] = "corrupt" if marker.corrupt else "ok"
    checked = marker.checked_against
    return VerifyResult(file.name, file, status, marker.sha256, marker.expected, checked)


# prune ---------------------------------------------------------------------------------------


def prune(
    *,
    keep_latest: int | None = None,
    max_size: int | str | None = None,
    older_than: float | str | None = None,
    partials: bool = False,
    dry_run: bool = False,
    directory: str | PathLike[str] | None = None,
) -> PruneReport:
    """Delete cached files, least recently used first, and leftovers of dead downloads.

    A file goes if any option chooses it. Nothing a running download holds is deleted.

    Args:
        keep_latest: keep this many most recently used files, delete the others.
        max_size: delete the least recently used files until the rest fit (bytes, or "50G").
        older_than: delete files not used for this long (seconds, or "30d").
        partials: delete partial downloads no process is running, and files left over by them
            (lock files no process holds among them: see :func:`_lock_target`).
        dry_run: only report what would be deleted.
        directory: the cache directory (default: torch.hub's).

    Raises:
        InvalidRequest: no option chooses anything, or an option is malformed.
        DestinationError: the directory cannot be read (not a directory, no permission).
    """
    limit = parse_size(max_size) if isinstance(max_size, str) else max_size
    age = parse_duration(older_than) if isinstance(older_than, str) else older_than
    if keep_latest is None and limit is None and age is None and not partials:
        raise InvalidRequest(
            "say what to prune: keep_latest, max_size, older_than or partials (--keep-latest, "
            "--max-size, --older-than, --partials)"
        )
    if keep_latest is not None and keep_latest < 0:
        raise InvalidRequest(f"keep_latest must not be negative, got {keep_latest}")
    root = path(directory)
    entries = _scan(root)
    files = [e for e in entries if e.state not in ("partial", "leftover")]  # most recent first
    chosen = _choose(files, keep_latest=keep_latest, max_size=limit, older_than=age)
    if partials:
        chosen += [e for e in entries if e.state in ("partial", "leftover") and not e.in_use]
    removed: list[CacheEntry] = []
    kept: list[CacheEntry] = []
    for entry in chosen:
        (removed if _remove(root, entry, dry_run) else kept).append(entry)
    return PruneReport(removed, kept, sum(e.size for e in removed), dry_run)


def _choose(
    files: list[CacheEntry],
    *,
    keep_latest: int | None,
    max_size: int | None,
    older_than: float | None,
) -> list[CacheEntry]:
    chosen: set[Path] = set()
    if keep_latest is not None:
        chosen.update(e.path for e in files[keep_latest:])
    if older_than is not None:
        cutoff = time.time() - older_than
        chosen.update(e.path for e in files if e.last_used < cutoff)
    if max_size is not None:
        total = sum(e.size for e in files if e.path not in chosen)
        for entry in reversed(files):
            if total <= max_size:
                break
            if entry.path not in chosen:
                chosen.add(entry.path)
                total -= entry.size
    return [e for e in files if e.path in chosen]


def _remove(root: Path, entry: CacheEntry, dry_run: bool) -> bool:
    """Delete ``entry`` unless a download holds it; True if it is (or would be) deleted."""
    if entry.state == "leftover" and entry.path.name.endswith(LOCK_SUFFIX):
        return remove_if_free(entry.path, dry_run=dry_run)  # never one a live process holds
    with lock_if_free(root / entry.name) as free:
        if not free or (entry.state == "partial" and part_in_use(entry.path)):
            return False
        if dry_run:
            return True
        _unlink(entry.path)
        if entry.state == "partial":
            _journal.remove(entry.path)
        else:  # a leftover .unverified download has a marker too
            _marker.remove_marker(entry.path)
    return True


def _unlink(file: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        file.unlink()
