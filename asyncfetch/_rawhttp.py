"""The fast receive path: ranged GETs over plain http on an ``asyncio.BufferedProtocol``.

The event loop receives straight into two preallocated buffers per connection (no bytes
objects, no joins). A full buffer is lent to the engine, which writes it at its file offset in
the I/O pool while the other buffer fills; reading pauses only while both are taken. It is
used for ``http://`` URLs without a proxy; anything it does not handle (https, proxies,
chunked or encoded answers, redirects) goes to aiohttp, and :meth:`RawClient.open` says so by
returning None.

Keep-alive connections are pooled per (host, port). One watchdog per client aborts
connections that stay silent longer than the read timeout.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

from ._config import Timeouts
from ._errors import ConnectionFailed, FetchTimeout, ProtocolError, TransportError, TruncatedBody
from ._http import check_answer, is_encoded, parse_content_range, status_error
from ._models import ByteRange

BUFFER_SIZE = 1 << 20
HEAD_CHUNK = 64 << 10
HEAD_LIMIT = 64 << 10
WATCHDOG_TICK = 0.25
IDLE_PER_HOST = 32

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


def parse_head(data: bytes) -> Head:
    """Parse an HTTP/1.x answer head (without the blank line); raises ValueError if malformed."""
    status_line, *lines = data.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"bad status line {status_line!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError(f"bad header line {line!r}")
        key, value = name.lower(), value.strip()
        if key in headers and key == "content-length" and headers[key] != value:
            raise ValueError("conflicting Content-Length headers")
        headers[key] = f"{headers[key]}, {value}" if key in headers and key != "content-length" \
            else value
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    return Head(int(code), reason, headers, keep_alive)


@dataclass(frozen=True)
class Target:
    """Where a plain-http URL's requests go."""

    host: str
    port: int
    netloc: str
    path: str

    def request(self, headers: Mapping[str, str]) -> bytes | None:
        """The GET request bytes, or None when a header cannot be sent as is."""
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.netloc}"]
        for name, value in headers.items():
            if name.lower() == "host" or any(c in name + value for c in "\r\n\0"):
                return None
            lines.append(f"{name}: {value}")
        try:
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            return None


def plain_target(url: str) -> Target | None:
    """The Target of a plain ``http://`` URL this client can send as is, else None."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or "@" in parts.netloc:
        return None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not path.isascii() or any(c.isspace() or not c.isprintable() for c in path):
        return None  # aiohttp quotes such paths; leave them to it
    try:
        port = parts.port or 80
    except ValueError:
        return None
    return Target(parts.hostname, port, parts.netloc, path)


def proxied(host: str) -> bool:
    """Whether aiohttp with ``trust_env`` would send a request to ``host`` via a proxy."""
    return "http" in urllib.request.getproxies() and not urllib.request.proxy_bypass(host)


class _Stale(Exception):
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
        if self.state == HEAD and not self._head and self.exchanges > 1:
            self._error = _Stale()
        elif self.state == HEAD:
            self._error = ConnectionFailed(
                f"{self.url}: the server closed the connection before answering ({exc or 'EOF'})",
                url=self.url,
            )
        elif self.state == BODY and self._error is None:
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
        self.last_io = self._loop.time()
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
        """
        while True:
            filled = self._pos - self._fill_start
            final = self.state == DONE or self._pos >= self._limit()
            if filled > 0 and (final or filled >= len(self._bufs[0]) or self._error):
                view = self._lend(filled)
                if view:
                    return view
                continue
            if final:
                return None
            if self._error is not None:
                raise self._error
            await self._wait()

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
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > HEAD_LIMIT:
                self.fail(ProtocolError(f"{self.url}: answer head too large", url=self.url))
            return
        try:
            self._head_result = parse_head(bytes(self._head[:end]))
        except ValueError as exc:
            self.fail(ProtocolError(f"{self.url}: malformed HTTP answer: {exc}", url=self.url))
            return
        self._early = bytes(self._head[end + 4 :])
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

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

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


class RawBody:
    """An open body on the fast path; the engine takes it batch by batch."""

    def __init__(
        self,
        connection: Connection,
        url: str,
        byte_range: ByteRange | None,
        size: int,
        sent_at: float,
    ) -> None:
        self.connection = connection
        self.url = url
        self.byte_range = byte_range
        self.size: int | None = size
        self.sent_at = sent_at

    async def read(self) -> bytes:
        """The next received bytes as a copy; ``b""`` at the end (not for the hot path)."""
        view = await self.connection.next_batch()
        return bytes(view) if view is not None else b""

    async def next_batch(self) -> list[memoryview]:
        """The next bytes to write at the window's ``pos`` (valid until the next call);
        an empty list at the end of the body or at the window's ``stop``."""
        view = await self.connection.next_batch()
        return [view] if view is not None else []

    def abandon(self) -> None:
        """Stop reading before the end: the connection is closed, not reused."""
        self.connection.keep_alive = False

    def leftover(self) -> tuple[int, bytes]:
        """After a cancelled :meth:`next_batch`: what was received and not handed over."""
        return self.connection.leftover()


class RawClient:
    """Plain-http GETs on pooled BufferedProtocol connections, with a read-idle watchdog."""

    def __init__(self, timeouts: Timeouts, *, bufsize: int = BUFFER_SIZE) -> None:
        self._timeouts = timeouts
        self._bufsize = bufsize
        self._idle: dict[tuple[str, int], list[Connection]] = {}
        self._busy: set[Connection] = set()
        self._tick: asyncio.TimerHandle | None = None
        self._bypass: dict[str, bool] = {}
        self._general: set[str] = set()  # URLs whose answers need aiohttp (chunked, encoded)

    def target(self, url: str) -> Target | None:
        """Where to send ``url``'s requests, or None when this client is not for it."""
        target = plain_target(url)
        if target is None or url in self._general:
            return None
        if target.host not in self._bypass:
            self._bypass[target.host] = proxied(target.host)
        return None if self._bypass[target.host] else target

    async def open(
        self,
        url: str,
        headers: Mapping[str, str],
        byte_range: ByteRange | None,
        window: Window,
    ) -> RawBody | None:
        """GET ``url`` and check the answer; None when aiohttp must do this request.

        Raises:
            HTTPStatusError, RangeNotHonoured, ProtocolError: as aiohttp's path would.
            ConnectionFailed, FetchTimeout: no connection, or no answer.
        """
        target = self.target(url)
        request = target.request(headers) if target is not None else None
        if target is None or request is None:
            return None
        connection, head = await self._exchange(target, request, url)
        try:
            size = _body_place(head, url, byte_range)
            if size is not None:
                start = byte_range.start if byte_range is not None else 0
                connection.begin_body(start, start + size, window)
                return RawBody(connection, url, byte_range, size, time.monotonic())
        except BaseException:
            self.finish(connection)
            raise
        self.finish(connection)
        self._general.add(url)
        return None

    def finish(self, connection: Connection) -> None:
        """The exchange is over: pool the connection if it can carry another, else drop it."""
        self._busy.discard(connection)
        if connection.reusable() and connection.transport is not None:
            connection.release_state()
            idle = self._idle.setdefault(connection.key, [])
            if len(idle) < IDLE_PER_HOST:
                idle.append(connection)
                return
        if connection.transport is not None:
            connection.transport.abort()

    async def aclose(self) -> None:
        """Drop every connection, stop the watchdog, and let the sockets close."""
        self.close()
        await asyncio.sleep(0)

    def close(self) -> None:
        """Drop every connection and stop the watchdog."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for connection in [*self._busy, *(c for idle in self._idle.values() for c in idle)]:
            if connection.transport is not None:
                connection.transport.abort()
        self._busy.clear()
        self._idle.clear()

    async def _exchange(self, target: Target, request: bytes, url: str) -> tuple[Connection, Head]:
        """Send ``request``; a pooled connection the server closed meanwhile gets one retry
        on a fresh connection."""
        while True:
            connection = await self._acquire(target, url)
            connection.send(request, url)
            self._busy.add(connection)
            self._arm()
            try:
                return connection, await connection.head()
            except _Stale:
                self.finish(connection)
            except BaseException:
                self.finish(connection)
                raise

    async def _acquire(self, target: Target, url: str) -> Connection:
        idle = self._idle.get((target.host, target.port), [])
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        loop = asyncio.get_running_loop()
        opening = asyncio.ensure_future(
            loop.create_connection(
                lambda: Connection(loop, self._bufsize), target.host, target.port
            )
        )
        # not asyncio.wait_for: before Python 3.12 it can swallow a cancellation that comes
        # as the connection completes, and the cancelled worker would carry on
        try:
            done, _ = await asyncio.wait({opening}, timeout=self._timeouts.connect)
        except BaseException:
            opening.cancel()
            opening.add_done_callback(_close_opened)
            raise
        if not done:
            opening.cancel()
            opening.add_done_callback(_close_opened)
            raise FetchTimeout(
                f"{url}: no connection within {self._timeouts.connect:g} s", url=url
            )
        try:
            _, connection = opening.result()
        except OSError as exc:
            raise ConnectionFailed(f"{url}: connection failed ({exc})", url=url) from None
        connection.key = (target.host, target.port)
        return connection

    def _arm(self) -> None:
        if self._tick is None and self._busy:
            tick = min(WATCHDOG_TICK, self._timeouts.read / 4)
            self._tick = asyncio.get_running_loop().call_later(tick, self._watch)

    def _watch(self) -> None:
        self._tick = None
        now = asyncio.get_running_loop().time()
        for connection in list(self._busy):
            connection.check_idle(now, self._timeouts.read)
        self._arm()



def _body_place(head: Head, url: str, byte_range: ByteRange | None) -> int | None:
    """The body's length if this client can take it; None to leave it to aiohttp.

    Raises:
        HTTPStatusError, RangeNotHonoured, ProtocolError: the answer does not fit.
    """
    headers = head.headers
    if head.status >= 400:
        raise status_error(head.status, head.reason, headers, url)
    length = headers.get("content-length", "")
    if head.status >= 300 or "transfer-encoding" in headers or is_encoded(headers):
        return None
    if not length.isdigit():
        return None
    check_answer(head.status, head.reason, headers, url, byte_range)
    got = parse_content_range(headers.get("content-range"))
    if byte_range is not None and got is not None and got[1] - got[0] != int(length):
        raise ProtocolError(
            f"{url}: Content-Range {headers['content-range']!r} and Content-Length {length} "
            "disagree",
            url=url,
        )
    return int(length)


def _close_opened(opening: asyncio.Task[tuple[asyncio.Transport, Connection]]) -> None:
    """A connection that opened after nobody wanted it any more is closed at once."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result()[0].abort()
