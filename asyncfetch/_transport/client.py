"""HTTP: probing a URL and opening one byte range, on the fast path or through aiohttp.

aiohttp's session is set up in :mod:`.aiosession`; its exceptions are translated in
:mod:`.aioerrors` (:func:`.aioerrors.translate_errors`) and never reach the engine or the user.

With a :class:`~.netpolicy.NetPolicy` (``asyncfetch serve`` sets one) the fast path connects
only to addresses it allows, and aiohttp resolves names through it and has every request, each
redirect included, checked before it is sent (:func:`.aiosession.policy_middleware`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING

from .._config import DEFAULT_MAX_REDIRECTS, Timeouts, TLSTrust, env_settings
from .._errors import AddressBlocked, FetchTimeout, HTTPStatusError, InvalidRequest
from .._models import ByteRange, RemoteInfo
from .._options import Options
from .._userinfo import origin, same_origin, strip_userinfo, without_credentials
from .._version import __version__
from .aiobody import AioBody, Body
from .aioerrors import read_status_error, translate_errors
from .aiosession import open_session, policy_middleware, proxy_middleware
from .answers import FileChanged as FileChanged
from .answers import RangeNotHonoured as RangeNotHonoured
from .answers import is_encoded, parse_content_range, status_error
from .budget import ConnectionBudget, host_key
from .credentials import (
    Credentials,
    Middleware,
    authorize_on,
    callers_authorization,
    without_authorization,
)
from .digests import CHECKSUM_MODE, may_ask_checksum
from .heads import check_response, content_encoding, info_from_headers, info_from_response
from .localfile import is_file_url, open_file, probe_file
from .lowspeed import LowSpeed
from .netpolicy import NetPolicy
from .proxies import proxy_for
from .rawhttp import RawBody, RawClient, Window
from .rawhttp import Span as Span
from .tls import described, ssl_context

USER_AGENT = f"asyncfetch/{__version__}"
_PROBE_RANGE = ByteRange(0, 1)

if TYPE_CHECKING:  # aiohttp is imported when a request is made, so a cache hit never pays
    import aiohttp  # for it (~0.25 s); the names below are for annotations only

    Session = aiohttp.ClientSession
    """An application's own HTTP session, which asyncfetch can use instead of opening one."""
_HEAD_REFUSED = frozenset({400, 401, 403, 405, 406, 501})
_CHECKSUM_REFUSED = frozenset({400, 403})  # S3's answers to an unsigned x-amz-* header


class Transport:
    """One aiohttp session for a download (or a batch), with the options' timeouts, connection
    count and headers.

    Pass ``session`` to use an application's own ``aiohttp.ClientSession``; it is not closed,
    and keeps its own TLS settings unless the options ask for a CA bundle or ``insecure``.
    ``options.tls`` (with the environment, see :mod:`.tls`) makes the one ``ssl.SSLContext``
    every TLS connection of this Transport uses: :attr:`ssl_context`. With a ``budget``, every
    request holds one of its slots while it runs, and a 429 or a ``Retry-After`` pauses that
    host for every download sharing the budget. With a ``policy``, requests go only to the
    addresses it allows (not with a caller's ``session``).
    """

    def __init__(
        self,
        options: Options,
        *,
        session: aiohttp.ClientSession | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        budget: ConnectionBudget | None = None,
        policy: NetPolicy | None = None,
    ) -> None:
        if policy is not None and session is not None:
            raise InvalidRequest("an address policy applies to asyncfetch's own session only")
        self._timeouts = timeouts = options.timeouts
        self._connections = options.connections
        headers = options.headers or {}
        self._headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT, **headers}
        self._mirror_headers = options.mirror_headers
        self._origins: set[str] = set()  # where the caller's credential headers may go
        self._session = session
        self._owns_session = session is None
        self._max_redirects = max_redirects
        settings = env_settings()
        trust = options.tls
        self.ssl_context: ssl.SSLContext = ssl_context(trust, settings)
        """The context every TLS connection of this Transport uses, built once."""
        self._trusted = described(trust, settings)
        self._ssl_asked = trust != TLSTrust()  # a caller's session gets it only when asked
        fast = session is None and settings.fast_path
        self._credentials = Credentials(netrc_path=settings.netrc)
        self._proxies = settings.proxies
        self._raw = (
            RawClient(
                timeouts,
                policy=policy,
                ssl_context=self.ssl_context,
                trusted=self._trusted,
                proxies=settings.proxies,
            )
            if fast
            else None
        )
        self._budget = budget
        self._policy = policy
        self._guards: tuple[Middleware, ...] = (
            proxy_middleware(settings.proxies),
            *((policy_middleware(policy),) if policy is not None else ()),
        )
        self._entered = False

    async def __aenter__(self) -> Transport:
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._raw is not None:
            await self._raw.aclose()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        self._entered = False

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (inside ``async with`` only), opened on first use: a download
        that stays on the fast path never imports aiohttp."""
        if not self._entered:
            raise RuntimeError("Transport used outside 'async with'")
        if self._session is None:
            self._session = open_session(
                self._timeouts, self._connections, self.ssl_context, self._policy, self._guards
            )
        return self._session

    async def probe(self, url: str) -> RemoteInfo:
        """Learn size, Range support, validators and an announced SHA-256: HEAD, then a 1-byte
        GET if HEAD falls short.

        The header asking S3 for its checksum is not signed: a presigned URL a redirect leads
        to may refuse it (400 or 403), and the probe is then made again without it.
        """
        if is_file_url(url):
            self._local(url)
            return await probe_file(url)
        base = self._headers_for(url)
        headers = self._probe_headers(url, base)
        try:
            return await self._probe(url, headers)
        except HTTPStatusError as exc:
            if exc.status not in _CHECKSUM_REFUSED or headers == base:
                raise
        return await self._probe(url, base)

    async def _probe(self, url: str, headers: dict[str, str]) -> RemoteInfo:
        direct = self._proxy(url) is None  # a proxy's refusal is aiohttp's to read and name
        if self._raw is not None and direct and self._raw.target(url) is not None:
            head = await self._raw_head(url, headers)
        else:
            head = await self._head(url, headers)
        if head is not None and head.size is not None and head.accepts_ranges:
            return head
        return await self._probe_with_get(url, headers)

    def _probe_headers(self, url: str, base: dict[str, str]) -> dict[str, str]:
        """``base``, and on an unsigned request the one asking S3 for the file's SHA-256."""
        if not may_ask_checksum(url, base):
            return dict(base)
        return {**base, **CHECKSUM_MODE}

    async def _raw_head(self, url: str, headers: dict[str, str]) -> RemoteInfo | None:
        """HEAD on the fast path, so an http(s) download never needs aiohttp. None when the
        answer is refused, a redirect or encoded: the 1-byte GET (through aiohttp, which
        follows redirects) tells the rest."""
        assert self._raw is not None
        async with self._slot(url):
            head = await self._raw.head(url, await self._credentials.headers(url, headers))
            if head is not None and head.status >= 400 and head.status not in _HEAD_REFUSED:
                raise status_error(
                    head.status, head.reason, head.headers, url, proxy=self._proxy(url)
                )
        if head is None or head.status != 200 or is_encoded(head.headers):
            return None
        return info_from_headers(url, url, [head.headers], head.content_length)

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

    def _local(self, url: str) -> None:
        """Raise AddressBlocked for a ``file://`` URL under an address policy: a service
        reads no local file for its clients."""
        if self._policy is not None:
            raise AddressBlocked(
                f"{url}: local files are not read under an address policy (asyncfetch serve "
                "downloads from the network only)",
                url=url,
                address="file",
            )

    def _proxy(self, url: str) -> str | None:
        """The proxy a request for ``url`` goes through (see :mod:`.proxies`), if any."""
        return proxy_for(url, self._proxies)

    def asks_for(self, url: str) -> None:
        """``url`` is one a download asks for: the caller's ``Authorization`` and ``Cookie``
        headers go to its origin (and to no other: a mirror's or a redirect's)."""
        where = origin(url)
        if where is not None:
            self._origins.add(where)

    def _headers_for(self, url: str, asked: str | None = None) -> dict[str, str]:
        """Our headers for a request to ``url`` (where ``asked`` led, if given): the caller's
        credentials only when both are of an origin asked for, and the mirror headers of
        ``url``'s origin."""
        where = origin(url)
        trusted = where in self._origins and (asked is None or same_origin(asked, url))
        headers = dict(self._headers) if trusted else without_credentials(self._headers)
        extra = self._mirror_headers.get(where or "", {})
        given = {name.lower() for name in extra}  # they replace ours, however spelt
        return {k: v for k, v in headers.items() if k.lower() not in given} | dict(extra)

    def _aio_request(
        self, method: str, url: str, headers: dict[str, str]
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """``method`` ``url`` through aiohttp, following redirects, with the caller's
        Authorization winning over the URL's userinfo and netrc (see :mod:`._credentials`)."""
        auth = callers_authorization(headers)
        middlewares: tuple[Middleware, ...] | None = None
        if auth is not None and self._owns_session:  # a caller's session: its own middlewares
            headers = without_authorization(headers)
            middlewares = (*self._guards, authorize_on(url, auth))
        ssl_context = self.ssl_context if self._ssl_asked and not self._owns_session else True
        return self.session.request(
            method, strip_userinfo(url) if auth is not None else url, headers=headers,
            allow_redirects=True, max_redirects=self._max_redirects, middlewares=middlewares,
            ssl=ssl_context,
        )  # fmt: skip

    async def _head(self, url: str, headers: dict[str, str]) -> RemoteInfo | None:
        async with (
            self._slot(url),
            translate_errors(url, self._trusted, self._proxy(url)),
            self._aio_request("HEAD", url, headers) as response,
        ):
            if response.status >= 400:
                if response.status in _HEAD_REFUSED:
                    return None  # some servers (and signed URLs) only answer GET
                raise await read_status_error(response, url, self._proxy(url))
            size = None if is_encoded(response.headers) else response.content_length
            return info_from_response(url, response, size)

    async def _probe_with_get(self, url: str, headers: dict[str, str]) -> RemoteInfo:
        headers = {**headers, "Range": _PROBE_RANGE.header()}
        async with (
            self._slot(url),
            translate_errors(url, self._trusted, self._proxy(url)),
            self._aio_request("GET", url, headers) as response,
        ):
            if response.status >= 400:
                raise await read_status_error(response, url, self._proxy(url))
            if response.status == 206 and not is_encoded(response.headers):
                content_range = parse_content_range(response.headers.get("Content-Range"))
                size = content_range[2] if content_range else None
                return info_from_response(url, response, size, accepts_ranges=size is not None)
            size = None if is_encoded(response.headers) else response.content_length
            return info_from_response(url, response, size, accepts_ranges=False)

    @asynccontextmanager
    async def open(
        self,
        url: str,
        byte_range: ByteRange | None,
        *,
        if_range: str | None = None,
        window: Window | None = None,
        fast: bool = True,
        asked: str | None = None,
        size: int | None = None,
    ) -> AsyncIterator[Body]:
        """GET ``url`` (one range of it, or all), check the answer fits, and yield its body.

        ``size``: the file's size as probed, when known; an answer saying otherwise raises
        FileChanged. A whole-file answer with an unasked Content-Encoding is yielded as sent,
        its body's ``encoding`` set.

        ``asked``: the URL the caller asked for, when ``url`` is where it redirected to; the
        caller's ``Authorization`` and ``Cookie`` headers go only to ``asked``'s origin (as
        aiohttp does on the redirect itself), so a token never reaches another host.

        With a ``window`` (where the bytes go; the engine's task) an http or https URL without
        a proxy takes the fast path (:mod:`._rawhttp`, with :attr:`ssl_context` for https);
        everything else goes through aiohttp,
        and so does any request with ``fast=False`` (a body of unknown length: chunked, or
        read to EOF, which only aiohttp handles).

        Raises:
            HTTPStatusError: on an error status.
            FileChanged: the answer says the file is not ``size`` bytes long.
            RangeNotHonoured: a range was asked and the whole file, or encoded bytes, came
                back.
            ProtocolError: the answer is for another range.
        """
        if is_file_url(url):
            self._local(url)
            async with open_file(url, byte_range, if_range=if_range, window=window,
                                 size=size) as local:  # fmt: skip
                yield local
            return
        headers = self._headers_for(url, asked)
        if byte_range is not None:
            headers["Range"] = byte_range.header()
            if if_range:
                headers["If-Range"] = if_range
        async with self._slot(url) as sent_at:
            if self._raw is not None and window is not None and fast:
                raw = await self._raw_open(url, headers, byte_range, window, size)
                if raw is not None:
                    raw.sent_at = sent_at
                    try:
                        yield raw
                    finally:
                        self._raw.finish(raw.connection)
                    return
            proxy = self._proxy(url)
            timely = _head_within(self._timeouts, url, self._aio_request("GET", url, headers))
            async with translate_errors(url, self._trusted, proxy), timely as response:
                await check_response(response, url, byte_range, size, proxy)
                span = window or Span()
                speed = LowSpeed.of(self._timeouts, time.monotonic())
                body = AioBody(response, url, byte_range, response.content_length, span,
                               sent_at=sent_at, encoding=content_encoding(response.headers),
                               speed=speed, file_size=size)  # fmt: skip
                yield body

    async def _raw_open(
        self,
        url: str,
        headers: dict[str, str],
        byte_range: ByteRange | None,
        window: Window,
        size: int | None,
    ) -> RawBody | None:
        """The fast path's body, or None to ask through aiohttp: also on 401 and 403, whose
        body (``Request has expired``) aiohttp reads for the message."""
        assert self._raw is not None
        try:
            return await self._raw.open(
                url, await self._credentials.headers(url, headers), byte_range, window, size
            )
        except HTTPStatusError as exc:
            if exc.status in (401, 403, 407):  # 407: aiohttp's message names the proxy
                return None
            raise


@asynccontextmanager
async def _head_within(
    timeouts: Timeouts, url: str, request: AbstractAsyncContextManager[aiohttp.ClientResponse]
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Enter ``request`` (send it, follow redirects, read the answer's head) within the head
    deadline, however slowly the head trickles in (Python 3.11+; 3.10 has the read timeout
    only). In this task: a helper task would start reading the body a turn later, and aiohttp
    drops what it holds once the connection breaks."""
    limit = asyncio.timeout(timeouts.head_deadline) if hasattr(asyncio, "timeout") else None
    try:
        async with limit or nullcontext():
            response = await request.__aenter__()
    except TimeoutError:
        if limit is None or not limit.expired():
            raise  # aiohttp's own connect or read timeout
        raise FetchTimeout(
            f"{url}: timed out: no complete answer head within {timeouts.head_deadline:g} s "
            "(the server stalls or trickles)",
            url=url,
        ) from None
    try:
        yield response
    except BaseException as exc:
        if not await request.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await request.__aexit__(None, None, None)
