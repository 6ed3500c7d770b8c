"""Which URLs asyncfetch takes: absolute ``http://`` and ``https://`` ones. Vocabulary, so the
registry, manifests and the request checks need not import the HTTP transport to ask."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from ._errors import InvalidRequest

SCHEMES = frozenset({"http", "https"})
_LOCAL_HOSTS = frozenset({"", "localhost"})


def is_file_url(url: str) -> bool:
    """Whether ``url`` is a ``file://`` URL."""
    return url[:7].lower() == "file://"


def file_path(url: str) -> str | None:
    """The local path a ``file://`` URL names, or None when it names none (another host,
    no absolute path, a query or fragment)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "file" or parts.netloc.lower() not in _LOCAL_HOSTS:
        return None
    path = unquote(parts.path)
    if not path.startswith("/") or parts.query or parts.fragment or "\0" in path:
        return None
    return path


def check_url(url: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL or a local ``file://`` one, else raise
    InvalidRequest."""
    if isinstance(url, str) and is_file_url(url):
        if file_path(url) is None:
            raise InvalidRequest(
                f"{url!r} is not a local file URL; give one like file:///path/to/file", url=url
            )
        return url
    try:
        import yarl  # lazily (~12 ms); aiohttp parses URLs with it too

        parsed = yarl.URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{url!r} is not a valid URL: {exc}", url=url) from None
    if not parsed.scheme or not parsed.host:
        raise InvalidRequest(f"{url!r} is not a full URL; give one like https://host/file", url=url)
    if parsed.scheme not in SCHEMES:
        raise InvalidRequest(
            f"{url!r}: unsupported scheme {parsed.scheme!r}; use http://, https:// or file://",
            url=url,
        )
    return url
