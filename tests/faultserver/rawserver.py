"""A loopback HTTP server that writes exact bytes, for answers aiohttp's server will not send:
interim (1xx) heads, bare-LF line ends, non-ASCII digits, heads sent a byte at a time.

`RawServer` listens on 127.0.0.1 in a daemon thread and gives each connection a thread that
reads one request head and asks the server's ``answer`` function what to send back: an
iterable of ``bytes`` (written as they are) and ``float`` (seconds to wait). Then it closes the
connection. `serve_file` builds such answers for a file, with the faults tests need::

    with RawServer(serve_file(payload, eol=b"\\n")) as server:
        asyncfetch.download(server.url(), dest)

Every request is logged as a `RawRequest` (`RawServer.requests`), with the bytes written.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

REQUEST_LIMIT = 64 << 10
ACCEPT_POLL_S = 0.05
JOIN_TIMEOUT_S = 5.0
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class RawRequest:
    """One request as the server read it, and how many bytes its answer wrote."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-case
    bytes_sent: int = 0

    @property
    def range(self) -> tuple[int, int | None] | None:
        """A ``Range: bytes=a-b`` or ``bytes=a-`` as (a, b or None); None otherwise."""
        match = _RANGE.fullmatch(self.headers.get("range", "").strip())
        if match is None:
            return None
        return int(match[1]), int(match[2]) if match[2] else None


Answer = Callable[[RawRequest], Iterable[bytes | float]]


class RawServer:
    """A started-on-enter loopback server answering each request with ``answer``'s bytes
    (which a test may replace between requests)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(ACCEPT_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.requests: list[RawRequest] = []

    def url(self, name: str = "f") -> str:
        """The URL of ``name`` on this server."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def gets(self) -> list[RawRequest]:
        """The GET requests so far."""
        return [r for r in self.requests if r.method == "GET"]

    def __enter__(self) -> RawServer:
        self._start(self._accept)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting, cut the open connections, and wait (bounded) for every thread."""
        self._stopping.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
        self._listener.close()

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                self._open.add(sock)
            self._start(self._serve, sock)

    def _serve(self, sock: socket.socket) -> None:
        try:
            request = _read_request(sock)
            if request is not None:
                self.requests.append(request)
                self._send(sock, request)
        except OSError:
            pass  # the client went away
        finally:
            with self._lock:
                self._open.discard(sock)
            sock.close()

    def _send(self, sock: socket.socket, request: RawRequest) -> None:
        for item in self.answer(request):
            if self._stopping.is_set():
                return
            if isinstance(item, float):
                self._stopping.wait(item)
            else:
                sock.sendall(item)
                request.bytes_sent += len(item)


def _read_request(sock: socket.socket) -> RawRequest | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > REQUEST_LIMIT:
            return None
        data += chunk
    line, *lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, path, _ = line.split(" ", 2)
    headers = {}
    for header in lines:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawRequest(method, path, headers)


@dataclass(frozen=True)
class FileAnswers:
    """The answers of a server that has one file: HEAD and GET, ranges honoured.

    Args:
        data: the file.
        eol: the line end of the heads (``b"\\n"``: bare LF).
        interim: heads sent before each answer's own (``b"HTTP/1.1 100 Continue\\r\\n\\r\\n"``).
        extra: more header lines for every answer (``"Retry-After: \\xb9"``), latin-1.
        status: an answer with this status and no body instead of the file, when set.
        most: the longest body of one ranged answer (a server that answers ranges shorter).
        ranges: whether Range is honoured (else 200 with the whole file, no Accept-Ranges).
        head_pause: seconds between the bytes of a GET's head (a trickled head).
        rate: bytes per second of a GET's body, when set.
        length: the Content-Length every answer says, when set (``"\xb2"``).
    """

    data: bytes
    eol: bytes = b"\r\n"
    interim: Sequence[bytes] = ()
    extra: Sequence[str] = ()
    status: int | None = None
    most: int | None = None
    ranges: bool = True
    head_pause: float = 0.0
    rate: int | None = None
    length: str | None = None
    etag: str = field(default='"raw-1"')

    def __call__(self, request: RawRequest) -> Iterator[bytes | float]:
        """What to send for ``request``."""
        status, headers, body = self._plan(request)
        if self.length is not None:
            headers = [h for h in headers if not h.startswith("Content-Length:")]
            headers.append(f"Content-Length: {self.length}")
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Other')}", *headers, *self.extra]
        head = self.eol.join(line.encode("latin-1") for line in lines) + self.eol * 2
        yield from self.interim
        if self.head_pause and request.method == "GET":
            for i in range(len(head)):
                yield head[i : i + 1]
                yield self.head_pause
        else:
            yield head
        if request.method == "GET":
            yield from _paced(body, self.rate)

    def _plan(self, request: RawRequest) -> tuple[int, list[str], bytes]:
        size = len(self.data)
        common = [f"ETag: {self.etag}", "Connection: close"]
        if self.ranges:
            common.append("Accept-Ranges: bytes")
        if self.status is not None:
            return self.status, [*common, "Content-Length: 0"], b""
        asked = request.range if self.ranges else None
        if asked is None or request.method == "HEAD":
            return 200, [*common, f"Content-Length: {size}"], self.data
        start, end = asked[0], min(size - 1 if asked[1] is None else asked[1], size - 1)
        if self.most is not None:
            end = min(end, start + self.most - 1)
        body = self.data[start : end + 1]
        return 206, [
            *common, f"Content-Length: {len(body)}", f"Content-Range: bytes {start}-{end}/{size}"
        ], body  # fmt: skip


def serve_file(data: bytes, **options: object) -> FileAnswers:
    """Answers for one file (see :class:`FileAnswers` for the options)."""
    return FileAnswers(data, **options)  # type: ignore[arg-type]


def _paced(body: bytes, rate: int | None) -> Iterator[bytes | float]:
    if not rate:
        yield body
        return
    step = max(1, rate // 20)
    for i in range(0, len(body), step):
        yield body[i : i + step]
        yield step / rate


_REASONS = {200: "OK", 206: "Partial Content", 416: "Range Not Satisfiable", 503: "Busy"}
