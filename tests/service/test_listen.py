"""Listening: ``serve()`` itself, its runner as ``asyncfetch serve`` runs it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asyncfetch._service import listen
from asyncfetch._service.app import Service

WAIT_S = 10.0


@contextlib.asynccontextmanager
async def serving(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[int]:
    """``serve()`` on a free loopback port (the one it prints), cancelled at the end."""
    task = asyncio.create_task(listen.serve(Service(cache_dir), port=0))
    try:
        deadline = time.monotonic() + WAIT_S
        while not (found := re.search(r":(\d+) cache", capsys.readouterr().out)):
            assert time.monotonic() < deadline, "serve() printed no URL"
            assert not task.done(), task
            await asyncio.sleep(0.05)
        yield int(found.group(1))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the service closes the connection within ``seconds`` (reading what it sends)."""

    async def until_closed() -> None:
        while await reader.read(1024):
            pass

    try:
        await asyncio.wait_for(until_closed(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


async def test_a_connection_without_a_whole_request_head_is_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listen, "IDLE_TIMEOUT", 1.0, raising=False)
    async with serving(tmp_path / "cache", capsys) as port:
        silent = await asyncio.open_connection("127.0.0.1", port)
        half = await asyncio.open_connection("127.0.0.1", port)
        half[1].write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end
        answered = await asyncio.open_connection("127.0.0.1", port)
        answered[1].write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

        assert (await answered[0].readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        assert await closed_within(silent[0], WAIT_S)  # a slowloris holds nothing for long
        assert await closed_within(half[0], WAIT_S)
        assert await closed_within(answered[0], WAIT_S)  # nor does an idle keep-alive one
        for _, writer in (silent, half, answered):
            writer.close()
