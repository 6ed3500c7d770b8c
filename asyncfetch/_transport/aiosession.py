"""The aiohttp session a :class:`~.client.Transport` opens, and the middlewares and resolver
that judge each of its requests.

Each request, every redirect included, goes through the proxy :func:`.proxies.proxy_for`
chooses for its URL (:func:`proxy_middleware`). With a :class:`~.netpolicy.NetPolicy`
(``asyncfetch serve`` sets one) aiohttp resolves names through it and has every request, each
redirect included, checked before it is sent (:func:`policy_middleware`).
"""

from __future__ import annotations

import contextvars
import socket
import ssl
from typing import TYPE_CHECKING, Any

from .._config import ProxyEnv, Timeouts, env_settings
from .._userinfo import basic_credentials
from .credentials import Handler, Middleware
from .netpolicy import NetPolicy, literal_address, system_resolver
from .proxies import proxy_for

READ_BUFSIZE = 1 << 18

if TYPE_CHECKING:  # aiohttp is imported when a session is opened, not with this module
    import aiohttp
    import aiohttp.abc


def open_session(
    timeouts: Timeouts,
    connections: int,
    ssl_context: ssl.SSLContext,
    policy: NetPolicy | None = None,
    middlewares: tuple[Middleware, ...] = (),
) -> aiohttp.ClientSession:
    import aiohttp

    resolver = _policy_resolver(policy) if policy is not None else None
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=connections + 2, ttl_dns_cache=300, resolver=resolver, ssl=ssl_context
        ),
        middlewares=middlewares,
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.connect, sock_read=timeouts.read
        ),
        trust_env=True,
        auto_decompress=False,
        read_bufsize=READ_BUFSIZE,
    )


def proxy_middleware(env: ProxyEnv) -> Middleware:
    """An aiohttp client middleware that sends each request, redirects included, through
    the proxy :func:`.proxies.proxy_for` chooses for its URL (curl's rules: ``all_proxy``,
    CIDR ranges in ``no_proxy``), in place of aiohttp's own choice; the proxy's userinfo
    becomes its ``Proxy-Authorization`` (on the CONNECT of an https request, else on the
    request itself)."""
    import yarl

    async def middleware(request: Any, handler: Handler) -> Any:
        proxy = proxy_for(str(request.url), env)
        if proxy is None:
            request.update_proxy(None, None, None)
            return await handler(request)
        where = yarl.URL(proxy)
        tunnel: dict[str, str] | None = None
        if where.user is not None:
            value = basic_credentials(where.user, where.password or "")
            if request.is_ssl():
                tunnel = {"Proxy-Authorization": value}
            else:
                request.headers["Proxy-Authorization"] = value
        request.update_proxy(where.with_user(None), None, tunnel)
        return await handler(request)

    return middleware


#: the URL of the request aiohttp is connecting for, so the resolver can name it
_HOP: contextvars.ContextVar[str] = contextvars.ContextVar("asyncfetch_hop", default="")


def policy_middleware(policy: NetPolicy) -> Middleware:
    """An aiohttp client middleware that has ``policy`` judge each request, redirects
    included, before it is sent: a host spelling an address (aiohttp connects to those
    without asking its resolver), any host when the request goes through a proxy (which
    resolves it; the proxy itself is the operator's choice and not judged), and a proxy's own
    name asked for directly (no_proxy: its resolver passes proxy names through unjudged).
    Other names are judged as they are resolved (:func:`_policy_resolver`), so the address
    checked is the one connected to."""
    proxies = _proxy_hosts()

    async def middleware(request: Any, handler: Handler) -> Any:
        url = request.url
        _HOP.set(str(url))
        host = url.raw_host or ""
        if request.proxy is not None or host in proxies or literal_address(host) is not None:
            await policy.addresses(host, url.port or 0, url=str(url))
        return await handler(request)

    return middleware


def _proxy_hosts() -> frozenset[str]:
    """The host names of the environment's proxies."""
    import urllib.parse

    env = env_settings().proxies
    hosts = (urllib.parse.urlsplit(p if "://" in p else f"http://{p}").hostname
             for p in (env.http, env.https, env.all) if p)  # fmt: skip
    return frozenset(host for host in hosts if host)


def _policy_resolver(policy: NetPolicy) -> Any:
    """An aiohttp resolver that gives only the addresses ``policy`` allows (AddressBlocked
    when it allows none); the environment's proxies are resolved as they are."""
    import aiohttp.abc

    proxies = _proxy_hosts()

    class PolicyResolver(aiohttp.abc.AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[aiohttp.abc.ResolveResult]:
            if host in proxies:
                found = await system_resolver(host, port)
            else:
                found = await policy.addresses(host, port, url=_HOP.get() or f"http://{host}/")
            results = [_resolved(host, address, port) for address in found]
            return [r for r in results if family in (socket.AF_UNSPEC, r["family"])]

        async def close(self) -> None:
            return None

    return PolicyResolver()


def _resolved(host: str, address: str, port: int) -> aiohttp.abc.ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return {"hostname": host, "host": address, "port": port, "family": family, "proto": 0,
            "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}  # fmt: skip
