"""rank_mirrors(): measure each URL of one file and rank them, fastest first. Writes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from os import PathLike
from typing import TYPE_CHECKING

from .._config import Timeouts
from .._errors import FetchError, InvalidRequest
from .._models import ByteRange, RemoteInfo
from .._options import make_options
from .._transport.client import Transport, check_url
from .._userinfo import redact

if TYPE_CHECKING:
    from .._transport.client import Session

DEFAULT_SAMPLE = 8 << 20
HASH_BATCH = 1 << 20


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
        speed: bytes per second over the sample, all connections together.
        sample_bytes: bytes downloaded for the sample.
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
) -> list[MirrorReport]:
    """Measure every URL of one file, one after the other, and rank them fastest first.

    For each URL: size, Range support and validators, time to first byte, and throughput
    over the first ``sample`` bytes fetched with ``connections`` parallel ranges. Nothing is
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
        reports = [await _measure(transport, url, sample, connections) for url in unique]
    return _ranked(_with_agreement(reports))


async def _warm_up(transport: Transport) -> None:
    """Pay the process's one-time costs before anything is timed, so they are not charged to
    whichever URL comes first: importing aiohttp, opening its session (samples go through
    it) and starting the thread pool the samples are hashed in."""
    _ = transport.session
    await asyncio.to_thread(hashlib.sha256)


async def _measure(transport: Transport, url: str, sample: int, connections: int) -> MirrorReport:
    try:
        info = await transport.probe(url)
        report = _from_info(info)
        return await _sample(transport, report, info, sample, connections)
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
    transport: Transport, report: MirrorReport, info: RemoteInfo, sample: int, connections: int
) -> MirrorReport:
    length = min(sample, info.size) if info.size is not None else sample
    parts = _split(length, connections)
    if info.accepts_ranges:
        await _open_connections(transport, info.final_url, len(parts))
    started = time.monotonic()
    first_bytes: list[float] = []
    if info.accepts_ranges:
        fetches = [_fetch(transport, info.final_url, [p], True, first_bytes) for p in parts]
        results = [r for rs in await asyncio.gather(*fetches) for r in rs]
    else:
        results = await _fetch(transport, info.final_url, parts, False, first_bytes)
    elapsed = time.monotonic() - started
    got = sum(n for n, _ in results)
    return replace(
        report,
        ttfb=min(first_bytes) - started if first_bytes else None,
        speed=got / elapsed if elapsed > 0 else None,
        sample_bytes=got,
        sample_sha256=tuple(d for _, d in results),
    )


async def _open_connections(transport: Transport, url: str, count: int) -> None:
    """Open ``count`` connections to ``url`` with 1-byte ranges, untimed, so its sample is
    timed on open connections: no URL pays connects and first-request costs the others do
    not, nor gains connections kept open by an earlier URL on the same host."""
    ranges = _split(count, count)
    await asyncio.gather(*(_fetch(transport, url, [r], True, []) for r in ranges))


def _split(length: int, count: int) -> list[ByteRange]:
    step = -(-length // max(count, 1))
    return [ByteRange(s, min(s + step, length)) for s in range(0, length, max(step, 1))]


async def _fetch(
    transport: Transport,
    url: str,
    parts: list[ByteRange],
    ranged: bool,
    first_bytes: list[float],
) -> list[tuple[int, str]]:
    """Fetch ``parts`` (one ranged request, or the start of one whole-file answer) and
    return (bytes, sha256) for each part, so every URL's sample splits the same way."""
    results: list[tuple[int, str]] = []
    pending = bytearray()
    async with transport.open(url, parts[0] if ranged else None) as body:
        for part in parts:
            digest, got = hashlib.sha256(), 0
            while got < part.length:
                if not pending:
                    chunk = await body.read()
                    if not chunk:
                        break
                    first_bytes.append(time.monotonic())
                    pending += chunk
                take = min(len(pending), part.length - got, HASH_BATCH)
                await asyncio.to_thread(digest.update, bytes(pending[:take]))
                del pending[:take]
                got += take
            results.append((got, digest.hexdigest()))
        if not ranged:
            body.abandon()  # only the sample is wanted from a whole-file answer
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
    return sorted(reports, key=lambda r: (not r.ok, -(r.speed or 0.0)))
