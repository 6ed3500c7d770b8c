"""One plain-http connection of the fast receive path: an ``asyncio.BufferedProtocol`` that
receives a response head, then the body straight into two preallocated buffers (no bytes
objects, no joins); a full buffer is lent out to be written while the other fills, and reading
pauses only while both are taken. :mod:`._rawhttp` pools these connections.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Protocol, cast

from .._config import Timeouts
from .._errors import ConnectionFailed, FetchTimeout, ProtocolError, TransportError, TruncatedBody
from .lowspeed import LowSpeed

BUFFER_SIZE = 1 << 20
HEAD_CHUNK = 64 << 10
HEAD_LIMIT = 64 << 10
#: A batch waits at most this long to fill: on a slow link, received bytes reach the part
#: file (and, a second later, its journal) instead of sitting in a buffer for many seconds.
HAND_OVER_AFTER = 0.5

IDLE, HEAD, HEAD_DONE, BODY, DONE = "idle", "head", "head-done", "body", "done"
SCRATCH, BUFFER, SPILL = 0, 1, 2  # where get_buffer sent the next read


class Window(Protocol):
    """Where a body's bytes go: ``pos`` is written up to, ``stop`` (which may be lowered while
    the body is read) is where to stop, ``reached`` how far bytes were received."""

    pos: int
    stop: int
    reached: int


@dataclass
class Span:
    """A Window over a whole body, for callers that do not track one."""

    pos: int = 0
    stop: int = 1 << 62
    reached: int = 0


@dataclass(frozen=True)
class Head:
    """A parsed status line and header block (header names lower-case)."""

    status: int
    reason: str
    headers: dict[str, str]
    keep_alive: bool

    @property
    def content_length(self) -> int | None:
        """The Content-Length (checked by :func:`parse_head`), or None when absent."""
        length = self.headers.get("content-length")
        return int(length) if length is not None else None


# RFC 9112's grammar, in bytes (a str pattern's \s and \d would take non-ASCII characters),
# as h11 reads it: lines end in CRLF or a bare LF, obsolete line folding joins a header line
# to the one before, and field values are anything but NUL and whitespace inside OWS.
_HEAD_END = re.compile(rb"\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00\n\r\x0b\x0c]*))?")
_FIELD = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)
_FOLD = re.compile(rb"[ \t]+")
_DIGITS = re.compile(rb"[0-9]{1,20}")


def parse_head(data: bytes) -> Head:
    """Parse an HTTP/1.x answer head (without the blank line); raises ValueError if malformed.

    Lines may end in CRLF or a bare LF. A Content-Length must be ASCII digits; repeated ones
    (or a list) must agree, and are kept once.
    """
    lines = [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise ValueError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in _unfold(lines[1:]):
        field = _FIELD.fullmatch(line)
        if field is None:
            raise ValueError(f"bad header line {line!r}")
        key, value = field[1].decode("ascii").lower(), field[2].decode("latin-1")
        if key == "content-length":
            value = _one_length(value, headers.get(key))
        elif key in headers:
            value = f"{headers[key]}, {value}"
        headers[key] = value
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in tokens if status[1] == b"0" else "close" not in tokens
    code = int(status[2])
    if code < 100:
        raise ValueError(f"bad status line {lines[0]!r}")
    return Head(code, (status[3] or b"").decode("latin-1"), headers, keep_alive)


def _unfold(lines: list[bytes]) -> list[bytes]:
    """Header lines with obsolete line folding undone (a line starting with whitespace
    continues the one before, joined by one space)."""
    joined: list[bytes] = []
    for line in lines:
        fold = _FOLD.match(line)
        if fold is None:
            joined.append(line)
        elif not joined:
            raise ValueError("bad header line: a continuation line comes first")
        else:
            joined[-1] += b" " + line[fold.end() :]
    return joined


def _one_length(value: str, before: str | None) -> str:
    """The one Content-Length that ``value`` (and an earlier one, ``before``) give."""
    lengths = {part.strip(" \t") for part in value.split(",")}
    length = lengths.pop()
    if lengths or (before is not None and before != length):
        raise ValueError("conflicting Content-Length headers")
    if not _DIGITS.fullmatch(length.encode("latin-1")):
        raise ValueError(f"bad Content-Length {value!r}")
    return length


def find_head(data: bytes | bytearray) -> tuple[Head, int] | None:
    """The final answer head at the start of ``data`` and where its body begins, skipping
    interim (1xx) answers; None while the head is incomplete.

    Raises:
        ValueError: the head is malformed, or an interim answer is 101 (no upgrade was asked).
    """
    pos = 0
    while True:
        if data.startswith(b"\n", pos) or data.startswith(b"\r\n", pos):
            raise ValueError("bad status line: the answer begins with an empty line")
        end = _HEAD_END.search(data, pos)
        if end is None:
            return None
        head = parse_head(bytes(data[pos : end.start()]))
        if not 100 <= head.status < 200:
            return head, end.end()
        if head.status == 101:
            raise ValueError("101 Switching Protocols, although no upgrade was asked for")
        pos = end.end()


class Stale(Exception):
    """A reused keep-alive connection was closed by the server before answering."""


class Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; it carries one exchange at a time (no pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, bufsize: int = BUFFER_SIZE) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._bufs = (memoryview(bytearray(bufsize)), memoryview(bytearray(bufsize)))
        self._scratch = memoryview(bytearray(HEAD_CHUNK))
        self._head = bytearray()
        self._head_result: Head | None = None
        self._early = b""
        self.state = IDLE
        self.key = ("", 0)
        self.exchanges = 0
        self.url = ""
        self.closed = False
        self.keep_alive = True
        self.paused = False
        self.last_io = 0.0
        self._sent_at = 0.0
        self._speed: LowSpeed | None = None
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._window: Window = Span()
        self._pos = self._end = self._fill_start = 0
        self._cur = 0
        self._into = SCRATCH
        self._spill = bytearray()
        self._lost: Exception | None = None

    # protocol callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.closed = True
        self._lost = exc
        if self._error is not None:  # we hung up (a timeout, a bad head): that is the cause
            pass
        elif self.state == HEAD and not self._head and self.exchanges > 1:
            self._error = Stale()
        elif self.state == HEAD:
            self._error = ConnectionFailed(
                f"{self.url}: the server closed the connection before answering ({exc or 'EOF'})",
                url=self.url,
            )
        elif self.state == BODY:
            self._error = self._cut_error(exc)
        self._wake()

    def get_buffer(self, sizehint: int) -> memoryview:  # noqa: D102
        self._into = SCRATCH
        if self.state == BODY:
            filled = self._pos - self._fill_start
            buf = self._bufs[self._cur]
            room = min(len(buf) - filled, self._limit() - self._pos)
            if room > 0 and not self._spill:
                self._into = BUFFER
                return buf[filled : filled + room]
            if self._pos + len(self._spill) < self._limit():
                self._into = SPILL  # both buffers taken and the loop reads anyway: keep it
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:  # noqa: D102
        self.last_io = self._loop.time()
        if self._into == BUFFER:
            self._advance(nbytes)
        elif self._into == SPILL:
            self._spill += self._scratch[:nbytes]
            self._pause()
        elif self.state == HEAD:
            self._head_bytes(nbytes)
        else:
            self.keep_alive = False  # bytes past the body or after a thief's stop: dropped
            if self.state == BODY:
                self._hand_over_or_pause()
            elif self.transport is not None:
                self.transport.abort()

    def _advance(self, nbytes: int) -> None:
        self._pos += nbytes
        self._window.reached = self._pos
        if self._pos >= self._end:
            self.state = DONE
            self._wake()
        elif self._pos - self._fill_start >= len(self._bufs[0]) or self._pos >= self._limit():
            self._hand_over_or_pause()

    # the exchange ------------------------------------------------------------------------

    def send(self, request: bytes, url: str) -> None:
        """Send a request; the answer's head comes from :meth:`head`."""
        assert self.transport is not None
        self.url = url
        self.exchanges += 1
        self._head.clear()
        self._head_result = None
        self._error = None
        self.state = HEAD
        self.last_io = self._sent_at = self._loop.time()
        self._speed = None
        self._resume()
        self.transport.write(request)

    async def head(self) -> Head:
        """Wait for the answer's head."""
        while self._head_result is None:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._head_result

    def begin_body(self, start: int, end: int, window: Window) -> None:
        """Receive body bytes ``[start, end)`` of the file into the buffers for ``window``."""
        self._window = window
        self._pos = self._fill_start = start
        self._end = end
        self._cur = 0
        self.state = BODY
        if len(self._early) > end - start:
            self.keep_alive = False
        self._spill[:] = self._early
        self._early = b""
        self._unspill()
        if self._pos >= end:
            self.state = DONE
        elif self.closed:
            self._error = self._cut_error(self._lost)
        self._resume()

    async def next_batch(self) -> memoryview | None:
        """The next received bytes, to be written at the window's ``pos``; None at the end.

        The view stays valid until the next call; bytes past ``window.stop`` are dropped.
        A buffer that does not fill within HAND_OVER_AFTER is handed over as it is.
        """
        due = self._loop.time() + HAND_OVER_AFTER
        while True:
            filled = self._pos - self._fill_start
            final = self.state == DONE or self._pos >= self._limit()
            late = self._loop.time() >= due
            if filled > 0 and (final or filled >= len(self._bufs[0]) or self._error or late):
                view = self._lend(filled)
                if view:
                    return view
                continue
            if final:
                return None
            if self._error is not None:
                raise self._error
            if late:
                due = self._loop.time() + HAND_OVER_AFTER  # nothing came: look again later
            await self._wait(due - self._loop.time())

    def leftover(self) -> tuple[int, bytes]:
        """Stop receiving; (offset, copy) of what was received and not yet lent out."""
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()
        keep = max(min(self._pos, self._window.stop) - self._fill_start, 0)
        data = bytes(self._bufs[self._cur][:keep])
        start, self._fill_start = self._fill_start, self._pos
        return start, data

    def reusable(self) -> bool:
        """Whether the exchange ended cleanly and the connection may carry another."""
        return self.state == DONE and self.keep_alive and not self.closed and self._error is None

    def fail(self, error: BaseException) -> None:
        """End the exchange with ``error`` and drop the connection."""
        if self._error is None:
            self._error = error
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def check_idle(self, now: float, limit: float) -> None:
        """Fail the exchange if the server has been silent for longer than ``limit``."""
        if self.state in (HEAD, BODY) and not self.paused and now - self.last_io > limit:
            where = "before answering" if self.state == HEAD else f"at byte {self._pos}"
            self.fail(FetchTimeout(
                f"{self.url}: timed out: no data for {limit:g} s {where} (the server stalled)",
                url=self.url,
            ))  # fmt: skip

    def check_pace(self, now: float, timeouts: Timeouts) -> None:
        """Fail the exchange if its answer's head is overdue, or its body comes in slower than
        the low-speed limit (not counting time paused for the consumer)."""
        if self.state == HEAD and now - self._sent_at > timeouts.head_deadline:
            self.fail(FetchTimeout(
                f"{self.url}: timed out: no complete answer head within "
                f"{timeouts.head_deadline:g} s (the server stalls or trickles)",
                url=self.url,
            ))  # fmt: skip
        elif self.state == BODY:
            if self._speed is None or self.paused:
                self._speed = LowSpeed.of(timeouts, now, self._pos)  # measure from here
            elif not self._speed.check(now, self._pos):
                self.fail(self._speed.error(self.url, self._pos))

    def release_state(self) -> None:
        """Back to idle between exchanges."""
        self.state = IDLE
        self._window = Span()

    # internals ---------------------------------------------------------------------------

    def _limit(self) -> int:
        return min(self._end, self._window.stop)

    def _lend(self, filled: int) -> memoryview:
        keep = min(filled, self._window.stop - self._fill_start)
        view = self._bufs[self._cur][: max(keep, 0)]
        self._cur ^= 1
        self._fill_start = self._pos
        self._unspill()
        self._resume()
        return view

    def _unspill(self) -> None:
        """Move bytes kept aside while both buffers were taken into the current one."""
        if not self._spill:
            return
        buf = self._bufs[self._cur]
        filled = self._pos - self._fill_start
        take = min(len(self._spill), len(buf) - filled, max(self._limit() - self._pos, 0))
        buf[filled : filled + take] = self._spill[:take]
        del self._spill[:take]
        if self._pos + take >= self._limit():
            self._spill.clear()  # past the body or the window's stop: dropped
        if take:
            self._advance(take)

    def _head_bytes(self, nbytes: int) -> None:
        self._head += self._scratch[:nbytes]
        try:
            found = find_head(self._head)
        except ValueError as exc:
            self.fail(ProtocolError(f"{self.url}: malformed HTTP answer: {exc}", url=self.url))
            return
        if found is None:
            if len(self._head) > HEAD_LIMIT:
                self.fail(ProtocolError(f"{self.url}: answer head too large", url=self.url))
            return
        self._head_result, end = found
        self._early = bytes(self._head[end:])
        if not self._head_result.keep_alive:
            self.keep_alive = False  # "Connection: close": the server may linger, don't wait
        self.state = HEAD_DONE
        self._pause()  # until the head is checked and the body's place is known
        self._wake()

    def _hand_over_or_pause(self) -> None:
        if self._waiter is not None:
            self._wake()
        else:
            self._pause()

    def _cut_error(self, exc: Exception | None) -> TransportError:
        if exc is not None:
            return ConnectionFailed(
                f"{self.url}: connection lost at byte {self._pos} ({exc})", url=self.url
            )
        return TruncatedBody(
            f"{self.url}: body ended at byte {self._pos}, expected up to {self._end}",
            url=self.url,
        )

    async def _wait(self, timeout: float | None = None) -> None:
        """Until woken, or ``timeout`` seconds."""
        self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, self._wake) if timeout is not None else None
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.last_io = self._loop.time()
            if not self.closed:
                self.transport.resume_reading()
