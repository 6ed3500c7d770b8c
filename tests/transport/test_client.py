"""The aiohttp receive path and the choice between the two paths (the engine tests run on
each path themselves: see tests.helpers.RECEIVE_PATHS)."""

from __future__ import annotations

import ssl

import aiohttp
import pytest

from asyncfetch._models import ByteRange
from asyncfetch._options import Options
from asyncfetch._transport.aiobody import AioBody
from asyncfetch._transport.client import Transport
from asyncfetch._transport.rawhttp import Span
from tests.faultserver import FaultServer
from tests.helpers import http_only, over_http_and_https  # noqa: F401 (the scheme fixture)


@pytest.fixture(autouse=True)
def aiohttp_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch the fast path off, as ASYNCFETCH_FAST_PATH=0 does for users."""
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", "0")


async def test_switched_off_fast_path_uses_aiohttp(server: FaultServer, payload: bytes) -> None:
    url = server.add_file("m.bin", payload)
    async with (
        Transport(Options(connections=1)) as transport,
        transport.open(url, ByteRange(0, 10), window=Span(stop=10)) as body,
    ):
        assert isinstance(body, AioBody)
        assert await body.next_batch() == [payload[:10]]


@pytest.mark.parametrize("switch", ["1", "0"])
async def test_a_callers_session_always_uses_aiohttp(
    server: FaultServer, payload: bytes, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    monkeypatch.setenv("ASYNCFETCH_FAST_PATH", switch)
    url = server.add_file("m.bin", payload)
    ssl_context = ssl.create_default_context(cafile=server.ca_path) if "https" in url else True
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as session:
        transport = Transport(Options(connections=1), session=session)
        async with transport, transport.open(url, ByteRange(0, 10), window=Span()) as body:
            assert isinstance(body, AioBody)


async def test_aiohttp_body_hands_over_bytes_before_its_error(
    server: FaultServer, payload: bytes
) -> None:
    server.add_file("m.bin", payload)
    url = server.url("m.bin", truncate_after=5000)
    async with (
        Transport(Options(connections=1)) as transport,
        transport.open(url, None, window=Span()) as body,
    ):
        assert sum(len(b) for b in await body.next_batch()) == 5000
        with pytest.raises(Exception, match="ended early|ended at"):
            await body.next_batch()
