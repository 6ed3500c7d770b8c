"""The fast path's answer heads (_rawconn): the parser against h11, and the heads servers
really send that it used to misread (interim answers, bare LF, non-ASCII digits)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import asyncfetch
from asyncfetch import ProtocolError, Timeouts
from asyncfetch._models import ByteRange
from asyncfetch._transport.rawconn import Head, find_head
from asyncfetch._transport.rawhttp import RawClient, Span
from tests.faultserver import make_payload
from tests.faultserver.rawserver import RawServer, serve_file
from tests.helpers import no_wait

KiB = 1024
DATA = make_payload(300 * KiB)
BODY = bytes(range(64))  # what follows a generated head

# the head generator ----------------------------------------------------------------------

_EOL = st.sampled_from([b"\r\n", b"\n"])


def _one_line(line: bytes) -> bool:
    """Whether ``line`` stays one line whichever _EOL ends it (a CR before a bare LF would
    end it early, or make a blank line)."""
    return b"\n" not in line and not line.endswith(b"\r")


# a final answer's status: an interim one (1xx but 101) would leave the answer incomplete
_DIGITS = st.integers(101, 599).filter(lambda n: n >= 200 or n == 101).map(lambda n: b"%d" % n)
_STATUS_CODE = st.one_of(
    st.sampled_from([b"200", b"204", b"206", b"304", b"101", b"404", b"503"]),
    _DIGITS,
    st.sampled_from([b"20", b"2000", b"\xb200", b"099", b"000", b"2 0"]),
)
_REASON = st.one_of(
    st.none(),
    st.sampled_from([b"OK", b"Partial Content", b"", b" spaced  out ", b"t\tab", b"caf\xe9"]),
    st.binary(max_size=6).filter(lambda v: _one_line(b"OK " + v)),
)
_VERSION = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1", b"http/1.1", b"HTTP/11"])
_NAME = st.one_of(
    st.sampled_from(
        [
            b"Content-Length",
            b"content-length",
            b"Connection",
            b"ETag",
            b"Content-Range",
            b"Retry-After",
            b"X-A",
            b"x-a",
            b"!#$%&'*+-.^_`|~09az",
        ]
    ),  # fmt: skip
    st.sampled_from([b"", b"bad name", b" X-A", b"X-A ", b"n\x00", b"caf\xe9", b"a:b", b"(x)"]),
)
_LENGTH = st.one_of(
    st.integers(0, 200).map(lambda n: str(n).encode()),
    st.sampled_from(
        [b"5, 5", b"5,6", b"\xb2", b"", b" 7 ", b"+5", b"-1", b"1" * 20, b"1" * 21, b"0x10", b"3,"]
    ),
)
_VALUE = st.one_of(
    st.sampled_from([b"", b"close", b"keep-alive", b"a b", b"a\tb", b"\xb9", b"1, 2", b" x "]),
    st.binary(max_size=8).filter(lambda v: _one_line(b"X:" + v)),
)


@st.composite
def _header_line(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(
            st.sampled_from([b" folded on", b"\tfolded", b"no colon", b"X: a\rb", b"\rX: a"])
        )
    name = draw(_NAME)
    value = draw(_LENGTH if name.lower() == b"content-length" else _VALUE)
    gap = draw(st.sampled_from([b"", b" ", b"\t", b"  "]))
    return name + b":" + gap + value


@st.composite
def _one_head(draw: st.DrawFn, status: st.SearchStrategy[bytes]) -> bytes:
    line = draw(_VERSION) + b" " + draw(status)
    reason = draw(_REASON)
    if reason is not None:
        line += b" " + reason
    lines = [line, *draw(st.lists(_header_line(), max_size=6))]
    return b"".join(part + draw(_EOL) for part in lines) + draw(_EOL)


@st.composite
def answer_heads(draw: st.DrawFn) -> bytes:
    """One or more heads (the first ones perhaps interim), back to back."""
    interim = draw(st.lists(_one_head(st.sampled_from([b"100", b"103", b"199"])), max_size=2))
    return b"".join(interim) + draw(_one_head(_STATUS_CODE))


# the oracle ------------------------------------------------------------------------------

Parsed = tuple[int, str, dict[str, str], int | None] | None  # None: rejected


def with_h11(data: bytes) -> Parsed:
    """(status, reason, headers, body length or None for "until close") as h11 reads the
    answer to a GET; None when h11 rejects it."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data + BODY)
    try:
        event = conn.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = conn.next_event()
        assert isinstance(event, h11.Response), event
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key, text = name.decode("ascii"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return (event.status_code, event.reason.decode("latin-1"), headers,
                _h11_body_length(conn))  # fmt: skip
    except h11.RemoteProtocolError:
        return None


def _h11_body_length(conn: h11.Connection) -> int | None:
    """The body's length as h11 frames it, given BODY and then EOF: None when it is read until
    the connection closes, ``len(BODY) + 1`` when it is longer than BODY."""
    received = 0
    while (event := conn.next_event()) is not h11.NEED_DATA:
        if isinstance(event, h11.EndOfMessage):
            return received
        assert isinstance(event, h11.Data), event
        received += len(event.data)
    assert received == len(BODY), "h11 stopped short of the body it was given"
    conn.receive_data(b"")
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:  # EOF inside a longer Content-Length
        return len(BODY) + 1
    assert isinstance(event, h11.EndOfMessage), event
    return None


def with_ours(data: bytes) -> Parsed:
    """The same, as the fast path reads it."""
    try:
        found = find_head(data + BODY)
    except ValueError:
        return None
    assert found is not None, "a complete head was taken as incomplete"
    head, end = found
    assert data[end:] == b"", "the body would begin elsewhere"
    return head.status, head.reason, head.headers, _our_body_length(head)


def _our_body_length(head: Head) -> int | None:
    if head.status in (204, 304):
        return 0
    length = head.content_length
    return None if length is None else length


def comparable(parsed: Parsed) -> Parsed:
    """A body length is compared as far as BODY goes: a longer one is only "longer"."""
    if parsed is None or parsed[3] is None or parsed[3] <= len(BODY):
        return parsed
    return (*parsed[:3], len(BODY) + 1)


# Transfer-Encoding is left out: the fast path hands any to aiohttp, and h11 refuses all but
# chunked. So are well-formed versions other than HTTP/1.0 and 1.1, which h11 takes and the
# fast path (asking HTTP/1.1) refuses.
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer_heads())
@example(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n")
@example(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 206 Partial\nContent-Length: 3\n\n")
@example(b"HTTP/1.1 200 OK\nA: b\n c\r\nContent-Length: 5, 5\n\n")
@example(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
@example(b"\r\nHTTP/1.1 200 OK\r\n\r\n")
def test_head_parser_agrees_with_h11(head: bytes) -> None:
    expected = comparable(with_h11(head))
    assert comparable(with_ours(head)) == expected


# heads real servers send ------------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[RawClient]:
    raw = RawClient(Timeouts(connect=2, read=2), bufsize=64 * KiB)
    try:
        yield raw
    finally:
        await raw.aclose()


async def read_range(client: RawClient, url: str, wanted: ByteRange) -> bytes:
    """``wanted`` of ``url`` over the fast path (failing if it hands the request to aiohttp)."""
    headers = {"Range": wanted.header()}
    body = await client.open(url, headers, wanted, Span(pos=wanted.start, stop=wanted.end))
    assert body is not None, "handed to aiohttp"
    got = bytearray()
    while batch := await body.next_batch():
        got += batch[0]
    client.finish(body.connection)
    return bytes(got)


async def test_interim_answers_are_skipped(client: RawClient) -> None:
    interim = [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"]
    with RawServer(serve_file(DATA, interim=interim)) as server:
        assert await read_range(client, server.url(), ByteRange(100, 5000)) == DATA[100:5000]


async def test_a_bare_lf_head_is_read(client: RawClient) -> None:
    with RawServer(serve_file(DATA, eol=b"\n")) as server:
        assert await read_range(client, server.url(), ByteRange(7, 70_000)) == DATA[7:70_000]


async def test_a_101_is_a_protocol_error(client: RawClient) -> None:
    switching = serve_file(DATA, interim=[b"HTTP/1.1 101 Switching\r\n\r\n"])
    with RawServer(switching) as server, pytest.raises(ProtocolError, match="101 Switching"):
        await read_range(client, server.url(), ByteRange(0, 10))


@pytest.mark.parametrize("fast", ["1", "0"])
async def test_a_bare_lf_server_serves_a_whole_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: str
) -> None:
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", fast)
    policy, _ = no_wait(attempts=1)
    with RawServer(serve_file(DATA, eol=b"\n")) as server:
        await asyncfetch.fetch(server.url(), tmp_path / "f", chunk_size=64 * KiB, retry=policy)
    assert (tmp_path / "f").read_bytes() == DATA


async def test_a_non_ascii_digit_in_content_length_is_a_protocol_error(
    tmp_path: Path,
) -> None:
    policy, _ = no_wait(attempts=1)
    with (
        RawServer(serve_file(DATA, length="\xb2")) as server,
        pytest.raises(ProtocolError, match="bad Content-Length"),
    ):
        await asyncfetch.fetch(server.url(), tmp_path / "f", retry=policy)
