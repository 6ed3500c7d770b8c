"""Showing that mirrors serve the primary's bytes, before any of theirs are mixed in.

Two sources of the same size may serve different files (checkpoints of one architecture
share long headers and differ in their tensors). Without a full-file SHA-256 both announce
alike, a mirror is used only once windows of its bytes, at offsets drawn at random for each
run (the last window always among them), hash the same as the primary's. The windows are
small ranged GETs over the connections the download then reuses.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets

from .._config import RetryPolicy
from .._errors import FetchError, TruncatedBody
from .._models import ByteRange, RemoteInfo
from .._transport.client import Span, Transport
from .._userinfo import redact
from .mirrors import MirrorBoard
from .retry import retrying

log = logging.getLogger("asyncfetch")

WINDOW = 64 << 10
RANDOM_WINDOWS = 4


def pick_windows(
    size: int, *, window: int = WINDOW, count: int = RANDOM_WINDOWS
) -> list[ByteRange]:
    """``count`` windows at random offsets of a file of ``size`` bytes, and the last one
    (fewer when the file is small: the whole file is one window)."""
    if size <= window:
        return [ByteRange(0, size)] if size else []
    starts = {secrets.randbelow(size - window + 1) for _ in range(count)}
    starts.add(size - window)
    return [ByteRange(start, start + window) for start in sorted(starts)]


async def check_mirrors(
    transport: Transport,
    primary: str,
    sources: dict[str, RemoteInfo],
    board: MirrorBoard,
    *,
    announced: str | None,
    policy: RetryPolicy,
) -> None:
    """Drop from ``board`` each mirror in ``sources`` not shown to serve the primary's bytes,
    with one warning saying why: shown by announcing the SHA-256 the primary ``announced``,
    or by sampled windows hashing alike."""
    mirrors = [
        url
        for url, info in sources.items()
        if url != primary
        and board.get(url).dropped is None
        and (announced is None or info.announced_sha256 != announced)
    ]
    if not mirrors:
        return
    first = sources.get(primary)
    if first is None or not first.accepts_ranges or first.size is None:
        for url in mirrors:
            _drop(board, url, f"the primary URL {redact(primary)} does not serve byte ranges, "
                  "so its bytes cannot be compared with the mirror's; pass sha256= (--sha256) "
                  "to use the mirror's ranges, checked against it")  # fmt: skip
        return
    windows = pick_windows(first.size)
    try:
        expected = await _hashes(transport, first, windows, policy)
    except FetchError as exc:
        for url in mirrors:
            _drop(board, url, f"the primary URL could not be sampled to compare with it ({exc})")
        return
    found = await asyncio.gather(
        *(_hashes(transport, sources[url], windows, policy) for url in mirrors),
        return_exceptions=True,
    )
    for url, hashes in zip(mirrors, found, strict=True):
        if isinstance(hashes, FetchError):
            _drop(board, url, f"it could not be sampled to compare with the primary ({hashes})")
        elif isinstance(hashes, BaseException):
            raise hashes
        elif hashes != expected:
            where = next(w for w, a, b in zip(windows, hashes, expected, strict=True) if a != b)
            _drop(board, url, f"its {where} differ from the primary URL {redact(primary)}'s")


def _drop(board: MirrorBoard, url: str, why: str) -> None:
    reason = f"{redact(url)}: not shown to serve the same file as the primary URL: {why}"
    log.warning("not using mirror %s", reason)
    board.drop(url, reason)


async def _hashes(
    transport: Transport, info: RemoteInfo, windows: list[ByteRange], policy: RetryPolicy
) -> list[str]:
    """The SHA-256 of each window of ``info``'s file, the windows fetched at once."""
    return list(await asyncio.gather(*(_window_hash(transport, info, w, policy) for w in windows)))


async def _window_hash(
    transport: Transport, info: RemoteInfo, window: ByteRange, policy: RetryPolicy
) -> str:
    """One window's SHA-256; a cut answer is continued from where it got to."""
    got = bytearray()

    def progress() -> int:
        return len(got)

    async for attempt in retrying(policy, progress=progress):
        with attempt:
            rest = ByteRange(window.start + len(got), window.end)
            async with transport.open(
                info.final_url, rest, window=Span(rest.start, rest.end), asked=info.url,
                size=info.size,
            ) as body:  # fmt: skip
                while len(got) < window.length and (chunk := await body.read()):
                    got += chunk[: window.length - len(got)]
            if len(got) < window.length:
                raise TruncatedBody(
                    f"{body.url}: body ended at byte {window.start + len(got)}, expected up to "
                    f"{window.end}",
                    url=body.url,
                )
    return hashlib.sha256(got).hexdigest()
