"""One download in progress: probe the sources, run the workers over the byte ranges, retry
and switch sources, write through the part file, verify (and blame), report progress.

An answer's body is copied into the part file by :mod:`.bodycopy`; what each source's ranges
cost, and how large they are taken from it, is kept by :mod:`.rangesizes`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Literal

from .._cache.marker import record_download
from .._errors import FetchError, IntegrityError, RetriesExhausted, TransportError
from .._expectation import Expectation, Sha256
from .._models import ByteRange, EventKind, FetchResult, ProgressEvent, RemoteInfo
from .._storage.extents import Extents
from .._storage.partfile import PartFile, Repair
from .._transport.client import FileChanged, RangeNotHonoured, Transport
from .._userinfo import redact
from .blame import Blame
from .bodycopy import copy_body
from .decode import keep_decoded_if_matching
from .mirrors import MirrorBoard
from .planner import Scheduler, Task, plan_chunks
from .probe import Probed, probe_sources
from .rangesizes import RangeSizes
from .request import Request
from .resolve import Resolves, refused, resolve_again
from .retry import RetryNotice, is_retryable, retrying
from .samples import check_mirrors

log = logging.getLogger("asyncfetch")

STEAL_POLL = 0.25
#: How the ``failed`` event's message ends when a download that cannot resume is stopped
#: (Ctrl-C): "stopped; the server does not support ranges, so a rerun starts over".
RERUN_STARTS_OVER = "so a rerun starts over"

Checked = Literal["caller", "server"]
"""Where the SHA-256 a file was checked against came from: the caller, or the primary URL's
answers."""


class _StartOver(Exception):
    """The primary's file changed during the download: everything fetched is thrown away."""

    def __init__(self, error: FileChanged) -> None:
        super().__init__(str(error))
        self.error = error


class Download:
    """One download in progress: the steps of :func:`fetch` and the state they share."""

    def __init__(self, request: Request, transport: Transport) -> None:
        self.request = request
        self.options = request.options
        self.transport = transport
        transport.asks_for(request.url)  # the caller's credentials are for it, not the mirrors
        self.board = MirrorBoard.of(list(request.urls))
        self.final_urls: dict[str, str] = {}
        self.validators: dict[str, str | None] = {}
        self.served: dict[str, Extents] = {url: Extents() for url in request.urls}
        self.retries = 0
        self.done = 0
        self.size: int | None = None
        self.info: RemoteInfo | None = None  # what the probe found
        self.probed: Probed | None = None
        self.encoding = ""  # the file is as sent with an unasked Content-Encoding
        self._mirrors_checked = False
        self._task_ended: asyncio.Future[None] | None = None  # what idle workers wait for
        self._resolves = Resolves()
        self._resolving: dict[str, asyncio.Lock] = {}
        self.no_resume: str | None = None  # why a stop cannot resume, when it cannot
        self._scheduler: Scheduler | None = None
        self.range_sizes = RangeSizes(request.url, self.options.connections)

    async def run(self) -> FetchResult:
        """Probe, download, verify, rename; emit events up to the rename; return the result.

        The file is then in place at ``dest``: :meth:`finish` emits ``verified`` and ``done``
        once the caller has recorded it.
        """
        started = time.monotonic()
        self._emit("started")
        try:
            try:
                sink, digest = await self._probe_and_fill()
            except _StartOver as exc:
                self._start_over(exc.error)
                try:
                    sink, digest = await self._probe_and_fill()
                except _StartOver as again:
                    raise FileChanged(
                        f"{again.error}, again after starting over; run again once the file "
                        "stops changing",
                        url=again.error.url,
                    ) from None
        except BaseException as exc:
            self._emit("failed", message=self._failure(exc))
            raise
        return FetchResult(
            path=self.request.dest,
            size=self.size if self.size is not None and not self.encoding else sink.written,
            sha256=digest,
            elapsed=time.monotonic() - started,
            bytes_by_mirror={redact(u): n for u, n in self.board.bytes_by_source().items()},
            resumed_bytes=sink.resumed_bytes,
            retries=self.retries,
            ranges=self.range_sizes.note,
            unused_mirrors={redact(u): why for u, why in self.board.dropped().items()},
        )

    @property
    def expected(self) -> Expectation:
        """What the file must be: the caller's expectation, or the SHA-256 the primary
        announced where the caller expects no full one (and the announced one fits it)."""
        announced = self.probed.announced if self.probed else None
        mine = self.request.expected
        if announced is not None and mine.digest is None and mine.admits(announced):
            return Sha256(announced, announced=True)
        return mine

    def _vouch(self, part: Path, digest: str | None) -> None:
        """Record what the finished part is before it takes the target's name (blocking): the
        record rides on the file (an extended attribute), so a process killed between the
        rename and the engine's final record leaves a file a rerun finds vouched for."""
        record_download(
            part,
            url=self.request.url,
            sha256=digest,
            verified=self.request.sha256 is not None,
            info=self.info,
            checked=self.checked_against,
        )

    @property
    def checked_against(self) -> Checked | None:
        """Where :attr:`expected` came from, or None when there is none."""
        if self.request.sha256 is not None:
            return "caller"
        return "server" if self.expected.digest is not None else None

    async def _probe_and_fill(self) -> tuple[PartFile, str | None]:
        info = self.info or await self._probe_sources()
        await self._check_mirrors()
        hashing = self.options.hashing or self.expected.digest is not None
        sink = await PartFile.open(self.request.dest, info, hashing=hashing)
        return sink, await self._fill_and_finish(sink, info)

    def _start_over(self, error: FileChanged) -> None:
        """Forget the probe and every source's state: the next try begins from nothing."""
        log.warning("%s; starting over, once", error)
        self._emit("retry", message=f"{error}; starting over")
        self.board = MirrorBoard.of(list(self.request.urls))
        self.served = {url: Extents() for url in self.request.urls}
        self.final_urls, self.validators = {}, {}
        self.info = self.probed = self.size = None
        self._mirrors_checked = False
        self.done = 0

    async def _check_mirrors(self) -> None:
        """Without the caller's digest, drop the mirrors not shown to serve the primary's
        bytes (see :mod:`.samples`)."""
        if self._mirrors_checked or self.request.sha256 is not None or self.probed is None:
            return
        self._mirrors_checked = True
        await check_mirrors(
            self.transport, self.request.url, self.probed.sources, self.board,
            announced=self.probed.announced, policy=self.options.retry,
        )  # fmt: skip

    async def _fill_and_finish(self, sink: PartFile, info: RemoteInfo) -> str | None:
        self.done = sink.written
        if sink.written:
            self._emit("bytes")  # delta 0: where a resumed download starts from
        try:
            if info.size is not None and (info.accepts_ranges or self._ranged_mirrors()):
                await self._download_ranges_or_stream(sink, info.size)
            else:
                self._warn_if_starting_over(sink, info)
                await self._download_stream(sink, info.size, info.url)
            size = info.size if info.size is not None and not self.encoding else sink.written
            digest = await sink.finalize(
                size, self.expected, self._repair_for(sink, size), before_rename=self._vouch
            )
        except IntegrityError as exc:
            await asyncio.shield(sink.close())  # a short file is kept for a resume
            blame = self._blame()
            raise self._announced_note(blame.explain(exc) if blame else exc) from None
        except _StartOver:
            await asyncio.shield(sink.discard())
            raise
        except BaseException:
            await asyncio.shield(sink.close())
            raise
        return digest

    def _ranged_mirrors(self) -> bool:
        """Whether mirrors serve the ranges a primary without Range support cannot: those
        still on the board are shown to serve its file (the caller's SHA-256, or the one the
        primary announced: :mod:`.samples` dropped the others, saying why)."""
        sources = self.probed.sources if self.probed is not None else {}
        usable = [
            url for url, info in sources.items()
            if url != self.request.url and info.accepts_ranges
            and self.board.get(url).dropped is None
        ]  # fmt: skip
        if usable:
            log.info(
                "%s serves no byte ranges; its mirrors %s, shown to serve the same file, "
                "serve them", redact(self.request.url), ", ".join(map(redact, usable)),
            )  # fmt: skip
        return bool(usable)

    def _announced_note(self, error: FetchError) -> FetchError:
        """``error``, saying where the SHA-256 came from when the server announced it."""
        if self.checked_against != "server" or not isinstance(error, IntegrityError):
            return error
        return IntegrityError(
            f"{error} (no sha256 was given: the SHA-256 expected is the one "
            f"{redact(self.request.url)} announced)",
            url=error.url, expected=error.expected, actual=error.actual,
        )  # fmt: skip

    def _warn_if_starting_over(self, sink: PartFile, info: RemoteInfo) -> None:
        """Say so when the bytes an earlier run left are dropped: one stream starts at 0."""
        what = "does not say the file's size" if info.accepts_ranges else "does not support ranges"
        self.no_resume = f"the server {what}"
        if sink.written:
            log.warning("%s: starting over: %s (%d bytes from an earlier run dropped)",
                        redact(info.url), self.no_resume, sink.written)  # fmt: skip

    def _failure(self, exc: BaseException) -> str:
        """The ``failed`` event's message; for a stop, it says when a rerun cannot resume."""
        stopped = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
        if stopped and self.no_resume is not None:
            return f"stopped; {self.no_resume}, {RERUN_STARTS_OVER}"
        return str(exc) or type(exc).__name__

    def finish(self, result: FetchResult) -> None:
        """Emit ``verified`` (when a digest was computed) and ``done`` for a file in place.

        A callback raising here cannot undo the download: it is logged and the call succeeds.
        """
        if result.sha256 is not None:
            emit_safely(self.request, self._event("verified"))
        emit_safely(self.request, self._event("done"))

    # probe -------------------------------------------------------------------------------

    async def probe(self) -> RemoteInfo:
        """Probe the sources ahead of :meth:`run` (to check an existing target); a failure
        emits ``started`` and ``failed``, as it would inside a download."""
        try:
            return await self._probe_sources()
        except BaseException as exc:
            self._emit("started")
            self._emit("failed", message=str(exc) or type(exc).__name__)
            raise

    async def _probe_sources(self) -> RemoteInfo:
        probed = await probe_sources(
            self.transport, self.request.urls, self.board, self.options.retry,
            sha256=self.request.sha256, on_retry=self._retry_event,
        )  # fmt: skip
        self.probed = probed
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
            gaps, connections=self.options.connections, chunk_size=self.options.chunk_size
        )
        scheduler = self._scheduler = Scheduler(chunks)
        count = min(self.options.connections, max(len(chunks), 1))
        await _run_all([self._worker(n, scheduler, sink) for n in range(count)])

    async def _worker(self, number: int, scheduler: Scheduler, sink: PartFile) -> None:
        home = self.board.home_for(number)
        try:
            while not scheduler.finished:
                task = scheduler.take(
                    self.board.get(home).speed, time.monotonic(), self.range_sizes.chunk(home)
                )
                if task is None:
                    if not scheduler.may_steal_later():
                        return
                    await self._idle()  # the slow tail may become worth taking
                    continue
                try:
                    await self._fetch_task(task, home, sink)
                except BaseException:
                    scheduler.give_back(task)
                    self._wake_idle()
                    raise
                scheduler.complete(task)
                self._wake_idle()
                home = self.board.rehome(home, time.monotonic())
        finally:
            self.board.leave(home)

    async def _idle(self) -> None:
        """Wait up to STEAL_POLL, or less when a task ends (maybe the last one: then the
        download is over, and nobody should wait out a poll interval for it)."""
        if self._task_ended is None or self._task_ended.done():
            self._task_ended = asyncio.get_running_loop().create_future()
        await asyncio.wait({self._task_ended}, timeout=STEAL_POLL)

    def _wake_idle(self) -> None:
        if self._task_ended is not None and not self._task_ended.done():
            self._task_ended.set_result(None)

    async def _fetch_task(self, task: Task, home: str, sink: PartFile) -> None:
        """Fetch ``task`` with retries, switching sources as needed."""
        policy = retrying(
            self.options.retry, progress=lambda: task.pos, wait_hint=self._wait_hint,
            on_retry=self._retry_event,
        )  # fmt: skip
        try:
            async for attempt in policy:
                with attempt:
                    # an answer shorter than asked (a valid 206 for the range's start) is
                    # progress: the rest is asked for at once, not as a retry; the loop also
                    # ends when a thief took the rest while this worker waited to retry
                    while task.pos < task.stop:
                        source = self._choose_source(home)
                        task.begin(time.monotonic())
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
        used = self.final_urls.get(source, source)
        try:
            await self._stream_range(task, source, sink)
        except TransportError as exc:
            if await self._resolved_again(source, used, exc):
                raise
            if isinstance(exc, FileChanged):
                self._file_changed(source, exc)
            if self._source_failed(source, exc) and self.board.alive():
                exc.retryable = True  # this source is dropped; another one may serve
            raise

    def _file_changed(self, source: str, exc: FileChanged) -> None:
        """The primary's file changed: start over (once, see :meth:`run`). A mirror's: the
        caller drops it."""
        if source == self.request.url:
            raise _StartOver(exc) from exc
        log.warning("dropping mirror %s", exc)

    async def _resolved_again(self, source: str, used: str, exc: TransportError) -> bool:
        """Whether ``source`` now leads to a fresh URL in place of ``used``, reached through a
        redirect and refusing (an expired signed URL); ``exc`` is then retried at once."""
        if used == source or not refused(exc):
            return False
        async with self._resolving.setdefault(source, asyncio.Lock()):
            if self.final_urls.get(source, source) == used:  # else another worker did it
                if not self._resolves.allow(source, self.board.get(source).bytes_received):
                    return False
                self.final_urls[source] = await resolve_again(
                    self.transport, source, self.size, self.validators.get(source)
                )
        log.info("%s; resolved %s again", exc, redact(source))
        self.retries += 1  # the retry loop sends the retry event, with its wait (0)
        exc.retryable, exc.retry_after = True, 0.0
        return True

    def _source_failed(self, source: str, exc: TransportError) -> bool:
        """Record a failed attempt; returns True if ``source`` is dropped for good."""
        if isinstance(exc, RangeNotHonoured) and len(self.board.sources) == 1:
            return False  # the whole download falls back to one stream
        self.retries += 1  # the retry event comes from the retry loop, with its wait
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
        """The source of an error's ``url`` (where a password is masked)."""
        for source, final in self.final_urls.items():
            if url in (redact(source), redact(final)):
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
                url, byte_range, if_range=validator, window=task, fast=not to_eof, asked=source,
                size=self.size,
            ) as body:  # fmt: skip
                started = body.sent_at  # a wait for a batch's connection slot is not slowness
                answered = time.monotonic()
                task.begin(started)
                if body.encoding:  # kept as sent, whatever its length (see _fill_and_finish)
                    to_eof, task.stop, self.encoding = True, 1 << 62, body.encoding
                write = functools.partial(self._write, sink, task, source=source)
                await copy_body(body, task, write, to_eof=to_eof)
            if not whole:
                cost, nbytes = answered - started, task.pos - before
                self.range_sizes.range_done(
                    source, cost, nbytes, answered, sink.hash_rate, self._scheduler,
                    one_source=len(self.board.sources) == 1,
                )  # fmt: skip
        finally:
            self.board.record_bytes(source, task.pos - before, time.monotonic() - started)

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
        policy = retrying(self.options.retry, progress=lambda: 0, on_retry=self._retry_event)
        async for attempt in policy:
            with attempt:
                if sink.written:
                    await sink.restart()
                    self.done = 0
                await self._stream_whole(sink, size, source or self.request.url)

    async def _stream_whole(self, sink: PartFile, size: int | None, preferred: str) -> None:
        source = self._choose_source(preferred, ranged=False)
        task = Task(0, 0, size if size is not None else 1 << 62)
        used = self.final_urls.get(source, source)
        try:
            await self._stream_range(task, source, sink, whole=True)
        except FileChanged as exc:
            self._file_changed(source, exc)
            if source != self.request.url:
                self.board.drop(source, str(exc))
                exc.retryable = self.board.alive(ranged=False)
            raise
        except TransportError as exc:
            await self._resolved_again(source, used, exc)  # then retried, as any retryable
            raise

    # blame -------------------------------------------------------------------------------

    def _repair_for(self, sink: PartFile, size: int) -> Repair | None:
        digest = self.expected.digest
        if self.encoding and digest is not None:
            return functools.partial(keep_decoded_if_matching, sink, self.encoding, digest)
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
        digest = self.expected.digest
        if digest is None:
            return None
        return Blame(self.served, self.board, digest)

    # events ------------------------------------------------------------------------------

    def _emit(self, kind: EventKind, *, delta: int = 0, message: str = "") -> None:
        callback = self.request.progress
        if callback is not None:
            callback(self._event(kind, delta=delta, message=message))

    def _retry_event(self, notice: RetryNotice) -> None:
        callback = self.request.progress
        if callback is not None:
            event = self._event("retry", message=str(notice))
            callback(dataclasses.replace(
                event, attempt=notice.attempt, of=notice.of, wait=notice.wait, error=notice.error
            ))  # fmt: skip

    def _event(self, kind: EventKind, *, delta: int = 0, message: str = "") -> ProgressEvent:
        return ProgressEvent(kind, self.request.url, self.size, self.done, delta, message)


def emit_safely(request: Request, event: ProgressEvent) -> None:
    """Send ``event`` to the request's progress callback, for a file already in place at its
    destination: an exception from the callback is logged as a warning, not raised (it must
    not turn a finished download into a failure that leaves the file behind)."""
    callback = request.progress
    if callback is None:
        return
    try:
        callback(event)
    except Exception as exc:
        name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
        log.warning(
            "the progress callback %s raised on the %r event of %s (ignored: the file is in "
            "place at %s): %s: %s",
            name, event.kind, event.url, request.dest, type(exc).__name__, exc,
        )  # fmt: skip


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
