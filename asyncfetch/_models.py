"""The nouns: byte ranges, what a server told us, results, and progress events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ._userinfo import redact


@dataclass(frozen=True, order=True)
class ByteRange:
    """Bytes ``start`` up to, not including, ``end``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad byte range {self.start}-{self.end}")

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.end - self.start

    def header(self) -> str:
        """The HTTP ``Range`` header value asking for exactly this range."""
        return f"bytes={self.start}-{self.end - 1}"

    def __str__(self) -> str:
        return f"bytes {self.start}-{self.end - 1}"


@dataclass(frozen=True)
class RemoteInfo:
    """What probing a URL found out.

    Attributes:
        url: the URL asked for.
        final_url: where redirects led; ranged requests go there.
        size: the file's size in bytes, or None when the server does not say.
        accepts_ranges: whether the server answers Range requests with 206.
        etag: the ETag validator, if any.
        last_modified: the Last-Modified validator, if any.
        announced_sha256: the whole file's SHA-256 (hex) the answers announced, if any (see
            :mod:`asyncfetch._transport.digests`).
    """

    url: str
    final_url: str
    size: int | None
    accepts_ranges: bool
    etag: str | None = None
    last_modified: str | None = None
    announced_sha256: str | None = None

    @property
    def validator(self) -> str | None:
        """The value to send in ``If-Range``: a strong ETag, else Last-Modified."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


@dataclass(frozen=True)
class FetchResult:
    """A finished, verified download.

    Attributes:
        path: where the file now is.
        size: its size in bytes.
        sha256: its SHA-256 as hex, or None when hashing was turned off.
        elapsed: seconds from start to the file being in place.
        bytes_by_mirror: bytes received from each source URL in this run.
        resumed_bytes: bytes of an interrupted download's part file that were kept, not
            fetched again (0 for a cache hit: nothing was resumed).
        retries: requests that failed and were tried again.
        cached: the file was already there and was used as it is (nothing downloaded).
        ranges: how ranged requests were adapted to what they cost (``"fewer, larger:
            per-request cost 0.30 s ..."``), or None when they were not.
        unused_mirrors: each source dropped, and why (another size, not shown to serve the
            same file, failed for good).
    """

    path: Path
    size: int
    sha256: str | None
    elapsed: float
    bytes_by_mirror: dict[str, int] = field(default_factory=dict)
    resumed_bytes: int = 0
    retries: int = 0
    cached: bool = False
    ranges: str | None = None
    unused_mirrors: dict[str, str] = field(default_factory=dict)

    @property
    def speed(self) -> float:
        """Bytes per second received in this run."""
        if self.cached:
            return 0.0
        received = self.size - self.resumed_bytes
        return received / self.elapsed if self.elapsed > 0 else 0.0

    def as_json(self, url: str | None = None) -> dict[str, object]:
        """This result as a JSON-ready dict (what ``--json`` prints), with the ``url`` asked."""
        return {
            "url": redact(url) if url is not None else None,
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "elapsed": round(self.elapsed, 3),
            "speed": round(self.speed),
            "bytes_by_mirror": self.bytes_by_mirror,
            "resumed_bytes": self.resumed_bytes,
            "retries": self.retries,
            "cached": self.cached,
            "ranges": self.ranges,
            "unused_mirrors": self.unused_mirrors,
        }


EventKind = Literal["started", "bytes", "retry", "source_switched", "verified", "done", "failed"]


@dataclass(frozen=True)
class ProgressEvent:
    """Something that happened to one download, for progress bars and metrics.

    Attributes:
        kind: what happened.
        url: the download's URL (its primary source), a password in it masked.
        total: the file's size, when known.
        done: bytes on disk so far (resumed ones included).
        delta: for ``bytes``, how many arrived since the last event.
        message: for ``retry``, ``source_switched`` and ``failed``, what and why.
        attempt: for ``retry``, the try that failed (counted since the last that made
            progress; 0 for a download that starts over because the file changed).
        of: for ``retry``, the tries allowed without progress.
        wait: for ``retry``, seconds until the next try.
        error: for ``retry``, what failed.
    """

    kind: EventKind
    url: str
    total: int | None = None
    done: int = 0
    delta: int = 0
    message: str = ""
    attempt: int = 0
    of: int = 0
    wait: float = 0.0
    error: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", redact(self.url))
        object.__setattr__(self, "message", redact(self.message))
        object.__setattr__(self, "error", redact(self.error))


ProgressCallback = Callable[[ProgressEvent], None]
