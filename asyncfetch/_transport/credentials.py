"""Which ``Authorization`` a request carries, on either receive path.

The order, first that applies: the caller's own ``Authorization`` header (only to the origin
of the URL asked for, or a mirror's own from ``mirror_headers``), the URL's userinfo
(``http://user:pass@host/``, to the same origin), then the netrc file (``$NETRC``, else
``~/.netrc``) entry for the host, as curl and aiohttp (with ``trust_env``) read it. aiohttp
applies the last two itself; the fast path asks :class:`Credentials`, so both paths send the
same header.
"""

from __future__ import annotations

import asyncio
import netrc
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._userinfo import basic_auth, basic_credentials, same_origin

AUTHORIZATION = "authorization"

Handler = Callable[[Any], Awaitable[Any]]
Middleware = Callable[[Any, Handler], Awaitable[Any]]


def netrc_authorization(path: Path | None, host: str) -> str | None:
    """The Basic ``Authorization`` value ``path``'s entry for ``host`` stands for (its
    ``default`` entry when none names it), or None. Reads the file: call it off the loop.

    A missing or unreadable file, or one that does not parse, gives None, as in aiohttp.
    """
    if path is None:
        return None
    try:
        found = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    if found is None:
        return None
    login, account, password = found
    return basic_credentials(login if (login or account is None) else account, password or "")


def callers_authorization(headers: Mapping[str, str]) -> str | None:
    """The caller's ``Authorization`` value in ``headers`` (any spelling), or None."""
    return next((v for k, v in headers.items() if k.lower() == AUTHORIZATION), None)


def without_authorization(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` less any ``Authorization``."""
    return {k: v for k, v in headers.items() if k.lower() != AUTHORIZATION}


def authorize_on(origin: str, value: str) -> Middleware:
    """An aiohttp client middleware that sets ``Authorization: value`` on every request to
    ``origin``'s origin, redirects included, over what aiohttp put there from netrc.

    aiohttp (with ``trust_env``) reads netrc for a request that has no auth of its own and
    refuses to send that next to an ``Authorization`` header (a ``ValueError``), so the
    caller's header goes on here, after netrc, and wins.
    """

    async def middleware(request: Any, handler: Handler) -> Any:
        if same_origin(origin, str(request.url)):
            request.headers["Authorization"] = value
        return await handler(request)

    return middleware


class Credentials:
    """The ``Authorization`` for fast-path requests of one transport (netrc read once a host)."""

    def __init__(self, *, netrc_path: Path | None) -> None:
        self._netrc_path = netrc_path
        self._by_host: dict[str, str | None] = {}

    async def headers(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` for a fast-path request to ``url``, with the Authorization aiohttp
        would send: the caller's if present, else the URL's userinfo, else netrc's."""
        if callers_authorization(headers) is not None:
            return headers
        auth = basic_auth(url)
        if auth is None:
            auth = await self._netrc(url)
        return headers if auth is None else {**headers, "Authorization": auth}

    async def _netrc(self, url: str) -> str | None:
        host = urlsplit(url).hostname
        if not host or self._netrc_path is None:
            return None
        if host not in self._by_host:
            found = await asyncio.to_thread(netrc_authorization, self._netrc_path, host)
            self._by_host[host] = found
        return self._by_host[host]
