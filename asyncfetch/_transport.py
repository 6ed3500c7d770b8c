"""HTTP: the aiohttp session, probing a URL, and streaming one byte range.

The only module that touches aiohttp. Its exceptions are translated here, in
:func:`translate_errors`, and never reach the engine or the user.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType

import aiohttp
import yarl

from ._budget import ConnectionBudget, host_key
from ._config import DEFAULT_MAX_REDIRECTS, Timeouts
from ._errors import (
    ConnectionFailed,
    FetchTimeout,
    HTTPStatusError,
    InvalidRequest,
    ProtocolError,
    TooManyRedirects,
    TransportError,
    TruncatedBody,
)
from ._models import ByteRange, RemoteInfo

USER_AGENT = "asyncfetch/0.1"
SCHEMES = frozenset({"http", "https"})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_PROBE_RANGE = ByteRange(0, 1)
READ_BUFSIZE = 1 << 18

Session = aiohttp.ClientSession
"""An application's own HTTP session, which asyncfetch can use instead of opening one."""
_HEAD_REFUSED = frozenset({400, 401, 403, 405, 406, 501})


class RangeNotHonoured(ProtocolError):
    """The server answered a Range request with the whole file (200)."""

    def __init__(self, message: str, *, url: str | None) -> None:
        super().__init__(message, url=url, retryable=False)


def check_url(url: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL, else raise InvalidRequest."""
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{url!r} is not a valid URL: {exc}", url=url) from None
    if not parsed.scheme or not parsed.host:
        raise InvalidRequest(f"{url!r} is not a full URL; give one like https://host/file", url=url)
    if parsed.scheme not in SCHEMES:
        raise InvalidRequest(
            f"{url!r}: unsupported scheme {parsed.scheme!r}; use http:// or https://", url=url
        )
    return url


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` → (a, b + 1, total or None); None when absent or malformed."""
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if not match:
        return None
    total = None if match[3] == "*" else int(match[3])
    return int(match[1]), int(match[2]) + 1, total


@asynccontextmanager
async def translate_errors(url: str) -> AsyncIterator[None]:
    """Turn aiohttp's and asyncio's exceptions into asyncfetch's, most specific first."""
    try:
        yield
    except aiohttp.TooManyRedirects as exc:
        raise TooManyRedirects(
            f"{url}: too many redirects ({len(exc.history)}); the server may loop", url=url
        ) from None
    except aiohttp.InvalidURL as exc:
        raise InvalidRequest(f"{url}: invalid URL ({exc})", url=url) from None
    except aiohttp.ClientPayloadError as exc:
        raise TruncatedBody(f"{url}: the body ended early ({exc})", url=url) from None
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise FetchTimeout(f"{url}: timed out ({exc or 'no data'})", url=url) from None
    except aiohttp.ClientConnectionError as exc:
        raise ConnectionFailed(f"{url}: connection failed ({exc})", url=url) from None
    except aiohttp.ClientError as exc:
        raise TransportError(f"{url}: {type(exc).__name__}: {exc}", url=url) from None


def _status_error(response: aiohttp.ClientResponse, url: str) -> HTTPStatusError:
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    hint = "the file may not exist or needs credentials" if response.status < 500 else "try later"
    return HTTPStatusError(
        f"{url}: HTTP {response.status} {response.reason or ''}".rstrip() + f" ({hint})",
        url=url,
        status=response.status,
        retry_after=retry_after,
    )


@dataclass
class Body:
    """An open response body: read it chunk by chunk with :meth:`read`.

    ``sent_at`` is when the request went out (``time.monotonic()``), after any wait for a slot
    of the connection budget: measure a source's speed from there.
    """

    response: aiohttp.ClientResponse
    url: str
    byte_range: ByteRange | None
    size: int | None
    sent_at: float = 0.0

    async def read(self) -> bytes:
        """The next chunk of bytes as it arrived; ``b""`` at the end."""
        async with translate_errors(self.url):
            return await self.response.content.readany()

    def abandon(self) -> None:
        """Stop reading before the end: the connection is closed, not reused."""
        self.response.close()


class Transport:
    """One aiohttp session for a download (or a batch), with our timeouts and headers.

    Pass ``session`` to use an application's own ``aiohttp.ClientSession``; it is not closed.
    With a ``budget``, every request holds one of its slots while it runs, and a 429 or a
    ``Retry-After`` pauses that host for every download sharing the budget.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts,
        connections: int,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        budget: ConnectionBudget | None = None,
    ) -> None:
        self._timeouts = timeouts
        self._connections = connections
        self._headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT, **(headers or {})}
        self._session = session
        self._owns_session = session is None
        self._max_redirects = max_redirects
        self._budget = budget

    async def __aenter__(self) -> Transport:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections + 2, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self._timeouts.connect,
                    sock_read=self._timeouts.read,
                ),
                trust_env=True,
                auto_decompress=False,
                read_bufsize=READ_BUFSIZE,
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (inside ``async with`` only)."""
        if self._session is None:
            raise RuntimeError("Transport used outside 'async with'")
        return self._session

    async def probe(self, url: str) -> RemoteInfo:
        """Learn size, Range support and validators: HEAD, then a 1-byte GET if HEAD falls short."""
        head = await self._head(url)
        if head is not None and head.size is not None and head.accepts_ranges:
            return head
        return await self._probe_with_get(url, head)

    @asynccontextmanager
    async def _slot(self, url: str) -> AsyncIterator[float]:
        """Hold a budget slot for ``url``'s host around one request (no budget: no limit).

        Yields the time the slot was granted.
        """
        if self._budget is None:
            yield time.monotonic()
            return
        host = host_key(url)
        async with self._budget.slot(host):
            try:
                yield time.monotonic()
            except HTTPStatusError as exc:
                if exc.status == 429 or exc.retry_after is not None:
                    self._budget.pause(host, exc.retry_after)
                raise
            self._budget.answered(host)

    async def _head(self, url: str) -> RemoteInfo | None:
        async with self._slot(url), translate_errors(url), self.session.head(
            url, headers=self._headers, allow_redirects=True, max_redirects=self._max_redirects
        ) as response:
            if response.status >= 400:
                if response.status in _HEAD_REFUSED:
                    return None  # some servers (and signed URLs) only answer GET
                raise _status_error(response, url)
            return _info_from_headers(url, response, response.content_length)

    async def _probe_with_get(self, url: str, head: RemoteInfo | None) -> RemoteInfo:
        headers = {**self._headers, "Range": _PROBE_RANGE.header()}
        async with self._slot(url), translate_errors(url), self.session.get(
            url, headers=headers, allow_redirects=True, max_redirects=self._max_redirects
        ) as response:
            if response.status >= 400:
                raise _status_error(response, url)
            if response.status == 206:
                content_range = parse_content_range(response.headers.get("Content-Range"))
                size = content_range[2] if content_range else None
                return _info_from_headers(url, response, size, accepts_ranges=size is not None)
            encoded = response.headers.get("Content-Encoding", "identity") != "identity"
            size = None if encoded else response.content_length
            return _info_from_headers(url, response, size, accepts_ranges=False)

    @asynccontextmanager
    async def open(
        self, url: str, byte_range: ByteRange | None, *, if_range: str | None = None
    ) -> AsyncIterator[Body]:
        """GET ``url`` (one range of it, or all), check the answer fits, and yield its body.

        Raises:
            HTTPStatusError: on an error status.
            RangeNotHonoured: a range was asked and the whole file came back.
            ProtocolError: the answer is for another range, or encoded.
        """
        headers = dict(self._headers)
        if byte_range is not None:
            headers["Range"] = byte_range.header()
            if if_range:
                headers["If-Range"] = if_range
        async with self._slot(url) as sent_at, translate_errors(url), self.session.get(
            url, headers=headers, allow_redirects=True, max_redirects=self._max_redirects
        ) as response:
            _check_response(response, url, byte_range)
            yield Body(response, url, byte_range, response.content_length, sent_at)


def _check_response(
    response: aiohttp.ClientResponse, url: str, byte_range: ByteRange | None
) -> None:
    if response.status >= 400:
        raise _status_error(response, url)
    if response.headers.get("Content-Encoding", "identity") not in ("identity", ""):
        raise ProtocolError(
            f"{url}: server sent {response.headers['Content-Encoding']!r}-encoded bytes although "
            "asked for identity; cannot write them at file offsets",
            url=url,
            retryable=False,
        )
    if byte_range is None:
        return
    if response.status != 206:
        raise RangeNotHonoured(
            f"{url}: asked for {byte_range}, got HTTP {response.status} with the whole file "
            "(the server ignores Range, or the file changed)",
            url=url,
        )
    got = parse_content_range(response.headers.get("Content-Range"))
    if got is None or got[0] != byte_range.start or got[1] > byte_range.end:
        raise ProtocolError(
            f"{url}: asked for {byte_range}, server sent Content-Range "
            f"{response.headers.get('Content-Range')!r}",
            url=url,
        )


def _info_from_headers(
    url: str,
    response: aiohttp.ClientResponse,
    size: int | None,
    *,
    accepts_ranges: bool | None = None,
) -> RemoteInfo:
    if accepts_ranges is None:
        accepts_ranges = response.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
    return RemoteInfo(
        url=url,
        final_url=str(response.url),
        size=size,
        accepts_ranges=accepts_ranges,
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
    )
