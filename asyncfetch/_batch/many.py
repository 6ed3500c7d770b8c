"""fetch_many(): many sources under one connection budget, results as they complete.

One Transport (one aiohttp session, one
:class:`~asyncfetch._transport.budget.ConnectionBudget`) serves
every download of the batch; a supervisor task keeps up to ``max_files`` downloads going and
puts each finished one on a queue the caller's ``async for`` reads. Leaving the loop (an error,
``break`` under ``contextlib.aclosing``, or cancelling the consumer) cancels every download:
their partial data stays in ``.part`` files for a later resume, and no target is left that is
not complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
    Sized,
)
from dataclasses import dataclass, fields, replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._cache.lookup import checkpoints_dir, file_name_for
from .._config import DEFAULT_CONNECTIONS, RetryPolicy, Timeouts, check_connections
from .._engine.fetch import run
from .._engine.progress import BatchProgress
from .._engine.request import make_request
from .._errors import InvalidRequest
from .._expectation import expect_sha256
from .._models import FetchResult, ProgressCallback, ProgressEvent
from .._options import Options, make_options
from .._transport.budget import ConnectionBudget, host_key
from .._transport.client import Transport
from .._userinfo import redact

if TYPE_CHECKING:
    from .._transport.client import Session


@dataclass(frozen=True)
class Source:
    """One file of a batch: where to get it, how to check it, where to put it.

    Attributes:
        url: the file's URL.
        mirrors: more URLs serving the same bytes.
        sha256: the expected SHA-256 (hex), if known.
        dest: the output path; a relative one is taken under ``dest_dir`` when there is one
            (else under the current directory), its missing directories created.
        name: the file name to use in ``dest_dir`` (or the torch.hub cache) when there is no
            ``dest``; by default the last part of the URL's path.
    """

    url: str
    mirrors: tuple[str, ...] = ()
    sha256: str | None = None
    dest: str | PathLike[str] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str):
            raise InvalidRequest(f"a source's url must be a string, got {self.url!r}")
        mirrors = (self.mirrors,) if isinstance(self.mirrors, str) else tuple(self.mirrors)
        if not all(isinstance(m, str) for m in mirrors):
            raise InvalidRequest(f"{self.url}: mirrors must be URLs, got {mirrors!r}", url=self.url)
        object.__setattr__(self, "mirrors", mirrors)
        if self.sha256 is not None and not isinstance(self.sha256, str):
            raise InvalidRequest(f"{self.url}: sha256 must be hex text", url=self.url)
        name = self.name
        if name is not None and (
            not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
        ):
            raise InvalidRequest(
                f"{self.url}: name must be a plain file name, got {name!r}; use dest for a path",
                url=self.url,
            )

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return redact(f"Source({shown})")  # the URLs' secrets masked

    @classmethod
    def coerce(cls, value: object) -> Source:
        """A Source from a URL, a Source, a mapping, or any object with a ``url`` attribute.

        Raises:
            InvalidRequest: for anything else, or for unknown or malformed fields.
        """
        if isinstance(value, Source):
            return value
        if isinstance(value, str):
            return cls(value)
        known = {f.name for f in fields(cls)}
        if isinstance(value, Mapping):
            given: dict[str, Any] = dict(value)
        elif hasattr(value, "url"):
            given = {k: getattr(value, k) for k in known if getattr(value, k, None) is not None}
        else:
            raise InvalidRequest(f"a source must be a URL, a mapping or a Source, got {value!r}")
        unknown = sorted(set(given) - known)
        if unknown or "url" not in given:
            problem = f"unknown field(s) {unknown}" if unknown else "no url"
            raise InvalidRequest(
                f"source {given!r}: {problem}; known fields: {sorted(known)}",
                url=given.get("url") if isinstance(given.get("url"), str) else None,
            )
        return cls(**given)


class HasURL(Protocol):
    """Any object with a ``url`` (and optionally mirrors, sha256, dest, name) attributes."""

    @property
    def url(self) -> str:
        """The file's URL."""


SourceLike = str | Source | Mapping[str, Any] | HasURL


@dataclass(frozen=True)
class BatchItem:
    """The outcome of one source of a batch: a result or an error, never both.

    Attributes:
        index: the source's position in the input, from 0.
        url: its URL (as given, when it could not be read as a source).
        path: where the file went or was meant to go, when known.
        source: the source as read, or None when it could not be read.
        result: the FetchResult when the file is complete and verified.
        error: what went wrong otherwise (a FetchError, in all but unexpected cases).
    """

    index: int
    url: str
    path: Path | None
    source: Source | None
    result: FetchResult | None = None
    error: Exception | None = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return redact(f"BatchItem({shown})")  # the URL's secrets masked

    @property
    def ok(self) -> bool:
        """True when the file is in place, verified."""
        return self.error is None

    def unwrap(self) -> FetchResult:
        """The result, or raise the error."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@dataclass(frozen=True)
class _Settings:
    """What only a batch has, beside the options every file of it is downloaded with."""

    options: Options  # progress: the caller's callback, never True (see bars)
    max_files: int
    per_host: int
    fail_fast: bool
    dest_dir: Path | None
    bars: bool  # draw a BatchProgress of our own


def fetch_many(
    sources: Iterable[SourceLike] | AsyncIterable[SourceLike],
    *,
    max_files: int | None = None,
    connections: int = DEFAULT_CONNECTIONS,
    per_host: int | None = None,
    fail_fast: bool = False,
    dest_dir: str | PathLike[str] | None = None,
    chunk_size: int | str | None = None,
    retry: RetryPolicy | int | None = None,
    timeout: Timeouts | float | None = None,
    headers: Mapping[str, str] | None = None,
    mirror_headers: Mapping[str, Mapping[str, str]] | None = None,
    progress: ProgressCallback | bool | None = None,
    hash: bool = True,
    session: Session | None = None,
    cacert: str | PathLike[str] | None = None,
    insecure: bool = False,
) -> AsyncGenerator[BatchItem, None]:
    """Download many files at once; yield a BatchItem for each as it completes.

    Every request of every download holds a slot of one budget: ``connections`` in all and
    ``per_host`` to any one ``host:port``, so 200 small files never open 200 x 16 sockets, and
    a large file's connections take over slots as the small ones finish. A 429 or
    ``Retry-After`` from a host pauses every download from that host and halves how many
    requests it gets at once (they grow back as it answers).

    Nothing starts until the first item is asked for. One failure does not stop the others:
    it comes out as an item with ``error`` set. Leaving the loop early (``break``; wrap the
    call in ``contextlib.aclosing`` so this happens at once) or cancelling the task that
    iterates stops every download, keeping partial data for a resume. Example::

        async with contextlib.aclosing(asyncfetch.fetch_many(urls, dest_dir="ckpt")) as items:
            async for item in items:
                print(item.url, item.result.path if item.ok else item.error)

    Args:
        sources: URLs, :class:`Source` objects, or mappings/objects with ``url`` and optionally
            ``mirrors``, ``sha256``, ``dest``, ``name``; a plain or an async iterable, read
            as the batch goes.
        max_files: files downloading at once (default: ``connections``, so that small files,
            one connection each, can use them all).
        connections: requests in flight in all, over every file.
        per_host: requests in flight to one host (default: ``connections``).
        fail_fast: on the first failure, cancel the rest and raise that error.
        dest_dir: where files without a ``dest`` go (default: the torch.hub checkpoint
            directory); it is created if missing. Relative ``dest`` paths are taken under it
            (without it, under the current directory); their missing directories are created.
        chunk_size, retry, timeout, headers, mirror_headers, hash, cacert, insecure: as for
            :func:`asyncfetch.fetch` (``headers``' credentials go to each file's own URL).
        progress: called with every file's ProgressEvents (e.g. a :class:`ProgressStream`);
            ``True`` draws a total bar and a bar per file in flight on stderr.
        session: an aiohttp session of your own to use (it is not closed).

    Raises:
        InvalidRequest: at once, for a bad option. Errors of single sources are not raised
            but yielded (unless ``fail_fast``).
    """
    max_files = connections if max_files is None else max_files
    for name, value in (("max_files", max_files), ("connections", connections)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"{name} must be a whole number >= 1, got {value!r}")
    options = make_options(
        connections=connections, chunk_size=chunk_size, retry=retry, timeout=timeout,
        headers=headers, mirror_headers=mirror_headers,
        progress=None if progress is True else progress, hash=hash, cacert=cacert,
        insecure=insecure,
    )  # fmt: skip
    settings = _Settings(
        options=options,
        max_files=max_files,
        per_host=check_connections(per_host if per_host is not None else connections),
        fail_fast=fail_fast,
        dest_dir=Path(dest_dir).expanduser() if dest_dir is not None else None,
        bars=progress is True,
    )
    return _Batch(settings, sources, session).items()


class _Relay:
    """One source's progress callback: forwards events and notes whether any were sent."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.started = False

    def __call__(self, event: ProgressEvent) -> None:
        self.started = True
        if self.callback is not None:
            self.callback(event)

    def failed_early(self, url: str, error: BaseException) -> None:
        """Report a source that failed before its download began: started, then failed."""
        if self.callback is not None and not self.started:
            self.callback(ProgressEvent("started", url))
            self.callback(ProgressEvent("failed", url, message=str(error) or repr(error)))


def _count(sources: object) -> int | None:
    """How many sources there are, when that is known before reading them."""
    return len(sources) if isinstance(sources, Sized) else None


class _End:
    """Marks the end of the item queue."""


class _Batch:
    """The state of one fetch_many call."""

    def __init__(
        self,
        settings: _Settings,
        sources: Iterable[SourceLike] | AsyncIterable[SourceLike],
        session: Session | None,
    ) -> None:
        self.settings = settings
        self.options = settings.options
        self.sources = sources
        self.session = session
        self.queue: asyncio.Queue[BatchItem | BaseException | _End] = asyncio.Queue()
        self.running: set[asyncio.Task[None]] = set()
        self.claimed: set[Path] = set()
        self.made_dirs: set[Path] = set()
        self.progress = settings.options.callback

    async def items(self) -> AsyncGenerator[BatchItem, None]:
        """The batch's items as they complete; leaving early stops every download."""
        budget = ConnectionBudget(
            total=self.options.connections,
            per_host=self.settings.per_host,
            sleep=self.options.retry.sleep,
        )
        transport = Transport(self.options, session=self.session, budget=budget)
        bars = BatchProgress(_count(self.sources)) if self.settings.bars else None
        if bars is not None:
            self.progress = bars
        async with transport:
            supervisor = asyncio.create_task(self._supervise(transport))
            try:
                while not isinstance(got := await self.queue.get(), _End):
                    if isinstance(got, BaseException):
                        raise got
                    if self.settings.fail_fast and got.error is not None:
                        raise got.error
                    yield got
            finally:
                await self._stop(supervisor)
                if bars is not None:
                    bars.close()

    async def _stop(self, supervisor: asyncio.Task[None]) -> None:
        """Cancel the supervisor and every download, and wait until they have cleaned up."""
        supervisor.cancel()
        for task in self.running:
            task.cancel()
        await asyncio.gather(supervisor, *self.running, return_exceptions=True)

    async def _supervise(self, transport: Transport) -> None:
        """Start downloads, at most ``max_files`` at a time, then mark the end of the queue."""
        free = asyncio.Semaphore(self.settings.max_files)
        try:
            index = 0
            async for raw in _aiter(self.sources):
                await free.acquire()
                task = asyncio.create_task(self._one(index, raw, transport, free))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
                index += 1
            while self.running:
                await asyncio.wait(set(self.running))
        except Exception as exc:  # the sources iterable failed: end the batch with its error
            self.queue.put_nowait(exc)
            return
        self.queue.put_nowait(_End())

    async def _one(
        self, index: int, raw: object, transport: Transport, free: asyncio.Semaphore
    ) -> None:
        try:
            item = await self._download(index, raw, transport)
        finally:
            free.release()
        self.queue.put_nowait(item)

    async def _download(self, index: int, raw: object, transport: Transport) -> BatchItem:
        relay = _Relay(self.progress)
        source: Source | None = None
        dest: Path | None = None
        url = _url_of(raw)
        try:
            source = Source.coerce(raw)
            dest, ours = self._resolve(source)
            options = replace(self.options, connections=self._per_file(source), progress=relay)
            expected = expect_sha256(source.sha256, source.url)
            request = make_request(
                source.url, dest, options, mirrors=source.mirrors, expected=expected
            )
            dest = request.dest
            self._claim(request.dest, source.url)
            if ours:
                await self._make_dir(request.dest.parent)
            result = await run(request, transport=transport)
        except Exception as exc:
            relay.failed_early(url, exc)
            return BatchItem(index, url, dest, source, error=exc)
        return BatchItem(index, url, result.path, source, result=result)

    def _resolve(self, source: Source) -> tuple[Path, bool]:
        """The output path of ``source``, and whether its directory is ours to create (that of
        a relative ``dest``, under ``dest_dir`` or the current directory; not an absolute one)."""
        root = self.settings.dest_dir
        if source.dest is not None:
            dest = Path(source.dest).expanduser()
            if dest.is_absolute():
                return dest, False
            return (dest if root is None else root / dest), True
        base = root if root is not None else checkpoints_dir()
        return base / (source.name or file_name_for(source.url)), True

    def _claim(self, dest: Path, url: str) -> None:
        if dest in self.claimed:
            raise InvalidRequest(
                f"{url}: another source of this batch also goes to {dest}; give each a "
                "different dest or name",
                url=url,
            )
        self.claimed.add(dest)

    async def _make_dir(self, directory: Path) -> None:
        if directory not in self.made_dirs:
            await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
            self.made_dirs.add(directory)

    def _per_file(self, source: Source) -> int:
        """Connections for one file: no more than its hosts could ever grant it at once."""
        hosts = {host_key(u) for u in (source.url, *source.mirrors)}
        return min(self.options.connections, self.settings.per_host * len(hosts))


def _url_of(raw: object) -> str:
    if isinstance(raw, str):
        return raw
    url = raw.get("url") if isinstance(raw, Mapping) else getattr(raw, "url", None)
    return url if isinstance(url, str) else repr(raw)


async def _aiter(
    sources: Iterable[SourceLike] | AsyncIterable[SourceLike],
) -> AsyncIterator[object]:
    if isinstance(sources, AsyncIterable):
        async for source in sources:
            yield source
    else:
        for source in sources:
            yield source
            await asyncio.sleep(0)  # a long list must not hold the loop
