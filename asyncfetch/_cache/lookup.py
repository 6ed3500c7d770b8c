"""The torch.hub-compatible cache: where checkpoints live, and when a file there is a hit.

Paths follow torch.hub exactly, so a file either tool downloaded is a hit for the other.

Beside a file asyncfetch wrote or checked sits a marker (:mod:`._marker`). A call with the
same expected digest trusts the file while its size and mtime still match the marker, without
re-reading it; anything else (no marker, a changed file, ``verify=True``) re-hashes it. A file
changed since asyncfetch downloaded it is the same file only if it still has the digest
recorded then.

When is an existing file a hit? One function decides, :func:`judge`, and says why in a
:class:`Verdict`; offline, a file that is not one is an OfflineError with that reason.

- a full SHA-256 expected: when its digest (the marker's, or re-hashed) is that digest. No
  network.
- a SHA-256 prefix expected (torch.hub's ``check_hash``, ``hash_prefix``): when its digest
  (the marker's, or re-hashed; a changed file must still have the digest recorded at its
  download) starts with the prefix. No network. ``download_url_to_file`` (which trusts no file
  it finds) reuses none online, as torch.hub's, but one another download just put in place
  while it waited for the lock.
- nothing expected, in torch.hub's cache as ``load_state_dict_from_url`` uses it: any file.
- nothing expected, offline: whenever it exists (and is not found corrupt). A file changed
  since its marker's digest (of a download, or verify's baseline of a file asyncfetch never
  downloaded) is hashed again and must still have it. With ``verify``, only a file its
  marker vouches for (below).
- nothing expected, otherwise, after a probe: same size as the server says, and its marker
  vouches for it as one of the URLs' (:func:`vouches_for`: asyncfetch downloaded it from
  there, or a caller's SHA-256 matched it) with validators (ETag, Last-Modified) that agree
  (changed since: and it still has the digest recorded). Any other file (no marker, or one
  that vouches for nothing: verify's baseline, the record of a file used as torch.hub's) only
  where ``trust_unvouched`` (by default: in torch.hub's cache directory, where torch.hub may
  have made it), never with ``verify`` (nothing says what it should be), when it is not
  older than the server's Last-Modified, and, with a baseline, while it still has that
  digest. Using it so records its digest but vouches for nothing. When the primary announces
  a SHA-256, the file must have it too. The verdict before the probe says whether one is
  worth making.
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
from .._expectation import Expectation, HashPrefix
from .._models import FetchResult, RemoteInfo
from .._options import Options
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


@dataclass(frozen=True)
class Verdict:
    """Whether a file on disk is already the one asked for, and why (see :func:`judge`).

    Attributes:
        good: use it as it is (``hit`` says how; its marker is updated).
        reason: why, as the end of a sentence that begins with the path.
        hit: the file as a hit, when good.
        found: whether there is a file at all.
        probe: not good yet, but a probe of the server may make it so: judge it again with
            what the probe found.
    """

    good: bool
    reason: str
    hit: Hit | None = None
    found: bool = True
    probe: bool = False


_UNVOUCHED = "is not vouched for by asyncfetch's marker as this URL's download"
_UNVERIFIABLE = "cannot be verified: asyncfetch did not download it and no sha256 was given"


def _bad(reason: str, *, probe: bool = False) -> Verdict:
    return Verdict(False, reason, probe=probe)


def judge(
    path: Path,
    expected: Expectation,
    *,
    urls: tuple[str, ...],
    options: Options,
    remote: RemoteInfo | None = None,
    announced: str | None = None,
    waited: bool | None = None,
    any_file: bool = False,
) -> Verdict:
    """Decide whether the file at ``path`` is already the one asked for (blocking).

    The one place that decides it; see the module docstring for the rules. No network:
    ``remote`` is what a probe found, when the verdict asked for one.

    Args:
        path: the file.
        expected: what its bytes must be.
        urls: the URL it is for, then its mirrors (as the markers record them).
        options: ``verify``, ``offline``, ``hashing`` and ``trust_unvouched`` count.
        remote: what probing ``urls`` found (only counts when nothing is expected).
        announced: the SHA-256 the primary URL announced, if it did: a file ``remote`` shows
            unchanged must have it too.
        waited: asked under the target's lock after waiting for another download of it
            (True) or not (False); None: before taking the lock.
        any_file: torch.hub's rule for its cache: with nothing expected, any file will do.

    Raises:
        DestinationError: ``path`` is a directory, or cannot be read.
    """
    url = urls[0] if urls else None
    st = _stat_file(path, url)
    if st is None:
        return Verdict(False, "is not in the cache", found=False)
    if isinstance(expected, HashPrefix) and not _worth_judging_prefix(options, waited):
        why = "was looked at before the lock" if waited is False else "is never reused here"
        return _bad(f"{why} (download_url_to_file downloads again, as torch.hub's does)")
    marker = read_marker(path)
    if expected.digest is not None:  # a full SHA-256
        return _judge_digest(path, st, marker, url, expected.digest, verify=options.verify)
    if isinstance(expected, HashPrefix):
        verify = options.verify and waited is None  # a file just put in place is not re-read
        return _judge_prefix(path, st, marker, url, expected.prefix, verify=verify)
    if any_file:
        return Verdict(
            True, "is used as it is, as torch.hub uses its cache", Hit(path, st.st_size, None)
        )
    if options.offline:
        return _judge_offline(path, st, marker, urls, options)
    trust = in_hub_cache(path) if options.trust_unvouched is None else options.trust_unvouched
    if remote is None:
        return _worth_a_probe(st, marker, urls, trust=trust, verify=options.verify)
    return _judge_remote(path, st, marker, remote, urls, options, trust, announced)


def _worth_judging_prefix(options: Options, waited: bool | None) -> bool:
    """For a prefix: before the lock, unless the caller reuses no file it finds online
    (``download_url_to_file``); under the lock, only after waiting for another download,
    which may have just put the file in place."""
    if waited is None:
        return options.trust_unvouched is not False or options.offline
    return waited


def _judge_digest(
    path: Path,
    st: os.stat_result,
    marker: Marker | None,
    url: str | None,
    sha256: str,
    *,
    verify: bool,
) -> Verdict:
    """Good when the file's digest, the marker's or re-hashed, is ``sha256``."""
    fresh = _fresh(marker, st)
    if fresh is not None and fresh.sha256 and not verify:
        marker = fresh
    else:
        marker = replace(rehash(path, st, fresh), url=(fresh and fresh.url) or url)
        write_marker(path, marker)  # the next look needs no re-hash, good or bad
    if marker.sha256 != sha256:
        return _bad(f"does not have the SHA-256 {sha256}")
    hit = _use(path, replace(marker, expected=sha256, verified=True))
    return Verdict(True, f"has the SHA-256 {sha256}", hit)


def _judge_prefix(
    path: Path,
    st: os.stat_result,
    recorded: Marker | None,
    url: str | None,
    prefix: str,
    *,
    verify: bool,
) -> Verdict:
    """Good when the file's digest, the marker's or re-hashed, starts with ``prefix``."""
    marker = _fresh(recorded, st)
    if verify or marker is None or not marker.sha256:
        # a changed file is compared with the digest recorded at its download (``corrupt``)
        marker = replace(rehash(path, st, recorded), url=(recorded and recorded.url) or url)
        write_marker(path, marker)  # the next look needs no re-hash, good or bad
    if marker.corrupt or not str(marker.sha256).startswith(prefix):
        return _bad(f"does not have a SHA-256 starting with {prefix} (it has {marker.sha256})")
    return Verdict(True, f"has a SHA-256 starting with {prefix}", _use(path, marker))


def _judge_offline(
    path: Path, st: os.stat_result, marker: Marker | None, urls: tuple[str, ...], options: Options
) -> Verdict:
    """Offline, expecting nothing: good unless found corrupt (or, with ``verify``, unless its
    marker vouches for it); a file changed since its recorded digest must still have it."""
    fresh = _fresh(marker, st)
    known = recorded_urls(urls)
    if options.verify and not vouches_for(marker, known):
        return _bad(_UNVERIFIABLE)
    changed = _changed_download(marker, st, known, None) or (
        fresh is None and _baseline(marker)  # must still have verify's (or a caller's) digest
    )
    if changed:
        fresh = marker  # hashed below and compared with the digest recorded at the download
    used = _checked(path, st, fresh, changed=changed, options=options)
    if isinstance(used, Verdict):
        return used
    hit = _use(path, replace(used, url=used.url or (urls[0] if urls else None)))
    return Verdict(True, "is used as it is, offline", hit)


def _checked(
    path: Path, st: os.stat_result, fresh: Marker | None, *, changed: bool, options: Options
) -> Marker | Verdict:
    """``fresh`` re-hashed when the file ``changed``, when asked to ``verify``, or when hashing
    and no digest is known; a bad Verdict when that hash shows the file corrupt (recorded in
    its marker); a marker of its size and time alone when nothing vouches for it."""
    if changed or options.verify or (options.hashing and not (fresh and fresh.sha256)):
        fresh = rehash(path, st, fresh)
    if fresh is not None and fresh.corrupt:
        write_marker(path, fresh)
        return _bad(f"is corrupt (SHA-256 {fresh.sha256}, not {fresh.expected})")
    return fresh or Marker(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=None)


def _worth_a_probe(
    st: os.stat_result, marker: Marker | None, urls: tuple[str, ...], *, trust: bool, verify: bool
) -> Verdict:
    """Online, expecting nothing, before a probe: whether a probe can make the file good.

    Where a file no marker vouches for may be (``trust``, without ``verify``), always; else
    only if asyncfetch's marker vouches for it as the URL's and still describes it, or has
    the digest that a file changed since must still have.
    """
    if trust and not verify:
        return _bad("may be the server's file: a probe tells", probe=True)
    if marker is None or not vouches_for(marker, recorded_urls(urls)):
        return _bad(_UNVOUCHED if not verify else _UNVERIFIABLE)
    if marker.describes(st) or marker.expected is not None:
        return _bad("is this URL's download: a probe tells if the server still has it", probe=True)
    return _bad("changed since its download, and no digest was recorded to check it by")


def _judge_remote(
    path: Path,
    st: os.stat_result,
    marker: Marker | None,
    info: RemoteInfo,
    urls: tuple[str, ...],
    options: Options,
    trust: bool,
    announced: str | None,
) -> Verdict:
    """Expecting nothing, after a probe: the rules of the module docstring's last item."""
    if info.size is None or st.st_size != info.size:
        return _bad("does not have the size the server says")
    known = recorded_urls(urls)
    if marker is not None and marker.url in known and not _validators_agree(marker, info):
        return _bad("is another version than the server has now (ETag or Last-Modified)")
    fresh = _fresh(marker, st)
    if fresh is not None and fresh.url is not None and fresh.url not in known:
        return _bad("was downloaded from another URL")
    changed = _changed_download(marker, st, known, info)
    if changed:
        fresh = marker  # hashed below and compared with the digest recorded at the download
    elif not (fresh is not None and vouches_for(fresh, known)):
        if not trust or options.verify:
            return _bad(_UNVERIFIABLE if options.verify else _UNVOUCHED)
        if not _maybe_torch_hubs(marker, info, st):
            return _bad("is not torch.hub's copy of the server's file (older, or changed since)")
        if marker is not None and marker.expected is not None:  # a baseline: must still
            changed, fresh = fresh is None, marker  # have the digest recorded by verify
    used = _checked(path, st, fresh, changed=changed, options=options)
    if isinstance(used, Verdict):
        return used
    if announced is not None and used.sha256 != announced:
        return _bad(f"does not have the SHA-256 {announced} the server announces")
    used = replace(used, url=info.url, etag=info.etag, last_modified=info.last_modified)
    return Verdict(True, "is the server's file (same size and validators)", _use(path, used))


def offline_error(path: Path, url: str | None, why: str) -> OfflineError:
    """The error for a file offline mode cannot use: ``path`` ``why``."""
    return OfflineError(
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
