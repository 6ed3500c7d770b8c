"""Probing every source of a download and agreeing on what the file is."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .._config import RetryPolicy
from .._errors import FetchError, RetriesExhausted, TransportError
from .._models import RemoteInfo
from .._transport.client import Transport
from .._userinfo import redact
from .mirrors import MirrorBoard
from .retry import is_retryable, retrying

log = logging.getLogger("asyncfetch")


@dataclass(frozen=True)
class Probed:
    """What the sources said: the file to fetch, and each usable source's own answer."""

    info: RemoteInfo
    sources: dict[str, RemoteInfo]


async def probe_sources(
    transport: Transport, urls: Sequence[str], board: MirrorBoard, policy: RetryPolicy
) -> Probed:
    """Probe all sources at once; retry (with backoff) only while none answers.

    Sources that fail, or disagree with the majority on the size, are dropped from ``board``
    with a warning; sources without Range support are kept as whole-file fallbacks.
    """
    try:
        async for attempt in retrying(policy, progress=lambda: 0):
            with attempt:
                infos = await _probe_round(transport, urls, board)
    except _NoSourceAnswered as exc:
        raise exc.summary from None
    info = _agree_on_size(urls[0], infos, board)
    _mark_fallbacks(infos, board)
    return Probed(info, {url: i for url, i in infos.items() if i.size == info.size})


async def _probe_round(
    transport: Transport, urls: Sequence[str], board: MirrorBoard
) -> dict[str, RemoteInfo]:
    results = await asyncio.gather(*(transport.probe(u) for u in urls), return_exceptions=True)
    infos = {u: r for u, r in zip(urls, results, strict=True) if isinstance(r, RemoteInfo)}
    errors = {u: r for u, r in zip(urls, results, strict=True) if isinstance(r, BaseException)}
    for error in errors.values():
        if not isinstance(error, FetchError):
            raise error
    if not infos:
        raise _no_source_answered(urls, errors)
    for url, error in errors.items():
        log.warning("dropping source %s", _naming(url, str(error)))
        board.drop(url, str(error))
    return infos


class _NoSourceAnswered(TransportError):
    """Every source failed its probe; ``summary`` is the error the caller sees."""

    def __init__(self, summary: RetriesExhausted, *, retryable: bool) -> None:
        super().__init__(str(summary), url=summary.url, retryable=retryable)
        self.summary = summary


def _no_source_answered(urls: Sequence[str], errors: dict[str, BaseException]) -> BaseException:
    if len(urls) == 1:
        return errors[urls[0]]
    failures = {url: str(error) for url, error in errors.items()}
    listing = "; ".join(_naming(url, message) for url, message in failures.items())
    summary = RetriesExhausted(
        f"no source of {urls[0]} answered: {listing}",
        url=urls[0],
        byte_range=None,
        attempts=1,
        failures=failures,
    )
    return _NoSourceAnswered(summary, retryable=any(is_retryable(e) for e in errors.values()))


def _naming(url: str, message: str) -> str:
    """``message`` about ``url``, the URL in front unless the message names it already."""
    return message if redact(url) in message else f"{redact(url)}: {message}"


def _agree_on_size(primary: str, infos: dict[str, RemoteInfo], board: MirrorBoard) -> RemoteInfo:
    sizes = [i.size for i in infos.values()]
    majority = max(set(sizes), key=lambda s: (sizes.count(s), s is not None))
    for url, info in infos.items():
        if info.size != majority:
            reason = f"{redact(url)} serves {info.size} bytes but the other sources {majority}"
            log.warning("dropping source: %s", reason)
            board.drop(url, reason)
    chosen = infos.get(primary)
    if chosen is not None and chosen.size == majority:
        return chosen
    if chosen is not None:
        log.warning(
            "the primary URL %s disagrees with the mirrors on the size (%s vs %s bytes); "
            "downloading from the mirrors that agree",
            redact(primary), chosen.size, majority,
        )  # fmt: skip
    agreeing = [i for i in infos.values() if i.size == majority]
    return next((i for i in agreeing if i.accepts_ranges), agreeing[0])


def warn_if_versions_differ(primary: str, sources: dict[str, RemoteInfo]) -> None:
    """Warn when the sources that agree on the size disagree on the ETag or Last-Modified.

    Without an expected SHA-256 nothing else tells mirrors serving other bytes of the same
    size apart, and the file would be a mix of them; the caller warns only then.
    """
    for name, field in (("ETag", "etag"), ("Last-Modified", "last_modified")):
        seen = {url: value for url, info in sources.items() if (value := getattr(info, field))}
        if len(set(seen.values())) > 1:
            listing = ", ".join(f"{redact(url)} {value}" for url, value in seen.items())
            log.warning(
                "the sources of %s may serve different files: their %s differs (%s); "
                "without a SHA-256 they are trusted to serve the same bytes, so pass "
                "sha256= (--sha256) to have the file checked",
                redact(primary), name, listing,
            )  # fmt: skip
            return


def _mark_fallbacks(infos: dict[str, RemoteInfo], board: MirrorBoard) -> None:
    """Sources without Range support only serve as whole-file fallbacks."""
    if not any(i.accepts_ranges for i in infos.values()):
        return
    for url, info in infos.items():
        if not info.accepts_ranges:
            board.get(url).ranges = False
