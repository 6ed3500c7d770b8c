"""The torch.hub-compatible cache: where checkpoints live, and when a file there is a hit.

Paths follow torch.hub exactly, so a file either tool downloaded is a hit for the other.

Beside a file asyncfetch wrote or checked sits a marker (:mod:`._marker`). A call with the
same expected digest trusts the file while its size and mtime still match the marker, without
re-reading it; anything else (no marker, a changed file, ``verify=True``) re-hashes it. A file
changed since asyncfetch downloaded it is the same file only if it still has the digest
recorded then.

When is an existing file a hit?

- ``sha256`` given: when its digest (the marker's, or re-hashed) is that digest. No network.
- offline: whenever it exists (and matches ``sha256`` if given, and is not found corrupt).
  A file changed since its marker's digest (of a download, or verify's baseline of a file
  asyncfetch never downloaded) is hashed again and must still have it. With ``verify``, only
  a file its marker vouches for (below).
- otherwise, after a probe: same size as the server says, and its marker vouches for it as
  one of the URLs' (:func:`vouches_for`: asyncfetch downloaded it from there, or a caller's
  SHA-256 matched it) with validators (ETag, Last-Modified) that agree (changed since: and it
  still has the digest recorded). Any other file (no marker, or one that vouches for nothing:
  verify's baseline, the record of a file used as torch.hub's) only in torch.hub's cache
  directory (torch.hub may have made it), never with ``verify`` (nothing says what it should
  be), when it is not older than the server's Last-Modified, and, with a baseline, while it
  still has that digest. Using it so records its digest but vouches for nothing.
"""

from __future__ import annotations

import os
import posixpath
import stat
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path

from .._config import env_settings
from .._errors import DestinationError, InvalidRequest, OfflineError
from .._models import FetchResult, RemoteInfo
from .marker import Marker, hash_file, read_marker, recorded_urls, write_marker

#: Asked for torch.hub's checkpoint directory as this process's torch.hub has it (after
#: ``torch.hub.set_dir``), or None where torch is not loaded. The torch facade (``hub``), the
#: one layer that knows torch, installs it; this layer never imports torch.
HubDirSource = Callable[[], Path | None]


def _no_hub_dir() -> Path | None:
    return None


_hub_dir_source: HubDirSource = _no_hub_dir


def use_hub_dir_source(source: HubDirSource) -> None:
    """Make :func:`checkpoints_dir` ask ``source`` first (the torch facade's hook)."""
    global _hub_dir_source
    _hub_dir_source = source


def checkpoints_dir(model_dir: str | PathLike[str] | None = None) -> Path:
    """torch.hub's checkpoint directory: ``model_dir``, else ``<torch.hub.get_dir()>/checkpoints``
    when torch is loaded (so ``torch.hub.set_dir`` counts), else ``$TORCH_HOME/hub/checkpoints``.
    """
    if model_dir is not None:
        return Path(model_dir).expanduser()
    return _hub_dir_source() or env_settings().torch_home / "hub" / "checkpoints"


def in_hub_cache(path: Path) -> bool:
    """Whether ``path`` is a file in torch.hub's checkpoint directory (:func:`checkpoints_dir`),
    where a file torch.hub downloaded may be (blocking: resolves links)."""
    return os.path.realpath(path.parent) == os.path.realpath(checkpoints_dir())


def file_name_for(url: str) -> str:
    """The cache file name torch.hub uses for ``url``: the basename of its path.

    Raises:
        InvalidRequest: ``url`` cannot be parsed (``http://[::1``), or its path has no name.
    """
    try:
        name = posixpath.basename(urllib.parse.urlparse(url).path)
    except ValueError as exc:  # urllib's "Invalid IPv6 URL", a bad port, ...
        raise InvalidRequest(f"{url!r} is not a valid URL: {exc}", url=url) from None
    if not name:
        raise InvalidRequest(f"{url} has no file name in its path; pass a file name", url=url)
    return name


def cached_path(
    url: str, model_dir: str | PathLike[str] | None = None, file_name: str | None = None
) -> Path:
    """Where the cache keeps ``url``'s file."""
    return checkpoints_dir(model_dir) / (file_name or file_name_for(url))


def ensure_dir(directory: Path) -> Path:
    """Create the cache directory ``directory`` if needed; DestinationError if impossible."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DestinationError(
            f"cannot create the cache directory {directory}: {exc.strerror or exc}; set "
            "TORCH_HOME, or pick another directory (--dir, -o)",
            path=str(directory),
        ) from exc
    return directory


# hits ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """A cached file that answers the request as it is."""

    path: Path
    size: int
    sha256: str | None

    def result(self, started: float) -> FetchResult:
        """This hit as the FetchResult of a call that began at ``started`` (monotonic)."""
        return FetchResult(
            path=self.path,
            size=self.size,
            sha256=self.sha256,
            elapsed=time.monotonic() - started,
            cached=True,  # nothing resumed, nothing received
        )


def _stat_file(path: Path, url: str | None) -> os.stat_result | None:
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror or exc}"
        raise DestinationError(message, path=str(path), url=url) from exc
    if stat.S_ISDIR(st.st_mode):
        raise DestinationError(
            f"{path} is a directory; give a file path (or --dir for a directory)",
            path=str(path),
            url=url,
        )
    return st


def _stat_cached(path: Path, url: str | None, *, offline: bool) -> os.stat_result | None:
    """``path``'s stat, or None when there is no file (offline, an OfflineError instead)."""
    st = _stat_file(path, url)
    if st is None:
        _raise_if_offline(offline, path, url, "is not in the cache")
    return st


def _fresh(marker: Marker | None, st: os.stat_result) -> Marker | None:
    return marker if marker is not None and marker.describes(st) else None


def _baseline(marker: Marker | None) -> bool:
    """Whether ``marker`` has a digest the file should still have that is not a download's:
    what ``cache verify`` first found, or a caller's ``sha256``."""
    return marker is not None and marker.expected is not None and marker.fetched_at is None


def _changed_download(
    marker: Marker | None, st: os.stat_result, urls: tuple[str, ...], info: RemoteInfo | None
) -> bool:
    """Whether ``marker`` recorded the digest of a download of one of ``urls`` (under validators
    that agree with ``info``, if given) and the file changed since: hash it to tell."""
    return (
        marker is not None
        and not marker.describes(st)
        and marker.expected is not None
        and marker.url in urls
        and (info is None or _validators_agree(marker, info))
    )


def rehash(path: Path, st: os.stat_result, marker: Marker | None) -> Marker:
    """Hash the file ``st`` describes; its marker, updated (``corrupt`` if it no longer matches).

    The marker is returned, not written (blocking).
    """
    digest = hash_file(path)
    base = marker or Marker(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=None)
    return replace(base, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=digest)


def _use(path: Path, marker: Marker) -> Hit:
    write_marker(path, replace(marker, last_used=time.time()))
    return Hit(path, marker.size, marker.sha256)


def find_local(
    path: Path,
    *,
    url: str | None,
    sha256: str | None,
    verify: bool,
    offline: bool,
    hashing: bool,
    mirrors: tuple[str, ...] = (),
) -> Hit | None:
    """A hit that needs no network: ``sha256`` given, or offline (blocking).

    Returns None when the network must decide (or fetch). Offline, a miss raises; a file
    changed since its download from ``url`` or one of ``mirrors`` (as online) must still have
    the digest recorded then.

    Raises:
        OfflineError: offline, and the file is missing or not the one expected.
        DestinationError: ``path`` is a directory.
    """
    st = _stat_cached(path, url, offline=offline)
    if st is None:
        return None
    marker = read_marker(path)
    fresh = _fresh(marker, st)
    if sha256 is not None:
        return _check_digest(path, st, fresh, url, sha256, verify=verify, offline=offline)
    if not offline:
        return None
    known = recorded_urls((url, *mirrors))
    if verify and not vouches_for(marker, known):
        why = "cannot be verified: asyncfetch did not download it and no sha256 was given"
        _raise_if_offline(offline, path, url, why)
    changed = _changed_download(marker, st, known, None) or (
        fresh is None and _baseline(marker)  # must still have verify's (or a caller's) digest
    )
    if changed:
        fresh = marker  # hashed below and compared with the digest recorded at the download
    if changed or verify or (hashing and not (fresh and fresh.sha256)):
        fresh = rehash(path, st, fresh)
    if fresh is not None and fresh.corrupt:
        write_marker(path, fresh)
        why = f"is corrupt (SHA-256 {fresh.sha256}, not {fresh.expected})"
        _raise_if_offline(offline, path, url, why)
        return None
    marker = fresh or Marker(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=None)
    return _use(path, replace(marker, url=marker.url or url))


def _check_digest(
    path: Path,
    st: os.stat_result,
    fresh: Marker | None,
    url: str | None,
    sha256: str,
    *,
    verify: bool,
    offline: bool,
) -> Hit | None:
    """A hit when the file's digest, the marker's or re-hashed, is ``sha256``."""
    if fresh is not None and fresh.sha256 and not verify:
        marker = fresh
    else:
        marker = replace(rehash(path, st, fresh), url=(fresh and fresh.url) or url)
        write_marker(path, marker)  # the next look needs no re-hash, hit or miss
    if marker.sha256 != sha256:
        _raise_if_offline(offline, path, url, f"does not have the SHA-256 {sha256}")
        return None
    return _use(path, replace(marker, expected=sha256, verified=True))


def find_prefixed(
    path: Path, *, url: str | None, prefix: str, verify: bool, offline: bool
) -> Hit | None:
    """A hit for a file checked only by a SHA-256 prefix (torch.hub's ``check_hash``): its
    digest, the marker's or re-hashed, starts with ``prefix`` (blocking). No network.

    Raises:
        OfflineError: offline, and the file is missing or its digest does not fit.
        DestinationError: ``path`` is a directory.
    """
    st = _stat_cached(path, url, offline=offline)
    if st is None:
        return None
    recorded = read_marker(path)
    marker = _fresh(recorded, st)
    if verify or marker is None or not marker.sha256:
        # a changed file is compared with the digest recorded at its download (``corrupt``)
        marker = replace(rehash(path, st, recorded), url=(recorded and recorded.url) or url)
        write_marker(path, marker)  # the next look needs no re-hash, hit or miss
    if marker.corrupt or not str(marker.sha256).startswith(prefix):
        why = f"does not have a SHA-256 starting with {prefix} (it has {marker.sha256})"
        _raise_if_offline(offline, path, url, why)
        return None
    return _use(path, marker)


def _raise_if_offline(offline: bool, path: Path, url: str | None, why: str) -> None:
    if offline:
        raise OfflineError(
            f"offline mode ({_offline_cause()}) and {path} {why}; download it while online "
            f"(it is looked for at exactly this path), or turn offline mode off",
            path=str(path),
            url=url,
        )


def _offline_cause() -> str:
    """What turned offline mode on: the environment variable if it is set, else the caller."""
    if env_settings().offline:
        return "ASYNCFETCH_OFFLINE is set"
    return "--offline / offline=True"


def find_remote(
    path: Path,
    info: RemoteInfo,
    *,
    urls: tuple[str, ...],
    verify: bool,
    hashing: bool,
    trust_unvouched: bool = True,
) -> Hit | None:
    """A hit for a download without ``sha256``, given what probing the URL found (blocking).

    A file whose marker vouches for it (:func:`vouches_for`) is a hit when the validators
    agree; changed since, it is hashed again (even with ``hashing`` off) and must still have
    the digest recorded then. Any other file is one torch.hub may have made: a hit only with
    ``trust_unvouched`` (torch.hub's cache) and without ``verify`` (nothing says what it should
    be), when it is not older than the server's Last-Modified (and, if ``cache verify``
    recorded a baseline, still has that digest). That hit's marker vouches for nothing.
    """
    st = _stat_file(path, info.url)
    if st is None or info.size is None or st.st_size != info.size:
        return None
    marker = read_marker(path)
    known = recorded_urls(urls)
    if marker is not None and marker.url in known and not _validators_agree(marker, info):
        return None  # the server has another version than the one downloaded here
    fresh = _fresh(marker, st)
    if fresh is not None and fresh.url is not None and fresh.url not in known:
        return None  # asyncfetch had it from another URL
    changed = _changed_download(marker, st, known, info)
    if changed:
        fresh = marker  # hashed below and compared with the digest recorded at the download
    elif not (fresh is not None and vouches_for(fresh, known)):
        if not trust_unvouched or verify or not _maybe_torch_hubs(marker, info, st):
            return None
        if marker is not None and marker.expected is not None:  # a baseline: must still
            changed, fresh = fresh is None, marker  # have the digest recorded by verify
    if changed or verify or (hashing and not (fresh and fresh.sha256)):
        fresh = rehash(path, st, fresh)
    if fresh is not None and fresh.corrupt:
        write_marker(path, fresh)
        return None
    marker = fresh or Marker(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=None)
    marker = replace(marker, url=info.url, etag=info.etag, last_modified=info.last_modified)
    return _use(path, marker)


def _maybe_torch_hubs(marker: Marker | None, info: RemoteInfo, st: os.stat_result) -> bool:
    """Whether a file no marker vouches for may be torch.hub's download of the server's copy:
    not one asyncfetch downloaded (and that changed since), not older than Last-Modified."""
    return (marker is None or marker.fetched_at is None) and not _newer_upstream(info, st)


def vouches_for(marker: Marker | None, urls: tuple[str, ...]) -> bool:
    """Whether ``marker`` says what the file should be for one of ``urls`` (as markers mask
    them): asyncfetch downloaded it from there, or a caller's SHA-256 matched it.

    Any other marker (the baseline ``cache verify`` recorded, or the record of a file found
    in torch.hub's cache and used as it was) only says what the file was: its file is trusted
    no more than one without a marker, and never where it must be verified.
    """
    return (
        marker is not None
        and marker.url in urls
        and (marker.verified or marker.fetched_at is not None)
    )


def has_digest(path: Path, sha256: str, *, url: str | None = None, verify: bool = False) -> bool:
    """Whether the file at ``path`` has the SHA-256 ``sha256`` (blocking).

    Trusted from its marker while its size and mtime are unchanged (no re-hash), else
    re-hashed once and the marker updated. False when there is no such file.
    """
    hit = find_local(path, url=url, sha256=sha256, verify=verify, offline=False, hashing=True)
    return hit is not None


def _validators_agree(marker: Marker, info: RemoteInfo) -> bool:
    pairs = [(marker.etag, info.etag), (marker.last_modified, info.last_modified)]
    return all(old == new for old, new in pairs if old and new)


def _newer_upstream(info: RemoteInfo, st: os.stat_result) -> bool:
    """Whether the server's copy changed after the file was written (Last-Modified)."""
    if not info.last_modified:
        return False
    import email.utils  # lazily: ~10 ms to import, and most checks never get here

    try:
        changed = email.utils.parsedate_to_datetime(info.last_modified).timestamp()
    except (TypeError, ValueError):
        return False
    return changed > st.st_mtime + 1
