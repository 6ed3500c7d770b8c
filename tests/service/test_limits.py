"""``asyncfetch serve``'s limits on work: a bounded queue (429 with ``Retry-After``), and a
speed floor under which a download gives its slot back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from asyncfetch import InvalidRequest
from asyncfetch._service.limits import SpeedFloor
from tests.faultserver import FaultServer, make_payload
from tests.helpers import cli_env, leftovers
from tests.service.test_app import downloading, running, started

NO_FLOOR = None


async def test_past_the_queue_new_work_gets_429_with_retry_after(
    tmp_path: Path, server: FaultServer
) -> None:
    for name in ("a.bin", "b.bin", "c.bin"):
        server.add_file(name, make_payload(256 << 10))
    slow = {name: server.url(name, rate=64 << 10) for name in ("a.bin", "b.bin", "c.bin")}
    async with running(tmp_path / "cache", max_downloads=1, max_queue=1, floor=NO_FLOOR) as svc:
        first = asyncio.create_task(svc.post({"url": slow["a.bin"]}))  # runs
        await started(server, "a.bin")
        second = asyncio.create_task(svc.post({"url": slow["b.bin"]}))  # waits its turn
        await downloading(svc, "b.bin")

        async with svc.client.post(
            f"{svc.url}/fetch", json={"url": slow["c.bin"]}, timeout=5
        ) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "10"
            body = await response.json()
        assert body["type"] == "QueueFull"
        assert "ask again in 10 s" in body["error"]
        joined = asyncio.create_task(svc.post({"url": slow["a.bin"]}))  # no new work: joins
        await asyncio.sleep(0.1)
        assert not joined.done()
        for task in (first, second, joined):
            task.cancel()
        await asyncio.gather(first, second, joined, return_exceptions=True)
    assert server.gets("c.bin") == []


async def test_a_trickling_source_frees_its_slot(
    tmp_path: Path, server: FaultServer, payload: bytes
) -> None:
    """Two such requests used to block every other client for ever with --max-downloads 2."""
    server.add_file("slow.bin", payload)
    fast = server.add_file("fast.bin", make_payload(5000))
    trickle = server.url("slow.bin", rate=1000)  # 1 kB/s a connection
    floor = SpeedFloor(bytes_per_s=256 << 10, window=0.5)
    async with running(tmp_path / "cache", max_downloads=1, floor=floor) as svc:
        slow = asyncio.create_task(svc.post({"url": trickle}))
        await started(server, "slow.bin")

        status, answer = await asyncio.wait_for(svc.post({"url": fast}), timeout=10)

        assert status == 200, answer
        status, answer = await asyncio.wait_for(slow, timeout=10)
    assert status == 504, answer
    assert answer["type"] == "TooSlow"
    assert "bytes/s" in answer["error"]
    assert "resumes" in answer["error"]
    kept = leftovers(tmp_path / "cache")
    assert "fast.bin" in kept
    assert any(name.startswith("slow.bin.") and name.endswith(".part") for name in kept)


async def test_a_fast_download_is_not_held_to_the_floor(
    tmp_path: Path, server: FaultServer, payload: bytes
) -> None:
    url = server.add_file("m.bin", payload)
    floor = SpeedFloor(bytes_per_s=64 << 10, window=0.2)
    async with running(tmp_path / "cache", floor=floor) as svc:
        status, answer = await svc.post({"url": url})
    assert status == 200, answer


def test_a_speed_floor_needs_a_speed_and_a_window() -> None:
    with pytest.raises(InvalidRequest):
        SpeedFloor(bytes_per_s=0)
    with pytest.raises(InvalidRequest):
        SpeedFloor(window=0)


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-queue", "-1"), ("--min-speed", "fast"), ("--min-speed-window", "0")],
)
def test_bad_limits_are_usage_errors(option: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "asyncfetch", "serve", option, value],
        capture_output=True, text=True, timeout=30, env=cli_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert option in done.stderr
