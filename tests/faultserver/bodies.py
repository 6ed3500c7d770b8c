"""What a file answer holds: the range asked for, and the body's pieces (flipped, gzipped)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class File:
    data: bytes
    etag: str
    last_modified: str


@dataclass
class Plan:
    """What a file response will be: status, headers and which bytes it covers."""

    status: int
    headers: dict[str, str]
    start: int
    end: int  # exclusive
    length: int | None  # Content-Length, None = chunked
    gzip: bool = False


class Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Resolve one `bytes=` range to (start, end_inclusive); None means serve the whole file."""
    match = RANGE_RE.match(header) if header else None
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        if int(last) == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - int(last)), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, min(int(last), size - 1) if last else size - 1


def shift(start: int, end: int, size: int) -> tuple[int, int]:
    """Return a different range of the same length where possible (for wrong_range)."""
    if end + 1 < size:
        return start + 1, end + 1
    if start > 0:
        return start - 1, end - 1
    return (start, end - 1) if end > start else (start, end)


def accepts_gzip(header: str) -> bool:
    quality: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.partition(";")
        q = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            with contextlib.suppress(ValueError):
                q = float(value)
        quality[coding.strip().lower()] = q
    return quality.get("gzip", quality.get("x-gzip", quality.get("*", 0.0))) > 0


DIGEST_KINDS = ("repr", "legacy", "linked", "amz", "amz-composite")


def digest_headers(kinds: tuple[str, ...], data: bytes, value: str | None) -> dict[str, str]:
    """The headers announcing a SHA-256 (of ``data``, or the hex ``value``) in each of
    ``kinds``: ``repr`` Repr-Digest (RFC 9530), ``legacy`` Digest (RFC 3230), ``linked``
    X-Linked-Etag (Hugging Face), ``amz`` x-amz-checksum-sha256 and ``amz-composite`` the
    same with a multipart ``-N`` suffix (a checksum of checksums)."""
    unknown = set(kinds) - set(DIGEST_KINDS)
    if unknown:
        raise ValueError(f"unknown digest kind(s) {sorted(unknown)}; known: {DIGEST_KINDS}")
    raw = bytes.fromhex(value) if value is not None else hashlib.sha256(data).digest()
    b64 = base64.b64encode(raw).decode("ascii")
    every = {
        "repr": (
            "Repr-Digest",
            f"sha-512=:{base64.b64encode(bytes(64)).decode()}:, sha-256=:{b64}:",
        ),
        "legacy": ("Digest", f"MD5=AAAAAAAAAAAAAAAAAAAAAA==, SHA-256={b64}"),
        "linked": ("X-Linked-Etag", f'"{raw.hex()}"'),
        "amz": ("x-amz-checksum-sha256", b64),
        "amz-composite": ("x-amz-checksum-sha256", f"{b64}-3"),
    }
    return dict(every[kind] for kind in kinds)


def body_pieces(
    data: bytes, plan: Plan, flips: tuple[int, ...], chunk: int
) -> Iterator[bytes | bytearray | memoryview]:
    """Yield the response body: the planned slice, bytes flipped, gzip-compressed if planned."""
    view = memoryview(data)
    compressor = zlib.compressobj(wbits=31) if plan.gzip else None
    for pos in range(plan.start, plan.end, chunk):
        piece: bytes | bytearray | memoryview = view[pos : min(pos + chunk, plan.end)]
        hits = [offset for offset in flips if pos <= offset < pos + len(piece)]
        if hits:
            piece = bytearray(piece)
            for offset in hits:
                piece[offset - pos] ^= 0xFF
        if compressor is not None:
            piece = compressor.compress(piece)
        if piece:
            yield piece
    if compressor is not None:
        yield compressor.flush()


def with_last(items: Iterator[T]) -> Iterator[tuple[T, bool]]:
    """Yield (item, is_last) pairs."""
    previous = next(items, None)
    for item in items:
        assert previous is not None
        yield previous, False
        previous = item
    if previous is not None:
        yield previous, True
