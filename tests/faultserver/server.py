"""The server: an aiohttp app on its own loop in a daemon thread, serving in-memory files."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import email.utils
import hashlib
import random
import socket
import struct
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, urlencode

from aiohttp import web

from . import tls
from .bodies import (
    File,
    Plan,
    Unsatisfiable,
    accepts_gzip,
    body_pieces,
    digest_headers,
    parse_range,
    shift,
    with_last,
)
from .faults import FAULT_PARAMS, STALL_LIMIT_S, Faults, RequestRecord

CHUNK_SIZE = 64 * 1024
RESET_FLUSH_LIMIT_S = 2.0  # how long a reset waits for the sent bytes to leave the kernel
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_BASE_DATE = 1_704_067_200  # Mon, 01 Jan 2024 00:00:00 GMT; + one day per replace_file


def make_payload(size: int, seed: int = 0) -> bytes:
    """Return `size` deterministic pseudo-random bytes (fast: ~1 GB/s)."""
    return random.Random(seed).randbytes(size)


def _unsent_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes still queued in user space or in the kernel send queue (Linux), best effort."""
    pending = 0
    if isinstance(transport, asyncio.WriteTransport):
        pending = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sys.platform == "linux" and sock is not None:
        import fcntl
        import termios

        with contextlib.suppress(OSError):
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
            pending += struct.unpack("i", raw)[0]
    return pending


class FaultServer:
    """Loopback HTTP file server with per-request fault injection (see the module docstring).

    Args:
        host: address to bind; the port is chosen by the OS.
        chunk_size: body bytes per write.
        tls: speak HTTPS, with a certificate from the test CA (:attr:`ca_path`).
    """

    def __init__(
        self, *, host: str = "127.0.0.1", chunk_size: int = CHUNK_SIZE, tls: bool = False
    ) -> None:
        self._host = host
        self._chunk_size = chunk_size
        self._tls = tls
        self._handshakes = 0
        self._lock = threading.Lock()
        self._files: dict[str, File] = {}
        self._generation: dict[str, int] = {}
        self._records: list[RequestRecord] = []
        self._fired: dict[tuple[str, str], int] = {}
        self._in_flight = 0
        self._max_concurrent = 0
        self._connection_ids: weakref.WeakKeyDictionary[asyncio.BaseTransport, int] = (
            weakref.WeakKeyDictionary()
        )
        self._connections_seen = 0
        self._signatures = 0  # fresh signatures handed out by sign=1
        self._live: dict[int, asyncio.Transport] = {}  # id(record) -> its connection
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._start_error: BaseException | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultServer:
        """Start serving on a daemon thread; return self. Raises RuntimeError on failure."""
        if self._thread is not None:
            raise RuntimeError("FaultServer already started")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="FaultServer", daemon=True
        )
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S) or self._start_error is not None:
            self.stop()
            raise RuntimeError("FaultServer failed to start") from self._start_error
        return self

    def stop(self) -> None:
        """Close every connection (stalled ones too), stop the loop and join the thread.

        Idempotent; every wait is bounded.
        """
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive() and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                future.result(STOP_TIMEOUT_S)
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT_S)
        self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._setup())
        except BaseException as exc:  # reported by start(), not raised in the thread
            self._start_error = exc
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            self._close_loop(loop)

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=STOP_TIMEOUT_S))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()

    async def _setup(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_get("/files/{name:.+}", self._handle)  # and HEAD
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        context = tls.server_context(self._count_handshake) if self._tls else None
        site = web.TCPSite(self._runner, self._host, 0, ssl_context=context)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        assert self._stopping is not None
        assert self._runner is not None
        self._stopping.set()
        with self._lock:
            # over TLS the idle keep-alive ones too: closed gently, each would wait for a
            # close_notify that the stopped loop never reads, and leak its socket
            doomed = [*self._live.values(), *(self._connection_ids if self._tls else ())]
        for transport in doomed:
            transport.abort()
        await self._runner.cleanup()

    # ---- files and URLs ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with ``tls``); RuntimeError before start()."""
        if self._port is None:
            raise RuntimeError("FaultServer not started")
        return f"{self.scheme}://{self._host}:{self._port}"

    @property
    def scheme(self) -> str:
        """``https`` for a TLS server, else ``http``."""
        return "https" if self._tls else "http"

    @property
    def ca_path(self) -> Path:
        """The PEM file of the CA that signed a TLS server's certificate: what a client must
        trust (``cacert=``, ``REQUESTS_CA_BUNDLE``, ...). The same CA for every server of the
        process. Raises RuntimeError for a plain-http server."""
        if not self._tls:
            raise RuntimeError("a plain-http FaultServer has no certificate")
        return tls.ca_path()

    @property
    def handshakes(self) -> int:
        """TLS handshakes begun (ClientHellos received), failed ones included."""
        return self._handshakes

    def _count_handshake(self) -> None:
        with self._lock:
            self._handshakes += 1

    def add_file(
        self, name: str, data: bytes, *, etag: str | None = None, last_modified: str | None = None
    ) -> str:
        """Serve `data` at /files/NAME and return its URL (no faults).

        Defaults: ETag is a quoted SHA-1 prefix of the content, Last-Modified a fixed date.
        """
        with self._lock:
            generation = self._generation.get(name, -1) + 1
            self._generation[name] = generation
            if etag is None:
                digest = hashlib.sha1(data).hexdigest()[:16]
                etag = f'"{digest}-{generation}"' if generation else f'"{digest}"'
            if last_modified is None:
                last_modified = email.utils.formatdate(_BASE_DATE + generation * 86400, usegmt=True)
            self._files[name] = File(bytes(data), etag, last_modified)
        return self.url(name)

    def replace_file(
        self, name: str, data: bytes, *, etag: str | None = None, last_modified: str | None = None
    ) -> str:
        """Change the content of NAME as if it changed upstream: new ETag and Last-Modified.

        Responses already under way keep sending the old content. Raises KeyError if absent.
        """
        with self._lock:
            if name not in self._files:
                raise KeyError(name)
        return self.add_file(name, data, etag=etag, last_modified=last_modified)

    def remove_file(self, name: str) -> None:
        """Stop serving NAME (later requests get 404)."""
        with self._lock:
            self._files.pop(name, None)

    def file_info(self, name: str) -> tuple[int, str, str]:
        """Return (size, ETag, Last-Modified) that NAME is served with now."""
        with self._lock:
            file = self._files[name]
        return len(file.data), file.etag, file.last_modified

    def url(self, name: str, **faults: object) -> str:
        """Return the URL of NAME with fault query parameters (see FAULT_PARAMS).

        True becomes "1"; None and False are left out; a list or tuple repeats the parameter.
        Raises ValueError for an unknown fault name.
        """
        unknown = sorted(set(faults) - set(FAULT_PARAMS))
        if unknown:
            raise ValueError(f"unknown fault parameter(s) {unknown}; known: {list(FAULT_PARAMS)}")
        query: list[tuple[str, str]] = []
        for key, value in faults.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for item in values:
                if item is None or item is False:
                    continue
                query.append((key, "1" if item is True else str(item)))
        url = f"{self.base_url}/files/{quote(name)}"
        return f"{url}?{urlencode(query)}" if query else url

    # ---- log and counters -------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first (records of running responses may change)."""
        with self._lock:
            return list(self._records)

    def gets(self, name: str) -> list[RequestRecord]:
        """GET records for file NAME."""
        return [r for r in self.requests if r.method == "GET" and r.name == name]

    def bytes_served(self, name: str | None = None) -> int:
        """Sum of bytes_sent over the log, for file NAME or for all files."""
        return sum(r.bytes_sent for r in self.requests if name is None or r.name == name)

    def reset_log(self) -> None:
        """Forget all request records."""
        with self._lock:
            self._records.clear()

    @property
    def in_flight(self) -> int:
        """Requests being answered right now."""
        return self._in_flight

    @property
    def max_concurrent(self) -> int:
        """Peak number of simultaneous in-flight requests since start or reset_counters()."""
        return self._max_concurrent

    def reset_counters(self) -> None:
        """Reset max_concurrent and the times=K fault counters."""
        with self._lock:
            self._max_concurrent = self._in_flight
            self._fired.clear()

    def _fire(self, kind: str, record: RequestRecord, faults: Faults) -> bool:
        """Count one firing of fault KIND for this file; False once `times` is used up."""
        with self._lock:
            key = (kind, record.name)
            if faults.times is not None and self._fired.get(key, 0) >= faults.times:
                return False
            self._fired[key] = self._fired.get(key, 0) + 1
        record.faults.append(kind)
        return True

    def _connection_id(self, transport: asyncio.BaseTransport) -> int:
        with self._lock:
            number = self._connection_ids.get(transport)
            if number is None:
                self._connections_seen += 1
                number = self._connection_ids[transport] = self._connections_seen
            return number

    def _open_record(self, request: web.Request) -> RequestRecord:
        transport = request.transport
        assert transport is not None
        peer = transport.get_extra_info("peername") or ("", 0)
        record = RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            range=None,
            headers=dict(request.headers),
            client_port=int(peer[1]),
            connection=self._connection_id(transport),
            timestamp=time.monotonic(),
        )
        with self._lock:
            self._records.append(record)
            self._in_flight += 1
            self._max_concurrent = max(self._max_concurrent, self._in_flight)
            self._live[id(record)] = transport
        return record

    def _finish(self, record: RequestRecord, outcome: str | None = None) -> None:
        """Mark RECORD complete, before its last byte goes out where possible.

        So a client that has read a whole response always finds the record final. Counts the
        request out of in_flight once; a later call may still correct the outcome.
        """
        with self._lock:
            if outcome is not None:
                record.outcome = outcome
            if record.finished is not None:
                return
            if record.outcome == "pending":
                record.outcome = "ok"
            record.finished = time.monotonic()
            self._in_flight -= 1
            self._live.pop(id(record), None)

    # ---- request handling -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = self._open_record(request)
        try:
            response = await self._respond(request, record)
            if record.status is None:
                record.status = response.status
            return response
        finally:
            self._finish(record)

    async def _respond(self, request: web.Request, record: RequestRecord) -> web.StreamResponse:
        try:
            faults = Faults.parse(request)
        except ValueError as exc:
            return web.Response(status=400, text=f"{exc}\n")
        delay = faults.delay and self._fire("delay", record, faults)
        if delay and not await self._pause(faults.delay):
            record.outcome = "stopped"
            return web.Response(status=503)
        if not self._authorized(request, faults) and self._fire("auth", record, faults):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="files"'})
        signed = self._signed(request, record, faults)
        if signed is not None:
            return signed
        redirect = self._redirect(request, record, faults)
        if redirect is not None:
            return redirect
        refused = faults.refuse_header
        if refused and refused in request.headers and self._fire("refuse_header", record, faults):
            return web.Response(status=403, text=f"{refused} was not signed\n")
        with self._lock:
            file = self._files.get(record.name)
        if file is None:
            return web.Response(status=404, text=f"no file {record.name!r}\n")
        is_head = request.method == "HEAD"
        if not is_head and faults.changed is not None and self._fire("changed", record, faults):
            file = self._changed(file, faults.changed)
        if is_head and faults.no_head and self._fire("no_head", record, faults):
            return web.Response(status=405, headers={"Allow": "GET"})
        if faults.status is not None and self._fire("status", record, faults):
            return self._status_response(faults)
        if is_head and faults.head_lies and self._fire("head_lies", record, faults):
            return self._lying_head(file)
        plan = self._plan(request, record, file, faults)
        if isinstance(plan, web.Response):
            return plan
        if is_head:
            return self._stream_response(plan)  # aiohttp sends it after _finish()
        return await self._send(request, record, file, faults, plan)

    def _signed(
        self, request: web.Request, record: RequestRecord, faults: Faults
    ) -> web.Response | None:
        """``sign``: a redirect to a freshly signed URL; an expired signature: 403."""
        if faults.sign:
            record.faults.append("sign")
            with self._lock:
                self._signatures += 1
                fresh = f"FRESHSIG{self._signatures}"
            query = request.url.query.copy()
            del query["sign"]
            query["X-Amz-Signature"] = fresh
            return web.Response(
                status=302, headers={"Location": str(request.url.with_query(query))}
            )
        if faults.expires_after is None:
            return None
        spent = sum(
            r.bytes_sent
            for r in self.requests
            if r.name == record.name and r.query.get("X-Amz-Signature") == faults.signature
        )
        if spent < faults.expires_after:
            return None
        record.faults.append("expired")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            "<Message>Request has expired</Message><Expires>2024-01-01T00:00:00Z</Expires>"
            "</Error>"
        )
        return web.Response(status=403, text=body, content_type="application/xml")

    def _redirect(
        self, request: web.Request, record: RequestRecord, faults: Faults
    ) -> web.Response | None:
        if faults.redirect_to and self._fire("redirect_to", record, faults):
            headers = {"Location": faults.redirect_to}
            with self._lock:
                file = self._files.get(record.name)
            data = file.data if file is not None else b""
            headers.update(digest_headers(faults.digest, data, faults.digest_of))
            return web.Response(status=302, headers=headers)
        if faults.redirect_loop and self._fire("redirect_loop", record, faults):
            return web.Response(status=302, headers={"Location": str(request.url)})
        if faults.redirect > 0:
            record.faults.append("redirect")
            query = request.url.query.copy()
            if faults.redirect > 1:
                query["redirect"] = str(faults.redirect - 1)
            else:
                del query["redirect"]
            location = request.url.with_query(query)
            return web.Response(status=302, headers={"Location": str(location)})
        return None

    @staticmethod
    def _authorized(request: web.Request, faults: Faults) -> bool:
        """True if no ``auth`` is asked, or the request sends exactly its credentials."""
        if faults.auth is None:
            return True
        expected = "Basic " + base64.b64encode(faults.auth.encode("latin-1")).decode("ascii")
        return request.headers.get("Authorization") == expected

    @staticmethod
    def _status_response(faults: Faults) -> web.Response:
        assert faults.status is not None
        headers = {"Retry-After": faults.retry_after} if faults.retry_after is not None else {}
        empty = faults.status < 200 or faults.status in (204, 304)
        text = None if empty else f"fault: status {faults.status}\n"
        return web.Response(status=faults.status, text=text, headers=headers)

    @staticmethod
    def _lying_head(file: File) -> web.Response:
        headers = {
            "Content-Length": str(len(file.data) + 1000),
            "ETag": file.etag,
            "Last-Modified": file.last_modified,
            "Content-Type": "application/octet-stream",
        }
        return web.Response(status=200, headers=headers)

    @staticmethod
    def _changed(file: File, growth: int) -> File:
        """Other content, ``growth`` bytes longer, under the same validators (a file changed
        upstream by a server that does not update them)."""
        size = max(len(file.data) + growth, 0)
        return File(make_payload(size, seed=len(file.data) + 7), file.etag, file.last_modified)

    def _plan(
        self, request: web.Request, record: RequestRecord, file: File, faults: Faults
    ) -> Plan | web.Response:
        """Decide status, headers and covered bytes, applying the range-related faults."""
        size = len(file.data)
        headers = {"ETag": file.etag, "Last-Modified": file.last_modified}
        headers["Content-Type"] = "application/octet-stream"
        headers.update(digest_headers(faults.digest, file.data, faults.digest_of))
        try:
            asked = parse_range(request.headers.get("Range"), size)
        except Unsatisfiable:
            asked, unsatisfiable = None, True
        else:
            unsatisfiable = False
        record.range = asked
        no_length = faults.no_length and self._fire("no_length", record, faults)
        no_ranges = no_length or (faults.no_ranges and self._fire("no_ranges", record, faults))
        if not no_ranges:
            headers["Accept-Ranges"] = "bytes"
        wanted = None
        ranged = asked is not None or unsatisfiable
        if ranged and not no_ranges and self._if_range_ok(request, file):
            if faults.ignore_range and self._fire("ignore_range", record, faults):
                pass  # answer 200 with the whole file
            elif asked is None:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            elif faults.wrong_range and self._fire("wrong_range", record, faults):
                wanted = shift(*asked, size)
            else:
                wanted = asked
        status, start, end = 200, 0, size
        if wanted is not None:
            status, start, end = 206, wanted[0], wanted[1] + 1
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        plan = Plan(status, headers, start, end, None if no_length else end - start)
        accept = request.headers.get("Accept-Encoding", "")
        forced = faults.force_gzip and self._fire("force_gzip", record, faults)
        if forced or (faults.gzip and accepts_gzip(accept) and self._fire("gzip", record, faults)):
            plan.gzip, plan.length = True, None
            headers["Content-Encoding"] = "gzip"
        return plan

    @staticmethod
    def _if_range_ok(request: web.Request, file: File) -> bool:
        """True if there is no If-Range or it matches the current validator (strongly)."""
        validator = request.headers.get("If-Range")
        if validator is None:
            return True
        if validator.startswith(('"', "W/")):
            return not validator.startswith("W/") and validator == file.etag
        return validator == file.last_modified

    @staticmethod
    def _stream_response(plan: Plan) -> web.StreamResponse:
        response = web.StreamResponse(status=plan.status, headers=plan.headers)
        if plan.length is not None:
            response.content_length = plan.length
        else:
            response.enable_chunked_encoding()
        return response

    async def _send(
        self,
        request: web.Request,
        record: RequestRecord,
        file: File,
        faults: Faults,
        plan: Plan,
    ) -> web.StreamResponse:
        """Stream the planned body, applying flip_byte, rate and the cut faults."""
        record.status = plan.status
        flips = tuple(
            offset
            for offset in faults.flip_byte
            if plan.start <= offset < plan.end and self._fire("flip_byte", record, faults)
        )
        cut = self._cut(record, faults, plan.end - plan.start)
        chunk = self._chunk_size
        rate = faults.rate if faults.rate and self._fire("rate", record, faults) else None
        if rate:  # about 20 writes a second
            chunk = max(1, min(chunk, rate // 20))
        response = self._stream_response(plan)
        if faults.close and self._fire("close", record, faults):
            response.force_close()  # Connection: close, as an S3 emulator on every answer
        pieces = body_pieces(file.data, plan, flips, chunk)
        try:
            await response.prepare(request)
            if not await self._write_body(response, pieces, cut, rate, record, faults.burst):
                self._finish(record, "stopped")
                self._abort(request)
            elif cut is not None and record.bytes_sent == cut[1]:
                await self._apply_cut(request, record, cut[0])
            else:
                self._finish(record)
                await response.write_eof()
        except ConnectionError:
            self._finish(record, "client_gone")
        return response

    def _cut(self, record: RequestRecord, faults: Faults, length: int) -> tuple[str, int] | None:
        """The earliest of reset_after / truncate_after / stall_after inside the body, if any."""
        candidates = [
            (limit, kind)
            for kind, limit in (
                ("reset", faults.reset_after),
                ("truncate", faults.truncate_after),
                ("stall", faults.stall_after),
            )
            if limit is not None and limit < length
        ]
        for limit, kind in sorted(candidates, key=lambda item: item[0]):
            if self._fire(f"{kind}_after", record, faults):
                return kind, limit
        return None

    async def _write_body(
        self,
        response: web.StreamResponse,
        pieces: Iterator[bytes | bytearray | memoryview],
        cut: tuple[str, int] | None,
        rate: int | None,
        record: RequestRecord,
        burst: int = 0,
    ) -> bool:
        """Write pieces up to the cut, the first ``burst`` bytes unthrottled; False if the
        server began stopping meanwhile."""
        budget = cut[1] if cut is not None else None
        loop = asyncio.get_running_loop()
        began = loop.time()
        for piece, is_last in with_last(pieces):
            if budget is not None:
                piece = piece[:budget]
                budget -= len(piece)
            throttled = max(record.bytes_sent - burst, 0)
            due = began + throttled / rate - loop.time() if rate else 0.0
            if due > 0 and not await self._pause(due):
                return False
            if is_last and budget != 0:
                self._finish(record)  # the client may be done as soon as this piece lands
            record.bytes_sent += len(piece)
            try:
                await response.write(piece)
            except ConnectionError:
                record.bytes_sent -= len(piece)
                raise
            if budget == 0:
                break
        return True

    async def _apply_cut(self, request: web.Request, record: RequestRecord, kind: str) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            self._finish(record, "client_gone")
        elif kind == "truncate":
            self._finish(record, "truncated")
            transport.close()  # flushes what was written, then FIN
        elif kind == "stall":
            record.outcome = "stalled"  # visible, not finished, while it stalls
            await self._stall(request)
            self._finish(record)
            self._abort(request)
        else:
            await self._wait_flushed(transport)
            self._finish(record, "reset")
            self._abort(request)

    async def _stall(self, request: web.Request) -> None:
        """Send nothing until the client goes away, the server stops, or STALL_LIMIT_S pass."""
        deadline = asyncio.get_running_loop().time() + STALL_LIMIT_S
        while asyncio.get_running_loop().time() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing() or not await self._pause(0.05):
                return

    async def _wait_flushed(self, transport: asyncio.BaseTransport) -> None:
        """Wait (bounded) until the bytes written so far have left this end of the socket."""
        deadline = asyncio.get_running_loop().time() + RESET_FLUSH_LIMIT_S
        while asyncio.get_running_loop().time() < deadline and not transport.is_closing():
            if _unsent_bytes(transport) == 0 or not await self._pause(0.002):
                return

    @staticmethod
    def _abort(request: web.Request) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), like a crashed peer."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to SECONDS; False (early) when the server is stopping."""
        assert self._stopping is not None
        if self._stopping.is_set():
            return False
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            return True
        return False
