"""Progress events → tqdm bars on stderr, or an async iterator of events for the user.

The event API: every download calls its ``progress=`` callable with a
:class:`~asyncfetch.ProgressEvent` as things happen. For one file the kinds come in this
order: ``started``; then ``bytes`` (data written), ``retry`` (a request failed and is tried
again) and ``source_switched`` (a range moved to another mirror), any number of times; then
``verified`` (size and SHA-256 checked; only when a digest was computed) and ``done`` -- or
``failed`` (with the error in ``message``) at any point after ``started``. A resumed
download's first ``bytes`` event has ``delta`` 0 and ``done`` the bytes kept from before.
Callbacks run on the event loop and must be quick; :class:`ProgressStream` turns them into an
async iterator.
A callback raising once the file is in place (``verified``, ``done``, a cache hit's events) is
logged as a warning, not raised; before that, its exception fails the download.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # tqdm is imported when a bar is drawn (~15 ms a start-up otherwise)
    from tqdm import tqdm

from .._models import ProgressEvent

# decimal kB/MB/GB, so a bar's "MB" and "MB/s" are the units the command line prints after it
UNIT_DIVISOR = 1000


class ProgressBar:
    """A progress callback that draws one tqdm bar (bytes, speed, ETA) on a stream."""

    def __init__(self, description: str = "", stream: TextIO | None = None) -> None:
        self._description = description
        self._stream = stream or sys.stderr
        self._bar: tqdm | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if self._bar is None and event.kind in ("bytes", "started"):
            self._bar = _new_bar(
                total=event.total,
                initial=event.done - event.delta,
                unit="B",
                unit_scale=True,
                unit_divisor=UNIT_DIVISOR,
                desc=self._description,
                file=self._stream,
                dynamic_ncols=True,
                leave=True,
            )
        if self._bar is None:
            return
        if event.kind in ("bytes", "done"):
            if event.total is not None and self._bar.total != event.total:
                self._bar.total = event.total
            if event.kind == "bytes" and not event.delta and not self._bar.n:
                _start_at(self._bar, event.done)  # a resume: kept bytes are no speed
            else:
                self._bar.update(event.done - self._bar.n)  # done counts resumed bytes too
        if event.kind in ("done", "failed"):
            self.close()

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class BatchProgress:
    """A progress callback for a batch: a total bar plus a bar for each file in flight.

    The total bar counts bytes over every file (its total grows as file sizes become known)
    and finished files; at most ``max_bars`` file bars are drawn at once.
    """

    def __init__(
        self, files: int | None = None, stream: TextIO | None = None, *, max_bars: int = 8
    ) -> None:
        self._stream = stream or sys.stderr
        self._files = files
        self._finished = 0
        self._failed = 0
        self._max_bars = max_bars
        self._sizes: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        self._bars: dict[str, tuple[int, tqdm]] = {}
        self._total = _new_bar(
            total=0, unit="B", unit_scale=True, unit_divisor=UNIT_DIVISOR, desc=self._describe(),
            file=self._stream, dynamic_ncols=True, position=0, leave=True,
        )  # fmt: skip

    def __call__(self, event: ProgressEvent) -> None:
        url = event.url
        if event.kind == "started" and url not in self._bars:
            self._open_bar(url)
        if event.total is not None and url not in self._sizes:
            self._sizes[url] = event.total
            self._total.total += event.total
            self._set_bar_total(url, event.total)
        advance = event.done - self._seen.get(url, 0)
        if advance:
            resumed = event.kind == "bytes" and not event.delta and url not in self._seen
            self._seen[url] = event.done
            self._total.update(advance)
            if url in self._bars and resumed:
                _start_at(self._bars[url][1], event.done)
            elif url in self._bars:
                self._bars[url][1].update(advance)
        if event.kind in ("done", "failed"):
            self._finished += 1
            self._failed += event.kind == "failed"
            self._total.set_description(self._describe(), refresh=True)
            self._close_bar(url)

    def _describe(self) -> str:
        of = f"/{self._files}" if self._files is not None else ""
        failed = f", {self._failed} failed" if self._failed else ""
        return f"{self._finished}{of} files{failed}"

    def _open_bar(self, url: str) -> None:
        taken = {position for position, _ in self._bars.values()}
        free = next((p for p in range(1, self._max_bars + 1) if p not in taken), None)
        if free is None:
            return
        name = url.rsplit("/", 1)[-1].split("?", 1)[0] or url
        bar = _new_bar(
            total=self._sizes.get(url), unit="B", unit_scale=True, unit_divisor=UNIT_DIVISOR,
            desc=name[:30], file=self._stream, dynamic_ncols=True, position=free, leave=False,
        )  # fmt: skip
        self._bars[url] = (free, bar)

    def _set_bar_total(self, url: str, total: int) -> None:
        if url in self._bars:
            bar = self._bars[url][1]
            bar.total = total
            bar.refresh()

    def _close_bar(self, url: str) -> None:
        entry = self._bars.pop(url, None)
        if entry is not None:
            entry[1].close()

    def close(self) -> None:
        """Finish every bar (idempotent)."""
        for url in list(self._bars):
            self._close_bar(url)
        self._total.close()


class ProgressStream:
    """Progress events as an async iterator: pass it as ``progress=`` and iterate it.

    ``async for event in stream`` yields every ProgressEvent in the order the downloads sent
    them, until :meth:`close` (or the end of a ``with`` block) and the events before it are
    read. When the reader falls behind, ``bytes`` events of one file that follow each other
    are merged into one (``done`` is the latest, ``delta`` the sum); no other event is lost.
    It may be fed from another thread or event loop (e.g. :func:`asyncfetch.download`); read
    it from one task.

    Example::

        with asyncfetch.ProgressStream() as events:
            job = asyncio.create_task(asyncfetch.fetch(url, dest, progress=events))
            job.add_done_callback(lambda _: events.close())
            async for event in events:
                print(event.kind, event.done, event.total)
    """

    def __init__(self) -> None:
        self._events: deque[ProgressEvent] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._closed:
                return
            last = self._events[-1] if self._events else None
            if event.kind == "bytes" and last and last.kind == "bytes" and last.url == event.url:
                self._events[-1] = dataclasses.replace(event, delta=last.delta + event.delta)
            else:
                self._events.append(event)
            self._wake()

    def close(self) -> None:
        """No more events: iteration ends once those already sent are read."""
        with self._lock:
            self._closed = True
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            loop, future = self._waiter
            self._waiter = None
            loop.call_soon_threadsafe(_set_done, future)

    def __aiter__(self) -> ProgressStream:
        return self

    async def __anext__(self) -> ProgressEvent:
        while True:
            with self._lock:
                if self._events:
                    return self._events.popleft()
                if self._closed:
                    raise StopAsyncIteration
                loop = asyncio.get_running_loop()
                future: asyncio.Future[None] = loop.create_future()
                self._waiter = (loop, future)
            await future

    def __enter__(self) -> ProgressStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BarSafeHandler(logging.Handler):
    """A logging handler for the command line: each record one line on stderr, through
    ``tqdm.write`` so that it never lands inside a progress bar's line (the bars are cleared
    and drawn again below it), warnings prefixed ``asyncfetch: warning:``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(logging.WARNING)
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            level = "warning" if record.levelno < logging.ERROR else "error"
            text = " ".join(self.format(record).split())  # one line, whatever the message
            tqdm.write(f"asyncfetch: {level}: {text}", file=self._stream or sys.stderr)
        except Exception:
            self.handleError(record)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _start_at(bar: tqdm, done: int) -> None:
    """Move a bar that has counted nothing to ``done`` as its starting point (tqdm's
    ``initial``), so the bytes a resume kept do not show as a burst of speed."""
    bar.initial = bar.n = bar.last_print_n = done
    bar.refresh()


def _new_bar(**options: Any) -> tqdm:
    from tqdm import tqdm

    return tqdm(**options)
