"""What an answer's head says: the file it describes (:func:`info_from_headers`, on either
receive path; :func:`info_from_response` for aiohttp's, redirects and all), the
Content-Encoding its bytes are in, and whether an answer aiohttp received fits the request
(:func:`check_response`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .._models import ByteRange, RemoteInfo
from .._userinfo import carry_userinfo
from .aioerrors import read_status_error
from .answers import check_answer, is_encoded
from .digests import first_announced

if TYPE_CHECKING:  # aiohttp is imported when a request is made, not with this module
    import aiohttp


def content_encoding(headers: Mapping[str, str]) -> str:
    """The answer's Content-Encoding, lower case; "" for none (or identity)."""
    return headers.get("content-encoding", "").strip().lower() if is_encoded(headers) else ""


def _final_url(url: str, response: aiohttp.ClientResponse) -> str:
    """Where ``url`` led: the answer's URL, with ``url``'s credentials when of the same origin
    (aiohttp's ``response.url`` never has them), so later requests there send them too."""
    return carry_userinfo(url, str(response.url))


async def check_response(
    response: aiohttp.ClientResponse,
    url: str,
    byte_range: ByteRange | None,
    size: int | None,
    proxy: str | None = None,
) -> None:
    if response.status >= 400:
        raise await read_status_error(response, url, proxy)
    check_answer(response.status, response.reason, response.headers, url, byte_range, size)


def _heads_on_the_way(response: aiohttp.ClientResponse) -> list[Mapping[str, str]]:
    """The headers of each answer on the way to ``response`` (redirects first), and its own."""
    return [*(r.headers for r in response.history), response.headers]


def info_from_headers(
    url: str,
    final_url: str,
    heads: Sequence[Mapping[str, str]],
    size: int | None,
    *,
    accepts_ranges: bool | None = None,
) -> RemoteInfo:
    """What an answer's headers say of the file: ``heads`` holds the headers of the final
    answer, last, after those of any redirect on the way (a digest may come on one of them).
    Each is aiohttp's case-insensitive mapping or the fast path's lower-cased dict, so names
    are looked up in lower case."""
    headers = heads[-1]
    if accepts_ranges is None:
        accepts_ranges = headers.get("accept-ranges", "").strip().lower() == "bytes"
    return RemoteInfo(
        url=url,
        final_url=final_url,
        size=size,
        accepts_ranges=accepts_ranges,
        etag=headers.get("etag"),
        last_modified=headers.get("last-modified"),
        announced_sha256=first_announced(heads),
    )


def info_from_response(
    url: str,
    response: aiohttp.ClientResponse,
    size: int | None,
    *,
    accepts_ranges: bool | None = None,
) -> RemoteInfo:
    """:func:`info_from_headers` of an answer aiohttp received for ``url``, redirects and
    all."""
    return info_from_headers(
        url, _final_url(url, response), _heads_on_the_way(response), size,
        accepts_ranges=accepts_ranges,
    )  # fmt: skip
