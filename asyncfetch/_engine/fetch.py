"""fetch(): the cache check, the target's lock, then probe → plan → workers → sink → verify →
rename (see :class:`~asyncfetch._engine.download.Download`).

One file from one or more sources (the URL and its mirrors), over many connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from os import PathLike
from typing import TYPE_CHECKING

from .._cache import lookup as _cache
from .._cache import marker as _marker
from .._cache.lookup import in_hub_cache
from .._config import RetryPolicy, Timeouts
from .._expectation import HashPrefix, Nothing, expect_sha256
from .._models import FetchResult, ProgressCallback, ProgressEvent
from .._options import make_options
from .._storage.destination import check_destination, check_target_kind
from .._storage.lock import TargetLock
from .._transport.client import Transport
from .download import Download, emit_safely
from .request import Request, make_request

if TYPE_CHECKING:
    from .._transport.client import Session


async def fetch(
    url: str,
    dest: str | PathLike[str],
    *,
    mirrors: Iterable[str] = (),
    sha256: str | None = None,
    connections: int = 16,
    chunk_size: int | str | None = None,
    retry: RetryPolicy | int | None = None,
    timeout: Timeouts | float | None = None,
    headers: Mapping[str, str] | None = None,
    mirror_headers: Mapping[str, Mapping[str, str]] | None = None,
    progress: ProgressCallback | bool | None = None,
    hash: bool = True,
    offline: bool | None = None,
    verify: bool = False,
    session: Session | None = None,
) -> FetchResult:
    """Download ``url`` to ``dest`` over parallel ranged connections, verified.

    The file appears at ``dest`` only once complete and, when ``sha256`` is given, matching
    it; partial data stays in a ``.part`` file beside it that a later call resumes from.

    If ``dest`` already exists it is used as it is (``FetchResult.cached``) when it is the
    file asked for: with ``sha256``, when its digest matches (trusted from the marker written
    beside it while its size and mtime are unchanged, so a hit costs no re-hash and no
    network); without, when a probe shows the same size and validators (ETag, Last-Modified)
    it was downloaded under. A file asyncfetch did not download (no marker) is a hit without
    ``sha256`` only in torch.hub's cache directory (as torch.hub's download: same size, not
    older than Last-Modified) and never with ``verify``. Otherwise it is downloaded again and
    replaced. Processes and
    threads asking for the same ``dest`` at once download it once: the others wait on a lock
    file beside it and then use the result.

    Args:
        url: the file's URL.
        dest: where to put it.
        mirrors: more URLs serving the same file; connections are spread over all of them.
        sha256: the expected SHA-256 (hex). Without it the digest is still computed and
            returned, unless ``hash=False``.
        connections: parallel connections in all.
        chunk_size: bytes per ranged request, a number or a size such as ``"8M"`` (default:
            small first, growing to 16 MiB).
        retry: a RetryPolicy, or a number of retries.
        timeout: a Timeouts, or seconds for both connect and read-idle.
        headers: extra request headers. ``Authorization`` and ``Cookie`` go only to the
            origin of ``url``, never to a mirror's or to where a redirect leads.
        mirror_headers: headers for mirrors, ``{mirror URL: {name: value}}``: each goes to
            every request to that URL's origin (scheme, host, port), and to no other.
        progress: called with a ProgressEvent as the download goes; ``True`` draws a tqdm
            bar on stderr, as torch.hub does.
        hash: compute the SHA-256 when no ``sha256`` is given.
        offline: use only what is on disk, never the network (default: as the environment
            variable ``ASYNCFETCH_OFFLINE`` says).
        verify: re-hash an existing ``dest`` even when its marker vouches for it; a file no
            marker vouches for (nothing says what it should be) is downloaded again.
        session: an aiohttp session of your own to use (it is not closed).

    Returns:
        A FetchResult.

    Raises:
        OfflineError: offline, and ``dest`` is missing or not the file asked for.
        FetchError: a subclass saying what went wrong; nothing is left at ``dest``.
    """
    options = make_options(
        connections=connections, chunk_size=chunk_size, retry=retry, timeout=timeout,
        headers=headers, mirror_headers=mirror_headers, progress=progress, hash=hash,
        offline=offline, verify=verify, url=url,
    )  # fmt: skip
    expected = expect_sha256(sha256, url)
    request = make_request(url, dest, options, mirrors=mirrors, expected=expected)
    return await run(request, session=session)


async def run(
    request: Request,
    *,
    session: Session | None = None,
    transport: Transport | None = None,
) -> FetchResult:
    """Carry out a validated Request: a cache hit, or a download under the target's lock.

    ``transport``: an open Transport to share (a batch's session and connection budget);
    its timeouts and headers apply instead of the request's.
    """
    started = time.monotonic()
    check_target_kind(request.dest, request.url)  # a FIFO or a device is never opened
    hit = await _local_hit(request)
    if hit is not None:
        return _hit_result(request, hit, started)
    check_destination(request.dest, request.url)
    async with TargetLock(request.dest) as lock:
        # another process or thread may have just fetched it
        hit = await _local_hit(request, waited=lock.waited)
        if hit is not None:
            return _hit_result(request, hit, started)
        opened: contextlib.AbstractAsyncContextManager[Transport] = (
            contextlib.nullcontext(transport)
            if transport is not None
            else Transport(request.options, session=session)
        )
        async with opened as shared:
            return await _probe_and_download(request, shared, started)


async def _probe_and_download(
    request: Request, transport: Transport, started: float
) -> FetchResult:
    """Under the lock: an existing target the probe shows unchanged, else a download."""
    download = Download(request, transport)
    hit = await _remote_hit(request, download)
    if hit is not None:
        return _hit_result(request, hit, started)
    result = await download.run()
    await asyncio.to_thread(
        _marker.record_download,
        request.dest,
        url=request.url,
        sha256=result.sha256,
        verified=request.sha256 is not None,
        info=download.info,
        checked=download.checked_against,
    )
    download.finish(result)  # after the marker: a rerun finds the file even if a callback raises
    return result


async def _local_hit(request: Request, waited: bool | None = None) -> _cache.Hit | None:
    """A hit decided from the disk alone (a digest or prefix expected, or offline); raises
    offline misses. ``waited``: asked under the target's lock, after waiting for it or not
    (None: before taking it)."""
    if isinstance(request.expected, HashPrefix):
        return await asyncio.to_thread(_prefixed_hit, request, request.expected.prefix, waited)
    return await asyncio.to_thread(
        _cache.find_local,
        request.dest,
        url=request.url,
        sha256=request.sha256,
        verify=request.options.verify,
        offline=request.options.offline,
        hashing=request.options.hashing,
        mirrors=request.urls[1:],
    )


def _prefixed_hit(request: Request, prefix: str, waited: bool | None) -> _cache.Hit | None:
    """torch.hub's ``check_hash``: a file whose digest starts with ``prefix`` (blocking).

    Before the lock only, unless the caller trusts no file it finds (``download_url_to_file``
    always downloads, as torch.hub's, except offline); under it, only after waiting for
    another download of the same file, which may have just put it in place.
    """
    options = request.options
    if waited is None:
        if options.trust_unvouched is False and not options.offline:
            return None
        verify, offline = options.verify, options.offline
    elif waited:
        verify, offline = False, False
    else:
        return None
    return _cache.find_prefixed(
        request.dest, url=request.url, prefix=prefix, verify=verify, offline=offline
    )


async def _remote_hit(request: Request, download: Download) -> _cache.Hit | None:
    """Expecting nothing, an existing ``dest`` is a hit if a probe shows it unchanged, and
    has the SHA-256 the primary announces, if it announces one."""
    if not isinstance(request.expected, Nothing) or not request.dest.exists():
        return None
    if not await asyncio.to_thread(_worth_a_probe, request):
        return None
    info = await download.probe()
    hit = await asyncio.to_thread(
        _cache.find_remote,
        request.dest,
        info,
        urls=request.urls,
        verify=request.options.verify,
        hashing=request.options.hashing,
        trust_unvouched=_trusts_unvouched(request),
    )
    announced = download.expected.digest
    return hit if hit is None or announced is None or hit.sha256 == announced else None


def _worth_a_probe(request: Request) -> bool:
    """Whether a probe can make ``dest`` a hit (blocking; see :func:`_cache.find_remote`).

    Where a file no marker vouches for may be one (``trust_unvouched``, without ``verify``),
    always; else only if asyncfetch's marker vouches for it as the URL's and still describes
    it, or has the digest that a file changed since must still have.
    """
    if _trusts_unvouched(request) and not request.options.verify:
        return True
    marker = _marker.read_marker(request.dest)
    if marker is None or not _cache.vouches_for(marker, _marker.recorded_urls(request.urls)):
        return False
    try:
        unchanged = marker.describes(request.dest.stat())
    except OSError:
        return False
    return unchanged or marker.expected is not None


def _trusts_unvouched(request: Request) -> bool:
    """Whether a file no marker vouches for may be a hit; by default, only in torch.hub's
    cache directory (blocking: resolves links)."""
    trust = request.options.trust_unvouched
    return in_hub_cache(request.dest) if trust is None else trust


def _hit_result(request: Request, hit: _cache.Hit, started: float) -> FetchResult:
    for kind in ("started", "done"):  # as for a download: started first, then done
        emit_safely(request, ProgressEvent(kind, request.url, hit.size, hit.size))
    return hit.result(started)
