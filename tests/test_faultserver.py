"""Tests of the fault-injecting test server itself (tests/faultserver/), over http and https."""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from tests.faultserver import FaultServer, make_payload
from tests.faultserver.tls import ca_path
from tests.helpers import over_http_and_https  # noqa: F401 (the scheme fixture)


@dataclass
class Got:
    """What a client saw: status, headers, the body bytes received, and the error if any."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    error: Exception | None = None


def trusting(scheme: str) -> ssl.SSLContext | None:
    """A client context that trusts the test CA, for https (None: the default, for http)."""
    return ssl.create_default_context(cafile=ca_path()) if scheme == "https" else None


def connector(scheme: str) -> aiohttp.TCPConnector:
    """An aiohttp connector that trusts the test CA."""
    return aiohttp.TCPConnector(ssl=trusting(scheme) or True)


@pytest.fixture
async def session(scheme: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session (default headers: it accepts gzip) that trusts the test CA."""
    async with aiohttp.ClientSession(connector=connector(scheme)) as client:
        yield client


async def fetch(
    session: aiohttp.ClientSession, url: str, method: str = "GET", **kwargs: Any
) -> Got:
    """Request URL and read the whole body; a broken body is returned as `error`."""
    body = bytearray()
    async with session.request(method, url, **kwargs) as response:
        try:
            async for chunk in response.content.iter_any():
                body += chunk
        except (aiohttp.ClientPayloadError, aiohttp.ServerTimeoutError) as exc:
            return Got(response.status, response.headers, bytes(body), exc)
        return Got(response.status, response.headers, bytes(body))


def basic(credentials: str) -> str:
    """The Authorization value for Basic auth with ``user:password``."""
    return "Basic " + base64.b64encode(credentials.encode()).decode()


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll CONDITION every 10 ms; fail the test if it stays false for TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# ---- normal behaviour ---------------------------------------------------------------------------


async def test_get_serves_the_whole_file_with_validators(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    url = server.add_file("f.bin", payload)
    assert url == f"{server.base_url}/files/f.bin"
    got = await fetch(session, url)
    assert got.status == 200
    assert got.body == payload
    assert got.headers["Content-Length"] == str(len(payload))
    assert got.headers["Accept-Ranges"] == "bytes"
    assert got.headers["ETag"].startswith('"')
    assert got.headers["Last-Modified"].endswith("GMT")
    assert "Content-Encoding" not in got.headers


async def test_head_has_the_headers_and_no_body(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    url = server.add_file("f.bin", payload)
    got = await fetch(session, url, "HEAD")
    size, etag, last_modified = server.file_info("f.bin")
    assert (got.status, got.body) == (200, b"")
    assert got.headers["Content-Length"] == str(size)
    assert got.headers["Accept-Ranges"] == "bytes"
    assert (got.headers["ETag"], got.headers["Last-Modified"]) == (etag, last_modified)
    assert [r.method for r in server.requests] == ["HEAD"]


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, None),
        ("bytes=-500", -500, None),
        ("bytes=10-999999999", 10, None),  # end past the file is clamped
        ("bytes=-999999999", 0, None),  # suffix longer than the file = whole file
    ],
)
async def test_single_range_answers_206(
    server: FaultServer,
    payload: bytes,
    session: aiohttp.ClientSession,
    spec: str,
    start: int,
    end: int | None,
) -> None:
    url = server.add_file("f.bin", payload)
    size = len(payload)
    first = start % size if start < 0 else start
    last = size - 1 if end is None else end
    got = await fetch(session, url, headers={"Range": spec})
    assert got.status == 206
    assert got.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
    assert got.body == payload[first : last + 1]
    assert server.gets("f.bin")[0].range == (first, last)
    assert server.bytes_served("f.bin") == last + 1 - first


@pytest.mark.parametrize("spec", ["bytes={size}-", "bytes={size}-{size}", "bytes=-0"])
async def test_unsatisfiable_range_answers_416(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession, spec: str
) -> None:
    url = server.add_file("f.bin", payload)
    got = await fetch(session, url, headers={"Range": spec.format(size=len(payload))})
    assert got.status == 416
    assert got.headers["Content-Range"] == f"bytes */{len(payload)}"
    assert server.gets("f.bin")[0].range is None


async def test_malformed_or_multiple_ranges_are_ignored(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    url = server.add_file("f.bin", payload)
    for spec in ("bytes=0-1,5-6", "bytes=9-3", "items=0-5"):
        got = await fetch(session, url, headers={"Range": spec})
        assert (got.status, got.body == payload) == (200, True), spec


async def test_if_range_matching_etag_or_date_keeps_the_range(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    url = server.add_file("f.bin", payload)
    _, etag, last_modified = server.file_info("f.bin")
    for validator in (etag, last_modified):
        got = await fetch(session, url, headers={"Range": "bytes=5-9", "If-Range": validator})
        assert (got.status, got.body) == (206, payload[5:10])


async def test_replace_file_changes_validators_and_if_range_then_gives_200(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    url = server.add_file("f.bin", payload)
    _, old_etag, old_date = server.file_info("f.bin")
    changed = make_payload(len(payload), seed=1)
    server.replace_file("f.bin", changed)
    _, new_etag, new_date = server.file_info("f.bin")
    assert new_etag != old_etag
    assert new_date != old_date
    for validator in (old_etag, old_date, "W/" + new_etag):
        got = await fetch(session, url, headers={"Range": "bytes=5-9", "If-Range": validator})
        assert (got.status, got.body == changed) == (200, True), validator
    server.replace_file("f.bin", changed)  # same bytes: still a new version
    assert server.file_info("f.bin")[1] != new_etag


def test_replace_missing_file_raises(server: FaultServer) -> None:
    with pytest.raises(KeyError):
        server.replace_file("absent", b"x")


async def test_custom_validators_and_unknown_file(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    date = "Tue, 02 Jan 2024 03:04:05 GMT"
    url = server.add_file("c", b"abc", etag='"v1"', last_modified=date)
    got = await fetch(session, url)
    assert (got.headers["ETag"], got.headers["Last-Modified"]) == ('"v1"', date)
    assert (await fetch(session, server.url("missing"))).status == 404
    server.remove_file("c")
    assert (await fetch(session, url)).status == 404


def test_sync_client_from_a_plain_test(server: FaultServer, payload: bytes) -> None:
    url = server.add_file("f.bin", payload)
    request = urllib.request.Request(url, headers={"Range": "bytes=100-199"})
    with urllib.request.urlopen(request, timeout=5, context=trusting(server.scheme)) as response:
        assert response.status == 206
        assert response.read() == payload[100:200]


def test_make_payload_is_deterministic() -> None:
    assert make_payload(1000) == make_payload(1000)
    assert make_payload(1000, seed=1) != make_payload(1000)
    assert len(make_payload(12345)) == 12345


def test_url_builder_and_unknown_parameters(server: FaultServer) -> None:
    url = server.url("a b", status=503, times=2, gzip=True, ignore_range=False, flip_byte=[1, 2])
    assert url == f"{server.base_url}/files/a%20b?status=503&times=2&gzip=1&flip_byte=1&flip_byte=2"
    with pytest.raises(ValueError, match="unknown fault"):
        server.url("a", stauts=503)


async def test_unknown_or_bad_query_parameter_answers_400(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    url = server.add_file("f", b"data")
    assert (await fetch(session, url + "?stauts=503")).status == 400
    assert (await fetch(session, url + "?reset_after=-1")).status == 400


# ---- request log and counters -------------------------------------------------------------------


async def test_request_log_records_each_request(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    url = server.add_file("f.bin", payload)
    await fetch(session, url, headers={"Range": "bytes=0-9", "X-Test": "1"})
    await fetch(session, url + "?delay=0")
    first, second = server.requests
    assert (first.method, first.path, first.status, first.outcome) == (
        "GET",
        "/files/f.bin",
        206,
        "ok",
    )
    assert first.range == (0, 9)
    assert first.bytes_sent == 10
    assert first.headers["X-Test"] == "1"
    assert second.query == {"delay": "0"}
    assert second.bytes_sent == len(payload)
    assert first.client_port > 0
    assert (first.connection, first.client_port) == (second.connection, second.client_port)
    assert first.timestamp <= (first.finished or 0) <= second.timestamp
    assert server.bytes_served() == server.bytes_served("f.bin") == len(payload) + 10
    server.reset_log()
    assert server.requests == []
    assert server.bytes_served("f.bin") == 0


async def test_max_concurrent_counts_simultaneous_requests(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.add_file("f", b"data")
    url = server.url("f", delay=0.2)
    results = await asyncio.gather(*(fetch(session, url) for _ in range(6)))
    assert [r.status for r in results] == [200] * 6
    assert server.max_concurrent == 6
    assert server.in_flight == 0
    server.reset_counters()
    assert server.max_concurrent == 0


# ---- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [500, 503, 429, 404, 403, 408])
async def test_status_fault(server: FaultServer, session: aiohttp.ClientSession, code: int) -> None:
    server.add_file("f", b"data")
    got = await fetch(session, server.url("f", status=code))
    assert got.status == code
    assert "Retry-After" not in got.headers
    assert server.requests[0].faults == ["status"]


async def test_status_times_then_normal_with_retry_after_verbatim(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    url = server.url("f.bin", status=503, retry_after=date, times=2)
    statuses = []
    for _ in range(3):
        got = await fetch(session, url)
        statuses.append(got.status)
        if got.status == 503:
            assert got.headers["Retry-After"] == date
    assert statuses == [503, 503, 200]
    assert got.body == payload
    server.reset_counters()  # times=K counts per (fault, file), whatever the URL
    got = await fetch(session, server.url("f.bin", status=429, retry_after=7, times=1))
    assert (got.status, got.headers["Retry-After"]) == (429, "7")


async def test_times_is_counted_per_file_and_reset_by_reset_counters(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.add_file("a", b"a")
    server.add_file("b", b"b")
    statuses = [
        (await fetch(session, server.url(name, status=500, times=1))).status
        for name in ("a", "b", "a", "b")
    ]
    assert statuses == [500, 500, 200, 200]
    server.reset_counters()
    assert (await fetch(session, server.url("a", status=500, times=1))).status == 500


async def test_reset_after_cuts_the_connection_then_resume_works(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    url = server.url("f.bin", reset_after=100_000, times=1)
    got = await fetch(session, url)
    assert got.status == 200
    assert isinstance(got.error, aiohttp.ClientPayloadError)
    assert got.body == payload[:100_000]
    rest = await fetch(session, url, headers={"Range": f"bytes={len(got.body)}-"})
    assert (rest.status, rest.error) == (206, None)
    assert got.body + rest.body == payload
    first, second = server.gets("f.bin")
    assert (first.outcome, first.bytes_sent, first.faults) == ("reset", 100_000, ["reset_after"])
    assert second.outcome == "ok"
    assert server.bytes_served("f.bin") == len(payload)


async def test_reset_after_counts_from_the_start_of_the_range(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    url = server.add_file("f.bin", payload)
    got = await fetch(session, url + "?reset_after=10", headers={"Range": "bytes=500-"})
    assert got.status == 206
    assert got.error is not None
    assert got.body == payload[500:510]


async def test_truncate_after_closes_cleanly_short_of_content_length(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    got = await fetch(session, server.url("f.bin", truncate_after=4321))
    assert got.headers["Content-Length"] == str(len(payload))
    assert isinstance(got.error, aiohttp.ClientPayloadError)
    assert got.body == payload[:4321]
    assert server.requests[0].outcome == "truncated"


async def test_cut_beyond_the_body_does_not_fire(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.add_file("f", b"0123456789")
    got = await fetch(session, server.url("f", reset_after=10, truncate_after=99))
    assert (got.body, got.error, server.requests[0].faults) == (b"0123456789", None, [])


async def test_flip_byte_flips_only_inside_the_response(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    url = server.url("f.bin", flip_byte=[70_000, 0])
    whole = await fetch(session, url)
    expected = bytearray(payload)
    expected[0] ^= 0xFF
    expected[70_000] ^= 0xFF
    assert whole.body == expected
    inside = await fetch(session, url, headers={"Range": "bytes=69990-70009"})
    assert inside.body == bytes(expected[69_990:70_010])
    outside = await fetch(session, url, headers={"Range": "bytes=1-99"})
    assert outside.body == payload[1:100]
    assert [r.faults for r in server.requests] == [["flip_byte"] * 2, ["flip_byte"], []]


async def test_ignore_range_answers_200_with_everything(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    got = await fetch(session, server.url("f.bin", ignore_range=1), headers={"Range": "bytes=5-9"})
    assert (got.status, got.body == payload) == (200, True)
    assert got.headers["Accept-Ranges"] == "bytes"  # it claims ranges and still ignores them


async def test_wrong_range_answers_a_shifted_range(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    size = len(payload)
    url = server.url("f.bin", wrong_range=1)
    got = await fetch(session, url, headers={"Range": "bytes=100-199"})
    assert got.status == 206
    assert got.headers["Content-Range"] == f"bytes 101-200/{size}"
    assert got.body == payload[101:201]
    tail = await fetch(session, url, headers={"Range": f"bytes={size - 10}-"})
    assert tail.headers["Content-Range"] == f"bytes {size - 11}-{size - 2}/{size}"


async def test_no_head_and_head_lies(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    assert (await fetch(session, server.url("f.bin", no_head=1), "HEAD")).status == 405
    assert (await fetch(session, server.url("f.bin", no_head=1))).body == payload
    lie = await fetch(session, server.url("f.bin", head_lies=1), "HEAD")
    assert lie.status == 200
    assert lie.headers["Content-Length"] == str(len(payload) + 1000)
    assert "Accept-Ranges" not in lie.headers
    got = await fetch(session, server.url("f.bin", head_lies=1), headers={"Range": "bytes=0-0"})
    assert (got.status, got.body) == (206, payload[:1])  # GET is truthful


async def test_no_ranges_serves_everything_without_accept_ranges(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    url = server.url("f.bin", no_ranges=1)
    head = await fetch(session, url, "HEAD")
    assert "Accept-Ranges" not in head.headers
    assert head.headers["Content-Length"] == str(len(payload))
    got = await fetch(session, url, headers={"Range": "bytes=5-9"})
    assert (got.status, got.body == payload) == (200, True)
    assert "Accept-Ranges" not in got.headers


async def test_no_length_sends_chunked_without_ranges(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    url = server.url("f.bin", no_length=1)
    head = await fetch(session, url, "HEAD")
    assert "Content-Length" not in head.headers
    got = await fetch(session, url, headers={"Range": "bytes=5-9"})
    assert (got.status, got.body == payload) == (200, True)
    assert "Content-Length" not in got.headers
    assert got.headers["Transfer-Encoding"] == "chunked"
    assert "Accept-Ranges" not in got.headers


async def test_redirect_hops_then_serves(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    async with session.get(server.url("f.bin", redirect=3, truncate_after=5)) as response:
        assert len(response.history) == 3
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    queries = [r.query for r in server.gets("f.bin")]
    assert [q.get("redirect") for q in queries] == ["3", "2", "1", None]
    assert all(q["truncate_after"] == "5" for q in queries)


async def test_redirect_loop_never_ends(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.add_file("f", b"data")
    with pytest.raises(aiohttp.TooManyRedirects):
        await fetch(session, server.url("f", redirect_loop=1), max_redirects=5)
    assert len(server.gets("f")) == 5  # aiohttp gives up on the 5th redirect


async def test_redirect_to_a_mirror(
    server: FaultServer,
    make_server: Callable[[], FaultServer],
    payload: bytes,
    session: aiohttp.ClientSession,
) -> None:
    mirror = make_server()
    assert mirror.base_url != server.base_url
    server.add_file("f.bin", payload)
    mirror.add_file("f.bin", payload)
    url = server.url("f.bin", redirect_to=mirror.url("f.bin", delay=0.01), times=1)
    got = await fetch(session, url)
    assert (got.status, got.body == payload) == (200, True)
    assert [r.status for r in server.gets("f.bin")] == [302]
    assert [r.query for r in mirror.gets("f.bin")] == [{"delay": "0.01"}]
    assert mirror.bytes_served("f.bin") == len(payload)
    assert (await fetch(session, url)).status == 200  # times=1: served here now
    assert server.bytes_served("f.bin") == len(payload)


async def test_auth_answers_401_without_the_right_credentials(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    url = server.url("f.bin", auth="user:pa ss", redirect=1)
    refused = await fetch(session, url)
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="files"'
    wrong = await fetch(session, url, headers={"Authorization": basic("user:bad")})
    assert wrong.status == 401
    got = await fetch(session, url, headers={"Authorization": basic("user:pa ss")})
    assert (got.status, got.body == payload) == (200, True)
    assert [r.status for r in server.gets("f.bin")] == [401, 401, 302, 200]
    assert [r.faults for r in server.gets("f.bin")][:2] == [["auth"], ["auth"]]


async def test_stall_after_stops_sending_until_the_client_leaves(
    server: FaultServer, payload: bytes
) -> None:
    server.add_file("f.bin", payload)
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector(server.scheme)) as client:
        got = await fetch(client, server.url("f.bin", stall_after=1000))
    assert isinstance(got.error, aiohttp.ServerTimeoutError)
    assert got.body == payload[:1000]
    record = server.requests[0]
    await wait_until(lambda: record.finished is not None)
    assert (record.outcome, record.bytes_sent) == ("stalled", 1000)


async def test_stop_closes_a_stalled_connection_promptly(payload: bytes) -> None:
    own = FaultServer().start()
    try:
        own.add_file("f.bin", payload)
        async with aiohttp.ClientSession() as client:
            task = asyncio.create_task(fetch(client, own.url("f.bin", stall_after=0)))
            await wait_until(lambda: own.in_flight == 1)
            began = time.monotonic()
            await asyncio.to_thread(own.stop)
            assert time.monotonic() - began < 1.5
            got = await asyncio.wait_for(task, 2)
        assert isinstance(got.error, aiohttp.ClientPayloadError)
        assert got.body == b""
    finally:
        own.stop()
    own.stop()  # idempotent


async def test_gzip_only_when_the_client_accepts_it(
    server: FaultServer, payload: bytes, session: aiohttp.ClientSession
) -> None:
    server.add_file("f.bin", payload)
    url = server.url("f.bin", gzip=1)
    got = await fetch(session, url)  # aiohttp sends Accept-Encoding: gzip, deflate
    assert got.headers["Content-Encoding"] == "gzip"
    assert got.body == payload  # aiohttp decoded it
    assert server.requests[0].bytes_sent != len(payload)
    plain = await fetch(session, url, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert plain.body == payload
    refused = await fetch(session, url, headers={"Accept-Encoding": "gzip;q=0, br"})
    assert "Content-Encoding" not in refused.headers


def test_gzip_body_is_real_gzip(server: FaultServer) -> None:
    data = make_payload(1000) * 50
    server.add_file("f", data)
    request = urllib.request.Request(server.url("f", gzip=1), headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=5, context=trusting(server.scheme)) as response:
        raw = response.read()
    assert len(raw) < len(data)
    assert gzip.decompress(raw) == data


async def test_rate_throttles_the_response(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    data = make_payload(30_000)
    server.add_file("f", data)
    began = time.monotonic()
    got = await fetch(session, server.url("f", rate=100_000))
    elapsed = time.monotonic() - began
    assert got.body == data
    assert 0.25 < elapsed < 2.0


async def test_delay_postpones_the_answer(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.add_file("f", b"data")
    began = time.monotonic()
    got = await fetch(session, server.url("f", delay=0.2))
    assert got.body == b"data"
    assert time.monotonic() - began >= 0.2


async def test_client_going_away_mid_body_is_recorded(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    data = make_payload(200_000)
    server.add_file("f", data)
    async with session.get(server.url("f", rate=200_000)) as response:
        await response.content.readexactly(10_000)
        response.close()
    record = server.requests[0]
    await wait_until(lambda: record.finished is not None)
    assert record.outcome == "client_gone"
    assert record.bytes_sent < len(data)


def test_sync_client_sees_a_reset(server: FaultServer, payload: bytes) -> None:
    server.add_file("f.bin", payload)
    url = server.url("f.bin", reset_after=10)
    # under TLS the ssl module reads the reset as a ragged EOF: the body is just short
    short = ConnectionResetError if server.scheme == "http" else http.client.IncompleteRead
    with (
        urllib.request.urlopen(url, timeout=5, context=trusting(server.scheme)) as response,
        pytest.raises(short),
    ):
        response.read()


def test_sync_client_sees_a_status(server: FaultServer) -> None:
    server.add_file("f", b"x")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(
            server.url("f", status=503, retry_after=3), timeout=5, context=trusting(server.scheme)
        )
    assert info.value.code == 503
    assert info.value.headers["Retry-After"] == "3"
    info.value.close()


async def test_times_applies_to_delay_too(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.add_file("f", b"data")
    url = server.url("f", delay=0.3, times=1)
    durations = []
    for _ in range(2):
        began = time.monotonic()
        await fetch(session, url)
        durations.append(time.monotonic() - began)
    assert durations[0] >= 0.3 > durations[1]


def test_lifecycle_errors() -> None:
    idle = FaultServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = idle.base_url
    idle.stop()  # harmless before start
    with idle, pytest.raises(RuntimeError, match="already started"):
        idle.start()


async def test_a_tls_server_gives_https_urls_and_counts_handshakes(payload: bytes) -> None:
    with FaultServer(tls=True) as tls:
        url = tls.add_file("f.bin", payload)
        assert url.startswith("https://127.0.0.1:")
        assert tls.ca_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
        async with aiohttp.ClientSession() as untrusting:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await fetch(untrusting, url)
        assert (tls.handshakes, tls.requests) == (1, [])  # a failed handshake is no request
        async with aiohttp.ClientSession(connector=connector("https")) as trusting_it:
            assert (await fetch(trusting_it, url)).body == payload
        assert tls.handshakes == 2
    with FaultServer() as plain, pytest.raises(RuntimeError, match="no certificate"):
        _ = plain.ca_path
