"""Credentials in URLs (``http://user:pass@host/file``): the Basic auth they stand for, which
later URLs they go along to, and how such a URL is shown. Pure functions, no I/O.

As curl, requests and aiohttp do, the userinfo becomes ``Authorization: Basic ...`` on every
request to the same origin (scheme, host, port), never to another one. Wherever a URL is shown
(error messages, logs, progress events, JSON output, files beside a download) the password
is masked: ``user:***@``; a userinfo without a password (often a token) is masked whole.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import unquote, urlsplit

_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
_USERINFO_IN_TEXT = re.compile(r"(?<=://)([^\s/?#@:]*)(:[^\s/?#@]*)?@")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it masked (``user:***@``, ``***@``)."""
    if "@" not in text:
        return text  # the common case, cheaply (progress events ask for every batch)
    return _USERINFO_IN_TEXT.sub(lambda m: f"{m[1]}:***@" if m[2] is not None else "***@", text)


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


def _origin(url: str) -> tuple[str, str, int] | None:
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError:
        return None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port
