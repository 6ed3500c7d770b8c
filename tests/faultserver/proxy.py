"""A forward proxy on loopback for the proxy tests, on its own loop in a daemon thread.

Plain-http requests in absolute form are forwarded (one request per client connection, sent
upstream with ``Connection: close``); ``CONNECT host:port`` opens a tunnel. Options:

- ``auth="user:pass"``: a request without ``Proxy-Authorization: Basic`` of exactly these gets
  407 with ``Proxy-Authenticate: Basic realm="proxy"``.
- ``html_401=True``: every request gets a 401 HTML error page as tinyproxy sends one (an
  HTTP/1.0 status line, the page with no blank line after the headers; aiohttp took the page
  for a malformed header).

``requests`` lists each request line received (``CONNECT 127.0.0.1:4321``,
``GET http://127.0.0.1:4321/files/f``), ``authorizations`` each ``Proxy-Authorization`` value.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from types import TracebackType
from urllib.parse import urlsplit

START_TIMEOUT_S = 10.0
PIPE_CHUNK = 1 << 16
TINYPROXY_401 = (
    b"HTTP/1.0 401 Unauthorized\r\n"
    b"Server: tinyproxy/1.11.1\r\n"
    b"Content-Type: text/html\r\n"
    b'<?xml version="1.0" encoding="UTF-8" ?>\n'
    b"<html><head><title>401 Unauthorized</title></head>\n"
    b"<body><h1>Unauthorized</h1><p>The administrator of this proxy has not configured it to "
    b"service requests from your host.</p></body></html>\n"
)


class ForwardProxy:
    """A loopback forward proxy (see the module docstring); use it as a context manager."""

    def __init__(self, *, auth: str | None = None, html_401: bool = False) -> None:
        self._auth = auth
        self._html_401 = html_401
        self.requests: list[str] = []
        self.authorizations: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """The proxy's URL, with the credentials when it asks for some."""
        userinfo = f"{self._auth}@" if self._auth else ""
        return f"http://{userinfo}127.0.0.1:{self.port}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(BaseException):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            await self._answer(head, reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _answer(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = [h.split(":", 1) for h in header_lines if ":" in h]
        self.requests.append(f"{method} {target}")
        given = next((v.strip() for k, v in headers if k.lower() == "proxy-authorization"), "")
        if given:
            self.authorizations.append(given)
        if self._html_401:
            writer.write(TINYPROXY_401)
            return
        if self._auth and given != "Basic " + base64.b64encode(self._auth.encode()).decode():
            page = b"<h1>who are you?</h1>"
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="proxy"\r\nContent-Type: text/html\r\n'
                b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                % len(page)
                + (b"" if method == "HEAD" else page)
            )
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            parts = urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            kept = [f"{k}:{v}" for k, v in headers if k.lower() not in _HOP_HEADERS]
            up_writer.write(
                "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
                .encode("latin-1")
            )  # fmt: skip
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


_HOP_HEADERS = frozenset({"proxy-authorization", "proxy-connection", "connection", "keep-alive"})


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then close ``writer``."""
    try:
        while chunk := await reader.read(PIPE_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
