"""``asyncfetch serve``'s jobs: downloads asked for with ``POST /v1/jobs``, kept in the
:class:`~.store.Store` from the moment they are accepted until they end done, failed or
cancelled.

A submission for the same URL (its credentials aside), SHA-256 and name as a job that is queued
or running is that job (the store's unique index says so, not a race). Each job runs as its own
task through the service's download machinery (one download per name, a slot each, the speed
floor), which reports progress to the job's :class:`Live` counter; state changes (``queued``,
``started``, ``retry``, ``verified``, ``done``, ``failed``, ``cancelled``) are stored as events
in the order they happen: every store call is handed to the store's one thread at once.

When the service stops (SIGTERM, or killed), its running jobs stay ``running`` in the store;
the next service puts them back in the queue (a ``queued`` event saying why) and runs them
again, and their downloads resume from their part files.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from .._errors import FetchError
from .._models import FetchResult, ProgressCallback, ProgressEvent
from .._userinfo import redact, url_key
from .failures import message_of
from .limits import QUEUE_RETRY_AFTER, QueueFull
from .orders import Order
from .store import JobRow, NewJob, NoRoom, State, Store

log = logging.getLogger("asyncfetch.serve")

#: the kinds of event that end a job
ENDED_STATES = frozenset({"done", "failed", "cancelled"})
#: seconds over which a running job's speed is averaged
SPEED_WINDOW = 5.0

Download = Callable[[Order, ProgressCallback], Awaitable[FetchResult]]


def job_key(order: Order) -> str:
    """Which submissions are the same job: the URL without its secrets (password, signature,
    expiry: a URL signed again is the same file), the SHA-256 asked for and the name."""
    return json.dumps([url_key(order.url), order.sha256, order.name])


def file_href(name: str) -> str:
    """Where a finished job's file is served."""
    return "/v1/files/" + urllib.parse.quote(name, safe="")


class Live:
    """What a running job has done so far: bytes, size, speed (from progress events)."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0
        self.began = False  # the service gave it a slot
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def __call__(self, event: ProgressEvent) -> None:
        if event.total is not None:
            self.total = event.total
        self.done = max(self.done, event.done)
        if event.kind == "bytes":
            now = time.monotonic()
            self._samples.append((now, self.done))
            while self._samples and self._samples[0][0] < now - SPEED_WINDOW:
                self._samples.popleft()

    @property
    def speed(self) -> float:
        """Bytes per second over the last few seconds."""
        if len(self._samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


class Bell:
    """Wakes every waiter when an event has been stored (the event streams)."""

    def __init__(self) -> None:
        self._rung = asyncio.Event()

    def ring(self) -> None:
        """Wake the waiters."""
        self._rung.set()
        self._rung = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Return when rung, or after ``timeout`` seconds."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._rung.wait(), timeout)


class Jobs:
    """The jobs of one service: accepts, runs, cancels and recovers them.

    Args:
        store: where jobs and their events are kept.
        download: runs one order, reporting progress to the callback it is given.
        most: jobs that may be unfinished at once (running and queued); more are refused.
        status_for: the HTTP status that answers a failed download.
        watch: also gets every progress event of every job (metrics).
        on_end: called with the state a job ended in and its bytes by source (metrics).
    """

    def __init__(
        self,
        store: Store,
        download: Download,
        *,
        most: int,
        status_for: Callable[[FetchError], int],
        watch: ProgressCallback | None = None,
        on_end: Callable[[str, dict[str, int]], None] | None = None,
    ) -> None:
        self.store = store
        self._download = download
        self._most = most
        self._status_for = status_for
        self._watch = watch
        self._on_end = on_end
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._orders: dict[str, Order] = {}
        self.live: dict[str, Live] = {}
        self._pending: set[asyncio.Future[Any]] = set()
        self.bell = Bell()

    async def start(self) -> int:
        """Run the jobs the last service left unfinished; returns how many."""
        rows = await self.store.call(self.store.requeue)
        self.bell.ring()
        for row in rows:
            self._launch(row)
        if rows:
            log.info("resuming %d unfinished job(s)", len(rows))
        return len(rows)

    async def stop(self) -> None:
        """Stop every running job, leaving it unfinished in the store for the next service."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*self._pending, return_exceptions=True)

    @property
    def unfinished(self) -> int:
        """Jobs queued or running now."""
        return len(self._tasks)

    @property
    def running(self) -> int:
        """Jobs holding a download slot now."""
        return sum(live.began for live in self.live.values())

    async def submit(self, orders: list[Order]) -> list[tuple[JobRow, bool]]:
        """Accept ``orders`` as jobs, committed to the store before this returns: each is the
        unfinished job with its key, or a new one. Returns (job, created) pairs.

        Raises:
            QueueFull: more new jobs than the queue has room for (none is accepted).
        """
        new = [NewJob(job_key(o), o.url, o.mirrors, o.sha256, o.name, o.replace) for o in orders]
        room = self._most - len(self._tasks)
        try:
            answers = await self.store.call(self.store.add, new, room)
        except NoRoom:
            raise QueueFull(
                f"{len(self._tasks)} jobs are unfinished, the most this service takes "
                f"({self._most}); ask again in {QUEUE_RETRY_AFTER} s",
                url=orders[0].url if orders else None,
                retry_after=QUEUE_RETRY_AFTER,
            ) from None
        self.bell.ring()
        for row, created in answers:
            if created:
                self._launch(row)
        return answers

    async def get(self, id_: str) -> JobRow | None:
        """The job called ``id_``, or None."""
        return await self.store.call(self.store.get, id_)

    async def wait(self, id_: str) -> JobRow | None:
        """The job called ``id_`` once it has ended (raises CancelledError when the service
        stops it first)."""
        task = self._tasks.get(id_)
        if task is not None:
            await asyncio.shield(task)
        return await self.get(id_)

    async def cancel(self, id_: str) -> tuple[JobRow | None, bool]:
        """Cancel job ``id_`` if unfinished (its part file stays); returns the job as it is
        now (None: no such job) and whether this cancelled it."""
        row = await self.store.call(
            lambda: self.store.move(
                id_, "cancelled", error="cancelled by a client", error_type="Cancelled", status=409
            )  # fmt: skip
        )
        if row is None:
            return await self.get(id_), False
        self.bell.ring()
        task = self._tasks.get(id_)
        if task is not None:
            task.cancel()
        if self._on_end is not None:
            self._on_end("cancelled", {})
        log.info("job %s cancelled", id_)
        return row, True

    def _launch(self, row: JobRow) -> None:
        order = Order(row.url, row.mirrors, row.sha256, row.name, row.replace)
        self._orders[row.id] = order
        self.live[row.id] = Live()
        task = asyncio.create_task(self._run(row.id, order), name=f"asyncfetch job {row.id}")
        self._tasks[row.id] = task
        task.add_done_callback(lambda _: self._forget(row.id))

    def _forget(self, id_: str) -> None:
        self._tasks.pop(id_, None)
        self._orders.pop(id_, None)
        self.live.pop(id_, None)

    async def _run(self, id_: str, order: Order) -> None:
        live = self.live[id_]

        def on_event(event: ProgressEvent) -> None:
            live(event)
            if self._watch is not None:
                self._watch(event)
            if event.kind == "started" and not live.began:
                live.began = True
                self._later(
                    lambda: self.store.move(id_, "running", kind="started", only_from=("queued",))
                )
            elif event.kind in ("retry", "verified"):
                data = _event_data(event)
                self._later(lambda: self.store.note(id_, event.kind, data))

        try:
            result = await self._download(order, on_event)
        except FetchError as exc:
            message = " ".join(message_of(exc).split())
            log.warning("job %s failed: %s", id_, message)
            await self._end(id_, "failed", error=message, error_type=type(exc).__name__,
                            status=self._status_for(exc))  # fmt: skip
        except asyncio.CancelledError:
            raise  # cancelled (recorded by cancel) or the service stopping (left for the next)
        except Exception as exc:
            log.exception("job %s failed unexpectedly", id_)
            await self._end(id_, "failed", error=f"{type(exc).__name__}: {exc}",
                            error_type=type(exc).__name__, status=500)  # fmt: skip
        else:
            answer = result.as_json(order.url) | {"name": order.name, "href": file_href(order.name)}
            await self._end(id_, "done", result=answer)

    async def _end(self, id_: str, state: State, **fields: Any) -> None:
        await asyncio.gather(*self._pending, return_exceptions=True)  # "started" first
        row = await self.store.call(
            lambda: self.store.move(id_, state, only_from=("queued", "running"), **fields)
        )
        self.bell.ring()
        if row is not None and self._on_end is not None:
            self._on_end(state, dict((row.result or {}).get("bytes_by_mirror", {})))

    def _later(self, function: Callable[[], Any]) -> None:
        """Hand ``function`` to the store's thread in turn (so events keep their order),
        without waiting for it."""
        future = asyncio.ensure_future(self.store.call(function))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        future.add_done_callback(lambda _: self.bell.ring())


def _event_data(event: ProgressEvent) -> dict[str, Any]:
    return {"done": event.done, "total": event.total, "message": event.message}


def view(row: JobRow, live: Live | None) -> dict[str, Any]:
    """A job as the API shows it: URLs masked, live progress while it runs."""
    result = row.result or {}
    done = live.done if live is not None else result.get("size", 0)
    return {
        "id": row.id,
        "href": "/v1/jobs/" + row.id,
        "state": row.state,
        "url": redact(row.url),
        "mirrors": [redact(m) for m in row.mirrors],
        "sha256": row.sha256,
        "name": row.name,
        "created": row.created,
        "updated": row.updated,
        "runs": row.runs,
        "bytes": done if row.state != "failed" or live is not None else 0,
        "total": live.total if live is not None else result.get("size"),
        "speed": round(live.speed) if live is not None else result.get("speed", 0),
        "bytes_by_source": result.get("bytes_by_mirror", {}),
        "error": row.error,
        "type": row.error_type,
        "result": row.result,
        "file": file_href(row.name) if row.state == "done" else None,
    }
