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
from .retry import OnRetry, is_retryable, retrying

log = logging.getLogger("asyncfetch")


@dataclass(frozen=True)
class Probed:
    """What the sources said: the file to fetch, each usable source's own answer, and the
    SHA-256 the primary announced (only the primary's counts: a mirror could be poisoned)."""

    info: RemoteInfo
    sources: dict[str, RemoteInfo]
    announced: str | None = None


async def probe_sources(
    transport: Transport,
    urls: Sequence[str],
    board: MirrorBoard,
    policy: RetryPolicy,
    *,
    sha256: str | None = None,
    on_retry: OnRetry | None = None,
) -> Probed:
    """Probe all sources at once; retry (with backoff) only while the primary (or, with the
    caller's ``sha256``, any source) does not answer.

    The primary URL is the authority on the file; mirrors only speed it up. A mirror that
    fails, serves another size or announces another SHA-256 is dropped from ``board`` with a
    warning; sources without Range support are kept as whole-file fallbacks. Without the
    primary, mirrors are used only with ``sha256`` to check their bytes against.
    """
    try:
        async for attempt in retrying(policy, progress=lambda: 0, on_retry=on_retry):
            with attempt:
                infos = await _probe_round(transport, urls, board, trusted=sha256 is not None)
    except _NoSourceAnswered as exc:
        raise exc.summary from None
    info = _agree_on_size(urls[0], infos, board, trusted=sha256 is not None)
    primary = infos.get(urls[0])
    announced = primary.announced_sha256 if primary is not None else None
    _drop_other_digests(urls[0], infos, board, sha256 or announced)
    _mark_fallbacks(infos, board)
    usable = {u: i for u, i in infos.items() if i.size == info.size and not board.get(u).dropped}
    return Probed(info, usable, announced)


async def _probe_round(
    transport: Transport, urls: Sequence[str], board: MirrorBoard, *, trusted: bool
) -> dict[str, RemoteInfo]:
    """One probe of every source. Raises when none answered, or (unless ``trusted``: the
    caller gave a digest to check the mirrors' bytes against) when the primary did not."""
    results = await asyncio.gather(*(transport.probe(u) for u in urls), return_exceptions=True)
    infos = {u: r for u, r in zip(urls, results, strict=True) if isinstance(r, RemoteInfo)}
    errors = {u: r for u, r in zip(urls, results, strict=True) if isinstance(r, BaseException)}
    for error in errors.values():
        if not isinstance(error, FetchError):
            raise error
    if not infos:
        raise _no_source_answered(urls, errors)
    if urls[0] in errors and not trusted:
        raise _primary_unreachable(urls, errors)
    if urls[0] in errors:
        log.warning(
            "the primary URL %s gave no usable answer; downloading from its mirrors, "
            "checked against the SHA-256 given", redact(urls[0]),
        )  # fmt: skip
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


def _primary_unreachable(urls: Sequence[str], errors: dict[str, BaseException]) -> BaseException:
    primary = urls[0]
    failures = {url: str(error) for url, error in errors.items()}
    summary = RetriesExhausted(
        f"the primary URL gave no usable answer ({_naming(primary, failures[primary])}); "
        "without a SHA-256 to check them against, its mirrors are not used alone (they only "
        "speed up the primary): try again later, or pass sha256= (--sha256) to download from "
        "the mirrors",
        url=primary,
        byte_range=None,
        attempts=1,
        failures=failures,
    )
    return _NoSourceAnswered(summary, retryable=is_retryable(errors[primary]))


def _naming(url: str, message: str) -> str:
    """``message`` about ``url``, the URL in front unless the message names it already."""
    return message if redact(url) in message else f"{redact(url)}: {message}"


def _agree_on_size(
    primary: str, infos: dict[str, RemoteInfo], board: MirrorBoard, *, trusted: bool
) -> RemoteInfo:
    """The primary's answer when it has one: a mirror of another size is dropped. Without it,
    or when it gives no size, with the caller's digest (``trusted``): the size most sources
    agree on."""
    chosen = infos.get(primary)
    if chosen is None or (chosen.size is None and trusted):
        return _agree_among_mirrors(infos, board)
    for url, info in infos.items():
        if info.size != chosen.size:
            reason = (
                f"{redact(url)} serves {info.size} bytes but the primary URL "
                f"{redact(primary)} {chosen.size}"
            )
            log.warning("dropping mirror: %s", reason)
            board.drop(url, reason)
    return chosen


def _agree_among_mirrors(infos: dict[str, RemoteInfo], board: MirrorBoard) -> RemoteInfo:
    sizes = [i.size for i in infos.values()]
    majority = max(set(sizes), key=lambda s: (sizes.count(s), s is not None))
    for url, info in infos.items():
        if info.size != majority:
            reason = f"{redact(url)} serves {info.size} bytes but the other sources {majority}"
            log.warning("dropping mirror: %s", reason)
            board.drop(url, reason)
    agreeing = [i for i in infos.values() if i.size == majority]
    return next((i for i in agreeing if i.accepts_ranges), agreeing[0])


def _drop_other_digests(
    primary: str, infos: dict[str, RemoteInfo], board: MirrorBoard, expected: str | None
) -> None:
    """A mirror announcing a SHA-256 other than the expected one serves another file."""
    if expected is None:
        return
    for url, info in infos.items():
        if url == primary or info.announced_sha256 in (None, expected):
            continue
        reason = (
            f"{redact(url)} announces SHA-256 {info.announced_sha256}, but the file should have "
            f"{expected}"
        )
        log.warning("dropping mirror: %s", reason)
        board.drop(url, reason)


def _mark_fallbacks(infos: dict[str, RemoteInfo], board: MirrorBoard) -> None:
    """Sources without Range support only serve as whole-file fallbacks."""
    if not any(i.accepts_ranges for i in infos.values()):
        return
    for url, info in infos.items():
        if not info.accepts_ranges:
            board.get(url).ranges = False
