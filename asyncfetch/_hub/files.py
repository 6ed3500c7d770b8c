"""The file side of the torch.hub facade, torch-free: where a checkpoint's source comes from
(URL or registry name), torch.hub's hash-prefix check, and getting the file into the cache
once per node.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from .._cache import lookup as _cache
from .._engine.fetch import run
from .._engine.progress import ProgressBar
from .._engine.request import make_request, mirror_urls
from .._errors import IntegrityError, InvalidRequest
from .._expectation import NOTHING, Expectation, HashPrefix, Sha256, check_sha256
from .._models import FetchResult
from .._options import Options
from .._storage.destination import check_target_kind
from .._sync import run_sync
from .._userinfo import redact
from . import registry as _registry
from .distributed import SINGLE, NodeRole, once_per_node

log = logging.getLogger("asyncfetch")

HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's: NAME-<hex>.EXT
MIN_PREFIX = 8
UNVERIFIED_SUFFIX = ".unverified"  # earlier versions staged check_hash downloads here
_HEX = re.compile(r"[0-9a-fA-F]{1,64}")


@dataclass(frozen=True)
class Checkpoint:
    """Where one checkpoint comes from and how to check it."""

    url: str
    mirrors: tuple[str, ...] = ()
    sha256: str | None = None
    file_name: str | None = None
    check_hash: bool = False
    origin: str | None = None  # "registry FILE, entry [NAME]": the entry that gave the checks

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", check_sha256(self.sha256, self.url))


def resolve(
    url_or_name: str,
    *,
    mirrors: Iterable[str] = (),
    sha256: str | None = None,
    file_name: str | None = None,
    check_hash: bool = False,
    registry: str | PathLike[str] | None = None,
) -> Checkpoint:
    """A URL as it is, or a registry name looked up; the caller's options win over the entry's.

    Raises:
        InvalidRequest: an unknown name, or a ``sha256`` that contradicts the registry's.
    """
    if not _registry.looks_like_name(url_or_name):
        return Checkpoint(url_or_name, mirror_urls(mirrors), sha256, file_name, check_hash)
    entry = _registry.lookup(url_or_name, registry)
    sha256 = check_sha256(sha256, entry.url)
    if sha256 and entry.sha256 and sha256 != entry.sha256:
        raise InvalidRequest(
            f"sha256 {sha256} contradicts the registry's {entry.sha256} for {entry.name!r} "
            f"({entry.url}); fix one of them",
            url=entry.url,
        )
    return Checkpoint(
        url=entry.url,
        mirrors=tuple(dict.fromkeys((*entry.mirrors, *mirror_urls(mirrors)))),
        sha256=sha256 or entry.sha256,
        file_name=file_name or entry.file_name,
        check_hash=check_hash or entry.check_hash,
        origin=entry.where if entry.sha256 or not sha256 else None,  # not the caller's digest
    )


def hash_prefix_of(file_name: str, url: str | None = None) -> str:
    """The SHA-256 prefix torch.hub's ``check_hash`` reads from ``NAME-<hex>.EXT``.

    Raises:
        InvalidRequest: the name carries no prefix, an empty one, or fewer than 8 hex digits
            (torch.hub would skip or weaken the check silently).
    """
    match = HASH_REGEX.search(file_name)
    advice = (
        "rename it NAME-<first 8+ hex digits of its SHA-256>.EXT, pass sha256=, or drop check_hash"
    )
    if match is None:
        reason = "carries no SHA-256 prefix (torch.hub expects NAME-<hex>.EXT)"
    elif not match.group(1):
        reason = "has an empty SHA-256 prefix ('-.')"
    elif len(match.group(1)) < MIN_PREFIX:
        reason = f"has only {len(match.group(1))} hex digits of SHA-256, fewer than {MIN_PREFIX}"
    else:
        return match.group(1)
    raise InvalidRequest(
        f"check_hash=True, but file name {file_name!r} {reason}; {advice}", url=url
    )


def check_prefix(prefix: str, url: str | None = None) -> str:
    """``prefix`` in lower case if it is 1 to 64 hex digits, else InvalidRequest."""
    if not isinstance(prefix, str) or not _HEX.fullmatch(prefix):
        raise InvalidRequest(
            f"hash_prefix must be 1 to 64 hex digits of the SHA-256, got {prefix!r}", url=url
        )
    return prefix.lower()


def get_file(
    source: Checkpoint, dest: Path, hash_prefix: str | None, options: Options
) -> FetchResult:
    """Download ``source`` to ``dest``, verified by its ``sha256`` and/or ``hash_prefix``.

    An intact file already at ``dest`` is used as :func:`asyncfetch.fetch` would use it. With
    only a prefix, that is when its digest (the marker's, or re-hashed) starts with the
    prefix, unless ``options.trust_unvouched`` is off (``download_url_to_file``, which always
    downloads, as torch.hub's does, except offline); else the file is downloaded and renamed
    to ``dest`` once its digest starts with the prefix.

    Raises:
        IntegrityError: the digest does not match (a HashPrefixMismatch, also a RuntimeError,
            for ``hash_prefix``); nothing is left at ``dest``.
        OfflineError: offline, and ``dest`` is missing or not the file asked for.
    """
    if hash_prefix and source.sha256 and not source.sha256.startswith(hash_prefix):
        raise InvalidRequest(
            f"{source.url}: the file name's hash prefix {hash_prefix} contradicts sha256 "
            f"{source.sha256}; fix one of them" + (f" in {source.origin}" if source.origin else ""),
            url=source.url,
        )
    expected = _expectation(source, hash_prefix)
    bar = ProgressBar(dest.name) if options.progress else None
    try:
        drawn = dataclasses.replace(options, progress=bar)
        request = make_request(source.url, dest, drawn, mirrors=source.mirrors, expected=expected)
        return run_sync(run(request))
    except IntegrityError as exc:
        if source.origin is None or exc.expected != (source.sha256 or hash_prefix):
            raise
        raise type(exc)(
            f"{exc}{_fix_in(source)}", url=exc.url, expected=exc.expected, actual=exc.actual
        ) from None
    finally:
        if bar is not None:
            bar.close()


def _expectation(source: Checkpoint, hash_prefix: str | None) -> Expectation:
    """The full SHA-256 when there is one (a prefix was checked against it), else the prefix."""
    if source.sha256 is not None:
        return Sha256(source.sha256)
    return HashPrefix(hash_prefix) if hash_prefix else NOTHING


def _fix_in(source: Checkpoint) -> str:
    """Where to fix a digest that came from a registry entry, as the end of a message."""
    if source.origin is None:
        return ""
    return f"; if the file changed upstream, update {source.origin}"


def ensure_cached(
    source: Checkpoint, path: Path, options: Options, role: NodeRole = SINGLE
) -> FetchResult | None:
    """torch.hub's rule: use ``path`` if it is there, else download it (once per node).

    An existing file is used as is, except that with a ``sha256`` it is verified first, and
    with ``check_hash`` its SHA-256 must start with the prefix in its name (torch.hub does not
    check a cached file again; asyncfetch does); if not, it is downloaded again. A file whose
    marker vouches for its digest (unchanged since it was computed) is not re-hashed; one
    without is hashed once and given a marker (see :func:`asyncfetch._cache.lookup.judge`).
    Returns the FetchResult of a download, None for a hit.
    """
    hash_prefix = hash_prefix_of(path.name, source.url) if source.check_hash else None
    path.parent.mkdir(parents=True, exist_ok=True)
    check_target_kind(path, source.url)

    expected = _expectation(source, hash_prefix)
    urls = (source.url, *source.mirrors)

    def ensure() -> FetchResult | None:
        verdict = _cache.judge(path, expected, urls=urls, options=options, any_file=True)
        if verdict.good:
            return None
        if verdict.found:
            log.warning("%s %s; downloading it again", path, verdict.reason)
        print(f'Downloading: "{redact(source.url)}" to {path}', file=sys.stderr, flush=True)
        return get_file(source, path, hash_prefix, options)

    with _thread_lock(path):
        return once_per_node(path, ensure, role)


_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    """One lock per cached path in this process, so threads wait for each other's download."""
    with _thread_locks_guard:
        return _thread_locks.setdefault(path.absolute(), threading.Lock())
