"""The fast receive path: ranged GETs over http and https on an ``asyncio.BufferedProtocol``.

The event loop receives straight into two preallocated buffers per connection (no bytes
objects, no joins). A full buffer is lent to the engine, which writes it at its file offset in
the I/O pool while the other buffer fills; reading pauses only while both are taken. It is
used for ``http://`` URLs, directly or through a plain-http proxy (the request in absolute
form, the proxy's userinfo as ``Proxy-Authorization``), and for ``https://`` ones without a
proxy when given the Transport's ``ssl.SSLContext`` (the event loop's TLS under the same
protocol); anything it does not handle (https through a proxy, tunnels, chunked or encoded
answers, redirects) goes to aiohttp, and :meth:`RawClient.open`
says so by returning None.

Keep-alive connections are pooled per (scheme, host, port). One watchdog per client aborts
connections that stay silent longer than the read timeout, take longer than the head deadline
to answer, or receive slower than the low-speed limit (:mod:`.lowspeed`). With a
:class:`NetPolicy` a new connection goes only to an address the policy allows, resolved once
and connected to as is (over TLS still checked against, and naming, the URL's host).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .._config import ProxyEnv, Timeouts
from .._errors import ConnectionFailed, FetchTimeout, ProtocolError
from .._models import ByteRange
from .._userinfo import basic_credentials
from .answers import check_answer, is_encoded, parse_content_range, status_error
from .netpolicy import NetPolicy
from .proxies import proxy_for
from .rawconn import (
    BUFFER_SIZE,
    Connection,
    Head,
    Span,
    Stale,
    Window,
    parse_head,
)
from .tls import certificate_error

__all__ = [
    "Head",
    "RawBody",
    "RawClient",
    "Span",
    "Window",
    "parse_head",
    "plain_target",
    "via_proxy",
]

WATCHDOG_TICK = 0.25
IDLE_PER_HOST = 32


@dataclass(frozen=True)
class Target:
    """Where a URL's requests go: its host, or for plain http a proxy (``path`` is then the
    whole URL, and ``proxy_authorization`` the proxy's credentials, if any)."""

    host: str
    port: int
    netloc: str
    path: str
    proxy_authorization: str | None = field(default=None, repr=False)
    tls: bool = False

    @property
    def pool_key(self) -> tuple[str, int]:
        """Which pooled connections may carry its requests: never a plain one for https."""
        return (f"https://{self.host}" if self.tls else self.host, self.port)

    def request(self, headers: Mapping[str, str], method: str = "GET") -> bytes | None:
        """The request bytes, or None when a header cannot be sent as is."""
        lines = [f"{method} {self.path} HTTP/1.1", f"Host: {self.netloc}"]
        if self.proxy_authorization is not None:
            lines.append(f"Proxy-Authorization: {self.proxy_authorization}")
        for name, value in headers.items():
            if name.lower() == "host" or any(c in name + value for c in "\r\n\0"):
                return None
            lines.append(f"{name}: {value}")
        try:
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            return None


def plain_target(url: str) -> Target | None:
    """The Target of an ``http://`` or ``https://`` URL this client can send as is, else None.

    A userinfo is left out of the Host header; the caller sends it as an Authorization header.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not path.isascii() or any(c.isspace() or not c.isprintable() for c in path):
        return None  # aiohttp quotes such paths; leave them to it
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        return None
    return Target(parts.hostname, port, parts.netloc.rpartition("@")[2], path, tls=tls)


def via_proxy(target: Target, proxy: str) -> Target | None:
    """``target`` sent through the plain-http ``proxy`` (absolute-form request), or None for
    a proxy this client does not speak (https)."""
    parts = urlsplit(proxy)
    if parts.scheme != "http" or not parts.hostname:
        return None
    try:
        port = parts.port or 80
    except ValueError:
        return None
    authorization = None
    if parts.username is not None:
        authorization = basic_credentials(unquote(parts.username), unquote(parts.password or ""))
    whole = f"http://{target.netloc}{target.path}"
    return Target(parts.hostname, port, target.netloc, whole, proxy_authorization=authorization)


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
        self.encoding = ""  # an encoded answer is left to aiohttp

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
    """GETs on pooled BufferedProtocol connections, with a read-idle watchdog.

    ``policy``: where new connections may go (None: anywhere). ``ssl_context``: for https URLs
    (without one they are left to aiohttp); ``trusted``: what it trusts, for the message of a
    certificate error (see :mod:`.tls`).
    """

    def __init__(
        self,
        timeouts: Timeouts,
        *,
        bufsize: int = BUFFER_SIZE,
        policy: NetPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        trusted: str | None = None,
        proxies: ProxyEnv | None = None,
    ) -> None:
        self._timeouts = timeouts
        self._bufsize = bufsize
        self._policy = policy
        self._ssl = ssl_context
        self._trusted = trusted
        self._proxies = proxies or ProxyEnv()
        self._idle: dict[tuple[str, int], list[Connection]] = {}
        self._busy: set[Connection] = set()
        self._tick: asyncio.TimerHandle | None = None
        self._general: set[str] = set()  # URLs whose answers need aiohttp (chunked, encoded)

    def target(self, url: str) -> Target | None:
        """Where to send ``url``'s requests, or None when this client is not for it (with a
        policy, proxied requests go to aiohttp, which judges their targets)."""
        target = plain_target(url)
        if target is None or url in self._general or target.tls and self._ssl is None:
            return None
        proxy = proxy_for(url, self._proxies)
        if proxy is None:
            return target
        if self._policy is not None or target.tls:
            return None  # under a policy, or https through a proxy: aiohttp (CONNECT)
        return via_proxy(target, proxy)

    async def open(
        self,
        url: str,
        headers: Mapping[str, str],
        byte_range: ByteRange | None,
        window: Window,
        size: int | None = None,
    ) -> RawBody | None:
        """GET ``url`` and check the answer (against the file's ``size``, when known); None
        when aiohttp must do this request.

        Raises:
            HTTPStatusError, RangeNotHonoured, ProtocolError: as aiohttp's path would.
            ConnectionFailed, FetchTimeout: no connection, or no answer.
            AddressBlocked: the policy refuses the address ``url`` leads to.
        """
        target = self.target(url)
        request = target.request(headers) if target is not None else None
        if target is None or request is None:
            return None
        connection, head = await self._exchange(target, request, url)
        try:
            length = _body_place(head, url, byte_range, size)
            if length is not None:
                start = byte_range.start if byte_range is not None else 0
                connection.begin_body(start, start + length, window)
                return RawBody(connection, url, byte_range, length, time.monotonic())
        except BaseException:
            self.finish(connection)
            raise
        self.finish(connection)
        self._general.add(url)
        return None

    async def head(self, url: str, headers: Mapping[str, str]) -> Head | None:
        """Send a HEAD request for ``url`` and return the answer's head, whatever its status;
        None when aiohttp must do this request.

        Raises:
            ConnectionFailed, FetchTimeout: no connection, or no answer.
        """
        target = self.target(url)
        request = target.request(headers, "HEAD") if target is not None else None
        if target is None or request is None:
            return None
        connection, head = await self._exchange(target, request, url)
        connection.keep_alive = False  # not pooled: a server may send a body after all, later
        self.finish(connection)
        return head

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
            except Stale:
                self.finish(connection)
            except BaseException:
                self.finish(connection)
                raise

    async def _acquire(self, target: Target, url: str) -> Connection:
        idle = self._idle.get(target.pool_key, [])
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        opening = asyncio.ensure_future(self._connect(target, url))
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
            raise FetchTimeout(f"{url}: no connection within {self._timeouts.connect:g} s", url=url)
        try:
            _, connection = opening.result()
        except ssl.SSLCertVerificationError as exc:  # before OSError: it is one
            raise certificate_error(url, exc, self._trusted) from None
        except OSError as exc:
            raise ConnectionFailed(f"{url}: connection failed ({exc})", url=url) from None
        connection.key = target.pool_key
        return connection

    async def _connect(self, target: Target, url: str) -> tuple[asyncio.Transport, Connection]:
        """A new connection for ``target``: to its host as the system resolves it, or with a
        policy, to the first address the policy allows that answers."""
        loop = asyncio.get_running_loop()

        def factory() -> Connection:
            return Connection(loop, self._bufsize)

        def to(host: str) -> Awaitable[tuple[asyncio.Transport, Connection]]:
            return loop.create_connection(
                factory, host, target.port, ssl=self._ssl if target.tls else None,
                server_hostname=target.host if target.tls else None,
            )  # fmt: skip

        if self._policy is None:
            return await to(target.host)
        *others, last = await self._policy.addresses(target.host, target.port, url=url)
        for address in others:
            with contextlib.suppress(OSError):
                return await to(address)
        return await to(last)

    def _arm(self) -> None:
        if self._tick is None and self._busy:
            timeouts = self._timeouts
            shortest = min(timeouts.read, timeouts.head_deadline, timeouts.low_speed_time)
            tick = min(WATCHDOG_TICK, shortest / 4)
            self._tick = asyncio.get_running_loop().call_later(tick, self._watch)

    def _watch(self) -> None:
        self._tick = None
        now = asyncio.get_running_loop().time()
        for connection in list(self._busy):
            connection.check_idle(now, self._timeouts.read)
            connection.check_pace(now, self._timeouts)
        self._arm()


def _body_place(
    head: Head, url: str, byte_range: ByteRange | None, size: int | None = None
) -> int | None:
    """The body's length if this client can take it; None to leave it to aiohttp.

    Raises:
        HTTPStatusError, FileChanged, RangeNotHonoured, ProtocolError: the answer does not
            fit (see :func:`.answers.check_answer`).
    """
    headers = head.headers
    if head.status >= 400:
        raise status_error(head.status, head.reason, headers, url)
    length = head.content_length
    if head.status >= 300 or "transfer-encoding" in headers or is_encoded(headers):
        return None
    if length is None:
        return None
    check_answer(head.status, head.reason, headers, url, byte_range, size)
    got = parse_content_range(headers.get("content-range"))
    if byte_range is not None and got is not None and got[1] - got[0] != length:
        raise ProtocolError(
            f"{url}: Content-Range {headers['content-range']!r} and Content-Length {length} "
            "disagree",
            url=url,
        )
    return length


def _close_opened(opening: asyncio.Task[tuple[asyncio.Transport, Connection]]) -> None:
    """A connection that opened after nobody wanted it any more is closed at once."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result()[0].abort()
