"""The cache dir as ``asyncfetch serve`` serves it: only complete files, by a name that stays
inside it, and never one ``asyncfetch cache verify`` found corrupt; and whose file a name holds.

Plain blocking functions of the cache dir (the service runs them in a thread): making it,
finding a servable file, listing them, and telling whether the file at a name is another one
than an order asks for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._cache.lookup import judge
from .._cache.marker import read_marker
from .._errors import DestinationError
from .._expectation import Sha256
from .._options import Options
from .._userinfo import redact
from .orders import Order, is_servable_name


def is_corrupt(path: Path) -> bool:
    """Whether ``path``'s marker says it is corrupt (``asyncfetch cache verify`` found another
    digest than recorded) (blocking; reads one small file).

    A file changed since (touched, copied over) stays corrupt: only hashing it again (``cache
    verify``, a fetch) or downloading it again rewrites the marker.
    """
    marker = read_marker(path)
    return marker is not None and marker.corrupt


def _has_digest(path: Path, sha256: str) -> bool:
    """Whether the file at ``path`` has the SHA-256 ``sha256``, as the cache judges it (its
    marker's digest while it describes the file, else re-hashed once; blocking)."""
    return judge(path, Sha256(sha256.lower()), urls=(), options=Options()).good


def _file_in_the_way(directory: Path) -> Path | None:
    """The file (not a directory) standing at ``directory`` or at one of its parents."""
    for path in (directory, *directory.parents):
        if path.exists():
            return None if path.is_dir() else path
    return None


def make_cache_dir(cache_dir: Path) -> None:
    """Create the cache dir ``cache_dir`` if missing (blocking).

    Raises:
        DestinationError: it cannot be made, e.g. a file stands in its way.
    """
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        in_the_way = _file_in_the_way(cache_dir)
        why = (
            f"{in_the_way} is a file, not a directory; move it away or"
            if in_the_way
            else f"{exc.strerror or exc};"
        )
        raise DestinationError(
            f"cannot use {cache_dir} as the cache dir: {why} pick another --cache-dir",
            path=str(cache_dir),
        ) from None


def lookup(cache_dir: Path, name: str) -> tuple[Path, bool] | None:
    """The complete cached file called ``name`` and whether it is corrupt, or None
    (blocking: run it in a thread)."""
    path = servable_path(cache_dir, name)
    return None if path is None else (path, is_corrupt(path))


def servable_path(cache_dir: Path, name: str) -> Path | None:
    """The complete cached file called ``name``, or None (blocking: run it in a thread)."""
    if not is_servable_name(name):
        return None
    try:
        real = (cache_dir / name).resolve(strict=True)
        inside = real.parent == cache_dir.resolve(strict=True)
    except OSError:
        return None
    if not inside or not is_servable_name(real.name) or not real.is_file():
        return None
    return real


def listing(cache_dir: Path) -> list[dict[str, Any]]:
    """Name, size, mtime and state (``complete`` or ``corrupt``) of each complete cached
    file, by name (blocking)."""
    files = []
    try:
        names = sorted(os.listdir(cache_dir))
    except OSError:
        return []
    for name in names:
        path = servable_path(cache_dir, name)
        if path is None:
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        state = "corrupt" if is_corrupt(path) else "complete"
        files.append({"name": name, "size": st.st_size, "mtime": st.st_mtime, "state": state})
    return files


def holder_of(cache_dir: Path, order: Order) -> str | None:
    """Where the different file ``order.name`` holds came from (``an unknown source``
    when nothing says), or None when it holds none, or the one asked for: from the same
    URL, or with the SHA-256 asked for (blocking: may hash the file once)."""
    path = servable_path(cache_dir, order.name)
    if path is None:
        return None
    marker = read_marker(path)
    if marker is not None and marker.url == redact(order.url):
        return None
    if order.sha256 is not None and _has_digest(path, order.sha256):
        return None
    return marker.url if marker is not None and marker.url else "an unknown source"
