"""rank_mirrors(): measure each URL of one file and rank them, fastest first. Writes nothing.

Each URL is read until its rate settles, not for a fixed sample: a server's first seconds
can run far faster than it sustains (TCP windows, nginx's ``limit_rate_after``: an 8 MiB
sample of an nginx capped at 5 MB/s a connection measured 353 MB/s). The bytes arriving over
all of a URL's connections are counted in slices of :data:`SLICE` seconds; the rate has
settled once the rate over the last :data:`SETTLE_SLICES` slices (one second) and over the
second before differ by at most :data:`SETTLE_SPREAD` times and the sample is in. The bound:
``max_seconds`` (10 s) a URL, or the end of the file, whichever comes first (``settled``
then says whether it settled).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from os import PathLike
from typing import TYPE_CHECKING, Any

from .._config import Timeouts
from .._errors import FetchError, InvalidRequest
from .._models import ByteRange, RemoteInfo
from .._options import make_options
from .._transport.client import Transport
from .._urls import check_url
from .._userinfo import redact

if TYPE_CHECKING:
    from .._transport.client import Session

DEFAULT_SAMPLE = 8 << 20
HASH_BATCH = 1 << 20
SLICE = 0.25
SETTLE_SLICES = 4
SETTLE_SPREAD = 1.25
DEFAULT_MAX_SECONDS = 10.0


@dataclass(frozen=True)
class MirrorReport:
    """How one URL did in :func:`rank_mirrors`.

    Attributes:
        url: the URL measured (a password in it masked).
        error: why it could not be measured, or None.
        size: the file size it reports.
        accepts_ranges: whether it serves byte ranges.
        etag: its ETag, if any.
        last_modified: its Last-Modified, if any.
        ttfb: seconds from sending the first sample request to its first body byte (on a
            connection already open, so a URL's place in the list does not count).
        speed: what a download gets from it, bytes per second: the sustained rate over all
            the connections measured, or over one stream for a server without ranges (the
            rank's key).
        burst: bytes per second over the first half second, all connections together.
        sustained: bytes per second once the rate settled (over the last second measured).
        settled: whether the rate settled within the bound (see the module docstring).
        streams: connections measured (1 without Range support).
        sample_bytes: bytes downloaded to measure it.
        sample_sha256: digests of the sample's parts (the same split for every URL).
        agrees: whether size and sample match the majority of the URLs, or the first URL
            when there is no majority (None: unknown, e.g. its size is not known).
        disagreement: how it differs from them when ``agrees`` is False, else None.
    """

    url: str
    error: str | None = None
    size: int | None = None
    accepts_ranges: bool = False
    etag: str | None = None
    last_modified: str | None = None
    ttfb: float | None = None
    speed: float | None = None
    burst: float | None = None
    sustained: float | None = None
    settled: bool = False
    streams: int = 0
    sample_bytes: int = 0
    sample_sha256: tuple[str, ...] = ()
    agrees: bool | None = None
    disagreement: str | None = None

    @property
    def ok(self) -> bool:
        """Measured without error and agreeing with the others."""
        return self.error is None and self.agrees is not False


async def rank_mirrors(
    urls: Iterable[str],
    *,
    sample: int = DEFAULT_SAMPLE,
    connections: int = 4,
    timeout: Timeouts | float | None = None,
    headers: Mapping[str, str] | None = None,
    session: Session | None = None,
    cacert: str | PathLike[str] | None = None,
    insecure: bool = False,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> list[MirrorReport]:
    """Measure every URL of one file, one after the other, and rank them fastest first.

    For each URL: size, Range support and validators, time to first byte, the initial burst
    and the sustained rate, read with ``connections`` parallel ranges (one stream without
    Range support) for at least ``sample`` bytes and until the rate settles, or for
    ``max_seconds`` at most; ranked by the sustained rate. The first ``sample`` bytes are
    hashed in ``connections`` parts to compare the URLs. Nothing is
    timed before the client is warmed up and the URL's connections are open, so each URL is
    measured alike wherever it is in the list. Sources whose size or sample bytes differ
    from the majority (without one, from the first URL) are marked ``agrees=False``, with
    the reason in ``disagreement``, and ranked last, as are those that failed. ``cacert`` and
    ``insecure``: as for :func:`asyncfetch.fetch`.
    """
    unique = list(dict.fromkeys(check_url(u) for u in urls))
    if not unique:
        raise InvalidRequest("rank_mirrors needs at least one URL")
    if sample < 1:
        raise InvalidRequest(f"sample must be at least one byte, got {sample}")
    options = make_options(
        connections=connections, timeout=timeout, headers=headers, cacert=cacert, insecure=insecure
    )
    transport = Transport(options, session=session)
    for url in unique:
        transport.asks_for(url)  # each URL ranked is one asked for: the headers go to each
    async with transport:
        await _warm_up(transport)
        reports = [
            await _measure(transport, url, sample, connections, max_seconds) for url in unique
        ]
    return _ranked(_with_agreement(reports))


async def _warm_up(transport: Transport) -> None:
    """Pay the process's one-time costs before anything is timed, so they are not charged to
    whichever URL comes first: importing aiohttp, opening its session (samples go through
    it) and starting the thread pool the samples are hashed in."""
    _ = transport.session
    await asyncio.to_thread(hashlib.sha256)


async def _measure(
    transport: Transport, url: str, sample: int, connections: int, max_seconds: float
) -> MirrorReport:
    try:
        info = await transport.probe(url)
        report = _from_info(info)
        return await _sample(transport, report, info, sample, connections, max_seconds)
    except FetchError as exc:
        return MirrorReport(redact(url), error=str(exc))


def _from_info(info: RemoteInfo) -> MirrorReport:
    return MirrorReport(
        redact(info.url),
        size=info.size,
        accepts_ranges=info.accepts_ranges,
        etag=info.etag,
        last_modified=info.last_modified,
    )


async def _sample(
    transport: Transport,
    report: MirrorReport,
    info: RemoteInfo,
    sample: int,
    connections: int,
    max_seconds: float,
) -> MirrorReport:
    length = min(sample, info.size) if info.size is not None else sample
    parts = _split(length, connections)
    ranged = info.accepts_ranges and info.size is not None
    if ranged:
        await _open_connections(transport, info.final_url, len(parts))
    meter, stop = _Meter(), asyncio.Event()
    started = time.monotonic()
    meter.points.append((started, 0))
    if ranged:
        assert info.size is not None
        reads = [_fetch(transport, info.final_url, [p], ByteRange(p.start, info.size), meter,
                        stop) for p in parts]  # fmt: skip
    else:
        reads = [_fetch(transport, info.final_url, parts, None, meter, stop)]
    reading = asyncio.ensure_future(asyncio.gather(*reads))
    await _watch(meter, stop, reading, length, started + max_seconds)
    results = [r for rs in await reading for r in rs]
    elapsed = meter.points[-1][0] - started
    burst, sustained, settled = _rates(meter.points)
    return replace(
        report,
        ttfb=meter.first - started if meter.first is not None else None,
        speed=sustained
        if sustained is not None
        else (meter.total / elapsed if elapsed > 0 else None),
        burst=burst,
        sustained=sustained,
        settled=settled,
        streams=len(reads),
        sample_bytes=meter.total,
        sample_sha256=tuple(d for _, d in results),
    )


@dataclass
class _Meter:
    """Bytes received over all of a URL's connections, and (time, total) at each slice."""

    total: int = 0
    first: float | None = None
    points: list[tuple[float, int]] = field(default_factory=list)

    def add(self, nbytes: int) -> None:
        if self.first is None:
            self.first = time.monotonic()
        self.total += nbytes


async def _watch(
    meter: _Meter, stop: asyncio.Event, reading: asyncio.Future[Any], length: int,
    deadline: float,
) -> None:  # fmt: skip
    """Take a point every SLICE until the reads end, or tell them to stop once the sample is
    in and the rate settled, or at ``deadline``."""
    while not reading.done():
        await asyncio.wait({reading}, timeout=SLICE)
        now = time.monotonic()
        meter.points.append((now, meter.total))
        if not stop.is_set() and (
            now >= deadline or (meter.total >= length and _rates(meter.points)[2])
        ):
            stop.set()  # fmt: skip


def _rates(points: list[tuple[float, int]]) -> tuple[float | None, float | None, bool]:
    """(burst, sustained, settled) from the (time, bytes) points, one each SLICE."""
    rates = [
        (b1 - b0) / (t1 - t0)
        for (t0, b0), (t1, b1) in zip(points, points[1:], strict=False)
        if t1 > t0
    ]
    if not rates:
        return None, None, False
    burst = max(rates[:2])
    sustained = _rate(points, min(SETTLE_SLICES, len(rates)), 0)
    before = _rate(points, SETTLE_SLICES, SETTLE_SLICES) if len(rates) >= 2 * SETTLE_SLICES else 0
    settled = bool(sustained and before) and (
        max(sustained or 0, before) <= SETTLE_SPREAD * min(sustained or 0, before)
    )
    return burst, sustained, settled


def _rate(points: list[tuple[float, int]], slices: int, back: int) -> float:
    """Bytes per second over ``slices`` slices ending ``back`` slices before the last point."""
    (t0, b0), (t1, b1) = points[-1 - back - slices], points[-1 - back]
    return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


async def _open_connections(transport: Transport, url: str, count: int) -> None:
    """Open ``count`` connections to ``url`` with 1-byte ranges, untimed, so its sample is
    timed on open connections: no URL pays connects and first-request costs the others do
    not, nor gains connections kept open by an earlier URL on the same host."""
    ranges = _split(count, count)
    await asyncio.gather(*(_fetch(transport, url, [r], r) for r in ranges))


def _split(length: int, count: int) -> list[ByteRange]:
    step = -(-length // max(count, 1))
    return [ByteRange(s, min(s + step, length)) for s in range(0, length, max(step, 1))]


async def _fetch(
    transport: Transport,
    url: str,
    parts: list[ByteRange],
    byte_range: ByteRange | None,
    meter: _Meter | None = None,
    stop: asyncio.Event | None = None,
) -> list[tuple[int, str]]:
    """Fetch ``byte_range`` (None: the whole file), hashing ``parts`` from its start, and
    return (bytes, sha256) for each part, so every URL's sample splits the same way; then
    keep reading, counted in ``meter``, until ``stop`` is set or the answer ends."""
    results: list[tuple[int, str]] = []
    pending = bytearray()
    async with transport.open(url, byte_range) as body:
        for part in parts:
            digest, got = hashlib.sha256(), 0
            while got < part.length:
                if not pending:
                    chunk = await body.read()
                    if not chunk:
                        break
                    if meter is not None:
                        meter.add(len(chunk))
                    pending += chunk
                take = min(len(pending), part.length - got, HASH_BATCH)
                await asyncio.to_thread(digest.update, bytes(pending[:take]))
                del pending[:take]
                got += take
            results.append((got, digest.hexdigest()))
        ended = meter is None  # a sample with no meter reads just its parts
        while not ended and meter is not None and stop is not None and not stop.is_set():
            chunk = await body.read()
            ended = not chunk
            meter.add(len(chunk))
        if not ended:
            body.abandon()  # the rest of the answer is not wanted
    return results


def _with_agreement(reports: list[MirrorReport]) -> list[MirrorReport]:
    judged = [r for r in reports if _comparable(r)]
    if len(judged) < 2:
        return reports
    reference = _reference(judged)
    return [_judged(r, reference) if _comparable(r) else r for r in reports]


def _comparable(report: MirrorReport) -> bool:
    """Measured, with a known size (without one its sample may be split otherwise)."""
    return report.error is None and report.size is not None


def _reference(judged: list[MirrorReport]) -> MirrorReport:
    """The report the others are held to: the first of the majority, or the first of them
    all (in the order given) when no size and sample are served by more than half."""
    votes = Counter(_version(r) for r in judged)
    version, count = votes.most_common(1)[0]
    if count * 2 <= len(judged):
        return judged[0]
    return next(r for r in judged if _version(r) == version)


def _version(report: MirrorReport) -> tuple[int | None, tuple[str, ...]]:
    return report.size, report.sample_sha256


def _judged(report: MirrorReport, reference: MirrorReport) -> MirrorReport:
    """``report`` with ``agrees`` (and ``disagreement``) set by comparing it to ``reference``;
    equal sizes mean the same sampled ranges, so their digests compare."""
    if report.size != reference.size:
        why = f"serves {report.size} bytes, but {reference.url} serves {reference.size}"
    elif report.sample_sha256 != reference.sample_sha256:
        why = f"serves other bytes than {reference.url} in the first {report.sample_bytes} bytes"
    else:
        return replace(report, agrees=True)
    return replace(report, agrees=False, disagreement=why)


def _ranked(reports: list[MirrorReport]) -> list[MirrorReport]:
    return sorted(reports, key=lambda r: (not r.ok, -(r.speed or 0.0)))  # speed: sustained
