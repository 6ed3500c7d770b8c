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
from .._config import RetryPolicy, Timeouts
from .._expectation import expect_sha256
from .._models import FetchResult, ProgressCallback, ProgressEvent, RemoteInfo
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
    cacert: str | PathLike[str] | None = None,
    insecure: bool = False,
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
        session: an aiohttp session of your own to use (it is not closed; it keeps its own
            TLS settings unless ``cacert`` or ``insecure`` is given).
        cacert: a PEM file of CA certificates to trust instead of the system store and of
            ``REQUESTS_CA_BUNDLE`` and the like (a private or TLS-inspecting proxy's CA).
        insecure: check no TLS certificate (an InsecureWarning says so); only when asked.

    Returns:
        A FetchResult.

    Raises:
        OfflineError: offline, and ``dest`` is missing or not the file asked for.
        FetchError: a subclass saying what went wrong; nothing is left at ``dest``.
    """
    options = make_options(
        connections=connections, chunk_size=chunk_size, retry=retry, timeout=timeout,
        headers=headers, mirror_headers=mirror_headers, progress=progress, hash=hash,
        offline=offline, verify=verify, cacert=cacert, insecure=insecure, url=url,
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
    verdict = await _judge(request)
    if verdict.hit is not None:
        return _hit_result(request, verdict.hit, started)
    check_destination(request.dest, request.url)
    async with TargetLock(request.dest) as lock:
        # another process or thread may have just fetched it
        verdict = await _judge(request, waited=lock.waited)
        if verdict.hit is not None:
            return _hit_result(request, verdict.hit, started)
        opened: contextlib.AbstractAsyncContextManager[Transport] = (
            contextlib.nullcontext(transport)
            if transport is not None
            else Transport(request.options, session=session)
        )
        async with opened as shared:
            return await _probe_and_download(request, shared, started, probe=verdict.probe)


async def _probe_and_download(
    request: Request, transport: Transport, started: float, *, probe: bool
) -> FetchResult:
    """Under the lock: an existing target the probe shows unchanged (where the verdict asked
    for a probe), else a download."""
    download = Download(request, transport)
    if probe:
        info = await download.probe()
        verdict = await _judge(request, remote=info, announced=download.expected.digest)
        if verdict.hit is not None:
            return _hit_result(request, verdict.hit, started)
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


async def _judge(
    request: Request,
    *,
    waited: bool | None = None,
    remote: RemoteInfo | None = None,
    announced: str | None = None,
) -> _cache.Verdict:
    """The cache's verdict on ``dest`` (see :func:`asyncfetch._cache.lookup.judge`); offline,
    a file that is not good is an OfflineError saying why."""
    verdict = await asyncio.to_thread(
        _cache.judge,
        request.dest,
        request.expected,
        urls=request.urls,
        options=request.options,
        remote=remote,
        announced=announced,
        waited=waited,
    )
    if not verdict.good and request.options.offline:
        raise _cache.offline_error(request.dest, request.url, verdict.reason)
    return verdict


def _hit_result(request: Request, hit: _cache.Hit, started: float) -> FetchResult:
    for kind in ("started", "done"):  # as for a download: started first, then done
        emit_safely(request, ProgressEvent(kind, request.url, hit.size, hit.size))
    return hit.result(started)
