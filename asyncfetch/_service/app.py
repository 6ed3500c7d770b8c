"""``asyncfetch serve``: a small caching download service, and a LAN mirror of its cache.

Routes::

    /v1/jobs, /v1/files   jobs kept in SQLite, files with their digest (see :mod:`.routes`)
    POST /fetch           {"url", "mirrors", "sha256", "name", "replace"} → a job, waited for:
                          the FetchResult as JSON (the fields of ``get --json``)
    GET|HEAD /files/NAME  the same as /v1/files/NAME
    GET /cache            the complete cached files (name, size, mtime, state) and running
                          downloads
    GET /health           {"ok": true}

Requests for the same name and URL share one download, which a client going away does not
cancel; another URL for a name downloading now is refused (409). Each request is judged by its
own ``sha256``: one that joined a download checked against another digest compares the result
with its own, or downloads again if that other digest was wrong or the cache had only the file
with that other digest. A name that holds a different file (from another URL, without the
digest asked for) is replaced only when the request says ``"replace": true`` (else 409). At
most ``max_downloads`` distinct downloads run at once, up to ``max_queue`` more wait their turn
(past that, 429), and one slower than the speed floor gives its slot back (504; see
:mod:`.limits`). Only complete files are served:
never part files, journals, markers, locks or temporary files, nothing outside the cache dir,
and no file that ``asyncfetch cache verify`` found corrupt, even if touched since (409 until
fetched or verified again); :mod:`.files` says which files those are.

Who may ask is :mod:`.guard`'s to say (token, ``Host``, ``Origin``, JSON bodies), and downloads
connect only where the service's :class:`~.._transport.netpolicy.NetPolicy` allows (not to the
local network unless the operator says so).

The service's server side, ``aiohttp.web``, is here, in :mod:`.routes` (and :mod:`.events`),
in :mod:`.failures` (the status and JSON answer of each error) and in :mod:`.listen`, whose
:func:`~.listen.serve` listens and runs it. Downloads themselves go through the engine
(:func:`asyncfetch._engine.run`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from .._config import RetryPolicy, Timeouts
from .._engine.fetch import run
from .._engine.request import make_request
from .._errors import FetchError, IntegrityError, InvalidRequest
from .._expectation import expect_sha256
from .._models import FetchResult, ProgressCallback, ProgressEvent
from .._options import make_options
from .._transport.client import Transport
from .._transport.netpolicy import NetPolicy
from .._userinfo import redact, url_key
from .failures import NameInUse, NameTaken, json_errors, status_for
from .failures import error_response as _error
from .files import holder_of, listing, make_cache_dir
from .guard import Guard
from .jobs import Jobs
from .limits import (
    DEFAULT_MAX_QUEUE,
    QUEUE_RETRY_AFTER,
    Meter,
    QueueFull,
    SpeedFloor,
    within_floor,
)
from .orders import ORDER_SHAPE, Order, check_digest, hit_for_another_digest, parse_order
from .routes import MAX_BODY, V1, read_body
from .store import DB_NAME, Store, lock_state_dir

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("asyncfetch.serve")
#: asyncfetch is not on PyPI, so "pip install 'asyncfetch[serve]'" would fetch whatever is
#: published under that name; the extra's one package is named instead
INSTALL_METRICS = "pip install prometheus-client (the serve extra: pip install '.[serve]')"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DEFAULT_MAX_DOWNLOADS = 4


@dataclass(frozen=True)
class _Download:
    """A download running now, the request that started it, and the jobs following it."""

    order: Order
    task: asyncio.Task[FetchResult]
    listeners: list[ProgressCallback] = field(default_factory=list)


class Service:
    """The service's state: its cache dir and the downloads running now.

    Args:
        cache_dir: where files are downloaded to and served from (created if missing).
        max_downloads: distinct downloads that may run at once; more wait their turn.
        max_queue: downloads that may wait for a slot; more are refused (429).
        floor: the speed under which a download gives its slot back (None: none).
        guard: who may ask (default: no token, clients on this machine).
        net: where downloads may connect (default: not to the local network).
        retry: the retry policy of each download.
        timeout: the timeouts of each download.
        state_dir: where the job store lives (locked while the service runs); None: in memory.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        max_downloads: int = DEFAULT_MAX_DOWNLOADS,
        max_queue: int = DEFAULT_MAX_QUEUE,
        floor: SpeedFloor | None = SpeedFloor(),  # noqa: B008 (frozen)
        guard: Guard | None = None,
        net: NetPolicy | None = None,
        retry: RetryPolicy | None = None,
        timeout: Timeouts | None = None,
        state_dir: Path | None = None,
    ) -> None:
        if max_downloads < 1:
            raise InvalidRequest(f"max_downloads must be at least 1, got {max_downloads}")
        if max_queue < 0:
            raise InvalidRequest(f"max_queue must not be negative, got {max_queue}")
        self.cache_dir = Path(cache_dir).expanduser().absolute()
        self.guard = guard or Guard()
        self._net = net or NetPolicy()
        self._floor = floor
        self._most = max_downloads + max_queue
        self._slots = asyncio.Semaphore(max_downloads)
        self._running: dict[str, _Download] = {}
        self._stopping = False
        self._retry = retry
        self._timeout = timeout
        self.state_dir = Path(state_dir).expanduser().absolute() if state_dir else None
        self._lock: int | None = None
        store = Store(self.state_dir / DB_NAME if self.state_dir else None)
        self.metrics = _metrics(self)
        watch = self.metrics.observe if self.metrics else None
        on_end = self.metrics.ended if self.metrics else None
        self.jobs = Jobs(store, self.download, most=self._most, status_for=status_for,
                         watch=watch, on_end=on_end)  # fmt: skip
        self._counts: dict[str, int] = {}

    def app(self) -> web.Application:
        """The aiohttp application serving the routes."""
        guard = self.guard

        @web.middleware
        async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
            refusal = guard.refusal(request.method, request.path, request.headers)
            if refusal is not None:
                return _error(refusal.status, refusal.message, refusal.kind, {**refusal.headers})
            return await handler(request)

        @web.middleware
        async def counted(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self.metrics is None:
                return await handler(request)
            with self.metrics.in_flight.track_inprogress():
                return await handler(request)

        app = web.Application(client_max_size=MAX_BODY, middlewares=[counted, json_errors, guarded])
        v1 = V1(self, status_for)
        v1.add_to(app)
        app.router.add_post("/fetch", self._post_fetch)
        app.router.add_get("/files/{name}", v1.get_file)
        app.router.add_get("/cache", self._get_cache)
        app.router.add_get("/health", self._get_health)
        app.router.add_get("/metrics", self._get_metrics)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    @property
    def stopping(self) -> bool:
        """Whether the service is stopping."""
        return self._stopping

    async def _on_startup(self, _app: web.Application) -> None:
        await asyncio.to_thread(make_cache_dir, self.cache_dir)
        await self.open()

    async def open(self) -> None:
        """Lock the state dir, open the job store and resume the jobs left unfinished.

        Raises:
            InvalidRequest: another service uses the state dir.
        """
        if self.state_dir is not None and self._lock is None:
            self._lock = await asyncio.to_thread(lock_state_dir, self.state_dir)
        await self.jobs.store.open()
        await self.jobs.start()

    async def close(self) -> None:
        """Stop the jobs (left unfinished for the next service), close the store, unlock."""
        self._stopping = True
        await self.jobs.stop()
        await self.jobs.store.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    async def _on_shutdown(self, _app: web.Application) -> None:
        """Stop running downloads; their part files stay for the next run to resume."""
        self._stopping = True
        tasks = [job.task for job in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.close()

    async def _post_fetch(self, request: web.Request) -> web.Response:
        """A job, waited for: the same as ``POST /v1/jobs`` then following it to its end."""
        try:
            order = parse_order(await read_body(request))
            [(job, _)] = await self.jobs.submit([order])
            ended = await self.jobs.wait(job.id)
        except web.HTTPRequestEntityTooLarge:
            return _error(
                413, f"the body is over {MAX_BODY} bytes; send {ORDER_SHAPE}", "InvalidRequest"
            )
        except asyncio.CancelledError:
            if not self._stopping:
                raise  # the client went away
            return _error(503, "the service is stopping; the download stopped and resumes "
                          "from its part file when you ask again", "ServiceStopping")  # fmt: skip
        except FetchError as exc:
            log.warning("fetch failed: %s", " ".join(str(exc).split()))
            headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull) else None
            return _error(status_for(exc), str(exc), type(exc).__name__, headers)
        except Exception as exc:
            log.exception("fetch failed unexpectedly")
            return _error(500, f"{type(exc).__name__}: {exc}", type(exc).__name__)
        if ended is None or ended.state != "done" or ended.result is None:
            status = ended.status if ended is not None and ended.status else 500
            error = ended.error if ended is not None and ended.error else "the job vanished"
            kind = ended.error_type if ended is not None and ended.error_type else "Unknown"
            return _error(status, error, kind)
        href = "/files/" + urllib.parse.quote(order.name, safe="")
        return web.json_response(ended.result | {"href": href, "job": ended.id})

    async def download(self, order: Order, listener: ProgressCallback | None = None) -> FetchResult:
        """Download ``order`` into the cache dir, or join the download of the same file running now.

        The download runs as its own task: a caller that goes away does not cancel it. A caller
        that joined a download checked against another SHA-256 is judged by its own: the result
        is compared with it, and if the other digest was wrong, or the cache held a file with
        the other digest but not with this one, the file is downloaded again.

        ``listener`` gets the download's progress events (a ``started`` one when it has a
        slot); when the last caller with a listener is cancelled, so is the download (its part
        file stays).

        Raises:
            NameInUse: ``order.name`` is being downloaded from another URL now.
            NameTaken: ``order.name`` holds a different file and ``order.replace`` is False.
            QueueFull: the download would have to wait and too many wait already.
            IntegrityError: the file's SHA-256 is not ``order.sha256``.
        """
        while True:
            job = self._join_or_start(order)
            if listener is not None:
                job.listeners.append(listener)
            try:
                result = await asyncio.shield(job.task)
            except asyncio.CancelledError:
                self._leave(job, listener)
                raise
            except IntegrityError as exc:
                other = job.order.sha256
                if other is not None and other != order.sha256 and exc.expected == other:
                    continue  # failed on the other request's digest, not on ours: try ours
                raise
            except NameTaken:
                if order.replace and not job.order.replace:
                    continue  # the other request did not ask to replace the file; this one does
                raise
            finally:
                if listener in job.listeners:
                    job.listeners.remove(listener)
            if job.order is not order and hit_for_another_digest(order, result):
                continue  # the cache had the other request's file, not ours: download ours
            check_digest(order, result)
            return result

    def _leave(self, job: _Download, listener: ProgressCallback | None) -> None:
        """A caller with ``listener`` was cancelled: stop the download if it was the last."""
        if listener is None or listener not in job.listeners:
            return
        job.listeners.remove(listener)
        if not job.listeners and not self._stopping:
            job.task.cancel()

    def _join_or_start(self, order: Order) -> _Download:
        job = self._running.get(order.name)
        if job is not None and not job.task.done():
            if url_key(job.order.url) != url_key(order.url):  # one signed again joins
                raise NameInUse(
                    f"{order.name} is being downloaded from {job.order.url} now, not from "
                    f"{order.url}; wait for it to finish and ask again, or use another name",
                    url=order.url,
                )
            return job
        if sum(not job.task.done() for job in self._running.values()) >= self._most:
            raise QueueFull(
                f"every download slot is taken and the queue is full; ask again in "
                f"{QUEUE_RETRY_AFTER} s",
                url=order.url,
                retry_after=QUEUE_RETRY_AFTER,
            )
        listeners: list[ProgressCallback] = []
        task = asyncio.create_task(
            self._fetch(order, listeners), name=f"asyncfetch serve {order.name}"
        )
        job = self._running[order.name] = _Download(order, task, listeners)
        task.add_done_callback(lambda done: self._forget(order.name, done))
        return job

    async def _fetch(self, order: Order, listeners: list[ProgressCallback]) -> FetchResult:
        async with self._slots:
            meter = Meter()

            def progress(event: ProgressEvent) -> None:
                meter(event)
                for listener in list(listeners):
                    listener(event)

            progress(ProgressEvent("started", order.url))
            await asyncio.to_thread(make_cache_dir, self.cache_dir)  # gone, or a file now: say so
            holder = await asyncio.to_thread(holder_of, self.cache_dir, order)
            if holder is not None and not order.replace:
                raise NameTaken(
                    f"{order.name} holds the file from {holder}, not from {order.url}; send "
                    '"replace": true to replace it (the old file stays until the new one is '
                    "complete), or use another name",
                    url=order.url,
                )
            log.info("downloading %s to %s", redact(order.url), self.cache_dir / order.name)
            work = self._run(order, progress, replacing=holder is not None)
            return await within_floor(work, self._floor, meter, order.url)

    async def _run(
        self, order: Order, progress: ProgressCallback, *, replacing: bool
    ) -> FetchResult:
        """Download ``order`` through a transport that connects only where the policy allows;
        ``replacing``: the file at the name is another one, never a hit."""
        options = make_options(
            retry=self._retry,
            timeout=self._timeout,
            progress=progress,
            verify=replacing,
            url=order.url,
        )
        request = make_request(
            order.url,
            self.cache_dir / order.name,
            options,
            mirrors=order.mirrors,
            expected=expect_sha256(order.sha256, order.url),
        )
        async with Transport(request.options, policy=self._net) as transport:
            return await run(request, transport=transport)

    def _forget(self, name: str, task: asyncio.Task[FetchResult]) -> None:
        job = self._running.get(name)
        if job is not None and job.task is task:
            del self._running[name]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" noise when every waiter left

    async def _get_cache(self, _request: web.Request) -> web.Response:
        files = await asyncio.to_thread(listing, self.cache_dir)
        return web.json_response({"files": files, "downloading": sorted(self._running)})

    async def _get_health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _get_metrics(self, _request: web.Request) -> web.Response:
        if self.metrics is None:
            return _error(501, f"metrics need prometheus-client: {INSTALL_METRICS}",
                          "NotImplemented")  # fmt: skip
        store = self.jobs.store
        self._counts = await store.call(store.counts)
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    def snapshot(self) -> tuple[dict[str, int], int, int]:
        """Jobs by state (as of the last scrape), queued and running now."""
        running = self.jobs.running
        return self._counts, self.jobs.unfinished - running, running


def _metrics(service: Service) -> Metrics | None:
    """The service's metrics, or None without prometheus-client (the ``serve`` extra)."""
    try:
        from .metrics import Metrics
    except ImportError:
        log.warning("GET /metrics answers 501: %s to serve it", INSTALL_METRICS)
        return None
    return Metrics(service.snapshot)
