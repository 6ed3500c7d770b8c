"""URLs and their secrets: the Basic auth a URL's userinfo stands for, which later URLs it
goes along to, the query parameters that carry credentials, and how a URL is shown or keyed.
Pure functions, no I/O.

As curl, requests and aiohttp do, the userinfo becomes ``Authorization: Basic ...`` on every
request to the same origin (scheme, host, port), never to another one. Wherever a URL is shown
or stored (error messages, logs, progress events, JSON output, journals, markers) it is parsed
and its secrets masked: the password (``user:***@``; a userinfo without a password, often a
token, is masked whole), and the values of the query parameters in :data:`SIGNING_PARAMS`
(``X-Amz-Signature=***``). The same list makes :func:`url_key`, what a part file is kept
under: a URL signed again (new signature, new expiry) keys the same part, so it resumes.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Mapping
from urllib.parse import unquote, unquote_plus, urlsplit

_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: Query parameters whose values are credentials, or change each time a URL is signed (so a
#: part is not keyed by them): S3 (SigV4 and V2), Google Cloud Storage, CloudFront, Azure SAS,
#: and plain tokens. Compared without regard to case.
SIGNING_PARAMS = frozenset(
    name.lower()
    for name in (
        "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "X-Amz-Date",
        "X-Amz-Expires", "AWSAccessKeyId", "X-Goog-Signature", "X-Goog-Credential",
        "X-Goog-Date", "X-Goog-Expires", "GoogleAccessId", "Signature", "Expires",
        "Key-Pair-Id", "Policy", "sig", "se", "st", "skoid", "sktid", "skt", "ske", "token",
        "access_token",
    )
)  # fmt: skip
MASK = "***"
#: Request headers that are credentials: a caller's go only to the origin they were given for.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_URL_ENDS = frozenset('"<>') | frozenset(" \t\r\n\v\f")
_TRAILING = ".,;:)]}"  # after a URL in text, these belong to the text
_TOKEN_ENDS = _URL_ENDS | frozenset("'()[]{},;")


def redact(text: str) -> str:
    """``text`` with the secrets of every URL in it masked (see the module docstring).

    Each URL (from its scheme to the next space or quote) is parsed; a word of the form
    ``user:password@host[:port]`` without a scheme (a proxy as curl takes it) is masked too.
    """
    if "@" not in text and "=" not in text:
        return text  # the common case, cheaply (progress events ask for every batch)
    return _redact_text(text)


@functools.lru_cache(maxsize=1024)
def _redact_text(text: str) -> str:
    shown: list[str] = []
    done = 0
    while (at := text.find("://", done)) >= 0:
        start = at
        while start > done and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        if start == at:
            shown.append(text[done : at + 3])
            done = at + 3
            continue
        quote = text[start - 1] if start > 0 and text[start - 1] in "'\"" else ""
        end = _url_end(text, at + 3, quote)
        shown += [_redact_bare(text[done:start]), redact_url(text[start:end])]
        done = end
    return "".join(shown) + _redact_bare(text[done:])


def _url_end(text: str, pos: int, quote: str) -> int:
    """Where the URL running on from ``pos`` ends: a space, a quote (its own, if it was
    quoted), less the punctuation that ends a sentence or a bracket."""
    end = pos
    while end < len(text) and text[end] not in _URL_ENDS and text[end] != quote:
        end += 1
    while end > pos and text[end - 1] in _TRAILING:
        end -= 1
    return end


def _redact_bare(text: str) -> str:
    """``text`` (no URL with a scheme in it) with ``user:pass@host:port`` words masked."""
    if "@" not in text:
        return text
    shown: list[str] = []
    word: list[str] = []
    for char in text + " ":
        if char in _TOKEN_ENDS:
            shown += [_redact_authority("".join(word)), char]
            word = []
        else:
            word.append(char)
    return "".join(shown)[:-1]


def _redact_authority(word: str) -> str:
    """A word masked when it reads as ``userinfo@host[:port]`` with a password or a port."""
    userinfo, at, host = word.rpartition("@")
    if not at or not userinfo or not host or "/" in userinfo:
        return word
    if ":" not in userinfo and not host.rpartition(":")[2].isdigit():
        return word  # name@example.org: an address, not a proxy
    return _mask_userinfo(userinfo) + "@" + host


@functools.lru_cache(maxsize=1024)
def redact_url(url: str) -> str:
    """``url`` parsed, with its password and the values of :data:`SIGNING_PARAMS` masked;
    everything else as it was. Masking twice changes nothing."""
    if "://" not in url:
        return _redact_bare(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.partition("://")[0] + "://" + MASK  # unparseable: nothing of it is shown
    scheme = url[: url.find("://") + 3] if "://" in url else ""
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at:
        netloc = _mask_userinfo(userinfo) + "@" + host
    shown = scheme + netloc + parts.path
    if parts.query or "?" in url.partition("#")[0]:
        shown += "?" + _mask_params(parts.query)
    if parts.fragment or "#" in url:
        shown += "#" + _mask_params(parts.fragment)  # where OAuth puts an access_token
    return shown


def url_key(url: str) -> str:
    """What identifies the file at ``url`` across signings: ``url`` without its secrets
    (password, signature, expiry), as :func:`redact_url` shows it. Other query parameters
    (``versionId``, ``id``) stay part of it."""
    return redact_url(url)


def is_signed(url: str) -> bool:
    """Whether ``url``'s query carries any of :data:`SIGNING_PARAMS` (a presigned URL)."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return False
    names = (unquote_plus(pair.partition("=")[0]).strip().lower() for pair in query.split("&"))
    return any(name in SIGNING_PARAMS for name in names)


def _mask_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MASK}" if colon else MASK


def _mask_params(query: str) -> str:
    """``a=1&X-Amz-Signature=***``: each ``&``-separated pair kept as it was unless its name
    is one of :data:`SIGNING_PARAMS`, or its value a URL (``next=https://...``: masked too)."""
    pairs = query.split("&")
    for n, pair in enumerate(pairs):
        name, equals, value = pair.partition("=")
        if equals and unquote_plus(name).strip().lower() in SIGNING_PARAMS:
            pairs[n] = f"{name}={MASK}"
        elif "://" in value or "@" in value:
            pairs[n] = f"{name}={redact(value)}"
    return "&".join(pairs)


def _split(url: str) -> tuple[str, str | None, str]:
    """(``scheme://``, the userinfo or None, the rest from the host on)."""
    match = _AUTHORITY.match(url)
    if match is None or "@" not in match[1]:
        return "", None, url
    userinfo, _, host = match[1].rpartition("@")
    return url[: match.start(1)], userinfo, host + url[match.end(1) :]


def strip_userinfo(url: str) -> str:
    """``url`` without its userinfo (unchanged when it has none)."""
    scheme, userinfo, rest = _split(url)
    return url if userinfo is None else scheme + rest


def basic_auth(url: str) -> str | None:
    """The ``Authorization`` value ``url``'s userinfo stands for, or None when it has none."""
    _, userinfo, _ = _split(url)
    if userinfo is None:
        return None
    user, _, password = userinfo.partition(":")
    return basic_credentials(unquote(user), unquote(password))


def basic_credentials(user: str, password: str) -> str:
    """The ``Authorization`` value for Basic auth with ``user`` and ``password``."""
    pair = f"{user}:{password}"
    try:
        raw = pair.encode("latin-1")  # as aiohttp and requests encode it
    except UnicodeEncodeError:
        raw = pair.encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def carry_userinfo(asked: str, final: str) -> str:
    """``final`` (where ``asked`` redirected to) with ``asked``'s userinfo when both are of
    the same origin, so the credentials go along to it; else ``final`` as it is."""
    scheme, userinfo, _ = _split(asked)
    if userinfo is None or _split(final)[1] is not None or _origin(asked) != _origin(final):
        return final
    return scheme + userinfo + "@" + final[len(scheme) :]


def same_origin(first: str, second: str) -> bool:
    """Whether two URLs share scheme, host and port (where credentials may go along)."""
    origin = _origin(first)
    return origin is not None and origin == _origin(second)


def origin(url: str) -> str | None:
    """``scheme://host:port`` of ``url`` (the port spelt out), or None when it has none."""
    found = _origin(url)
    if found is None or not found[0] or not found[1]:
        return None
    return f"{found[0]}://{found[1]}:{found[2]}"


def without_credentials(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` less those in :data:`CREDENTIAL_HEADERS`."""
    return {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}


def _origin(url: str) -> tuple[str, str, int] | None:
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError:
        return None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port
