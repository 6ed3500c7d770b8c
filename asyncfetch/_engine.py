"""fetch(): probe → plan → workers → sink → verify → rename.

One file from one or more sources (the URL and its mirrors), over many connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from . import _cache
from ._blame import Blame
from ._config import RetryPolicy, Timeouts, check_connections, env_settings
from ._errors import (
    FetchError,
    IntegrityError,
    InvalidRequest,
    RetriesExhausted,
    TransportError,
    TruncatedBody,
)
from ._lock import TargetLock
from ._mirrors import MirrorBoard
from ._models import ByteRange, EventKind, FetchResult, ProgressCallback, ProgressEvent, RemoteInfo
from ._planner import Extents, Scheduler, Task, plan_chunks
from ._probe import probe_sources
from ._retry import is_retryable, retrying
from ._sink import PartFile, Repair, check_destination
from ._transport import Body, RangeNotHonoured, Session, Transport, check_url

log = logging.getLogger("asyncfetch")

STEAL_POLL = 0.25
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Request:
    """Everything one download needs, validated."""

    urls: tuple[str, ...]
    dest: Path
    sha256: str | None = None
    connections: int = 16
    chunk_size: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: Mapping[str, str] | None = None
    progress: ProgressCallback | None = None
    hashing: bool = True
    offline: bool = False
    verify: bool = False

    @property
    def url(self) -> str:
        """The primary URL."""
        return self.urls[0]


def make_request(
    url: str,
    dest: str | PathLike[str],
    *,
    mirrors: Iterable[str] = (),
    sha256: str | None = None,
    connections: int = 16,
    chunk_size: int | None = None,
    retry: RetryPolicy | int | None = None,
    timeout: Timeouts | float | None = None,
    headers: Mapping[str, str] | None = None,
    progress: ProgressCallback | None = None,
    hash: bool = True,
    offline: bool | None = None,
    verify: bool = False,
) -> Request:
    """Check the caller's arguments and bundle them; raises InvalidRequest on bad input.

    ``offline=None`` means: as ``ASYNCFETCH_OFFLINE`` says.
    """
    urls = (check_url(url), *_usable_mirrors(url, mirrors))
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        raise InvalidRequest(f"sha256 must be 64 hex digits, got {sha256!r}", url=url)
    if chunk_size is not None and chunk_size < 1:
        raise InvalidRequest(f"chunk_size must be positive, got {chunk_size}", url=url)
    return Request(
        urls=urls,
        dest=Path(dest).expanduser().absolute(),
        sha256=sha256.lower() if sha256 else None,
        connections=check_connections(connections),
        chunk_size=chunk_size,
        retry=RetryPolicy.coerce(retry),
        timeouts=Timeouts.coerce(timeout),
        headers=headers,
        progress=progress,
        hashing=hash or sha256 is not None,
        offline=env_settings().offline if offline is None else offline,
        verify=verify,
    )


def _usable_mirrors(url: str, mirrors: Iterable[str]) -> list[str]:
    """The mirrors worth trying, duplicates merged; a malformed one is skipped with a warning."""
    usable: list[str] = []
    for mirror in mirrors:
        try:
            check_url(mirror)
        except InvalidRequest as exc:
            log.warning("skipping mirror: %s", exc)
            continue
        if mirror != url and mirror not in usable:
            usable.append(mirror)
    return usable


async def fetch(
    url: str,
    dest: str | PathLike[str],
    *,
    mirrors: Iterable[str] = (),
    sha256: str | None = None,
    connections: int = 16,
    chunk_size: int | None = None,
    retry: RetryPolicy | int | None = None,
    timeout: Timeouts | float | None = None,
    headers: Mapping[str, str] | None = None,
    progress: ProgressCallback | None = None,
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
    it was downloaded under. Otherwise it is downloaded again and replaced. Processes and
    threads asking for the same ``dest`` at once download it once: the others wait on a lock
    file beside it and then use the result.

    Args:
        url: the file's URL.
        dest: where to put it.
        mirrors: more URLs serving the same file; connections are spread over all of them.
        sha256: the expected SHA-256 (hex). Without it the digest is still computed and
            returned, unless ``hash=False``.
        connections: parallel connections in all.
        chunk_size: bytes per ranged request (default: small first, growing to 16 MiB).
        retry: a RetryPolicy, or a number of retries.
        timeout: a Timeouts, or seconds for both connect and read-idle.
        headers: extra request headers (e.g. Authorization).
        progress: called with a ProgressEvent as the download goes.
        hash: compute the SHA-256 when no ``sha256`` is given.
        offline: use only what is on disk, never the network (default: as the environment
            variable ``ASYNCFETCH_OFFLINE`` says).
        verify: re-hash an existing ``dest`` even when its marker vouches for it.
        session: an aiohttp session of your own to use (it is not closed).

    Returns:
        A FetchResult.

    Raises:
        OfflineError: offline, and ``dest`` is missing or not the file asked for.
        FetchError: a subclass saying what went wrong; nothing is left at ``dest``.
    """
    request = make_request(
        url, dest, mirrors=mirrors, sha256=sha256, connections=connections,
        chunk_size=chunk_size, retry=retry, timeout=timeout, headers=headers,
        progress=progress, hash=hash, offline=offline, verify=verify,
    )  # fmt: skip
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
    hit = await _local_hit(request)
    if hit is not None:
        return _hit_result(request, hit, started)
    check_destination(request.dest, request.url)
    async with TargetLock(request.dest):
        hit = await _local_hit(request)  # another process or thread may have just fetched it
        if hit is not None:
            return _hit_result(request, hit, started)
        opened: contextlib.AbstractAsyncContextManager[Transport] = (
            contextlib.nullcontext(transport)
            if transport is not None
            else Transport(
                timeouts=request.timeouts,
                connections=request.connections,
                headers=request.headers,
                session=session,
            )
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
        _cache.record_download,
        request.dest,
        url=request.url,
        sha256=result.sha256,
        verified=request.sha256 is not None,
        info=download.info,
    )
    return result


async def _local_hit(request: Request) -> _cache.Hit | None:
    """A hit decided from the disk alone (``sha256`` given, or offline); raises offline misses."""
    return await asyncio.to_thread(
        _cache.find_local,
        request.dest,
        url=request.url,
        sha256=request.sha256,
        verify=request.verify,
        offline=request.offline,
        hashing=request.hashing,
    )


async def _remote_hit(request: Request, download: Download) -> _cache.Hit | None:
    """Without ``sha256``, an existing ``dest`` is a hit if a probe shows it unchanged."""
    if request.sha256 is not None or not request.dest.exists():
        return None
    info = await download._probe_sources()
    return await asyncio.to_thread(
        _cache.find_remote,
        request.dest,
        info,
        urls=request.urls,
        verify=request.verify,
        hashing=request.hashing,
    )


def _hit_result(request: Request, hit: _cache.Hit, started: float) -> FetchResult:
    if request.progress is not None:
        request.progress(ProgressEvent("done", request.url, hit.size, hit.size))
    return FetchResult(
        path=hit.path,
        size=hit.size,
        sha256=hit.sha256,
        elapsed=time.monotonic() - started,
        resumed_bytes=hit.size,
        cached=True,
    )


class Download:
    """One download in progress: the steps of :func:`fetch` and the state they share."""

    def __init__(self, request: Request, transport: Transport) -> None:
        self.request = request
        self.transport = transport
        self.board = MirrorBoard.of(list(request.urls))
        self.final_urls: dict[str, str] = {}
        self.validators: dict[str, str | None] = {}
        self.served: dict[str, Extents] = {url: Extents() for url in request.urls}
        self.retries = 0
        self.done = 0
        self.size: int | None = None
        self.info: RemoteInfo | None = None  # what the probe found

    async def run(self) -> FetchResult:
        """Probe, download, verify, rename; emit events; return the result."""
        started = time.monotonic()
        self._emit("started")
        try:
            info = self.info or await self._probe_sources()
            sink = await PartFile.open(self.request.dest, info, hashing=self.request.hashing)
            digest = await self._fill_and_finish(sink, info)
        except BaseException as exc:
            self._emit("failed", message=str(exc) or type(exc).__name__)
            raise
        self._emit("done")
        return FetchResult(
            path=self.request.dest,
            size=self.size if self.size is not None else sink.written,
            sha256=digest,
            elapsed=time.monotonic() - started,
            bytes_by_mirror=self.board.bytes_by_source(),
            resumed_bytes=sink.resumed_bytes,
            retries=self.retries,
        )

    async def _fill_and_finish(self, sink: PartFile, info: RemoteInfo) -> str | None:
        self.done = sink.written
        try:
            if info.accepts_ranges and info.size is not None:
                await self._download_ranges_or_stream(sink, info.size)
            else:
                await self._download_stream(sink, info.size, info.url)
            size = info.size if info.size is not None else sink.written
            digest = await sink.finalize(size, self.request.sha256, self._repair_for(sink, size))
        except IntegrityError as exc:
            await asyncio.shield(sink.close())  # a short file is kept for a resume
            blame = self._blame()
            raise blame.explain(exc) if blame else exc from None
        except BaseException:
            await asyncio.shield(sink.close())
            raise
        if digest is not None:
            self._emit("verified")
        return digest

    # probe -------------------------------------------------------------------------------

    async def _probe_sources(self) -> RemoteInfo:
        probed = await probe_sources(
            self.transport, self.request.urls, self.board, self.request.retry
        )
        self.final_urls = {url: info.final_url for url, info in probed.sources.items()}
        self.validators = {url: info.validator for url, info in probed.sources.items()}
        self.size = probed.info.size
        self.info = probed.info
        return probed.info

    # ranged download ---------------------------------------------------------------------

    async def _download_ranges_or_stream(self, sink: PartFile, size: int) -> None:
        try:
            await self._fetch_ranges(sink, sink.missing(size))
        except (RangeNotHonoured, RetriesExhausted) as exc:
            fallback = self.board.fallback()
            if isinstance(exc, RetriesExhausted) and fallback is None:
                raise
            log.warning("%s; downloading over one connection instead", exc)
            await sink.restart()
            self.done = 0
            await self._download_stream(sink, size, fallback or self.request.url)

    async def _fetch_ranges(self, sink: PartFile, gaps: list[ByteRange]) -> None:
        chunks = plan_chunks(
            gaps, connections=self.request.connections, chunk_size=self.request.chunk_size
        )
        scheduler = Scheduler(chunks)
        count = min(self.request.connections, max(len(chunks), 1))
        await _run_all([self._worker(n, scheduler, sink) for n in range(count)])

    async def _worker(self, number: int, scheduler: Scheduler, sink: PartFile) -> None:
        home = self.board.home_for(number)
        try:
            while not scheduler.finished:
                task = scheduler.take(self.board.get(home).speed, time.monotonic())
                if task is None:
                    if not scheduler.may_steal_later():
                        return
                    await asyncio.sleep(STEAL_POLL)  # the slow tail may become worth taking
                    continue
                try:
                    await self._fetch_task(task, home, sink)
                except BaseException:
                    scheduler.give_back(task)
                    raise
                scheduler.complete(task)
                home = self.board.rehome(home, time.monotonic())
        finally:
            self.board.leave(home)

    async def _fetch_task(self, task: Task, home: str, sink: PartFile) -> None:
        """Fetch ``task`` with retries, switching sources as needed."""
        policy = retrying(self.request.retry, progress=lambda: task.pos, wait_hint=self._wait_hint)
        try:
            async for attempt in policy:
                with attempt:
                    source = self._choose_source(home)
                    task.begin(source, time.monotonic())
                    await self._attempt_task(task, source, sink)
        except TransportError as exc:
            raise self._exhausted(task, exc, policy.statistics.get("attempt_number", 1)) from exc

    def _choose_source(self, home: str, *, ranged: bool = True) -> str:
        source = self.board.pick(home, time.monotonic(), ranged=ranged)
        if source is None:
            raise RetriesExhausted(
                f"every source of {self.request.url} failed",
                url=self.request.url,
                byte_range=None,
                attempts=0,
                failures=self.board.failures(),
            )
        if source != home:
            self._emit("source_switched", message=f"{home} -> {source}")
        return source

    async def _attempt_task(self, task: Task, source: str, sink: PartFile) -> None:
        try:
            await self._stream_range(task, source, sink)
        except TransportError as exc:
            if self._source_failed(source, exc) and self.board.alive():
                exc.retryable = True  # this source is dropped; another one may serve
            raise

    def _source_failed(self, source: str, exc: TransportError) -> bool:
        """Record a failed attempt; returns True if ``source`` is dropped for good."""
        if isinstance(exc, RangeNotHonoured) and len(self.board.sources) == 1:
            return False  # the whole download falls back to one stream
        self.retries += 1
        self._emit("retry", message=str(exc))
        if exc.retryable:
            self.board.record_failure(source, str(exc), time.monotonic(), exc.retry_after)
            return False
        self.board.drop(source, str(exc))
        return True

    def _wait_hint(self, error: BaseException) -> float | None:
        url = getattr(error, "url", None)
        if url and self.board.others_usable(self._source_of(url), time.monotonic()):
            return 0.0
        return None

    def _source_of(self, url: str) -> str:
        for source, final in self.final_urls.items():
            if url in (source, final):
                return source
        return url

    def _exhausted(self, task: Task, exc: TransportError, attempts: int) -> FetchError:
        if not is_retryable(exc) and len(self.board.sources) == 1:
            return exc
        return RetriesExhausted(
            f"{self.request.url}: {task.byte_range()} failed after {attempts} attempts; "
            f"last error: {exc}. Run again to resume from the bytes already on disk.",
            url=self.request.url,
            byte_range=(task.pos, task.stop),
            attempts=attempts,
            failures=self.board.failures() or {self.request.url: str(exc)},
        )

    async def _stream_range(
        self, task: Task, source: str, sink: PartFile, *, whole: bool = False
    ) -> None:
        """One request: ``task``'s range, or with ``whole`` the whole file from byte 0."""
        url = self.final_urls.get(source, source)
        started = time.monotonic()
        before = task.pos
        byte_range = None if whole else task.byte_range()
        try:
            validator = self.validators.get(source)
            to_eof = whole and self.size is None
            async with self.transport.open(
                url, byte_range, if_range=validator, window=task, fast=not to_eof
            ) as body:
                started = body.sent_at  # a wait for a batch's connection slot is not slowness
                task.begin(source, started)
                await self._copy_body(body, task, sink, source, to_eof=to_eof)
        finally:
            self.board.record_bytes(source, task.pos - before, time.monotonic() - started)

    async def _copy_body(
        self, body: Body, task: Task, sink: PartFile, source: str, *, to_eof: bool = False
    ) -> None:
        """Copy the body to the part file at ``task.pos`` until ``task.stop``, batch by batch.

        ``task.pos`` only moves past bytes that are written, so a retry continues exactly
        where this attempt got to; the body hands over what it received before an error
        ahead of the error. With ``to_eof``, a clean end of the body ends the copy.
        """
        while task.pos < task.stop:
            try:
                batch = await body.next_batch()
            except asyncio.CancelledError:
                await asyncio.shield(self._keep_leftover(body, task, sink, source))
                raise
            if not batch:
                if to_eof or task.pos >= task.stop:
                    break
                raise TruncatedBody(
                    f"{body.url}: body ended at byte {task.pos}, expected up to {task.stop}",
                    url=body.url,
                )
            await self._write(sink, task, batch, sum(len(b) for b in batch), source)
        if body.byte_range is not None and task.stop < body.byte_range.end:
            body.abandon()  # a thief took the rest of this range

    async def _keep_leftover(self, body: Body, task: Task, sink: PartFile, source: str) -> None:
        """On cancellation, write what the body had received, so a resume need not fetch it."""
        offset, data = body.leftover()
        if data and offset == task.pos:
            await self._write(sink, task, [data], len(data), source)

    async def _write(
        self,
        sink: PartFile,
        task: Task,
        batch: Sequence[bytes | memoryview],
        length: int,
        source: str,
    ) -> None:
        await sink.write(task.pos, batch)
        self.served[source].add(task.pos, task.pos + length)
        task.pos += length
        self.done += length
        self._emit("bytes", delta=length)

    # single stream -----------------------------------------------------------------------

    async def _download_stream(
        self, sink: PartFile, size: int | None, source: str | None = None
    ) -> None:
        """One connection, from byte 0; each retry starts over (the server cannot resume)."""
        async for attempt in retrying(self.request.retry, progress=lambda: 0):
            with attempt:
                if sink.written:
                    await sink.restart()
                    self.done = 0
                await self._stream_whole(sink, size, source or self.request.url)

    async def _stream_whole(self, sink: PartFile, size: int | None, preferred: str) -> None:
        source = self._choose_source(preferred, ranged=False)
        task = Task(0, 0, size if size is not None else 1 << 62)
        await self._stream_range(task, source, sink, whole=True)

    # blame -------------------------------------------------------------------------------

    def _repair_for(self, sink: PartFile, size: int) -> Repair | None:
        blame = self._blame()
        if blame is None or len(blame.contributors()) < 2:
            return None

        async def refetch(ranges: list[ByteRange]) -> None:
            await self._fetch_ranges(sink, ranges)

        async def rehash() -> str:
            return await sink.rehash(size)

        async def repair(wrong_digest: str) -> str:
            notify = functools.partial(self._emit, "source_switched")
            return await blame.repair(wrong_digest, refetch, rehash, lambda m: notify(message=m))

        return repair

    def _blame(self) -> Blame | None:
        if self.request.sha256 is None:
            return None
        return Blame(self.served, self.board, self.request.sha256)

    # events ------------------------------------------------------------------------------

    def _emit(self, kind: EventKind, *, delta: int = 0, message: str = "") -> None:
        callback = self.request.progress
        if callback is not None:
            callback(ProgressEvent(kind, self.request.url, self.size, self.done, delta, message))


async def _run_all(coroutines: Sequence[Awaitable[None]]) -> None:
    """Run the coroutines concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

