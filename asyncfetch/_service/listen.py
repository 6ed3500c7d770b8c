"""Listening: ``asyncfetch serve``'s service on its address, over http or https, until SIGINT
or SIGTERM.

The :class:`~.app.Service` is the application; :func:`serve` runs it with aiohttp's runner
and site, prints where it listens, and refuses (or warns about) an address other machines can
reach: without a token it is refused, without TLS or allowed host names it is warned about.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from typing import Any

from aiohttp import web

from .._errors import InvalidRequest
from .app import Service
from .guard import check_exposure, is_loopback

log = logging.getLogger("asyncfetch.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'
#: seconds a connection may stay without a whole request head, from its start or its last
#: answer: aiohttp's runner would hold one for an hour (its handler's default), so a few idle
#: or half-sent heads from anyone who can connect, token or not, would use up the service's
#: file descriptors (slowloris); run_app's 75 s, shortened, as no client needs that long
IDLE_TIMEOUT = 30.0


def base_url(address: Any, scheme: str = "http") -> str:
    """``http://host:port`` (or ``https://``) for a listening socket's address."""
    host, port = address[0], address[1]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def serve(
    service: Service,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Run ``service`` until SIGINT or SIGTERM (over https with ``tls``); prints the URL it
    listens on to stdout.

    Raises:
        InvalidRequest: the address cannot be listened on (in use, not a local address), or
            is not a loopback address and the service has no token.
    """
    check_exposure(host, service.guard)
    if tls is None and not is_loopback(host):
        log.warning(
            "serving plain http on %s: the token and the files cross the network unencrypted; "
            "give --tls-cert FILE and --tls-key FILE (or put a TLS proxy in front)",
            host or "every address",
        )
    if not is_loopback(host) and not service.guard.hosts:
        log.warning(
            "clients must reach the service by an IP address or localhost: it refuses other "
            "names in Host; give the ones they use with --allowed-host NAME"
        )
    runner = web.AppRunner(
        service.app(),
        handle_signals=False,
        handler_cancellation=True,  # a waiter that left stops waiting; its download goes on
        keepalive_timeout=IDLE_TIMEOUT,
        access_log=log,
        access_log_format=ACCESS_LOG_FORMAT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:
            raise InvalidRequest(
                f"cannot listen on {host}:{port} ({exc}); pick another --host or --port (0: any)"
            ) from None
        url = base_url(runner.addresses[0], "https" if tls else "http")
        print(f"asyncfetch serve: {url} cache {service.cache_dir}", flush=True)
        await _until_signalled()
        log.info("stopping")
    finally:
        await runner.cleanup()


async def _until_signalled() -> None:
    """Return once SIGINT or SIGTERM arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:
        loop.add_signal_handler(number, stop.set)
    try:
        await stop.wait()
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
