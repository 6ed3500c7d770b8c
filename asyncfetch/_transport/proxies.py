"""Which proxy a request goes through, chosen from the environment as curl chooses.

One pure function, :func:`proxy_for`, over the variables :class:`~.._config.ProxyEnv` holds:

- ``http_proxy`` for ``http://`` URLs, ``https_proxy`` for ``https://`` ones, else
  ``all_proxy``; each in lower case first, then upper case (curl reads ``http_proxy`` in lower
  case only; asyncfetch, like Python's urllib and aiohttp before it, also takes
  ``HTTP_PROXY``). An empty value is unset. A proxy without a scheme is ``http://``.
- ``no_proxy`` (or ``NO_PROXY``): comma- or space-separated entries. ``*`` alone bypasses every
  proxy. A name matches itself and its subdomains, with or without a leading dot
  (``example.com`` and ``.example.com`` both match ``example.com`` and ``a.example.com``). An IP
  address matches itself, a CIDR range (``127.0.0.0/8``, ``fd00::/8``) every address in it;
  addresses are compared as addresses (``::1`` and ``[::1]`` alike). An entry with a port
  (``host:8080``, ``[::1]:8080``) matches that port only (Python's urllib reads ports; curl
  ignores them).

``file://`` URLs never go through a proxy.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from .._config import ProxyEnv
from .._errors import InvalidRequest
from .._userinfo import redact_url

__all__ = ["PROXY_SCHEMES", "bypassed", "proxy_for"]

#: the proxy schemes the transport speaks (socks is not one)
PROXY_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def proxy_for(url: str, env: ProxyEnv) -> str | None:
    """The proxy URL a request for ``url`` goes through, or None to connect directly.

    Raises:
        InvalidRequest: the proxy chosen has a scheme the transport does not speak (socks).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        return None
    chosen = (env.http if scheme == "http" else env.https) or env.all or None
    if chosen is None or bypassed(parts.hostname or "", _port(parts, scheme), env.no_proxy):
        return None
    return _normal(chosen)


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``no_proxy`` says a request to ``host``:``port`` goes direct."""
    host = host.strip("[]").rstrip(".").lower()
    if not host:
        return False
    address = _address(host)
    for entry in no_proxy.replace(" ", ",").split(","):
        entry = entry.strip().lower()
        if entry == "*":
            return True
        if entry and _matches(entry, host, address, port):
            return True
    return False


def _matches(entry: str, host: str, address: Address | None, port: int) -> bool:
    name, wanted = _split_port(entry)
    if wanted is not None and wanted != port:
        return False
    if address is not None:
        try:
            return address in ipaddress.ip_network(name, strict=False)
        except ValueError:
            return False
    name = name.lstrip(".").rstrip(".")
    return bool(name) and (host == name or host.endswith("." + name))


def _split_port(entry: str) -> tuple[str, int | None]:
    """``entry`` less a ``:port`` suffix, and the port (None when it has none)."""
    if entry.startswith("["):  # [v6]:port or [v6]
        inside, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return inside, int(port) if port.isdigit() else None
    if entry.count(":") == 1:  # host:port (a bare v6 address has more colons)
        name, _, port = entry.partition(":")
        if port.isdigit():
            return name, int(port)
    return entry, None


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _port(parts: SplitResult, scheme: str) -> int:
    try:
        port = parts.port
    except ValueError:
        port = None
    return port if port is not None else _DEFAULT_PORTS[scheme]


def _normal(proxy: str) -> str:
    """``proxy`` with a scheme (``http://`` when it has none), checked to be one we speak."""
    proxy = proxy.strip()
    if "://" not in proxy:
        proxy = "http://" + proxy
    scheme = proxy.partition("://")[0].lower()
    if scheme not in PROXY_SCHEMES:
        raise InvalidRequest(
            f"proxy {redact_url(proxy)}: {scheme}:// proxies are not supported; use an "
            "http:// proxy, or unset the *_proxy variable for this download"
        )
    return proxy
