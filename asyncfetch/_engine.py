"""fetch(): probe → plan → workers → sink → verify → rename.

One file from one or more sources (the URL and its mirrors), over many connections.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import aiohttp

from ._config import RetryPolicy, Timeouts, check_connections
from ._errors import FetchError, InvalidRequest, RetriesExhausted, TransportError, TruncatedBody
from ._mirrors import MirrorBoard
from ._models import EventKind, FetchResult, ProgressCallback, ProgressEvent, RemoteInfo
from ._planner import Scheduler, Task, plan_chunks
from ._retry import is_retryable, retrying
from ._sink import PartFile, check_destination
from ._transport import Body, RangeNotHonoured, Transport, check_url

log = logging.getLogger("asyncfetch")

WRITE_BATCH = 1 << 20
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
) -> Request:
    """Check the caller's arguments and bundle them; raises InvalidRequest on bad input."""
    urls = tuple(dict.fromkeys(check_url(u) for u in (url, *mirrors)))
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
    )


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
    session: aiohttp.ClientSession | None = None,
) -> FetchResult:
    """Download ``url`` to ``dest`` over parallel ranged connections, verified.

    The file appears at ``dest`` only once complete and, when ``sha256`` is given, matching
    it; partial data stays in a ``.part`` file beside it that a later call resumes from.

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
        session: an aiohttp session of your own to use (it is not closed).

    Returns:
        A FetchResult.

    Raises:
        FetchError: a subclass saying what went wrong; nothing is left at ``dest``.
    """
    request = make_request(
        url, dest, mirrors=mirrors, sha256=sha256, connections=connections,
        chunk_size=chunk_size, retry=retry, timeout=timeout, headers=headers,
        progress=progress, hash=hash,
    )  # fmt: skip
    return await run(request, session=session)


async def run(
    request: Request,
    *,
    session: aiohttp.ClientSession | None = None,
    transport: Transport | None = None,
) -> FetchResult:
    """Carry out a validated Request.

    ``transport``: an open Transport to share (a batch's session and connection budget);
    its timeouts and headers apply instead of the request's.
    """
    check_destination(request.dest, request.url)
    if transport is not None:
        return await Download(request, transport).run()
    transport = Transport(
        timeouts=request.timeouts,
        connections=request.connections,
        headers=request.headers,
        session=session,
    )
    async with transport:
        return await Download(request, transport).run()


class Download:
    """One download in progress: the steps of :func:`fetch` and the state they share."""

    def __init__(self, request: Request, transport: Transport) -> None:
        self.request = request
        self.transport = transport
        self.board = MirrorBoard.of(list(request.urls))
        self.final_urls: dict[str, str] = {}
        self.validator: str | None = None
        self.retries = 0
        self.done = 0
        self.size: int | None = None

    async def run(self) -> FetchResult:
        """Probe, download, verify, rename; emit events; return the result."""
        started = time.monotonic()
        self._emit("started")
        try:
            info = await self._probe_sources()
            sink = await PartFile.open(self.request.dest, info, hashing=self.request.hashing)
            digest = await self._fill_and_finish(sink, info)
        except BaseException as exc:
            self._emit("failed", message=str(exc) or type(exc).__name__)
            raise
        self._emit("done")
        return FetchResult(
            path=self.request.dest,
            size=self.done,
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
                await self._download_stream(sink, info.size)
            size = info.size if info.size is not None else sink.written
            digest = await sink.finalize(size, self.request.sha256)
        except BaseException:
            await asyncio.shield(sink.close())
            raise
        if digest is not None:
            self._emit("verified")
        return digest

    # probe -------------------------------------------------------------------------------

    async def _probe_sources(self) -> RemoteInfo:
        results = await asyncio.gather(
            *(self._probe_one(url) for url in self.request.urls), return_exceptions=True
        )
        infos: dict[str, RemoteInfo] = {}
        for url, result in zip(self.request.urls, results, strict=True):
            if isinstance(result, RemoteInfo):
                infos[url] = result
            elif isinstance(result, FetchError):
                self.board.drop(url, str(result))
            else:
                raise result
        if not infos:
            raise self._all_failed(results)
        info = self._agree_on_size(infos)
        self.size = info.size
        self.validator = info.validator if len(infos) == 1 else None
        return info

    async def _probe_one(self, url: str) -> RemoteInfo:
        async for attempt in retrying(self.request.retry, progress=lambda: 0):
            with attempt:
                info = await self.transport.probe(url)
                self.final_urls[url] = info.final_url
                return info
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _agree_on_size(self, infos: dict[str, RemoteInfo]) -> RemoteInfo:
        sizes = [i.size for i in infos.values()]
        majority = max(set(sizes), key=lambda s: (sizes.count(s), s is not None))
        for url, info in infos.items():
            if info.size != majority:
                reason = f"{url} serves {info.size} bytes but the other sources {majority}"
                log.warning("dropping source: %s", reason)
                self.board.drop(url, reason)
        primary = infos.get(self.request.url)
        if primary is not None and primary.size == majority:
            return primary
        chosen = next(i for i in infos.values() if i.size == majority)
        if primary is not None:
            log.warning(
                "the primary URL %s disagrees with the mirrors on the size (%s vs %s bytes); "
                "downloading from the mirrors that agree",
                self.request.url, primary.size, majority,
            )  # fmt: skip
        return chosen

    def _all_failed(self, results: Sequence[object]) -> BaseException:
        if len(results) == 1 and isinstance(results[0], BaseException):
            return results[0]
        failures = self.board.failures()
        listing = "; ".join(f"{u}: {m}" for u, m in failures.items())
        return RetriesExhausted(
            f"every source of {self.request.url} failed: {listing}",
            url=self.request.url,
            byte_range=None,
            attempts=len(results),
            failures=failures,
        )

    # ranged download ---------------------------------------------------------------------

    async def _download_ranges_or_stream(self, sink: PartFile, size: int) -> None:
        try:
            await self._download_ranges(sink, size)
        except RangeNotHonoured as exc:
            log.warning("%s; downloading over one connection instead", exc)
            await sink.restart()
            self.done = 0
            await self._download_stream(sink, size)

    async def _download_ranges(self, sink: PartFile, size: int) -> None:
        chunks = plan_chunks(
            sink.missing(size),
            connections=self.request.connections,
            chunk_size=self.request.chunk_size,
        )
        scheduler = Scheduler(chunks)
        count = min(self.request.connections, max(len(chunks), 1))
        await _run_all([self._worker(n, scheduler, sink) for n in range(count)])

    async def _worker(self, number: int, scheduler: Scheduler, sink: PartFile) -> None:
        home = self.board.home_for(number)
        while (task := scheduler.take()) is not None:
            try:
                home = await self._fetch_task(task, home, sink)
            except BaseException:
                scheduler.give_back(task)
                raise
            scheduler.complete(task)

    async def _fetch_task(self, task: Task, home: str, sink: PartFile) -> str:
        """Fetch ``task`` with retries, switching sources as needed; returns the last source."""
        source = home
        policy = retrying(self.request.retry, progress=lambda: task.pos, wait_hint=self._wait_hint)
        try:
            async for attempt in policy:
                with attempt:
                    source = self._choose_source(home)
                    await self._attempt_task(task, source, sink)
        except TransportError as exc:
            raise self._exhausted(task, exc, policy.statistics.get("attempt_number", 1)) from exc
        return source

    def _choose_source(self, home: str) -> str:
        source = self.board.pick(home, time.monotonic())
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
            async with self.transport.open(url, byte_range, if_range=self.validator) as body:
                await self._copy_body(body, task, sink, to_eof=whole and self.size is None)
        finally:
            self.board.record_bytes(source, task.pos - before, time.monotonic() - started)

    async def _copy_body(
        self, body: Body, task: Task, sink: PartFile, *, to_eof: bool = False
    ) -> None:
        """Copy the body to the part file at ``task.pos`` until ``task.stop``, in batches.

        ``task.pos`` only moves past bytes that are written, so a retry continues exactly
        where this attempt got to. With ``to_eof``, a clean end of the body ends the copy.
        """
        batch: list[bytes] = []
        batched = 0
        try:
            while task.pos + batched < task.stop:
                chunk = await body.read()
                if not chunk and to_eof:
                    break
                if not chunk:
                    raise TruncatedBody(
                        f"{body.url}: body ended at byte {task.pos + batched}, "
                        f"expected up to {task.stop}",
                        url=body.url,
                    )
                room = task.stop - task.pos - batched
                batch.append(chunk if len(chunk) <= room else chunk[:room])
                batched += len(batch[-1])
                task.reached = task.pos + batched
                if batched >= WRITE_BATCH:
                    await self._write(sink, task, batch, batched)
                    batch, batched = [], 0
        finally:
            if batched:
                await asyncio.shield(self._write(sink, task, batch, batched))
        if body.byte_range is not None and task.stop < body.byte_range.end:
            body.abandon()  # a thief took the rest of this range

    async def _write(self, sink: PartFile, task: Task, batch: list[bytes], length: int) -> None:
        await sink.write(task.pos, batch)
        task.pos += length
        self.done += length
        self._emit("bytes", delta=length)

    # single stream -----------------------------------------------------------------------

    async def _download_stream(self, sink: PartFile, size: int | None) -> None:
        """One connection, from byte 0; each retry starts over (the server cannot resume)."""
        async for attempt in retrying(self.request.retry, progress=lambda: 0):
            with attempt:
                if sink.written:
                    await sink.restart()
                    self.done = 0
                await self._stream_whole(sink, size)

    async def _stream_whole(self, sink: PartFile, size: int | None) -> None:
        source = self._choose_source(self.request.url)
        task = Task(0, 0, size if size is not None else 1 << 62)
        await self._stream_range(task, source, sink, whole=True)

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

