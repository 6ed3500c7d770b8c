"""Response bodies: :class:`Body`, what the engine reads on every receive path (aiohttp's,
the fast path's :class:`~.rawhttp.RawBody`, a local file's), and :class:`AioBody`, a body
received by aiohttp, handed over in batches of about WRITE_BATCH bytes under the low-speed
limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .._errors import TransportError
from .._models import ByteRange
from .aioerrors import translate_errors
from .answers import FileChanged
from .lowspeed import LowSpeed
from .rawconn import HAND_OVER_AFTER
from .rawhttp import Span, Window

WRITE_BATCH = 1 << 20

if TYPE_CHECKING:  # aiohttp is imported when a request is made, not with this module
    import aiohttp


class Body(Protocol):
    """An open response body, on either receive path; the engine takes it batch by batch."""

    url: str
    byte_range: ByteRange | None
    size: int | None
    sent_at: float  # when the request went out, after any wait for a budget slot
    encoding: str  # an unasked Content-Encoding the bytes are in, as sent (whole file only)

    async def read(self) -> bytes:
        """The next chunk of bytes as it arrived; ``b""`` at the end (not for the hot path)."""

    async def next_batch(self) -> Sequence[bytes | memoryview]:
        """The next bytes to write at the window's ``pos`` (valid until the next call); empty
        at the clean end of the body or at the window's ``stop``. Bytes received before an
        error are returned first; the error comes with the next call."""

    def abandon(self) -> None:
        """Stop reading before the end: the connection is closed, not reused."""

    def leftover(self) -> tuple[int, bytes]:
        """After a cancelled :meth:`next_batch`: (file offset, bytes) received and not yet
        handed over, so they can be kept for a resume."""


@dataclass
class AioBody:
    """A body received by aiohttp: read it chunk by chunk with :meth:`read`, or in batches."""

    response: aiohttp.ClientResponse
    url: str
    byte_range: ByteRange | None
    size: int | None
    window: Window = field(default_factory=Span)
    sent_at: float = 0.0
    encoding: str = ""
    speed: LowSpeed | None = None  # the low-speed limit, if on
    file_size: int | None = None  # the file's size as probed, if known (``size``: the answer's)
    _pending: TransportError | None = None
    _held: tuple[int, bytes] = (0, b"")
    _received: int = 0
    _returned_at: float = field(default_factory=time.monotonic)

    async def read(self) -> bytes:
        """The next chunk of bytes as it arrived; ``b""`` at the end.

        Raises:
            FetchTimeout: the body comes slower than the low-speed limit.
        """
        if self.speed is not None:
            now = time.monotonic()
            self.speed.skip(now - self._returned_at)  # the caller was busy: not our wait
            if not self.speed.check(now, self._received):
                raise self.speed.error(self.url, self.window.reached)
        async with translate_errors(self.url):
            chunk = await self.response.content.readany()
        self._received += len(chunk)
        self._returned_at = time.monotonic()
        return chunk

    async def next_batch(self) -> list[bytes]:
        """About WRITE_BATCH bytes, or what came within HAND_OVER_AFTER, cut at the window's
        ``stop`` (see :class:`Body`)."""
        if self._pending is not None:
            error, self._pending = self._pending, None
            raise error
        batch: list[bytes] = []
        start, batched = self.window.pos, 0
        due = time.monotonic() + HAND_OVER_AFTER  # a slow link's bytes reach the file soon
        try:
            while start + batched < self.window.stop and batched < WRITE_BATCH:
                if batch and time.monotonic() >= due:
                    break
                chunk = await self.read()
                if not chunk:
                    break
                room = self.window.stop - start - batched
                self._check_within_size(start + batched + len(chunk))
                batch.append(chunk if len(chunk) <= room else chunk[:room])
                batched += len(batch[-1])
                self.window.reached = start + batched
        except TransportError as exc:
            if not batch:
                raise
            self._pending = exc
        except asyncio.CancelledError:
            self._held = (start, b"".join(batch))
            raise
        if batch and self._ends_unmeasured_file(start + batched):
            extra = b""
            with suppress(TransportError):  # as before: the bytes asked for came
                extra = await self.read()
            self._check_within_size(start + batched + len(extra))
        return batch

    def _ends_unmeasured_file(self, end: int) -> bool:
        """Whether ``end`` is the end of the file in a whole-file body of no stated length,
        which must end there too (see :meth:`_check_within_size`)."""
        whole = self.byte_range is None and self.size is None
        return whole and end == self.file_size == self.window.stop

    def _check_within_size(self, end: int) -> None:
        """Raise FileChanged when a whole-file body runs past the file's known size (a
        chunked answer has no length to check first): cutting it there would keep a part of
        another file as the whole one."""
        if self.byte_range is None and self.file_size is not None and end > self.file_size:
            raise FileChanged(
                f"{self.url}: the server sent more than the {self.file_size} bytes it announced "
                "(the file changed, or the server is broken); run again to download it anew",
                url=self.url,
            )

    def abandon(self) -> None:
        """Stop reading before the end: the connection is closed, not reused."""
        self.response.close()

    def leftover(self) -> tuple[int, bytes]:
        """What a cancelled :meth:`next_batch` had received (see :class:`Body`)."""
        held, self._held = self._held, (0, b"")
        return held
