"""Resume across restarts: kill -9 a real downloading process, run again, read the server log;
over every receive path (see tests.helpers.RECEIVE_PATHS)."""

from __future__ import annotations

import asyncio
import glob
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import asyncfetch
from asyncfetch import ProgressEvent
from asyncfetch._storage.journal import load
from asyncfetch._storage.parts import part_glob
from tests.faultserver import FaultServer, RequestRecord, make_payload
from tests.helpers import (
    cli_env,
    leftovers,
    over_every_receive_path,  # noqa: F401 (the scheme fixture)
    sha256,
)

SIZE = 2 << 20
RATE = 400_000  # bytes/s per request: 2 connections take ~2.6 s for the file
CHUNK = "256K"
FAST = ("--connections", "16", "--chunk-size", "128K")  # a rerun: 16 throttled requests at once


def start_get(url: str, dest: Path, *extra: str, **env: str) -> subprocess.Popen[str]:
    """``python -m asyncfetch get URL -o DEST --json`` in the background (``env``: more
    environment variables)."""
    args = ["get", url, "-o", str(dest), "--json", "--no-progress", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "asyncfetch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(**env),
    )


def finish(child: subprocess.Popen[str], timeout: float = 60) -> dict[str, object]:
    """Wait for a ``get`` child and return its JSON result (it must succeed)."""
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err
    result: dict[str, object] = json.loads(out)
    return result


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def journaled(dest: Path) -> int:
    """Bytes the journals beside ``dest`` say are safely on disk."""
    total = 0
    for part in glob.glob(part_glob(dest)):
        journal = load(Path(part))
        total += sum(e - s for s, e in journal.runs) if journal else 0
    return total


def kill_halfway(server: FaultServer, url: str, dest: Path) -> int:
    """Start a download, SIGKILL it once about half is journaled; return what was journaled."""
    child = start_get(url, dest, "--connections", "2", "--chunk-size", CHUNK)
    try:
        wait_until(lambda: journaled(dest) >= SIZE * 0.4 or child.poll() is not None)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the download ended before it was killed"
    assert not dest.exists()
    return journaled(dest)


def gets_after(server: FaultServer, name: str, mark: int) -> list[RequestRecord]:
    return [r for r in server.requests[mark:] if r.method == "GET" and r.name == name]


def covered(records: list[RequestRecord]) -> list[tuple[int, int]]:
    """Byte ranges (end exclusive) the records delivered, merged."""
    spans = sorted(
        (r.range[0] if r.range else 0, (r.range[0] if r.range else 0) + r.bytes_sent)
        for r in records
    )
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return merged


@pytest.mark.slow
def test_killed_download_resumes_with_only_the_missing_bytes(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(SIZE, seed=11)
    server.add_file("big.bin", data)
    url = server.url("big.bin", rate=RATE)
    dest = tmp_path / "big.bin"

    on_disk = kill_halfway(server, url, dest)
    mark = len(server.requests)
    result = finish(start_get(url, dest, *FAST))

    assert dest.read_bytes() == data
    assert result["sha256"] == sha256(data)
    resumed = result["resumed_bytes"]
    assert isinstance(resumed, int)
    assert resumed >= on_disk >= SIZE * 0.4
    rerun = gets_after(server, "big.bin", mark)
    assert sum(r.bytes_sent for r in rerun) == SIZE - resumed  # nothing fetched twice
    assert all(r.range is not None and r.range[0] > 0 for r in rerun)  # no start over
    assert leftovers(tmp_path) == ["big.bin"]


@pytest.mark.slow
def test_file_changed_on_the_server_starts_over(server: FaultServer, tmp_path: Path) -> None:
    old, new = make_payload(SIZE, seed=11), make_payload(SIZE, seed=12)
    server.add_file("big.bin", old)
    url = server.url("big.bin", rate=RATE)
    dest = tmp_path / "big.bin"

    kill_halfway(server, url, dest)
    server.replace_file("big.bin", new)  # same size, new ETag and Last-Modified
    mark = len(server.requests)
    result = finish(start_get(url, dest, "--sha256", sha256(new), *FAST))

    assert dest.read_bytes() == new
    assert result["resumed_bytes"] == 0
    assert covered(gets_after(server, "big.bin", mark)) == [(0, SIZE)]
    assert leftovers(tmp_path) == ["big.bin"]


async def test_change_between_probe_and_ranges_is_caught_by_if_range(
    server: FaultServer, tmp_path: Path
) -> None:
    old, new = make_payload(SIZE // 2, seed=21), make_payload(SIZE // 2, seed=22)
    server.add_file("m.bin", old)
    url = server.url("m.bin", rate=800_000)
    dest = tmp_path / "m.bin"
    first = asyncio.create_task(asyncfetch.fetch(url, dest, chunk_size=128 << 10, connections=2))
    await asyncio.sleep(0.35)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

    assert 0 < journaled(dest) < len(old)

    def change_once(event: ProgressEvent) -> None:
        if event.kind == "bytes" and not changed:  # after the probe, amid the ranges
            changed.append(True)
            server.replace_file("m.bin", new)

    changed: list[bool] = []
    mark = len(server.requests)
    result = await asyncfetch.fetch(  # one connection: the next range is asked after the change
        url, dest, chunk_size=128 << 10, connections=1, progress=change_once
    )

    assert changed
    assert dest.read_bytes() == new  # all new bytes: the old part was never spliced in
    assert result.sha256 == sha256(new)
    assert result.resumed_bytes == 0  # started over
    refused = [r for r in gets_after(server, "m.bin", mark) if r.headers.get("If-Range")]
    assert refused[-1].status == 200  # the server said "changed" by ignoring the range


@pytest.mark.slow
def test_corrupt_journal_after_a_kill_starts_over_without_crashing(
    server: FaultServer, tmp_path: Path
) -> None:
    data = make_payload(SIZE, seed=13)
    server.add_file("big.bin", data)
    url = server.url("big.bin", rate=RATE)
    dest = tmp_path / "big.bin"
    kill_halfway(server, url, dest)
    for journal in glob.glob(f"{dest}.*.part.json"):
        Path(journal).write_bytes(b'{"version": 1, "ur')  # torn write

    result = finish(start_get(url, dest, *FAST))

    assert dest.read_bytes() == data
    assert result["resumed_bytes"] == 0
    assert leftovers(tmp_path) == ["big.bin"]


SLOW_LINK = 131072  # bytes/s per connection


@pytest.mark.slow
@pytest.mark.parametrize("fast_path", ["1", "0"])
def test_a_slow_link_killed_after_seconds_resumes_from_its_last_second(
    server: FaultServer, tmp_path: Path, fast_path: str
) -> None:
    data = make_payload(8 << 20, seed=14)
    server.add_file("slow.bin", data)
    url = server.url("slow.bin", rate=SLOW_LINK, times=4)  # the rerun's answers come at once
    dest = tmp_path / "slow.bin"
    env = {"ASYNCFETCH_FAST_PATH": fast_path}
    child = start_get(url, dest, "--connections", "4", "--chunk-size", "2M", **env)
    try:
        wait_until(lambda: len(gets_after(server, "slow.bin", 0)) >= 4 or child.poll() is not None)
        time.sleep(3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the download ended before it was killed"

    sent = sum(r.bytes_sent for r in gets_after(server, "slow.bin", 0))
    kept = journaled(dest)
    second = 4 * SLOW_LINK  # what the four connections receive in a second
    assert kept >= second  # received bytes reached the part and the journal within seconds
    assert sent - kept <= 2.5 * second
    mark = len(server.requests)
    result = finish(start_get(url, dest, "--connections", "4", **env))
    assert dest.read_bytes() == data
    assert result["resumed_bytes"] == kept
    assert sum(r.bytes_sent for r in gets_after(server, "slow.bin", mark)) == len(data) - kept
