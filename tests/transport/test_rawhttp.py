"""The fast receive path (_rawhttp): keep-alive, fallbacks, errors, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

import asyncfetch
from asyncfetch import ConnectionFailed, FetchTimeout, HTTPStatusError, ProtocolError, Timeouts
from asyncfetch._config import ProxyEnv
from asyncfetch._models import ByteRange
from asyncfetch._options import Options
from asyncfetch._transport.aiobody import AioBody
from asyncfetch._transport.answers import RangeNotHonoured
from asyncfetch._transport.client import Transport
from asyncfetch._transport.rawhttp import RawBody, RawClient, Span, parse_head
from tests.faultserver import FaultServer
from tests.faultserver.tls import ca_path
from tests.helpers import (
    Sleeps,
    basic,
    no_wait,
    over_http_and_https,  # noqa: F401 (the scheme fixture)
    with_credentials,
)

KiB = 1024
CHUNK = 256 * KiB
HEADERS = {"Accept-Encoding": "identity"}
DEADLINE = 10.0


def asking(byte_range: ByteRange | None) -> dict[str, str]:
    """Request headers for ``byte_range`` (Transport.open adds the same)."""
    return {**HEADERS, "Range": byte_range.header()} if byte_range else HEADERS


async def read_all(body: RawBody) -> bytes:
    """Every byte the body hands over."""
    got = bytearray()
    while batch := await body.next_batch():
        for view in batch:
            got += view
    return bytes(got)


def trusting(scheme: str) -> ssl.SSLContext | None:
    """A context that trusts the test CA for https (None: plain http only)."""
    return ssl.create_default_context(cafile=ca_path()) if scheme == "https" else None


@pytest.fixture
async def client(scheme: str) -> AsyncIterator[RawClient]:
    raw = RawClient(Timeouts(connect=2, read=0.3), bufsize=64 * KiB, ssl_context=trusting(scheme))
    try:
        yield raw
    finally:
        await raw.aclose()


async def test_keep_alive_connections_carry_many_ranges(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    url = server.add_file("m.bin", payload)
    await asyncfetch.fetch(url, tmp_path / "m.bin", chunk_size=CHUNK, connections=1)
    gets = [r for r in server.gets("m.bin") if r.method == "GET"]
    assert len(gets) == -(-len(payload) // CHUNK)
    assert len({r.connection for r in gets}) == 1  # one connection carried every range
    assert (tmp_path / "m.bin").read_bytes() == payload


async def test_body_bytes_arrive_exactly(
    server: FaultServer, payload: bytes, client: RawClient
) -> None:
    url = server.add_file("m.bin", payload)
    window = Span(pos=1000, stop=300_000)
    wanted = ByteRange(1000, 300_000)
    body = await client.open(url, asking(wanted), wanted, window)
    assert body is not None
    got = bytearray()
    while batch := await body.next_batch():
        assert len(batch[0]) <= 64 * KiB  # never more than one buffer
        got += batch[0]
        window.pos += len(batch[0])
    client.finish(body.connection)
    assert bytes(got) == payload[1000:300_000]
    assert window.reached == 300_000


async def test_lowered_stop_ends_the_body_and_drops_the_connection(
    server: FaultServer, payload: bytes, client: RawClient
) -> None:
    url = server.add_file("m.bin", payload)
    window = Span(pos=0, stop=len(payload))
    body = await client.open(server.url("m.bin", rate=2 << 20), HEADERS, None, window)
    assert body is not None
    first = bytes((await body.next_batch())[0])
    window.pos = len(first)
    window.stop = len(first) + 1000  # a thief took the rest
    rest = await read_all(body)
    body.abandon()
    client.finish(body.connection)
    assert first + rest == payload[: len(first) + 1000]
    again = await client.open(url, asking(ByteRange(0, 10)), ByteRange(0, 10), Span(stop=10))
    assert again is not None
    assert await read_all(again) == payload[:10]
    client.finish(again.connection)
    connections = [r.connection for r in server.gets("m.bin")]
    assert connections[0] != connections[1]  # the abandoned connection was not reused


async def test_chunked_answer_is_left_to_aiohttp(server: FaultServer, payload: bytes) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", no_length=1)
    async with (
        Transport(Options(connections=1)) as transport,
        transport.open(url, None, window=Span()) as body,
    ):
        assert isinstance(body, AioBody)
        assert await body.read()
        async with transport.open(url, None, window=Span()) as body:
            assert isinstance(body, AioBody)  # remembered: no second raw try
    assert len(server.gets("m.bin")) == 3  # one raw try, then aiohttp twice


async def test_http_and_https_take_the_fast_path(server: FaultServer, payload: bytes) -> None:
    url = server.add_file("m.bin", payload)
    async with (
        Transport(Options(connections=1)) as transport,
        transport.open(url, ByteRange(0, 10), window=Span(stop=10)) as body,
    ):
        assert isinstance(body, RawBody)
        assert await body.read() == payload[:10]


async def test_credentials_in_the_url_go_as_basic_auth_on_the_fast_path(
    server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = with_credentials(server.url("m.bin", auth="user:pa ss"), "user:pa%20ss")
    async with (
        Transport(Options(connections=1)) as transport,
        transport.open(url, ByteRange(0, 10), window=Span(stop=10)) as body,
    ):
        assert isinstance(body, RawBody)
        assert await body.read() == payload[:10]
    [record] = server.gets("m.bin")
    assert record.headers["Authorization"] == basic("user:pa ss")
    assert record.headers["Host"] == server.base_url.split("://")[1]


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        ({"wrong_range": 1}, ProtocolError),
        ({"ignore_range": 1}, RangeNotHonoured),
        ({"status": 503, "retry_after": "7"}, HTTPStatusError),
    ],
)
async def test_unfit_answers_raise_what_aiohttp_raises(
    server: FaultServer,
    payload: bytes,
    client: RawClient,
    faults: dict[str, object],
    error: type[Exception],
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", **faults)
    wanted = ByteRange(100, 200)
    with pytest.raises(error) as caught:
        await client.open(url, asking(wanted), wanted, Span(pos=100, stop=200))
    assert caught.value.url == url  # type: ignore[attr-defined]
    if isinstance(caught.value, HTTPStatusError):
        assert caught.value.status == 503
        assert caught.value.retry_after == 7.0


async def test_stall_hands_over_what_came_then_times_out(
    server: FaultServer, payload: bytes, client: RawClient
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", stall_after=5000)
    body = await client.open(url, HEADERS, None, Span())
    assert body is not None
    started = time.monotonic()
    assert len((await body.next_batch())[0]) == 5000  # received bytes come first
    with pytest.raises(FetchTimeout, match="timed out"):
        await body.next_batch()
    assert time.monotonic() - started < 2.0
    client.finish(body.connection)


@pytest.mark.parametrize("reused", [False, True])
async def test_silence_before_the_head_is_a_timeout(client: RawClient, reused: bool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        if reused:
            await answer(reader, writer, "")
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # never answers; returns when the client hangs up

    whole = ByteRange(0, len(DATA))
    async with Scripted(handler) as url:
        if reused:
            assert await fetch_ranges(client, url, [whole]) == DATA
        with pytest.raises(FetchTimeout, match="no data for 0.3 s before answering"):
            await client.open(url, asking(whole), whole, Span(pos=0, stop=len(DATA)))


async def test_truncated_body_is_truncated_body(
    server: FaultServer, payload: bytes, client: RawClient
) -> None:
    server.add_file("m.bin", payload)
    body = await client.open(server.url("m.bin", truncate_after=7000), HEADERS, None, Span())
    assert body is not None
    assert len((await body.next_batch())[0]) == 7000
    with pytest.raises(asyncfetch.TruncatedBody):
        await body.next_batch()
    client.finish(body.connection)


async def test_refused_connection_is_connection_failed(client: RawClient) -> None:
    with FaultServer() as gone:
        url = gone.url("m.bin")
    with pytest.raises(ConnectionFailed):
        await client.open(url, HEADERS, None, Span())


async def test_cancellation_closes_the_socket_at_once(
    server: FaultServer, payload: bytes, tmp_path: Path
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", rate=100_000)
    fetching = asyncio.ensure_future(asyncfetch.fetch(url, tmp_path / "m.bin", connections=2))
    await until(lambda: server.in_flight > 0)
    fetching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetching
    await until(lambda: server.in_flight == 0)  # the server saw the sockets close
    assert all(r.outcome != "pending" for r in server.requests)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# a scripted loopback server for what the FaultServer does not do ------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Scripted:
    """A tiny HTTP server on 127.0.0.1 whose handler gets each connection and its number."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/f"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._open:  # since Python 3.12.1, wait_closed waits for every handler
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._open.add(writer)
        try:
            await self.handler(reader, writer, self.connections)
        finally:
            self._open.discard(writer)
            writer.close()


DATA = bytes(range(256)) * 1280  # 320 KiB: five of the smallest chunks (64 KiB)


async def answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, extra: str, head: bytes = b""
) -> bool:
    """Answer one ranged GET from DATA; False when the client sent nothing more."""
    try:
        head = head or await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    line = next(x for x in head.decode().split("\r\n") if x.lower().startswith("range:"))
    start, end = (int(n) for n in line.split("=")[1].split("-"))
    body = DATA[start : end + 1]
    writer.write(
        f"HTTP/1.1 206 Partial Content\r\nContent-Length: {len(body)}\r\n"
        f"Content-Range: bytes {start}-{end}/{len(DATA)}\r\n{extra}\r\n".encode()
        + body
    )
    await writer.drain()
    return True


def head_answer(extra: str) -> bytes:
    """A HEAD answer for DATA: its size, ranges accepted, and ``extra`` header lines."""
    return (
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(DATA)}\r\nAccept-Ranges: bytes\r\n{extra}\r\n"
    ).encode()


def ranged(n: int) -> list[ByteRange]:
    step = len(DATA) // n
    return [ByteRange(i * step, len(DATA) if i == n - 1 else (i + 1) * step) for i in range(n)]


async def fetch_ranges(client: RawClient, url: str, ranges: list[ByteRange]) -> bytes:
    got = b""
    for r in ranges:
        body = await client.open(url, asking(r), r, Span(pos=r.start, stop=r.end))
        assert body is not None
        got += await read_all(body)
        client.finish(body.connection)
    return got


async def fetch_scripted(
    handler: Handler, dest: Path, *, chunk_size: int
) -> tuple[asyncfetch.FetchResult, Sleeps]:
    """The engine over one connection to a Scripted server: the result and the retry sleeps it
    asked for (never really slept)."""
    policy, sleeps = no_wait()
    async with Scripted(handler) as url:
        result = await asyncfetch.fetch(
            url, dest, chunk_size=chunk_size, connections=1, retry=policy
        )
    return result, sleeps


async def test_connection_close_answers_get_a_new_connection(client: RawClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await answer(reader, writer, "Connection: close\r\n")

    scripted = Scripted(handler)
    async with scripted as url:
        assert await fetch_ranges(client, url, ranged(3)) == DATA
    assert scripted.connections == 3


async def test_keep_alive_answers_share_one_connection(client: RawClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while await answer(reader, writer, ""):
            pass

    scripted = Scripted(handler)
    async with scripted as url:
        assert await fetch_ranges(client, url, ranged(4)) == DATA
    assert scripted.connections == 1


async def test_idle_connection_closed_by_the_server_is_retried_silently(
    client: RawClient,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await answer(reader, writer, "")
        if n == 1:
            await reader.readuntil(b"\r\n\r\n")  # the next request: close without answering
            return
        while await answer(reader, writer, ""):
            pass

    scripted = Scripted(handler)
    async with scripted as url:
        assert await fetch_ranges(client, url, ranged(3)) == DATA
    assert scripted.connections == 2


async def test_engine_over_a_server_that_drops_idle_connections(tmp_path: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"HEAD"):
            writer.write(head_answer("Connection: close\r\n"))
            return
        await answer(reader, writer, "", head)  # then hang up after one answer, no warning

    result, sleeps = await fetch_scripted(handler, tmp_path / "f", chunk_size=64 * KiB)
    assert (tmp_path / "f").read_bytes() == DATA
    assert result.retries == 0
    assert sleeps.waits == []


def test_parse_head() -> None:
    head = parse_head(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nConnection: Close")
    assert (head.status, head.reason) == (206, "Partial Content")
    assert head.headers["content-length"] == "5"
    assert not head.keep_alive
    assert parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive").keep_alive
    assert not parse_head(b"HTTP/1.0 200 OK").keep_alive
    for bad in (b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 200 OK\r\nno colon"):
        with pytest.raises(ValueError, match="bad"):
            parse_head(bad)


def test_https_through_a_proxy_is_left_to_aiohttps_connect() -> None:
    proxies = ProxyEnv(http="http://127.0.0.1:9", https="http://127.0.0.1:9")
    client = RawClient(Timeouts(), ssl_context=ssl.create_default_context(), proxies=proxies)
    assert client.target("https://example.org/m.bin") is None  # left to aiohttp's CONNECT
    assert client.target("http://example.org/m.bin") is not None  # plain http: the fast path
    assert RawClient(Timeouts()).target("https://127.0.0.1/m.bin") is None  # no context


def test_bytes_arriving_while_both_buffers_are_taken_are_kept(
    server: FaultServer, payload: bytes
) -> None:
    """uvloop may read again after pause_reading; those bytes must not be lost."""
    url = server.add_file("m.bin", payload)

    async def slow_consumer() -> bytes:
        client = RawClient(
            Timeouts(connect=2, read=5), bufsize=64 * KiB, ssl_context=trusting(server.scheme)
        )
        window = Span(stop=len(payload))
        body = await client.open(url, HEADERS, None, window)
        assert body is not None
        got = bytearray()
        while batch := await body.next_batch():
            got += batch[0]
            window.pos += len(batch[0])
            await asyncio.sleep(0.01)  # a slow disk: the other buffer fills meanwhile
        client.finish(body.connection)
        await client.aclose()
        return bytes(got)

    assert uvloop.run(slow_consumer()) == payload


async def test_a_lingering_connection_close_answer_is_not_reused() -> None:
    # the server says "Connection: close" but keeps the socket open: the next range must not
    # be sent on it and wait out the read timeout
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await answer(reader, writer, "Connection: close\r\n")
        await asyncio.sleep(DEADLINE)

    client = RawClient(Timeouts(connect=2, read=DEADLINE))
    scripted = Scripted(handler)
    try:
        async with scripted as url:
            started = time.monotonic()
            assert await fetch_ranges(client, url, ranged(2)) == DATA
            assert time.monotonic() - started < DEADLINE / 2
    finally:
        await client.aclose()
    assert scripted.connections == 2


async def test_a_head_connection_is_not_reused(tmp_path: Path) -> None:
    # some servers send a body after a HEAD answer, late: the first range must not read it
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"HEAD"):
            writer.write(head_answer(""))
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.write(DATA)  # the body a HEAD must not have
            await asyncio.sleep(DEADLINE)
            return
        while await answer(reader, writer, "", head):
            head = b""

    result, _ = await fetch_scripted(handler, tmp_path / "f", chunk_size=128 * KiB)
    assert (tmp_path / "f").read_bytes() == DATA
    assert result.retries == 0
