"""Where a file's trust record (:mod:`.marker`) lives: never beside the file.

- An extended attribute on the file, ``user.asyncfetch.marker``, where the filesystem and the
  file allow one: it goes where the file goes and dies with it.
- Else (or with ``ASYNCFETCH_TRUST_RECORD=state``) a small file in the user's state directory
  (``$ASYNCFETCH_STATE_DIR``, else ``$XDG_STATE_HOME/asyncfetch``), named after the file's
  path and valid only for the file (device, inode) it was written for. Its size and mtime are
  checked as the marker's always were; its ctime, which nobody can set back, must match too,
  or the record is taken as one of a changed file (any write, chmod or rename changes it).
  Records of files that are gone are swept a few at a time as new ones are written.

Earlier versions wrote ``<file>.asyncfetch.json`` beside the file. Such a marker is still
honoured when it and the file are regular files (never read through a link) of this user's,
and is moved to the places above when it is next read or written.

Another user's file is vouched for only by this user's own record in the state directory:
its owner (whoever planted it in a shared directory) can set any attribute on it and write
any marker beside it, and taking those at their word would let them pass a wrong file off as
one with the SHA-256 asked for. Such a file is hashed once; the digest goes to the state
directory, where its ctime binds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config import env_settings
from .._storage.nofollow import current_uid, is_own_file, read_small, replace_with
from .._storage.safepath import make_private_dirs

XATTR = "user.asyncfetch.marker"
LEGACY_SUFFIX = ".asyncfetch.json"
RECORDS = "records"
RECORD_VERSION = 1
SWEEP = 8  # records of other files checked whenever a new one is added
_HAS_XATTRS = hasattr(os, "setxattr")  # Linux; elsewhere the state directory always


@dataclass(frozen=True)
class Found:
    """A trust record as stored: the marker's fields, and whether they were written for the
    file as it is now (else it changed since, as far as the record can tell)."""

    data: dict[str, Any]
    current: bool
    legacy: bool = False  # from a marker file beside the file (to be moved)


def legacy_path(path: Path) -> Path:
    """Where earlier versions put the marker of ``path``."""
    return path.with_name(path.name + LEGACY_SUFFIX)


def load(path: Path) -> Found | None:
    """The trust record of the file at ``path``, or None (blocking)."""
    try:
        st = path.stat()
    except OSError:
        return None
    in_state = _read_state(path, st)
    if (in_state is not None and in_state.current) or st.st_uid != current_uid():
        return in_state  # after any attribute (that changes the ctime); or not theirs to say
    if _xattrs() and (data := _read_xattr(path)) is not None:
        return Found(data, current=True)
    return in_state or _read_legacy(path, st)


def store(path: Path, data: dict[str, Any]) -> bool:
    """Record ``data`` for the file at ``path``; False if nowhere would take it (blocking)."""
    try:
        st = path.stat()
    except OSError:
        return False
    blob = json.dumps(data).encode("utf-8")
    if _xattrs() and st.st_uid == current_uid() and _write_xattr(path, blob):
        _unlink(_state_path(path))  # outdated now; the attribute's ctime would shadow it
    elif not _write_state(path, st, data):
        return False
    _drop_own_legacy(path)
    return True


def rekey(source: Path, target: Path) -> None:
    """After the caller's ``os.replace(source, target)``: the record follows (blocking).

    An attribute moves with the file; a record in the state directory is renamed, and takes
    the ctime of the rename, when it was the record of the very file now at ``target``.
    """
    found = _read_json(_state_path(source))
    _unlink(_state_path(source))
    with contextlib.suppress(OSError):
        st = target.stat()
        if found is not None and _same_file(found, st):
            _write_state(target, st, found["marker"])


def drop(path: Path) -> None:
    """Forget the record of ``path`` wherever it is, the file there or gone (blocking)."""
    if _HAS_XATTRS:
        with contextlib.suppress(OSError):
            os.removexattr(path, XATTR)
    _unlink(_state_path(path))
    _unlink(legacy_path(path))


# extended attribute --------------------------------------------------------------------------


def _xattrs() -> bool:
    """Whether records go to extended attributes where the file takes them."""
    return _HAS_XATTRS and env_settings().trust_record == "auto"


def _read_xattr(path: Path) -> dict[str, Any] | None:
    try:
        return _as_dict(os.getxattr(path, XATTR))
    except OSError:  # none, or the filesystem has no user attributes
        return None


def _write_xattr(path: Path, blob: bytes) -> bool:
    """False where the filesystem has no user attributes, or the file refuses (read-only,
    another user's, too big a value)."""
    try:
        os.setxattr(path, XATTR, blob)
    except OSError:
        return False
    return True


# state directory -----------------------------------------------------------------------------


def _state_path(path: Path) -> Path:
    """The record file of ``path`` in the state directory, named after its resolved path."""
    name = hashlib.sha256(os.fsencode(os.path.realpath(path))).hexdigest()[:32]
    return env_settings().state_dir / RECORDS / f"{name}.json"


def _same_file(record: dict[str, Any], st: os.stat_result) -> bool:
    return bool(record.get("dev") == st.st_dev and record.get("ino") == st.st_ino)


def _read_state(path: Path, st: os.stat_result) -> Found | None:
    record = _read_json(_state_path(path))
    if record is None or not _same_file(record, st) or not isinstance(record["marker"], dict):
        return None  # none, or another file's that had this name
    current = record.get("ctime_ns") == st.st_ctime_ns
    return Found(record["marker"], current=current)


def _write_state(path: Path, st: os.stat_result, data: dict[str, Any]) -> bool:
    target = _state_path(path)
    record = {
        "version": RECORD_VERSION,
        "path": os.path.realpath(path),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "ctime_ns": st.st_ctime_ns,
        "marker": data,
    }
    try:
        make_private_dirs(target.parent)
        new = not os.path.lexists(target)
        replace_with(target, json.dumps(record).encode("utf-8"), mode=0o600)
    except OSError:
        return False
    if new:
        _sweep(target)
    return True


def _sweep(added: Path) -> None:
    """Delete a few records, chosen at random, whose file is gone or another now."""
    with contextlib.suppress(OSError):
        names = [n for n in os.listdir(added.parent) if n.endswith(".json") and n != added.name]
        for name in random.sample(names, min(SWEEP, len(names))):
            record = _read_json(added.parent / name)
            if record is not None and not _describes_a_file(record):
                _unlink(added.parent / name)


def _describes_a_file(record: dict[str, Any]) -> bool:
    try:
        return _same_file(record, os.stat(str(record.get("path"))))
    except OSError:
        return False


def _read_json(path: Path) -> dict[str, Any] | None:
    """A record file of this user's, never read through a link; None if missing or damaged."""
    try:
        blob, st = read_small(path)
    except OSError:
        return None
    record = _as_dict(blob) if is_own_file(st) else None
    if record is None or record.get("version") != RECORD_VERSION or "marker" not in record:
        return None
    return record


# beside the file (earlier versions) ----------------------------------------------------------


def _read_legacy(path: Path, st: os.stat_result) -> Found | None:
    """The marker file of an earlier version, if it is a regular file of this user's, as the
    file ``st`` describes is (:func:`load` asks only then; one planted by anybody else says
    nothing)."""
    try:
        blob, own = read_small(legacy_path(path))
    except OSError:
        return None
    if own.st_uid != current_uid() or st.st_uid != current_uid():
        return None
    data = _as_dict(blob)
    return Found(data, current=True, legacy=True) if data is not None else None


def _drop_own_legacy(path: Path) -> None:
    """Delete an earlier version's marker of ``path`` if it is this user's regular file (one
    of the file's owner stays: it is theirs)."""
    old = legacy_path(path)
    with contextlib.suppress(OSError):
        if is_own_file(old.lstat()):
            old.unlink()


def _as_dict(blob: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(blob)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
