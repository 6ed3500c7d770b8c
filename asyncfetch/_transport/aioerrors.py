"""aiohttp's and asyncio's exceptions, translated into the FetchError tree in this one place.

:func:`translate_errors` wraps every request made through aiohttp (the probe, a range, a body
read) and turns what escapes it into asyncfetch's errors, most specific first; none reaches
the engine or the user. :func:`read_status_error` reads an error answer's message for its
HTTPStatusError.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from .._errors import (
    ConnectionFailed,
    FetchError,
    FetchTimeout,
    HTTPStatusError,
    InvalidRequest,
    ProtocolError,
    TooManyRedirects,
    TransportError,
    TruncatedBody,
)
from .._userinfo import redact_url
from .answers import ERROR_BODY_LIMIT, proxy_auth_hint, status_error
from .tls import certificate_error

if TYPE_CHECKING:  # aiohttp is imported when a request is made, not with this module
    import aiohttp


@asynccontextmanager
async def translate_errors(
    url: str, trusted: str | None = None, proxy: str | None = None
) -> AsyncIterator[None]:
    """Turn aiohttp's and asyncio's exceptions into asyncfetch's, most specific first.

    ``trusted``: what the TLS check trusted (see :func:`.tls.described`), for the message of
    a certificate error. ``proxy``: the proxy the request goes through, named (masked) when
    it refused the request or sent something that is not HTTP (an error page; never shown
    raw).
    """
    import aiohttp

    try:
        yield
    except FetchError:
        raise  # ours already (a low-speed cut, a head deadline, an error status)
    except aiohttp.ClientConnectorCertificateError as exc:
        raise certificate_error(url, exc.certificate_error, trusted) from None
    except aiohttp.TooManyRedirects as exc:
        raise TooManyRedirects(
            f"{url}: too many redirects ({len(exc.history)}); the server may loop", url=url
        ) from None
    except aiohttp.NonHttpUrlRedirectClientError as exc:
        where = exc.args[0] if exc.args else "a URL"
        raise TransportError(
            f"{url}: redirected to {where}, which is not an http(s) URL: refused (a server "
            "may not send a download to a local file); give that URL yourself if you trust it",
            url=url,
            retryable=False,
        ) from None
    except aiohttp.ClientHttpProxyError as exc:  # the proxy refused a CONNECT
        raise _proxy_refused(url, proxy, exc.status, exc.message) from None
    except aiohttp.ClientResponseError as exc:  # the parser's: the answer is not HTTP
        raise _not_http(url, proxy, exc.message) from None
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


def _proxy_refused(url: str, proxy: str | None, status: int, reason: str) -> TransportError:
    """The error for a proxy's refusal of a tunnel (CONNECT): a 407 asks for credentials."""
    if status == 407:
        return HTTPStatusError(
            f"{url}: HTTP 407 {reason} ({proxy_auth_hint(proxy)})", url=url, status=407
        )
    where = f"the proxy {redact_url(proxy)}" if proxy else "the proxy"
    return HTTPStatusError(
        f"{url}: {where} refused to connect to the host: HTTP {status} {reason} (check the "
        "proxy's access rules, or list this host in no_proxy)",
        url=url,
        status=status,
    )


def _not_http(url: str, proxy: str | None, message: str) -> TransportError:
    """The error for an answer aiohttp could not parse; its bytes are not shown (a proxy's
    HTML error page, say), only the parser's first line."""
    first = message.splitlines()[0].rstrip(":") if message else "malformed answer"
    if proxy is None:
        return ProtocolError(f"{url}: the answer is not valid HTTP ({first})", url=url)
    return ProtocolError(
        f"{url}: the proxy {redact_url(proxy)} answered with something that is not valid HTTP "
        f"({first}; often a proxy's error page: access denied or credentials needed): check "
        "the proxy's address, credentials and access rules, or list this host in no_proxy",
        url=url,
        retryable=False,
    )


async def read_status_error(
    response: aiohttp.ClientResponse, url: str, proxy: str | None = None
) -> HTTPStatusError:
    """The error for an error answer, with the server's message from the start of its body."""
    import aiohttp

    try:
        body = await response.content.read(ERROR_BODY_LIMIT)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        body = b""
    return status_error(response.status, response.reason, response.headers, url, body, proxy=proxy)
